package server

import (
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var exportFilters = map[string]bool{"from": true, "to": true, "format": true}

// exportColumns are the CSV export's columns, in order; the JSON export
// carries the same fields under the same names.
var exportColumns = []string{"id", "reference", "status", "amount", "currency", "card_uid",
	"tmac_counter", "tmac_value", "balance_before", "balance_after", "attempts", "resolution",
	"created_at", "updated_at", "applied_at"}

// exportRow is one top-up of an export: what reconciliation with the
// payment system needs.
type exportRow struct {
	ID            string     `json:"id"`
	Reference     string     `json:"reference"`
	Status        string     `json:"status"`
	Amount        int64      `json:"amount"`
	Currency      string     `json:"currency"`
	CardUID       string     `json:"card_uid"`
	TMACCounter   *uint32    `json:"tmac_counter"`
	TMACValue     string     `json:"tmac_value"`
	BalanceBefore *int64     `json:"balance_before"`
	BalanceAfter  *int64     `json:"balance_after"`
	Attempts      int        `json:"attempts"`
	Resolution    string     `json:"resolution"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	AppliedAt     *time.Time `json:"applied_at"`
}

func exportOf(t ledger.TopUp) exportRow {
	row := exportRow{ID: t.ID.String(), Reference: t.Reference, Status: t.Status.String(), Amount: t.Amount,
		Currency: t.Currency, CardUID: t.CardUID, BalanceBefore: t.BalanceBefore, BalanceAfter: t.BalanceAfter,
		Attempts: t.Attempts, Resolution: t.Resolution, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC()}
	if t.TMC != nil && len(t.TMV) > 0 {
		row.TMACCounter, row.TMACValue = t.TMC, strings.ToUpper(hex.EncodeToString(t.TMV))
	}
	if t.AppliedAt != nil {
		at := t.AppliedAt.UTC()
		row.AppliedAt = &at
	}
	return row
}

// record is the row as CSV fields. A reference that a spreadsheet would
// read as a formula gets a leading apostrophe.
func (e exportRow) record() []string {
	opt := func(p *int64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatInt(*p, 10)
	}
	tmc := ""
	if e.TMACCounter != nil {
		tmc = strconv.FormatUint(uint64(*e.TMACCounter), 10)
	}
	applied := ""
	if e.AppliedAt != nil {
		applied = e.AppliedAt.Format(time.RFC3339Nano)
	}
	ref := e.Reference
	if ref != "" && strings.ContainsRune("=+-@", rune(ref[0])) {
		ref = "'" + ref
	}
	return []string{e.ID, ref, e.Status, strconv.FormatInt(e.Amount, 10), e.Currency, e.CardUID,
		tmc, e.TMACValue, opt(e.BalanceBefore), opt(e.BalanceAfter), strconv.Itoa(e.Attempts), e.Resolution,
		e.CreatedAt.Format(time.RFC3339Nano), e.UpdatedAt.Format(time.RFC3339Nano), applied}
}

// exportTopUps answers GET /v1/exports/topups?from=&to=&format=csv|json:
// the tenant's top-ups created in [from, to), oldest first, streamed as
// they are read. A failure after the first byte aborts the response
// (the client sees a broken transfer, never a short file that looks
// complete).
func (s *Server) exportTopUps(w http.ResponseWriter, r *http.Request) {
	f, format, err := parseExport(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	f.Tenant = who(r).Tenant
	if err := f.Check(); err != nil {
		s.apiError(w, r, err)
		return
	}
	name := "topups-" + f.From.UTC().Format("20060102T150405Z") + "-" + f.To.UTC().Format("20060102T150405Z") + "." + format
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	var (
		write func(exportRow) error
		end   func() error
		n     int
	)
	switch format {
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		cw := csv.NewWriter(w)
		if err := cw.Write(exportColumns); err != nil {
			return
		}
		write = func(e exportRow) error { return cw.Write(e.record()) }
		end = func() error { cw.Flush(); return cw.Error() }
	default:
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		if _, err := w.Write([]byte(`{"from":` + strconv.Quote(f.From.UTC().Format(time.RFC3339Nano)) +
			`,"to":` + strconv.Quote(f.To.UTC().Format(time.RFC3339Nano)) + `,"topups":[`)); err != nil {
			return
		}
		write = func(e exportRow) error {
			if n > 0 {
				if _, err := w.Write([]byte{','}); err != nil {
					return err
				}
			}
			return enc.Encode(e)
		}
		end = func() error { _, err := w.Write([]byte("]}\n")); return err }
	}
	err = s.o.Service.TenantExport(r.Context(), f, func(t ledger.TopUp) error {
		if err := write(exportOf(t)); err != nil {
			return err
		}
		n++
		return nil
	})
	if err == nil {
		err = end()
	}
	if err != nil {
		s.log.Error("export of top-ups broke off", zap.Int("rows", n), zap.Error(err))
		panic(http.ErrAbortHandler) // the transfer must not look complete
	}
}

func parseExport(r *http.Request) (ledger.ExportFilter, string, error) {
	var f ledger.ExportFilter
	q, err := parseQuery(r, exportFilters)
	if err != nil {
		return f, "", err
	}
	if f.From, err = parseTime(q, "from"); err != nil {
		return f, "", err
	}
	if f.To, err = parseTime(q, "to"); err != nil {
		return f, "", err
	}
	if f.From.IsZero() || f.To.IsZero() {
		return f, "", errors.New("from and to are required (RFC 3339; from inclusive, to exclusive)")
	}
	format := q.Get("format")
	switch format {
	case "":
		format = "csv"
	case "csv", "json":
	default:
		return f, "", errors.New(`format: "csv" or "json"`)
	}
	return f, format, nil
}
