-- Real card fleets: the Transaction MAC Reader ID a top-up committed with
-- CommitReaderID and the previous one the card returned (EncTMRI,
-- deciphered), both covered by the verified Transaction MAC.
ALTER TABLE topups ADD COLUMN reader_id BLOB;
ALTER TABLE topups ADD COLUMN prev_reader_id BLOB;
