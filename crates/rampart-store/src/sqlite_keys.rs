//! Data key versions and re-encryption for the SQLite backend (migration
//! 0010). The `Store` impl in `sqlite.rs` calls these.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::cipher::SEALED;
use crate::sqlite::{row_seal, SqliteStore};
use crate::*;

impl SqliteStore {
    pub(crate) async fn keys_list(&self, tenant: TenantId) -> Result<Vec<DataKeyRow>> {
        sqlx::query("SELECT * FROM tenant_data_keys WHERE tenant_id = ? ORDER BY version")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                let v: i64 = row.try_get("version")?;
                Ok(DataKeyRow {
                    version: u32::try_from(v)
                        .map_err(|_| StoreError::Corrupt(format!("data key version {v}")))?,
                    key_wrapped: row.try_get("key_wrapped")?,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn keys_add(&self, tenant: TenantId, k: &DataKeyRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_data_keys (tenant_id, version, key_wrapped, created_at, retired_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(k.version)
        .bind(&k.key_wrapped)
        .bind(k.created_at)
        .bind(k.retired_at)
        .execute(self.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("data key version {} of tenant {tenant}", k.version))
            }
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::NotFound(format!("tenant {tenant}"))
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(crate) async fn keys_retire(
        &self,
        tenant: TenantId,
        version: u32,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tenant_data_keys SET key_wrapped = NULL, retired_at = ?
             WHERE tenant_id = ? AND version = ? AND retired_at IS NULL",
        )
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Re-seals rows table by table, each row with one conditional update:
    /// it applies only if none of the row's sealed values changed since it
    /// was read (values carry random nonces, so equal means unchanged), so
    /// a concurrent writer is never overwritten with stale content.
    pub(crate) async fn keys_reseal(&self, tenant: TenantId, limit: u32) -> Result<u64> {
        let sealer = self.sealer(tenant).await?;
        let current = sealer.version();
        let t = tenant.0.to_string();
        let mut done = 0u64;
        for spec in SEALED {
            let left = u64::from(limit).saturating_sub(done);
            if left == 0 {
                break;
            }
            let ids: Vec<&str> = spec.row.to_vec();
            let mut cols: Vec<String> = vec!["rowid AS rid".into()];
            cols.extend(ids.iter().map(|c| c.to_string()));
            cols.extend(spec.columns.iter().map(|c| c.to_string()));
            let select = format!(
                "SELECT {} FROM {} WHERE tenant_id = ? AND key_version < ? LIMIT ?",
                cols.join(", "),
                spec.table
            );
            let rows = sqlx::query(&select)
                .bind(&t)
                .bind(current)
                .bind(left as i64)
                .fetch_all(self.pool())
                .await?;
            let sets: Vec<String> = spec.columns.iter().map(|c| format!("{c} = ?")).collect();
            let guards: Vec<String> = spec.columns.iter().map(|c| format!("{c} IS ?")).collect();
            let update = format!(
                "UPDATE {} SET {}, key_version = ? WHERE tenant_id = ? AND rowid = ? AND {}",
                spec.table,
                sets.join(", "),
                guards.join(" AND ")
            );
            for row in &rows {
                let seal = row_seal(sealer.as_ref(), tenant, spec.table, row, &ids)?;
                let mut old = Vec::with_capacity(spec.columns.len());
                let mut new = Vec::with_capacity(spec.columns.len());
                for c in spec.columns {
                    let v: Option<Vec<u8>> = row.try_get(*c)?;
                    new.push(match &v {
                        Some(b) => Some(seal.seal(c, &seal.open(c, b)?)?),
                        None => None,
                    });
                    old.push(v);
                }
                let rid: i64 = row.try_get("rid")?;
                let mut q = sqlx::query(&update);
                for v in new {
                    q = q.bind(v);
                }
                q = q.bind(current).bind(&t).bind(rid);
                for v in old {
                    q = q.bind(v);
                }
                done += q.execute(self.pool()).await?.rows_affected();
            }
        }
        Ok(done)
    }

    pub(crate) async fn keys_usage(&self, tenant: TenantId) -> Result<KeyUsage> {
        let t = tenant.0.to_string();
        let mut fields: BTreeMap<u32, u64> = BTreeMap::new();
        for spec in SEALED {
            let sql = format!(
                "SELECT key_version, COUNT(*) AS n FROM {} WHERE tenant_id = ?
                 AND key_version IS NOT NULL GROUP BY key_version",
                spec.table
            );
            for row in sqlx::query(&sql).bind(&t).fetch_all(self.pool()).await? {
                let v: i64 = row.try_get("key_version")?;
                let n: i64 = row.try_get("n")?;
                *fields
                    .entry(v.clamp(0, u32::MAX as i64) as u32)
                    .or_default() += n.max(0) as u64;
            }
        }
        let mut usage = KeyUsage {
            fields: fields.into_iter().collect(),
            ..KeyUsage::default()
        };
        for row in sqlx::query(
            "SELECT key_version, COUNT(*) AS n FROM flow_segments WHERE tenant_id = ?
             GROUP BY key_version ORDER BY key_version",
        )
        .bind(&t)
        .fetch_all(self.pool())
        .await?
        {
            let v: Option<i64> = row.try_get("key_version")?;
            let n = row.try_get::<i64, _>("n")?.max(0) as u64;
            match v {
                Some(v) => usage.segments.push((v.clamp(0, u32::MAX as i64) as u32, n)),
                None => usage.segments_unverified = n,
            }
        }
        Ok(usage)
    }

    pub(crate) async fn keys_destroy(&self, tenant: TenantId) -> Result<()> {
        let t = tenant.0.to_string();
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM tenant_data_keys WHERE tenant_id = ?")
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = ?")
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        // The portal-wide queues (notifier, deliveries) read every tenant's
        // rows in one page: rows nobody can open any more would stop them.
        for table in ["alarm_history", "alarm_deliveries"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
                .bind(&t)
                .execute(&mut *tx)
                .await?;
        }
        // Likewise the spool queues: its batches can no longer be opened.
        sqlx::query(
            "UPDATE batches SET
             processed_at = COALESCE(processed_at, CAST(strftime('%s', 'now') AS INTEGER)),
             detected_at = COALESCE(detected_at, CAST(strftime('%s', 'now') AS INTEGER))
             WHERE tenant_id = ?",
        )
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
