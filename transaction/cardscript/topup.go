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

// TopUpParams describe one credit.
type TopUpParams struct {
	Profile profile.Profile
	// UID is the claimed card UID the keys are diversified from.
	UID []byte
	// Key returns the card's keys; TMACKey is the card's
	// AppTransactionMACKey (nil when the profile has no TMAC file).
	Key     KeyFunc
	TMACKey []byte
	Amount  int32
	// Record is written to the top-up log in the same transaction.
	Record profile.LogRecord
	Rand   io.Reader
	// ReadLog reads the top-up log right after authentication and hands it
	// to OnLog, which resolves earlier in_doubt top-ups and says whether
	// to go on with this credit.
	ReadLog bool
	OnLog   func(records []profile.LogRecord) (proceed bool, err error)
	// BeforeCommit runs right before the exchange that carries the commit
	// leaves the server; an error stops the script with nothing committed.
	BeforeCommit func(ctx context.Context) error
}

// TopUpResult is what the script proved.
type TopUpResult struct {
	BalanceBefore *int64
	BalanceAfter  *int64
	TMC           *uint32
	TMV           []byte
	// CommitSent: an exchange carrying CommitTransaction left the server,
	// so the credit may be on the card even if the script failed.
	CommitSent bool
	// Applied: the commit is proven (Transaction MAC, or on cards without
	// one the MAC of the commit's answer under the session key).
	Applied bool
	// Skipped: OnLog said not to credit (this top-up was already applied).
	Skipped bool
}

// TopUp credits the card: authenticate with the top-up key, write the
// top-up log record, credit the value file, commit (with Transaction MAC
// where the profile has one) and read the new value, verifying every MAC,
// the TMV and the arithmetic.
func TopUp(ctx context.Context, t desfire.Transport, p TopUpParams) (TopUpResult, error) {
	var res TopUpResult
	prof := p.Profile
	if p.Amount <= 0 {
		return res, fmt.Errorf("amount %d: %w", p.Amount, desfire.ErrParameter)
	}
	card := desfire.NewCard(t)
	s, second, err := start(ctx, card, &prof, prof.TopUpKeyNo, p.Key, p.Rand)
	if err != nil {
		return res, err
	}
	var tm *desfire.TransactionMAC
	if prof.HasTMAC {
		if tm, err = desfire.NewTransactionMAC(p.TMACKey, p.UID); err != nil {
			return res, fmt.Errorf("transaction MAC: %w", err)
		}
	}
	pl := card.Pipeline()
	if err := s.addProof(pl, second); err != nil {
		return res, err
	}
	if p.ReadLog || prof.Auth == profile.AuthEV2 {
		// EV2 needs the card's TI before sealing anything; a log read is
		// not predictable. Either way authentication gets its own exchange.
		if err := pl.Run(ctx); err != nil {
			return res, err
		}
		pl = nil
	}
	if p.ReadLog {
		data, reauth, err := s.readLog(ctx, prof.TopUpLogFile, prof.TopUpLogMode)
		if err != nil {
			return res, err
		}
		records, err := profile.ParseLogRecords(data)
		if err != nil {
			return res, fmt.Errorf("top-up log: %w", err)
		}
		proceed, err := p.OnLog(records)
		if err != nil || !proceed {
			res.Skipped = err == nil
			return res, err
		}
		if reauth {
			// The empty log's boundary error ended the authentication.
			if s, err = open(ctx, card, &prof, prof.TopUpKeyNo, p.Key, p.Rand); err != nil {
				return res, err
			}
		} else if tm != nil {
			if err := tm.AddRecords(desfire.CmdReadRecords, readRecordsCmd(prof.TopUpLogFile, 0).Header, nil, data, profile.RecordSize); err != nil {
				return res, err
			}
		}
	}
	if pl == nil {
		pl = card.Pipeline()
	} else {
		// EV1 without a log read: seal the rest behind the predictable
		// card proof, in the same exchange.
		ch, err := s.ev1.EarlyChannel()
		if err != nil {
			return res, err
		}
		card.SetChannel(ch)
	}
	var uidRes, before *desfire.Result
	if prof.VerifyUID {
		if uidRes, err = pl.Add(desfire.GetCardUIDCmd()); err != nil {
			return res, err
		}
	}
	if prof.Auth == profile.AuthEV2 {
		// EV1 cannot pipeline behind an unpredictable answer, so it reads
		// the value after the credit only.
		if before, err = pl.Add(getValueCmd(&prof)); err != nil {
			return res, err
		}
	}
	rec := p.Record.Marshal()
	wr := desfire.WriteRecordCmd(prof.TopUpLogFile, 0, rec, prof.TopUpLogMode)
	cr := desfire.CreditCmd(prof.ValueFile, p.Amount, prof.ValueMode)
	cm := desfire.CommitTransactionCmd(tm != nil, true)
	for _, c := range []*desfire.Command{wr, cr, cm} {
		if _, err := pl.Add(c); err != nil {
			return res, fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	commit := pl.Results()[len(pl.Results())-1]
	after, err := pl.Add(getValueCmd(&prof))
	if err != nil {
		return res, err
	}
	// The commit may reach the card from the moment its command leaves:
	// with a batching bridge that is when the batch leaves, otherwise
	// right before CommitTransaction itself (the commands before it are
	// harmless if the session dies: uncommitted changes are discarded).
	pl.BeforeSend(commit, func(ctx context.Context) error {
		if p.BeforeCommit != nil {
			if err := p.BeforeCommit(ctx); err != nil {
				return fmt.Errorf("before commit: %w", err)
			}
		}
		res.CommitSent = true
		return nil
	})
	runErr := pl.Run(ctx)
	if commit.Err == nil && commit.Done {
		if tm != nil {
			if uidRes != nil && uidRes.Err != nil || before == nil || before.Err != nil {
				return res, fmt.Errorf("transaction MAC inputs incomplete: %w", desfire.ErrTransactionMAC)
			}
			if err := tm.Add(desfire.CmdGetValue, before.Command.Header, nil, before.Data); err != nil {
				return res, err
			}
			if err := tm.Add(wr.Code, wr.Header, wr.Data, nil); err != nil {
				return res, err
			}
			if err := tm.Add(cr.Code, cr.Header, cr.Data, nil); err != nil {
				return res, err
			}
			tmc, tmv, err := desfire.ParseCommitTransactionTMAC(commit.Data)
			if err != nil {
				return res, err
			}
			if err := tm.Verify(tmc, tmv); err != nil {
				return res, err
			}
			res.TMC, res.TMV = &tmc, tmv
		}
		res.Applied = true
	}
	if uidRes != nil && uidRes.Err == nil && uidRes.Done && !bytes.Equal(uidRes.Data, p.UID) {
		return res, ErrUIDMismatch
	}
	if before != nil && before.Done && before.Err == nil {
		if v, err := value(before.Data); err == nil {
			res.BalanceBefore = &v
		}
	}
	if after.Done && after.Err == nil {
		v, err := value(after.Data)
		if err != nil {
			return res, err
		}
		res.BalanceAfter = &v
		if res.BalanceBefore == nil {
			b := v - int64(p.Amount)
			res.BalanceBefore = &b
		} else if *res.BalanceBefore+int64(p.Amount) != v && res.Applied {
			return res, fmt.Errorf("%d + %d != %d: %w", *res.BalanceBefore, p.Amount, v, ErrBalanceMismatch)
		}
	}
	if runErr != nil {
		return res, runErr
	}
	if !res.Applied {
		return res, errors.New("commit was not answered")
	}
	return res, nil
}
