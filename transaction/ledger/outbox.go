package ledger

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// The outbox: with Config.Outbox set, every state change an operator
// hears about is recorded as an Event in the same database transaction as
// the change itself, so an event exists exactly when its change
// committed; webhook delivery (server/webhook) reads the outbox later and
// delivers at least once, deduplicable by Event.ID.

// Event types.
const (
	EventApplied   = "topup.applied"
	EventFailed    = "topup.failed"
	EventInDoubt   = "topup.in_doubt"
	EventResolved  = "topup.resolved"
	EventExpired   = "topup.expired"
	EventCancelled = "topup.cancelled"
	EventSession   = "session.finished"
)

// EventTypes lists every event type, for validating subscriptions.
var EventTypes = []string{EventApplied, EventFailed, EventInDoubt, EventResolved, EventExpired, EventCancelled, EventSession}

// EventForStatus is the event a top-up's move to s records ("" for none).
func EventForStatus(s Status) string {
	switch s {
	case StatusApplied:
		return EventApplied
	case StatusFailed:
		return EventFailed
	case StatusInDoubt:
		return EventInDoubt
	case StatusExpired:
		return EventExpired
	case StatusCancelled:
		return EventCancelled
	}
	return ""
}

// Event is one recorded state change.
type Event struct {
	ID     uuid.UUID
	Tenant string
	Type   string
	// TopUpID is the top-up the event is about (a session event names
	// the session's top-up, if any).
	TopUpID uuid.UUID
	// SessionID is set on session events and on top-up events a session
	// caused.
	SessionID uuid.UUID
	// Status is the top-up status the event records (for session events,
	// the session's outcome: ok or failed).
	Status string
	At     time.Time
}

// Subscription is one webhook endpoint as the outbox fans events out to
// it: events of tenant whose type is in Types.
type Subscription struct {
	Endpoint string
	Tenant   string
	Types    []string
}

// Delivery is one event due at one endpoint.
type Delivery struct {
	Event    Event
	Endpoint string
	// Attempts made before this one.
	Attempts int
	// DeliveredAt is set once the endpoint acknowledged it.
	DeliveredAt *time.Time
	NextAt      time.Time
	LastError   string
}

// Outbox is the ledger side of webhook delivery. PostgreSQL lets several
// processes claim deliveries concurrently (each claimed by one of them
// until its claim lapses).
type Outbox interface {
	// FanOut creates a Delivery for every event not yet fanned out and
	// every subscription it matches, and marks the events fanned out;
	// it returns how many deliveries it created.
	FanOut(ctx context.Context, subs []Subscription, limit int, now time.Time) (int, error)
	// ClaimDeliveries returns up to limit deliveries due at now, claimed
	// for the lease (no other claimer gets them before it lapses).
	ClaimDeliveries(ctx context.Context, limit int, lease time.Duration, now time.Time) ([]Delivery, error)
	// Delivered records an acknowledged delivery.
	Delivered(ctx context.Context, eventID uuid.UUID, endpoint string, now time.Time) error
	// Retry records a failed attempt and when to try again.
	Retry(ctx context.Context, eventID uuid.UUID, endpoint, reason string, next time.Time) error
	// Redeliver makes an event of tenant due again at every endpoint it
	// was fanned out to, delivered or not; ErrNotFound if the tenant has
	// no such event.
	Redeliver(ctx context.Context, tenant string, eventID uuid.UUID, now time.Time) (int, error)
	// ListEvents returns a tenant's events about a top-up, oldest first,
	// with their deliveries.
	ListEvents(ctx context.Context, tenant string, topUpID uuid.UUID) ([]Event, []Delivery, error)
	// Backlog counts deliveries not yet acknowledged plus events not yet
	// fanned out.
	Backlog(ctx context.Context) (int, error)
}
