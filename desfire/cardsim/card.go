// Package cardsim is a software MIFARE DESFire EV2/EV3 card behind the
// desfire.Transport interface: PICC and applications with AES keys and key
// versions, key settings, standard/backup data, value, linear and cyclic
// record files and the Transaction MAC file, with access rights and comm
// modes, EV1 (AuthenticateAES) and EV2 (AuthenticateEV2First/NonFirst)
// secure messaging written from the card's side, transactions with commit
// and abort, and fault knobs (card removed after N APDUs, torn after the
// commit, corrupting, slow).
//
// It is written from the public data sheets (DESFire Light, NTAG 424 DNA)
// and the published traces; like a real card it resets the authentication
// and discards the open transaction on any error. Not modelled: DES keys,
// LRP, ChangeFileSettings, ChangeKeySettings, CommitReaderID, GetFileSettings,
// multiple access condition sets, proximity check.
package cardsim

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/desfire-relay/relay/desfire"
)

// ErrCardRemoved is returned by Transmit once the card has left the field.
var ErrCardRemoved = errors.New("cardsim: card removed from the field")

// Limits that bound the card's memory (fuzzing must not exhaust it).
const (
	MaxApps     = 28
	MaxFiles    = 32
	MaxFileSize = 8 << 10
	MaxRecords  = 256
	// FrameSize is the data carried by one response frame before 91AF.
	FrameSize = 59
)

// Options configure a new card.
type Options struct {
	// UID is the 7-byte UID (nil: random).
	UID []byte
	// Rand supplies RndB and TI (nil: crypto/rand).
	Rand io.Reader
}

// Card is one simulated card. It is safe for concurrent use.
type Card struct {
	mu   sync.Mutex // guards everything below
	uid  []byte
	rnd  io.Reader
	picc *app
	apps map[uint32]*app
	cur  *app

	auth    *authState
	pending *pendingAuth
	out     []byte // rest of a chained response
	inCode  byte   // command being received in additional frames
	inData  []byte
	inMore  bool

	// Fault knobs.
	apdus           int
	removeAfter     int
	removed         bool
	tearAfterCommit bool
	corrupt         func([]byte) []byte
	delay           time.Duration
}

// New returns a blank card: PICC master key all-zero AES, version 0, no
// applications.
func New(o Options) *Card {
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	uid := o.UID
	if uid == nil {
		uid = make([]byte, 7)
		io.ReadFull(rnd, uid)
		uid[0] = 0x04
	}
	c := &Card{uid: append([]byte(nil), uid...), rnd: rnd, apps: map[uint32]*app{}}
	c.picc = newApp(0, 0x0F, 0x81)
	return c
}

// UID returns the card's UID.
func (c *Card) UID() []byte { return append([]byte(nil), c.uid...) }

// SetRand replaces the randomness (to replay published traces).
func (c *Card) SetRand(r io.Reader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rnd = r
}

// RemoveAfter makes the card leave the field after n more APDUs (0: never).
func (c *Card) RemoveAfter(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeAfter = 0
	if n > 0 {
		c.removeAfter = c.apdus + n
	}
}

// TearAfterCommit makes the next CommitTransaction take effect and the
// card leave the field before its answer.
func (c *Card) TearAfterCommit(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tearAfterCommit = on
}

// SetCorrupt installs a function that may alter each response APDU.
func (c *Card) SetCorrupt(f func([]byte) []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corrupt = f
}

// SetDelay makes every APDU take d.
func (c *Card) SetDelay(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
}

// Tap presents the card again: the field comes back, the volatile state
// (selection, authentication, open transaction) is reset, persistent
// state is kept.
func (c *Card) Tap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = false
	c.removeAfter = 0
	c.reset()
}

// reset drops the volatile state; an open transaction is lost.
func (c *Card) reset() {
	if c.cur != nil {
		c.cur.abort()
	}
	c.cur, c.auth, c.pending, c.out, c.inMore, c.inData = nil, nil, nil, nil, false, nil
}

// Removed reports whether the card is out of the field.
func (c *Card) Removed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed
}

// APDUs is the number of APDUs the card has received.
func (c *Card) APDUs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apdus
}

// Transmit implements desfire.Transport.
func (c *Card) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	c.mu.Lock()
	delay := c.delay
	c.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil, ErrCardRemoved
	}
	c.apdus++
	if c.removeAfter > 0 && c.apdus > c.removeAfter {
		c.removed = true
		c.reset()
		return nil, ErrCardRemoved
	}
	status, data := c.process(capdu)
	if c.removed { // torn after commit
		return nil, ErrCardRemoved
	}
	r := desfire.NativeResponse(status, data)
	if c.corrupt != nil {
		r = c.corrupt(r)
	}
	return r, nil
}

// process handles one APDU and returns the native status and data.
func (c *Card) process(apdu []byte) (byte, []byte) {
	code, data, err := desfire.UnwrapNative(apdu)
	if err != nil {
		c.fail()
		return desfire.StatusLengthError, nil
	}
	if code == desfire.CmdAdditionalFrame && c.out != nil {
		if len(data) != 0 {
			c.fail()
			return desfire.StatusLengthError, nil
		}
		return c.chunk(nil)
	}
	c.out = nil
	if code == desfire.CmdAdditionalFrame && c.inMore {
		c.inData = append(c.inData, data...)
		if len(c.inData) > MaxFileSize+64 {
			c.fail()
			return desfire.StatusLengthError, nil
		}
		if len(data) == FrameSize {
			return desfire.StatusAdditionalFrame, nil
		}
		c.inMore = false
		return c.respond(c.dispatch(c.inCode, c.inData))
	}
	if code == desfire.CmdAdditionalFrame && c.pending != nil {
		return c.respond(c.authSecond(data))
	}
	c.inMore = false
	if len(data) == FrameSize && chainable(code) {
		c.inCode, c.inData, c.inMore = code, append([]byte(nil), data...), true
		return desfire.StatusAdditionalFrame, nil
	}
	return c.respond(c.dispatch(code, data))
}

// chainable lists commands whose data may continue in additional frames.
func chainable(code byte) bool {
	switch code {
	case desfire.CmdWriteData, desfire.CmdWriteRecord:
		return true
	}
	return false
}

// respond splits long answers into frames and resets state on errors.
func (c *Card) respond(status byte, data []byte) (byte, []byte) {
	if status != desfire.StatusOK && status != desfire.StatusAdditionalFrame {
		c.fail()
		return status, nil
	}
	if status == desfire.StatusAdditionalFrame {
		return status, data
	}
	return c.chunk(data)
}

func (c *Card) chunk(data []byte) (byte, []byte) {
	if data == nil {
		data, c.out = c.out, nil
	}
	if len(data) > FrameSize {
		c.out = append([]byte(nil), data[FrameSize:]...)
		return desfire.StatusAdditionalFrame, data[:FrameSize]
	}
	return desfire.StatusOK, data
}

// fail applies an error's side effects: authentication lost, open
// transaction discarded.
func (c *Card) fail() {
	c.auth, c.pending, c.inMore, c.out = nil, nil, false, nil
	if c.cur != nil {
		c.cur.abort()
	}
}
