package transaction

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// ErrUnproven: the card's top-up log cannot prove whether an earlier
// top-up of this card reached it (the log is full of newer records), so
// the top-up stays in_doubt for an operator to resolve.
var ErrUnproven = errors.New("transaction: the card's log cannot prove the outcome of an earlier top-up")

// books is every ledger write a session makes for the card it holds:
// each goes through one of its methods, under the card lock's fence, in a
// write context that survives the session's cancellation (a bridge that
// hangs up must not stop the ledger from recording what the card proved).
type books struct {
	s     *Service
	sess  ledger.Session
	card  string // normalised UID
	fence int64
	// profile is the card profile the session uses, recorded with each
	// transition.
	profile string
	log     *zap.Logger
	// started: this session moved a top-up into in_progress (so a failure
	// before its commit leaves proves it did not reach the card).
	started bool
}

// move makes one transition and returns the top-up as stored.
func (b *books) move(ctx context.Context, tu ledger.TopUp, to ledger.Status, mod func(*ledger.Transition)) (ledger.TopUp, error) {
	x := ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: to, Fence: b.fence, SessionID: b.sess.ID,
		CardUID: b.card, Profile: b.profile, Now: b.s.cfg.Now()}
	if mod != nil {
		mod(&x)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out, err := b.s.cfg.Ledger.Transition(wctx, x)
	if err != nil {
		b.s.ledgerError()
		return tu, fmt.Errorf("top-up %s %s → %s: %w", tu.ID, tu.Status, to, err)
	}
	return out, nil
}

// start takes a pending or failed top-up into this session.
func (b *books) start(ctx context.Context, tu ledger.TopUp) (ledger.TopUp, error) {
	tu, err := b.move(ctx, tu, ledger.StatusInProgress, nil)
	if err == nil {
		b.started = true
	}
	return tu, err
}

// markInDoubt records, right before the commit leaves, that the card may
// hold the credit from now on.
func (b *books) markInDoubt(ctx context.Context, tu ledger.TopUp) (ledger.TopUp, error) {
	return b.move(ctx, tu, ledger.StatusInDoubt, nil)
}

// markApplied records a commit the card proved (Transaction MAC, or the
// commit answer's MAC). The ledger refuses a Transaction MAC counter that
// is not above the last one it accepted for the card (ErrTMCReplay).
// done, when set, ends the session with that outcome in the same commit.
func (b *books) markApplied(ctx context.Context, tu ledger.TopUp, p cardscript.Proof, app uint32, done *ledger.SessionOutcome) (ledger.TopUp, error) {
	return b.move(ctx, tu, ledger.StatusApplied, func(x *ledger.Transition) {
		x.BalanceBefore, x.BalanceAfter, x.TMC, x.TMV = p.BalanceBefore, p.BalanceAfter, p.TMC, p.TMV
		x.Finish = done
		x.ReaderID, x.PrevReaderID = p.ReaderID, p.PrevReaderID
		if p.TMC != nil {
			x.App = app
		}
	})
}

// markFailed records a top-up that provably never reached a card: nothing
// that could commit left the server. unbind drops the card binding this
// session made.
func (b *books) markFailed(ctx context.Context, tu ledger.TopUp, reason Reason, unbind bool) (ledger.TopUp, error) {
	return b.move(ctx, tu, ledger.StatusFailed, func(x *ledger.Transition) { x.ErrorCode, x.Unbind = string(reason), unbind })
}

// settle decides the card's unresolved top-ups from its top-up log, which
// an authenticated session read: a record carrying a top-up's reference
// proves it applied; its proven absence proves it failed; a log that
// cannot say leaves it in_doubt. A top-up a dead session left in_progress
// goes through in_doubt, as the state machine requires. It returns the
// top-ups as they now stand.
func (b *books) settle(ctx context.Context, open []ledger.TopUp, log cardscript.TopUpLog) ([]ledger.TopUp, error) {
	out := make([]ledger.TopUp, 0, len(open))
	for _, tu := range open {
		var err error
		if tu.Status == ledger.StatusInProgress {
			if tu, err = b.move(ctx, tu, ledger.StatusInDoubt, func(x *ledger.Transition) { x.ErrorCode = string(ReasonAbandoned) }); err != nil {
				return out, err
			}
		}
		ev := log.Find(ledger.LogRef(tu.ID), tu.CreatedAt.Unix())
		if tu.Resolution != "" {
			tu, err = b.checkResolution(ctx, tu, ev)
			if err != nil {
				return out, err
			}
			out = append(out, tu)
			continue
		}
		if tu.Status != ledger.StatusInDoubt {
			out = append(out, tu)
			continue
		}
		switch ev {
		case cardscript.Present:
			tu, err = b.move(ctx, tu, ledger.StatusApplied, nil)
		case cardscript.Absent:
			tu, err = b.move(ctx, tu, ledger.StatusFailed, func(x *ledger.Transition) { x.ErrorCode = string(ReasonNotOnCard) })
		default:
			b.log.Warn("top-up log cannot prove an earlier top-up either way; it stays in_doubt",
				zap.String("unresolved", tu.ID.String()), zap.Int("records", len(log.Records)))
		}
		if err != nil {
			return out, err
		}
		out = append(out, tu)
	}
	return out, nil
}

// checkResolution compares an operator's decision with what the card's
// log proves. Agreement is recorded quietly; a disagreement is recorded
// on the top-up as a conflict, logged and counted, and never changes the
// money: the top-up stays as the operator resolved it, for the operator
// to settle with the passenger.
func (b *books) checkResolution(ctx context.Context, tu ledger.TopUp, ev cardscript.Evidence) (ledger.TopUp, error) {
	var conflict string
	switch {
	case ev == cardscript.Unproven:
		return tu, nil // ask again at the next tap
	case tu.Status == ledger.StatusApplied && ev == cardscript.Absent:
		conflict = "resolved applied, but the card's authenticated top-up log proves no record of it"
	case tu.Status == ledger.StatusFailed && ev == cardscript.Present:
		conflict = "resolved failed, but the card's authenticated top-up log holds its record: the credit is on the card"
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out, err := b.s.cfg.Ledger.CheckResolution(wctx, tu.ID, conflict, b.s.cfg.Now())
	if err != nil {
		b.s.ledgerError()
		return tu, fmt.Errorf("check resolution of %s: %w", tu.ID, err)
	}
	if conflict != "" {
		b.s.integrityFailure("resolution_conflict")
		b.log.Error("card contradicts an operator resolution", zap.String("resolved", tu.ID.String()),
			zap.String("resolution", tu.Status.String()), zap.String("card_log", ev.String()))
	}
	return out, nil
}
