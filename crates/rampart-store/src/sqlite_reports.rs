//! The report table of the SQLite backend (migration 0014), and the alarm
//! counts by window reports are made of. Kept apart from `sqlite.rs` for
//! size; the `Store` impl there calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::cipher::RowSeal;
use crate::sqlite::{row_seal, sealed_json_col, uuid_col, SqliteStore};
use crate::*;

/// Listing more than this many at once is cut to it.
const MAX_LIST: u32 = 1000;

fn info_from(row: &SqliteRow) -> Result<ReportInfo> {
    Ok(ReportInfo {
        id: uuid_col(row, "id")?,
        kind: row.try_get("kind")?,
        period_start: row.try_get("period_start")?,
        period_end: row.try_get("period_end")?,
        created_at: row.try_get("created_at")?,
        emailed_at: row.try_get("emailed_at")?,
    })
}

const INFO_COLS: &str = "id, kind, period_start, period_end, created_at, emailed_at";

impl SqliteStore {
    pub(crate) async fn reports_create(
        &self,
        tenant: TenantId,
        info: &ReportInfo,
        body: &serde_json::Value,
    ) -> Result<bool> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "reports",
            row: vec![info.id.to_string()],
        };
        let r = sqlx::query(
            "INSERT INTO reports (tenant_id, id, kind, period_start, period_end, created_at,
             emailed_at, body, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, kind, period_start) DO NOTHING",
        )
        .bind(tenant.0.to_string())
        .bind(info.id.to_string())
        .bind(&info.kind)
        .bind(info.period_start)
        .bind(info.period_end)
        .bind(info.created_at)
        .bind(info.emailed_at)
        .bind(seal.seal_json("body", body)?)
        .bind(sealer.version())
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn reports_list(
        &self,
        tenant: TenantId,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportInfo>> {
        let sql = format!(
            "SELECT {INFO_COLS} FROM reports WHERE tenant_id = ? AND (? IS NULL OR kind = ?)
             ORDER BY period_start DESC, kind, id LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(tenant.0.to_string())
            .bind(kind)
            .bind(kind)
            .bind(i64::from(limit.min(MAX_LIST)))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(info_from)
            .collect()
    }

    pub(crate) async fn reports_get(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<(ReportInfo, serde_json::Value)>> {
        let Some(row) = sqlx::query("SELECT * FROM reports WHERE tenant_id = ? AND id = ?")
            .bind(tenant.0.to_string())
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        let seal = row_seal(sealer.as_ref(), tenant, "reports", &row, &["id"])?;
        Ok(Some((
            info_from(&row)?,
            sealed_json_col(&seal, &row, "body")?,
        )))
    }

    pub(crate) async fn reports_for_period(
        &self,
        tenant: TenantId,
        kind: &str,
        period_start: i64,
    ) -> Result<Option<ReportInfo>> {
        let sql = format!(
            "SELECT {INFO_COLS} FROM reports
             WHERE tenant_id = ? AND kind = ? AND period_start = ?"
        );
        sqlx::query(&sql)
            .bind(tenant.0.to_string())
            .bind(kind)
            .bind(period_start)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(info_from)
            .transpose()
    }

    pub(crate) async fn reports_mark_emailed(
        &self,
        tenant: TenantId,
        id: Uuid,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE reports SET emailed_at = ? WHERE tenant_id = ? AND id = ?")
            .bind(now)
            .bind(tenant.0.to_string())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn reports_alarm_counts(
        &self,
        tenant: TenantId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, String, AlarmState, u64)>> {
        sqlx::query(
            "SELECT kind, severity, state, COUNT(*) AS n FROM alarms
             WHERE tenant_id = ? AND first_seen >= ? AND first_seen < ?
             GROUP BY kind, severity, state ORDER BY kind, severity, state",
        )
        .bind(tenant.0.to_string())
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            let s: String = row.try_get("state")?;
            Ok((
                row.try_get("kind")?,
                row.try_get("severity")?,
                AlarmState::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("alarm state {s}")))?,
                row.try_get::<i64, _>("n")?.max(0) as u64,
            ))
        })
        .collect()
    }
}
