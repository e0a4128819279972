//! Target lists of the SQLite backend (migration 0017). The `Store` impl in
//! `sqlite.rs` calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{
    is_unique_violation, opt_sealed_col, row_seal, sealed_col, to_i64, SqliteStore,
};
use crate::targets::{TargetImport, TargetListRow};
use crate::*;

const TABLE: &str = "target_lists";

fn seal<'a>(sealer: &'a dyn TenantSealer, tenant: TenantId, name: &str) -> RowSeal<'a> {
    RowSeal {
        sealer,
        tenant,
        table: TABLE,
        row: vec![name.to_string()],
    }
}

fn import_json(i: &TargetImport) -> Result<String> {
    serde_json::to_string(i).map_err(|e| StoreError::Corrupt(format!("target import: {e}")))
}

fn list_from(
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    row: &SqliteRow,
) -> Result<TargetListRow> {
    let seal = row_seal(sealer, tenant, TABLE, row, &["name"])?;
    let entries = sealed_col(&seal, row, "entries")?;
    let last_import = opt_sealed_col(&seal, row, "last_import")?
        .map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("target_lists.last_import: {e}")))
        })
        .transpose()?;
    let version: i64 = row.try_get("version")?;
    Ok(TargetListRow {
        name: row.try_get("name")?,
        description: sealed_col(&seal, row, "description")?,
        entries: entries
            .split('\n')
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect(),
        source: row.try_get("source")?,
        version: u64::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("target list version {version}")))?,
        updated_at: row.try_get("updated_at")?,
        last_import,
    })
}

impl SqliteStore {
    pub(crate) async fn targets_list(&self, tenant: TenantId) -> Result<Vec<TargetListRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM target_lists WHERE tenant_id = ? ORDER BY name")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| list_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn targets_get(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<Option<TargetListRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM target_lists WHERE tenant_id = ? AND name = ?")
            .bind(tenant.0.to_string())
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(|r| list_from(sealer.as_ref(), tenant, r))
            .transpose()
    }

    pub(crate) async fn targets_put(
        &self,
        tenant: TenantId,
        l: &TargetListRow,
        expected_version: u64,
    ) -> Result<u64> {
        let sealer = self.sealer(tenant).await?;
        let s = seal(sealer.as_ref(), tenant, &l.name);
        let description = s.seal_str("description", &l.description)?;
        let entries = s.seal_str("entries", &l.entries.join("\n"))?;
        let import = l
            .last_import
            .as_ref()
            .map(import_json)
            .transpose()?
            .map(|j| s.seal_str("last_import", &j))
            .transpose()?;
        let count = to_i64(l.entries.len() as u64, "entry count")?;
        let raced = || StoreError::Raced(format!("target list {}", l.name));
        if expected_version == 0 {
            sqlx::query(
                "INSERT INTO target_lists (tenant_id, name, description, entries, entry_count,
                 source, version, updated_at, last_import, key_version)
                 VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            )
            .bind(tenant.0.to_string())
            .bind(&l.name)
            .bind(description)
            .bind(entries)
            .bind(count)
            .bind(&l.source)
            .bind(l.updated_at)
            .bind(import)
            .bind(sealer.version())
            .execute(self.pool())
            .await
            .map_err(|e| match &e {
                e if is_unique_violation(e) => raced(),
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StoreError::NotFound(format!("tenant {tenant}"))
                }
                _ => e.into(),
            })?;
            return Ok(1);
        }
        let r = sqlx::query(
            "UPDATE target_lists SET description = ?, entries = ?, entry_count = ?, source = ?,
             version = version + 1, updated_at = ?, last_import = ?, key_version = ?
             WHERE tenant_id = ? AND name = ? AND version = ?",
        )
        .bind(description)
        .bind(entries)
        .bind(count)
        .bind(&l.source)
        .bind(l.updated_at)
        .bind(import)
        .bind(sealer.version())
        .bind(tenant.0.to_string())
        .bind(&l.name)
        .bind(to_i64(expected_version, "expected version")?)
        .execute(self.pool())
        .await?;
        if r.rows_affected() == 1 {
            Ok(expected_version + 1)
        } else {
            Err(raced())
        }
    }

    pub(crate) async fn targets_record_import(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
        entries: Option<&[String]>,
        import: &TargetImport,
    ) -> Result<Option<u64>> {
        let sealer = self.sealer(tenant).await?;
        let s = seal(sealer.as_ref(), tenant, name);
        let sealed_import = s.seal_str("last_import", &import_json(import)?)?;
        let t = tenant.0.to_string();
        // The row's key version is its oldest value's: the description
        // keeps the version it was sealed under.
        let row =
            match entries {
                Some(entries) => sqlx::query(
                    "UPDATE target_lists SET entries = ?, entry_count = ?, version = version + 1,
                     updated_at = ?, last_import = ?,
                     key_version = MIN(COALESCE(key_version, ?), ?)
                     WHERE tenant_id = ? AND name = ? AND source = ? RETURNING version",
                )
                .bind(s.seal_str("entries", &entries.join("\n"))?)
                .bind(to_i64(entries.len() as u64, "entry count")?)
                .bind(import.at)
                .bind(sealed_import)
                .bind(sealer.version())
                .bind(sealer.version())
                .bind(&t)
                .bind(name)
                .bind(source)
                .fetch_optional(self.pool())
                .await?,
                None => {
                    sqlx::query(
                        "UPDATE target_lists SET last_import = ?,
                     key_version = MIN(COALESCE(key_version, ?), ?)
                     WHERE tenant_id = ? AND name = ? AND source = ? RETURNING version",
                    )
                    .bind(sealed_import)
                    .bind(sealer.version())
                    .bind(sealer.version())
                    .bind(&t)
                    .bind(name)
                    .bind(source)
                    .fetch_optional(self.pool())
                    .await?
                }
            };
        row.map(|r| {
            let v: i64 = r.try_get("version")?;
            u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("target list version {v}")))
        })
        .transpose()
    }

    pub(crate) async fn targets_delete(&self, tenant: TenantId, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM target_lists WHERE tenant_id = ? AND name = ?")
            .bind(tenant.0.to_string())
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn targets_versions(&self, tenant: TenantId) -> Result<Vec<(String, u64)>> {
        sqlx::query("SELECT name, version FROM target_lists WHERE tenant_id = ? ORDER BY name")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                let v: i64 = r.try_get("version")?;
                Ok((
                    r.try_get("name")?,
                    u64::try_from(v)
                        .map_err(|_| StoreError::Corrupt(format!("target list version {v}")))?,
                ))
            })
            .collect()
    }
}
