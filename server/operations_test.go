package server_test

import (
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testserver"
)

var cardHex = strings.ToUpper(hex.EncodeToString(cardUID))

// wantError asserts an error answer: status, code and a message that
// names what to fix and no server type.
func wantError(t *testing.T, what string, code int, body map[string]any, wantCode int, wantErr, inMsg string) {
	t.Helper()
	e, _ := body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if code != wantCode || errCode(body) != wantErr || !strings.Contains(msg, inMsg) {
		t.Errorf("%s: %d %s %q, want %d %s containing %q", what, code, errCode(body), msg, wantCode, wantErr, inMsg)
	}
	for _, leak := range []string{"Go struct", "int64", "main.", "server.", "ledger.", "transaction.", "json:"} {
		if strings.Contains(msg, leak) {
			t.Errorf("%s: message %q names a server type (%s)", what, msg, leak)
		}
	}
}

// TestListFiltersAndBadInput: the list's filters and pages, and every bad
// query a clear 400 that names the parameter.
func TestListFiltersAndBadInput(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	var ids []string
	for i := range 5 {
		body := fmt.Sprintf(`{"amount":%d,"currency":"EUR","reference":"batch-%d","card_uid":"%s"}`, 100+i, i%2, cardHex)
		code, _, tu := call(t, h, apiKey, "POST", "/v1/topups", fmt.Sprintf("list-%d", i), body, nil)
		if code != 201 {
			t.Fatalf("create: %d %v", code, tu)
		}
		ids = append(ids, tu["id"].(string))
	}
	list := func(key, path string) (int, map[string]any) {
		t.Helper()
		code, _, out := call(t, h, key, "GET", path, "", "", nil)
		return code, out
	}
	count := func(out map[string]any) int { ts, _ := out["topups"].([]any); return len(ts) }
	if code, out := list(apiKey, "/v1/topups?reference=batch-1"); code != 200 || count(out) != 2 {
		t.Fatalf("reference filter: %d, %d top-ups", code, count(out))
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	past := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	if code, out := list(apiKey, "/v1/topups?created_from="+past+"&created_to="+future); code != 200 || count(out) != 5 {
		t.Fatalf("created range: %d, %d top-ups", code, count(out))
	}
	if code, out := list(apiKey, "/v1/topups?updated_from="+future); code != 200 || count(out) != 0 {
		t.Fatalf("updated_from in the future: %d, %d top-ups", code, count(out))
	}
	if code, out := list(acmeKey, "/v1/topups?reference=batch-1"); code != 200 || count(out) != 0 {
		t.Fatalf("another tenant sees %d top-ups", count(out))
	}
	// The card's history, newest first, two per page.
	var seen []string
	path := "/v1/cards/" + cardHex + "/topups?limit=2"
	for range 5 {
		code, out := list(apiKey, path)
		if code != 200 {
			t.Fatalf("card page: %d %v", code, out)
		}
		for _, tu := range out["topups"].([]any) {
			seen = append(seen, tu.(map[string]any)["id"].(string))
		}
		next, _ := out["next_cursor"].(string)
		if next == "" {
			break
		}
		path = "/v1/cards/" + cardHex + "/topups?limit=2&cursor=" + url.QueryEscape(next)
	}
	if len(seen) != 5 || seen[0] != ids[4] || seen[4] != ids[0] {
		t.Fatalf("card history pages: %v, want newest first %v", seen, ids)
	}
	bad := []struct{ path, inMsg string }{
		{"/v1/topups?colour=red", `unknown query parameter "colour"`},
		{"/v1/topups?status=done", "status"},
		{"/v1/topups?status=pending&status=failed", "more than once"},
		{"/v1/topups?cursor=%%%", "malformed query string"},
		{"/v1/topups?cursor=bm90LWEtY3Vyc29y", "cursor: malformed"},
		{"/v1/topups?limit=0", "limit: 1..1000"},
		{"/v1/topups?limit=1001", "limit: 1..1000"},
		{"/v1/topups?limit=ten", "limit"},
		{"/v1/topups?older_than=yesterday", "older_than"},
		{"/v1/topups?created_from=2026-13-01", "created_from"},
		{"/v1/topups?created_from=" + future + "&created_to=" + past, "range is empty"},
		{"/v1/topups?card_uid=0102", "card_uid"},
		{"/v1/topups?reference=" + strings.Repeat("r", 129), "reference"},
		{"/v1/topups?" + strings.Repeat("a", 1100), "1024"},
		{"/v1/cards/" + cardHex + "/topups?status=pending", "unknown query parameter"},
		{"/v1/cards/" + cardHex + "/topups?cursor=AAAA", "cursor: malformed"},
		{"/v1/cards/" + cardHex + "/topups?limit=5000", "limit"},
		{"/v1/cards/zz11/topups", "uid"},
	}
	for _, b := range bad {
		code, out := list(apiKey, b.path)
		wantError(t, b.path, code, out, 400, "invalid_request", b.inMsg)
	}
}

// TestExportTopUps: a period's top-ups as CSV and JSON, with the
// Transaction MAC of an applied one; tenant-scoped; bad input refused.
func TestExportTopUps(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(0)
	_, _, applied := call(t, h, apiKey, "POST", "/v1/topups", "exp-1", `{"amount":150,"currency":"EUR","reference":"=SUM(A1)"}`, nil)
	if rep, err := h.bridge(applied["bridge_token"].(string), card, true); err != nil || !rep.Result.OK {
		t.Fatalf("top-up: %v %+v", err, rep)
	}
	call(t, h, apiKey, "POST", "/v1/topups", "exp-2", `{"amount":90,"currency":"EUR","reference":"order 2"}`, nil)
	call(t, h, acmeKey, "POST", "/v1/topups", "exp-3", `{"amount":70,"currency":"EUR"}`, nil)
	from := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	to := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	get := func(key, query string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", h.http.URL+"/v1/exports/topups?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get(apiKey, "from="+from+"&to="+to)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv export: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("csv: %d rows (%v):\n%s", len(rows), err, body)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	first := rows[1]
	if first[col["status"]] != "applied" || first[col["amount"]] != "150" || first[col["tmac_counter"]] == "" ||
		len(first[col["tmac_value"]]) != 16 || first[col["reference"]] != "'=SUM(A1)" || first[col["applied_at"]] == "" {
		t.Fatalf("applied row: %v", first)
	}
	if rows[2][col["status"]] != "pending" || rows[2][col["tmac_counter"]] != "" {
		t.Fatalf("pending row: %v", rows[2])
	}
	resp, body = get(apiKey, "from="+from+"&to="+to+"&format=json")
	var doc struct {
		TopUps []map[string]any `json:"topups"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &doc) != nil || len(doc.TopUps) != 2 || doc.TopUps[0]["tmac_counter"] == nil {
		t.Fatalf("json export: %d %s", resp.StatusCode, body)
	}
	if _, body := get(acmeKey, "from="+from+"&to="+to+"&format=json"); !strings.Contains(string(body), `"amount":70`) || strings.Contains(string(body), `"amount":150`) {
		t.Fatalf("acme's export: %s", body)
	}
	for _, b := range []struct{ query, inMsg string }{
		{"", "from and to are required"},
		{"from=" + from, "from and to are required"},
		{"from=yesterday&to=" + to, "from"},
		{"from=" + to + "&to=" + from, "from must be before to"},
		{"from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "at most 366 days"},
		{"from=" + from + "&to=" + to + "&format=xml", "format"},
		{"from=" + from + "&to=" + to + "&tenant=acme", "unknown query parameter"},
	} {
		resp, body := get(apiKey, b.query)
		var out map[string]any
		_ = json.Unmarshal(body, &out)
		wantError(t, "export?"+b.query, resp.StatusCode, out, 400, "invalid_request", b.inMsg)
	}
}

// TestCancelAPI: cancel a pending top-up (its token stops working), and
// every refusal a clear error with nothing changed.
func TestCancelAPI(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(0)
	_, _, tu := call(t, h, apiKey, "POST", "/v1/topups", "c-1", `{"amount":150,"currency":"EUR"}`, nil)
	id := tu["id"].(string)
	code, _, out := call(t, h, apiKey, "POST", "/v1/topups/"+id+"/cancel", "", `{"reason":"customer changed their mind"}`, nil)
	c, _ := out["cancellation"].(map[string]any)
	if code != 200 || out["status"] != "cancelled" || c["from"] != "pending" || c["reason"] != "customer changed their mind" || c["actor"] == "" {
		t.Fatalf("cancel: %d %v", code, out)
	}
	if _, err := h.bridge(tu["bridge_token"].(string), card, true); err == nil {
		t.Fatal("the bridge token of a cancelled top-up was accepted")
	}
	if code, _, out := call(t, h, apiKey, "GET", "/v1/topups/"+id, "", "", nil); code != 200 || out["status"] != "cancelled" || out["cancellation"] == nil {
		t.Fatalf("read back: %d %v", code, out)
	}
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+id+"/cancel", "", "", nil)
	wantError(t, "cancel twice", code, out, 409, "not_cancellable", "cancelled")
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+id+"/bridge-tokens", "", "", nil)
	wantError(t, "token for a cancelled top-up", code, out, 409, "not_payable", "cancelled")

	// Applied: it reached the card.
	card.Tap()
	_, _, ap := call(t, h, apiKey, "POST", "/v1/topups", "c-2", `{"amount":50,"currency":"EUR"}`, nil)
	if rep, err := h.bridge(ap["bridge_token"].(string), card, true); err != nil || !rep.Result.OK {
		t.Fatalf("top-up: %v", err)
	}
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+ap["id"].(string)+"/cancel", "", "", nil)
	wantError(t, "cancel applied", code, out, 409, "not_cancellable", "applied")

	// Without a body, and refusals.
	_, _, p := call(t, h, apiKey, "POST", "/v1/topups", "c-3", `{"amount":20,"currency":"EUR"}`, nil)
	pid := p["id"].(string)
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+pid+"/cancel", "", `{"reason":"x","extra":1}`, nil)
	wantError(t, "unknown field", code, out, 400, "invalid_request", `unknown field "extra"`)
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+pid+"/cancel", "", `{"reason":7}`, nil)
	wantError(t, "reason a number", code, out, 400, "invalid_request", `field "reason" must be a string`)
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/"+pid+"/cancel", "", `{"reason":"`+strings.Repeat("r", 501)+`"}`, nil)
	wantError(t, "long reason", code, out, 400, "invalid_request", "reason")
	code, _, out = call(t, h, acmeKey, "POST", "/v1/topups/"+pid+"/cancel", "", "", nil)
	wantError(t, "another tenant's", code, out, 404, "not_found", "not found")
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/not-a-uuid/cancel", "", "", nil)
	wantError(t, "malformed id", code, out, 400, "invalid_request", "UUID")
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups/00000000-0000-4000-8000-000000000000/cancel", "", "", nil)
	wantError(t, "unknown id", code, out, 404, "not_found", "not found")
	if code, _, out := call(t, h, apiKey, "GET", "/v1/topups/"+pid, "", "", nil); code != 200 || out["status"] != "pending" {
		t.Fatalf("refused cancels changed the top-up: %v", out)
	}
	if code, _, out := call(t, h, apiKey, "POST", "/v1/topups/"+pid+"/cancel", "", "", nil); code != 200 || out["status"] != "cancelled" {
		t.Fatalf("cancel without a body: %d %v", code, out)
	}
}

// TestHotListAPI: block and unblock; a blocked card refused at create
// and at session time; the balance lookup still works; bad input refused.
func TestHotListAPI(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(40)
	block := "/v1/cards/" + cardHex + "/block"
	for _, b := range []struct{ path, body, inMsg string }{
		{"/v1/cards/XYZ/block", `{"reason":"lost"}`, "uid"},
		{"/v1/cards/0102030405/block", `{"reason":"lost"}`, "uid"},
		{block, `{}`, "reason"},
		{block, `{"reason":"   "}`, "reason"},
		{block, `{"reason":null}`, `"reason" is null`},
		{block, `{"reason":"lost","card":"x"}`, `unknown field "card"`},
		{block, `{"reason":"a\u0007b"}`, "reason"},
	} {
		code, _, out := call(t, h, apiKey, "PUT", b.path, "", b.body, nil)
		wantError(t, "PUT "+b.path+" "+b.body, code, out, 400, "invalid_request", b.inMsg)
	}
	code, _, out := call(t, h, apiKey, "DELETE", block, "", "", nil)
	wantError(t, "unblock an unblocked card", code, out, 404, "not_blocked", "not blocked")
	if code, _, out := call(t, h, apiKey, "GET", block, "", "", nil); code != 200 || out["blocked"] != false {
		t.Fatalf("refused blocks stored one: %d %v", code, out)
	}
	// A top-up created before the block, for any card.
	_, _, early := call(t, h, apiKey, "POST", "/v1/topups", "h-1", `{"amount":150,"currency":"EUR"}`, nil)
	code, _, out = call(t, h, apiKey, "PUT", strings.ToLower(block), "", `{"reason":"reported stolen"}`, nil)
	if code != 200 || out["blocked"] != true || out["card_uid"] != cardHex || out["reason"] != "reported stolen" {
		t.Fatalf("block: %d %v", code, out)
	}
	code, _, out = call(t, h, apiKey, "POST", "/v1/topups", "h-2", `{"amount":150,"currency":"EUR","card_uid":"`+cardHex+`"}`, nil)
	wantError(t, "create for a blocked card", code, out, 409, "card_blocked", "blocked")
	rep, err := h.bridge(early["bridge_token"].(string), card, true)
	if err == nil || rep == nil || rep.Result.OK || rep.Result.Error == nil || rep.Result.Error.Code != "card_blocked" {
		t.Fatalf("session with a blocked card: %v %+v", err, rep)
	}
	if code, _, out := call(t, h, apiKey, "GET", "/v1/topups/"+early["id"].(string), "", "", nil); code != 200 || out["status"] != "failed" || out["card_uid"] != nil {
		t.Fatalf("top-up after the blocked card: %v", out)
	}
	card.Tap()
	_, _, bs := call(t, h, apiKey, "POST", "/v1/sessions", "", `{"kind":"balance"}`, nil)
	if rep, err := h.bridge(bs["bridge_token"].(string), card, true); err != nil || !rep.Result.OK || *rep.Result.Balance != 40 {
		t.Fatalf("balance of a blocked card: %v %+v", err, rep)
	}
	// Another tenant's hot list is its own.
	if code, _, out := call(t, h, acmeKey, "GET", block, "", "", nil); code != 200 || out["blocked"] != false {
		t.Fatalf("acme sees the default tenant's block: %v", out)
	}
	if code, _, out := call(t, h, apiKey, "DELETE", block, "", "", nil); code != 200 || out["blocked"] != false {
		t.Fatalf("unblock: %d %v", code, out)
	}
	card.Tap()
	_, _, tk := call(t, h, apiKey, "POST", "/v1/topups/"+early["id"].(string)+"/bridge-tokens", "", "", nil)
	if rep, err := h.bridge(tk["bridge_token"].(string), card, true); err != nil || !rep.Result.OK || *rep.Result.Balance != 190 {
		t.Fatalf("after unblock: %v %+v", err, rep)
	}
}

// TestContractRefusals: request shapes the document refuses are refused
// with a clear message (card_uid null, wrong JSON types), and a known
// path under an unknown method is 405 with Allow.
func TestContractRefusals(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	for _, b := range []struct{ body, inMsg string }{
		{`{"amount":100,"currency":"EUR","card_uid":null}`, `"card_uid" is null`},
		{`{"amount":"100","currency":"EUR"}`, `field "amount" must be an integer, got a JSON string`},
		{`{"amount":1.5,"currency":"EUR"}`, `field "amount" must be an integer`},
		{`{"amount":100,"currency":"EUR","reference":5}`, `field "reference" must be a string`},
		{`[1,2]`, "JSON object"},
		{`{"amount":100,`, "malformed JSON"},
		{`{"amount":2147483648,"currency":"EUR"}`, "amount"},
	} {
		code, _, out := call(t, h, apiKey, "POST", "/v1/topups", "k-"+b.body, b.body, nil)
		wantError(t, b.body, code, out, 400, "invalid_request", b.inMsg)
	}
	for _, m := range []struct{ method, path, allow string }{
		{"PUT", "/v1/topups", "GET, HEAD, POST"},
		{"DELETE", "/v1/topups/00000000-0000-4000-8000-000000000000", "GET, HEAD"},
		{"GET", "/v1/topups/00000000-0000-4000-8000-000000000000/cancel", "POST"},
		{"POST", "/v1/cards/" + cardHex + "/block", "GET, HEAD, PUT, DELETE"},
	} {
		code, hdr, out := call(t, h, apiKey, m.method, m.path, "", "", nil)
		if code != 405 || hdr.Get("Allow") != m.allow || errCode(out) != "method_not_allowed" {
			t.Errorf("%s %s: %d Allow=%q %v, want 405 Allow=%q", m.method, m.path, code, hdr.Get("Allow"), out, m.allow)
		}
	}
	if code, _, out := call(t, h, apiKey, "GET", "/v1/nothing-here", "", "", nil); code != 404 || errCode(out) != "not_found" {
		t.Errorf("unknown path: %d %v", code, out)
	}
}

// TestOneLogLinePerRequest: every API request, whatever its fate, gives
// exactly one log line carrying its request id, and no line carries a key
// or a token. (Health probes log at debug level: a probe every few
// seconds would drown the log.)
func TestOneLogLinePerRequest(t *testing.T) {
	h, logs := edgeHarness(t, nil, nil)
	card := h.card(0)
	_, _, tu := call(t, h, apiKey, "POST", "/v1/topups", "log-1", `{"amount":10,"currency":"EUR"}`, nil)
	token := tu["bridge_token"].(string)
	if _, err := h.bridge(token, card, true); err != nil {
		t.Fatal(err)
	}
	reqs := []struct{ key, method, path, body string }{
		{apiKey, "GET", "/v1/topups/" + tu["id"].(string), ""},
		{"", "GET", "/v1/topups", ""},
		{"wrong-key", "GET", "/v1/topups", ""},
		{apiKey, "GET", "/v1/no-such-route", ""},
		{apiKey, "PUT", "/v1/topups", ""},
		{"", "GET", "/v1/bridge?token=" + token, ""},
		{apiKey, "POST", "/v1/topups", `{"amount":"x"}`},
	}
	var ids []string
	for i, r := range reqs {
		id := fmt.Sprintf("log-req-%d", i)
		call(t, h, r.key, r.method, r.path, "", r.body, map[string]string{"X-Request-Id": id})
		ids = append(ids, id)
	}
	// The bridge's own request ran before; every line so far is counted.
	lines := map[string]int{}
	for _, e := range logs.All() {
		fields := e.ContextMap()
		if id, ok := fields["request_id"].(string); ok {
			lines[id]++
		}
		for _, secret := range []string{apiKey, token, "wrong-key"} {
			if strings.Contains(e.Message, secret) || strings.Contains(fmt.Sprint(fields), secret) {
				t.Errorf("log line %q %v carries a secret", e.Message, fields)
			}
		}
	}
	for i, id := range ids {
		if lines[id] != 1 {
			t.Errorf("%s %s: %d log lines, want 1", reqs[i].method, reqs[i].path, lines[id])
		}
	}
}

// TestHTTPMetricsAndBuildInfo: requests are counted by route pattern,
// method and code (no ids in labels), and relay_build_info is exported.
func TestHTTPMetricsAndBuildInfo(t *testing.T) {
	h := testserver.New(t, backends(t)[0], testserver.Profile(t, "an12113-ev2"), testserver.Options{})
	id, _ := h.TopUp("m-1", 10, "")
	h.API("GET", "/v1/topups/"+id, "", nil)
	h.API("GET", "/v1/topups/not-a-uuid", "", nil)
	resp, err := http.Get(h.Admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, want := range []string{
		`relay_http_requests_total{code="201",method="POST",route="/v1/topups"} 1`,
		`relay_http_requests_total{code="200",method="GET",route="/v1/topups/{id}"} 1`,
		`relay_http_requests_total{code="400",method="GET",route="/v1/topups/{id}"} 1`,
		`relay_http_request_duration_seconds_count{method="POST",route="/v1/topups"} 1`,
		`relay_build_info{goversion="go`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, id) || strings.Contains(text, "not-a-uuid") {
		t.Error("an id in a metric label")
	}
}
