-- Target lists (issue 7): named lists of domains, addresses and CIDRs a
-- tenant keeps by hand or binds to an import source the operator
-- configured. Block rules and the alarm detectors name them.
-- `description`, `entries` (newline-separated) and `last_import` (JSON) are
-- tenant content, sealed under the tenant's data key (see
-- `rampart_store::cipher::SEALED`). `source` is `manual` or `url:<name>` of
-- an operator-configured source: the operator's identifier, clear so the
-- import job finds the lists bound to it. `entry_count` is a count.
CREATE TABLE target_lists (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    description BLOB NOT NULL,
    entries     BLOB NOT NULL,
    entry_count INTEGER NOT NULL,
    source      TEXT NOT NULL,
    -- 1 at creation, one more with every change of the entries or the
    -- description: the precondition of a write.
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    last_import BLOB,
    key_version INTEGER,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX target_lists_key_version ON target_lists(tenant_id, key_version);
