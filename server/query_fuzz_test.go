package server

import (
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// FuzzListQuery: any query string of the lists and the export either is
// refused with an error or yields a filter the ledger accepts; nothing
// panics.
func FuzzListQuery(f *testing.F) {
	for _, q := range []string{"", "status=in_doubt&older_than=30m&limit=5", "created_from=2026-01-01T00:00:00Z&created_to=2026-02-01T00:00:00Z",
		"reference=order%201&updated_from=2026-01-01T00:00:00Z", "cursor=%%%", "limit=0", "colour=red",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&format=json"} {
		f.Add(q)
	}
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/v1/topups", nil)
		r.URL.RawQuery = q
		for _, known := range []map[string]bool{listFilters, pageFilters} {
			fl, err := parseFilter(r, now, known)
			if err != nil {
				continue
			}
			if fl.Limit < 1 || fl.Limit > ledger.MaxPage {
				t.Fatalf("%q: limit %d passed", q, fl.Limit)
			}
			if _, err := fl.Check(); err != nil && fl.Reference == "" && fl.CreatedFrom.IsZero() && fl.UpdatedFrom.IsZero() {
				t.Fatalf("%q: parsed filter refused by the ledger: %v", q, err)
			}
		}
		if ef, _, err := parseExport(r); err == nil {
			ef.Tenant = ledger.DefaultTenant
			_ = ef.Check()
		}
		if _, err := url.ParseQuery(q); err != nil {
			if _, perr := parseFilter(r, now, listFilters); perr == nil {
				t.Fatalf("%q: malformed query accepted", q)
			}
		}
	})
}
