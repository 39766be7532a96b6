package cardscript

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// BalanceParams describe a read-only lookup with the read key.
type BalanceParams struct {
	Profile profile.Profile
	UID     []byte
	Key     KeyFunc
	Rand    io.Reader
}

// UsageRecord is one entry of the usage log written by terminals
// (AN12113: reader ID 4 bytes, timestamp 8 bytes, deducted value 4
// bytes; little endian).
type UsageRecord struct {
	ReaderID  uint32
	Timestamp uint32
	Amount    int32
}

// BalanceResult is what the card holds.
type BalanceResult struct {
	Value  int64
	TopUps []profile.LogRecord
	Usage  []UsageRecord
}

// Balance reads the value and both logs with the read key.
func Balance(ctx context.Context, t desfire.Transport, p BalanceParams) (BalanceResult, error) {
	var res BalanceResult
	prof := p.Profile
	card := desfire.NewCard(t)
	s, err := open(ctx, card, &prof, prof.ReadKeyNo, p.Key, p.Rand)
	if err != nil {
		return res, err
	}
	data, err := card.Exec(ctx, getValueCmd(&prof))
	if err != nil {
		return res, fmt.Errorf("get value: %w", err)
	}
	if res.Value, err = value(data); err != nil {
		return res, err
	}
	logs := []struct {
		file byte
		mode desfire.CommMode
	}{{prof.TopUpLogFile, prof.TopUpLogMode}, {prof.UsageLogFile, prof.UsageLogMode}}
	for i, l := range logs {
		raw, reauth, err := s.readLog(ctx, l.file, l.mode)
		if err != nil {
			return res, err
		}
		if i == 0 {
			if res.TopUps, err = profile.ParseLogRecords(raw); err != nil {
				return res, fmt.Errorf("top-up log: %w", err)
			}
		} else if res.Usage, err = parseUsage(raw); err != nil {
			return res, err
		}
		if reauth && i == 0 {
			if s, err = open(ctx, card, &prof, prof.ReadKeyNo, p.Key, p.Rand); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

func parseUsage(b []byte) ([]UsageRecord, error) {
	if len(b)%profile.RecordSize != 0 {
		return nil, fmt.Errorf("usage log of %d bytes: %w", len(b), profile.ErrRecord)
	}
	out := make([]UsageRecord, 0, len(b)/profile.RecordSize)
	for i := 0; i < len(b); i += profile.RecordSize {
		r := b[i : i+profile.RecordSize]
		out = append(out, UsageRecord{
			ReaderID:  binary.LittleEndian.Uint32(r),
			Timestamp: uint32(binary.LittleEndian.Uint64(r[4:])),
			Amount:    int32(binary.LittleEndian.Uint32(r[12:])),
		})
	}
	return out, nil
}

// RecoverResult is the card's top-up log and value, read with the top-up key.
type RecoverResult struct {
	Value  int64
	TopUps []profile.LogRecord
}

// Recover reads the top-up log (and value) to prove whether earlier
// in_doubt top-ups committed: a log record carrying a top-up's reference
// proves it; its absence, read in a new authenticated session (which
// discards any uncommitted transaction), proves it did not.
func Recover(ctx context.Context, t desfire.Transport, p BalanceParams) (RecoverResult, error) {
	var res RecoverResult
	prof := p.Profile
	card := desfire.NewCard(t)
	s, err := open(ctx, card, &prof, prof.TopUpKeyNo, p.Key, p.Rand)
	if err != nil {
		return res, err
	}
	raw, reauth, err := s.readLog(ctx, prof.TopUpLogFile, prof.TopUpLogMode)
	if err != nil {
		return res, err
	}
	if res.TopUps, err = profile.ParseLogRecords(raw); err != nil {
		return res, fmt.Errorf("top-up log: %w", err)
	}
	if reauth {
		if _, err = open(ctx, card, &prof, prof.TopUpKeyNo, p.Key, p.Rand); err != nil {
			return res, err
		}
	}
	data, err := card.Exec(ctx, getValueCmd(&prof))
	if err != nil {
		return res, fmt.Errorf("get value: %w", err)
	}
	res.Value, err = value(data)
	return res, err
}
