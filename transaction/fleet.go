package transaction

import (
	"context"
	"encoding/hex"
	"sync"

	"github.com/desfire-relay/relay/transaction/ledger"

	"github.com/desfire-relay/relay/transaction/cardscript"
)

// guessesMax bounds the cards whose last profile the service remembers.
const guessesMax = 100_000

// guesses remembers, per card UID, the fleet profile its last session
// used: the first exchange of its next session then carries that
// profile's select and authentication, so a known card of any generation
// costs no extra exchange. It is a hint only (a wrong guess costs one
// exchange), so it lives in memory and is simply emptied when full.
type guesses struct {
	mu  sync.Mutex
	max int
	m   map[string]int
}

func newGuesses(max int) *guesses { return &guesses{max: max, m: map[string]int{}} }

func (g *guesses) get(uid string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[uid]
}

func (g *guesses) put(uid string, i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.m) >= g.max {
		clear(g.m)
	}
	g.m[uid] = i
}

// candidates are the fleet's profiles with the key a session of this kind
// authenticates with (the top-up key, or the read key of a balance
// lookup), diversified for uid; a profile of random-ID cards
// authenticates first with its UID key and then with that key,
// diversified from the real UID the card shows.
func (s *Service) candidates(uid []byte, balance bool) []cardscript.Candidate {
	out := make([]cardscript.Candidate, len(s.fleet))
	for i := range s.fleet {
		p := &s.fleet[i]
		keyNo := p.TopUpKeyNo
		if balance {
			keyNo = p.ReadKeyNo
		}
		out[i] = cardscript.Candidate{Profile: p, KeyNo: keyNo, Key: s.keyFunc(p, uid)}
		if p.RandomUID {
			out[i].KeyNo, out[i].NextKeyNo = p.UIDKeyNo, keyNo
			out[i].NextKey = func(real []byte) cardscript.KeyFunc { return s.keyFunc(p, real) }
		}
	}
	return out
}

// randomProfile is the index of the fleet's first profile of random-ID
// cards, or -1.
func (s *Service) randomProfile() int {
	for i := range s.fleet {
		if s.fleet[i].RandomUID {
			return i
		}
	}
	return -1
}

// identify names the card the session serves: the UID the bridge named,
// or, when it names a random ID and the fleet has profiles for random-ID
// cards, the real UID the card shows with GetCardUID under its UID key.
// That takes the card's first exchanges before the card lock (nothing is
// written; locks, ledger and history then key on the real UID), and the
// session it opened (r.cs) serves the rest.
func (s *Service) identify(ctx context.Context, r *run, balance bool) (string, error) {
	uid, err := ledger.NormalizeCardUID(r.claimed)
	if err != nil {
		return "", err
	}
	raw, _ := hex.DecodeString(uid)
	if !cardscript.RandomID(raw) || s.randomProfile() < 0 {
		return uid, nil
	}
	if r.cs, err = s.startCard(ctx, r, raw, balance); err != nil {
		return "", err
	}
	if r.realUID == nil {
		return uid, nil // GetVersion showed a fixed UID: not a random ID after all
	}
	return ledger.NormalizeCardUID(hex.EncodeToString(r.realUID))
}

// maxAmount is the largest top-up every profile of the fleet allows (a
// top-up may land on a card of any of them).
func (s *Service) maxAmount() int64 {
	max := s.fleet[0].MaxAmount()
	for i := range s.fleet {
		if m := s.fleet[i].MaxAmount(); m < max {
			max = m
		}
	}
	return max
}

// startCard runs the first exchange for the card r names: GetVersion with
// the guessed profile's select and authentication, and, when the card is
// of another kind, the profile that serves it. It records the profile in
// r.
func (s *Service) startCard(ctx context.Context, r *run, uid []byte, balance bool) (*cardscript.Session, error) {
	cands := s.candidates(uid, balance)
	guess := s.seen.get(r.card)
	if cardscript.RandomID(uid) && s.randomProfile() >= 0 {
		guess = s.randomProfile() // a random ID is new at every tap
	}
	cs, d, err := cardscript.StartDetect(ctx, r.t, uid, cands, guess, s.cfg.Rand)
	if err != nil {
		return nil, err
	}
	r.prof, r.realUID = cands[d.Profile].Profile, d.UID
	r.res.Profile = r.prof.Name
	if d.UID == nil {
		s.seen.put(r.card, d.Profile)
	}
	return cs, nil
}
