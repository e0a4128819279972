-- Small per-tenant settings documents (e.g. the edge data controls), one
-- JSON value per key.
CREATE TABLE tenant_settings (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
