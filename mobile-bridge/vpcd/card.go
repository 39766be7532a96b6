package vpcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// DefaultATS is the ATS of a MIFARE DESFire EV2/EV3 (TL 06, T0 75: FSCI
// 5, TA TB TC present; TA 77, TB 81, TC 02; one historical byte 80), used
// when a Card gives none.
var DefaultATS = []byte{0x06, 0x75, 0x77, 0x81, 0x02, 0x80}

// ErrCardRemoved is what Serve returns (wrapped with the card's own
// error) after the card left the field and the virtual reader dropped
// the connection, so a caller can present the card again.
var ErrCardRemoved = errors.New("vpcd: card left the field")

// ErrATS marks an ATS that does not parse (wrong TL, interface bytes
// past the end).
var ErrATS = errors.New("vpcd: malformed ATS")

// Card is what the virtual reader presents: the card's transport and
// what a contactless reader learns at activation.
type Card struct {
	// Transport carries every APDU the reader does not answer itself;
	// bridge.Sim and *simcard.Card both fit.
	Transport desfire.Transport
	// UID is the anticollision UID, answered to GET DATA P1=00 (4, 7 or
	// 10 bytes).
	UID []byte
	// ATS (without CRC) is answered to GET DATA P1=01, as ACS readers do,
	// and gives the ATR its historical bytes (nil: DefaultATS).
	ATS []byte
	// ATR overrides the ATR vpcd reports (nil: the PC/SC part 3
	// contactless ATR built from the ATS's historical bytes).
	ATR []byte
	// CommandTimeout bounds each APDU to the card (0: 5 s).
	CommandTimeout time.Duration
}

// maxATR is the longest ATR ISO 7816-3 allows (and vpcd accepts).
const maxATR = 33

// prepared is a validated Card with its defaults filled in.
type prepared struct {
	Card
	atr []byte
}

func (c Card) prepare() (*prepared, error) {
	if c.Transport == nil {
		return nil, errors.New("vpcd: card without a transport")
	}
	switch len(c.UID) {
	case 4, 7, 10:
	default:
		return nil, fmt.Errorf("vpcd: UID of %d bytes, want 4, 7 or 10", len(c.UID))
	}
	if c.ATS == nil {
		c.ATS = DefaultATS
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 5 * time.Second
	}
	p := &prepared{Card: c, atr: c.ATR}
	if p.atr == nil {
		hist, err := HistoricalBytes(c.ATS)
		if err != nil {
			return nil, err
		}
		if p.atr, err = ContactlessATR(hist); err != nil {
			return nil, err
		}
	}
	if len(p.atr) < 2 || len(p.atr) > maxATR {
		return nil, fmt.Errorf("vpcd: ATR of %d bytes, want 2..%d", len(p.atr), maxATR)
	}
	return p, nil
}

// HistoricalBytes returns the historical bytes of an ISO/IEC 14443-4 ATS
// given without its CRC: TL (the length), then the format byte T0 whose
// bits 5..7 announce TA, TB and TC, then those, then the historical
// bytes.
func HistoricalBytes(ats []byte) ([]byte, error) {
	if len(ats) == 0 {
		return nil, fmt.Errorf("empty: %w", ErrATS)
	}
	if int(ats[0]) != len(ats) {
		return nil, fmt.Errorf("TL says %d bytes, have %d: %w", ats[0], len(ats), ErrATS)
	}
	if len(ats) == 1 {
		return []byte{}, nil
	}
	i := 2
	for _, bit := range []byte{0x10, 0x20, 0x40} {
		if ats[1]&bit != 0 {
			i++
		}
	}
	if i > len(ats) {
		return nil, fmt.Errorf("T0 %02X announces %d interface bytes, have %d: %w", ats[1], i-2, len(ats)-2, ErrATS)
	}
	return append([]byte{}, ats[i:]...), nil
}

// ContactlessATR builds the ATR a PC/SC reader reports for an ISO/IEC
// 14443-4 card (PC/SC part 3, 3.1.3.2.3.1): 3B, T0 = 80|n, TD1 = 80,
// TD2 = 01 (T=1), the n historical bytes of the ATS (at most 15), TCK
// (exclusive-or of T0 through the last historical byte). A DESFire's 80
// gives 3B 81 80 01 80 80.
func ContactlessATR(hist []byte) ([]byte, error) {
	if len(hist) > 15 {
		return nil, fmt.Errorf("vpcd: %d historical bytes, an ATR holds at most 15", len(hist))
	}
	atr := append([]byte{0x3B, 0x80 | byte(len(hist)), 0x80, 0x01}, hist...)
	var tck byte
	for _, b := range atr[1:] {
		tck ^= b
	}
	return append(atr, tck), nil
}

// Reader status words for the pseudo-APDUs (PC/SC part 3, GET DATA).
var (
	swOK          = []byte{0x90, 0x00}
	swEndOfData   = []byte{0x62, 0x82} // Le longer than the data
	swNotSupport  = []byte{0x6A, 0x81} // function not supported
	swINSNotKnown = []byte{0x6D, 0x00}
	swWrongLength = []byte{0x67, 0x00}
)

// readerAPDU answers the class FF pseudo-APDUs a contactless reader
// handles itself; ok is false for APDUs meant for the card.
func (p *prepared) readerAPDU(capdu []byte) (rapdu []byte, ok bool) {
	if len(capdu) < 4 || capdu[0] != 0xFF {
		return nil, false
	}
	if capdu[1] != 0xCA {
		return swINSNotKnown, true
	}
	// GET DATA is case 1 or 2: FF CA P1 P2 [Le].
	if len(capdu) > 5 {
		return swWrongLength, true
	}
	var data []byte
	switch {
	case capdu[3] != 0x00:
		return swNotSupport, true
	case capdu[2] == 0x00:
		data = p.UID
	case capdu[2] == 0x01:
		data = p.ATS
	default:
		return swNotSupport, true
	}
	le := 256
	if len(capdu) == 5 && capdu[4] != 0 {
		le = int(capdu[4])
	}
	switch {
	case le < len(data):
		return []byte{0x6C, byte(len(data))}, true
	case le > len(data) && len(capdu) == 5 && capdu[4] != 0:
		return append(append([]byte{}, data...), swEndOfData...), true
	}
	return append(append([]byte{}, data...), swOK...), true
}

// removed reports whether a transport error means the card left the
// field.
func removed(err error) bool {
	return errors.Is(err, bridge.ErrTagLost) || errors.Is(err, simcard.ErrCardRemoved)
}

// transmit answers one command APDU: pseudo-APDUs here, the rest by the
// card. A card that left the field is returned as an error wrapping
// ErrCardRemoved; other card failures become SW 6F00 (no precise
// diagnosis), what a reader reports for a transmission error.
func (p *prepared) transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	if r, ok := p.readerAPDU(capdu); ok {
		return r, nil
	}
	cctx, cancel := context.WithTimeout(ctx, p.CommandTimeout)
	defer cancel()
	r, err := p.Transport.Transmit(cctx, capdu)
	switch {
	case err != nil && removed(err):
		return nil, fmt.Errorf("%w: %w", ErrCardRemoved, err)
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("vpcd: %w", ctx.Err())
	case err != nil, len(r) < 2, len(r) > MaxMessage:
		return []byte{0x6F, 0x00}, nil
	}
	return r, nil
}
