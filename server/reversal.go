package server

import (
	"net/http"

	"go.uber.org/zap"
)

// codeNotReversible: only an applied credit bound to a card can be
// reversed.
const codeNotReversible = "not_reversible"

// reverseTopUp answers POST /v1/topups/{id}/reversal: it creates (once
// per credit) the reversal of an applied top-up and hands out a bridge
// token for the session that debits the amount back with the card
// present. Asking again returns the same reversal (200) with a fresh
// token while it is payable.
func (s *Server) reverseTopUp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	rv, tk, created, err := s.o.Service.TenantReversal(r.Context(), who(r).Tenant, id)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	setObject(r, rv.ID.String())
	if created {
		s.log.Warn("reversal of a top-up requested", zap.String("topup", id.String()), zap.String("reversal", rv.ID.String()),
			zap.String("key_id", keyID(r)))
	}
	writeTicketed(w, rv, tk, created)
}
