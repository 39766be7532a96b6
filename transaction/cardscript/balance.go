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
	// TopUpLog is the top-up log with what it can prove.
	TopUpLog TopUpLog
}

// Balance reads the value and both logs with the read key: the value and
// the logs' authenticated settings together, then the records of each log
// that holds some.
func Balance(ctx context.Context, t desfire.Transport, p BalanceParams) (BalanceResult, error) {
	prof := p.Profile
	s, err := Open(ctx, t, &prof, prof.ReadKeyNo, p.Key, p.Rand)
	if err != nil {
		return BalanceResult{}, err
	}
	return s.ReadBalance(ctx)
}

// ReadBalance reads the value and both logs in an open session.
func (s *Session) ReadBalance(ctx context.Context) (BalanceResult, error) {
	var res BalanceResult
	prof := s.prof
	files := []logFile{{prof.TopUpLogFile, prof.TopUpLogMode}, {prof.UsageLogFile, prof.UsageLogMode}}
	vals, logs, err := s.readRecordFiles(ctx, files, getValueCmd(prof))
	if err != nil {
		return res, err
	}
	if res.Value, err = value(vals[0].Data); err != nil {
		return res, err
	}
	if res.TopUpLog, err = s.topUpLog(logs[0]); err != nil {
		return res, err
	}
	res.TopUps = res.TopUpLog.Records
	if res.Usage, err = parseUsage(logs[1].data); err != nil {
		return res, err
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

// Recover reads the top-up log (with authenticated evidence of its
// length) and the value with the top-up key.
func Recover(ctx context.Context, t desfire.Transport, p BalanceParams) (RecoverResult, error) {
	var res RecoverResult
	prof := p.Profile
	s, err := Open(ctx, t, &prof, prof.TopUpKeyNo, p.Key, p.Rand)
	if err != nil {
		return res, err
	}
	log, err := s.ReadTopUpLog(ctx)
	if err != nil {
		return res, err
	}
	res.TopUps = log.Records
	data, err := s.card.Exec(ctx, getValueCmd(&prof))
	if err != nil {
		return res, fmt.Errorf("get value: %w", err)
	}
	res.Value, err = value(data)
	return res, err
}
