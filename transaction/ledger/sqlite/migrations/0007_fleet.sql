-- Mixed fleets: the card profile each session used (detected from the
-- card), on its attempt and on the top-up.
ALTER TABLE attempts ADD COLUMN profile TEXT NOT NULL DEFAULT '';
ALTER TABLE topups ADD COLUMN profile TEXT NOT NULL DEFAULT '';
