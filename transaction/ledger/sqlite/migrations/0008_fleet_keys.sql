-- Real card fleets: the Transaction MAC Reader ID a top-up committed with
-- CommitReaderID and the previous one the card returned (EncTMRI,
-- deciphered), both covered by the verified Transaction MAC.
ALTER TABLE topups ADD COLUMN reader_id BLOB;
ALTER TABLE topups ADD COLUMN prev_reader_id BLOB;

-- Key roll-forward: per card, application and key number, the version the
-- card last proved it holds and the version a ChangeKey may have put
-- there (recorded before the ChangeKey leaves; cleared when an
-- authentication proves which one the card holds).
CREATE TABLE card_keys (
	card_uid   TEXT    NOT NULL,
	aid        BIGINT  NOT NULL,
	key_no     INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	pending    INTEGER,
	updated_at BIGINT  NOT NULL,
	PRIMARY KEY (card_uid, aid, key_no)
);

-- A top-up request may name the card profile (scheme) it is for; a
-- session then serves only a card of that profile.
ALTER TABLE topups ADD COLUMN scheme TEXT NOT NULL DEFAULT '';
