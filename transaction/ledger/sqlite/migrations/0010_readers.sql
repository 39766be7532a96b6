-- Registered readers (kiosks, support desks) and the sessions addressed to
-- them (agent mode, docs/PROTOCOL.md).
--
-- A reader belongs to a tenant; its agent credential is stored only as its
-- SHA-256 (a 32-byte random secret: a plain digest suffices, as for bridge
-- tokens). desfire_reader_id is the optional 16-byte reader ID a session
-- on this reader writes with CommitReaderID. agent_conn and agent_seen_at
-- are the presence lease of the agent's WebSocket: the node holding it
-- renews agent_seen_at; a reader is online while the lease is fresh.
CREATE TABLE readers (
	tenant            TEXT NOT NULL,
	id                TEXT NOT NULL,
	desfire_reader_id BLOB,
	location          TEXT NOT NULL DEFAULT '',
	secret_hash       BLOB NOT NULL UNIQUE,
	created_at        BIGINT NOT NULL,
	agent_conn        TEXT NOT NULL DEFAULT '',
	agent_seen_at     BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant, id)
);

-- A session addressed to a reader waits here until the node holding the
-- reader's agent connection claims it (once: claimed_at is set in the same
-- statement that picks the row), so a session created on any node reaches
-- the agent on whichever node it is connected to.
CREATE TABLE reader_sessions (
	session_id TEXT PRIMARY KEY REFERENCES sessions (id),
	tenant     TEXT NOT NULL,
	reader     TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	claimed_at BIGINT
);
CREATE INDEX reader_sessions_waiting ON reader_sessions (tenant, reader, created_at);
