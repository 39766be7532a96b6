package transaction

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Bridge is what a session needs from the bridge connection: a transport
// to the card (a desfire.Batcher when the bridge batches) and a way to
// show text to the user.
type Bridge interface {
	Transport() desfire.Transport
	Prompt(text string, progress float64)
}

// Run performs one session (a top-up or a balance lookup) for the card the
// bridge claims to hold, and records its outcome. It never panics on card
// or bridge input and always returns a Result.
func (s *Service) Run(ctx context.Context, sess ledger.Session, claimedUID string, b Bridge) Result {
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
	var err error
	switch sess.Kind {
	case ledger.KindTopUp:
		err = s.runTopUp(ctx, sess, claimedUID, b, t, &res)
	case ledger.KindBalance:
		err = s.runBalance(ctx, sess, claimedUID, b, t, &res)
	default:
		err = fmt.Errorf("session kind %v", sess.Kind)
	}
	res.Exchanges = ct.n
	if err != nil {
		res.OK = false
		if res.Code == "" {
			res.Code = Code(err)
		}
		res.Message = publicMessage(res.Code)
		log.Info("session failed", zap.String("code", res.Code), zap.String("status", res.Status), zap.Int("exchanges", res.Exchanges), zap.Error(err))
	} else {
		res.OK = true
		log.Info("session done", zap.String("status", res.Status), zap.Int("exchanges", res.Exchanges))
	}
	s.finish(ctx, sess, &res, log)
	return res
}

// finish records the session outcome; it uses a fresh context so a
// cancelled session still gets its outcome written.
func (s *Service) finish(ctx context.Context, sess ledger.Session, res *Result, log *zap.Logger) {
	if m := s.cfg.Metrics; m != nil {
		m.SessionOutcome(res.Kind, res.Code)
		if res.Kind == "topup" && res.Status != "" {
			m.TopUpOutcome(res.Status)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out := ledger.SessionOutcome{OK: res.OK, CardUID: res.CardUID, Balance: res.Balance, ErrorCode: res.Code}
	if len(res.Records) > 0 {
		out.Records, _ = json.Marshal(res.Records)
	}
	if _, err := s.cfg.Ledger.FinishSession(wctx, sess.ID, out, s.cfg.Now()); err != nil {
		s.ledgerError()
		log.Error("record session outcome", zap.Error(err))
	}
}

func (s *Service) ledgerError() {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.LedgerError()
	}
}

// lockCard takes the card's lock.
func (s *Service) lockCard(ctx context.Context, uid string) (lock.Lock, error) {
	l, err := s.cfg.Locker.Acquire(ctx, fmt.Sprintf("card:%06X:%s", s.profile.AID, uid), lock.Options{TTL: s.cfg.LockTTL, Wait: s.cfg.LockWait})
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

// keyFunc resolves the card's keys from the claimed UID. A wrong claim
// yields a wrong key, which the card's authentication refuses.
func (s *Service) keyFunc(uid []byte) cardscript.KeyFunc {
	return func(ctx context.Context, keyNo, version byte) ([]byte, error) {
		return s.cfg.Keys.CardKey(ctx, keys.Ref{AID: s.profile.AID, KeyNo: keyNo, Version: version}, uid)
	}
}

func (s *Service) tmacKey(ctx context.Context, uid []byte) ([]byte, error) {
	if !s.profile.HasTMAC {
		return nil, nil
	}
	return s.cfg.Keys.CardKey(ctx, keys.Ref{AID: s.profile.AID, Name: keys.TMACName, Version: 1}, uid)
}

func (s *Service) runTopUp(ctx context.Context, sess ledger.Session, claimed string, b Bridge, t desfire.Transport, res *Result) error {
	t0, err := s.cfg.Ledger.GetTopUp(ctx, sess.TopUpID)
	if err != nil {
		return err
	}
	res.Amount, res.Status, res.Currency = t0.Amount, t0.Status.String(), t0.Currency
	switch t0.Status {
	case ledger.StatusPending, ledger.StatusFailed, ledger.StatusInDoubt, ledger.StatusInProgress:
	default:
		res.Code = CodeNotPayable
		return fmt.Errorf("top-up is %s: %w", t0.Status, ErrNotPayable)
	}
	uid, err := ledger.NormalizeCardUID(claimed)
	if err != nil {
		return err
	}
	res.CardUID = uid
	if t0.CardUID != "" && t0.CardUID != uid {
		res.Code = CodeCardMismatch
		return fmt.Errorf("top-up is bound to another card: %w", ledger.ErrCardMismatch)
	}
	l, err := s.lockCard(ctx, uid)
	if err != nil {
		return err
	}
	defer release(l)
	uidBytes, _ := hex.DecodeString(uid)
	fence := l.Fence()
	tr := func(id uuid.UUID, from, to ledger.Status, mod func(*ledger.Transition)) (ledger.TopUp, error) {
		x := ledger.Transition{TopUpID: id, From: from, To: to, Fence: fence, SessionID: sess.ID, CardUID: uid, Now: s.cfg.Now()}
		if mod != nil {
			mod(&x)
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		tu, err := s.cfg.Ledger.Transition(wctx, x)
		if err != nil {
			s.ledgerError()
		}
		return tu, err
	}

	// Everything of this card that an earlier session left unresolved.
	// Holding the card's lock, an in_progress top-up belongs to a dead
	// session. in_doubt is written before any commit is sent, so it should
	// never have reached the card; but that holds only while every
	// confirmed ledger write survives (a database that loses its last
	// commits in a crash breaks it), so it is settled from the card's own
	// log like an in_doubt one instead of being failed blindly. The log
	// read is part of this tap's first exchange anyway.
	all, err := s.cfg.Ledger.UnresolvedByCard(ctx, uid)
	if err != nil {
		s.ledgerError()
		return err
	}
	var doubts []ledger.TopUp
	for _, u := range all {
		switch u.Status {
		case ledger.StatusInProgress:
			d, err := tr(u.ID, ledger.StatusInProgress, ledger.StatusInDoubt, func(x *ledger.Transition) { x.ErrorCode = "abandoned" })
			if err != nil {
				return err
			}
			doubts = append(doubts, d)
		case ledger.StatusInDoubt:
			doubts = append(doubts, u)
		}
	}
	cur, err := s.cfg.Ledger.GetTopUp(ctx, sess.TopUpID)
	if err != nil {
		return err
	}
	if cur.Status == ledger.StatusPending || cur.Status == ledger.StatusFailed {
		if cur, err = tr(cur.ID, cur.Status, ledger.StatusInProgress, nil); err != nil {
			return err
		}
	} else if cur.Status == ledger.StatusInDoubt && !containsID(doubts, cur.ID) {
		doubts = append(doubts, cur)
	}
	res.Status = cur.Status.String()
	tmKey, err := s.tmacKey(ctx, uidBytes)
	if err != nil {
		return err
	}
	b.Prompt("Hold the card still", 0.2)

	ref := [profile.RefSize]byte{}
	copy(ref[:], ledger.LogRef(cur.ID))
	params := cardscript.TopUpParams{
		Profile: s.profile,
		UID:     uidBytes,
		Key:     s.keyFunc(uidBytes),
		TMACKey: tmKey,
		Amount:  int32(cur.Amount),
		Record:  profile.LogRecord{Timestamp: uint32(s.cfg.Now().Unix()), Amount: int32(cur.Amount), Ref: ref},
		Rand:    s.cfg.Rand,
		ReadLog: len(doubts) > 0,
	}
	params.OnLog = func(records []profile.LogRecord) (bool, error) {
		proceed := true
		for _, d := range doubts {
			to := ledger.StatusFailed
			if hasRef(records, d.ID) {
				to = ledger.StatusApplied
			}
			u, err := tr(d.ID, ledger.StatusInDoubt, to, func(x *ledger.Transition) {
				if to == ledger.StatusFailed {
					x.ErrorCode = "not_on_card"
				}
			})
			if err != nil {
				return false, err
			}
			if d.ID == cur.ID {
				cur = u
				if to == ledger.StatusApplied {
					proceed = false
				} else if cur, err = tr(cur.ID, ledger.StatusFailed, ledger.StatusInProgress, nil); err != nil {
					return false, err
				}
			}
		}
		res.Status = cur.Status.String()
		return proceed, nil
	}
	params.BeforeCommit = func(ctx context.Context) error {
		select {
		case <-l.Lost():
			return lock.ErrLockLost
		default:
		}
		if err := l.Check(ctx); err != nil {
			return err
		}
		u, err := tr(cur.ID, ledger.StatusInProgress, ledger.StatusInDoubt, nil)
		if err != nil {
			return err
		}
		cur = u
		res.Status = cur.Status.String()
		return nil
	}

	out, err := cardscript.TopUp(ctx, t, params)
	if out.Skipped {
		// The card's log proved an earlier attempt of this very top-up.
		res.Status = cur.Status.String()
		return nil
	}
	if out.Applied {
		// The commit is proven (TMV, or the commit answer's MAC); a later
		// failure, such as the card leaving before the final GetValue,
		// changes nothing about that.
		u, terr := tr(cur.ID, ledger.StatusInDoubt, ledger.StatusApplied, func(x *ledger.Transition) {
			x.BalanceBefore, x.BalanceAfter, x.TMC, x.TMV = out.BalanceBefore, out.BalanceAfter, out.TMC, out.TMV
		})
		if terr != nil {
			return terr
		}
		res.Status = u.Status.String()
		res.Balance = out.BalanceAfter
		b.Prompt("Done", 1)
		return nil
	}
	if err == nil {
		err = errors.New("card script ended without proof of the commit")
	}
	if !out.CommitSent && cur.Status == ledger.StatusInProgress {
		// Nothing that could commit left the server: proven not applied.
		code := Code(err)
		// The binding this session made (the UID the bridge named, maybe
		// never proven) goes too: nothing reached a card.
		unbind := t0.CardUID == ""
		if u, terr := tr(cur.ID, ledger.StatusInProgress, ledger.StatusFailed, func(x *ledger.Transition) { x.ErrorCode, x.Unbind = code, unbind }); terr == nil {
			res.Status = u.Status.String()
		}
		return err
	}
	// The commit may have reached the card: the top-up stays in_doubt and
	// the card's next tap resolves it from its top-up log.
	res.Status = cur.Status.String()
	return err
}

func (s *Service) runBalance(ctx context.Context, sess ledger.Session, claimed string, b Bridge, t desfire.Transport, res *Result) error {
	uid, err := ledger.NormalizeCardUID(claimed)
	if err != nil {
		return err
	}
	res.CardUID = uid
	l, err := s.lockCard(ctx, uid)
	if err != nil {
		return err
	}
	defer release(l)
	uidBytes, _ := hex.DecodeString(uid)
	b.Prompt("Hold the card still", 0.3)
	out, err := cardscript.Balance(ctx, t, cardscript.BalanceParams{Profile: s.profile, UID: uidBytes, Key: s.keyFunc(uidBytes), Rand: s.cfg.Rand})
	if err != nil {
		return err
	}
	res.Balance = &out.Value
	for _, r := range out.TopUps {
		res.Records = append(res.Records, Record{Kind: "topup", Timestamp: r.Timestamp, Amount: int64(r.Amount), Ref: hex.EncodeToString(r.Ref[:])})
	}
	for _, r := range out.Usage {
		res.Records = append(res.Records, Record{Kind: "usage", Timestamp: r.Timestamp, Amount: int64(r.Amount)})
	}
	// A balance tap resolves the card's in_doubt top-ups too: the read key
	// can read the top-up log.
	all, err := s.cfg.Ledger.UnresolvedByCard(ctx, uid)
	if err != nil {
		s.ledgerError()
		return err
	}
	for _, u := range all {
		// An in_progress top-up is settled from the log too (see runTopUp):
		// through in_doubt, as the state machine requires.
		if u.Status == ledger.StatusInProgress {
			if _, err := s.cfg.Ledger.Transition(ctx, ledger.Transition{TopUpID: u.ID, From: u.Status, To: ledger.StatusInDoubt, ErrorCode: "abandoned", Fence: l.Fence(), SessionID: sess.ID, CardUID: uid, Now: s.cfg.Now()}); err != nil {
				s.ledgerError()
				return err
			}
		}
		to := ledger.StatusFailed
		if hasRef(out.TopUps, u.ID) {
			to = ledger.StatusApplied
		}
		if _, err := s.cfg.Ledger.Transition(ctx, ledger.Transition{TopUpID: u.ID, From: ledger.StatusInDoubt, To: to, Fence: l.Fence(), SessionID: sess.ID, CardUID: uid, Now: s.cfg.Now()}); err != nil {
			s.ledgerError()
			return err
		}
	}
	b.Prompt("Done", 1)
	return nil
}

func containsID(ts []ledger.TopUp, id uuid.UUID) bool {
	for _, t := range ts {
		if t.ID == id {
			return true
		}
	}
	return false
}

func hasRef(records []profile.LogRecord, id uuid.UUID) bool {
	ref := ledger.LogRef(id)
	for _, r := range records {
		if string(r.Ref[:]) == string(ref) {
			return true
		}
	}
	return false
}

// MaskUID shortens a card UID for logs: first and last byte only.
func MaskUID(uid string) string {
	if len(uid) < 6 {
		return "****"
	}
	return uid[:2] + "****" + uid[len(uid)-2:]
}

func publicMessage(code string) string {
	switch code {
	case CodeCardBusy:
		return "This card is being used in another session. Try again in a moment."
	case CodeCardMismatch:
		return "This top-up belongs to a different card."
	case CodeCardUnknown:
		return "This card is not recognised."
	case CodeCardError:
		return "The card refused the operation."
	case CodeLimitExceeded:
		return "The card's balance would exceed its limit."
	case CodeIntegrity:
		return "The card's answer could not be verified. Tap the card again."
	case CodeTagLost:
		return "The card was removed too early. Tap the card again to finish."
	case CodeTimeout:
		return "The connection was too slow. Tap the card again."
	case CodeCancelled:
		return "Cancelled."
	case CodeNotPayable:
		return "This top-up cannot be applied any more."
	}
	return "Something went wrong on our side."
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
