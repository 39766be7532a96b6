package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
)

var all = []Status{StatusPending, StatusInProgress, StatusInDoubt, StatusApplied, StatusFailed, StatusExpired, StatusCancelled}

// TestTransitionTable spells out the whole state machine: every pair not
// listed here must be refused.
func TestTransitionTable(t *testing.T) {
	type pair struct{ from, to Status }
	allowed := map[pair]bool{ // value: session transition
		{StatusPending, StatusInProgress}: true,
		{StatusFailed, StatusInProgress}:  true,
		{StatusInProgress, StatusInDoubt}: true,
		{StatusPending, StatusInDoubt}:    true,
		{StatusPending, StatusFailed}:     true,
		{StatusInProgress, StatusApplied}: true,
		{StatusInProgress, StatusFailed}:  true,
		{StatusInDoubt, StatusApplied}:    true,
		{StatusInDoubt, StatusFailed}:     true,
		{StatusFailed, StatusPending}:     false,
		{StatusPending, StatusExpired}:    false,
		{StatusPending, StatusCancelled}:  false,
		{StatusFailed, StatusCancelled}:   false,
	}
	froms := append([]Status{0, 99}, all...)
	n := 0
	for _, from := range froms {
		for _, to := range froms {
			t.Run(from.String()+"→"+to.String(), func(t *testing.T) {
				session, ok := allowed[pair{from, to}]
				rule, err := CheckTransition(from, to)
				if !ok {
					var te *TransitionError
					if !errors.Is(err, ErrInvalidTransition) || !errors.As(err, &te) || te.From != from || te.To != to {
						t.Fatalf("err = %v, want a TransitionError", err)
					}
					return
				}
				n++
				if err != nil || rule.Session != session || rule.Why == "" {
					t.Fatalf("rule = %+v, %v; want session=%v", rule, err, session)
				}
				if from.Final() {
					t.Fatalf("final status %s has a way out", from)
				}
			})
		}
	}
	if n != len(allowed) || len(transitions) != len(allowed) {
		t.Fatalf("%d allowed pairs seen, table has %d, want %d", n, len(transitions), len(allowed))
	}
}

func TestStatusNames(t *testing.T) {
	want := []string{"pending", "in_progress", "in_doubt", "applied", "failed", "expired", "cancelled"}
	for i, s := range all {
		t.Run(want[i], func(t *testing.T) {
			if s.String() != want[i] {
				t.Fatalf("String() = %q", s.String())
			}
			got, err := ParseStatus(want[i])
			if err != nil || got != s {
				t.Fatalf("ParseStatus = %v, %v", got, err)
			}
			b, err := json.Marshal(struct{ S Status }{s})
			if err != nil || !strings.Contains(string(b), `"`+want[i]+`"`) {
				t.Fatalf("JSON = %s, %v", b, err)
			}
			var back struct{ S Status }
			if err := json.Unmarshal(b, &back); err != nil || back.S != s {
				t.Fatalf("JSON back = %v, %v", back.S, err)
			}
			if s.Final() != (s == StatusApplied || s == StatusExpired || s == StatusCancelled) {
				t.Fatalf("Final() = %v", s.Final())
			}
		})
	}
	for _, bad := range []string{"", "PENDING", "done", "pending "} {
		if _, err := ParseStatus(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseStatus(%q) err = %v", bad, err)
		}
	}
	if Status(0).Valid() || Status(0).String() != "Status(0)" {
		t.Errorf("zero status: %v %q", Status(0).Valid(), Status(0))
	}
	if _, err := json.Marshal(Status(0)); err == nil {
		t.Errorf("zero status marshalled")
	}
	for _, k := range []SessionKind{KindTopUp, KindBalance} {
		if got, err := ParseSessionKind(k.String()); err != nil || got != k {
			t.Errorf("kind %s: %v %v", k, got, err)
		}
	}
	for _, s := range []SessionStatus{SessionOpen, SessionOK, SessionFailed} {
		if got, err := ParseSessionStatus(s.String()); err != nil || got != s {
			t.Errorf("session status %s: %v %v", s, got, err)
		}
	}
}

func TestRequestNormalize(t *testing.T) {
	cases := []struct {
		name  string
		req   Request
		uid   string
		field string
	}{
		{"minimal", Request{Amount: 1, Currency: "EUR"}, "", ""},
		{"max amount", Request{Amount: MaxAmount, Currency: "JPY"}, "", ""},
		{"7-byte uid lower", Request{Amount: 1, Currency: "EUR", CardUID: "04a1b2c3d4e5f6"}, "04A1B2C3D4E5F6", ""},
		{"4-byte uid", Request{Amount: 1, Currency: "EUR", CardUID: "08aabbcc"}, "08AABBCC", ""},
		{"10-byte uid", Request{Amount: 1, Currency: "EUR", CardUID: "00112233445566778899"}, "00112233445566778899", ""},
		{"unicode reference", Request{Amount: 1, Currency: "EUR", Reference: "Fahrkarte München"}, "", ""},
		{"zero", Request{Amount: 0, Currency: "EUR"}, "", "amount"},
		{"over max", Request{Amount: MaxAmount + 1, Currency: "EUR"}, "", "amount"},
		{"currency lower", Request{Amount: 1, Currency: "eur"}, "", "currency"},
		{"currency long", Request{Amount: 1, Currency: "EURO"}, "", "currency"},
		{"uid 0x prefix", Request{Amount: 1, Currency: "EUR", CardUID: "0x04a1b2c3"}, "", "card_uid"},
		{"uid with colons", Request{Amount: 1, Currency: "EUR", CardUID: "04:a1:b2:c3"}, "", "card_uid"},
		{"reference tab", Request{Amount: 1, Currency: "EUR", Reference: "a\tb"}, "", "reference"},
		{"reference long", Request{Amount: 1, Currency: "EUR", Reference: strings.Repeat("x", MaxReferenceLen+1)}, "", "reference"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.req.Normalize()
			if c.field != "" {
				var ve *ValidationError
				if !errors.As(err, &ve) || ve.Field != c.field || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ValidationError on %s", err, c.field)
				}
				return
			}
			if err != nil || got.CardUID != c.uid {
				t.Fatalf("Normalize = %+v, %v; want uid %q", got, err, c.uid)
			}
		})
	}
}

func TestRequestHash(t *testing.T) {
	base := Request{Amount: 100, Currency: "EUR", CardUID: "04A1B2C3D4E5F6", Reference: "r"}
	h := base.Hash()
	if len(h) != 32 || !bytes.Equal(h, base.Hash()) {
		t.Fatalf("hash not stable: %x", h)
	}
	variants := []Request{
		{Amount: 101, Currency: "EUR", CardUID: "04A1B2C3D4E5F6", Reference: "r"},
		{Amount: 100, Currency: "USD", CardUID: "04A1B2C3D4E5F6", Reference: "r"},
		{Amount: 100, Currency: "EUR", CardUID: "04A1B2C3D4E5F7", Reference: "r"},
		{Amount: 100, Currency: "EUR", Reference: "r"},
		{Amount: 100, Currency: "EUR", CardUID: "04A1B2C3D4E5F6"},
		// Moving bytes between fields must change the hash.
		{Amount: 100, Currency: "EUR", CardUID: "04A1B2C3D4E5F6r"},
	}
	for i, v := range variants {
		if bytes.Equal(v.Hash(), h) {
			t.Errorf("variant %d hashes like the base request", i)
		}
	}
}

func TestLogRef(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	if r := LogRef(a); len(r) != LogRefLen || !bytes.Equal(r, LogRef(a)) || bytes.Equal(r, LogRef(b)) {
		t.Fatalf("LogRef not a stable per-ID value: %x %x", r, LogRef(b))
	}
	// Pinned (computed independently with Python's hashlib) so a change of
	// derivation, which would orphan the log records already on cards,
	// cannot go unnoticed.
	id := uuid.MustParse("00000000-0000-4000-8000-000000000000")
	if got := hex.EncodeToString(LogRef(id)); got != "57b93dafd6c9c779" {
		t.Fatalf("LogRef(%s) = %s, want 57b93dafd6c9c779", id, got)
	}
}

func TestIdempotencyKey(t *testing.T) {
	cases := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{uuid.NewString(), true},
		{"with space", true},
		{strings.Repeat("k", MaxIdempotencyKeyLen), true},
		{"", false},
		{strings.Repeat("k", MaxIdempotencyKeyLen+1), false},
		{"tab\t", false},
		{"é", false},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			if err := ValidateIdempotencyKey(c.key); (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// FuzzNormalizeCardUID feeds bridge-supplied UIDs: never panic, and an
// accepted UID is canonical (normalising it again is the identity).
func FuzzNormalizeCardUID(f *testing.F) {
	for _, s := range []string{"04a1b2c3d4e5f6", "08AABBCC", "00112233445566778899", "", "0", "zz", "04:a1", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		uid, err := NormalizeCardUID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if again, err := NormalizeCardUID(uid); err != nil || again != uid || !strings.EqualFold(uid, s) {
			t.Fatalf("%q → %q → %q, %v", s, uid, again, err)
		}
	})
}

// FuzzRequestNormalize feeds operator requests: never panic, accepted
// requests are stable under normalisation and hash alike.
func FuzzRequestNormalize(f *testing.F) {
	f.Add(int64(100), "EUR", "04a1b2c3d4e5f6", "order 1")
	f.Add(int64(-1), "eur", "x", "\x00")
	f.Add(int64(MaxAmount), "JPY", "", strings.Repeat("é", 64))
	f.Fuzz(func(t *testing.T, amount int64, currency, uid, ref string) {
		r, err := Request{Amount: amount, Currency: currency, CardUID: uid, Reference: ref}.Normalize()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		again, err := r.Normalize()
		if err != nil || again != r || !bytes.Equal(again.Hash(), r.Hash()) {
			t.Fatalf("normalised request not stable: %+v → %+v, %v", r, again, err)
		}
	})
}

// FuzzParseStatus: stored or client-supplied status names never panic
// and round-trip when accepted.
func FuzzParseStatus(f *testing.F) {
	for _, s := range all {
		f.Add(s.String())
	}
	f.Add("")
	f.Fuzz(func(t *testing.T, name string) {
		s, err := ParseStatus(name)
		if err == nil && s.String() != name {
			t.Fatalf("%q → %v", name, s)
		}
	})
}
