// Package personalize issues a blank DESFire card the way a kiosk or
// issuing station would: an application layout (AID, key numbers, files
// and their comm modes), the keys from a key file diversified per card with
// NXP AN10922, and the real issuance commands (CreateApplication,
// ChangeKey, Create…File, CreateTransactionMACFile) over any desfire
// transport. The server's card profiles are built on these layouts; the
// simulated bridge and the tests personalise the simulated card with it.
// Nothing in the top-up path calls Issue.
package personalize

import (
	"context"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
)

// KeyVersion is the version every issued key gets.
const KeyVersion = 1

// Layout is one card application layout: what Issue creates.
type Layout struct {
	// Name identifies the layout (the card profile's name).
	Name string
	// AID is the application identifier as a number (0x014499); on the
	// wire it is sent least significant byte first.
	AID uint32
	// EV1 selects AuthenticateAES (EV1); otherwise AuthenticateEV2First.
	EV1 bool
	// Key numbers inside the application.
	MasterKeyNo, ReadKeyNo, WriteKeyNo, TopUpKeyNo byte
	// File numbers; HasTMAC says the Transaction MAC file exists.
	InfoFile, UsageLogFile, ValueFile, TopUpLogFile, TMACFile byte
	HasTMAC                                                   bool
	// CommitReaderID makes the Transaction MAC file require CommitReaderID
	// under the top-up key in every transaction (its ReadWrite access
	// right, the AppCommitReaderIDKey, names TopUpKeyNo).
	CommitReaderID bool
	// UIDKey, for cards with a random ID: key UIDKeyNo (the spare key,
	// 1..4) is written too. It is the same on every card (not diversified)
	// and no file names it; it only lets a reader authenticate to read
	// the real UID with GetCardUID.
	UIDKey   bool
	UIDKeyNo byte
	// SelfChangeKeys sets the application's ChangeKey access to E (each
	// key changes itself, KeySett1 EB) once its keys are written, so a
	// session holding a key can roll it forward to a newer version.
	SelfChangeKeys bool
	// Comm modes of the value file and the two logs.
	ValueMode, TopUpLogMode, UsageLogMode desfire.CommMode
	// Value file limits, in minor units.
	LowerLimit, UpperLimit int32
	// Log files' record size and number of records; info file length.
	RecordSize, LogRecords, InfoFileLen int
}

// AIDBytes returns the AID as sent on the wire (LSB first).
func (l Layout) AIDBytes() []byte {
	return []byte{byte(l.AID), byte(l.AID >> 8), byte(l.AID >> 16)}
}

// AN12113 is NXP AN12113's example stored-value application (section 3.3)
// on an EV2/EV3 card: AuthenticateEV2First, all files in CommMode.Full,
// with a Transaction MAC file.
func AN12113() Layout {
	return Layout{
		Name:         "an12113-ev2",
		AID:          0x014499,
		MasterKeyNo:  0,
		ReadKeyNo:    1,
		WriteKeyNo:   2,
		TopUpKeyNo:   3,
		InfoFile:     1,
		UsageLogFile: 2,
		ValueFile:    3,
		TopUpLogFile: 4,
		TMACFile:     5,
		HasTMAC:      true,
		ValueMode:    desfire.CommFull,
		TopUpLogMode: desfire.CommFull,
		UsageLogMode: desfire.CommFull,
		LowerLimit:   0,
		UpperLimit:   100_000,
		RecordSize:   16,
		LogRecords:   10,
		InfoFileLen:  128,
	}
}

// AN12113EV1 is the same application on a DESFire EV1 card:
// AuthenticateAES and no Transaction MAC file.
func AN12113EV1() Layout {
	l := AN12113()
	l.Name = "an12113-ev1"
	l.EV1 = true
	l.HasTMAC = false
	return l
}

// Builtin returns the named built-in layout.
func Builtin(name string) (Layout, error) {
	for _, l := range []Layout{AN12113(), AN12113EV1()} {
		if l.Name == name {
			return l, nil
		}
	}
	return Layout{}, fmt.Errorf("personalize: no built-in layout %q", name)
}

// Access rights: Read, Write, ReadWrite, Change; 0xE free, 0xF never.
type Access struct{ Read, Write, ReadWrite, Change byte }

// Bytes encodes the rights as sent (2 bytes, LSB first): RW<<4|Change,
// Read<<4|Write.
func (a Access) Bytes() []byte {
	return []byte{a.ReadWrite<<4 | a.Change, a.Read<<4 | a.Write}
}

// KeyFunc returns the key a card holds for application key no, or for
// the Transaction MAC key when tmac is set.
type KeyFunc func(ctx context.Context, no byte, tmac bool) ([]byte, error)

// KeySource returns the key the card with this UID holds for ref (a key
// set, an HSM, a KMS).
type KeySource func(ctx context.Context, ref KeyRef, uid []byte) ([]byte, error)

// CardKeys returns the KeyFunc of the card with this UID for layout l:
// the application's keys of version KeyVersion from src.
func CardKeys(l Layout, uid []byte, src KeySource) KeyFunc {
	return func(ctx context.Context, no byte, tmac bool) ([]byte, error) {
		ref := KeyRef{AID: l.AID, KeyNo: no, Version: KeyVersion}
		if tmac {
			ref = KeyRef{AID: l.AID, Name: TMACName, Version: KeyVersion}
		}
		return src(ctx, ref, uid)
	}
}

// blankKey is the all-zero AES key of a blank card and of new applications.
var blankKey = make([]byte, 16)

// step is one issuance command.
type step struct {
	what string
	do   func() error
}

// run performs steps in order, stopping at the first failure.
func run(steps []step) error {
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("issue: %s: %w", s.what, err)
		}
	}
	return nil
}

// Issue creates layout l's application on a blank card (PICC master key
// all-zero AES, version 0), sets its keys from key and creates its files.
// The value file starts at initial. rnd feeds the authentications (nil:
// crypto/rand).
func Issue(ctx context.Context, t desfire.Transport, l Layout, key KeyFunc, initial int32, rnd io.Reader) error {
	card := desfire.NewCard(t)
	auth := func(keyNo byte, k []byte) desfire.Authenticator {
		if l.EV1 {
			a, _ := desfire.NewAuthAES(keyNo, k, rnd)
			return a
		}
		return desfire.NewAuthEV2First(keyNo, k, rnd)
	}
	err := run([]step{
		{"select PICC", func() error { return card.SelectApplication(ctx, []byte{0, 0, 0}) }},
		{"authenticate PICC master key", func() error { return card.Authenticate(ctx, auth(0, blankKey)) }},
		// KeySett1 0x0B: master key changeable, configuration changeable,
		// create/delete and directory listing need the master key.
		// KeySett2: AES (0x80), 5 keys (0..3 and a spare).
		{"create application", func() error { return card.CreateApplication(ctx, l.AIDBytes(), 0x0B, 0x80|5) }},
		{"select application", func() error { return card.SelectApplication(ctx, l.AIDBytes()) }},
		{"authenticate application master key", func() error { return card.Authenticate(ctx, auth(0, blankKey)) }},
	})
	if err != nil {
		return err
	}
	// Keys 1..3 first (changing another key keeps the session), key 0 last.
	nos := []byte{l.ReadKeyNo, l.WriteKeyNo, l.TopUpKeyNo}
	if l.UIDKey {
		nos = append(nos, l.UIDKeyNo)
	}
	for _, no := range nos {
		k, err := key(ctx, no, false)
		if err != nil {
			return fmt.Errorf("issue: key %d: %w", no, err)
		}
		if err := card.ChangeKey(ctx, no, 0, k, blankKey, KeyVersion); err != nil {
			return fmt.Errorf("issue: change key %d: %w", no, err)
		}
	}
	m, r, w, tk := l.MasterKeyNo, l.ReadKeyNo, l.WriteKeyNo, l.TopUpKeyNo
	files := []step{
		{"create info file", func() error {
			return card.CreateBackupDataFile(ctx, l.InfoFile, byte(desfire.CommFull), Access{r, w, w, m}.Bytes(), uint32(l.InfoFileLen))
		}},
		{"create usage log", func() error {
			return card.CreateCyclicRecordFile(ctx, l.UsageLogFile, byte(l.UsageLogMode), Access{r, r, r, m}.Bytes(), uint32(l.RecordSize), uint32(l.LogRecords))
		}},
		{"create value file", func() error {
			return card.CreateValueFile(ctx, l.ValueFile, byte(l.ValueMode), Access{r, tk, tk, m}.Bytes(), l.LowerLimit, l.UpperLimit, initial, false)
		}},
		{"create top-up log", func() error {
			return card.CreateCyclicRecordFile(ctx, l.TopUpLogFile, byte(l.TopUpLogMode), Access{r, tk, tk, m}.Bytes(), uint32(l.RecordSize), uint32(l.LogRecords))
		}},
	}
	if l.HasTMAC {
		files = append(files, step{"create transaction MAC file", func() error {
			tmk, err := key(ctx, 0, true)
			if err != nil {
				return err
			}
			// Read with the read key; Write is F. ReadWrite is the
			// AppCommitReaderIDKey (MF2DLHX0 section 8.2.3.6): F, disabled,
			// or the top-up key, which makes CommitReaderID required.
			rid := byte(0xF)
			if l.CommitReaderID {
				rid = tk
			}
			return card.CreateTransactionMACFile(ctx, l.TMACFile, byte(desfire.CommPlain), Access{r, 0xF, rid, m}.Bytes(), tmk, KeyVersion)
		}})
	}
	if err := run(files); err != nil {
		return err
	}
	if l.SelfChangeKeys {
		if err := card.ChangeKeySettings(ctx, 0xEB); err != nil {
			return fmt.Errorf("issue: key settings: %w", err)
		}
	}
	mk, err := key(ctx, l.MasterKeyNo, false)
	if err != nil {
		return fmt.Errorf("issue: master key: %w", err)
	}
	if err := card.ChangeKey(ctx, l.MasterKeyNo, l.MasterKeyNo, mk, blankKey, KeyVersion); err != nil {
		return fmt.Errorf("issue: change master key: %w", err)
	}
	return nil
}
