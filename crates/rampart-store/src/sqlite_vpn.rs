//! The VPN tables of the SQLite backend (migration 0016). Kept apart from
//! `sqlite.rs` for size; the `Store` impl there calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{
    is_unique_violation, row_seal, sealed_col, sealed_json_col, uuid_col, SqliteStore,
};
use crate::*;

/// The peer name's blind index: per device, so a name is unique among a
/// device's live peers and equal names of two devices look unrelated.
fn name_index(sealer: &dyn TenantSealer, tenant: TenantId, device: DeviceId, name: &str) -> String {
    sealer.blind_index(
        &crate::cipher::aad(tenant, "vpn_peers", &[&device.0.to_string()], "name"),
        name.as_bytes(),
    )
}

fn strings(v: serde_json::Value, col: &str) -> Result<Vec<String>> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("vpn_interfaces.{col}: {e}")))
}

fn interface_from(
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    row: &SqliteRow,
) -> Result<VpnInterfaceRow> {
    let seal = row_seal(sealer, tenant, "vpn_interfaces", row, &["device_id"])?;
    let port: i64 = row.try_get("listen_port")?;
    Ok(VpnInterfaceRow {
        device_id: DeviceId(uuid_col(row, "device_id")?),
        address: sealed_col(&seal, row, "address")?,
        listen_port: u16::try_from(port)
            .map_err(|_| StoreError::Corrupt(format!("vpn_interfaces.listen_port {port}")))?,
        endpoint: sealed_col(&seal, row, "endpoint")?,
        dns: strings(sealed_json_col(&seal, row, "dns")?, "dns")?,
        client_allowed_ips: strings(
            sealed_json_col(&seal, row, "client_allowed_ips")?,
            "client_allowed_ips",
        )?,
        public_key: sealed_col(&seal, row, "public_key")?,
        private_key_wrapped: row.try_get("private_key_wrapped")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn peer_from(sealer: &dyn TenantSealer, tenant: TenantId, row: &SqliteRow) -> Result<VpnPeerRow> {
    let seal = row_seal(sealer, tenant, "vpn_peers", row, &["id"])?;
    let slot: i64 = row.try_get("slot")?;
    Ok(VpnPeerRow {
        id: uuid_col(row, "id")?,
        device_id: DeviceId(uuid_col(row, "device_id")?),
        name: sealed_col(&seal, row, "name")?,
        slot: u32::try_from(slot)
            .map_err(|_| StoreError::Corrupt(format!("vpn_peers.slot {slot}")))?,
        address: sealed_col(&seal, row, "address")?,
        public_key: sealed_col(&seal, row, "public_key")?,
        private_key_wrapped: row.try_get("private_key_wrapped")?,
        preshared_key_wrapped: row.try_get("preshared_key_wrapped")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn json(v: &[String]) -> serde_json::Value {
    serde_json::Value::from(v.to_vec())
}

impl SqliteStore {
    pub(crate) async fn vpn_put_interface(
        &self,
        tenant: TenantId,
        r: &VpnInterfaceRow,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "vpn_interfaces",
            row: vec![r.device_id.0.to_string()],
        };
        sqlx::query(
            "INSERT INTO vpn_interfaces (tenant_id, device_id, address, listen_port, endpoint, dns,
             client_allowed_ips, public_key, private_key_wrapped, created_at, updated_at, key_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, device_id) DO UPDATE SET address = excluded.address,
             listen_port = excluded.listen_port, endpoint = excluded.endpoint, dns = excluded.dns,
             client_allowed_ips = excluded.client_allowed_ips, public_key = excluded.public_key,
             private_key_wrapped = excluded.private_key_wrapped, updated_at = excluded.updated_at,
             key_version = excluded.key_version",
        )
        .bind(tenant.0.to_string())
        .bind(r.device_id.0.to_string())
        .bind(seal.seal_str("address", &r.address)?)
        .bind(i64::from(r.listen_port))
        .bind(seal.seal_str("endpoint", &r.endpoint)?)
        .bind(seal.seal_json("dns", &json(&r.dns))?)
        .bind(seal.seal_json("client_allowed_ips", &json(&r.client_allowed_ips))?)
        .bind(seal.seal_str("public_key", &r.public_key)?)
        .bind(&r.private_key_wrapped)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(sealer.version())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn vpn_get_interface(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Option<VpnInterfaceRow>> {
        let Some(row) =
            sqlx::query("SELECT * FROM vpn_interfaces WHERE tenant_id = ? AND device_id = ?")
                .bind(tenant.0.to_string())
                .bind(device.0.to_string())
                .fetch_optional(self.pool())
                .await?
        else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        interface_from(sealer.as_ref(), tenant, &row).map(Some)
    }

    pub(crate) async fn vpn_create_peer(&self, tenant: TenantId, p: &VpnPeerRow) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "vpn_peers",
            row: vec![p.id.to_string()],
        };
        let r = sqlx::query(
            "INSERT INTO vpn_peers (tenant_id, id, device_id, name, name_index, slot, address,
             public_key, private_key_wrapped, preshared_key_wrapped, created_at, revoked_at,
             key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(p.id.to_string())
        .bind(p.device_id.0.to_string())
        .bind(seal.seal_str("name", &p.name)?)
        .bind(name_index(sealer.as_ref(), tenant, p.device_id, &p.name))
        .bind(i64::from(p.slot))
        .bind(seal.seal_str("address", &p.address)?)
        .bind(seal.seal_str("public_key", &p.public_key)?)
        .bind(&p.private_key_wrapped)
        .bind(&p.preshared_key_wrapped)
        .bind(p.created_at)
        .bind(p.revoked_at)
        .bind(sealer.version())
        .execute(self.pool())
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) && e.to_string().contains("name_index") => Err(
                StoreError::Conflict(format!("a live vpn peer named {}", p.name)),
            ),
            // Another peer took the slot meanwhile: the caller picks another.
            Err(e) if is_unique_violation(&e) => Err(StoreError::Raced(format!(
                "vpn peer address slot {}",
                p.slot
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn vpn_list_peers(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<VpnPeerRow>> {
        let rows = sqlx::query(
            "SELECT * FROM vpn_peers WHERE tenant_id = ? AND device_id = ? ORDER BY created_at, rowid",
        )
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self.sealer(tenant).await?;
        rows.iter()
            .map(|r| peer_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn vpn_get_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
    ) -> Result<Option<VpnPeerRow>> {
        let Some(row) =
            sqlx::query("SELECT * FROM vpn_peers WHERE tenant_id = ? AND device_id = ? AND id = ?")
                .bind(tenant.0.to_string())
                .bind(device.0.to_string())
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?
        else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        peer_from(sealer.as_ref(), tenant, &row).map(Some)
    }

    pub(crate) async fn vpn_revoke_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE vpn_peers SET revoked_at = ?, private_key_wrapped = NULL,
             preshared_key_wrapped = NULL
             WHERE tenant_id = ? AND device_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
