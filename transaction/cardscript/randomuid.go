package cardscript

import (
	"context"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/profile"
)

// identify runs, on a session authenticated with a random-ID card's UID
// key, GetCardUID (CommMode.Full: enciphered, MAC or CRC checked) and, in
// the same exchange, the first authentication frame of the key that
// serves the session (its version was read in exchange 1). It returns the
// real UID and that key's session, ready for its second frame: EV2 costs
// two exchanges more than a card with a fixed UID (the UID key's proof,
// then GetCardUID with the next key's first frame), EV1 one (its proof
// and GetCardUID ride together).
//
// Nothing here is written to the card and nothing of it is trusted
// before it is authenticated: the UID comes out of the secure channel,
// and a lie about anything earlier ends in a failed authentication.
func (s *Session) identify(ctx context.Context, b *beginning, t desfire.Transport, rnd io.Reader) (*Session, []byte, error) {
	defer s.Close() // the UID key's session ends with the next authentication
	pl, err := s.pipeline(ctx)
	if err != nil {
		return nil, nil, err
	}
	uidCmd := desfire.GetCardUIDCmd()
	if s.prof.Auth == profile.AuthEV1 {
		// EV1 pads with zeros after the CRC: a 7-byte UID (the random-ID
		// cards') keeps the answer unambiguous.
		uidCmd.RespLen = 7
	}
	got, err := pl.Add(uidCmd)
	if err != nil {
		return nil, nil, err
	}
	next := &beginning{c: Candidate{Profile: b.c.Profile, KeyNo: b.c.NextKeyNo}, kv: b.nextKV}
	if err := next.addAuth(pl); err != nil {
		return nil, nil, err
	}
	if err := pl.Run(ctx); err != nil {
		return nil, nil, fmt.Errorf("read the card UID: %w", err)
	}
	uid, err := desfire.ParseCardUID(got.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("card UID: %w", err)
	}
	next.c.Key = b.c.NextKey(uid)
	ns, err := next.open(ctx, s.card, t, rnd)
	if err != nil {
		return nil, nil, err
	}
	return ns, uid, nil
}
