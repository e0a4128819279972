-- Alarms (issue 5): the alarms themselves, their history (which doubles as
-- the notifier's event log), mute/allow rules, detector state, webhooks and
-- their deliveries. Alarm times are unix milliseconds (they come from flow
-- and event timestamps); bookkeeping times stay unix seconds.

-- NULL until the detectors have seen the batch. Kept apart from
-- processed_at: detection and flow storage consume the same batches
-- independently, so neither waits for the other.
ALTER TABLE batches ADD COLUMN detected_at INTEGER;
CREATE INDEX batches_undetected ON batches(kind, received_at) WHERE detected_at IS NULL;

CREATE TABLE alarms (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    device_id   TEXT,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    title       TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'acknowledged', 'resolved', 'archived')),
    assignee    TEXT,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    src         TEXT,
    dst         TEXT,
    dst_port    INTEGER,
    protocol    INTEGER,
    -- JSON array: the most recent pieces of evidence, bounded by the portal.
    evidence    TEXT NOT NULL,
    flow_filter TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX alarms_dedupe ON alarms(tenant_id, dedupe_key, last_seen);
CREATE INDEX alarms_recent ON alarms(tenant_id, last_seen);

-- Append-only: every change of an alarm, in order. `id` is global so the
-- notifier can follow one cursor across tenants.
CREATE TABLE alarm_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    alarm_id   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX alarm_history_alarm ON alarm_history(tenant_id, alarm_id, id);

CREATE TABLE alarm_rules (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    id         TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('mute', 'allow')),
    kind       TEXT,
    host       TEXT,
    network    TEXT,
    port       INTEGER,
    expires_at INTEGER,
    comment    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- The flow detectors' baselines and windows, one opaque document per tenant,
-- written in the same transaction as the alarms they produced.
CREATE TABLE detector_state (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id),
    state      BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE webhooks (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    id             TEXT NOT NULL,
    url            TEXT NOT NULL,
    -- The signing secret, wrapped under the tenant's KEK.
    secret_wrapped BLOB NOT NULL,
    min_severity   TEXT NOT NULL,
    kinds          TEXT NOT NULL,              -- JSON array; empty = all
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One notification of one alarm event (or one digest) to one target: a
-- webhook, or the tenant's email recipients.
CREATE TABLE alarm_deliveries (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
    -- The webhook id; for email, the id of the tenant's email route.
    target_id   TEXT NOT NULL,
    alarm_id    TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts    INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (target_id, event_id)
);
CREATE INDEX alarm_deliveries_due ON alarm_deliveries(next_at) WHERE status = 'pending';
