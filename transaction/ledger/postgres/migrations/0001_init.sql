-- Ledger schema v1 (PostgreSQL). Kept column-for-column identical to
-- ../../sqlite/migrations/0001_init.sql except for type names (BYTEA/BLOB).
-- Times are Unix microseconds, UTC. IDs are canonical lower-case UUID text.

CREATE TABLE topups (
	id              TEXT PRIMARY KEY,
	idempotency_key TEXT NOT NULL UNIQUE,
	request_hash    BYTEA NOT NULL,
	amount          BIGINT NOT NULL CHECK (amount > 0),
	currency        TEXT NOT NULL,
	card_uid        TEXT NOT NULL DEFAULT '',
	reference       TEXT NOT NULL DEFAULT '',
	status          TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'in_doubt', 'applied', 'failed', 'expired', 'cancelled')),
	balance_before  BIGINT,
	balance_after   BIGINT,
	tmc             BIGINT,
	tmv             BYTEA,
	log_ref         BYTEA NOT NULL,
	attempts        BIGINT NOT NULL DEFAULT 0,
	fence           BIGINT NOT NULL DEFAULT 0,
	created_at      BIGINT NOT NULL,
	updated_at      BIGINT NOT NULL,
	expires_at      BIGINT NOT NULL,
	applied_at      BIGINT
);
CREATE INDEX topups_card ON topups (card_uid, created_at);
CREATE INDEX topups_status_expires ON topups (status, expires_at);

-- The highest fencing token seen per card: a session whose lock was taken
-- over carries a lower token and is refused.
CREATE TABLE card_fences (
	card_uid   TEXT PRIMARY KEY,
	fence      BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);

CREATE TABLE sessions (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL CHECK (kind IN ('topup', 'balance')),
	topup_id   TEXT REFERENCES topups (id),
	status     TEXT NOT NULL CHECK (status IN ('open', 'ok', 'failed')),
	outcome    TEXT,
	created_at BIGINT NOT NULL,
	ended_at   BIGINT
);
CREATE INDEX sessions_topup ON sessions (topup_id);

CREATE TABLE attempts (
	id         TEXT PRIMARY KEY,
	topup_id   TEXT NOT NULL REFERENCES topups (id),
	session_id TEXT NOT NULL REFERENCES sessions (id),
	card_uid   TEXT NOT NULL,
	fence      BIGINT NOT NULL,
	started_at BIGINT NOT NULL,
	ended_at   BIGINT,
	outcome    TEXT NOT NULL,
	error_code TEXT NOT NULL DEFAULT '',
	UNIQUE (topup_id, session_id)
);

-- Bridge tokens are stored only as SHA-256 digests; one per session.
CREATE TABLE bridge_tokens (
	token_hash BYTEA PRIMARY KEY,
	session_id TEXT NOT NULL UNIQUE REFERENCES sessions (id),
	expires_at BIGINT NOT NULL,
	used_at    BIGINT
);
