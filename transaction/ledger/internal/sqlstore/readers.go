package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var _ ledger.ReaderStore = (*Store)(nil)

const readerCols = `tenant, id, desfire_reader_id, location, secret_hash, created_at, agent_seen_at`

func scanReader(r Row) (ledger.Reader, error) {
	var (
		out           ledger.Reader
		created, seen int64
	)
	if err := r.Scan(&out.Tenant, &out.ID, &out.DESFireReaderID, &out.Location, &out.SecretHash, &created, &seen); err != nil {
		return ledger.Reader{}, err
	}
	if len(out.DESFireReaderID) == 0 {
		out.DESFireReaderID = nil
	}
	out.CreatedAt = fromMicros(created)
	if seen != 0 {
		out.AgentSeenAt = fromMicros(seen)
	}
	return out, nil
}

// CreateReader implements ledger.ReaderStore.
func (s *Store) CreateReader(ctx context.Context, r ledger.Reader) (ledger.Reader, error) {
	if err := r.Validate(); err != nil {
		return ledger.Reader{}, err
	}
	if r.CreatedAt.IsZero() {
		return ledger.Reader{}, &ledger.ValidationError{Field: "created_at", Reason: "missing"}
	}
	n, err := s.db.Exec(ctx, `INSERT INTO readers (tenant, id, desfire_reader_id, location, secret_hash, created_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		r.Tenant, r.ID, nullBytes(r.DESFireReaderID), r.Location, r.SecretHash, micros(r.CreatedAt))
	if err != nil {
		return ledger.Reader{}, fmt.Errorf("insert reader: %w", err)
	}
	if n == 0 {
		return ledger.Reader{}, fmt.Errorf("reader %s: %w", r.ID, ledger.ErrReaderExists)
	}
	return s.GetReader(ctx, r.Tenant, r.ID)
}

func (s *Store) oneReader(ctx context.Context, what, where string, args ...any) (ledger.Reader, error) {
	r, err := scanReader(s.db.QueryRow(ctx, `SELECT `+readerCols+` FROM readers WHERE `+where, args...))
	if errors.Is(err, ErrNoRows) {
		return ledger.Reader{}, fmt.Errorf("reader %s: %w", what, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.Reader{}, fmt.Errorf("read reader %s: %w", what, err)
	}
	return r, nil
}

// GetReader implements ledger.ReaderStore.
func (s *Store) GetReader(ctx context.Context, tenant, id string) (ledger.Reader, error) {
	return s.oneReader(ctx, id, `tenant = $1 AND id = $2`, tenant, id)
}

// ReaderBySecret implements ledger.ReaderStore.
func (s *Store) ReaderBySecret(ctx context.Context, secretHash []byte) (ledger.Reader, error) {
	if len(secretHash) != 32 {
		return ledger.Reader{}, &ledger.ValidationError{Field: "secret_hash", Reason: "must be a SHA-256 digest"}
	}
	return s.oneReader(ctx, "credential", `secret_hash = $1`, secretHash)
}

// ListReaders implements ledger.ReaderStore.
func (s *Store) ListReaders(ctx context.Context, tenant string) ([]ledger.Reader, error) {
	rows, err := s.db.Query(ctx, `SELECT `+readerCols+` FROM readers WHERE tenant = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list readers: %w", err)
	}
	defer rows.Close()
	out := []ledger.Reader{}
	for rows.Next() {
		r, err := scanReader(rows)
		if err != nil {
			return nil, fmt.Errorf("list readers: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list readers: %w", err)
	}
	return out, nil
}

// DeleteReader implements ledger.ReaderStore.
func (s *Store) DeleteReader(ctx context.Context, tenant, id string) error {
	n, err := s.db.Exec(ctx, `DELETE FROM readers WHERE tenant = $1 AND id = $2`, tenant, id)
	if err != nil {
		return fmt.Errorf("delete reader %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("reader %s: %w", id, ledger.ErrNotFound)
	}
	return nil
}

// TouchAgent implements ledger.ReaderStore.
func (s *Store) TouchAgent(ctx context.Context, tenant, id, conn string, now time.Time) error {
	n, err := s.db.Exec(ctx, `UPDATE readers SET agent_conn = $1, agent_seen_at = $2 WHERE tenant = $3 AND id = $4`,
		conn, micros(now), tenant, id)
	if err != nil {
		return fmt.Errorf("renew agent presence of %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("reader %s: %w", id, ledger.ErrNotFound)
	}
	return nil
}

// DropAgent implements ledger.ReaderStore.
func (s *Store) DropAgent(ctx context.Context, tenant, id, conn string) error {
	if _, err := s.db.Exec(ctx, `UPDATE readers SET agent_seen_at = 0 WHERE tenant = $1 AND id = $2 AND agent_conn = $3`,
		tenant, id, conn); err != nil {
		return fmt.Errorf("end agent presence of %s: %w", id, err)
	}
	return nil
}

// AddressSession implements ledger.ReaderStore.
func (s *Store) AddressSession(ctx context.Context, tenant, reader string, sessionID uuid.UUID, now, expires time.Time) error {
	if _, err := s.db.Exec(ctx, `INSERT INTO reader_sessions (session_id, tenant, reader, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		sessionID.String(), tenant, reader, micros(now), micros(expires)); err != nil {
		return fmt.Errorf("address session %s to reader %s: %w", sessionID, reader, err)
	}
	return nil
}

// ClaimSession implements ledger.ReaderStore. The row is picked and
// marked in one statement whose WHERE re-checks claimed_at, so of two
// nodes racing for it exactly one gets it back.
func (s *Store) ClaimSession(ctx context.Context, tenant, reader string, now time.Time) (uuid.UUID, bool, error) {
	var sid string
	err := s.db.QueryRow(ctx, `UPDATE reader_sessions SET claimed_at = $1
WHERE claimed_at IS NULL AND session_id = (SELECT session_id FROM reader_sessions
  WHERE tenant = $2 AND reader = $3 AND claimed_at IS NULL AND expires_at > $1
  ORDER BY created_at, session_id LIMIT 1)
RETURNING session_id`, micros(now), tenant, reader).Scan(&sid)
	if errors.Is(err, ErrNoRows) {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("claim session of reader %s: %w", reader, err)
	}
	id, err := uuid.Parse(sid)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("stored reader session %q: %w", sid, err)
	}
	return id, true, nil
}
