// Package issue personalises a blank DESFire card for a card profile the
// way a kiosk or issuing station would: through the real issuance commands
// (CreateApplication, ChangeKey, Create…File, CreateTransactionMACFile)
// over any desfire transport. Tests and the simulated bridge use it on the
// simulated card; nothing in the top-up path calls it.
package issue

import (
	"context"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

// KeyVersion is the version every issued key gets.
const KeyVersion = 1

// Access rights: Read, Write, ReadWrite, Change; 0xE free, 0xF never.
type Access struct{ Read, Write, ReadWrite, Change byte }

// Bytes encodes the rights as sent (2 bytes, LSB first): RW<<4|Change,
// Read<<4|Write.
func (a Access) Bytes() []byte {
	return []byte{a.ReadWrite<<4 | a.Change, a.Read<<4 | a.Write}
}

// blankKey is the all-zero AES key of a blank card and of new applications.
var blankKey = make([]byte, 16)

// Issue creates the profile's application on a blank card (PICC master key
// all-zero AES, version 0), sets its keys from kp (diversified for uid) and
// creates its files. The value file starts at initial.
func Issue(ctx context.Context, t desfire.Transport, p profile.Profile, kp keys.Provider, uid []byte, initial int32, rnd io.Reader) error {
	card := desfire.NewCard(t)
	auth := func(keyNo byte, key []byte) desfire.Authenticator {
		if p.Auth == profile.AuthEV1 {
			a, _ := desfire.NewAuthAES(keyNo, key, rnd)
			return a
		}
		return desfire.NewAuthEV2First(keyNo, key, rnd)
	}
	key := func(no byte) ([]byte, error) {
		return kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: KeyVersion}, uid)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"select PICC", func() error { return card.SelectApplication(ctx, []byte{0, 0, 0}) }},
		{"authenticate PICC master key", func() error { return card.Authenticate(ctx, auth(0, blankKey)) }},
		// KeySett1 0x0B: master key changeable, configuration changeable,
		// create/delete and directory listing need the master key.
		// KeySett2: AES (0x80), 5 keys (0..3 and a spare).
		{"create application", func() error {
			ks2 := byte(0x80 | 5)
			return card.CreateApplication(ctx, p.AIDBytes(), 0x0B, ks2)
		}},
		{"select application", func() error { return card.SelectApplication(ctx, p.AIDBytes()) }},
		{"authenticate application master key", func() error { return card.Authenticate(ctx, auth(0, blankKey)) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("issue: %s: %w", s.what, err)
		}
	}
	// Keys 1..3 first (changing another key keeps the session), key 0 last.
	for _, no := range []byte{p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo} {
		k, err := key(no)
		if err != nil {
			return fmt.Errorf("issue: key %d: %w", no, err)
		}
		if err := card.ChangeKey(ctx, no, 0, k, blankKey, KeyVersion); err != nil {
			return fmt.Errorf("issue: change key %d: %w", no, err)
		}
	}
	m := byte(p.MasterKeyNo)
	mode := func(cm desfire.CommMode) byte { return byte(cm) }
	r, w, tk := p.ReadKeyNo, p.WriteKeyNo, p.TopUpKeyNo
	files := []struct {
		what string
		do   func() error
	}{
		{"create info file", func() error {
			return card.CreateBackupDataFile(ctx, p.InfoFile, mode(desfire.CommFull), Access{r, w, w, m}.Bytes(), uint32(p.InfoFileLen))
		}},
		{"create usage log", func() error {
			return card.CreateCyclicRecordFile(ctx, p.UsageLogFile, mode(p.UsageLogMode), Access{r, r, r, m}.Bytes(), uint32(p.RecordSize), uint32(p.LogRecords))
		}},
		{"create value file", func() error {
			return card.CreateValueFile(ctx, p.ValueFile, mode(p.ValueMode), Access{r, tk, tk, m}.Bytes(), p.LowerLimit, p.UpperLimit, initial, false)
		}},
		{"create top-up log", func() error {
			return card.CreateCyclicRecordFile(ctx, p.TopUpLogFile, mode(p.TopUpLogMode), Access{r, tk, tk, m}.Bytes(), uint32(p.RecordSize), uint32(p.LogRecords))
		}},
	}
	if p.HasTMAC {
		files = append(files, struct {
			what string
			do   func() error
		}{"create transaction MAC file", func() error {
			tmk, err := kp.CardKey(ctx, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: KeyVersion}, uid)
			if err != nil {
				return err
			}
			// Read with the read key; CommitReaderID not required (W = F).
			return card.CreateTransactionMACFile(ctx, p.TMACFile, mode(desfire.CommPlain), Access{r, 0xF, 0xF, m}.Bytes(), tmk, KeyVersion)
		}})
	}
	for _, f := range files {
		if err := f.do(); err != nil {
			return fmt.Errorf("issue: %s: %w", f.what, err)
		}
	}
	mk, err := key(p.MasterKeyNo)
	if err != nil {
		return fmt.Errorf("issue: master key: %w", err)
	}
	if err := card.ChangeKey(ctx, p.MasterKeyNo, p.MasterKeyNo, mk, blankKey, KeyVersion); err != nil {
		return fmt.Errorf("issue: change master key: %w", err)
	}
	return nil
}
