package server

import (
	"net/http"
	"time"

	"github.com/google/uuid"

	"go.uber.org/zap"
)

// codeWebhooksDisabled answers the webhook routes of a server without
// configured endpoints.
const codeWebhooksDisabled = "webhooks_disabled"

type deliveryView struct {
	Endpoint    string     `json:"endpoint"`
	Attempts    int        `json:"attempts"`
	DeliveredAt *time.Time `json:"delivered_at"`
	NextAt      *time.Time `json:"next_attempt_at"`
	LastError   string     `json:"last_error,omitempty"`
}

type eventView struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Status     string         `json:"status"`
	SessionID  string         `json:"session_id,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	Deliveries []deliveryView `json:"deliveries"`
}

// topUpEvents answers GET /v1/topups/{id}/events: the outbox events of a
// top-up with their deliveries, for an operator checking what its
// endpoints were told.
func (s *Server) topUpEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if s.o.Outbox == nil {
		writeError(w, http.StatusNotFound, codeWebhooksDisabled, "no webhook endpoints are configured")
		return
	}
	tenant := who(r).Tenant
	if _, err := s.o.Service.TenantTopUp(r.Context(), tenant, id); err != nil {
		s.apiError(w, r, err)
		return
	}
	evs, dels, err := s.o.Outbox.ListEvents(r.Context(), tenant, id)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	out := make([]eventView, 0, len(evs))
	for _, e := range evs {
		v := eventView{ID: e.ID.String(), Type: e.Type, Status: e.Status, CreatedAt: e.At, Deliveries: []deliveryView{}}
		if e.SessionID != uuid.Nil {
			v.SessionID = e.SessionID.String()
		}
		for _, d := range dels {
			if d.Event.ID != e.ID {
				continue
			}
			dv := deliveryView{Endpoint: d.Endpoint, Attempts: d.Attempts, DeliveredAt: d.DeliveredAt, LastError: d.LastError}
			if d.DeliveredAt == nil && d.NextAt.Year() < 9999 {
				next := d.NextAt
				dv.NextAt = &next
			}
			v.Deliveries = append(v.Deliveries, dv)
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
}

// redeliverEvent answers POST /v1/events/{id}/redeliver: the event is due
// again at every endpoint it went to, delivered or parked.
func (s *Server) redeliverEvent(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if s.o.Outbox == nil {
		writeError(w, http.StatusNotFound, codeWebhooksDisabled, "no webhook endpoints are configured")
		return
	}
	n, err := s.o.Outbox.Redeliver(r.Context(), who(r).Tenant, id, time.Now())
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	s.log.Info("webhook redelivery requested", zap.String("event", id.String()), zap.Int("deliveries", n), zap.String("key_id", keyID(r)))
	writeJSON(w, http.StatusAccepted, map[string]int{"deliveries": n})
}
