package simcard

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/desfire-relay/relay/desfire"
)

// ErrCardRemoved is what Transmit returns once the card has left the field
// (RemoveAfter, TearAfterCommit, Remove). Callers test it with errors.Is,
// the way a bridge reports tag_lost.
var ErrCardRemoved = errors.New("simcard: card removed from the field")

// ErrNoSuchObject is returned by the inspection API for an application or
// file that does not exist (or has the wrong type).
var ErrNoSuchObject = errors.New("simcard: no such application or file")

// Defaults for Options.
const (
	// DefaultMaxFrame is the largest data field of one frame in either
	// direction: the 64-byte default frame size of ISO/IEC 14443-4 minus the
	// PCB, CID/status and CRC bytes leaves 59, the figure libfreefare and
	// the EV1 traces use for chaining.
	DefaultMaxFrame = 59
	// DefaultCapacity is the file storage of a 4 KB card, in bytes.
	DefaultCapacity = 4096
	// MaxApplications is the number of applications a DESFire card holds.
	MaxApplications = 28
	// MaxFiles is the number of files per application (file numbers 0..31).
	MaxFiles = 32
	// MaxKeys is the number of keys per application.
	MaxKeys = 14
)

// Options configure a new card. The zero value is a blank card with a
// fixed UID and crypto/rand randomness.
type Options struct {
	// UID is the card UID (4, 7 or 10 bytes); default 04 01 02 03 04 05 06.
	UID []byte
	// Generation is the card's generation: GetVersion reports it, and an
	// EV1 card refuses the commands EV2 introduced (EV2 authentication,
	// Transaction MAC file, CommitReaderID) with ILLEGAL_COMMAND, as a
	// real EV1 card does. Default GenEV3.
	Generation Generation
	// RandomUID makes anticollision show a random 4-byte ID (08 xx xx xx)
	// and GetVersion a zero UID; GetCardUID still returns UID.
	RandomUID bool
	// Rand supplies RndB, TI and the random ID, so tests replay traces.
	Rand io.Reader
	// MaxFrame bounds the data bytes of one frame (default 59).
	MaxFrame int
	// Capacity bounds the bytes of file storage (default 4096).
	Capacity int
	// NoChangesOK makes CommitTransaction and AbortTransaction answer 00
	// when nothing is pending, instead of the 0C (NO_CHANGES) that the
	// DESFire status table documents for that case.
	NoChangesOK bool
}

// Card is a simulated DESFire EV2/EV3 card. It is safe for concurrent use;
// one mutex serialises APDUs, fault knobs and inspection.
type Card struct {
	mu sync.Mutex

	// persistent state
	uid      []byte
	picc     *app
	apps     map[[3]byte]*app
	appOrder [][3]byte
	used     int
	capacity int
	maxFrame int
	rnd      io.Reader
	randomID bool
	gen      Generation
	noChgOK  bool

	// volatile state
	sel     *app
	sess    *session
	pend    pending
	txn     *txn
	anticol []byte

	// fault knobs
	removeAfter     int // APDUs still answered; <0 = never removed
	removed         bool
	tearAfterCommit bool
	corrupt         func([]byte) []byte
	delay           time.Duration
	apdus           int
}

// New returns a blank card: PICC master key all-zero AES (version 0), key
// settings 0F, no applications.
func New(opts Options) (*Card, error) {
	uid := opts.UID
	if uid == nil {
		uid = []byte{0x04, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}
	}
	if len(uid) != 4 && len(uid) != 7 && len(uid) != 10 {
		return nil, fmt.Errorf("simcard: UID of %d bytes, want 4, 7 or 10", len(uid))
	}
	if opts.Generation == 0 {
		opts.Generation = GenEV3
	}
	if _, ok := versions[opts.Generation]; !ok {
		return nil, fmt.Errorf("simcard: unknown generation %d", opts.Generation)
	}
	c := &Card{
		uid:         append([]byte(nil), uid...),
		apps:        map[[3]byte]*app{},
		capacity:    opts.Capacity,
		maxFrame:    opts.MaxFrame,
		rnd:         opts.Rand,
		randomID:    opts.RandomUID,
		gen:         opts.Generation,
		noChgOK:     opts.NoChangesOK,
		removeAfter: -1,
	}
	if c.capacity <= 0 {
		c.capacity = DefaultCapacity
	}
	if c.maxFrame <= 0 || c.maxFrame > desfire.MaxShortData {
		c.maxFrame = DefaultMaxFrame
	}
	if c.rnd == nil {
		c.rnd = rand.Reader
	}
	c.picc = newApp([3]byte{}, 0x0F, 0x81)
	c.sel = c.picc
	if err := c.enterField(); err != nil {
		return nil, err
	}
	return c, nil
}

// enterField resets the volatile state as a card does on power-up.
func (c *Card) enterField() error {
	c.sel = c.picc
	c.sess = nil
	c.pend = pending{}
	c.txn = nil
	c.removed = false
	c.anticol = append([]byte(nil), c.uid...)
	if c.randomID {
		id := make([]byte, 4)
		if _, err := io.ReadFull(c.rnd, id[1:]); err != nil {
			return fmt.Errorf("simcard: random ID: %w", err)
		}
		id[0] = 0x08
		c.anticol = id
	}
	return nil
}

// Tap takes the card out of the field (if it was in) and presents it again:
// volatile state (selection, authentication, open transaction, chaining) is
// reset, persistent state is kept, and removal knobs are cleared.
func (c *Card) Tap() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeAfter = -1
	c.tearAfterCommit = false
	return c.enterField()
}

// Remove takes the card out of the field now: uncommitted changes are lost
// and Transmit fails with ErrCardRemoved until Tap.
func (c *Card) Remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked()
}

func (c *Card) removeLocked() {
	c.removed = true
	c.sess = nil
	c.pend = pending{}
	c.txn = nil
}

// RemoveAfter lets the card answer n more APDUs and then leave the field:
// APDU n+1 and later fail with ErrCardRemoved without being executed. A
// negative n cancels the knob.
func (c *Card) RemoveAfter(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeAfter = n
}

// SetTearAfterCommit arms a tear right after the next successful
// CommitTransaction: the commit is durable but the response never leaves
// the card, and Transmit returns ErrCardRemoved (the in-doubt case).
func (c *Card) SetTearAfterCommit(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tearAfterCommit = on
}

// SetCorrupt installs a function that may alter each response APDU (nil
// removes it), to test that the host rejects tampered answers. f runs
// under the card lock and must not call the card.
func (c *Card) SetCorrupt(f func(rapdu []byte) []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corrupt = f
}

// SetDelay adds latency to every APDU; Transmit honours ctx while waiting.
func (c *Card) SetDelay(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
}

// AnticollisionUID is the ID a reader sees at anticollision (the UID, or a
// random 4-byte ID in random UID mode), what a bridge reports as card.uid.
func (c *Card) AnticollisionUID() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.anticol...)
}

// APDUs is the number of APDUs the card has executed since New.
func (c *Card) APDUs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apdus
}

// Transmit executes one ISO 7816-4 wrapped native command and returns the
// response APDU. It implements desfire.Transport.
func (c *Card) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	c.mu.Lock()
	d := c.delay
	c.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("simcard: %w", ctx.Err())
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("simcard: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil, fmt.Errorf("simcard: transmit: %w", ErrCardRemoved)
	}
	if c.removeAfter == 0 {
		c.removeLocked()
		return nil, fmt.Errorf("simcard: transmit: %w", ErrCardRemoved)
	}
	if c.removeAfter > 0 {
		c.removeAfter--
	}
	c.apdus++
	r, tear := c.execute(capdu)
	if tear {
		c.tearAfterCommit = false
		c.removeLocked()
		return nil, fmt.Errorf("simcard: torn after commit: %w", ErrCardRemoved)
	}
	if c.corrupt != nil {
		r = c.corrupt(append([]byte(nil), r...))
	}
	return r, nil
}

// isoStatus builds an ISO 7816-4 status word response (no data).
func isoStatus(sw uint16) []byte { return []byte{byte(sw >> 8), byte(sw)} }

// execute runs one APDU; tear reports a commit that must tear the card.
func (c *Card) execute(capdu []byte) (rapdu []byte, tear bool) {
	code, payload, err := desfire.UnwrapNative(capdu)
	if err != nil {
		switch {
		case len(capdu) >= 4 && capdu[0] != 0x90:
			return isoStatus(0x6E00), false
		case len(capdu) >= 4 && (capdu[2] != 0 || capdu[3] != 0):
			return isoStatus(0x6A86), false
		}
		return isoStatus(0x6700), false
	}
	res := c.dispatch(code, payload)
	if res.status == desfire.StatusNoChanges {
		return desfire.NativeResponse(res.status, res.data), false
	}
	if res.status != desfire.StatusOK && res.status != desfire.StatusAdditionalFrame {
		// Errors end the authentication, as on a real card.
		c.sess = nil
		c.pend = pending{}
		return desfire.NativeResponse(res.status, nil), false
	}
	if res.status == desfire.StatusAdditionalFrame {
		return desfire.NativeResponse(res.status, res.data), false
	}
	return c.sendChained(res.data), res.tear && c.tearAfterCommit
}

// sendChained answers with the first frame of data and keeps the rest for
// AF requests.
func (c *Card) sendChained(data []byte) []byte {
	if len(data) <= c.maxFrame {
		return desfire.NativeResponse(desfire.StatusOK, data)
	}
	c.pend = pending{kind: pendOut, out: data[c.maxFrame:]}
	return desfire.NativeResponse(desfire.StatusAdditionalFrame, data[:c.maxFrame])
}

// pending is the chaining state between frames.
type pending struct {
	kind   int
	out    []byte   // pendOut: response bytes not yet sent
	chunks [][]byte // pendChunks: fixed response frames (GetVersion)
	code   byte     // pendIn: command being received
	in     []byte
	need   int
	auth   *authStep // pendAuth
}

const (
	pendNone = iota
	pendOut
	pendChunks
	pendIn
	pendAuth
)

// result is a command's outcome before framing: status and the protected
// response data (for 00), or the first AF frame.
type result struct {
	status byte
	data   []byte
	tear   bool // a successful commit (TearAfterCommit applies)
}

func fail(st byte) result { return result{status: st} }

// dispatch handles the AF continuation and routes native commands.
func (c *Card) dispatch(code byte, payload []byte) result {
	p := c.pend
	c.pend = pending{}
	if code == desfire.StatusAdditionalFrame {
		switch p.kind {
		case pendOut:
			if len(payload) != 0 {
				return fail(desfire.StatusLengthError)
			}
			if len(p.out) > c.maxFrame {
				c.pend = pending{kind: pendOut, out: p.out[c.maxFrame:]}
				return result{status: desfire.StatusAdditionalFrame, data: p.out[:c.maxFrame]}
			}
			return result{status: desfire.StatusOK, data: p.out}
		case pendChunks:
			if len(payload) != 0 {
				return fail(desfire.StatusLengthError)
			}
			if len(p.chunks) > 1 {
				c.pend = pending{kind: pendChunks, chunks: p.chunks[1:]}
				return result{status: desfire.StatusAdditionalFrame, data: p.chunks[0]}
			}
			return result{status: desfire.StatusOK, data: p.chunks[0]}
		case pendIn:
			if len(payload) == 0 || len(p.in)+len(payload) > p.need {
				return fail(desfire.StatusLengthError)
			}
			all := append(p.in, payload...)
			if len(all) < p.need {
				c.pend = pending{kind: pendIn, code: p.code, in: all, need: p.need}
				return result{status: desfire.StatusAdditionalFrame}
			}
			return c.run(p.code, all)
		case pendAuth:
			return c.authPart2(p.auth, payload)
		}
		return fail(desfire.StatusIllegalCommand)
	}
	if p.kind != pendNone {
		// A new command while frames were still due aborts both.
		c.discardTxn()
		return fail(desfire.StatusCommandAborted)
	}
	if need, st := c.chainNeed(code, payload); st != desfire.StatusOK {
		return fail(st)
	} else if need > len(payload) {
		c.pend = pending{kind: pendIn, code: code, in: append([]byte(nil), payload...), need: need}
		return result{status: desfire.StatusAdditionalFrame}
	}
	return c.run(code, payload)
}

// random reads n bytes from the injected reader.
func (c *Card) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rnd, b); err != nil {
		return nil, err
	}
	return b, nil
}
