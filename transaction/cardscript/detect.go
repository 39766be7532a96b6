package cardscript

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// ErrUnknownCard: the card is of no generation, or holds no application,
// that a profile of the fleet serves.
var ErrUnknownCard = errors.New("cardscript: no profile serves this card")

// Generation names the DESFire generation GetVersion reports ("ev1",
// "ev2", "ev3"), from the hardware part's type and major version (MF3ICD
// EV1 01, EV2 12 and 22, EV3 3x). Other products, and answers that break
// the data sheet's layout (vendor, type, protocol, BCD production date),
// are ErrUnknownCard.
func Generation(v *desfire.Version) (string, error) {
	hw, sw := v.Hardware, v.Software
	switch {
	case hw.VendorID != 0x04 || sw.VendorID != 0x04:
		return "", fmt.Errorf("vendor %02X/%02X: %w", hw.VendorID, sw.VendorID, ErrUnknownCard)
	case hw.Type&0x7F != 0x01 || sw.Type != hw.Type:
		return "", fmt.Errorf("product type %02X/%02X: %w", hw.Type, sw.Type, ErrUnknownCard)
	case hw.Protocol != 0x05 || sw.Protocol != 0x05:
		return "", fmt.Errorf("protocol %02X/%02X: %w", hw.Protocol, sw.Protocol, ErrUnknownCard)
	case !bcd(v.ProductionWeek) || !bcd(v.ProductionYear):
		return "", fmt.Errorf("production date %02X/%02X is not BCD: %w", v.ProductionWeek, v.ProductionYear, ErrUnknownCard)
	}
	switch {
	case hw.Major == 0x01:
		return profile.GenEV1, nil
	case hw.Major == 0x12 || hw.Major == 0x22:
		return profile.GenEV2, nil
	case hw.Major&0xF0 == 0x30:
		return profile.GenEV3, nil
	}
	return "", fmt.Errorf("DESFire hardware version %02X.%02X: %w", hw.Major, hw.Minor, ErrUnknownCard)
}

// Detected is what exchange 1 showed of the card before any
// authentication. None of it is authenticated: a bridge that lies about
// it can only make the server pick a profile whose keys the card then
// refuses.
type Detected struct {
	Version    *desfire.Version
	Generation string
	// Profile is the index of the candidate the session authenticates
	// with.
	Profile int
	// UID is the real UID of a random-ID card, read with GetCardUID
	// enciphered under the UID key (nil for other cards: their keys are
	// diversified from the UID the bridge named).
	UID []byte
}

// RandomID reports whether a UID the bridge names is a random ID (ISO/IEC
// 14443-3: a single-size UID whose first byte is 08).
func RandomID(uid []byte) bool { return len(uid) == 4 && uid[0] == 0x08 }

// StartDetect runs exchange 1 for the card whose UID the bridge named,
// with SelectApplication(PICC) and GetVersion (three frames) ahead of
// the guessed candidate's select, key version and first authentication
// frame, so a card of the guessed kind costs no extra exchange. When the
// card's generation is not one the guess serves, or the guess's
// application is not on the card, it starts again with the next candidate
// that serves the generation (one more exchange each). A card no
// candidate serves is ErrUnknownCard, with nothing written.
func StartDetect(ctx context.Context, t desfire.Transport, uid []byte, cands []Candidate, guess int, rnd io.Reader) (*Session, Detected, error) {
	if guess < 0 || guess >= len(cands) {
		guess = 0
	}
	card := desfire.NewCard(t)
	pl := card.Pipeline()
	// Selecting the PICC level first ends any authentication a previous
	// session left on the card, so GetVersion is answered plain.
	if _, err := pl.Add(desfire.SelectApplicationCmd([]byte{0, 0, 0})); err != nil {
		return nil, Detected{}, err
	}
	version, err := addGetVersion(pl)
	if err != nil {
		return nil, Detected{}, err
	}
	b, err := begin(pl, cands[guess])
	if err != nil {
		return nil, Detected{}, err
	}
	runErr := pl.Run(ctx)
	v, err := version()
	if err != nil {
		if runErr != nil && !isStatus(runErr) {
			return nil, Detected{}, fmt.Errorf("get version: %w", runErr)
		}
		return nil, Detected{}, fmt.Errorf("get version: %w: %w", err, ErrUnknownCard)
	}
	gen, err := Generation(v)
	if err != nil {
		return nil, Detected{Version: v}, err
	}
	if err := checkUID(v, uid); err != nil {
		return nil, Detected{Version: v}, err
	}
	d := Detected{Version: v, Generation: gen, Profile: guess}
	// A random ID shows a zero UID in GetVersion; in a fleet with
	// profiles of random-ID cards only they serve it, and only it.
	random := RandomID(uid) && bytes.Equal(v.UID, make([]byte, len(v.UID))) && slices.ContainsFunc(cands, func(c Candidate) bool { return c.NextKey != nil })
	fits := func(c Candidate) bool { return c.Profile.Serves(gen) && (c.NextKey != nil) == random }
	serves := fits(cands[guess])
	switch {
	case runErr == nil && serves:
		return b.start(ctx, card, t, rnd, d)
	case runErr != nil && !isStatus(runErr):
		return nil, d, fmt.Errorf("select and authenticate: %w", runErr)
	case runErr != nil && serves && !notHere(runErr):
		// The guess serves this card and its application answered, but
		// refused: that is the card's word on this profile.
		return nil, d, fmt.Errorf("select and authenticate: %w", runErr)
	}
	for i, c := range cands {
		if i == guess || !fits(c) {
			continue
		}
		pl := card.Pipeline()
		b, err := begin(pl, c)
		if err != nil {
			return nil, d, err
		}
		if err := pl.Run(ctx); err != nil {
			if notHere(err) {
				continue
			}
			return nil, d, fmt.Errorf("select and authenticate: %w", err)
		}
		d.Profile = i
		return b.start(ctx, card, t, rnd, d)
	}
	return nil, d, fmt.Errorf("%s card without an application of the fleet: %w", gen, ErrUnknownCard)
}

// start opens the session of the candidate that serves the card; for a
// random-ID card it reads the real UID under the UID key and starts the
// authentication with the key diversified from it.
func (b *beginning) start(ctx context.Context, card *desfire.Card, t desfire.Transport, rnd io.Reader, d Detected) (*Session, Detected, error) {
	s, err := b.open(ctx, card, t, rnd)
	if err != nil || b.c.NextKey == nil {
		return s, d, err
	}
	s, d.UID, err = s.identify(ctx, b, t, rnd)
	return s, d, err
}

func bcd(b byte) bool { return b>>4 < 10 && b&0x0F < 10 }

// checkUID compares the UID GetVersion shows with the one the bridge
// named. Neither is authenticated, but they must agree. A card with a
// random ID shows zeros: the bridge must then name a random ID (a 7-byte
// UID named for it would be the real UID learnt elsewhere, or a lie).
func checkUID(v *desfire.Version, claimed []byte) error {
	hidden := bytes.Equal(v.UID, make([]byte, len(v.UID)))
	if RandomID(claimed) && !hidden {
		// Only a card with a random ID shows one, and it hides its UID.
		return fmt.Errorf("the bridge named a random ID, GetVersion shows UID %X: %w", v.UID, desfire.ErrIntegrity)
	}
	if len(claimed) != len(v.UID) {
		return nil
	}
	if hidden {
		return fmt.Errorf("GetVersion hides the UID (a random ID), the bridge named %X: %w", claimed, desfire.ErrIntegrity)
	}
	if !bytes.Equal(v.UID, claimed) {
		return fmt.Errorf("GetVersion shows UID %X, the bridge named another: %w", v.UID, desfire.ErrIntegrity)
	}
	return nil
}

// addGetVersion adds GetVersion's three plain frames to pl; the returned
// func parses them once pl ran.
func addGetVersion(pl *desfire.Pipeline) (func() (*desfire.Version, error), error) {
	var data []byte
	keep := func(_ byte, d []byte) error {
		data = append(data, d...)
		return nil
	}
	frames := []struct {
		code   byte
		expect uint16
	}{{desfire.CmdGetVersion, 0x91AF}, {cmdAdditionalFrame, 0x91AF}, {cmdAdditionalFrame, 0x9100}}
	steps := make([]*desfire.Result, len(frames))
	for i, f := range frames {
		r, err := pl.AddRaw(f.code, nil, []uint16{f.expect}, keep)
		if err != nil {
			return nil, err
		}
		steps[i] = r
	}
	return func() (*desfire.Version, error) {
		for _, r := range steps {
			if r.Err != nil || !r.Done {
				return nil, fmt.Errorf("not answered: %w", desfire.ErrShortResponse)
			}
		}
		return desfire.ParseVersion(data)
	}, nil
}

// isStatus: the card (or a bridge) answered with a status word other
// than the one expected.
func isStatus(err error) bool {
	var se *desfire.StatusError
	return errors.As(err, &se)
}

// notHere: the answer says this candidate does not apply to the card —
// its application is absent (APPLICATION_NOT_FOUND) or its
// authentication command is unknown to the card (ILLEGAL_COMMAND, an EV1
// card asked for EV2 authentication).
func notHere(err error) bool {
	var se *desfire.StatusError
	if !errors.As(err, &se) {
		return false
	}
	return se.SW == 0x91A0 || se.SW == 0x911C
}
