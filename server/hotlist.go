package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// Error codes of the hot list and cancellation.
const (
	codeCardBlocked    = "card_blocked"
	codeNotCancellable = "not_cancellable"
	codeNotBlocked     = "not_blocked"
)

// blockView is a card on the hot list.
type blockView struct {
	CardUID   string    `json:"card_uid"`
	Blocked   bool      `json:"blocked"`
	Reason    string    `json:"reason,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	BlockedAt time.Time `json:"blocked_at,omitzero"`
}

func viewBlock(b ledger.CardBlock) blockView {
	return blockView{CardUID: b.CardUID, Blocked: true, Reason: b.Reason, Actor: b.Actor, BlockedAt: b.At.UTC()}
}

type blockBody struct {
	Reason string `json:"reason"`
}

// pathUID reads the {uid} path value: 4, 7 or 10 bytes of hex.
func pathUID(w http.ResponseWriter, r *http.Request) (string, bool) {
	uid, err := ledger.NormalizeCardUID(r.PathValue("uid"))
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "uid must be 4, 7 or 10 bytes of hex")
		return "", false
	}
	return uid, true
}

// blockCard answers PUT /v1/cards/{uid}/block: the card goes on the
// tenant's hot list (or its reason is replaced), at once for every node.
func (s *Server) blockCard(w http.ResponseWriter, r *http.Request) {
	uid, ok := pathUID(w, r)
	if !ok {
		return
	}
	var body blockBody
	if err := decodeBody(w, r, &body); err != nil {
		s.apiError(w, r, err)
		return
	}
	b, err := s.o.Service.BlockCard(r.Context(), who(r).Tenant, uid, keyID(r), body.Reason)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	s.log.Warn("card blocked by an operator", zap.String("card", transaction.MaskUID(uid)), zap.String("key_id", keyID(r)))
	writeJSON(w, http.StatusOK, viewBlock(b))
}

// unblockCard answers DELETE /v1/cards/{uid}/block.
func (s *Server) unblockCard(w http.ResponseWriter, r *http.Request) {
	uid, ok := pathUID(w, r)
	if !ok {
		return
	}
	removed, err := s.o.Service.UnblockCard(r.Context(), who(r).Tenant, uid, keyID(r))
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	if !removed {
		writeError(w, http.StatusNotFound, codeNotBlocked, "the card is not blocked")
		return
	}
	s.log.Warn("card unblocked by an operator", zap.String("card", transaction.MaskUID(uid)), zap.String("key_id", keyID(r)))
	writeJSON(w, http.StatusOK, blockView{CardUID: uid})
}

// getCardBlock answers GET /v1/cards/{uid}/block: the block, or
// blocked=false.
func (s *Server) getCardBlock(w http.ResponseWriter, r *http.Request) {
	uid, ok := pathUID(w, r)
	if !ok {
		return
	}
	b, blocked, err := s.o.Service.CardBlock(r.Context(), who(r).Tenant, uid)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	if !blocked {
		writeJSON(w, http.StatusOK, blockView{CardUID: uid})
		return
	}
	writeJSON(w, http.StatusOK, viewBlock(b))
}

type cancelBody struct {
	Reason string `json:"reason"`
}

// cancellationView says who cancelled a top-up.
type cancellationView struct {
	Actor  string    `json:"actor"`
	From   string    `json:"from"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// cancelTopUp answers POST /v1/topups/{id}/cancel for a top-up that never
// reached a card (pending or failed); the body ({"reason": ...}) is
// optional.
func (s *Server) cancelTopUp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var body cancelBody
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &body); err != nil {
			s.apiError(w, r, err)
			return
		}
	}
	t, err := s.o.Service.TenantCancel(r.Context(), who(r).Tenant, id, keyID(r), body.Reason)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	s.log.Info("top-up cancelled by an operator", zap.String("topup", id.String()), zap.String("key_id", keyID(r)))
	v := viewTopUp(t)
	s.addCancellation(r, &v)
	writeJSON(w, http.StatusOK, v)
}

// addCancellation fills a cancelled top-up's view with who cancelled it.
func (s *Server) addCancellation(r *http.Request, v *topUpView) {
	if v.Status != ledger.StatusCancelled.String() {
		return
	}
	id, err := uuid.Parse(v.ID)
	if err != nil {
		return
	}
	c, err := s.o.Service.Cancellation(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) {
		return // cancelled before cancellations were recorded
	}
	if err != nil {
		s.log.Error("read cancellation", zap.Error(err))
		return
	}
	v.Cancellation = &cancellationView{Actor: c.Actor, From: c.From.String(), Reason: c.Reason, At: c.At.UTC()}
}
