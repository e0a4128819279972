-- Config management (issue 7): versioned config documents per layer, device
-- groups, each device's desired and applied configuration with its history,
-- and staged rollouts. Bodies, comments and errors are tenant content and
-- sealed by the store (cipher.rs SEALED); names, versions, revisions, hashes,
-- states and times stay clear (they are looked up, ordered and compared).

CREATE TABLE config_docs (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    layer       TEXT NOT NULL,              -- tenant, group or device
    scope       TEXT NOT NULL,              -- '' (tenant), group name, device id
    version     INTEGER NOT NULL,
    body        BLOB NOT NULL,              -- sealed JSON document
    author      TEXT NOT NULL,              -- an actor, as in the audit log
    comment     BLOB NOT NULL,              -- sealed
    created_at  INTEGER NOT NULL,
    key_version INTEGER,
    PRIMARY KEY (tenant_id, layer, scope, version)
);

CREATE TABLE config_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- One group per device, so the merge order tenant < group < device is total.
CREATE TABLE device_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    device_id   TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, group_name) REFERENCES config_groups(tenant_id, name)
);

-- Per tenant, the next effective-configuration revision.
CREATE TABLE config_revisions (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    next        INTEGER NOT NULL
);

CREATE TABLE device_configs (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    device_id        TEXT NOT NULL,
    desired_revision INTEGER NOT NULL,
    desired_hash     TEXT NOT NULL,
    desired_body     BLOB NOT NULL,         -- sealed EffectiveConfig JSON
    desired_seq      INTEGER,               -- the apply_config instruction
    desired_at       INTEGER NOT NULL,
    applied_revision INTEGER,
    applied_hash     TEXT,
    applied_at       INTEGER,
    status           TEXT NOT NULL,         -- pending, applied, failed
    error            BLOB,                  -- sealed
    key_version      INTEGER,
    PRIMARY KEY (tenant_id, device_id)
);

CREATE TABLE device_config_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    device_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    event       TEXT NOT NULL,              -- queued, applied, failed, rolled_back, superseded, reissued
    detail      BLOB NOT NULL,              -- sealed JSON
    key_version INTEGER
);
CREATE INDEX device_config_history_device ON device_config_history(tenant_id, device_id, id);

CREATE TABLE config_rollouts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    group_name   TEXT NOT NULL,
    from_version INTEGER NOT NULL,          -- the group document before
    to_version   INTEGER NOT NULL,          -- the one being rolled out
    canary_percent INTEGER NOT NULL,
    bake_secs    INTEGER NOT NULL,
    canaries     TEXT NOT NULL,             -- JSON array of device ids
    state        TEXT NOT NULL,             -- canary, paused, done, failed, aborted
    reason       TEXT,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX config_rollouts_group ON config_rollouts(tenant_id, group_name, created_at);

-- An instruction can now be 'superseded': an apply_config that a newer one
-- for the same device replaced before delivery, so a device that was
-- offline gets only the newest. SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt with the same columns and index.
CREATE TABLE instructions_new (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    signed      TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'ok', 'failed', 'refused', 'superseded')),
    result      TEXT,
    delivered_at INTEGER,
    acked_at    INTEGER,
    key_version INTEGER,
    PRIMARY KEY (tenant_id, device_id, seq)
);
INSERT INTO instructions_new (tenant_id, device_id, seq, kind, payload, signed, issued_at,
    expires_at, status, result, delivered_at, acked_at, key_version)
SELECT tenant_id, device_id, seq, kind, payload, signed, issued_at, expires_at, status, result,
    delivered_at, acked_at, key_version FROM instructions;
DROP TABLE instructions;
ALTER TABLE instructions_new RENAME TO instructions;
CREATE INDEX instructions_key_version ON instructions(tenant_id, key_version);
