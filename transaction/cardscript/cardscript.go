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
//
// The returned key belongs to the session, which clears it once the
// authenticator has its own copy: return a fresh copy (keys.Provider's
// CardKey does).
type KeyFunc func(ctx context.Context, keyNo, version byte) ([]byte, error)

// ErrUIDMismatch: GetCardUID over the secure channel returned a UID other
// than the one the keys were diversified from.
var ErrUIDMismatch = errors.New("cardscript: card UID differs from the claimed UID")

// ErrBalanceMismatch: the value after the credit is not the value before
// plus the amount.
var ErrBalanceMismatch = errors.New("cardscript: balance after credit does not add up")

// ErrLayout: an authenticated answer shows a file layout other than the
// profile's (another file type or record size).
var ErrLayout = errors.New("cardscript: the card's file layout differs from the profile")

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

// Session is one application session on a card: selected, authenticated
// with one key, and the exchanges of the phases that follow. Phases are
// methods; each returns what the card proved, and none touches a ledger.
type Session struct {
	card  *desfire.Card
	prof  *profile.Profile
	batch bool // the transport carries a batch in one exchange
	ev1   desfire.EarlyChanneler
	auth  desfire.Authenticator
	// second is the second authentication frame while it is unsent.
	second []byte
	// logRead is the top-up log read in this session, which the
	// Transaction MAC of a later commit covers.
	logRead []byte
	// keyNo and keyVersion name the key the session authenticated with
	// (the version GetKeyVersion reported, proven once the card accepted
	// the authentication).
	keyNo, keyVersion byte
}

// Key returns the number and version of the key the session
// authenticated with. The version is the card's word only once the
// authentication succeeded (a later MAC verified under its session).
func (s *Session) Key() (keyNo, version byte) { return s.keyNo, s.keyVersion }

// ChangeOwnKey replaces the key the session authenticated with by newKey
// of version (ChangeKey of the same key, which the application's key
// settings must allow: ChangeKey access E). One exchange; it ends the
// session. The card's answer carries no MAC (the session key is gone), so
// it proves nothing: only a later authentication with one key or the
// other tells which one the card holds.
func (s *Session) ChangeOwnKey(ctx context.Context, newKey []byte, version byte) error {
	if s.second != nil {
		return fmt.Errorf("change key %d: %w", s.keyNo, desfire.ErrNotAuthenticated)
	}
	return s.card.ChangeKey(ctx, s.keyNo, s.keyNo, newKey, nil, version)
}

// Start runs exchange 1 — select, key version, first authentication frame
// — and prepares the second frame. The proof goes out with Finish, or, on
// EV1, with the first command sealed behind it.
func Start(ctx context.Context, t desfire.Transport, p *profile.Profile, keyNo byte, key KeyFunc, rnd io.Reader) (*Session, error) {
	card := desfire.NewCard(t)
	pl := card.Pipeline()
	b, err := begin(pl, Candidate{Profile: p, KeyNo: keyNo, Key: key})
	if err != nil {
		return nil, err
	}
	if err := pl.Run(ctx); err != nil {
		return nil, fmt.Errorf("select and authenticate: %w", err)
	}
	return b.open(ctx, card, t, rnd)
}

// Candidate is a card profile a session may use, with the key it
// authenticates with.
type Candidate struct {
	Profile *profile.Profile
	KeyNo   byte
	Key     KeyFunc
	// NextKey, for a profile of random-ID cards: KeyNo and Key are the
	// UID key (the same on every card, no file rights); the session reads
	// the real UID with GetCardUID under it and then authenticates with
	// key NextKeyNo, which NextKey returns diversified from that UID.
	NextKeyNo byte
	NextKey   func(uid []byte) KeyFunc
}

// beginning is exchange 1's select, key version and first authentication
// frame, added to a pipeline and read once it ran.
type beginning struct {
	c         Candidate
	kv, auth  *desfire.Result
	st        byte
	challenge []byte
	// nextKV is the version of the key a random-ID card's session
	// authenticates with after GetCardUID (read before any
	// authentication, like kv).
	nextKV *desfire.Result
}

func begin(pl *desfire.Pipeline, c Candidate) (*beginning, error) {
	b := &beginning{c: c}
	p := c.Profile
	if _, err := pl.Add(desfire.SelectApplicationCmd(p.AIDBytes())); err != nil {
		return nil, err
	}
	var err error
	if b.kv, err = pl.Add(desfire.GetKeyVersionCmd(c.KeyNo)); err != nil {
		return nil, err
	}
	if c.NextKey != nil {
		if b.nextKV, err = pl.Add(desfire.GetKeyVersionCmd(c.NextKeyNo)); err != nil {
			return nil, err
		}
	}
	return b, b.addAuth(pl)
}

// addAuth adds the first authentication frame of b's key to pl.
func (b *beginning) addAuth(pl *desfire.Pipeline) error {
	code, payload := byte(cmdAuthEV2First), []byte{b.c.KeyNo, 0x00}
	if b.c.Profile.Auth == profile.AuthEV1 {
		code, payload = cmdAuthAES, []byte{b.c.KeyNo}
	}
	var err error
	b.auth, err = pl.AddRaw(code, payload, []uint16{0x91AF}, func(status byte, data []byte) error {
		b.st, b.challenge = status, append([]byte(nil), data...)
		return nil
	})
	return err
}

// open derives the key of the version the card reported and answers its
// challenge: the session is ready for its second frame.
func (b *beginning) open(ctx context.Context, card *desfire.Card, t desfire.Transport, rnd io.Reader) (*Session, error) {
	_, batch := t.(desfire.Batcher)
	p, keyNo := b.c.Profile, b.c.KeyNo
	if len(b.kv.Data) != 1 {
		return nil, fmt.Errorf("key version: %w", desfire.ErrShortResponse)
	}
	k, err := b.c.Key(ctx, keyNo, b.kv.Data[0])
	if err != nil {
		return nil, fmt.Errorf("key %d version %d: %w", keyNo, b.kv.Data[0], err)
	}
	defer clear(k) // the authenticator copies it
	s := &Session{card: card, prof: p, batch: batch, keyNo: keyNo, keyVersion: b.kv.Data[0]}
	if p.Auth == profile.AuthEV1 {
		a, err := desfire.NewAuthAES(keyNo, k, rnd)
		if err != nil {
			return nil, err
		}
		s.auth, s.ev1 = a, a
	} else {
		s.auth = desfire.NewAuthEV2First(keyNo, k, rnd)
	}
	s.auth.Start()
	if s.second, err = s.auth.Respond(b.st, b.challenge); err != nil {
		s.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return s, nil
}

// Close ends the session's secrets: the secure channel is closed (which
// clears its session keys) and an unfinished authentication forgets its
// key. The card needs a new authentication afterwards. Safe to call more
// than once and on nil.
func (s *Session) Close() {
	if s == nil {
		return
	}
	if f, ok := s.auth.(interface{ Forget() }); ok {
		f.Forget()
	}
	s.card.Deauthenticate()
}

// Open selects and authenticates in two exchanges.
func Open(ctx context.Context, t desfire.Transport, p *profile.Profile, keyNo byte, key KeyFunc, rnd io.Reader) (*Session, error) {
	s, err := Start(ctx, t, p, keyNo, key, rnd)
	if err != nil {
		return nil, err
	}
	return s, s.Finish(ctx)
}

// Finish sends the second authentication frame in its own exchange and
// installs the channel. It does nothing once the proof has gone out.
func (s *Session) Finish(ctx context.Context) error {
	if s.second == nil {
		return nil
	}
	pl := s.card.Pipeline()
	if err := s.addProof(pl); err != nil {
		return err
	}
	return pl.Run(ctx)
}

// addProof adds the second authentication frame to pl; its answer
// installs the channel.
func (s *Session) addProof(pl *desfire.Pipeline) error {
	_, err := pl.AddRaw(cmdAdditionalFrame, s.second, nil, func(status byte, data []byte) error {
		ch, err := s.auth.Finish(status, data)
		if err != nil {
			return fmt.Errorf("authenticate: %w", err)
		}
		s.card.SetChannel(ch)
		return nil
	})
	s.second = nil
	return err
}

// pipeline returns a pipeline for the next commands: on EV1 with the
// proof still unsent, the proof leads it and the commands are sealed with
// the channel the card's predictable proof will install; on EV2 (whose
// MACs need the card's TI) authentication is finished first.
func (s *Session) pipeline(ctx context.Context) (*desfire.Pipeline, error) {
	if s.second == nil {
		return s.card.Pipeline(), nil
	}
	if s.ev1 == nil {
		if err := s.Finish(ctx); err != nil {
			return nil, err
		}
		return s.card.Pipeline(), nil
	}
	pl := s.card.Pipeline()
	if err := s.addProof(pl); err != nil {
		return nil, err
	}
	ch, err := s.ev1.EarlyChannel()
	if err != nil {
		return nil, err
	}
	s.card.SetChannel(ch)
	return pl, nil
}

// execAll runs cmds in as few exchanges as the channel allows: each is
// added to the current pipeline, and a command that cannot be sealed
// before the answers ahead of it are verified (EV1's chained IV) starts a
// new one. It stops at the first failure.
func (s *Session) execAll(ctx context.Context, cmds ...*desfire.Command) ([]*desfire.Result, error) {
	out := make([]*desfire.Result, 0, len(cmds))
	pl, err := s.pipeline(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range cmds {
		r, err := pl.Add(c)
		if errors.Is(err, desfire.ErrNotPipelinable) {
			if err := pl.Run(ctx); err != nil {
				return nil, err
			}
			pl = s.card.Pipeline()
			r, err = pl.Add(c)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		out = append(out, r)
	}
	if err := pl.Run(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

func value(data []byte) (int64, error) {
	if len(data) != 4 {
		return 0, fmt.Errorf("value of %d bytes: %w", len(data), desfire.ErrShortResponse)
	}
	return int64(int32(binary.LittleEndian.Uint32(data))), nil
}
