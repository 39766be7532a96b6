package transaction

import (
	"context"
	"encoding/hex"
)

// runBalance is one balance lookup: lock the card, authenticate with the
// read key, read the value and both logs, and settle the card's
// unresolved top-ups from the top-up log exactly as a top-up does.
func (s *Service) runBalance(ctx context.Context, r *run) error {
	uid, err := s.identify(ctx, r, true)
	defer func() { r.cs.Close() }() // safe when nil or closed
	if err != nil {
		return err
	}
	r.card, r.res.CardUID = uid, uid
	l, err := s.lockCard(ctx, uid)
	if err != nil {
		return err
	}
	defer release(l)
	uidBytes, _ := hex.DecodeString(uid)
	r.bridge.Prompt(PromptHold, 0.3)
	cs := r.cs // a random-ID card's session, opened to learn its UID
	if cs == nil {
		if cs, err = s.startCard(ctx, r, uidBytes, true); err != nil {
			return err
		}
		defer cs.Close() // clears the session keys
	}
	r.res.Currency = r.prof.Currency
	out, err := cs.ReadBalance(ctx)
	if err != nil {
		return err
	}
	r.res.Balance = &out.Value
	for _, rec := range out.TopUps {
		r.res.Records = append(r.res.Records, Record{Kind: "topup", Timestamp: rec.Timestamp, Amount: int64(rec.Amount), Ref: hex.EncodeToString(rec.Ref[:])})
	}
	for _, rec := range out.Usage {
		r.res.Records = append(r.res.Records, Record{Kind: "usage", Timestamp: rec.Timestamp, Amount: int64(rec.Amount)})
	}
	open, err := s.cfg.Ledger.UnresolvedByCard(ctx, uid)
	if err != nil {
		s.ledgerError()
		return err
	}
	bk := &books{s: s, sess: r.sess, card: uid, fence: l.Fence(), log: r.log, profile: r.prof.Name}
	if _, err := bk.settle(ctx, open, out.TopUpLog); err != nil {
		return err
	}
	r.bridge.Prompt(PromptDone, 1)
	return nil
}
