-- Plans and the tenant lifecycle (issue 6 §2, §3).
--
-- A plan names what a tenant may keep and use: days of data visible and
-- stored, how many devices, which features. A tenant is on one plan and may
-- override any of its values. The 'standard' plan is the default of every
-- tenant without a row here; it can be changed but not deleted.
CREATE TABLE plans (
    name         TEXT PRIMARY KEY,
    visible_days INTEGER NOT NULL,
    stored_days  INTEGER NOT NULL,
    -- NULL: no limit.
    max_devices  INTEGER,
    -- JSON array of feature names.
    features     TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);
INSERT INTO plans (name, visible_days, stored_days, max_devices, features, updated_at)
VALUES ('standard', 30, 32, NULL, '["flows","alarms","checks","config","vpn"]', 0);

-- NULL columns take the plan's value.
CREATE TABLE tenant_plans (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants(id),
    plan         TEXT NOT NULL REFERENCES plans(name),
    visible_days INTEGER,
    stored_days  INTEGER,
    max_devices  INTEGER,
    features     TEXT,
    updated_at   INTEGER NOT NULL
);
-- The per-tenant flow windows set before plans existed become overrides.
INSERT INTO tenant_plans (tenant_id, plan, visible_days, stored_days, updated_at)
SELECT tenant_id, 'standard', visible_days, stored_days, 0 FROM flow_retention;
DROP TABLE flow_retention;

-- Cancellation: access stops at `cancelled_at`; at `delete_after` the
-- lifecycle job destroys the tenant's keys and data and sets `deleted_at`,
-- keeping the row (renamed, so its name and domain can be reused) because
-- the audit log names it.
ALTER TABLE tenants ADD COLUMN cancelled_at INTEGER;
ALTER TABLE tenants ADD COLUMN delete_after INTEGER;
ALTER TABLE tenants ADD COLUMN deleted_at INTEGER;
CREATE INDEX tenants_delete_after ON tenants(delete_after) WHERE deleted_at IS NULL;

-- Set when the spool cleaner deleted the batch's sealed frame (its work was
-- done and the frame older than the spool window). The row stays: it is the
-- record of an acknowledged batch and dedupes an agent's retries.
ALTER TABLE batches ADD COLUMN spool_deleted_at INTEGER;
CREATE INDEX batches_spool ON batches(received_at) WHERE spool_deleted_at IS NULL;
