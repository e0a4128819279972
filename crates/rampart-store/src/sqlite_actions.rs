//! Remote actions in the SQLite backend (migration 0015): the device key
//! rotation's compare-and-swap and a device's batches of one kind. The
//! `Store` impl in `sqlite.rs` calls these.

use crate::sqlite::{batch_from, SqliteStore};
use crate::*;

impl SqliteStore {
    pub(crate) async fn actions_replace_device_key(
        &self,
        tenant: TenantId,
        device: DeviceId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE devices SET public_key = ? WHERE tenant_id = ? AND id = ? AND public_key = ?",
        )
        .bind(new)
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(old)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn actions_device_batches(
        &self,
        tenant: TenantId,
        device: DeviceId,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<BatchRow>> {
        sqlx::query(
            "SELECT * FROM batches WHERE tenant_id = ? AND device_id = ? AND kind = ?
             ORDER BY received_at DESC, batch_id DESC LIMIT ?",
        )
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(kind)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(batch_from)
        .collect()
    }
}
