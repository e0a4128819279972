//! The one seam through which tenant content is encrypted at rest.
//!
//! The store seals every column that holds a tenant's content on write and
//! opens it on read, through a [`FieldCipher`] the portal installs
//! ([`crate::Store::set_field_cipher`]). The store never holds a key: the
//! cipher hands it a [`TenantSealer`] per call, an object that seals and
//! opens with the tenant's current data key and names the key version it
//! wrote with. Why here and not in the portal: some content is built or
//! merged inside a transaction (alarm evidence, history details), so only
//! the store sees the final plaintext; and one seam here serves every
//! backend (PostgreSQL reuses [`aad`] and [`SEALED`]).
//!
//! Associated data binds the tenant, the table, the row's identity (its
//! clear key columns) and the column, so a ciphertext moved to another
//! row, column or tenant does not open.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Result, Store, TenantId};

/// Seals and opens one tenant's content. Implemented by the portal from
/// the tenant's unwrapped data keys.
pub trait TenantSealer: Send + Sync {
    /// The data key version new writes use.
    fn version(&self) -> u32;
    /// Encrypts under the current version; the result names that version.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts a value written under any version not yet retired.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>>;
    /// A keyed, deterministic digest (hex) for columns looked up by
    /// equality, so the lookup works without the plaintext being stored.
    fn blind_index(&self, aad: &[u8], value: &[u8]) -> String;
}

/// Gives the store a tenant's sealer. `store` is the store asking, so an
/// implementation can read the tenant's wrapped keys on a cache miss without
/// holding a reference back to it.
#[async_trait]
pub trait FieldCipher: Send + Sync + 'static {
    async fn sealer(&self, store: &dyn Store, tenant: TenantId) -> Result<Arc<dyn TenantSealer>>;
}

/// Associated data of one sealed column: tenant, table, the row's clear
/// identity and the column, length-prefixed so no two tuples collide.
pub fn aad(tenant: TenantId, table: &str, row: &[&str], column: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"rampart/field/v1\0");
    out.extend_from_slice(tenant.0.as_bytes());
    for part in std::iter::once(table)
        .chain(row.iter().copied())
        .chain(std::iter::once(column))
    {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A table with sealed columns: `row` are the clear columns that identify
/// a row (bound into the associated data, in this order), `columns` the
/// sealed ones. Every such table has a `key_version` column holding the
/// oldest key version among the row's sealed values.
#[derive(Clone, Copy, Debug)]
pub struct SealedTable {
    pub table: &'static str,
    pub row: &'static [&'static str],
    pub columns: &'static [&'static str],
}

/// Every column of tenant content the store keeps, sealed. What stays clear
/// (ids, times, kinds, severities, states, statuses, counts) is listed with
/// the reasons in ARCHITECTURE.md › Crypto.
pub const SEALED: &[SealedTable] = &[
    SealedTable {
        table: "devices",
        row: &["id"],
        columns: &["hostname", "labels", "health"],
    },
    SealedTable {
        table: "enrollment_tokens",
        row: &["id"],
        columns: &["labels"],
    },
    SealedTable {
        table: "instructions",
        row: &["device_id", "seq"],
        columns: &["payload", "signed", "result"],
    },
    SealedTable {
        table: "device_events",
        row: &["device_id", "at", "kind"],
        columns: &["detail"],
    },
    SealedTable {
        table: "tenant_settings",
        row: &["key"],
        columns: &["value"],
    },
    SealedTable {
        table: "alarms",
        row: &["id"],
        columns: &[
            "title",
            "dedupe_sealed",
            "assignee",
            "src",
            "dst",
            "evidence",
            "flow_filter",
        ],
    },
    SealedTable {
        table: "alarm_history",
        row: &["alarm_id", "at", "action"],
        columns: &["detail"],
    },
    SealedTable {
        table: "alarm_rules",
        row: &["id"],
        columns: &["host", "network", "comment"],
    },
    SealedTable {
        table: "detector_state",
        row: &[],
        columns: &["state"],
    },
    SealedTable {
        table: "webhooks",
        row: &["id"],
        columns: &["url"],
    },
    SealedTable {
        table: "alarm_deliveries",
        row: &["id"],
        columns: &["body", "last_error"],
    },
    SealedTable {
        table: "billing",
        row: &[],
        columns: &["email", "card_brand", "card_last4"],
    },
    // A tenant's users (migration 0012); MSP operator users have no tenant
    // and stay clear (their rows have no key_version, so no pass sees them).
    SealedTable {
        table: "users",
        row: &["id"],
        columns: &["email", "password_hash"],
    },
    SealedTable {
        table: "config_docs",
        row: &["layer", "scope", "version"],
        columns: &["body", "comment"],
    },
    SealedTable {
        table: "device_configs",
        row: &["device_id"],
        columns: &["desired_body", "error"],
    },
    SealedTable {
        table: "device_config_history",
        row: &["device_id", "at", "event"],
        columns: &["detail"],
    },
    // A report's numbers (migration 0014): top talkers, ports, hostnames.
    SealedTable {
        table: "reports",
        row: &["id"],
        columns: &["body"],
    },
    // Target lists (migration 0017): the name is the list's identifier.
    SealedTable {
        table: "target_lists",
        row: &["name"],
        columns: &["description", "entries", "last_import"],
    },
    // WireGuard (migration 0016); private and preshared keys are wrapped by
    // the portal before they get here, in clear `*_wrapped` columns.
    SealedTable {
        table: "vpn_interfaces",
        row: &["device_id"],
        columns: &[
            "address",
            "endpoint",
            "dns",
            "client_allowed_ips",
            "public_key",
        ],
    },
    SealedTable {
        table: "vpn_peers",
        row: &["id"],
        columns: &["name", "address", "public_key"],
    },
];

/// Seals and opens the columns of one row of one table.
pub(crate) struct RowSeal<'a> {
    pub sealer: &'a dyn TenantSealer,
    pub tenant: TenantId,
    pub table: &'static str,
    pub row: Vec<String>,
}

impl RowSeal<'_> {
    fn aad(&self, column: &str) -> Vec<u8> {
        let row: Vec<&str> = self.row.iter().map(String::as_str).collect();
        aad(self.tenant, self.table, &row, column)
    }

    pub fn seal(&self, column: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.sealer.seal(&self.aad(column), plaintext)
    }

    pub fn seal_str(&self, column: &str, v: &str) -> Result<Vec<u8>> {
        self.seal(column, v.as_bytes())
    }

    pub fn seal_opt(&self, column: &str, v: Option<&str>) -> Result<Option<Vec<u8>>> {
        v.map(|v| self.seal_str(column, v)).transpose()
    }

    pub fn seal_json(&self, column: &str, v: &serde_json::Value) -> Result<Vec<u8>> {
        self.seal_str(column, &v.to_string())
    }

    pub fn open(&self, column: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.sealer.open(&self.aad(column), sealed)
    }

    pub fn open_str(&self, column: &str, sealed: &[u8]) -> Result<String> {
        String::from_utf8(self.open(column, sealed)?)
            .map_err(|e| crate::StoreError::Corrupt(format!("{}.{column}: {e}", self.table)))
    }

    pub fn open_opt(&self, column: &str, sealed: Option<Vec<u8>>) -> Result<Option<String>> {
        sealed.map(|s| self.open_str(column, &s)).transpose()
    }

    pub fn open_json(&self, column: &str, sealed: &[u8]) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.open(column, sealed)?)
            .map_err(|e| crate::StoreError::Corrupt(format!("{}.{column}: {e}", self.table)))
    }

    pub fn open_opt_json(
        &self,
        column: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<Option<serde_json::Value>> {
        sealed.map(|s| self.open_json(column, &s)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_differs_per_tenant_table_row_and_column() {
        let t = TenantId(uuid::Uuid::from_u128(1));
        let u = TenantId(uuid::Uuid::from_u128(2));
        let base = aad(t, "alarms", &["a"], "title");
        assert_ne!(base, aad(u, "alarms", &["a"], "title"));
        assert_ne!(base, aad(t, "webhooks", &["a"], "title"));
        assert_ne!(base, aad(t, "alarms", &["b"], "title"));
        assert_ne!(base, aad(t, "alarms", &["a"], "src"));
        // Length prefixes: moving a boundary changes the bytes.
        assert_ne!(
            aad(t, "x", &["ab", "c"], "d"),
            aad(t, "x", &["a", "bc"], "d")
        );
    }
}
