package server

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
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
// older_than (a Go duration: last change at least that long ago), limit
// and the opaque cursor of the previous page.
func (s *Server) listTopUps(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r, s.o.Service)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	f.Tenant = who(r).Tenant
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
		page.NextCursor = encodeCursor(last.UpdatedAt, last.ID)
	}
	writeJSON(w, http.StatusOK, page)
}

var knownFilters = map[string]bool{"status": true, "card_uid": true, "older_than": true, "limit": true, "cursor": true}

func parseFilter(r *http.Request, svc *transaction.Service) (ledger.Filter, error) {
	var f ledger.Filter
	if len(r.URL.RawQuery) > 1024 {
		return f, errors.New("query string longer than 1024 bytes")
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return f, errors.New("malformed query string")
	}
	for k, v := range q {
		if !knownFilters[k] {
			return f, errors.New("unknown query parameter " + strconv.Quote(sanitize(k)))
		}
		if len(v) != 1 {
			return f, errors.New("query parameter " + k + " given more than once")
		}
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
		f.UpdatedBefore = svc.Now().Add(-d)
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
			return f, errors.New("cursor: malformed")
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
		writeError(w, http.StatusConflict, codeNotResolvable, sanitize(err.Error()))
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
