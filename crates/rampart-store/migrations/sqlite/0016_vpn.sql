-- WireGuard interfaces of devices and their peers (issue 7, config item 5).
-- Sealed under the tenant's data key (see `rampart_store::cipher::SEALED`):
-- addresses, endpoint, DNS, client routes, public keys and peer names.
-- Private and preshared keys arrive already wrapped by the portal under the
-- tenant's secrets key (`*_wrapped`), so the store never sees them in clear.
-- Clear: ids, the listen port, times, and a peer's `slot` (its host number
-- in the interface's network), so two live peers can never share an
-- address; `name_index` is the name's blind index, for uniqueness.
CREATE TABLE vpn_interfaces (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    device_id           TEXT NOT NULL REFERENCES devices(id),
    address             BLOB NOT NULL,
    listen_port         INTEGER NOT NULL,
    endpoint            BLOB NOT NULL,
    dns                 BLOB NOT NULL,         -- JSON array of addresses
    client_allowed_ips  BLOB NOT NULL,         -- JSON array of networks
    public_key          BLOB NOT NULL,
    private_key_wrapped BLOB NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    key_version         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
);
CREATE INDEX vpn_interfaces_key_version ON vpn_interfaces(tenant_id, key_version);

CREATE TABLE vpn_peers (
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    id                    TEXT NOT NULL,
    device_id             TEXT NOT NULL,
    name                  BLOB NOT NULL,
    name_index            TEXT NOT NULL,
    slot                  INTEGER NOT NULL,
    address               BLOB NOT NULL,
    public_key            BLOB NOT NULL,
    private_key_wrapped   BLOB,                -- NULL once revoked
    preshared_key_wrapped BLOB,                -- NULL when none or revoked
    created_at            INTEGER NOT NULL,
    revoked_at            INTEGER,
    key_version           INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES vpn_interfaces(tenant_id, device_id)
);
CREATE UNIQUE INDEX vpn_peers_live_name ON vpn_peers(tenant_id, device_id, name_index)
    WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX vpn_peers_live_slot ON vpn_peers(tenant_id, device_id, slot)
    WHERE revoked_at IS NULL;
CREATE INDEX vpn_peers_device ON vpn_peers(tenant_id, device_id, created_at);
CREATE INDEX vpn_peers_key_version ON vpn_peers(tenant_id, key_version);
