//! Config management in the SQLite backend (migration 0013). The `Store`
//! impl in `sqlite.rs` calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{row_seal, sealed_json_col, uuid_col, SqliteStore};
use crate::*;

const DOC_COLS: &str = "layer, scope, version, body, author, comment, created_at";
const DEVICE_COLS: &str = "device_id, desired_revision, desired_hash, desired_body, desired_seq, \
     desired_at, applied_revision, applied_hash, applied_at, status, error";
const ROLLOUT_COLS: &str = "id, group_name, from_version, to_version, canary_percent, bake_secs, \
     canaries, state, reason, created_by, created_at, updated_at";

fn u64_col(row: &SqliteRow, col: &str) -> Result<u64> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v}")))
}

fn opt_u64_col(row: &SqliteRow, col: &str) -> Result<Option<u64>> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v}"))))
        .transpose()
}

fn doc_from(sealer: &dyn TenantSealer, tenant: TenantId, row: &SqliteRow) -> Result<ConfigDocRow> {
    let seal = row_seal(
        sealer,
        tenant,
        "config_docs",
        row,
        &["layer", "scope", "version"],
    )?;
    let comment: Vec<u8> = row.try_get("comment")?;
    Ok(ConfigDocRow {
        layer: row.try_get("layer")?,
        scope: row.try_get("scope")?,
        version: u64_col(row, "version")?,
        body: sealed_json_col(&seal, row, "body")?,
        author: row.try_get("author")?,
        comment: seal.open_str("comment", &comment)?,
        created_at: row.try_get("created_at")?,
    })
}

fn device_seal(sealer: &dyn TenantSealer, tenant: TenantId, device: DeviceId) -> RowSeal<'_> {
    RowSeal {
        sealer,
        tenant,
        table: "device_configs",
        row: vec![device.0.to_string()],
    }
}

fn device_config_from(
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    row: &SqliteRow,
) -> Result<DeviceConfigRow> {
    let device = DeviceId(uuid_col(row, "device_id")?);
    let seal = device_seal(sealer, tenant, device);
    let error: Option<Vec<u8>> = row.try_get("error")?;
    Ok(DeviceConfigRow {
        device_id: device,
        desired_revision: u64_col(row, "desired_revision")?,
        desired_hash: row.try_get("desired_hash")?,
        desired_body: sealed_json_col(&seal, row, "desired_body")?,
        desired_seq: opt_u64_col(row, "desired_seq")?,
        desired_at: row.try_get("desired_at")?,
        applied_revision: opt_u64_col(row, "applied_revision")?,
        applied_hash: row.try_get("applied_hash")?,
        applied_at: row.try_get("applied_at")?,
        status: row.try_get("status")?,
        error: seal.open_opt("error", error)?,
    })
}

fn rollout_from(row: &SqliteRow) -> Result<RolloutRow> {
    let canaries: String = row.try_get("canaries")?;
    let canaries: Vec<uuid::Uuid> = serde_json::from_str(&canaries)
        .map_err(|e| StoreError::Corrupt(format!("canaries: {e}")))?;
    let pct: i64 = row.try_get("canary_percent")?;
    let bake: i64 = row.try_get("bake_secs")?;
    Ok(RolloutRow {
        id: uuid_col(row, "id")?,
        group: row.try_get("group_name")?,
        from_version: u64_col(row, "from_version")?,
        to_version: u64_col(row, "to_version")?,
        canary_percent: u32::try_from(pct)
            .map_err(|_| StoreError::Corrupt("canary_percent".into()))?,
        bake_secs: u32::try_from(bake).map_err(|_| StoreError::Corrupt("bake_secs".into()))?,
        canaries: canaries.into_iter().map(DeviceId).collect(),
        state: row.try_get("state")?,
        reason: row.try_get("reason")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqliteStore {
    /// Opens document rows; no sealer is asked for when there are none.
    async fn docs_from(&self, tenant: TenantId, rows: &[SqliteRow]) -> Result<Vec<ConfigDocRow>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self.sealer(tenant).await?;
        rows.iter()
            .map(|r| doc_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn cfg_doc_versions(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        limit: u32,
    ) -> Result<Vec<ConfigDocRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM config_docs WHERE tenant_id = ? AND layer = ? AND scope = ? \
             ORDER BY version DESC LIMIT ?"
        ))
        .bind(tenant.0.to_string())
        .bind(layer)
        .bind(scope)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        self.docs_from(tenant, &rows).await
    }

    pub(crate) async fn cfg_doc(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        version: Option<u64>,
    ) -> Result<Option<ConfigDocRow>> {
        // No version: the newest.
        let row = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM config_docs WHERE tenant_id = ? AND layer = ? AND scope = ? \
             AND (? IS NULL OR version = ?) ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant.0.to_string())
        .bind(layer)
        .bind(scope)
        .bind(version.map(|v| v as i64))
        .bind(version.map(|v| v as i64))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealer = self.sealer(tenant).await?;
        doc_from(sealer.as_ref(), tenant, &row).map(Some)
    }

    pub(crate) async fn cfg_latest_docs(&self, tenant: TenantId) -> Result<Vec<ConfigDocRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM config_docs d WHERE tenant_id = ? AND version = \
             (SELECT MAX(version) FROM config_docs m WHERE m.tenant_id = d.tenant_id \
              AND m.layer = d.layer AND m.scope = d.scope) ORDER BY layer, scope"
        ))
        .bind(tenant.0.to_string())
        .fetch_all(self.pool())
        .await?;
        self.docs_from(tenant, &rows).await
    }

    pub(crate) async fn cfg_save_doc(
        &self,
        tenant: TenantId,
        row: &ConfigDocRow,
        expected: u64,
    ) -> Result<bool> {
        if row.version != expected + 1 {
            return Err(StoreError::Raced(format!(
                "config document version {expected}"
            )));
        }
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "config_docs",
            row: vec![
                row.layer.clone(),
                row.scope.clone(),
                row.version.to_string(),
            ],
        };
        let body = seal.seal_json("body", &row.body)?;
        let comment = seal.seal_str("comment", &row.comment)?;
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM config_docs WHERE tenant_id = ? AND layer = ? AND scope = ?",
        )
        .bind(tenant.0.to_string())
        .bind(&row.layer)
        .bind(&row.scope)
        .fetch_one(&mut *tx)
        .await?;
        if newest.unwrap_or(0) as u64 != expected {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO config_docs (tenant_id, layer, scope, version, body, author, comment, \
             created_at, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(&row.layer)
        .bind(&row.scope)
        .bind(row.version as i64)
        .bind(body)
        .bind(&row.author)
        .bind(comment)
        .bind(row.created_at)
        .bind(sealer.version())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn cfg_create_group(
        &self,
        tenant: TenantId,
        name: &str,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO config_groups (tenant_id, name, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.0.to_string())
        .bind(name)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub(crate) async fn cfg_delete_group(&self, tenant: TenantId, name: &str) -> Result<bool> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let members: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_groups WHERE tenant_id = ? AND group_name = ?",
        )
        .bind(tenant.0.to_string())
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if members > 0 {
            // The portal checked before calling: a device joined meanwhile.
            return Err(StoreError::Raced(format!("group {name}")));
        }
        for sql in [
            "DELETE FROM config_docs WHERE tenant_id = ? AND layer = 'group' AND scope = ?",
            "DELETE FROM config_rollouts WHERE tenant_id = ? AND group_name = ?",
        ] {
            sqlx::query(sql)
                .bind(tenant.0.to_string())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let r = sqlx::query("DELETE FROM config_groups WHERE tenant_id = ? AND name = ?")
            .bind(tenant.0.to_string())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub(crate) async fn cfg_groups(&self, tenant: TenantId) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM config_groups WHERE tenant_id = ? ORDER BY name")
                .bind(tenant.0.to_string())
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub(crate) async fn cfg_set_device_group(
        &self,
        tenant: TenantId,
        device: DeviceId,
        group: Option<&str>,
    ) -> Result<()> {
        match group {
            Some(g) => {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM config_groups WHERE tenant_id = ? AND name = ?",
                )
                .bind(tenant.0.to_string())
                .bind(g)
                .fetch_optional(self.pool())
                .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("group {g}")));
                }
                sqlx::query(
                    "INSERT INTO device_groups (tenant_id, device_id, group_name) VALUES (?, ?, ?) \
                     ON CONFLICT (tenant_id, device_id) DO UPDATE SET group_name = excluded.group_name",
                )
                .bind(tenant.0.to_string())
                .bind(device.0.to_string())
                .bind(g)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM device_groups WHERE tenant_id = ? AND device_id = ?")
                    .bind(tenant.0.to_string())
                    .bind(device.0.to_string())
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn cfg_device_groups(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(DeviceId, String)>> {
        let rows = sqlx::query(
            "SELECT device_id, group_name FROM device_groups WHERE tenant_id = ? ORDER BY device_id",
        )
        .bind(tenant.0.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    DeviceId(uuid_col(r, "device_id")?),
                    r.try_get("group_name")?,
                ))
            })
            .collect()
    }

    pub(crate) async fn cfg_allocate_revisions(&self, tenant: TenantId, n: u64) -> Result<u64> {
        let first: i64 = sqlx::query_scalar(
            "INSERT INTO config_revisions (tenant_id, next) VALUES (?, 1 + ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET next = next + ? RETURNING next - ?",
        )
        .bind(tenant.0.to_string())
        .bind(n as i64)
        .bind(n as i64)
        .bind(n as i64)
        .fetch_one(self.pool())
        .await?;
        Ok(first as u64)
    }

    pub(crate) async fn cfg_device_configs(
        &self,
        tenant: TenantId,
        device: Option<DeviceId>,
        status: Option<&str>,
    ) -> Result<Vec<DeviceConfigRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM device_configs WHERE tenant_id = ? \
             AND (? IS NULL OR device_id = ?) AND (? IS NULL OR status = ?) ORDER BY device_id"
        ))
        .bind(tenant.0.to_string())
        .bind(device.map(|d| d.0.to_string()))
        .bind(device.map(|d| d.0.to_string()))
        .bind(status)
        .bind(status)
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self.sealer(tenant).await?;
        rows.iter()
            .map(|r| device_config_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn cfg_put_device_configs(
        &self,
        tenant: TenantId,
        rows: &[(DeviceConfigRow, ConfigEvent)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sealer = self.sealer(tenant).await?;
        let t = tenant.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for (row, ev) in rows {
            let seal = device_seal(sealer.as_ref(), tenant, row.device_id);
            sqlx::query(
                "INSERT INTO device_configs (tenant_id, device_id, desired_revision, desired_hash, \
                 desired_body, desired_seq, desired_at, applied_revision, applied_hash, applied_at, \
                 status, error, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, device_id) DO UPDATE SET \
                 desired_revision = excluded.desired_revision, desired_hash = excluded.desired_hash, \
                 desired_body = excluded.desired_body, desired_seq = excluded.desired_seq, \
                 desired_at = excluded.desired_at, applied_revision = excluded.applied_revision, \
                 applied_hash = excluded.applied_hash, applied_at = excluded.applied_at, \
                 status = excluded.status, error = excluded.error, key_version = excluded.key_version",
            )
            .bind(&t)
            .bind(row.device_id.0.to_string())
            .bind(row.desired_revision as i64)
            .bind(&row.desired_hash)
            .bind(seal.seal_json("desired_body", &row.desired_body)?)
            .bind(row.desired_seq.map(|s| s as i64))
            .bind(row.desired_at)
            .bind(row.applied_revision.map(|s| s as i64))
            .bind(&row.applied_hash)
            .bind(row.applied_at)
            .bind(&row.status)
            .bind(seal.seal_opt("error", row.error.as_deref())?)
            .bind(sealer.version())
            .execute(&mut *tx)
            .await?;
            let hseal = RowSeal {
                sealer: sealer.as_ref(),
                tenant,
                table: "device_config_history",
                row: vec![
                    row.device_id.0.to_string(),
                    ev.at.to_string(),
                    ev.event.clone(),
                ],
            };
            sqlx::query(
                "INSERT INTO device_config_history (tenant_id, device_id, at, revision, event, \
                 detail, key_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&t)
            .bind(row.device_id.0.to_string())
            .bind(ev.at)
            .bind(ev.revision as i64)
            .bind(&ev.event)
            .bind(hseal.seal_json("detail", &ev.detail)?)
            .bind(sealer.version())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn cfg_history(
        &self,
        tenant: TenantId,
        device: DeviceId,
        limit: u32,
    ) -> Result<Vec<ConfigEvent>> {
        let rows = sqlx::query(
            "SELECT device_id, at, revision, event, detail FROM device_config_history \
             WHERE tenant_id = ? AND device_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self.sealer(tenant).await?;
        rows.iter()
            .map(|r| {
                let seal = row_seal(
                    sealer.as_ref(),
                    tenant,
                    "device_config_history",
                    r,
                    &["device_id", "at", "event"],
                )?;
                Ok(ConfigEvent {
                    at: r.try_get("at")?,
                    revision: u64_col(r, "revision")?,
                    event: r.try_get("event")?,
                    detail: sealed_json_col(&seal, r, "detail")?,
                })
            })
            .collect()
    }

    pub(crate) async fn cfg_supersede(
        &self,
        tenant: TenantId,
        kind: &str,
        newest: &[(DeviceId, u64)],
    ) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(newest.len());
        if newest.is_empty() {
            return Ok(out);
        }
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for (device, seq) in newest {
            let r = sqlx::query(
                "UPDATE instructions SET status = 'superseded' WHERE tenant_id = ? \
                 AND device_id = ? AND kind = ? AND seq < ? AND status IN ('queued', 'delivered')",
            )
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .bind(kind)
            .bind(*seq as i64)
            .execute(&mut *tx)
            .await?;
            out.push(r.rows_affected());
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn cfg_put_rollout(&self, tenant: TenantId, r: &RolloutRow) -> Result<()> {
        let canaries: Vec<uuid::Uuid> = r.canaries.iter().map(|d| d.0).collect();
        sqlx::query(&format!(
            "INSERT INTO config_rollouts (tenant_id, {ROLLOUT_COLS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
             canaries = excluded.canaries, updated_at = excluded.updated_at \
             WHERE config_rollouts.tenant_id = excluded.tenant_id"
        ))
        .bind(tenant.0.to_string())
        .bind(r.id.to_string())
        .bind(&r.group)
        .bind(r.from_version as i64)
        .bind(r.to_version as i64)
        .bind(i64::from(r.canary_percent))
        .bind(i64::from(r.bake_secs))
        .bind(serde_json::to_string(&canaries).unwrap_or_else(|_| "[]".into()))
        .bind(&r.state)
        .bind(&r.reason)
        .bind(&r.created_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn cfg_rollouts(
        &self,
        tenant: TenantId,
        limit: u32,
    ) -> Result<Vec<RolloutRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLS} FROM config_rollouts WHERE tenant_id = ? \
             ORDER BY created_at DESC, rowid DESC LIMIT ?"
        ))
        .bind(tenant.0.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(rollout_from).collect()
    }
}
