package cardscript

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// CreditParams describe one credit.
type CreditParams struct {
	// UID is the UID the keys were diversified from; GetCardUID must
	// return it where the profile checks it.
	UID []byte
	// TMACKey returns the card's AppTransactionMACKey of the version the
	// card's Transaction MAC file names (unused when the profile has no
	// Transaction MAC file).
	TMACKey TMACKeyFunc
	Amount  int32
	// Debit takes Amount off the value file instead of adding it (a
	// reversal of an applied top-up); the same evidence proves it.
	Debit bool
	// Record is written to the top-up log in the same transaction.
	Record profile.LogRecord
	// ReaderID is the 16-byte Transaction MAC Reader ID of the reader the
	// card sits on; CommitReaderID sends it (authenticated, MACed) ahead
	// of the credit, for cards whose Transaction MAC file requires it.
	ReaderID       []byte
	CommitReaderID bool
}

// ErrReaderIDRequired: the card's Transaction MAC file (authenticated
// settings) requires CommitReaderID, which this credit did not send, so
// the card refused the commit. Seal the credit again with CommitReaderID.
var ErrReaderIDRequired = errors.New("cardscript: the card's Transaction MAC file requires CommitReaderID")

// ErrReaderIDDisabled: this credit sent CommitReaderID, but the card's
// Transaction MAC file (authenticated settings) disables the command, so
// the card refused it and nothing was committed after it. Seal the credit
// again without it.
var ErrReaderIDDisabled = errors.New("cardscript: the card's Transaction MAC file disables CommitReaderID")

// TMACKeyFunc returns a card's AppTransactionMACKey of a key version.
type TMACKeyFunc func(ctx context.Context, version byte) ([]byte, error)

// Proof is what the card proved about a credit.
type Proof struct {
	BalanceBefore *int64
	BalanceAfter  *int64
	TMC           *uint32
	TMV           []byte
	// CommitSent: an exchange carrying CommitTransaction left the server,
	// so the credit may be on the card even if the script failed.
	CommitSent bool
	// TMACKeyVersion: the AppTransactionMACKey version that verified
	// the Transaction MAC (meaningful when TMC is set).
	TMACKeyVersion byte
	// Applied: the commit is proven (Transaction MAC, or on cards without
	// one the MAC of the commit's answer under the session key).
	Applied bool
	// ReaderID is the reader ID the credit committed with CommitReaderID;
	// PrevReaderID the one the card held from its previous Transaction MAC
	// transaction (EncTMRI, deciphered). Both are covered by the verified
	// Transaction MAC; nil when no reader ID was committed.
	ReaderID, PrevReaderID []byte
}

// Credit is a sealed credit: GetValue (EV2), WriteRecord, Credit,
// CommitTransaction and GetValue, ready to leave.
//
// Close it when the session ends: it clears the Transaction MAC key and
// the session's keys.
type Credit struct {
	s *Session
	p CreditParams
	// logRead: the top-up log records this session read, which are part
	// of the Transaction MAC input.
	logRead []byte
	staged  *desfire.Pipeline // what cannot commit; nil when it rides with the commit
	pl      *desfire.Pipeline // the commit and what follows it

	tmfs, uid, rid, before, wr, cr, commit, after *desfire.Result
	wrCmd, crCmd                                  *desfire.Command
}

// SealCredit prepares the credit's commands. On a batching bridge they
// leave together in one exchange (with EV1's authentication proof ahead
// of them when it is still unsent); on a plain transport the commands
// that cannot commit anything leave first, with Stage, so that the
// commit itself is the last thing to leave.
func (s *Session) SealCredit(ctx context.Context, p CreditParams) (*Credit, error) {
	prof := s.prof
	if p.Amount <= 0 {
		return nil, fmt.Errorf("amount %d: %w", p.Amount, desfire.ErrParameter)
	}
	c := &Credit{s: s, p: p, logRead: s.logRead}
	pl, err := s.pipeline(ctx)
	if err != nil {
		return nil, err
	}
	if prof.HasTMAC {
		// The Transaction MAC file's settings, answered under the session
		// MAC, name the version of the AppTransactionMACKey: it rides
		// with the credit, so it costs no exchange.
		if c.tmfs, err = pl.Add(settingsCmd(prof.TMACFile)); err != nil {
			return nil, err
		}
	}
	if prof.VerifyUID {
		if c.uid, err = pl.Add(desfire.GetCardUIDCmd()); err != nil {
			return nil, err
		}
	}
	if prof.HasTMAC && p.CommitReaderID {
		// The reader ID opens the credit's part of the transaction; the
		// card answers EncTMRI under the session MAC.
		if len(p.ReaderID) != desfire.TMRISize {
			return nil, fmt.Errorf("reader ID of %d bytes: %w", len(p.ReaderID), desfire.ErrParameter)
		}
		if c.rid, err = pl.Add(desfire.CommitReaderIDCmd(p.ReaderID, desfire.CommMAC)); err != nil {
			return nil, err
		}
	}
	if prof.Auth == profile.AuthEV2 {
		// EV1 cannot pipeline behind an unpredictable answer, so it reads
		// the value after the credit only.
		if c.before, err = pl.Add(getValueCmd(prof)); err != nil {
			return nil, err
		}
	}
	c.wrCmd = desfire.WriteRecordCmd(prof.TopUpLogFile, 0, p.Record.Marshal(), prof.TopUpLogMode)
	c.crCmd = desfire.CreditCmd(prof.ValueFile, p.Amount, prof.ValueMode)
	if p.Debit {
		c.crCmd = desfire.DebitCmd(prof.ValueFile, p.Amount, prof.ValueMode)
	}
	if c.wr, err = pl.Add(c.wrCmd); err != nil {
		return nil, fmt.Errorf("%s: %w", c.wrCmd.Name, err)
	}
	if c.cr, err = pl.Add(c.crCmd); err != nil {
		return nil, fmt.Errorf("%s: %w", c.crCmd.Name, err)
	}
	if !s.batch {
		// Everything so far is harmless if the session dies (uncommitted
		// changes are discarded); the commit goes in a pipeline of its own.
		c.staged, pl = pl, s.card.Pipeline()
	}
	cm := desfire.CommitTransactionCmd(prof.HasTMAC, true)
	if c.commit, err = pl.Add(cm); err != nil {
		return nil, fmt.Errorf("%s: %w", cm.Name, err)
	}
	if c.after, err = pl.Add(getValueCmd(prof)); err != nil {
		return nil, err
	}
	c.pl = pl
	return c, nil
}

// Stage sends, on a plain transport, the commands ahead of the commit;
// on a batching bridge it sends nothing. After Stage nothing has been
// committed.
func (c *Credit) Stage(ctx context.Context) error {
	if c.staged == nil {
		return nil
	}
	runErr := c.staged.Run(ctx)
	// Known before the commit leaves: nothing is committed.
	if err := c.readerIDFit(); err != nil {
		if runErr != nil {
			return fmt.Errorf("%w: %w", err, runErr)
		}
		return err
	}
	return runErr
}

// Commit sends the commit and what follows it, and returns what the card
// proved. From the moment it is called the credit may be on the card.
func (c *Credit) Commit(ctx context.Context) (Proof, error) {
	res := Proof{CommitSent: true}
	runErr := c.pl.Run(ctx)
	if c.commit.Err == nil && c.commit.Done {
		if err := c.verifyTMAC(ctx, &res); err != nil {
			return res, err
		}
		res.Applied = true
	}
	if c.uid != nil && c.uid.Err == nil && c.uid.Done && !bytes.Equal(c.uid.Data, c.p.UID) {
		return res, ErrUIDMismatch
	}
	if err := c.balances(&res); err != nil {
		return res, err
	}
	if runErr != nil {
		if err := c.readerIDFit(); err != nil && !res.Applied {
			return res, fmt.Errorf("%w: %w", err, runErr)
		}
		return res, runErr
	}
	if !res.Applied {
		return res, errors.New("commit was not answered")
	}
	return res, nil
}

// verifyTMAC checks the commit's Transaction MAC over the commands of the
// transaction (nothing to check on cards without one: the commit's answer
// MAC under the session key is the proof).
func (c *Credit) verifyTMAC(ctx context.Context, res *Proof) error {
	if !c.s.prof.HasTMAC {
		return nil
	}
	if c.uid != nil && c.uid.Err != nil || c.rid != nil && (c.rid.Err != nil || !c.rid.Done) || c.before == nil || c.before.Err != nil {
		return fmt.Errorf("transaction MAC inputs incomplete: %w", desfire.ErrTransactionMAC)
	}
	tm, ver, err := c.transactionMAC(ctx)
	if err != nil {
		return err
	}
	defer tm.Forget()
	type step struct {
		code               byte
		header, data, resp []byte
	}
	var steps []step
	if c.rid != nil {
		steps = append(steps, step{desfire.CmdCommitReaderID, nil, c.p.ReaderID, c.rid.Data})
	}
	steps = append(steps,
		step{desfire.CmdGetValue, c.before.Command.Header, nil, c.before.Data},
		step{c.wrCmd.Code, c.wrCmd.Header, c.wrCmd.Data, nil},
		step{c.crCmd.Code, c.crCmd.Header, c.crCmd.Data, nil},
	)
	for _, st := range steps {
		if err := tm.Add(st.code, st.header, st.data, st.resp); err != nil {
			return err
		}
	}
	tmc, tmv, err := desfire.ParseCommitTransactionTMAC(c.commit.Data)
	if err != nil {
		return err
	}
	if err := tm.Verify(tmc, tmv); err != nil {
		return err
	}
	if c.rid != nil {
		prev, err := tm.DecryptReaderID(tmc, c.rid.Data)
		if err != nil {
			return fmt.Errorf("previous reader ID: %w", err)
		}
		res.ReaderID, res.PrevReaderID = append([]byte(nil), c.p.ReaderID...), prev
	}
	res.TMC, res.TMV, res.TMACKeyVersion = &tmc, tmv, ver
	return nil
}

// readerIDFit compares what this credit did about CommitReaderID with
// the card's authenticated Transaction MAC file settings: ErrLayout when
// they require it under another key than the session's,
// ErrReaderIDRequired when they require it and it was not sent,
// ErrReaderIDDisabled when it was sent and they disable it, nil otherwise
// (also when the settings were not read).
func (c *Credit) readerIDFit() error {
	if c.tmfs == nil || !c.tmfs.Done || c.tmfs.Err != nil {
		return nil
	}
	fs, err := desfire.ParseFileSettings(c.tmfs.Data)
	if err != nil {
		return nil
	}
	key, required := fs.CommitReaderIDKey()
	switch {
	case required && key != c.s.keyNo:
		// Only a session under that key could commit a reader ID.
		return fmt.Errorf("the card's Transaction MAC file requires CommitReaderID under key %d, the session holds key %d: %w", key, c.s.keyNo, ErrLayout)
	case required && c.rid == nil:
		return ErrReaderIDRequired
	case key == desfire.AccessNever && c.rid != nil:
		return ErrReaderIDDisabled
	}
	return nil
}

// transactionMAC starts the Transaction MAC computation with the key
// version the card's authenticated TMAC file settings name, fed with the
// top-up log records this session read before the credit.
func (c *Credit) transactionMAC(ctx context.Context) (*desfire.TransactionMAC, byte, error) {
	if c.tmfs == nil || !c.tmfs.Done || c.tmfs.Err != nil {
		return nil, 0, fmt.Errorf("transaction MAC file settings not read: %w", desfire.ErrTransactionMAC)
	}
	fs, err := desfire.ParseFileSettings(c.tmfs.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("transaction MAC file settings: %w", err)
	}
	if fs.Type != desfire.FileTransactionMAC {
		return nil, 0, fmt.Errorf("file %d is a %s file, not the Transaction MAC file: %w", c.s.prof.TMACFile, fs.Type, ErrLayout)
	}
	if c.p.TMACKey == nil {
		return nil, 0, fmt.Errorf("no AppTransactionMACKey source: %w", desfire.ErrTransactionMAC)
	}
	key, err := c.p.TMACKey(ctx, fs.TMKeyVersion)
	if err != nil {
		return nil, 0, fmt.Errorf("AppTransactionMACKey version %d: %w", fs.TMKeyVersion, err)
	}
	tm, err := desfire.NewTransactionMAC(key, c.p.UID)
	clear(key)
	if err != nil {
		return nil, 0, fmt.Errorf("transaction MAC: %w", err)
	}
	if c.logRead != nil {
		// The log read in this session is part of the transaction.
		hdr := readRecordsCmd(c.s.prof.TopUpLogFile, 0).Header
		if err := tm.AddRecords(desfire.CmdReadRecords, hdr, nil, c.logRead, profile.RecordSize); err != nil {
			return nil, 0, err
		}
	}
	return tm, fs.TMKeyVersion, nil
}

// balances reads the values before and after, checking the arithmetic
// when the commit is proven.
func (c *Credit) balances(res *Proof) error {
	if c.before != nil && c.before.Done && c.before.Err == nil {
		if v, err := value(c.before.Data); err == nil {
			res.BalanceBefore = &v
		}
	}
	if !c.after.Done || c.after.Err != nil {
		return nil
	}
	v, err := value(c.after.Data)
	if err != nil {
		return err
	}
	res.BalanceAfter = &v
	delta := int64(c.p.Amount)
	if c.p.Debit {
		delta = -delta
	}
	if res.BalanceBefore == nil {
		b := v - delta
		res.BalanceBefore = &b
	} else if *res.BalanceBefore+delta != v && res.Applied {
		return fmt.Errorf("%d %+d != %d: %w", *res.BalanceBefore, delta, v, ErrBalanceMismatch)
	}
	return nil
}

// TopUpParams describe a whole top-up for TopUp.
type TopUpParams struct {
	Profile profile.Profile
	// UID is the claimed card UID the keys are diversified from.
	UID []byte
	// Key returns the card's keys; TMACKey its AppTransactionMACKey
	// by version (unused when the profile has no TMAC file).
	Key     KeyFunc
	TMACKey TMACKeyFunc
	Amount  int32
	// Debit takes Amount off instead (see CreditParams.Debit).
	Debit bool
	// Record is written to the top-up log in the same transaction.
	Record profile.LogRecord
	Rand   io.Reader
	// BeforeCommit runs right before the commit leaves; an error stops
	// the script with nothing committed.
	BeforeCommit func(ctx context.Context) error
}

// TopUp runs the phases of a credit in order — authenticate, seal, stage,
// commit — for callers with no ledger to settle (tools, tests,
// benchmarks). The runner calls the phases itself.
func TopUp(ctx context.Context, t desfire.Transport, p TopUpParams) (Proof, error) {
	prof := p.Profile
	s, err := Start(ctx, t, &prof, prof.TopUpKeyNo, p.Key, p.Rand)
	if err != nil {
		return Proof{}, err
	}
	c, err := s.SealCredit(ctx, CreditParams{UID: p.UID, TMACKey: p.TMACKey, Amount: p.Amount, Debit: p.Debit, Record: p.Record})
	if err != nil {
		return Proof{}, err
	}
	if err := c.Stage(ctx); err != nil {
		return Proof{}, err
	}
	if p.BeforeCommit != nil {
		if err := p.BeforeCommit(ctx); err != nil {
			return Proof{}, fmt.Errorf("before commit: %w", err)
		}
	}
	return c.Commit(ctx)
}

// Session is the card session the credit runs in (authenticated until the
// session ends).
func (c *Credit) Session() *Session { return c.s }

// Close closes the session (see Session.Close; the Transaction MAC key
// is cleared as soon as the proof is checked). Safe on nil and more than
// once.
func (c *Credit) Close() {
	if c == nil {
		return
	}
	c.s.Close()
}
