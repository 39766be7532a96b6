// Package provision turns blank cards and tags into the operator's cards
// over the relay: NTAG 424 DNA personalisation (per-tag keys, SDM from a
// URL template, optional lock). Every new key version is recorded in the
// provisioning ledger before the ChangeKey that writes it leaves the
// server, and every ledger decision rests on card-authenticated evidence
// (a successful authentication, a MACed answer), never on a bare status
// word a bridge could forge. A torn session resumes on the next tap: the
// server authenticates with the recorded or the pending key as the
// evidence decides and carries on from there.
//
// Like the top-up runner, the functions here are synchronous, take a
// desfire.Transport and small interfaces, and start no goroutines.
package provision

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
)

// Errors of a provisioning session.
var (
	// ErrInvalid: the request cannot be carried out (bad template,
	// unknown key version); nothing was sent to a card.
	ErrInvalid = errors.New("provision: invalid request")
	// ErrNotBlank: the card is not in the state the session needs (keys
	// the server never wrote, a factory key that does not authenticate).
	// Nothing was written.
	ErrNotBlank = errors.New("provision: card is not blank")
	// ErrLocked: the tag is locked by someone else; nothing was written.
	ErrLocked = errors.New("provision: tag is locked")
	// ErrAlreadyProvisioned: the ledger records this card as done.
	ErrAlreadyProvisioned = errors.New("provision: already provisioned")
	// ErrKeyState: the card proved a key version the ledger does not
	// know; nothing more is written to it.
	ErrKeyState = errors.New("provision: card holds a key version the ledger does not know")
)

// Reasons a provisioning session can end with, beside the top-up ones
// (transaction.Reason*). Stored with the session; the values never
// change.
const (
	ReasonInvalid     transaction.Reason = "invalid_request"
	ReasonNotBlank    transaction.Reason = "not_blank"
	ReasonLocked      transaction.Reason = "tag_locked"
	ReasonProvisioned transaction.Reason = "already_provisioned"
)

// Reasons lists the provisioning reasons (transaction.Reasons has the
// rest a provisioning session can end with).
func Reasons() []transaction.Reason {
	return []transaction.Reason{ReasonInvalid, ReasonNotBlank, ReasonLocked, ReasonProvisioned}
}

// ReasonOf classifies a provisioning error: provisioning's own errors
// here, everything else by transaction.ReasonOf.
func ReasonOf(err error) transaction.Reason {
	var se *desfire.StatusError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrInvalid), errors.Is(err, ledger.ErrInvalid):
		return ReasonInvalid
	case errors.Is(err, ErrAlreadyProvisioned):
		return ReasonProvisioned
	case errors.Is(err, ErrLocked):
		return ReasonLocked
	case errors.Is(err, ErrNotBlank) && errors.As(err, &se):
		return transaction.ReasonCardError
	case errors.Is(err, ErrNotBlank):
		return ReasonNotBlank
	case errors.Is(err, ErrKeyState), errors.Is(err, ledger.ErrKeyState):
		return transaction.ReasonIntegrity
	case errors.Is(err, ledger.ErrCardMismatch):
		return transaction.ReasonCardMismatch
	case errors.Is(err, ledger.ErrStaleFence), errors.Is(err, lock.ErrLockLost):
		return transaction.ReasonCardBusy
	case errors.As(err, &se) && !errors.Is(err, desfire.ErrIntegrity):
		return transaction.ReasonCardError
	}
	return transaction.ReasonOf(err)
}

// Env is what a provisioning session needs besides the card.
type Env struct {
	Ledger ledger.ProvisionLedger
	Keys   keys.Provider
	Locker lock.Locker
	// LockTTL and LockWait tune the card lock.
	LockTTL, LockWait time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Rand feeds authentication (crypto/rand when nil).
	Rand io.Reader
	// SUN, when set, registers provisioned tags for SUN verification
	// (NTAG424Request.SUNTemplate).
	SUN ledger.SUNStore
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Result is a provisioning session's outcome.
type Result struct {
	OK   bool
	Kind string
	// CardUID is the UID the card proved (hex).
	CardUID string
	// Step is the ledger's step after the session.
	Step ledger.ProvisionStep
	// KeysChanged lists the keys this session changed; Resumed says an
	// earlier session had already started.
	KeysChanged []byte
	Resumed     bool
	// Created lists what the session wrote besides keys.
	Created []string
	// Exchanges is the number of bridge round trips.
	Exchanges int
	// Reason and Message are set when OK is false.
	Reason  transaction.Reason
	Message string
}

// fail fills r's error fields from err.
func (r *Result) fail(err error) {
	r.OK, r.Reason, r.Message = false, ReasonOf(err), err.Error()
}

func uidHex(uid []byte) string { return strings.ToUpper(hex.EncodeToString(uid)) }

// withLock runs fn holding the card's lock: a second session for the same
// card fails with lock.ErrLocked (card_busy) before touching it.
func (e *Env) withLock(ctx context.Context, key string, fn func(fence int64) error) error {
	l, err := e.Locker.Acquire(ctx, key, lock.Options{TTL: e.LockTTL, Wait: e.LockWait})
	if err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	return fn(l.Fence())
}

// runLocked runs a card script under the lock named key and completes
// res from its outcome.
func (e *Env) runLocked(ctx context.Context, key string, res *Result, script func(fence int64) error) {
	if err := e.withLock(ctx, key, script); err != nil {
		res.fail(err)
		return
	}
	res.OK = true
}

// begin opens (or reopens) the ledger's provisioning record of card id
// with nkeys keys, refusing a card recorded as done. fresh: nothing is
// recorded beyond the factory keys (version factory, none pending), so a
// card that shows anything else was not written by us.
func (e *Env) begin(ctx context.Context, id string, kind ledger.ProvisionKind, nkeys int, factory byte, fence int64, res *Result) (rec ledger.ProvisionRecord, fresh bool, err error) {
	rec, err = e.Ledger.BeginProvision(ctx, id, kind, nkeys, fence, e.now())
	if err != nil {
		return rec, false, fmt.Errorf("provisioning ledger: %w", err)
	}
	res.Step = rec.Step
	if rec.Step == ledger.StepDone {
		noun := "card"
		if kind == ledger.ProvisionNTAG424 {
			noun = "tag"
		}
		return rec, false, fmt.Errorf("%s %s: %w", noun, id, ErrAlreadyProvisioned)
	}
	fresh = rec.Step == ledger.StepStarted
	for _, k := range rec.Keys {
		if k.Version != factory || k.Pending != nil {
			fresh = false
		}
	}
	res.Resumed = !fresh
	return rec, fresh, nil
}

// keysChanged records, after the batch that changed them, each key of
// change whose ChangeKey the card answered under the session MAC
// (done(i): its MACed answer proves the new version).
func (e *Env) keysChanged(ctx context.Context, id string, change []byte, done func(i int) bool, target byte, fence int64, res *Result) error {
	for i, no := range change {
		if done(i) {
			if err := e.Ledger.ConfirmKey(ctx, id, no, target, "mac", fence, e.now()); err != nil {
				return fmt.Errorf("confirm key %d: %w", no, err)
			}
			res.KeysChanged = append(res.KeysChanged, no)
		}
	}
	return nil
}

// currentVersion is the highest version the provider holds of every key
// in refs (their Version fields are ignored), or 0 when there is none or
// the provider cannot list versions.
func currentVersion(kp keys.Provider, refs []keys.Ref) byte {
	v, ok := kp.(keys.Versioner)
	if !ok || len(refs) == 0 {
		return 0
	}
	common := map[byte]int{}
	for _, r := range refs {
		for _, ver := range v.Versions(r) {
			common[ver]++
		}
	}
	best := byte(0)
	for ver, n := range common {
		if n == len(refs) && ver > best {
			best = ver
		}
	}
	return best
}
