-- Ledger schema v11: provisioning sessions and SUN tags belong to a
-- tenant (issue 16), as top-ups and top-up sessions do since v4. Rows
-- written before belong to 'default', the embedded single-key tenant.
ALTER TABLE provision_sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

-- GET /v1/provisioning/sessions lists one tenant's sessions, newest first.
CREATE INDEX provision_sessions_tenant_created ON provision_sessions (tenant, created_at, id);

-- A SUN tag's tenant: the tenant that provisioned (registered) it, or the
-- tenant of the template it was first verified through.
ALTER TABLE sun_tags ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
