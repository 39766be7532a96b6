package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var _ ledger.CardKeys = (*Store)(nil)

// IntendCardKey implements ledger.CardKeys.
func (s *Store) IntendCardKey(ctx context.Context, card string, aid uint32, keyNo, from, to byte, now time.Time) (ledger.CardKey, error) {
	uid, err := ledger.NormalizeCardUID(card)
	if err != nil {
		return ledger.CardKey{}, err
	}
	if from == to {
		return ledger.CardKey{}, &ledger.ValidationError{Field: "pending", Reason: "equals the proven version"}
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO card_keys (card_uid, aid, key_no, version, pending, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (card_uid, aid, key_no) DO UPDATE SET version = excluded.version, pending = excluded.pending, updated_at = excluded.updated_at`,
		uid, int64(aid), int64(keyNo), int64(from), int64(to), micros(now)); err != nil {
		return ledger.CardKey{}, fmt.Errorf("record key in flight: %w", err)
	}
	return s.GetCardKey(ctx, uid, aid, keyNo)
}

// ProveCardKey implements ledger.CardKeys.
func (s *Store) ProveCardKey(ctx context.Context, card string, aid uint32, keyNo, version byte, now time.Time) (ledger.CardKey, error) {
	uid, err := ledger.NormalizeCardUID(card)
	if err != nil {
		return ledger.CardKey{}, err
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO card_keys (card_uid, aid, key_no, version, pending, updated_at) VALUES ($1, $2, $3, $4, NULL, $5)
ON CONFLICT (card_uid, aid, key_no) DO UPDATE SET version = excluded.version, pending = NULL, updated_at = excluded.updated_at`,
		uid, int64(aid), int64(keyNo), int64(version), micros(now)); err != nil {
		return ledger.CardKey{}, fmt.Errorf("record proven key: %w", err)
	}
	return s.GetCardKey(ctx, uid, aid, keyNo)
}

// GetCardKey implements ledger.CardKeys.
func (s *Store) GetCardKey(ctx context.Context, card string, aid uint32, keyNo byte) (ledger.CardKey, error) {
	uid, err := ledger.NormalizeCardUID(card)
	if err != nil {
		return ledger.CardKey{}, err
	}
	var (
		version int64
		pending *int64
		updated int64
	)
	err = s.db.QueryRow(ctx, `SELECT version, pending, updated_at FROM card_keys WHERE card_uid = $1 AND aid = $2 AND key_no = $3`,
		uid, int64(aid), int64(keyNo)).Scan(&version, &pending, &updated)
	if errors.Is(err, ErrNoRows) {
		return ledger.CardKey{}, fmt.Errorf("card %s key %d: %w", uid, keyNo, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.CardKey{}, fmt.Errorf("read card key: %w", err)
	}
	k := ledger.CardKey{CardUID: uid, AID: aid, KeyNo: keyNo, Version: byte(version), UpdatedAt: fromMicros(updated)}
	if pending != nil {
		p := byte(*pending)
		k.Pending = &p
	}
	return k, nil
}
