-- Ledger schema v3: evidence and operator resolution.
--
-- card_tmacs keeps, per card and application, the last Transaction MAC
-- counter the ledger accepted as a commit proof: a proof whose counter is
-- not above it is refused (an integrity failure, never applied).
CREATE TABLE card_tmacs (
	card_uid   TEXT NOT NULL,
	aid        BIGINT NOT NULL,
	tmc        BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (card_uid, aid)
);

-- An operator may resolve an in_doubt or in_progress top-up whose card
-- never came back. resolution is '' or 'manual'; resolution_checked turns
-- 1 once a later authenticated read of the card's log was compared with
-- it; conflict says what that read proved when it disagreed.
ALTER TABLE topups ADD COLUMN resolution TEXT NOT NULL DEFAULT '';
ALTER TABLE topups ADD COLUMN resolution_checked BIGINT NOT NULL DEFAULT 0;
ALTER TABLE topups ADD COLUMN conflict TEXT NOT NULL DEFAULT '';

-- Who resolved what, and why: the manual entries of a top-up's history.
CREATE TABLE resolutions (
	id          TEXT PRIMARY KEY,
	topup_id    TEXT NOT NULL REFERENCES topups (id),
	actor       TEXT NOT NULL,
	from_status TEXT NOT NULL,
	outcome     TEXT NOT NULL,
	reason      TEXT NOT NULL,
	at          BIGINT NOT NULL
);
CREATE INDEX resolutions_topup ON resolutions (topup_id, at);

-- Manually resolved top-ups not yet compared with the card's log: every
-- tap of the card checks them, like the unresolved ones.
CREATE INDEX topups_card_manual ON topups (card_uid)
	WHERE resolution = 'manual' AND resolution_checked = 0;

-- The operator's queue of unresolved top-ups, oldest change first.
CREATE INDEX topups_unresolved_updated ON topups (updated_at)
	WHERE status IN ('in_progress', 'in_doubt');
