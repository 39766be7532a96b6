package server_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/time/rate"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/sun"
	"github.com/desfire-relay/relay/transaction/sun/suntest"
)

const sunAPIKey = "sun-operator-key-0123456789"

// sunHarness is a server with one AES and one LRP template and a
// simulated tag for each, over a real ledger.
type sunHarness struct {
	url   string
	store ledger.SUNStore
	tpls  map[string]*sun.Template
	tags  map[string]*suntest.Tag
}

func sunTemplates() []sun.Template {
	return []sun.Template{
		{Name: "aes", PICCParam: "picc_data", FileParam: "enc", MACParam: "cmac", MACInputFrom: "enc",
			MetaReadKey: &sun.KeyRef{AID: "D27600", KeyNo: 2}, FileReadKey: sun.KeyRef{AID: "D27600", KeyNo: 3},
			MaxCounterGap: 20, TravelWindow: sun.Duration(3600e9)},
		{Name: "lrp", Mode: sun.ModeLRP, PICCParam: "e", MACParam: "c", MACInputFrom: "e",
			MetaReadKey: &sun.KeyRef{AID: "D27600", KeyNo: 2}, FileReadKey: sun.KeyRef{AID: "D27600", KeyNo: 3}},
	}
}

func newSUNHarness(t *testing.T, l ledger.Ledger, o server.SUNOptions) *sunHarness {
	t.Helper()
	metaKey, master := "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF", "00112233445566778899AABBCCDDEEFF"
	kp, err := keys.New(keys.File{Dev: true, SystemID: "sun-e2e", Keys: []keys.Entry{
		{AID: "D27600", KeyNo: 2, Key: metaKey},
		{AID: "D27600", KeyNo: 3, Key: master, Diversify: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	st := l.(ledger.SUNStore)
	ts := sunTemplates()
	v, err := sun.NewVerifier(sun.Config{Templates: ts, Keys: kp, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	o.Verifier, o.Store = v, st
	srv := server.New(server.Options{APIKeyHashes: []string{config.HashAPIKey(sunAPIKey)}, SUN: o, Limits: testserver.NoLimits()})
	h := &sunHarness{url: newTestServer(t, srv).URL, store: st, tpls: map[string]*sun.Template{}, tags: map[string]*suntest.Tag{}}
	for i, tpl := range ts {
		tpl := tpl
		if err := tpl.Validate(); err != nil {
			t.Fatal(err)
		}
		uid := []byte{0x04, 0x51, 0x52, 0x53, 0x54, 0x55, byte(0x80 + i)}
		fk, err := kp.CardKey(context.Background(), keys.Ref{AID: 0xD27600, KeyNo: 3}, uid)
		if err != nil {
			t.Fatal(err)
		}
		h.tpls[tpl.Name] = &tpl
		h.tags[tpl.Name] = &suntest.Tag{UID: uid, MetaKey: mustHexS(t, metaKey), FileKey: fk, FileData: []byte("CCbatch-2031-05!")}
	}
	return h
}

func mustHexS(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *sunHarness) read(t *testing.T, name string) string {
	t.Helper()
	q, err := h.tags[name].Read(h.tpls[name])
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// get requests a path and returns the status and the decoded JSON body.
func (h *sunHarness) get(t *testing.T, path string, header http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	decodeJSON(resp, &body)
	return resp.StatusCode, body
}

func sunBackends(t *testing.T) map[string]func(testing.TB) ledger.Ledger {
	return map[string]func(testing.TB) ledger.Ledger{"sqlite": testbackend.SQLiteLedger, "postgres": testbackend.PostgresLedger}
}

func TestSUNEndToEnd(t *testing.T) {
	for name, open := range sunBackends(t) {
		t.Run(name, func(t *testing.T) {
			h := newSUNHarness(t, open(t), server.SUNOptions{RegionHeader: "X-Region"})
			for _, tpl := range []string{"aes", "lrp"} {
				q := h.read(t, tpl)
				code, body := h.get(t, "/v1/sun/"+tpl+"?"+q, nil)
				uid := strings.ToUpper(hex.EncodeToString(h.tags[tpl].UID))
				if code != 200 || body["status"] != "authentic" || body["uid"] != uid || body["counter"] != float64(1) || body["mode"] != tpl {
					t.Fatalf("%s first read: %d %v", tpl, code, body)
				}
				if code, body = h.get(t, "/v1/sun/"+tpl+"?"+q, nil); code != 200 || body["status"] != "replayed" {
					t.Fatalf("%s replay: %d %v", tpl, code, body)
				}
				q2 := h.read(t, tpl)
				i := strings.LastIndexByte(q2, '=') + 3
				flipped := q2[:i] + string("1032547698BADCFE"[strings.IndexByte("0123456789ABCDEF", q2[i])]) + q2[i+1:]
				if code, body = h.get(t, "/v1/sun/"+tpl+"?"+flipped, nil); code != 200 || body["status"] != "invalid" || body["uid"] != nil {
					t.Fatalf("%s flipped digit: %d %v", tpl, code, body)
				}
				if code, body = h.get(t, "/v1/sun/"+tpl+"?"+q2, nil); code != 200 || body["status"] != "authentic" {
					t.Fatalf("%s second read: %d %v", tpl, code, body)
				}
			}
			// Clone signal: a jump beyond max_counter_gap, then the operator view.
			h.tags["aes"].Counter += 30
			code, body := h.get(t, "/v1/sun/aes?"+h.read(t, "aes"), http.Header{"X-Region": {"de"}})
			if code != 200 || body["status"] != "authentic" || body["clone_suspected"] != true {
				t.Fatalf("counter jump: %d %v", code, body)
			}
			uid := strings.ToUpper(hex.EncodeToString(h.tags["aes"].UID))
			if code, _ := h.get(t, "/v1/tags/"+uid, nil); code != 401 {
				t.Fatalf("tag view without API key: %d", code)
			}
			auth := http.Header{"Authorization": {"Bearer " + sunAPIKey}}
			code, body = h.get(t, "/v1/tags/"+uid, auth)
			sigs, _ := body["signals"].([]any)
			if code != 200 || body["clone_suspected"] != true || body["last_counter"] != float64(33) || body["replays"] != float64(1) || len(sigs) != 1 {
				t.Fatalf("tag view: %d %v", code, body)
			}
			if sig, _ := sigs[0].(map[string]any); sig["kind"] != "counter_jump" {
				t.Fatalf("signal: %v", sigs[0])
			}
			if code, _ := h.get(t, "/v1/tags/04000000000000", auth); code != 404 {
				t.Fatalf("unknown tag view: %d", code)
			}
			if code, _ := h.get(t, "/v1/tags/nothex", auth); code != 400 {
				t.Fatalf("malformed uid: %d", code)
			}
		})
	}
}

func TestSUNConcurrentOneURL(t *testing.T) {
	for name, open := range sunBackends(t) {
		t.Run(name, func(t *testing.T) {
			h := newSUNHarness(t, open(t), server.SUNOptions{PerClient: rate.Inf, PerTag: rate.Inf})
			for _, tpl := range []string{"aes", "lrp"} {
				q := h.read(t, tpl)
				const n = 100
				var (
					wg     sync.WaitGroup
					mu     sync.Mutex
					counts = map[string]int{}
				)
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := http.Get(h.url + "/v1/sun/" + tpl + "?" + q)
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							counts["error"]++
							return
						}
						defer resp.Body.Close()
						var body map[string]any
						if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
							counts["http"]++
							return
						}
						counts[body["status"].(string)]++
					}()
				}
				wg.Wait()
				if counts["authentic"] != 1 || counts["replayed"] != n-1 {
					t.Fatalf("%s: %d requests with one URL: %v", tpl, n, counts)
				}
			}
		})
	}
}

func TestSUNBadInputStoresNothing(t *testing.T) {
	h := newSUNHarness(t, testbackend.SQLiteLedger(t), server.SUNOptions{PerClient: rate.Inf, PerTag: rate.Inf})
	good := h.read(t, "aes")
	p := strings.Split(good, "&")
	exhausted, err := h.tags["aes"].Query(h.tpls["aes"], 0xFFFFFF)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, path, code string }{
		{"unknown template", "/v1/sun/nope?" + good, sun.CodeUnknownTemplate},
		{"missing mac", "/v1/sun/aes?" + p[0] + "&" + p[1], sun.CodeMissingParam},
		{"no query", "/v1/sun/aes", sun.CodeMissingParam},
		{"doubled", "/v1/sun/aes?" + good + "&" + p[0], sun.CodeDuplicateParam},
		{"wrong length", "/v1/sun/aes?" + good + "0", sun.CodeBadLength},
		{"non-hex", "/v1/sun/aes?" + strings.Replace(good, p[0][10:12], "ZZ", 1), sun.CodeNotHex},
		{"counter all ones", "/v1/sun/aes?" + exhausted, sun.CodeCounterExhausted},
		{"oversized", "/v1/sun/aes?" + good + "&pad=" + strings.Repeat("A", 2000), sun.CodeQueryTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := h.get(t, c.path, nil)
			e, _ := body["error"].(map[string]any)
			if code != 400 || e["code"] != c.code {
				t.Fatalf("%d %v, want 400 %s", code, body, c.code)
			}
		})
	}
	uid := strings.ToUpper(hex.EncodeToString(h.tags["aes"].UID))
	if _, err := h.store.SUNTag(context.Background(), uid); err == nil {
		t.Fatal("bad input stored the tag")
	}
	// An HTML client gets a page with the code, still 400.
	req, _ := http.NewRequest(http.MethodGet, h.url+"/v1/sun/aes?"+p[0], nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), sun.CodeMissingParam) {
		t.Fatalf("HTML bad input: %d %s", resp.StatusCode, page)
	}
}

func TestSUNRateLimits(t *testing.T) {
	h := newSUNHarness(t, testbackend.SQLiteLedger(t), server.SUNOptions{PerClient: 0.001, ClientBurst: 3, PerTag: rate.Inf})
	codes := []int{}
	for i := 0; i < 5; i++ {
		code, _ := h.get(t, "/v1/sun/aes?"+h.read(t, "aes"), nil)
		codes = append(codes, code)
	}
	if codes[2] != 200 || codes[3] != 429 || codes[4] != 429 {
		t.Fatalf("per-address limit of 3: %v", codes)
	}
	// Per tag: repeats of one URL draw from the tag's bucket (burst 2);
	// fresh readings of that tag and other tags are never held back.
	h = newSUNHarness(t, testbackend.SQLiteLedger(t), server.SUNOptions{PerClient: rate.Inf, PerTag: 0.001, TagBurst: 2})
	copied := h.read(t, "aes")
	codes = codes[:0]
	for i := 0; i < 4; i++ {
		code, _ := h.get(t, "/v1/sun/aes?"+copied, nil)
		codes = append(codes, code)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 200 || codes[3] != 429 {
		t.Fatalf("one URL four times with a per-tag burst of 2: %v", codes)
	}
	if code, body := h.get(t, "/v1/sun/aes?"+h.read(t, "aes"), nil); code != 200 || body["status"] != "authentic" {
		t.Fatalf("fresh reading of a tag whose bucket is empty: %d %v", code, body)
	}
	code, _ := h.get(t, "/v1/sun/lrp?"+h.read(t, "lrp"), nil)
	if code != 200 {
		t.Fatalf("other tag: %d", code)
	}
	// Noise with bad MACs does not draw from a tag's bucket: after five
	// forged variants, two repeats of the last URL still pass.
	q := h.read(t, "lrp")
	if code, body := h.get(t, "/v1/sun/lrp?"+q, nil); code != 200 || body["status"] != "authentic" {
		t.Fatalf("lrp: %d %v", code, body)
	}
	for i := 0; i < 5; i++ {
		bad := q[:len(q)-1-i] + string("1032547698BADCFE"[strings.IndexByte("0123456789ABCDEF", q[len(q)-1-i])]) + q[len(q)-i:]
		if code, body := h.get(t, "/v1/sun/lrp?"+bad, nil); code != 200 || body["status"] != "invalid" {
			t.Fatalf("bad MAC: %d %v", code, body)
		}
	}
	for i := 0; i < 2; i++ {
		if code, body := h.get(t, "/v1/sun/lrp?"+q, nil); code != 200 || body["status"] != "replayed" {
			t.Fatalf("repeat %d after invalid noise: %d %v", i, code, body)
		}
	}
	if code, _ := h.get(t, "/v1/sun/lrp?"+q, nil); code != 429 {
		t.Fatalf("third repeat: %d", code)
	}
}

// TestSUNTravelSignals: impossible_travel is raised when two accepted
// readings of one tag come from different places within the template's
// travel window, the place being the region header a trusted proxy sets
// or, with TravelByNetwork and no region header value, the client's
// network (IPv4 /16, IPv6 /32). The same network, or no hint at all,
// raises nothing; a region header wins over the network.
func TestSUNTravelSignals(t *testing.T) {
	h := newSUNHarness(t, testbackend.SQLiteLedger(t), server.SUNOptions{RegionHeader: "X-Region", ClientIPHeader: "X-Real-IP", TravelByNetwork: true})
	steps := []struct {
		ip, region string
		travel     bool
	}{
		{"203.0.113.5", "", false},   // first reading: nothing to compare
		{"203.0.200.9", "", false},   // same /16
		{"198.51.100.7", "", true},   // another /16 within the hour
		{"198.51.100.8", "DE", true}, // region header wins: DE after net4:198.51
		{"2001:db8::1", "DE", false}, // same region, another network
		{"2001:db8:1::1", "", true},  // net6:2001:0db8 after DE
		{"2001:db8:ffff::2", "", false},
	}
	for i, s := range steps {
		hdr := http.Header{"X-Real-IP": {s.ip}}
		if s.region != "" {
			hdr.Set("X-Region", s.region)
		}
		code, body := h.get(t, "/v1/sun/aes?"+h.read(t, "aes"), hdr)
		sigs, _ := body["signals"].([]any)
		got := false
		for _, g := range sigs {
			got = got || g == "impossible_travel"
		}
		if code != 200 || body["status"] != "authentic" || got != s.travel {
			t.Fatalf("step %d (%s %s): %d %v, want travel=%v", i, s.ip, s.region, code, body, s.travel)
		}
	}
}
