-- Ledger schema v2: every session lists the card's unresolved top-ups
-- (in_progress, in_doubt) under the card's lock. A partial index holds only
-- those rows, so the lookup costs the same however long a card's history.
CREATE INDEX topups_card_unresolved ON topups (card_uid, created_at)
	WHERE status IN ('in_progress', 'in_doubt');
