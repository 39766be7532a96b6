-- Webhook outbox: one row per state change an operator hears about,
-- written in the change's own transaction (ledger.Config.Outbox), and one
-- delivery per event and subscribed endpoint.
CREATE TABLE outbox_events (
	id         TEXT PRIMARY KEY,
	tenant     TEXT NOT NULL,
	type       TEXT NOT NULL,
	topup_id   TEXT NOT NULL DEFAULT '',
	session_id TEXT NOT NULL DEFAULT '',
	status     TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	fanned_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_events_new ON outbox_events (created_at) WHERE fanned_out = 0;
CREATE INDEX outbox_events_topup ON outbox_events (tenant, topup_id);

CREATE TABLE webhook_deliveries (
	event_id      TEXT NOT NULL REFERENCES outbox_events (id),
	endpoint      TEXT NOT NULL,
	attempts      BIGINT NOT NULL DEFAULT 0,
	next_at       BIGINT NOT NULL,
	claimed_until BIGINT NOT NULL DEFAULT 0,
	delivered_at  BIGINT,
	last_error    TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE delivered_at IS NULL;
