//! Plans, cancellation, deletion and retention in the SQLite backend
//! (migration 0008). The `Store` impl in `sqlite.rs` calls these.

use std::collections::BTreeMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::sqlite::{uuid_col, SqliteStore};
use crate::*;

/// Tables whose rows `purge_tenant` must not touch even though they name a
/// tenant: the audit log outlives the tenant (its deletion is an entry), and
/// the tenant row becomes the tombstone.
const KEPT_ON_PURGE: &[&str] = &["audit_log", "tenants"];

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn days(row: &SqliteRow, col: &str) -> Result<Option<u32>> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("plan {col} {v}"))))
        .transpose()
}

fn features(row: &SqliteRow, col: &str) -> Result<Option<Vec<String>>> {
    let v: Option<String> = row.try_get(col)?;
    v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(format!("plan {col}: {e}"))))
        .transpose()
}

fn plan_from(row: &SqliteRow) -> Result<Plan> {
    let need = |v: Option<u32>, col: &str| {
        v.ok_or_else(|| StoreError::Corrupt(format!("plan {col} is null")))
    };
    Ok(Plan {
        name: row.try_get("name")?,
        visible_days: need(days(row, "visible_days")?, "visible_days")?,
        stored_days: need(days(row, "stored_days")?, "stored_days")?,
        max_devices: days(row, "max_devices")?,
        features: features(row, "features")?.unwrap_or_default(),
        updated_at: row.try_get("updated_at")?,
    })
}

fn tenant_plan_from(row: &SqliteRow) -> Result<TenantPlan> {
    Ok(TenantPlan {
        plan: row.try_get("plan")?,
        visible_days: days(row, "visible_days")?,
        stored_days: days(row, "stored_days")?,
        max_devices: days(row, "max_devices")?,
        features: features(row, "features")?,
    })
}

fn features_json(f: &[String]) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "[]".into())
}

/// The tenant's plan with its overrides applied, in one query: it is read
/// on every upload and gated request, and inside the enrollment's write
/// transaction (which counts devices against it).
pub(crate) async fn effective<'e, E: sqlx::Executor<'e, Database = Sqlite>>(
    ex: E,
    tenant: TenantId,
) -> Result<EffectivePlan> {
    let row = sqlx::query(
        "SELECT p.name,
                COALESCE(tp.visible_days, p.visible_days) AS visible_days,
                COALESCE(tp.stored_days, p.stored_days) AS stored_days,
                COALESCE(tp.max_devices, p.max_devices) AS max_devices,
                COALESCE(tp.features, p.features) AS features, p.updated_at
         FROM plans p LEFT JOIN tenant_plans tp ON tp.tenant_id = ?1
         WHERE p.name = COALESCE(tp.plan, ?2)",
    )
    .bind(tenant.0.to_string())
    .bind(DEFAULT_PLAN)
    .fetch_optional(ex)
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant} is on an unknown plan")))?;
    let plan = plan_from(&row)?;
    Ok(EffectivePlan {
        plan: plan.name,
        visible_days: plan.visible_days,
        stored_days: plan.stored_days,
        max_devices: plan.max_devices,
        features: plan.features,
    })
}

impl SqliteStore {
    pub(crate) async fn plan_upsert(&self, p: &Plan) -> Result<()> {
        sqlx::query(
            "INSERT INTO plans (name, visible_days, stored_days, max_devices, features, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET visible_days = excluded.visible_days,
             stored_days = excluded.stored_days, max_devices = excluded.max_devices,
             features = excluded.features, updated_at = excluded.updated_at",
        )
        .bind(&p.name)
        .bind(i64::from(p.visible_days))
        .bind(i64::from(p.stored_days))
        .bind(p.max_devices.map(i64::from))
        .bind(features_json(&p.features))
        .bind(p.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn plans_list(&self) -> Result<Vec<Plan>> {
        sqlx::query("SELECT * FROM plans ORDER BY name")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(plan_from)
            .collect()
    }

    pub(crate) async fn plan_get(&self, name: &str) -> Result<Option<Plan>> {
        sqlx::query("SELECT * FROM plans WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(plan_from)
            .transpose()
    }

    pub(crate) async fn plan_delete(&self, name: &str) -> Result<bool> {
        if name == DEFAULT_PLAN {
            return Err(StoreError::Conflict(format!(
                "plan {name} is the default plan; it"
            )));
        }
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenant_plans WHERE plan = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Err(StoreError::Conflict(format!(
                "plan {name} has {users} tenant(s) on it; it"
            )));
        }
        let r = sqlx::query("DELETE FROM plans WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub(crate) async fn tenant_plan_set(&self, tenant: TenantId, p: &TenantPlan) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_plans (tenant_id, plan, visible_days, stored_days, max_devices,
             features, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan,
             visible_days = excluded.visible_days, stored_days = excluded.stored_days,
             max_devices = excluded.max_devices, features = excluded.features,
             updated_at = excluded.updated_at",
        )
        .bind(tenant.0.to_string())
        .bind(&p.plan)
        .bind(p.visible_days.map(i64::from))
        .bind(p.stored_days.map(i64::from))
        .bind(p.max_devices.map(i64::from))
        .bind(p.features.as_deref().map(features_json))
        .bind(unix_now())
        .execute(self.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::NotFound(format!("tenant {tenant} or plan {}", p.plan))
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(crate) async fn tenant_plan_get(&self, tenant: TenantId) -> Result<TenantPlan> {
        let row = sqlx::query("SELECT * FROM tenant_plans WHERE tenant_id = ?")
            .bind(tenant.0.to_string())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => tenant_plan_from(&r),
            None => Ok(TenantPlan {
                plan: DEFAULT_PLAN.into(),
                ..TenantPlan::default()
            }),
        }
    }

    pub(crate) async fn plan_effective(&self, tenant: TenantId) -> Result<EffectivePlan> {
        effective(self.pool(), tenant).await
    }

    pub(crate) async fn tenant_cancel(
        &self,
        tenant: TenantId,
        now: i64,
        delete_after: i64,
    ) -> Result<()> {
        let r = sqlx::query(
            "UPDATE tenants SET cancelled_at = ?, delete_after = ?
             WHERE id = ? AND cancelled_at IS NULL AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(delete_after)
        .bind(tenant.0.to_string())
        .execute(self.pool())
        .await?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        match self.get_tenant(tenant).await? {
            None => Err(StoreError::NotFound(format!("tenant {tenant}"))),
            Some(_) => Err(StoreError::Conflict(format!(
                "a cancellation of tenant {tenant}"
            ))),
        }
    }

    pub(crate) async fn tenant_reactivate(&self, tenant: TenantId) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tenants SET cancelled_at = NULL, delete_after = NULL
             WHERE id = ? AND cancelled_at IS NOT NULL AND deleted_at IS NULL",
        )
        .bind(tenant.0.to_string())
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn tenants_due(&self, now: i64) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(
            "SELECT * FROM tenants WHERE deleted_at IS NULL AND delete_after <= ?
             ORDER BY delete_after",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(crate::sqlite::tenant_from).collect()
    }

    pub(crate) async fn blob_keys_of(&self, tenant: TenantId) -> Result<Vec<String>> {
        let t = tenant.0.to_string();
        let mut keys: Vec<String> = Vec::new();
        for table in ["batches", "flow_segments"] {
            let q = format!("SELECT blob_key FROM {table} WHERE tenant_id = ?");
            keys.extend(
                sqlx::query_scalar::<_, String>(&q)
                    .bind(&t)
                    .fetch_all(self.pool())
                    .await?,
            );
        }
        Ok(keys)
    }

    /// Every table with a `tenant_id` column: found from the schema rather
    /// than listed, so a table added by a later migration is purged too.
    async fn tenant_tables(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<String>> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             AND name NOT LIKE '_sqlx_%' ORDER BY name",
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut out = Vec::new();
        for t in tables {
            if KEPT_ON_PURGE.contains(&t.as_str()) {
                continue;
            }
            let has: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'tenant_id'",
            )
            .bind(&t)
            .fetch_one(&mut **tx)
            .await?;
            if has > 0 {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub(crate) async fn tenant_purge(
        &self,
        tenant: TenantId,
        now: i64,
    ) -> Result<BTreeMap<String, u64>> {
        let t = tenant.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        // Rows reference each other across tables (instructions → devices);
        // checked at commit, when all of them are gone.
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
        let mut removed = BTreeMap::new();
        for table in Self::tenant_tables(&mut tx).await? {
            let q = format!("DELETE FROM \"{table}\" WHERE tenant_id = ?");
            let n = sqlx::query(&q).bind(&t).execute(&mut *tx).await?;
            removed.insert(table, n.rows_affected());
        }
        let r = sqlx::query(
            "UPDATE tenants SET deleted_at = ?, name = 'deleted-' || id,
             domain = id || '.deleted.invalid', cert_file = NULL, key_file = NULL
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "live or cancelled tenant {tenant}"
            )));
        }
        tx.commit().await?;
        Ok(removed)
    }

    pub(crate) async fn data_before(
        &self,
        tenant: TenantId,
        before: i64,
    ) -> Result<RetentionReport> {
        let t = tenant.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut run = async |sql: &str| -> Result<u64> {
            Ok(sqlx::query(sql)
                .bind(&t)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        // An alarm's age is its last change in the portal, not the time of
        // its events: alarms from a replayed old capture stay their window.
        let old_alarms = "SELECT id FROM alarms WHERE tenant_id = ?1 AND updated_at < ?2";
        let report = RetentionReport {
            alarm_history: run(&format!(
                "DELETE FROM alarm_history WHERE tenant_id = ?1 AND alarm_id IN ({old_alarms})"
            ))
            .await?,
            alarm_deliveries: run(&format!(
                "DELETE FROM alarm_deliveries WHERE tenant_id = ?1
                 AND (alarm_id IN ({old_alarms}) OR (status <> 'pending' AND created_at < ?2))"
            ))
            .await?,
            alarms: run("DELETE FROM alarms WHERE tenant_id = ?1 AND updated_at < ?2").await?,
            device_events: run("DELETE FROM device_events WHERE tenant_id = ?1 AND at < ?2")
                .await?,
            instructions: run(
                "DELETE FROM instructions WHERE tenant_id = ?1 AND issued_at < ?2
                 AND (status IN ('ok', 'failed', 'refused') OR expires_at < ?2)",
            )
            .await?,
            batches: run(
                "DELETE FROM batches WHERE tenant_id = ?1 AND received_at < ?2
                 AND spool_deleted_at IS NOT NULL",
            )
            .await?,
            reports: run("DELETE FROM reports WHERE tenant_id = ?1 AND period_end < ?2").await?,
        };
        tx.commit().await?;
        Ok(report)
    }

    pub(crate) async fn spool_spent(
        &self,
        tenant: Option<TenantId>,
        rules: &[SpoolRule<'_>],
        before: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, DeviceId, Uuid, String)>> {
        let mut out = Vec::new();
        for r in rules {
            let mut q = String::from(
                "SELECT tenant_id, device_id, batch_id, blob_key FROM batches
                 WHERE spool_deleted_at IS NULL AND received_at < ?1
                 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR tenant_id = ?3)",
            );
            if r.processed {
                q.push_str(" AND processed_at IS NOT NULL");
            }
            if r.detected {
                q.push_str(" AND detected_at IS NOT NULL");
            }
            q.push_str(" ORDER BY received_at LIMIT ?4");
            let rows = sqlx::query(&q)
                .bind(before)
                .bind(r.kind)
                .bind(tenant.map(|t| t.0.to_string()))
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
            for row in rows {
                out.push((
                    TenantId(uuid_col(&row, "tenant_id")?),
                    DeviceId(uuid_col(&row, "device_id")?),
                    uuid_col(&row, "batch_id")?,
                    row.try_get("blob_key")?,
                ));
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    pub(crate) async fn spool_mark_deleted(
        &self,
        tenant: TenantId,
        batches: &[(DeviceId, Uuid)],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for (d, b) in batches {
            sqlx::query(
                "UPDATE batches SET spool_deleted_at = ?
                 WHERE tenant_id = ? AND device_id = ? AND batch_id = ?",
            )
            .bind(now)
            .bind(tenant.0.to_string())
            .bind(d.0.to_string())
            .bind(b.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
