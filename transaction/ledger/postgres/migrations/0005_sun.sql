-- SUN (NTAG 424 DNA Secure Unique NFC) verification: the last accepted
-- SDMReadCtr per tag (replay protection) and clone signals.
CREATE TABLE sun_tags (
	uid          TEXT PRIMARY KEY,        -- 14 upper-case hex digits
	template     TEXT NOT NULL,
	last_counter BIGINT NOT NULL,         -- -1: registered, never verified
	last_mac     TEXT NOT NULL DEFAULT '',
	last_at      BIGINT,                  -- Unix microseconds
	last_region  TEXT NOT NULL DEFAULT '',
	prev_counter BIGINT,                  -- the accepted message before the last
	prev_at      BIGINT,
	prev_region  TEXT,
	verified     BIGINT NOT NULL DEFAULT 0,
	replays      BIGINT NOT NULL DEFAULT 0,
	signals      BIGINT NOT NULL DEFAULT 0,
	first_at     BIGINT NOT NULL
);

-- seq numbers a tag's signals 1, 2, ..: sun_tags.signals is the last.
CREATE TABLE sun_signals (
	uid     TEXT NOT NULL REFERENCES sun_tags (uid),
	seq     BIGINT NOT NULL,
	kind    TEXT NOT NULL,
	counter BIGINT NOT NULL,
	detail  TEXT NOT NULL DEFAULT '',
	at      BIGINT NOT NULL,
	PRIMARY KEY (uid, seq)
);
