package transaction

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// runTopUp is one top-up session, in the order it happens: lock the card,
// take the top-up, find the card's profile and authenticate, settle what
// earlier sessions left unresolved on this card from its log, seal the
// credit, record in_doubt, send the commit, record what the card proved,
// and roll the card's key forward where its profile says so. A random-ID
// card is identified (its real UID read) before the lock.
func (s *Service) runTopUp(ctx context.Context, r *run) error {
	uid, err := s.identify(ctx, r, false)
	defer func() { r.cs.Close() }() // safe when nil or already closed
	if err != nil {
		if tu, gerr := s.cfg.Ledger.GetTopUp(ctx, r.sess.TopUpID); gerr == nil {
			r.setStatus(tu) // untouched: nothing was started
		}
		return err
	}
	r.card, r.res.CardUID = uid, uid
	l, err := s.lockCard(ctx, uid)
	if err != nil {
		return err
	}
	defer release(l)
	defer func() {
		r.credit.Close() // clears the session and TMAC keys
		for _, w := range r.wipe {
			w()
		}
	}()
	bk := &books{s: s, sess: r.sess, card: uid, fence: l.Fence(), log: r.log}

	// One read under the lock: the top-up and what earlier sessions left
	// unresolved on this card, which is settled before anything else.
	tu, open, blocked, err := s.cfg.Ledger.SessionTopUp(ctx, r.sess.TopUpID, uid)
	if err != nil {
		s.ledgerError()
		return err
	}
	r.blocked = blocked
	r.res.Amount, r.res.Currency = tu.Amount, tu.Currency
	r.setStatus(tu)
	if err := payable(tu, uid); err != nil {
		return err
	}
	if tu.Status == ledger.StatusPending && !s.cfg.Now().Before(tu.ExpiresAt) {
		return fmt.Errorf("top-up %s: %w", tu.ID, ledger.ErrTopUpExpired)
	}
	bound := tu.CardUID == "" // this session binds the top-up to the card
	switch {
	case tu.Status == ledger.StatusPending:
		// Nothing is written until in_doubt, right before the commit
		// leaves: that one statement binds the card, records the attempt
		// and checks the fence.
	case tu.Status == ledger.StatusFailed:
		if tu, err = bk.start(ctx, tu); err != nil {
			return s.lostStart(ctx, r, tu, err)
		}
		r.setStatus(tu)
	case !containsID(open, tu.ID):
		open = append(open, tu) // in_doubt or in_progress, bound to this card
	}
	// From here until the commit leaves, a failure proves the top-up did
	// not reach the card.
	tu, err = s.beforeCommit(ctx, r, bk, l, tu, open)
	if err != nil || tu.Status != ledger.StatusInDoubt {
		if err != nil && uncommitted(tu, bk, err) {
			tu = s.failUncommitted(ctx, bk, tu, err, bound)
		}
		r.setStatus(tu)
		if tu.Status == ledger.StatusPending && err != nil {
			// The one statement to in_doubt lost its compare-and-set
			// (cancelled or taken meanwhile): nothing was sent.
			return s.lostStart(ctx, r, tu, err)
		}
		return err
	}
	r.setStatus(tu)
	proof, err := r.credit.Commit(ctx)
	if !proof.Applied {
		// The commit may have reached the card: the top-up stays in_doubt
		// and the card's next tap settles it from its log.
		if err == nil {
			err = errors.New("card script ended without proof of the commit")
		}
		return err
	}
	// The commit is proven; a later failure (the card leaving before the
	// final GetValue) changes nothing about that.
	// The session's outcome rides with applied: one commit for both.
	done := &ledger.SessionOutcome{OK: true, CardUID: uid, Balance: proof.BalanceAfter}
	applied, aerr := bk.markApplied(ctx, tu, proof, r.prof.AID, done)
	if aerr != nil {
		if errors.Is(aerr, ledger.ErrTMCReplay) {
			s.integrityFailure("tmc_replay")
			r.log.Error("commit proof carries a Transaction MAC counter the ledger already accepted; the top-up stays in_doubt")
			return fmt.Errorf("%w: %w", desfire.ErrTransactionMAC, aerr)
		}
		return aerr
	}
	r.setStatus(applied)
	r.finished = true
	r.res.Balance = proof.BalanceAfter
	// The top-up stands; a key roll-forward may follow.
	s.rollForward(ctx, r, r.credit.Session())
	r.bridge.Prompt(PromptDone, 1)
	return nil
}

// beforeCommit finds the card's profile and authenticates, settles the
// card's unresolved top-ups (among them possibly
// this one), seals and stages the credit, and marks the top-up in_doubt.
// It returns the top-up as it stands: in_doubt when the commit is ready
// to leave (in r.credit), applied when the card's log proved an earlier
// attempt of this very top-up.
func (s *Service) beforeCommit(ctx context.Context, r *run, bk *books, l lock.Lock, tu ledger.TopUp, open []ledger.TopUp) (ledger.TopUp, error) {
	uid, _ := hex.DecodeString(bk.card)
	// The first exchange shows the card's kind and the profile that
	// serves it; every later transition records that profile.
	r.bridge.Prompt(PromptHold, 0.2)
	cs := r.cs // a random-ID card's session, opened to learn its UID
	if cs == nil {
		var err error
		if cs, err = s.startCard(ctx, r, uid, false); err != nil {
			return tu, err
		}
	}
	defer func() {
		if r.credit == nil {
			cs.Close() // no credit carries the session on: its keys go now
		}
	}()
	bk.profile = r.prof.Name
	// The hot list, checked against the UID the session's keys are
	// diversified from, before anything that could credit the card
	// leaves: a bridge that names another card's UID gets keys the card
	// refuses (its authentication fails, and with it every command that
	// follows), so nothing it relays can credit a blocked card. A
	// reversal only takes value off the card, so a blocked card may have
	// its credits reversed.
	if r.blocked && tu.Kind != ledger.TopUpReversal {
		return tu, fmt.Errorf("card %s is on the hot list: %w", MaskUID(bk.card), ErrCardBlocked)
	}
	if tu.Scheme != "" && tu.Scheme != r.prof.Name {
		// The request named the card profile: another card's kind is
		// refused before anything is written.
		return tu, fmt.Errorf("the top-up is for %s cards, this card is served by %s: %w", tu.Scheme, r.prof.Name, cardscript.ErrUnknownCard)
	}
	if r.prof.HasTMAC && len(uid) > desfire.MaxTMACUIDSize {
		// The Transaction MAC session vector holds at most 7 UID bytes:
		// the commit's proof could never be checked.
		return tu, fmt.Errorf("%d-byte UID on a Transaction MAC profile: %w", len(uid), cardscript.ErrUnknownCard)
	}
	tmKey, wipe, err := s.tmacKeys(ctx, r.prof, uid)
	if err != nil {
		return tu, err
	}
	r.wipe = append(r.wipe, wipe)
	if len(open) > 0 {
		if tu, err = s.settleFirst(ctx, bk, cs, tu, open); err != nil || !takeable(tu) {
			return tu, err
		}
	}
	ref := [profile.RefSize]byte{}
	copy(ref[:], ledger.LogRef(tu.ID))
	debit := tu.Kind == ledger.TopUpReversal // takes an applied credit back
	recAmount := int32(tu.Amount)
	if debit {
		recAmount = -recAmount
	}
	cr, err := cs.SealCredit(ctx, cardscript.CreditParams{
		UID: uid, TMACKey: tmKey, Amount: int32(tu.Amount), Debit: debit,
		ReaderID: r.readerID[:], CommitReaderID: s.commitReaderID(r),
		Record: profile.LogRecord{Timestamp: uint32(s.cfg.Now().Unix()), Amount: recAmount, Ref: ref},
	})
	if err != nil {
		return tu, err
	}
	if err := cr.Stage(ctx); err != nil {
		return tu, err
	}
	if err := holds(ctx, l); err != nil {
		return tu, err
	}
	if tu, err = bk.markInDoubt(ctx, tu); err != nil {
		return tu, err
	}
	r.credit = cr
	return tu, nil
}

// settleFirst reads the card's top-up log and settles its unresolved
// top-ups. This top-up, when it was one of them, comes back applied (its
// record is on the card), in_progress again (proven absent: it is retried
// now) or in_doubt with ErrUnproven.
func (s *Service) settleFirst(ctx context.Context, bk *books, cs *cardscript.Session, tu ledger.TopUp, open []ledger.TopUp) (ledger.TopUp, error) {
	log, err := cs.ReadTopUpLog(ctx)
	if err != nil {
		return tu, err
	}
	settled, err := bk.settle(ctx, open, log)
	if err != nil {
		return tu, err
	}
	for _, u := range settled {
		if u.ID == tu.ID {
			tu = u
		}
	}
	switch tu.Status {
	case ledger.StatusFailed:
		return bk.start(ctx, tu)
	case ledger.StatusInDoubt:
		return tu, ErrUnproven
	}
	return tu, nil
}

// failUncommitted records that nothing that could commit left the
// server: the top-up failed, and the binding this session made goes too
// (a tap with a foreign card, or a UID the bridge named but never proved,
// must not strand a paid top-up). If even that write fails the top-up
// stays in_progress, which the card's next tap settles from its log.
func (s *Service) failUncommitted(ctx context.Context, bk *books, tu ledger.TopUp, cause error, bound bool) ledger.TopUp {
	u, err := bk.markFailed(ctx, tu, ReasonOf(cause), bound)
	if err != nil {
		bk.log.Error("record failed top-up", zap.Error(err))
		return tu
	}
	return u
}

// lostStart explains a start that lost its compare-and-set: the top-up
// moved between the read and the start (an operator cancelled it, it
// expired, a session for another card took it), so it is not payable by
// this session; nothing was sent to the card.
func (s *Service) lostStart(ctx context.Context, r *run, tu ledger.TopUp, err error) error {
	if !errors.Is(err, ledger.ErrConflict) {
		return err
	}
	if cur, gerr := s.cfg.Ledger.GetTopUp(ctx, tu.ID); gerr == nil {
		r.setStatus(cur)
	}
	return fmt.Errorf("%w: %w", err, ErrNotPayable)
}

// takeable: the session may still take tu to in_doubt (it holds it
// in_progress, or it is pending).
func takeable(tu ledger.TopUp) bool {
	return tu.Status == ledger.StatusInProgress || tu.Status == ledger.StatusPending
}

// uncommitted reports whether a session failing with err before its
// commit left should record the top-up failed: it took the top-up
// (in_progress), or meant to take it straight to in_doubt (pending) and
// lost no race for it.
func uncommitted(tu ledger.TopUp, bk *books, err error) bool {
	switch {
	case tu.Status == ledger.StatusInProgress:
		return bk.started
	case tu.Status == ledger.StatusPending:
		return !errors.Is(err, ledger.ErrConflict) && !errors.Is(err, ledger.ErrTopUpExpired) &&
			!errors.Is(err, ledger.ErrStaleFence) && !errors.Is(err, ErrNotPayable)
	}
	return false
}

// holds checks the card lock is still held right before the commit.
func holds(ctx context.Context, l lock.Lock) error {
	select {
	case <-l.Lost():
		return lock.ErrLockLost
	default:
	}
	return l.Check(ctx)
}

// payable checks a top-up may be worked on for the card uid.
func payable(tu ledger.TopUp, uid string) error {
	switch tu.Status {
	case ledger.StatusPending, ledger.StatusFailed, ledger.StatusInDoubt, ledger.StatusInProgress:
	default:
		return fmt.Errorf("top-up is %s: %w", tu.Status, ErrNotPayable)
	}
	if tu.Resolution != "" {
		return fmt.Errorf("top-up was resolved by an operator (%s): %w", tu.Resolution, ErrNotPayable)
	}
	if tu.CardUID != "" && tu.CardUID != uid {
		return fmt.Errorf("top-up is bound to another card: %w", ledger.ErrCardMismatch)
	}
	return nil
}

// keyFunc resolves the card's keys for profile p from the claimed UID. A
// wrong claim yields a wrong key, which the card's authentication
// refuses.
func (s *Service) keyFunc(p *profile.Profile, uid []byte) cardscript.KeyFunc {
	return func(ctx context.Context, keyNo, version byte) ([]byte, error) {
		return s.cfg.Keys.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: keyNo, Version: version}, uid)
	}
}

// tmacKeys derives, before anything is sent, every configured version of
// the card's AppTransactionMACKey: the card names its version only in the
// Transaction MAC file settings that ride with the credit, so the key for
// whichever version it names must be at hand when the commit's proof
// comes back. A key store that cannot answer thus fails the session with
// nothing sent. The returned func clears the keys.
func (s *Service) tmacKeys(ctx context.Context, p *profile.Profile, uid []byte) (cardscript.TMACKeyFunc, func(), error) {
	if !p.HasTMAC {
		return nil, func() {}, nil
	}
	ref := keys.Ref{AID: p.AID, Name: keys.TMACName}
	versions := []byte{1}
	if v, ok := s.cfg.Keys.(keys.Versioner); ok {
		versions = v.Versions(ref)
	}
	if len(versions) == 0 {
		return nil, nil, fmt.Errorf("%s: no version configured: %w", ref, keys.ErrNotFound)
	}
	held := make(map[byte]keys.Secret, len(versions))
	wipe := func() {
		for _, k := range held {
			clear(k)
		}
	}
	for _, v := range versions {
		ref.Version = v
		k, err := s.cfg.Keys.CardKey(ctx, ref, uid)
		if err != nil {
			wipe()
			return nil, nil, err
		}
		held[v] = k
	}
	return func(_ context.Context, version byte) ([]byte, error) {
		k, ok := held[version]
		if !ok {
			return nil, fmt.Errorf("the card names AppTransactionMACKey version %d, which is not configured: %w", version, keys.ErrNotFound)
		}
		return append([]byte(nil), k...), nil
	}, wipe, nil
}

// commitReaderID decides whether the credit sends CommitReaderID: as the
// card last showed in its authenticated Transaction MAC file settings,
// else as its profile says.
func (s *Service) commitReaderID(r *run) bool {
	switch s.readerIDs.get(r.card) {
	case readerIDOn:
		return true
	case readerIDOff:
		return false
	}
	return r.prof.CommitReaderID
}

func containsID(ts []ledger.TopUp, id uuid.UUID) bool {
	for _, t := range ts {
		if t.ID == id {
			return true
		}
	}
	return false
}
