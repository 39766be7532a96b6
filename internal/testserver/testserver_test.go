package testserver_test

import (
	"testing"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/transaction/profile"
)

func TestHarnessTopUpAndBalance(t *testing.T) {
	p, err := profile.DefaultSet().Get("an12113-ev2")
	if err != nil {
		t.Fatal(err)
	}
	h := testserver.New(t, testbackend.Backends()[0], p, testserver.Options{})
	card := h.Card([]byte{4, 1, 2, 3, 4, 5, 6}, 100)
	id, tok := h.TopUp("k1", 250, "")
	if _, err := h.Bridge(tok, card, true); err != nil {
		t.Fatal(err)
	}
	if s := h.Status(id); s != "applied" {
		t.Fatalf("status %s, want applied", s)
	}
	_, btok := h.BalanceToken()
	rep, err := h.Bridge(btok, card, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result.Balance == nil || *rep.Result.Balance != 350 {
		t.Fatalf("balance %v, want 350", rep.Result.Balance)
	}
}
