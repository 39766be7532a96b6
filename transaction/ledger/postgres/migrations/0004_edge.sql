-- Ledger schema v4: tenants.
--
-- Every top-up and session belongs to a tenant (an operator backend);
-- rows written before tenants existed belong to 'default', the tenant of
-- the embedded single-key setup. Idempotency keys stay in the one UNIQUE
-- column: the ledger stores another tenant's key as tenant || x'1F' || key
-- (a byte no client key may contain), so a key is unique per tenant and the
-- default tenant's keys are unchanged.
ALTER TABLE topups ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

-- GET /v1/topups lists one tenant's top-ups, oldest change first.
CREATE INDEX topups_tenant_updated ON topups (tenant, updated_at, id);
