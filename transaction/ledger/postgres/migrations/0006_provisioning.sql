-- Ledger schema v6: provisioning (issue 14).
--
-- provision_cards holds, per card or tag (UID hex), what is provisioned
-- and how far it has gone; fence is the highest card-lock fencing token
-- that wrote it (a lower one is refused).
CREATE TABLE provision_cards (
	uid        TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	step       TEXT NOT NULL,
	fence      BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);

-- provision_keys: per key, the version the card proved (version) and the
-- version about to be written (pending, NULL when none). pending is set
-- before the ChangeKey leaves, so a torn change leaves the card at one of
-- the two.
CREATE TABLE provision_keys (
	uid        TEXT NOT NULL REFERENCES provision_cards (uid),
	key_no     BIGINT NOT NULL,
	version    BIGINT NOT NULL,
	pending    BIGINT,
	evidence   TEXT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (uid, key_no)
);

-- provision_events: the history of each card's provisioning.
CREATE TABLE provision_events (
	uid    TEXT NOT NULL REFERENCES provision_cards (uid),
	seq    BIGINT NOT NULL,
	what   TEXT NOT NULL,
	detail TEXT NOT NULL,
	at     BIGINT NOT NULL,
	PRIMARY KEY (uid, seq)
);

-- provision_sessions: provisioning sessions (kinds issue and
-- provision_ntag424), each with its one bridge token (SHA-256), the
-- validated request and the outcome. They live beside the top-up sessions
-- so those keep their schema.
CREATE TABLE provision_sessions (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	params     TEXT NOT NULL,
	token_hash BYTEA NOT NULL UNIQUE,
	expires_at BIGINT NOT NULL,
	used_at    BIGINT,
	status     TEXT NOT NULL,
	card_uid   TEXT NOT NULL DEFAULT '',
	error_code TEXT NOT NULL DEFAULT '',
	result     TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	ended_at   BIGINT
);
