package provision_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

// liar is a hostile bridge: at APDU n it answers a bare status word of
// its choosing, either without passing the command on or after the card
// executed it (its real answer dropped). Every other APDU is relayed.
type liar struct {
	t        desfire.Transport
	n        int
	sw       []byte
	executed bool
}

func (l *liar) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	n := l.n
	l.n--
	if n != 0 {
		return l.t.Transmit(ctx, a)
	}
	if l.executed {
		if _, err := l.t.Transmit(ctx, a); err != nil {
			return nil, err
		}
	}
	return append([]byte(nil), l.sw...), nil
}

var forged = [][]byte{{0x91, 0x00}, {0x90, 0x00}, {0x91, 0xAE}, {0x91, 0x1E}, {0x91, 0xBE}, {}}

// TestForgedStatusAtEveryAPDU: whatever bare status word a bridge puts
// in place of any APDU's answer (executed or not), the ledger never
// records a key or step the tag does not hold, and an honest retry
// completes. This is the provisioning row of the evidence table.
func TestForgedStatusAtEveryAPDU(t *testing.T) {
	probe := newFixture(t, provision.NTAG424Request{Lock: true})
	clean := newTag(t)
	if res := probe.run(clean, clean.UID()); !res.OK {
		t.Fatal(res)
	}
	total, believed := clean.APDUs(), 0
	f := newFixture(t, provision.NTAG424Request{Lock: true}) // one ledger; each tag has a random UID
	for n := 0; n < total; n++ {
		for _, sw := range forged {
			for _, executed := range []bool{false, true} {
				t.Run(fmt.Sprintf("apdu=%d/sw=%X/executed=%v", n, sw, executed), func(t *testing.T) {
					tag := newTag(t)
					res := f.run(&liar{t: tag, n: n, sw: sw, executed: executed}, tag.UID())
					if res.OK {
						// Only a forged answer that carries no evidence
						// anyway (the select's 9000) can pass.
						believed++
					}
					f.known(t, tag)
					if res.Step == ledger.StepDone {
						if _, v := tag.Key(0); v != 1 {
							t.Fatalf("done with key 0 at version %d", v)
						}
					}
					_ = tag.Tap()
					if res := f.run(tag, tag.UID()); !res.OK && res.Reason != provision.ReasonProvisioned {
						t.Fatalf("honest retry: %+v", res)
					}
					f.known(t, tag)
					f.checkTapped(t, tag)
				})
			}
		}
	}
	t.Logf("%d APDUs × %d forged answers × executed/not: %d sessions succeeded despite a forgery (each on an answer that proves nothing)", total, len(forged), believed)
}

// TestIssueForgedStatusAtEveryAPDU is the same matrix for DESFire
// issuance.
func TestIssueForgedStatusAtEveryAPDU(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1(), profile.AN12113OTA()} {
		probe := newIssueFixture(t, p)
		clean := newBlank(t)
		if res := probe.env.IssueDESFire(context.Background(), cardLost{clean}, clean.UID(), probe.plan); !res.OK {
			t.Fatal(res)
		}
		total := clean.APDUs()
		f := newIssueFixture(t, p) // one ledger, one card UID per run
		run := 0
		for n := 0; n < total; n++ {
			for _, sw := range forged {
				for _, executed := range []bool{false, true} {
					run++
					t.Run(fmt.Sprintf("%s/apdu=%d/sw=%X/executed=%v", p.Name, n, sw, executed), func(t *testing.T) {
						c := newBlankN(t, run)
						res := f.env.IssueDESFire(context.Background(), &liar{t: cardLost{c}, n: n, sw: sw, executed: executed}, c.UID(), f.plan)
						f.known(t, c)
						if res.Step == ledger.StepDone {
							f.check(t, c)
						}
						_ = c.Tap()
						if res := f.env.IssueDESFire(context.Background(), cardLost{c}, c.UID(), f.plan); !res.OK && res.Reason != provision.ReasonProvisioned {
							t.Fatalf("honest retry: %+v", res)
						}
						f.known(t, c)
						f.check(t, c)
					})
				}
			}
		}
	}
}
