-- Scheduled reports (issue 7 §4): a tenant's daily and weekly summaries.
-- `body` is the report's numbers as JSON, sealed under the tenant's data
-- key (see `rampart_store::cipher::SEALED`); HTML and PDF are rendered from
-- it on demand. One report per tenant, kind and period start, so a period
-- is reported once however many replicas or restarts try. Period times and
-- bookkeeping are unix seconds.
CREATE TABLE reports (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('daily', 'weekly')),
    period_start INTEGER NOT NULL,
    period_end   INTEGER NOT NULL CHECK (period_end > period_start),
    created_at   INTEGER NOT NULL,
    emailed_at   INTEGER,
    body         BLOB NOT NULL,
    key_version  INTEGER,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, period_start)
);
CREATE INDEX reports_recent ON reports(tenant_id, period_start);
CREATE INDEX reports_key_version ON reports(tenant_id, key_version);
