package ledger

import (
	"encoding/json"
	"fmt"
)

// BalanceRecord is one card log entry of a balance lookup as a session
// outcome stores it (SessionOutcome.Records holds a JSON array of them).
type BalanceRecord struct {
	Kind      string `json:"kind"` // "topup" or "usage"
	Timestamp uint32 `json:"timestamp"`
	Amount    int64  `json:"amount"`
	Ref       string `json:"ref,omitempty"`
}

// EncodeRecords is the stored form of recs (nil for none).
func EncodeRecords(recs []BalanceRecord) json.RawMessage {
	if len(recs) == 0 {
		return nil
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return nil // unreachable: the fields are plain numbers and strings
	}
	return b
}

// DecodeRecords reads the records a session outcome stored.
func DecodeRecords(raw json.RawMessage) ([]BalanceRecord, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var recs []BalanceRecord
	if err := json.Unmarshal(raw, &recs); err != nil {
		return nil, fmt.Errorf("ledger: session records: %w", err)
	}
	return recs, nil
}
