package transaction

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Bridge is what a session needs from the bridge connection: a transport
// to the card (a desfire.Batcher when the bridge batches) and a way to
// tell the card holder what is happening.
type Bridge interface {
	Transport() desfire.Transport
	Prompt(p Prompt, progress float64)
}

// Prompt is what a session asks of, or tells, the card holder; the
// server words it for the bridge.
type Prompt int

// Prompts.
const (
	// PromptHold: the card work started; keep the card on the reader.
	PromptHold Prompt = iota + 1
	// PromptTapAgain: the card left too early; present it again.
	PromptTapAgain
	// PromptDone: the card work is finished; the card may be removed.
	PromptDone
)

// Retapper is implemented by bridges that can ask for the card again
// within a session (the contract's `prompt` followed by a new `card`).
type Retapper interface {
	// AwaitCard asks for the card again (PromptTapAgain) and waits, until
	// ctx ends, for it to be presented. It returns the UID the bridge
	// names, which proves nothing until the card authenticates.
	AwaitCard(ctx context.Context) (string, error)
}

// RunOptions are what a session knows of the bridge beyond its card.
type RunOptions struct {
	// ReaderID is the 16-byte Transaction MAC Reader ID of the reader the
	// card sits on (a registered kiosk or desk reader), committed with
	// CommitReaderID on cards that require it. Zero: Config.DefaultReaderID.
	ReaderID [16]byte
}

// Run performs one session (a top-up or a balance lookup) for the card the
// bridge claims to hold, and records its outcome. It never panics on card
// or bridge input and always returns a Result.
func (s *Service) Run(ctx context.Context, sess ledger.Session, claimedUID string, b Bridge) Result {
	return s.RunWith(ctx, sess, claimedUID, b, RunOptions{})
}

// RunWith is Run with what the session knows of its reader.
func (s *Service) RunWith(ctx context.Context, sess ledger.Session, claimedUID string, b Bridge, opts RunOptions) Result {
	res := Result{Kind: sess.Kind.String(), Currency: s.profile.Currency}
	log := s.cfg.Log.With(zap.String("session", sess.ID.String()), zap.String("card", MaskUID(claimedUID)))
	if sess.Kind == ledger.KindTopUp {
		res.TopUpID = sess.TopUpID.String()
		log = log.With(zap.String("topup", res.TopUpID))
	}
	ct := &countingTransport{t: b.Transport()}
	var t desfire.Transport = ct
	if _, ok := ct.t.(desfire.Batcher); ok {
		t = countingBatcher{ct}
	}
	rid := opts.ReaderID
	if rid == ([16]byte{}) {
		rid = s.cfg.DefaultReaderID
	}
	r := &run{sess: sess, claimed: claimedUID, bridge: b, t: t, res: &res, log: log, readerID: rid}
	err := s.runKind(ctx, r)
	if need, ok := readerIDNeed(err); ok && r.card != "" {
		// The card's authenticated Transaction MAC file settings require
		// CommitReaderID where its profile did not announce it (or disable
		// it where the profile did): the card refused the transaction.
		// Once more, the card's way: its log settles the refused attempt
		// first.
		s.readerIDs.put(r.card, need)
		log.Info("card's CommitReaderID setting differs from its profile; running the top-up again", zap.Bool("reader_id", need == readerIDOn))
		*r = run{sess: sess, claimed: claimedUID, bridge: b, t: t, res: &res, log: log, readerID: rid}
		res.Status, res.Balance, res.Records, res.Reason = "", nil, nil, ""
		err = s.runKind(ctx, r)
	}
	// A card lifted too early is asked for again, within the session's
	// deadline: the session settles its own in_doubt from the card's log
	// (or runs again what provably never reached the card) and finishes.
	rt, canRetap := b.(Retapper)
	for canRetap && errors.Is(err, desfire.ErrTagLost) && res.Retaps < s.cfg.MaxRetaps {
		uid, werr := rt.AwaitCard(ctx)
		if werr != nil {
			log.Info("card not presented again", zap.Error(werr))
			break
		}
		if !sameCard(uid, claimedUID) {
			// A session serves one card.
			err = fmt.Errorf("a different card was presented again: %w", ledger.ErrCardMismatch)
			break
		}
		res.Retaps++
		log.Info("card presented again", zap.Int("retap", res.Retaps))
		*r = run{sess: sess, claimed: uid, bridge: b, t: t, res: &res, log: log, readerID: rid}
		res.Status, res.Balance, res.Records, res.Reason = "", nil, nil, ""
		err = s.runKind(ctx, r)
	}
	res.Exchanges = ct.n
	if err != nil {
		res.OK = false
		if res.Reason == "" {
			res.Reason = ReasonOf(err)
		}
		log.Info("session failed", zap.String("reason", string(res.Reason)), zap.String("status", res.Status), zap.Int("exchanges", res.Exchanges), zap.Error(err))
	} else {
		res.OK = true
		log.Info("session done", zap.String("status", res.Status), zap.Int("exchanges", res.Exchanges))
	}
	s.finish(ctx, sess, &res, log, r.finished && res.OK)
	return res
}

// What the service remembers of a card's CommitReaderID setting.
const (
	readerIDOn  = 1
	readerIDOff = 2
)

// readerIDNeed reads a credit's CommitReaderID mismatch: what the card
// needs, and whether err was one.
func readerIDNeed(err error) (int, bool) {
	switch {
	case errors.Is(err, cardscript.ErrReaderIDRequired):
		return readerIDOn, true
	case errors.Is(err, cardscript.ErrReaderIDDisabled):
		return readerIDOff, true
	}
	return 0, false
}

// sameCard compares two UIDs as bridges name them. A card with a random
// ID shows a new one at every tap: two random IDs may be the same card
// (the session proves its real UID again, and the top-up's binding
// refuses any other).
func sameCard(a, b string) bool {
	na, errA := ledger.NormalizeCardUID(a)
	nb, errB := ledger.NormalizeCardUID(b)
	if errA != nil || errB != nil {
		return false
	}
	ra, _ := hex.DecodeString(na)
	rb, _ := hex.DecodeString(nb)
	return na == nb || cardscript.RandomID(ra) && cardscript.RandomID(rb)
}

// runKind runs the session's card work once, for the card r names.
func (s *Service) runKind(ctx context.Context, r *run) error {
	switch r.sess.Kind {
	case ledger.KindTopUp:
		return s.runTopUp(ctx, r)
	case ledger.KindBalance:
		return s.runBalance(ctx, r)
	}
	return fmt.Errorf("session kind %v", r.sess.Kind)
}

// run is one session as the phases see it.
type run struct {
	sess    ledger.Session
	claimed string // the UID the bridge named, not yet proven
	bridge  Bridge
	t       desfire.Transport
	res     *Result
	log     *zap.Logger
	// credit is the sealed credit once in_doubt is recorded.
	credit *cardscript.Credit
	// wipe clears the key material the session derived.
	wipe []func()
	// card is the normalised UID the bridge named; prof the fleet
	// profile that serves the card, once the first exchange showed it.
	card string
	prof *profile.Profile
	// blocked: the card was on the tenant's hot list when the session
	// read its top-up (enforced once the card authenticated).
	blocked bool
	// finished: the session's outcome was recorded with the top-up's
	// last transition (Transition.Finish).
	finished bool
	// readerID is the Transaction MAC Reader ID the session commits on
	// cards that require CommitReaderID.
	readerID [16]byte
	// cs is the card session identify opened for a random-ID card, and
	// realUID the UID that card showed under its UID key.
	cs      *cardscript.Session
	realUID []byte
}

// setStatus reports the top-up's status as the ledger now has it.
func (r *run) setStatus(tu ledger.TopUp) { r.res.Status = tu.Status.String() }

// finish records the session outcome; it uses a fresh context so a
// cancelled session still gets its outcome written.
// recorded: the outcome is in the ledger already.
func (s *Service) finish(ctx context.Context, sess ledger.Session, res *Result, log *zap.Logger, recorded bool) {
	if m := s.cfg.Metrics; m != nil {
		m.SessionOutcome(res.Kind, string(res.Reason))
		if res.Kind == "topup" && res.Status != "" {
			m.TopUpOutcome(res.Status)
		}
	}
	if recorded {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out := ledger.SessionOutcome{OK: res.OK, CardUID: res.CardUID, Balance: res.Balance, ErrorCode: string(res.Reason)}
	if len(res.Records) > 0 {
		out.Records = ledger.EncodeRecords(storedRecords(res.Records))
	}
	if _, err := s.cfg.Ledger.FinishSession(wctx, sess.ID, out, s.cfg.Now()); err != nil {
		s.ledgerError()
		log.Error("record session outcome", zap.Error(err))
	}
}

// integrityFailure counts a commit proof the ledger refused.
func (s *Service) integrityFailure(reason string) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.IntegrityFailure(reason)
	}
}

func (s *Service) ledgerError() {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.LedgerError()
	}
}

// lockCard takes the card's lock.
func (s *Service) lockCard(ctx context.Context, uid string) (lock.Lock, error) {
	l, err := s.cfg.Locker.Acquire(ctx, "card:"+uid, lock.Options{TTL: s.cfg.LockTTL, Wait: s.cfg.LockWait})
	if err != nil {
		return nil, err
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.LockWait(l.Waited())
	}
	return l, nil
}

func release(l lock.Lock) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.Release(ctx) // a lost lock is already reported where it mattered
}

// MaskUID shortens a card UID for logs: first and last byte only.
func MaskUID(uid string) string {
	if len(uid) < 6 {
		return "****"
	}
	return uid[:2] + "****" + uid[len(uid)-2:]
}

// countingTransport counts round trips; it keeps the Batcher capability of
// the transport it wraps.
type countingTransport struct {
	t desfire.Transport
	n int
}

func (c *countingTransport) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	c.n++
	return c.t.Transmit(ctx, capdu)
}

type countingBatcher struct{ *countingTransport }

func (c countingBatcher) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	c.n++
	return c.t.(desfire.Batcher).TransmitBatch(ctx, cmds)
}
