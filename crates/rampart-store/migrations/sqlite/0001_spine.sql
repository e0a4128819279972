-- Spine: tenants, their keys, tokens, devices, instructions, batches.
-- Times are unix seconds (INTEGER) so the same schema maps to PostgreSQL.

CREATE TABLE portal_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    domain      TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  INTEGER NOT NULL,
    -- Operator-provided certificate files; NULL means the local CA issues one.
    cert_file   TEXT,
    key_file    TEXT
);

-- Private keys are stored only wrapped: KEK under the master key, the rest under the KEK.
CREATE TABLE tenant_keys (
    tenant_id         TEXT PRIMARY KEY REFERENCES tenants(id),
    kek_wrapped       BLOB NOT NULL,
    signing_sk_wrapped BLOB NOT NULL,
    signing_pk        BLOB NOT NULL,
    upload_sk_wrapped BLOB NOT NULL,
    upload_pk         BLOB NOT NULL,
    tls_cert_pem      TEXT NOT NULL,
    tls_key_wrapped   BLOB NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants(id),   -- NULL: operator token for the admin API
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,          -- SHA-256 hex of the secret
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE TABLE enrollment_tokens (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    secret_hash    TEXT NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_uses       INTEGER NOT NULL,
    uses           INTEGER NOT NULL DEFAULT 0,
    labels         TEXT NOT NULL,              -- JSON array of strings
    needs_approval INTEGER NOT NULL,
    revoked_at     INTEGER
);
CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens(tenant_id);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    public_key      BLOB NOT NULL,
    hostname        TEXT NOT NULL,
    labels          TEXT NOT NULL,             -- JSON array of strings
    status          TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    enrolled_at     INTEGER NOT NULL,
    enrollment_token_id TEXT,
    last_seen       INTEGER,
    next_seq        INTEGER NOT NULL DEFAULT 0,
    health          TEXT                       -- JSON of the last heartbeat
);
CREATE INDEX devices_tenant ON devices(tenant_id);

CREATE TABLE instructions (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,                 -- JSON
    signed      TEXT NOT NULL,                 -- JSON of the SignedInstruction
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'ok', 'failed', 'refused')),
    result      TEXT,
    delivered_at INTEGER,
    acked_at    INTEGER,
    PRIMARY KEY (tenant_id, device_id, seq)
);

CREATE TABLE device_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    device_id  TEXT NOT NULL REFERENCES devices(id),
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL                   -- JSON
);
CREATE INDEX device_events_device ON device_events(tenant_id, device_id);

CREATE TABLE batches (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    batch_id    TEXT NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    items       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    blob_key    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id, batch_id)
);
CREATE INDEX batches_device ON batches(tenant_id, device_id, received_at);
