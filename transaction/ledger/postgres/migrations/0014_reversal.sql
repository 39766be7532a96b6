-- Reversals: an entry of kind 'reversal' debits an applied credit's amount
-- back from its card, under the same state machine and evidence; it names
-- the credit it reverses, and a credit has at most one reversal.
ALTER TABLE topups ADD COLUMN kind TEXT NOT NULL DEFAULT 'credit' CHECK (kind IN ('credit', 'reversal'));
ALTER TABLE topups ADD COLUMN reverses TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX topups_reverses ON topups (reverses) WHERE reverses <> '';
