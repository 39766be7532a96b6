package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
	"github.com/desfire-relay/relay/transaction/sun"
)

// Keys of the two tenants of the provisioning + SUN harness.
const (
	tenantAKey = "tenant-a-operator-key-0123456789"
	tenantBKey = "tenant-b-operator-key-0123456789"
)

var zeroOffset = 0

// provSUNTemplates verify what provisioning writes: the keys named as the
// key file names them (ntag424.k2 meta read, ntag424.k1 file read), the
// versions the key provider holds.
func provSUNTemplates() []sun.Template {
	return []sun.Template{
		{Name: "prov", PICCParam: "p", MACParam: "m", Tenant: "tenant-a",
			MetaReadKey: &sun.KeyRef{Name: keys.NTAG424KeyName(2)}, FileReadKey: sun.KeyRef{Name: keys.NTAG424KeyName(1)}},
		{Name: "provenc", PICCParam: "p", FileParam: "e", MACParam: "m", MACInputFrom: "e",
			MetaReadKey: &sun.KeyRef{Name: keys.NTAG424KeyName(2)}, FileReadKey: sun.KeyRef{Name: keys.NTAG424KeyName(1)}},
		{Name: "provtt", PICCParam: "p", FileParam: "e", MACParam: "m", MACInputFrom: "e", Tamper: &sun.Tamper{FileOffset: &zeroOffset},
			MetaReadKey: &sun.KeyRef{Name: keys.NTAG424KeyName(2)}, FileReadKey: sun.KeyRef{Name: keys.NTAG424KeyName(1)}},
		{Name: "provplain", UIDParam: "u", CtrParam: "c", MACParam: "m", RequireKnown: true,
			FileReadKey: sun.KeyRef{Name: keys.NTAG424KeyName(1)}},
	}
}

// provSUNHarness serves provisioning sessions and the SUN endpoint over
// one ledger, with two tenants.
type provSUNHarness struct {
	t   *testing.T
	url string
	kp  keys.Provider
}

func newProvSUNHarness(t *testing.T, b testbackend.Backend) *provSUNHarness {
	t.Helper()
	p := profile.AN12113()
	l, lk := b.Open(t)
	kp, _ := testcard.Keys(t, p)
	m := server.NewMetrics()
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profiles: profile.Set{p.Name: p}, Profile: p.Name, LockTTL: 2 * time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	st := l.(ledger.SUNStore)
	v, err := sun.NewVerifier(sun.Config{Templates: provSUNTemplates(), Keys: kp, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	env := &provision.Env{Ledger: l.(ledger.ProvisionLedger), Keys: kp, Locker: lk, SUN: st}
	srv := server.New(server.Options{Service: svc, ExchangeTimeout: 2 * time.Second, SessionTimeout: 10 * time.Second, Metrics: m,
		APIKeys: []server.APIKey{
			{ID: "a", Tenant: "tenant-a", Digest: sha256.Sum256([]byte(tenantAKey))},
			{ID: "b", Tenant: "tenant-b", Digest: sha256.Sum256([]byte(tenantBKey))},
		},
		Limits:    testserver.NoLimits(),
		SUN:       server.SUNOptions{Verifier: v, Store: st, PerClient: 1000, ClientBurst: 1000},
		Provision: &server.ProvisionOptions{Env: env, Sessions: l.(ledger.ProvisionSessions), Profiles: profile.Set{p.Name: p}}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &provSUNHarness{t: t, url: hs.URL, kp: kp}
}

// api calls the operator API with an API key and decodes the answer.
func (h *provSUNHarness) api(key, method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.url+path, r)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	decodeJSON(resp, &out)
	return resp.StatusCode, out
}

// provision runs a provision_ntag424 session for tenant key over the real
// WebSocket with the Go bridge, and returns the session id.
func (h *provSUNHarness) provision(key string, tag *simtag.Tag, body map[string]any) string {
	h.t.Helper()
	body["kind"] = provision.KindNTAG424
	code, out := h.api(key, "POST", "/v1/sessions", body)
	if code != http.StatusCreated {
		h.t.Fatalf("create session: %d %v", code, out)
	}
	ph := &provHarness{harness: &harness{t: h.t, http: &httptest.Server{URL: h.url}}}
	rep, err := ph.run(out["bridge_token"].(string), tag, true)
	if err != nil || !rep.Result.OK {
		h.t.Fatalf("provision over the relay: %+v %v", rep, err)
	}
	return out["session_id"].(string)
}

// verify submits the query of a URL a phone opened to GET /v1/sun/{tpl}.
func (h *provSUNHarness) verify(tpl, tagURL string) (int, map[string]any) {
	h.t.Helper()
	u, err := url.Parse(tagURL)
	if err != nil {
		h.t.Fatal(err)
	}
	sh := &sunHarness{url: h.url}
	return sh.get(h.t, "/v1/sun/"+tpl+"?"+u.RawQuery, nil)
}

// TestProvisionedTagVerifies: a factory NTAG 424 DNA provisioned through
// the relay (real WebSocket, Go bridge) writes URLs that GET /v1/sun
// accepts with the keys provisioning wrote: authentic once, replayed when
// submitted again, invalid with one MAC digit changed; the next tap is
// authentic again. Templates with encrypted PICC data, with encrypted
// file data, and with plain mirrors of a registered tag.
func TestProvisionedTagVerifies(t *testing.T) {
	cases := []struct{ name, tpl, url string }{
		{"picc", "prov", "https://sun.example.com/v1/sun/prov?p={picc}&m={mac}"},
		{"enc", "provenc", "https://sun.example.com/v1/sun/provenc?p={picc}&e={enc}&m={mac}"},
		{"plain", "provplain", "https://sun.example.com/v1/sun/provplain?u={uid}&c={ctr}&m={mac}"},
	}
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			h := newProvSUNHarness(t, b)
			ctx := context.Background()
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					tag, err := simtag.New(simtag.Options{})
					if err != nil {
						t.Fatal(err)
					}
					body := map[string]any{"template": c.url, "lock": true}
					if c.tpl == "provplain" {
						body["sun_template"] = c.tpl
					}
					h.provision(tenantAKey, tag, body)
					first, err := tag.PhoneRead(ctx)
					if err != nil {
						t.Fatal(err)
					}
					code, res := h.verify(c.tpl, first)
					uid := strings.ToUpper(hex.EncodeToString(tag.UID()))
					if code != http.StatusOK || res["status"] != string(sun.Authentic) || res["uid"] != uid || res["counter"] != 1.0 {
						t.Fatalf("first read %s: %d %v", first, code, res)
					}
					if code, res = h.verify(c.tpl, first); code != http.StatusOK || res["status"] != string(sun.Replayed) {
						t.Fatalf("same URL again: %d %v", code, res)
					}
					second, err := tag.PhoneRead(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if code, res = h.verify(c.tpl, flipMACDigit(t, second)); code != http.StatusOK || res["status"] != string(sun.Invalid) {
						t.Fatalf("tampered MAC: %d %v", code, res)
					}
					if code, res = h.verify(c.tpl, second); code != http.StatusOK || res["status"] != string(sun.Authentic) || res["counter"] != 2.0 {
						t.Fatalf("second read: %d %v", code, res)
					}
					if c.tpl == "provenc" && res["file_data"] != strings.Repeat("30", 16) {
						t.Fatalf("file data %v", res["file_data"])
					}
				})
			}
		})
	}
}

// flipMACDigit changes the last hex digit of the m parameter.
func flipMACDigit(t *testing.T, u string) string {
	t.Helper()
	i := strings.LastIndex(u, "m=")
	if i < 0 || len(u) < i+2+16 {
		t.Fatalf("no MAC in %s", u)
	}
	last := u[len(u)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return u[:len(u)-1] + string(repl)
}

// TestProvisionedTagTamper: an NTAG 424 DNA TagTamper provisioned with
// tag_tamper through the relay mirrors its tamper status inside the
// encrypted file data: closed loop → authentic "CC"; wire cut → tampered
// "OO"; loop closed again → still tampered ("OC": the permanent status
// remembers). A flipped MAC digit stays invalid.
func TestProvisionedTagTamper(t *testing.T) {
	h := newProvSUNHarness(t, testbackend.Backends()[0])
	ctx := context.Background()
	tag, err := simtag.New(simtag.Options{TagTamper: true})
	if err != nil {
		t.Fatal(err)
	}
	h.provision(tenantAKey, tag, map[string]any{"template": "https://sun.example.com/v1/sun/provtt?p={picc}&e={enc}&m={mac}", "tag_tamper": true, "lock": true})
	steps := []struct {
		act    func()
		status sun.Status
		tamper string
	}{
		{func() {}, sun.Authentic, "CC"},
		{tag.OpenLoop, sun.Tampered, "OO"},
		{tag.CloseLoop, sun.Tampered, "OC"},
	}
	for i, s := range steps {
		s.act()
		u, err := tag.PhoneRead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if code, res := h.verify("provtt", flipMACDigit(t, u)); code != http.StatusOK || res["status"] != string(sun.Invalid) {
			t.Fatalf("step %d, flipped MAC: %d %v", i, code, res)
		}
		code, res := h.verify("provtt", u)
		if code != http.StatusOK || res["status"] != string(s.status) || res["tamper_status"] != s.tamper {
			t.Fatalf("step %d: %d %v, want %s %s", i, code, res, s.status, s.tamper)
		}
	}
	// A plain NTAG 424 DNA cannot take tag_tamper: the session ends with
	// card_error and the tag keeps its factory keys.
	plain, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, out := h.api(tenantAKey, "POST", "/v1/sessions", map[string]any{"kind": provision.KindNTAG424,
		"template": "https://sun.example.com/v1/sun/provtt?p={picc}&e={enc}&m={mac}", "tag_tamper": true})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, out)
	}
	ph := &provHarness{harness: &harness{t: t, http: &httptest.Server{URL: h.url}}}
	rep, _ := ph.run(out["bridge_token"].(string), plain, true)
	if rep == nil || rep.Result.OK || rep.Result.Error == nil || rep.Result.Error.Code != "card_error" {
		t.Fatalf("plain tag with tag_tamper: %+v", rep)
	}
	if _, v := plain.Key(0); v != 0 {
		t.Fatalf("plain tag key 0 at version %d", v)
	}
}

// TestProvisioningAndTagsPerTenant: provisioning sessions and SUN tags
// belong to a tenant. Another tenant's key gets 404 for the session, the
// tag (registered by provisioning, or first seen through a tenant's
// template) and does not see the session in its list.
func TestProvisioningAndTagsPerTenant(t *testing.T) {
	h := newProvSUNHarness(t, testbackend.Backends()[0])
	ctx := context.Background()
	registered, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sid := h.provision(tenantAKey, registered, map[string]any{"template": "https://sun.example.com/v1/sun/provplain?u={uid}&c={ctr}&m={mac}", "sun_template": "provplain"})
	seen, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.provision(tenantBKey, seen, map[string]any{"template": "https://sun.example.com/v1/sun/prov?p={picc}&m={mac}"})
	u, err := seen.PhoneRead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, res := h.verify("prov", u); code != http.StatusOK || res["status"] != string(sun.Authentic) {
		t.Fatalf("verify: %d %v", code, res)
	}
	uidOf := func(tag *simtag.Tag) string { return strings.ToUpper(hex.EncodeToString(tag.UID())) }
	cases := []struct {
		name, path string
		owner      string
	}{
		{"provisioning session", "/v1/sessions/" + sid, tenantAKey},
		{"registered tag", "/v1/tags/" + uidOf(registered), tenantAKey},
		// Provisioned by tenant B, but first verified through tenant A's
		// template: the template's tenant owns what it sees first.
		{"tag seen through a template", "/v1/tags/" + uidOf(seen), tenantAKey},
	}
	for _, c := range cases {
		other := tenantBKey
		if c.owner == tenantBKey {
			other = tenantAKey
		}
		if code, body := h.api(c.owner, "GET", c.path, nil); code != http.StatusOK {
			t.Fatalf("%s, owner: %d %v", c.name, code, body)
		}
		if code, body := h.api(other, "GET", c.path, nil); code != http.StatusNotFound || errCode(body) != "not_found" {
			t.Fatalf("%s, other tenant: %d %v, want 404", c.name, code, body)
		}
	}
	code, list := h.api(tenantAKey, "GET", "/v1/provisioning/sessions", nil)
	if code != http.StatusOK || len(list["sessions"].([]any)) != 1 || list["sessions"].([]any)[0].(map[string]any)["id"] != sid {
		t.Fatalf("tenant A's list: %d %v", code, list)
	}
	code, list = h.api(tenantBKey, "GET", "/v1/provisioning/sessions?status=ok&kind=provision_ntag424", nil)
	if code != http.StatusOK || len(list["sessions"].([]any)) != 1 || list["sessions"].([]any)[0].(map[string]any)["id"] == sid {
		t.Fatalf("tenant B's list: %d %v", code, list)
	}
	for _, q := range []string{"?status=weird", "?limit=0", "?limit=501", "?before=yesterday"} {
		if code, body := h.api(tenantAKey, "GET", "/v1/provisioning/sessions"+q, nil); code != http.StatusBadRequest {
			t.Fatalf("%s: %d %v", q, code, body)
		}
	}
}

// TestRandomIDResumeWithoutUID: a tag torn at the SetConfiguration that
// switched its random ID on (the last step) shows a random ID on the next
// tap. A new session of the same tenant that names no UID finds it (the
// one tag of the tenant's failed random-ID sessions left at step files),
// proves it by authenticating with that tag's key 0, and completes.
// Another tenant's session does not find it and asks for the UID.
func TestRandomIDResumeWithoutUID(t *testing.T) {
	h := newProvSUNHarness(t, testbackend.Backends()[0])
	body := func() map[string]any {
		return map[string]any{"template": "https://sun.example.com/v1/sun/prov?p={picc}&m={mac}", "random_id": true}
	}
	probe, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.provision(tenantAKey, probe, body())
	total := probe.APDUs()

	tag, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tag.TearAt(total - 1)
	ph := &provHarness{harness: &harness{t: t, http: &httptest.Server{URL: h.url}}}
	run := func(key string) *provision.Result {
		t.Helper()
		b := body()
		b["kind"] = provision.KindNTAG424
		code, out := h.api(key, "POST", "/v1/sessions", b)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, out)
		}
		rep, _ := ph.run(out["bridge_token"].(string), tag, true)
		if rep == nil {
			t.Fatalf("no result: %+v", rep)
		}
		_, view := h.api(key, "GET", "/v1/sessions/"+out["session_id"].(string), nil)
		res := &provision.Result{OK: rep.Result.OK, CardUID: rep.Result.CardUID}
		if rep.Result.Error != nil {
			res.Reason = transaction.Reason(rep.Result.Error.Code)
		}
		t.Logf("session: %v", view["result"])
		return res
	}
	if res := run(tenantAKey); res.OK {
		t.Fatalf("torn session succeeded: %+v", res)
	}
	_ = tag.Tap()
	if !ntag424.IsRandomID(tag.AnticollisionUID()) {
		t.Fatal("random ID not on after the tear")
	}
	if res := run(tenantBKey); res.OK || res.Reason != provision.ReasonInvalid {
		t.Fatalf("other tenant, no UID: %+v", res)
	}
	_ = tag.Tap()
	res := run(tenantAKey)
	if !res.OK || res.CardUID != strings.ToUpper(hex.EncodeToString(tag.UID())) {
		t.Fatalf("resume without UID: %+v", res)
	}
	u, err := tag.PhoneRead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if code, v := h.verify("prov", u); code != http.StatusOK || v["status"] != string(sun.Authentic) {
		t.Fatalf("verify: %d %v", code, v)
	}
}
