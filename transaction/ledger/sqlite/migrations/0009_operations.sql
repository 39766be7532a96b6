-- Operators and support desks (issue 17): the hot list, cancellations and
-- the export of a period. Kept identical to the PostgreSQL migration.

-- A tenant's blocked cards: top-ups for them are refused, at creation and
-- by a session once the card authenticated. One row per (tenant, card);
-- every node reads it from here, so a block holds everywhere at once.
CREATE TABLE card_blocks (
	tenant     TEXT NOT NULL,
	card_uid   TEXT NOT NULL,
	reason     TEXT NOT NULL,
	actor      TEXT NOT NULL,
	blocked_at BIGINT NOT NULL,
	PRIMARY KEY (tenant, card_uid)
);

-- Every block and unblock, for the audit trail.
CREATE TABLE card_block_events (
	id       TEXT PRIMARY KEY,
	tenant   TEXT NOT NULL,
	card_uid TEXT NOT NULL,
	action   TEXT NOT NULL CHECK (action IN ('block', 'unblock')),
	reason   TEXT NOT NULL,
	actor    TEXT NOT NULL,
	at       BIGINT NOT NULL
);
CREATE INDEX card_block_events_card ON card_block_events (tenant, card_uid, at);

-- Who cancelled a top-up that never reached a card, from which status and
-- why (one per top-up: cancelled is final).
CREATE TABLE topup_cancellations (
	topup_id    TEXT PRIMARY KEY REFERENCES topups (id),
	actor       TEXT NOT NULL,
	from_status TEXT NOT NULL,
	reason      TEXT NOT NULL,
	at          BIGINT NOT NULL
);

-- Lists filtered by creation time and exports of a period, in creation
-- order.
CREATE INDEX topups_tenant_created ON topups (tenant, created_at, id);
