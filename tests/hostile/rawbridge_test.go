package hostile

import (
	"context"
	"time"

	"github.com/desfire-relay/relay/internal/rawbridge"
)

// The raw bridge (internal/rawbridge) relays to a simulated card with a
// hook that may rewrite or replace every answer: the reference bridge
// cannot misbehave; this one misbehaves exactly where a scenario says.

// sessionDeadline bounds one raw session on the test side. A server that
// panicked in a session goroutine never closes the socket; the session
// then ends here without a close code and the scenario fails.
const sessionDeadline = 8 * time.Second

// runRaw performs one raw session against the bridge endpoint url within
// sessionDeadline.
func runRaw(url string, o rawbridge.Options) (rawbridge.Outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionDeadline)
	defer cancel()
	if o.Name == "" {
		o.Name = "hostile"
	}
	return rawbridge.Run(ctx, url, o)
}
