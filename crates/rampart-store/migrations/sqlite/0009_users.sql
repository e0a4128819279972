-- Users and access (issue 6 §4): local accounts, sessions, MSP grants, and
-- who created each API token. Secrets are stored only as hashes (SHA-256
-- for high-entropy tokens, argon2id PHC strings for passwords) or wrapped
-- (the TOTP secret, under the tenant's key or, for MSP users, the master key).

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    -- NULL: a portal-level MSP operator user, who acts on a tenant only
    -- through that tenant's grant.
    tenant_id           TEXT REFERENCES tenants(id),
    email               TEXT NOT NULL,              -- lowercase
    -- owner, admin, analyst or read_only; NULL for MSP users.
    role                TEXT,
    password_hash       TEXT,                       -- NULL until set up
    setup_token_hash    TEXT UNIQUE,
    setup_expires_at    INTEGER,
    totp_secret_wrapped BLOB,
    totp_enabled        INTEGER NOT NULL DEFAULT 0,
    totp_last_step      INTEGER NOT NULL DEFAULT 0,
    failed_logins       INTEGER NOT NULL DEFAULT 0,
    locked_until        INTEGER,
    created_at          INTEGER NOT NULL,
    offboarded_at       INTEGER
);
-- One live account per email and tenant (and per email among MSP users);
-- an offboarded account keeps its row for the audit trail.
CREATE UNIQUE INDEX users_tenant_email ON users(tenant_id, email)
    WHERE tenant_id IS NOT NULL AND offboarded_at IS NULL;
CREATE UNIQUE INDEX users_portal_email ON users(email)
    WHERE tenant_id IS NULL AND offboarded_at IS NULL;

CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,                        -- SHA-256 hex
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,                    -- SHA-256 hex of the cookie value
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),-- the domain it was issued on
    user_id    TEXT NOT NULL REFERENCES users(id),
    csrf_hash  TEXT NOT NULL,                       -- SHA-256 hex of the CSRF token
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,                    -- absolute expiry
    revoked_at INTEGER
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE msp_grants (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    user_id    TEXT NOT NULL REFERENCES users(id),  -- an MSP user (tenant_id NULL)
    role       TEXT NOT NULL,
    created_by TEXT NOT NULL,                       -- the actor, as in the audit log
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX msp_grants_tenant_user ON msp_grants(tenant_id, user_id);

-- The user who minted a token (NULL: the CLI or an older token), so that
-- offboarding the user revokes it.
ALTER TABLE api_tokens ADD COLUMN created_by TEXT REFERENCES users(id);
CREATE INDEX api_tokens_created_by ON api_tokens(created_by);
CREATE INDEX api_tokens_tenant ON api_tokens(tenant_id);
