package ledger

import (
	"context"
	"time"
)

// SUN (NTAG 424 DNA Secure Unique NFC) replay state. A tag's SDMReadCtr
// grows on every read; the ledger accepts a verified message only when its
// counter is strictly above the last accepted one, in one atomic
// statement, so of concurrent requests carrying the same URL exactly one
// is accepted.

// SUNCheck is a SUN message whose MAC has been verified and that the
// verifier wants accepted.
type SUNCheck struct {
	// UID is the tag's UID in upper-case hex (14 digits).
	UID string
	// Template names the verification template the message came through.
	Template string
	// Tenant owns a tag first seen here (the template's tenant); a known
	// tag keeps the tenant it has.
	Tenant string
	// Counter is the tag's SDMReadCtr (0 .. 2^24-2).
	Counter uint32
	// MAC is the message's SDMMAC in upper-case hex, kept to notice the
	// same counter arriving with a different MAC.
	MAC string
	// Region is an optional location hint (a country or region code).
	Region string
	// At is the verification time.
	At time.Time
	// RequireKnown refuses tags not registered beforehand with
	// RegisterSUNTag (the answer is then Known=false, nothing stored).
	RequireKnown bool
}

// SUNRecord is what the ledger did with a SUNCheck.
type SUNRecord struct {
	// Accepted: the counter was above the last accepted one and is now
	// the tag's last.
	Accepted bool
	// Known: the tag had a row (from an earlier verification or a
	// registration). With RequireKnown an unknown tag is not accepted.
	Known bool
	// HasPrev, PrevCounter, PrevAt, PrevRegion describe the tag's
	// previously accepted message, when Accepted and there was one.
	HasPrev     bool
	PrevCounter uint32
	PrevAt      time.Time
	PrevRegion  string
	// LastCounter and LastMAC are the tag's last accepted counter and MAC
	// when not Accepted (a replay).
	LastCounter int64
	LastMAC     string
}

// SUNSignal is one clone signal recorded against a tag.
type SUNSignal struct {
	Kind    string    `json:"kind"`
	Counter uint32    `json:"counter"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
}

// SUNTag is a tag's SUN state for operators.
type SUNTag struct {
	UID string `json:"uid"`
	// Tenant owns the tag: only its API keys see it.
	Tenant      string      `json:"-"`
	Template    string      `json:"template"`
	LastCounter int64       `json:"last_counter"`
	LastAt      *time.Time  `json:"last_verified_at,omitempty"`
	FirstAt     time.Time   `json:"first_seen_at"`
	Verified    int64       `json:"verified"`
	Replays     int64       `json:"replays"`
	CloneFlag   bool        `json:"clone_suspected"`
	Signals     []SUNSignal `json:"signals"`
}

// SUNStore keeps SUN replay state and clone signals. The SQL ledgers
// implement it next to Ledger (assert the interface on the value Open
// returns).
type SUNStore interface {
	// RecordSUN accepts c if its counter is above the tag's last, in one
	// atomic step; otherwise it counts a replay and reports the last
	// accepted counter and MAC.
	RecordSUN(ctx context.Context, c SUNCheck) (SUNRecord, error)
	// AddSUNSignals records clone signals against a tag and flags it.
	AddSUNSignals(ctx context.Context, uid string, s []SUNSignal) error
	// SUNTag returns a tag's state with its latest signals (ErrNotFound
	// for a tag never seen nor registered).
	SUNTag(ctx context.Context, uid string) (SUNTag, error)
	// RegisterSUNTag records a tag a tenant provisioned under a template
	// so that templates with RequireKnown accept it. Registering again is
	// a no-op (the first tenant keeps it).
	RegisterSUNTag(ctx context.Context, uid, template, tenant string, at time.Time) error
}
