package cardscript

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// KeyFunc returns the card's key for a key number and the key version the
// card reported (diversified for this card where the key file says so).
type KeyFunc func(ctx context.Context, keyNo, version byte) ([]byte, error)

// ErrUIDMismatch: GetCardUID over the secure channel returned a UID other
// than the one the keys were diversified from.
var ErrUIDMismatch = errors.New("cardscript: card UID differs from the claimed UID")

// ErrBalanceMismatch: the value after the credit is not the value before
// plus the amount.
var ErrBalanceMismatch = errors.New("cardscript: balance after credit does not add up")

// native codes of the authentication frames.
const (
	cmdAuthAES         = 0xAA
	cmdAuthEV2First    = 0x71
	cmdAdditionalFrame = 0xAF
)

func getValueCmd(p *profile.Profile) *desfire.Command {
	return desfire.GetValueCmd(p.ValueFile, p.ValueMode)
}

func readRecordsCmd(file byte, mode desfire.CommMode) *desfire.Command {
	return desfire.ReadRecordsCmd(file, 0, 0, profile.RecordSize, mode)
}

// session is an authenticated card.
type session struct {
	card *desfire.Card
	prof *profile.Profile
	ev1  desfire.EarlyChanneler // EV1: channel available before the proof
	auth desfire.Authenticator
}

// start runs exchange 1 — select, key version, first authentication frame
// — and prepares the second frame. The channel is installed by the caller
// through finish (EV2) or is available early (EV1).
func start(ctx context.Context, card *desfire.Card, p *profile.Profile, keyNo byte, key KeyFunc, rnd io.Reader) (*session, []byte, error) {
	card.Deauthenticate() // selecting the application ends any session
	pl := card.Pipeline()
	if _, err := pl.Add(desfire.SelectApplicationCmd(p.AIDBytes())); err != nil {
		return nil, nil, err
	}
	kv, err := pl.Add(desfire.GetKeyVersionCmd(keyNo))
	if err != nil {
		return nil, nil, err
	}
	code, payload := byte(cmdAuthEV2First), []byte{keyNo, 0x00}
	if p.Auth == profile.AuthEV1 {
		code, payload = cmdAuthAES, []byte{keyNo}
	}
	var st byte
	var challenge []byte
	if _, err := pl.AddRaw(code, payload, []uint16{0x91AF}, func(status byte, data []byte) error {
		st, challenge = status, append([]byte(nil), data...)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	if err := pl.Run(ctx); err != nil {
		return nil, nil, fmt.Errorf("select and authenticate: %w", err)
	}
	if len(kv.Data) != 1 {
		return nil, nil, fmt.Errorf("key version: %w", desfire.ErrShortResponse)
	}
	k, err := key(ctx, keyNo, kv.Data[0])
	if err != nil {
		return nil, nil, fmt.Errorf("key %d version %d: %w", keyNo, kv.Data[0], err)
	}
	s := &session{card: card, prof: p}
	if p.Auth == profile.AuthEV1 {
		a, err := desfire.NewAuthAES(keyNo, k, rnd)
		if err != nil {
			return nil, nil, err
		}
		s.auth, s.ev1 = a, a
	} else {
		s.auth = desfire.NewAuthEV2First(keyNo, k, rnd)
	}
	s.auth.Start()
	second, err := s.auth.Respond(st, challenge)
	if err != nil {
		return nil, nil, fmt.Errorf("authenticate: %w", err)
	}
	return s, second, nil
}

// addProof adds the second authentication frame to pl; its answer
// installs the channel.
func (s *session) addProof(pl *desfire.Pipeline, second []byte) error {
	_, err := pl.AddRaw(cmdAdditionalFrame, second, nil, func(status byte, data []byte) error {
		ch, err := s.auth.Finish(status, data)
		if err != nil {
			return fmt.Errorf("authenticate: %w", err)
		}
		s.card.SetChannel(ch)
		return nil
	})
	return err
}

// authenticate completes authentication in its own exchange.
func (s *session) authenticate(ctx context.Context, second []byte) error {
	pl := s.card.Pipeline()
	if err := s.addProof(pl, second); err != nil {
		return err
	}
	return pl.Run(ctx)
}

// open selects and authenticates in two exchanges.
func open(ctx context.Context, card *desfire.Card, p *profile.Profile, keyNo byte, key KeyFunc, rnd io.Reader) (*session, error) {
	s, second, err := start(ctx, card, p, keyNo, key, rnd)
	if err != nil {
		return nil, err
	}
	return s, s.authenticate(ctx, second)
}

// readLog reads every record of a cyclic record file (one or more
// exchanges: long answers come in additional frames). An empty file
// answers with a boundary error, which closes the channel: it is reported
// as no records and reauth=true.
func (s *session) readLog(ctx context.Context, file byte, mode desfire.CommMode) (data []byte, reauth bool, err error) {
	data, err = s.card.Exec(ctx, readRecordsCmd(file, mode))
	if errors.Is(err, desfire.ErrBoundary) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read log file %d: %w", file, err)
	}
	return data, false, nil
}

func value(data []byte) (int64, error) {
	if len(data) != 4 {
		return 0, fmt.Errorf("value of %d bytes: %w", len(data), desfire.ErrShortResponse)
	}
	return int64(int32(binary.LittleEndian.Uint32(data))), nil
}
