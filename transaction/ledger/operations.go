package ledger

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Operations are the operator actions and reads beyond a top-up's own
// life: the hot list of blocked cards, cancellation of a top-up that never
// reached a card, and the export of a period for reconciliation. Both
// backends implement them in the ledger database, so every node sees a
// change at once.
type Operations interface {
	// BlockCard puts a card on tenant's hot list (or replaces the reason
	// of an existing block) and returns the block as stored.
	BlockCard(ctx context.Context, b CardBlock) (CardBlock, error)
	// UnblockCard takes a card off tenant's hot list; removed is false
	// when it was not blocked.
	UnblockCard(ctx context.Context, u CardUnblock) (removed bool, err error)
	// CardBlock returns tenant's block of a card (ok=false when none).
	CardBlock(ctx context.Context, tenant, cardUID string) (b CardBlock, ok bool, err error)
	// CancelTopUp moves a pending or failed top-up to cancelled in one
	// database transaction: compare-and-set on c.From (ErrConflict when a
	// session or another operator moved it first), the cancellation
	// recorded, and the unused bridge tokens of its open sessions retired
	// (their sessions end failed with CodeTopUpCancelled).
	CancelTopUp(ctx context.Context, c Cancellation) (TopUp, error)
	// Cancellation returns who cancelled a top-up and why (ErrNotFound
	// when it was not cancelled).
	Cancellation(ctx context.Context, topUpID uuid.UUID) (Cancellation, error)
	// ExportTopUps calls fn for each of f.Tenant's top-ups created in
	// [f.From, f.To), oldest first, reading in pages so the caller can
	// stream any number of them. An error from fn stops the export.
	ExportTopUps(ctx context.Context, f ExportFilter, fn func(TopUp) error) error
}

// CodeTopUpCancelled ends the open sessions of a cancelled top-up.
const CodeTopUpCancelled = "topup_cancelled"

// CardBlock is a card on a tenant's hot list: top-ups for it are refused
// (at creation when the card is named, and by a session once the card
// authenticated); balance lookups still work.
type CardBlock struct {
	Tenant  string
	CardUID string
	// Reason is the operator's (lost, stolen, fraud...); Actor the API
	// key id that blocked it.
	Reason, Actor string
	At            time.Time
}

// Check validates b and returns it with its card UID normalised.
func (b CardBlock) Check() (CardBlock, error) {
	if err := ValidateTenant(b.Tenant); err != nil {
		return b, err
	}
	uid, err := NormalizeCardUID(b.CardUID)
	if err != nil {
		return b, err
	}
	b.CardUID = uid
	switch {
	case strings.TrimSpace(b.Reason) == "" || len(b.Reason) > MaxReasonLen || !printable(b.Reason):
		return b, invalid("reason", "required, printable UTF-8, at most %d bytes", MaxReasonLen)
	case b.Actor == "" || len(b.Actor) > MaxActorLen || !printable(b.Actor):
		return b, invalid("actor", "required, printable, at most %d bytes", MaxActorLen)
	case b.At.IsZero():
		return b, invalid("at", "missing")
	}
	return b, nil
}

// CardUnblock asks to take a card off a tenant's hot list.
type CardUnblock struct {
	Tenant, CardUID, Actor string
	Now                    time.Time
}

// Check validates u and returns it with its card UID normalised.
func (u CardUnblock) Check() (CardUnblock, error) {
	if err := ValidateTenant(u.Tenant); err != nil {
		return u, err
	}
	uid, err := NormalizeCardUID(u.CardUID)
	if err != nil {
		return u, err
	}
	u.CardUID = uid
	switch {
	case u.Actor == "" || len(u.Actor) > MaxActorLen || !printable(u.Actor):
		return u, invalid("actor", "required, printable, at most %d bytes", MaxActorLen)
	case u.Now.IsZero():
		return u, invalid("now", "missing")
	}
	return u, nil
}

// Cancellation is an operator's withdrawal of a top-up that never reached
// a card.
type Cancellation struct {
	TopUpID uuid.UUID
	// From is the status the operator saw: pending or failed.
	From Status
	// Actor is the API key id; Reason is optional.
	Actor, Reason string
	At            time.Time
}

// Check validates c on its own.
func (c Cancellation) Check() error {
	if c.TopUpID == uuid.Nil {
		return invalid("topup_id", "missing")
	}
	if _, err := CheckTransition(c.From, StatusCancelled); err != nil {
		return err
	}
	switch {
	case len(c.Reason) > MaxReasonLen || !printable(c.Reason):
		return invalid("reason", "printable UTF-8, at most %d bytes", MaxReasonLen)
	case c.Actor == "" || len(c.Actor) > MaxActorLen || !printable(c.Actor):
		return invalid("actor", "required, printable, at most %d bytes", MaxActorLen)
	case c.At.IsZero():
		return invalid("at", "missing")
	}
	return nil
}

// ExportFilter selects a tenant's top-ups created in a period.
type ExportFilter struct {
	Tenant   string
	From, To time.Time
}

// MaxExportPeriod bounds one export (a reconciliation run asks for a day
// or a month, not a decade in one response).
const MaxExportPeriod = 366 * 24 * time.Hour

// Check validates f.
func (f ExportFilter) Check() error {
	if err := ValidateTenant(f.Tenant); err != nil {
		return err
	}
	switch {
	case f.From.IsZero() || f.To.IsZero():
		return invalid("period", "from and to are required")
	case !f.From.Before(f.To):
		return invalid("period", "from must be before to")
	case f.To.Sub(f.From) > MaxExportPeriod:
		return invalid("period", "at most %d days", int(MaxExportPeriod/(24*time.Hour)))
	}
	return nil
}
