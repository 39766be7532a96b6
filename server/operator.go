package server

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// keyID returns the id of the API key that authenticated r.
func keyID(r *http.Request) string { return who(r).KeyID }

// resolutionView is an operator decision on a top-up.
type resolutionView struct {
	Actor   string    `json:"actor"`
	From    string    `json:"from"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// topUpPage is one page of GET /v1/topups.
type topUpPage struct {
	TopUps     []topUpView `json:"topups"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// listTopUps answers GET /v1/topups: filters status, card_uid,
// older_than (a Go duration: last change at least that long ago),
// created_from/created_to and updated_from/updated_to (RFC 3339; from
// inclusive, to exclusive), reference (exact), limit and the opaque
// cursor of the previous page.
func (s *Server) listTopUps(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r, s.o.Service.Now(), listFilters)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	f.Tenant = who(r).Tenant
	s.writePage(w, r, f)
}

// writePage answers one page of top-ups matching f.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, f ledger.Filter) {
	ts, err := s.o.Service.ListTopUps(r.Context(), f)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	page := topUpPage{TopUps: []topUpView{}}
	for _, t := range ts {
		page.TopUps = append(page.TopUps, viewTopUp(t))
	}
	if len(ts) == f.Limit && f.Limit > 0 {
		last := ts[len(ts)-1]
		at := last.UpdatedAt
		if f.NewestFirst {
			at = last.CreatedAt
		}
		page.NextCursor = encodeCursor(at, last.ID)
	}
	writeJSON(w, http.StatusOK, page)
}

// The query parameters each list accepts; any other is refused.
var (
	listFilters = map[string]bool{"status": true, "card_uid": true, "older_than": true, "limit": true, "cursor": true,
		"created_from": true, "created_to": true, "updated_from": true, "updated_to": true, "reference": true}
	pageFilters = map[string]bool{"limit": true, "cursor": true}
)

// parseQuery reads a query string of known, single-valued parameters.
func parseQuery(r *http.Request, known map[string]bool) (url.Values, error) {
	if len(r.URL.RawQuery) > 1024 {
		return nil, errors.New("query string longer than 1024 bytes")
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errors.New("malformed query string")
	}
	for k, v := range q {
		if !known[k] {
			return nil, errors.New("unknown query parameter " + strconv.Quote(sanitize(k)) + " (accepted: " + strings.Join(sortedKeys(known), ", ") + ")")
		}
		if len(v) != 1 {
			return nil, errors.New("query parameter " + k + " given more than once")
		}
	}
	return q, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// parseTime reads an RFC 3339 time parameter.
func parseTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New(name + ": an RFC 3339 time such as 2026-12-01T00:00:00Z")
	}
	return t, nil
}

func parseFilter(r *http.Request, now time.Time, known map[string]bool) (ledger.Filter, error) {
	var f ledger.Filter
	q, err := parseQuery(r, known)
	if err != nil {
		return f, err
	}
	if v := q.Get("status"); v != "" {
		st, err := ledger.ParseStatus(v)
		if err != nil {
			return f, errors.New("status: unknown status")
		}
		f.Status = st
	}
	if v := q.Get("card_uid"); v != "" {
		uid, err := ledger.NormalizeCardUID(v)
		if err != nil {
			return f, errors.New("card_uid: must be 4, 7 or 10 bytes of hex")
		}
		f.CardUID = uid
	}
	if v := q.Get("older_than"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return f, errors.New("older_than: a non-negative duration such as 30m or 24h")
		}
		f.UpdatedBefore = now.Add(-d)
	}
	times := []struct {
		name string
		dst  *time.Time
	}{{"created_from", &f.CreatedFrom}, {"created_to", &f.CreatedBefore}, {"updated_from", &f.UpdatedFrom}}
	for _, p := range times {
		if *p.dst, err = parseTime(q, p.name); err != nil {
			return f, err
		}
	}
	to, err := parseTime(q, "updated_to")
	if err != nil {
		return f, err
	}
	if !to.IsZero() && (f.UpdatedBefore.IsZero() || to.Before(f.UpdatedBefore)) {
		f.UpdatedBefore = to
	}
	if v := q.Get("reference"); v != "" {
		if len(v) > ledger.MaxReferenceLen {
			return f, errors.New("reference: at most " + strconv.Itoa(ledger.MaxReferenceLen) + " bytes")
		}
		f.Reference = v
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxPage {
			return f, errors.New("limit: 1.." + strconv.Itoa(ledger.MaxPage))
		}
		f.Limit = n
	} else {
		f.Limit = ledger.DefaultPage
	}
	if v := q.Get("cursor"); v != "" {
		at, id, err := decodeCursor(v)
		if err != nil {
			return f, errors.New("cursor: malformed (pass next_cursor of the previous page unchanged)")
		}
		f.AfterUpdated, f.AfterID = at, id
	}
	return f, nil
}

// A cursor is the (updated_at, id) of the last row of a page.
func encodeCursor(at time.Time, id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id.String()))
}

func decodeCursor(c string) (time.Time, uuid.UUID, error) {
	if len(c) > 128 {
		return time.Time{}, uuid.Nil, errors.New("cursor too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	ts, idText, ok := strings.Cut(string(raw), ".")
	if !ok {
		return time.Time{}, uuid.Nil, errors.New("no separator")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || us <= 0 {
		return time.Time{}, uuid.Nil, errors.New("bad time")
	}
	id, err := uuid.Parse(idText)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	return time.UnixMicro(us).UTC(), id, nil
}

type resolveBody struct {
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

// resolveTopUp answers POST /v1/topups/{id}/resolve: an operator settles
// a top-up whose card never came back, with a reason; who did it is the
// API key's id.
func (s *Server) resolveTopUp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var body resolveBody
	if err := decodeBody(w, r, &body); err != nil {
		s.apiError(w, r, err)
		return
	}
	var outcome ledger.Status
	switch body.Outcome {
	case "applied":
		outcome = ledger.StatusApplied
	case "failed":
		outcome = ledger.StatusFailed
	default:
		writeError(w, http.StatusBadRequest, codeInvalid, `outcome must be "applied" or "failed"`)
		return
	}
	t, err := s.o.Service.TenantResolve(r.Context(), who(r).Tenant, id, outcome, keyID(r), body.Reason)
	if errors.Is(err, transaction.ErrNotResolvable) || errors.Is(err, ledger.ErrConflict) {
		writeError(w, http.StatusConflict, codeNotResolvable, publicError(err))
		return
	}
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	s.log.Warn("top-up resolved by an operator", zap.String("topup", id.String()), zap.String("outcome", body.Outcome),
		zap.String("key_id", keyID(r)))
	v := viewTopUp(t)
	s.addResolutions(r.Context(), &v)
	writeJSON(w, http.StatusOK, v)
}

// addResolutions fills a top-up view's operator history.
func (s *Server) addResolutions(ctx context.Context, v *topUpView) {
	if v.Resolution == nil {
		return
	}
	id, _ := uuid.Parse(v.ID)
	rs, err := s.o.Service.Resolutions(ctx, id)
	if err != nil {
		s.log.Error("list resolutions", zap.Error(err))
		return
	}
	for _, e := range rs {
		v.Resolution.History = append(v.Resolution.History, resolutionView{Actor: e.Actor, From: e.From.String(),
			Outcome: e.Outcome.String(), Reason: e.Reason, At: e.At.UTC()})
	}
}

// registerGauges adds the gauges read from the ledger at scrape time.
func (s *Server) registerGauges() {
	if s.o.Service == nil {
		return
	}
	s.metrics.OldestUnresolved(func() (time.Duration, bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return s.o.Service.OldestUnresolved(ctx)
	})
}
