package transaction

import (
	"context"
	"encoding/hex"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// rollForward runs after a proven top-up on a profile that rolls keys
// forward. The key the session authenticated with is proven at the
// version the card reported; a ChangeKey an earlier session may have left
// in flight is settled by that. When a newer version of the key is
// configured, it is recorded in flight first and then the ChangeKey
// leaves (one exchange). Whatever happens to the ChangeKey, the card then
// holds the old or the new version, GetKeyVersion at its next tap says
// which, and both keys are configured. A failure here is logged: the
// top-up stands.
func (s *Service) rollForward(ctx context.Context, r *run, cs *cardscript.Session) {
	ck, ok := s.cfg.Ledger.(ledger.CardKeys)
	if !ok || !r.prof.RollForward || cs == nil {
		return
	}
	keyNo, held := cs.Key()
	newest, ok := s.newestKey(r.prof.AID, keyNo)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	log := r.log.With(zap.Uint8("key_no", keyNo), zap.Uint8("held", held))
	if !ok || newest <= held {
		s.proveKey(wctx, ck, r, keyNo, held, log)
		return
	}
	uid, _ := hex.DecodeString(r.card)
	k, err := s.keyFunc(r.prof, uid)(ctx, keyNo, newest)
	if err != nil {
		log.Error("roll-forward: newest key", zap.Uint8("newest", newest), zap.Error(err))
		return
	}
	defer clear(k)
	if _, err := ck.IntendCardKey(wctx, r.card, r.prof.AID, keyNo, held, newest, s.cfg.Now()); err != nil {
		s.ledgerError()
		log.Error("roll-forward: record the key in flight; no ChangeKey sent", zap.Error(err))
		return
	}
	if err := cs.ChangeOwnKey(ctx, k, newest); err != nil {
		log.Info("roll-forward: ChangeKey not confirmed; the card's next tap tells which key it holds", zap.Uint8("newest", newest), zap.Error(err))
		return
	}
	log.Info("roll-forward: ChangeKey sent; proven at the card's next authentication", zap.Uint8("newest", newest))
}

// proveKey records that the card proved version of key keyNo when an
// earlier roll-forward left one in flight.
func (s *Service) proveKey(ctx context.Context, ck ledger.CardKeys, r *run, keyNo, version byte, log *zap.Logger) {
	cur, err := ck.GetCardKey(ctx, r.card, r.prof.AID, keyNo)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return
	case err != nil:
		s.ledgerError()
		log.Error("roll-forward: read the card's key record", zap.Error(err))
		return
	case cur.Pending == nil && cur.Version == version:
		return
	}
	if _, err := ck.ProveCardKey(ctx, r.card, r.prof.AID, keyNo, version, s.cfg.Now()); err != nil {
		s.ledgerError()
		log.Error("roll-forward: record the proven key", zap.Error(err))
	}
}

// newestKey is the newest configured version of an application key (the
// provider must list versions).
func (s *Service) newestKey(aid uint32, keyNo byte) (byte, bool) {
	v, ok := s.cfg.Keys.(keys.Versioner)
	if !ok {
		return 0, false
	}
	vs := v.Versions(keys.Ref{AID: aid, KeyNo: keyNo})
	if len(vs) == 0 {
		return 0, false
	}
	return vs[len(vs)-1], true
}
