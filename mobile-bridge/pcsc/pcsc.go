//go:build pcsc

package pcsc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ebfe/scard"

	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// Errors a caller tells apart with errors.Is.
var (
	// ErrNoService: pcscd is not running or its socket is not reachable.
	ErrNoService = errors.New("pcsc: PC/SC service (pcscd) not reachable")
	// ErrNoReader: no reader, or none whose name matches.
	ErrNoReader = errors.New("pcsc: no matching reader")
	// ErrNoCard: no card was presented in time.
	ErrNoCard = errors.New("pcsc: no card presented")
	// ErrIO: the reader failed while the card stayed in the field; the
	// bridge reports it as error "io".
	ErrIO = errors.New("pcsc: reader I/O error")
)

// DefaultWait is how long Open waits for a card when Options.Wait is 0.
const DefaultWait = 30 * time.Second

// lostWindow bounds how long a failed exchange waits for the reader to
// confirm that the card left (pcscd polls presence every 400 ms).
const lostWindow = 1500 * time.Millisecond

// retryPause is the longest Reconnect waits before connecting again after
// a card that could not be used.
const retryPause = 300 * time.Millisecond

// Options select the reader and bound the wait for a card.
type Options struct {
	// Reader is a case-insensitive substring of the reader's name (""
	// selects the first reader).
	Reader string
	// Wait bounds the wait for a card (0: DefaultWait).
	Wait time.Duration
}

// Reader is one PC/SC reader with the card in its field. It implements
// desfire.Transport. Use it from one goroutine at a time (the bridge
// session); Close releases it.
type Reader struct {
	sc   *scard.Context
	name string
	wait time.Duration

	mu   sync.Mutex // guards card, info, atr
	card *scard.Card
	info bridge.CardInfo
	atr  []byte
}

// establish opens a PC/SC context, telling "no pcscd" apart.
func establish() (*scard.Context, error) {
	sc, err := scard.EstablishContext()
	if err != nil {
		if errors.Is(err, scard.ErrNoService) || errors.Is(err, scard.ErrServiceStopped) {
			return nil, fmt.Errorf("%w: %w", ErrNoService, err)
		}
		return nil, fmt.Errorf("pcsc: establish context: %w", err)
	}
	return sc, nil
}

// ListReaders returns the names of the readers pcscd knows.
func ListReaders() ([]string, error) {
	sc, err := establish()
	if err != nil {
		return nil, err
	}
	defer sc.Release()
	return listReaders(sc)
}

func listReaders(sc *scard.Context) ([]string, error) {
	names, err := sc.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pcsc: list readers: %w", err)
	}
	return names, nil
}

// SelectReader picks the first name containing sub (case-insensitive),
// or the first name when sub is empty.
func SelectReader(names []string, sub string) (string, error) {
	for _, n := range names {
		if sub == "" || strings.Contains(strings.ToLower(n), strings.ToLower(sub)) {
			return n, nil
		}
	}
	if sub == "" {
		return "", fmt.Errorf("%w: no readers", ErrNoReader)
	}
	return "", fmt.Errorf("%w: none of %q contains %q", ErrNoReader, names, sub)
}

// Open selects the reader, waits for a card, connects to it and reads
// its UID and ATS.
func Open(ctx context.Context, o Options) (*Reader, error) {
	sc, err := establish()
	if err != nil {
		return nil, err
	}
	names, err := listReaders(sc)
	if err == nil {
		var name string
		if name, err = SelectReader(names, o.Reader); err == nil {
			r := &Reader{sc: sc, name: name, wait: o.Wait}
			if r.wait <= 0 {
				r.wait = DefaultWait
			}
			if _, err = r.Reconnect(ctx); err == nil {
				return r, nil
			}
		}
	}
	sc.Release()
	return nil, err
}

// Name is the selected reader's name.
func (r *Reader) Name() string { return r.name }

// Info is what the reader saw at activation: the UID (GET DATA P1=00)
// and the ATS (GET DATA P1=01, nil when the reader does not give it;
// readers differ: the whole ATS, or its historical bytes per PC/SC
// part 3).
func (r *Reader) Info() bridge.CardInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bridge.CardInfo{UID: append([]byte(nil), r.info.UID...), ATS: append([]byte(nil), r.info.ATS...)}
}

// ATR is the ATR the reader reported for the card (for an ISO 14443-4
// card, built by the reader from the ATS).
func (r *Reader) ATR() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.atr...)
}

// Reconnect drops the current card handle, waits (up to Options.Wait) for
// a card, connects to it and reads its UID and ATS. It serves as the
// bridge's Retap after the card was lost.
func (r *Reader) Reconnect(ctx context.Context) (bridge.CardInfo, error) {
	r.mu.Lock()
	if r.card != nil {
		r.card.Disconnect(scard.LeaveCard)
		r.card = nil
	}
	r.mu.Unlock()
	deadline := time.Now().Add(r.wait)
	var lastErr error
	for {
		if err := r.waitCard(ctx, deadline); err != nil {
			if lastErr != nil {
				return bridge.CardInfo{}, fmt.Errorf("%w (last attempt: %w)", err, lastErr)
			}
			return bridge.CardInfo{}, err
		}
		info, err := r.connect()
		if err == nil {
			return info, nil
		}
		if !transient(err) {
			return bridge.CardInfo{}, err
		}
		// The card went away between presence and connect, or pcscd
		// still showed a card that had left: try again when the reader's
		// state changes, or after a short pause.
		if err := r.waitChange(ctx, min(time.Until(deadline), retryPause)); err != nil {
			return bridge.CardInfo{}, err
		}
		lastErr = err
	}
}

// transient reports PC/SC errors that mean "no usable card right now".
func transient(err error) bool {
	for _, e := range []scard.Error{scard.ErrRemovedCard, scard.ErrResetCard, scard.ErrNoSmartcard,
		scard.ErrUnpoweredCard, scard.ErrUnresponsiveCard, scard.ErrCommError, scard.ErrNotTransacted,
		scard.ErrSharingViolation} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// waitCard blocks until a card is present in the reader, ctx ends, or the
// deadline passes (ErrNoCard).
func (r *Reader) waitCard(ctx context.Context, deadline time.Time) error {
	states := []scard.ReaderState{{Reader: r.name, CurrentState: scard.StateUnaware}}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pcsc: waiting for a card: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%w in %s on %q", ErrNoCard, r.wait, r.name)
		}
		if err := r.statusChange(ctx, states, left); err != nil {
			if errors.Is(err, scard.ErrTimeout) {
				continue
			}
			return fmt.Errorf("pcsc: waiting for a card on %q: %w", r.name, err)
		}
		ev := states[0].EventState
		if ev&scard.StateUnknown != 0 || ev&scard.StateIgnore != 0 {
			return fmt.Errorf("%w: reader %q went away", ErrNoReader, r.name)
		}
		if ev&scard.StatePresent != 0 && ev&scard.StateMute == 0 {
			return nil
		}
		states[0].CurrentState = ev &^ scard.StateChanged
	}
}

// waitChange waits up to d for any change of the reader's state.
func (r *Reader) waitChange(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w in %s on %q", ErrNoCard, r.wait, r.name)
	}
	states := []scard.ReaderState{{Reader: r.name, CurrentState: scard.StateUnaware}}
	if err := r.statusChange(ctx, states, 0); err != nil {
		return fmt.Errorf("pcsc: reader state: %w", err)
	}
	states[0].CurrentState = states[0].EventState &^ scard.StateChanged
	if err := r.statusChange(ctx, states, d); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return fmt.Errorf("pcsc: reader state: %w", err)
	}
	return nil
}

// statusChange is SCardGetStatusChange that ctx can interrupt
// (SCardCancel).
func (r *Reader) statusChange(ctx context.Context, states []scard.ReaderState, d time.Duration) error {
	stop := context.AfterFunc(ctx, func() { r.sc.Cancel() })
	defer stop()
	err := r.sc.GetStatusChange(states, d)
	if errors.Is(err, scard.ErrCancelled) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// connect opens the card in shared mode and reads what the bridge
// announces.
func (r *Reader) connect() (bridge.CardInfo, error) {
	card, err := r.sc.Connect(r.name, scard.ShareShared, scard.ProtocolAny)
	if err != nil {
		return bridge.CardInfo{}, fmt.Errorf("pcsc: connect to the card in %q: %w", r.name, err)
	}
	uid, sw, err := getData(card, 0x00)
	if err == nil && (sw != 0x9000 || len(uid) == 0) {
		err = fmt.Errorf("pcsc: reader %q does not report the UID (GET DATA answered %04X)", r.name, sw)
	}
	var ats []byte
	if err == nil {
		var atsSW uint16
		if ats, atsSW, err = getData(card, 0x01); atsSW != 0x9000 || len(ats) == 0 {
			ats = nil
		}
	}
	var atr []byte
	if err == nil {
		var st *scard.CardStatus
		if st, err = card.Status(); err == nil {
			atr = st.Atr
		}
	}
	if err != nil {
		card.Disconnect(scard.LeaveCard)
		return bridge.CardInfo{}, err
	}
	info := bridge.CardInfo{UID: uid, ATS: ats}
	r.mu.Lock()
	r.card, r.info, r.atr = card, info, atr
	r.mu.Unlock()
	return info, nil
}

// getData sends the PC/SC GET DATA pseudo-APDU FF CA P1 00 00 (P1 00:
// UID, 01: ATS).
func getData(card *scard.Card, p1 byte) ([]byte, uint16, error) {
	r, err := card.Transmit([]byte{0xFF, 0xCA, p1, 0x00, 0x00})
	if err != nil {
		return nil, 0, fmt.Errorf("pcsc: GET DATA %02X: %w", p1, err)
	}
	if len(r) < 2 {
		return nil, 0, fmt.Errorf("pcsc: GET DATA %02X: %w: response of %d bytes", p1, ErrIO, len(r))
	}
	n := len(r) - 2
	return bytes.Clone(r[:n]), uint16(r[n])<<8 | uint16(r[n+1]), nil
}

// Transmit sends one command APDU to the card. A card that left the
// field (PC/SC "removed" or "reset", or a failed exchange after which
// the reader shows no card) is an error wrapping bridge.ErrTagLost; other
// failures wrap ErrIO. ctx is checked before the APDU is sent: an
// exchange under way is bounded by the reader, not by ctx.
func (r *Reader) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pcsc: transmit: %w", err)
	}
	r.mu.Lock()
	card := r.card
	r.mu.Unlock()
	if card == nil {
		return nil, fmt.Errorf("pcsc: transmit: no card connected: %w", bridge.ErrTagLost)
	}
	rapdu, err := card.Transmit(capdu)
	if err == nil && len(rapdu) >= 2 {
		return rapdu, nil
	}
	if err == nil {
		err = fmt.Errorf("response of %d bytes", len(rapdu))
	}
	if errors.Is(err, scard.ErrRemovedCard) || errors.Is(err, scard.ErrResetCard) || r.cardGone(ctx) {
		r.mu.Lock()
		if r.card == card {
			card.Disconnect(scard.LeaveCard)
			r.card = nil
		}
		r.mu.Unlock()
		return nil, fmt.Errorf("pcsc: transmit: %w (%v)", bridge.ErrTagLost, err)
	}
	return nil, fmt.Errorf("pcsc: transmit: %w: %w", ErrIO, err)
}

// cardGone asks the reader, after a failed exchange, whether the card has
// left: at once, then after up to lostWindow for pcscd to notice.
func (r *Reader) cardGone(ctx context.Context) bool {
	states := []scard.ReaderState{{Reader: r.name, CurrentState: scard.StateUnaware}}
	if err := r.statusChange(ctx, states, 0); err != nil {
		return false
	}
	if states[0].EventState&scard.StatePresent == 0 {
		return true
	}
	states[0].CurrentState = states[0].EventState &^ scard.StateChanged
	if err := r.statusChange(ctx, states, lostWindow); err != nil {
		return false
	}
	return states[0].EventState&scard.StatePresent == 0
}

// Close disconnects the card (leaving it powered) and releases the PC/SC
// context.
func (r *Reader) Close() error {
	r.mu.Lock()
	card := r.card
	r.card = nil
	r.mu.Unlock()
	var errs []error
	if card != nil {
		if err := card.Disconnect(scard.LeaveCard); err != nil && !transient(err) {
			errs = append(errs, fmt.Errorf("pcsc: disconnect: %w", err))
		}
	}
	if err := r.sc.Release(); err != nil {
		errs = append(errs, fmt.Errorf("pcsc: release context: %w", err))
	}
	return errors.Join(errs...)
}
