package cardscript

import (
	"bytes"
	"context"
	"fmt"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Evidence is what an authenticated read of the card's top-up log proves
// about one top-up.
type Evidence uint8

// What the log proves.
const (
	// Unproven: the log cannot say (it is full and every record in it is
	// newer than the top-up, so its record may have been pushed out).
	Unproven Evidence = iota
	// Present: a record carrying the top-up's reference is on the card.
	Present
	// Absent: no record carries it, and the log is complete back to
	// before the top-up could have been written.
	Absent
)

func (e Evidence) String() string {
	switch e {
	case Present:
		return "present"
	case Absent:
		return "absent"
	}
	return "unproven"
}

// ClockSkew bounds how far the clocks of the servers writing log
// timestamps may disagree. A full log proves a record absent only when it
// still holds a record older than the top-up by more than this.
const ClockSkew = 5 * 60 // seconds

// TopUpLog is the card's top-up log as an authenticated session read it:
// the number of records from GetFileSettings under the session MAC, and
// the records themselves under the session MAC (or encrypted). A bare
// status word never produces one.
type TopUpLog struct {
	Records []profile.LogRecord
	// Full: the cyclic file holds as many records as it can, so older
	// ones may have been overwritten.
	Full bool
}

// Find says what the log proves about the record with reference ref,
// written no earlier than sealedAt (Unix seconds, the server's clock when
// the record was prepared, or any earlier time).
func (l TopUpLog) Find(ref []byte, sealedAt int64) Evidence {
	for _, r := range l.Records {
		if bytes.Equal(r.Ref[:], ref) {
			return Present
		}
	}
	if !l.Full {
		return Absent
	}
	// Records leave a cyclic file oldest first. A record older than the
	// top-up is still there, so the top-up's record, written after it,
	// would be too.
	for _, r := range l.Records {
		if int64(r.Timestamp)+ClockSkew < sealedAt {
			return Absent
		}
	}
	return Unproven
}

// recordFile is one record file read with its authenticated settings.
type recordFile struct {
	data []byte
	full bool
}

// settingsCmd reads a file's settings under the session MAC: its answer
// is authenticated, unlike a status word.
func settingsCmd(file byte) *desfire.Command {
	return desfire.GetFileSettingsCmd(file, desfire.CommMAC)
}

// checkRecordFile checks MACed file settings against the profile and
// returns the number of records and whether the file is full.
func checkRecordFile(file byte, fs *desfire.FileSettings) (n uint32, full bool, err error) {
	switch {
	case fs.Type != desfire.FileCyclicRecord && fs.Type != desfire.FileLinearRecord:
		return 0, false, fmt.Errorf("file %d is a %s file: %w", file, fs.Type, ErrLayout)
	case fs.RecordSize != profile.RecordSize:
		return 0, false, fmt.Errorf("file %d holds %d-byte records: %w", file, fs.RecordSize, ErrLayout)
	case fs.CurrentRecords > fs.MaxRecords:
		return 0, false, fmt.Errorf("file %d holds %d of %d records: %w", file, fs.CurrentRecords, fs.MaxRecords, ErrLayout)
	}
	limit := fs.MaxRecords
	if fs.Type == desfire.FileCyclicRecord && limit > 0 {
		limit-- // one record slot of a cyclic file is always free
	}
	return fs.CurrentRecords, fs.CurrentRecords >= limit, nil
}

// readRecordFiles reads record files in as few exchanges as the channel
// allows: their settings first (authenticated counts), then the records of
// every file that has some. An empty file is never read, so an honest card
// never answers with a boundary error, and a boundary error from a
// dishonest bridge is just an error. extra commands ride with the
// settings; their results come back first.
func (s *Session) readRecordFiles(ctx context.Context, files []logFile, extra ...*desfire.Command) ([]*desfire.Result, []recordFile, error) {
	cmds := append([]*desfire.Command(nil), extra...)
	for _, f := range files {
		cmds = append(cmds, settingsCmd(f.no))
	}
	res, err := s.execAll(ctx, cmds...)
	if err != nil {
		return nil, nil, fmt.Errorf("read log settings: %w", err)
	}
	out := make([]recordFile, len(files))
	for i, f := range files {
		fs, err := desfire.ParseFileSettings(res[len(extra)+i].Data)
		if err != nil {
			return nil, nil, fmt.Errorf("settings of file %d: %w", f.no, err)
		}
		n, full, err := checkRecordFile(f.no, fs)
		if err != nil {
			return nil, nil, err
		}
		out[i].full = full
		if n == 0 {
			continue
		}
		// Long answers come in additional frames, so each read is its
		// own command rather than a pipeline step.
		data, err := s.card.Exec(ctx, readRecordsCmd(f.no, f.mode))
		if err != nil {
			return nil, nil, fmt.Errorf("read log file %d: %w", f.no, err)
		}
		if uint32(len(data)) != n*profile.RecordSize {
			return nil, nil, fmt.Errorf("log file %d: %d bytes for %d records: %w", f.no, len(data), n, desfire.ErrIntegrity)
		}
		out[i].data = data
	}
	return res[:len(extra)], out, nil
}

type logFile struct {
	no   byte
	mode desfire.CommMode
}

// ReadTopUpLog reads the top-up log with authenticated evidence of its
// length. Any failure (a forged status word, a missing or short answer, a
// MAC that does not verify) is an error and proves nothing.
func (s *Session) ReadTopUpLog(ctx context.Context) (TopUpLog, error) {
	_, files, err := s.readRecordFiles(ctx, []logFile{{s.prof.TopUpLogFile, s.prof.TopUpLogMode}})
	if err != nil {
		return TopUpLog{}, err
	}
	return s.topUpLog(files[0])
}

func (s *Session) topUpLog(f recordFile) (TopUpLog, error) {
	recs, err := profile.ParseLogRecords(f.data)
	if err != nil {
		return TopUpLog{}, fmt.Errorf("top-up log: %w", err)
	}
	if len(f.data) > 0 {
		s.logRead = f.data
	}
	return TopUpLog{Records: recs, Full: f.full}, nil
}
