-- The audit log (issue 6 §5): one append-only, hash-chained log for the
-- whole portal. `seq` is assigned by the store from the anchor (the newest
-- seq and hash, kept in portal_meta under 'audit_anchor' and updated in the
-- same transaction), never by SQLite, so a removed newest row is not reused.
-- The hash layout is documented in rampart-store/src/audit.rs.
--
-- tenant_id has no foreign key on purpose: a tenant's audit entries outlive
-- the tenant (its deletion is itself an audit record), and a row must never
-- be removed to let a tenant go. NULL means operator or portal-wide.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    tenant_id TEXT,
    -- Unix seconds.
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    -- JSON text, hashed exactly as stored.
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);

-- Append-only for every code path: the chain makes edits detectable, these
-- make them impossible by mistake. (Someone with the database file can drop
-- them; `rampart audit verify` is what catches that.)
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
