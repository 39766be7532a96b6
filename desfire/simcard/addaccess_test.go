package simcard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
)

// TestAdditionalAccessSets: ChangeFileSettings with FileOption bit 7
// adds access condition sets (EV2, NXP AN12113 section 3.1); a key in
// any set is granted the set's rights, GetFileSettings lists the sets.
func TestAdditionalAccessSets(t *testing.T) {
	ctx := context.Background()
	c, err := simcard.New(simcard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aid := []byte{0x01, 0x02, 0x03}
	zero := make([]byte, 16)
	card := desfire.NewCard(c)
	auth := func(no byte) error {
		return card.Authenticate(ctx, desfire.NewAuthEV2First(no, zero, nil))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(card.SelectApplication(ctx, []byte{0, 0, 0}))
	must(auth(0))
	must(card.CreateApplication(ctx, aid, 0x0B, 0x85))
	must(card.SelectApplication(ctx, aid))
	must(auth(0))
	set1 := desfire.NewAccessRights(1, 2, 0xF, 0)
	set2 := desfire.NewAccessRights(3, 0xF, 3, 0)
	must(card.CreateValueFile(ctx, 1, byte(desfire.CommFull), set1.Bytes(), 0, 1000, 10, false))
	settings := append(append([]byte{byte(desfire.CommFull) | 0x80}, set1.Bytes()...), 1)
	must(card.ChangeFileSettings(ctx, 1, append(settings, set2.Bytes()...), desfire.CommFull))
	fs, err := card.GetFileSettings(ctx, 1)
	must(err)
	if fs.Access != set1 || len(fs.AdditionalAccess) != 1 || fs.AdditionalAccess[0] != set2 || fs.Mode() != desfire.CommFull {
		t.Fatalf("settings %+v", fs)
	}
	// Key 3 (set 2) credits; key 2 (set 1, RW never) cannot; key 4 is in
	// no set.
	must(auth(3))
	if _, err := card.Exec(ctx, desfire.CreditCmd(1, 5, desfire.CommFull)); err != nil {
		t.Fatalf("credit with key 3: %v", err)
	}
	must(auth(2))
	if _, err := card.Exec(ctx, desfire.CreditCmd(1, 5, desfire.CommFull)); !errors.Is(err, desfire.ErrPermissionDenied) {
		t.Fatalf("credit with key 2: %v", err)
	}
	must(auth(4))
	if _, err := card.Exec(ctx, desfire.GetValueCmd(1, desfire.CommFull)); !errors.Is(err, desfire.ErrPermissionDenied) {
		t.Fatalf("read with key 4: %v", err)
	}
	// Malformed: bit 7 without sets, or more than 7.
	must(auth(0))
	for _, bad := range [][]byte{
		append(append([]byte{0x83}, set1.Bytes()...), 0),
		append(append([]byte{0x83}, set1.Bytes()...), 1),
	} {
		if err := card.ChangeFileSettings(ctx, 1, bad, desfire.CommFull); err == nil {
			t.Fatalf("settings %X accepted", bad)
		}
		must(auth(0))
	}
}
