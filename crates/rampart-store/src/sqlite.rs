//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`, so a
//! write the portal acknowledges survives power loss, not just a crash.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use crate::cipher::{FieldCipher, RowSeal, TenantSealer};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) fn migrator() -> &'static sqlx::migrate::Migrator {
    &MIGRATOR
}

pub struct SqliteStore {
    pool: SqlitePool,
    /// Seals tenant content (see [`crate::cipher`]); installed by the portal.
    cipher: RwLock<Option<Arc<dyn FieldCipher>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(opts, 8).await
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: each in-memory connection would be its own database.
        Self::with_options(opts, 1).await
    }

    async fn with_options(opts: SqliteConnectOptions, max: u32) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore {
            pool,
            cipher: RwLock::new(None),
        })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The tenant's sealer, from the installed cipher.
    pub(crate) async fn sealer(&self, tenant: TenantId) -> Result<Arc<dyn TenantSealer>> {
        let cipher = self
            .cipher
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                StoreError::Crypto(
                    "no field cipher installed: the portal installs one at start".into(),
                )
            })?;
        cipher.sealer(self, tenant).await
    }

    pub(crate) fn install_cipher(&self, cipher: Arc<dyn FieldCipher>) {
        if let Ok(mut c) = self.cipher.write() {
            *c = Some(cipher);
        }
    }

    /// Copies a consistent snapshot of the live database to `dest`.
    pub async fn snapshot_to(&self, dest: &Path) -> Result<()> {
        sqlx::query("VACUUM INTO ?")
            .bind(dest.to_string_lossy().as_ref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

pub(crate) fn uuid_col(row: &SqliteRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

pub(crate) fn opt_uuid_col(row: &SqliteRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

pub(crate) fn json_col(row: &SqliteRow, col: &str) -> Result<serde_json::Value> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A sealed column of `row`, opened.
pub(crate) fn sealed_col(seal: &RowSeal<'_>, row: &SqliteRow, col: &str) -> Result<String> {
    let b: Vec<u8> = row.try_get(col)?;
    seal.open_str(col, &b)
}

pub(crate) fn opt_sealed_col(
    seal: &RowSeal<'_>,
    row: &SqliteRow,
    col: &str,
) -> Result<Option<String>> {
    seal.open_opt(col, row.try_get(col)?)
}

pub(crate) fn sealed_json_col(
    seal: &RowSeal<'_>,
    row: &SqliteRow,
    col: &str,
) -> Result<serde_json::Value> {
    let b: Vec<u8> = row.try_get(col)?;
    seal.open_json(col, &b)
}

fn opt_sealed_json_col(
    seal: &RowSeal<'_>,
    row: &SqliteRow,
    col: &str,
) -> Result<Option<serde_json::Value>> {
    seal.open_opt_json(col, row.try_get(col)?)
}

fn sealed_labels_col(seal: &RowSeal<'_>, row: &SqliteRow, col: &str) -> Result<Vec<String>> {
    serde_json::from_value(sealed_json_col(seal, row, col)?)
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A row's seal, its identity read from the row's clear columns.
pub(crate) fn row_seal<'a>(
    sealer: &'a dyn TenantSealer,
    tenant: TenantId,
    table: &'static str,
    row: &SqliteRow,
    ids: &[&str],
) -> Result<RowSeal<'a>> {
    let mut parts = Vec::with_capacity(ids.len());
    for c in ids {
        let v: String = row
            .try_get::<String, _>(*c)
            .or_else(|_| row.try_get::<i64, _>(*c).map(|v| v.to_string()))?;
        parts.push(v);
    }
    Ok(RowSeal {
        sealer,
        tenant,
        table,
        row: parts,
    })
}

fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn tenant_from(row: &SqliteRow) -> Result<Tenant> {
    let status: String = row.try_get("status")?;
    let cancelled: Option<i64> = row.try_get("cancelled_at")?;
    let delete_after: Option<i64> = row.try_get("delete_after")?;
    let deleted: Option<i64> = row.try_get("deleted_at")?;
    let lifecycle = match (deleted, cancelled, delete_after) {
        (Some(at), _, _) => Lifecycle::Deleted { at },
        (None, Some(at), Some(delete_after)) => Lifecycle::Cancelled { at, delete_after },
        (None, None, None) => Lifecycle::Live,
        _ => return Err(StoreError::Corrupt("tenant cancellation times".into())),
    };
    Ok(Tenant {
        lifecycle,
        id: TenantId(uuid_col(row, "id")?),
        name: row.try_get("name")?,
        domain: row.try_get("domain")?,
        status: TenantStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("tenant status {status}")))?,
        created_at: row.try_get("created_at")?,
        cert_file: row.try_get("cert_file")?,
        key_file: row.try_get("key_file")?,
        region: row.try_get("region")?,
    })
}

fn token_from(sealer: &dyn TenantSealer, row: &SqliteRow) -> Result<EnrollmentTokenRow> {
    let tenant = TenantId(uuid_col(row, "tenant_id")?);
    let seal = row_seal(sealer, tenant, "enrollment_tokens", row, &["id"])?;
    Ok(EnrollmentTokenRow {
        id: uuid_col(row, "id")?,
        tenant_id: TenantId(uuid_col(row, "tenant_id")?),
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        max_uses: row.try_get::<i64, _>("max_uses")? as u32,
        uses: row.try_get::<i64, _>("uses")? as u32,
        labels: sealed_labels_col(&seal, row, "labels")?,
        needs_approval: row.try_get::<i64, _>("needs_approval")? != 0,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn device_from(sealer: &dyn TenantSealer, row: &SqliteRow) -> Result<Device> {
    let tenant = TenantId(uuid_col(row, "tenant_id")?);
    let seal = row_seal(sealer, tenant, "devices", row, &["id"])?;
    Ok(Device {
        id: DeviceId(uuid_col(row, "id")?),
        tenant_id: tenant,
        public_key: row.try_get("public_key")?,
        hostname: sealed_col(&seal, row, "hostname")?,
        labels: sealed_labels_col(&seal, row, "labels")?,
        status: row.try_get("status")?,
        enrolled_at: row.try_get("enrolled_at")?,
        enrollment_token_id: opt_uuid_col(row, "enrollment_token_id")?,
        last_seen: row.try_get("last_seen")?,
        health: opt_sealed_json_col(&seal, row, "health")?,
    })
}

fn instruction_from(sealer: &dyn TenantSealer, row: &SqliteRow) -> Result<InstructionRow> {
    let tenant = TenantId(uuid_col(row, "tenant_id")?);
    let seal = row_seal(sealer, tenant, "instructions", row, &["device_id", "seq"])?;
    Ok(InstructionRow {
        device_id: DeviceId(uuid_col(row, "device_id")?),
        seq: row.try_get::<i64, _>("seq")? as u64,
        kind: row.try_get("kind")?,
        payload: sealed_json_col(&seal, row, "payload")?,
        signed: sealed_json_col(&seal, row, "signed")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        status: row.try_get("status")?,
        result: opt_sealed_json_col(&seal, row, "result")?,
        delivered_at: row.try_get("delivered_at")?,
        acked_at: row.try_get("acked_at")?,
    })
}

pub(crate) fn batch_from(row: &SqliteRow) -> Result<BatchRow> {
    Ok(BatchRow {
        batch_id: uuid_col(row, "batch_id")?,
        device_id: DeviceId(uuid_col(row, "device_id")?),
        kind: row.try_get("kind")?,
        priority: row.try_get::<i64, _>("priority")? as u8,
        items: row.try_get::<i64, _>("items")? as u32,
        bytes: row.try_get::<i64, _>("bytes")? as u64,
        created_at: row.try_get("created_at")?,
        received_at: row.try_get("received_at")?,
        blob_key: row.try_get("blob_key")?,
    })
}

fn segment_from(row: &SqliteRow) -> Result<FlowSegment> {
    let level: String = row.try_get("level")?;
    Ok(FlowSegment {
        id: uuid_col(row, "id")?,
        level: SegmentLevel::parse(&level)
            .ok_or_else(|| StoreError::Corrupt(format!("flow segment level {level}")))?,
        partition_hour: row.try_get("partition_hour")?,
        start_ms: row.try_get("start_ms")?,
        end_ms: row.try_get("end_ms")?,
        rows: row.try_get::<i64, _>("rows")? as u64,
        bytes: row.try_get::<i64, _>("bytes")? as u64,
        blob_key: row.try_get("blob_key")?,
        cut: row.try_get::<i64, _>("cut")? != 0,
        compacted: row.try_get::<i64, _>("compacted")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Counts above i64::MAX cannot be stored in an INTEGER column.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is out of range")))
}

/// Which consumer of the spool a batch is marked done for.
#[derive(Clone, Copy)]
pub(crate) enum BatchMark {
    /// Its rows are in a committed flow segment.
    Processed,
    /// The detectors have seen it.
    Detected,
}

/// Marks batches done for one consumer, inside the caller's transaction;
/// [`StoreError::Raced`] when one is unknown or already marked, so two
/// processors on the same work cannot both commit it.
pub(crate) async fn mark_batches(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    tenant: &str,
    mark: BatchMark,
    batches: &[(DeviceId, Uuid)],
    now: i64,
) -> Result<()> {
    let (sql, what) = match mark {
        BatchMark::Processed => (
            "UPDATE batches SET processed_at = ?
             WHERE tenant_id = ? AND device_id = ? AND batch_id = ? AND processed_at IS NULL",
            "processed",
        ),
        BatchMark::Detected => (
            "UPDATE batches SET detected_at = ?
             WHERE tenant_id = ? AND device_id = ? AND batch_id = ? AND detected_at IS NULL",
            "detected",
        ),
    };
    for (device, batch) in batches {
        let r = sqlx::query(sql)
            .bind(now)
            .bind(tenant)
            .bind(device.0.to_string())
            .bind(batch.to_string())
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::Raced(format!(
                "batch {batch} of device {device} (unknown or already {what})"
            )));
        }
    }
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM portal_meta WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO portal_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("meta {key} vanished")))
    }

    async fn create_tenant(&self, new: &NewTenant) -> Result<()> {
        let t = &new.tenant;
        let k = &new.keys;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, domain, status, created_at, cert_file, key_file, region)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.0.to_string())
        .bind(&t.name)
        .bind(&t.domain)
        .bind(t.status.as_str())
        .bind(t.created_at)
        .bind(&t.cert_file)
        .bind(&t.key_file)
        .bind(&t.region)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "a tenant named {} or with domain {}",
                    t.name, t.domain
                ))
            } else {
                e.into()
            }
        })?;
        sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, kek_wrapped, signing_sk_wrapped, signing_pk,
             upload_sk_wrapped, upload_pk, tls_cert_pem, tls_key_wrapped)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.0.to_string())
        .bind(&k.kek_wrapped)
        .bind(&k.signing_sk_wrapped)
        .bind(&k.signing_pk)
        .bind(&k.upload_sk_wrapped)
        .bind(&k.upload_pk)
        .bind(&k.tls_cert_pem)
        .bind(&k.tls_key_wrapped)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        sqlx::query("SELECT * FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_from)
            .collect()
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from)
            .transpose()
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from)
            .transpose()
    }

    async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE domain = ?")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from)
            .transpose()
    }

    async fn set_tenant_status(&self, id: TenantId, status: TenantStatus) -> Result<()> {
        let r = sqlx::query("UPDATE tenants SET status = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        Ok(())
    }

    async fn tenant_keys(&self, id: TenantId) -> Result<TenantKeys> {
        let row = sqlx::query("SELECT * FROM tenant_keys WHERE tenant_id = ?")
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("keys of tenant {id}")))?;
        Ok(TenantKeys {
            kek_wrapped: row.try_get("kek_wrapped")?,
            signing_sk_wrapped: row.try_get("signing_sk_wrapped")?,
            signing_pk: row.try_get("signing_pk")?,
            upload_sk_wrapped: row.try_get("upload_sk_wrapped")?,
            upload_pk: row.try_get("upload_pk")?,
            tls_cert_pem: row.try_get("tls_cert_pem")?,
            tls_key_wrapped: row.try_get("tls_key_wrapped")?,
        })
    }

    async fn create_api_token(&self, t: &ApiToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, token_hash, role, created_at, expires_at,
             revoked_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(t.tenant_id.map(|t| t.0.to_string()))
        .bind(&t.name)
        .bind(&t.token_hash)
        .bind(&t.role)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(t.created_by.map(|u| u.0.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(crate::sqlite_users::api_token_from)
            .transpose()
    }

    async fn create_enrollment_token(
        &self,
        tenant: TenantId,
        t: &EnrollmentTokenRow,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "enrollment_tokens",
            row: vec![t.id.to_string()],
        };
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, secret_hash, created_at, expires_at,
             max_uses, uses, labels, needs_approval, revoked_at, key_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(tenant.0.to_string())
        .bind(&t.secret_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.max_uses as i64)
        .bind(t.uses as i64)
        .bind(seal.seal_str("labels", &labels_json(&t.labels))?)
        .bind(t.needs_approval as i64)
        .bind(t.revoked_at)
        .bind(sealer.version())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_enrollment_tokens(&self, tenant: TenantId) -> Result<Vec<EnrollmentTokenRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM enrollment_tokens WHERE tenant_id = ? ORDER BY created_at, id")
            .bind(tenant.0.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| token_from(sealer.as_ref(), r))
            .collect()
    }

    async fn revoke_enrollment_token(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?)
             WHERE tenant_id = ? AND id = ?",
        )
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn redeem_enrollment(
        &self,
        tenant: TenantId,
        secret_hash: &str,
        device: &NewDevice,
    ) -> Result<Result<Device, TokenRejection>> {
        let sealer = self.sealer(tenant).await?;
        // BEGIN IMMEDIATE semantics: the use count check and increment must not
        // interleave with another redemption of the same token.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) =
            sqlx::query("SELECT * FROM enrollment_tokens WHERE tenant_id = ? AND secret_hash = ?")
                .bind(tenant.0.to_string())
                .bind(secret_hash)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Err(TokenRejection::Unknown));
        };
        let tok = token_from(sealer.as_ref(), &row)?;
        if tok.revoked_at.is_some() {
            return Ok(Err(TokenRejection::Revoked));
        }
        if device.now >= tok.expires_at {
            return Ok(Err(TokenRejection::Expired));
        }
        if tok.uses >= tok.max_uses {
            return Ok(Err(TokenRejection::UsedUp));
        }
        // Counted inside the write transaction, so two redemptions at once
        // cannot both take the last place.
        if let Some(max) = crate::sqlite_lifecycle::effective(&mut *tx, tenant)
            .await?
            .max_devices
        {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM devices WHERE tenant_id = ? AND status <> 'revoked'",
            )
            .bind(tenant.0.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if n >= i64::from(max) {
                return Ok(Err(TokenRejection::DeviceLimit(max)));
            }
        }
        sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?")
            .bind(tok.id.to_string())
            .execute(&mut *tx)
            .await?;
        let status = if tok.needs_approval {
            "pending"
        } else {
            "active"
        };
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "devices",
            row: vec![device.id.0.to_string()],
        };
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, public_key, hostname, labels, status, enrolled_at,
             enrollment_token_id, key_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(device.id.0.to_string())
        .bind(tenant.0.to_string())
        .bind(&device.public_key)
        .bind(seal.seal_str("hostname", &device.hostname)?)
        .bind(seal.seal_str("labels", &labels_json(&tok.labels))?)
        .bind(status)
        .bind(device.now)
        .bind(tok.id.to_string())
        .bind(sealer.version())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(Device {
            id: device.id,
            tenant_id: tenant,
            public_key: device.public_key.clone(),
            hostname: device.hostname.clone(),
            labels: tok.labels,
            status: status.into(),
            enrolled_at: device.now,
            enrollment_token_id: Some(tok.id),
            last_seen: None,
            health: None,
        }))
    }

    async fn get_device(&self, tenant: TenantId, id: DeviceId) -> Result<Option<Device>> {
        let Some(row) = sqlx::query("SELECT * FROM devices WHERE tenant_id = ? AND id = ?")
            .bind(tenant.0.to_string())
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        device_from(sealer.as_ref(), &row).map(Some)
    }

    async fn list_devices(&self, tenant: TenantId) -> Result<Vec<Device>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM devices WHERE tenant_id = ? ORDER BY enrolled_at, id")
            .bind(tenant.0.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| device_from(sealer.as_ref(), r))
            .collect()
    }

    async fn set_device_status(
        &self,
        tenant: TenantId,
        id: DeviceId,
        status: &str,
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE devices SET status = ? WHERE tenant_id = ? AND id = ?")
            .bind(status)
            .bind(tenant.0.to_string())
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn touch_device(&self, tenant: TenantId, id: DeviceId, now: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen = ? WHERE tenant_id = ? AND id = ?")
            .bind(now)
            .bind(tenant.0.to_string())
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_device_health(
        &self,
        tenant: TenantId,
        id: DeviceId,
        health: &serde_json::Value,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "devices",
            row: vec![id.0.to_string()],
        };
        // key_version stays: it is the row's oldest, and this one is the newest.
        sqlx::query("UPDATE devices SET health = ? WHERE tenant_id = ? AND id = ?")
            .bind(seal.seal_json("health", health)?)
            .bind(tenant.0.to_string())
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_devices_seen_since(&self, since: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE last_seen >= ? AND status = 'active'",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn allocate_seqs(
        &self,
        tenant: TenantId,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, u64)>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(devices.len());
        for d in devices {
            let seq: Option<i64> = sqlx::query_scalar(
                "UPDATE devices SET next_seq = next_seq + 1 WHERE tenant_id = ? AND id = ? RETURNING next_seq",
            )
            .bind(tenant.0.to_string())
            .bind(d.0.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(seq) = seq {
                out.push((*d, seq as u64));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn insert_instructions(&self, tenant: TenantId, rows: &[InstructionRow]) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let mut tx = self.pool.begin().await?;
        for r in rows {
            let seal = RowSeal {
                sealer: sealer.as_ref(),
                tenant,
                table: "instructions",
                row: vec![r.device_id.0.to_string(), r.seq.to_string()],
            };
            sqlx::query(
                "INSERT INTO instructions (tenant_id, device_id, seq, kind, payload, signed, issued_at,
                 expires_at, status, result, delivered_at, acked_at, key_version)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.0.to_string())
            .bind(r.device_id.0.to_string())
            .bind(r.seq as i64)
            .bind(&r.kind)
            .bind(seal.seal_json("payload", &r.payload)?)
            .bind(seal.seal_json("signed", &r.signed)?)
            .bind(r.issued_at)
            .bind(r.expires_at)
            .bind(&r.status)
            .bind(r.result.as_ref().map(|v| seal.seal_json("result", v)).transpose()?)
            .bind(r.delivered_at)
            .bind(r.acked_at)
            .bind(sealer.version())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pending_instructions(
        &self,
        tenant: TenantId,
        device: DeviceId,
        after_seq: u64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<InstructionRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query(
            "SELECT * FROM instructions WHERE tenant_id = ? AND device_id = ? AND seq > ?
             AND status IN ('queued', 'delivered') AND expires_at >= ? ORDER BY seq LIMIT ?",
        )
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(after_seq as i64)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| instruction_from(sealer.as_ref(), r))
        .collect()
    }

    async fn mark_delivered(
        &self,
        tenant: TenantId,
        delivered: &[(DeviceId, u64)],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (device, seq) in delivered {
            sqlx::query(
                "UPDATE instructions SET status = 'delivered', delivered_at = COALESCE(delivered_at, ?)
                 WHERE tenant_id = ? AND device_id = ? AND seq = ? AND status = 'queued'",
            )
            .bind(now)
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .bind(*seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish_instruction(
        &self,
        tenant: TenantId,
        device: DeviceId,
        seq: u64,
        status: &str,
        result: &serde_json::Value,
        now: i64,
    ) -> Result<bool> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "instructions",
            row: vec![device.0.to_string(), seq.to_string()],
        };
        let r = sqlx::query(
            "UPDATE instructions SET status = ?, result = ?, acked_at = ?
             WHERE tenant_id = ? AND device_id = ? AND seq = ?
             AND status IN ('queued', 'delivered')",
        )
        .bind(status)
        .bind(seal.seal_json("result", result)?)
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(device.0.to_string())
        .bind(seq as i64)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn get_instruction(
        &self,
        tenant: TenantId,
        device: DeviceId,
        seq: u64,
    ) -> Result<Option<InstructionRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM instructions WHERE tenant_id = ? AND device_id = ? AND seq = ?")
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .bind(seq as i64)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(|r| instruction_from(sealer.as_ref(), r))
            .transpose()
    }

    async fn list_instructions(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<InstructionRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM instructions WHERE tenant_id = ? AND device_id = ? ORDER BY seq")
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| instruction_from(sealer.as_ref(), r))
            .collect()
    }

    async fn add_device_event(&self, tenant: TenantId, e: &DeviceEvent) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "device_events",
            row: vec![e.device_id.0.to_string(), e.at.to_string(), e.kind.clone()],
        };
        sqlx::query(
            "INSERT INTO device_events (tenant_id, device_id, at, kind, detail, key_version)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(e.device_id.0.to_string())
        .bind(e.at)
        .bind(&e.kind)
        .bind(seal.seal_json("detail", &e.detail)?)
        .bind(sealer.version())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_device_events(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<DeviceEvent>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM device_events WHERE tenant_id = ? AND device_id = ? ORDER BY id")
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let seal = row_seal(
                    sealer.as_ref(),
                    tenant,
                    "device_events",
                    row,
                    &["device_id", "at", "kind"],
                )?;
                Ok(DeviceEvent {
                    device_id: DeviceId(uuid_col(row, "device_id")?),
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    detail: sealed_json_col(&seal, row, "detail")?,
                })
            })
            .collect()
    }

    async fn record_batch(&self, tenant: TenantId, b: &BatchRow) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO batches (tenant_id, batch_id, device_id, kind, priority, items, bytes,
             created_at, received_at, blob_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, device_id, batch_id) DO NOTHING",
        )
        .bind(tenant.0.to_string())
        .bind(b.batch_id.to_string())
        .bind(b.device_id.0.to_string())
        .bind(&b.kind)
        .bind(b.priority as i64)
        .bind(b.items as i64)
        .bind(b.bytes as i64)
        .bind(b.created_at)
        .bind(b.received_at)
        .bind(&b.blob_key)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn get_batch(
        &self,
        tenant: TenantId,
        device: DeviceId,
        batch_id: Uuid,
    ) -> Result<Option<BatchRow>> {
        sqlx::query("SELECT * FROM batches WHERE tenant_id = ? AND device_id = ? AND batch_id = ?")
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .bind(batch_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(batch_from)
            .transpose()
    }

    async fn list_batches(
        &self,
        tenant: TenantId,
        device: Option<DeviceId>,
        limit: u32,
    ) -> Result<Vec<BatchRow>> {
        sqlx::query(
            "SELECT * FROM batches WHERE tenant_id = ? AND (? IS NULL OR device_id = ?)
             ORDER BY received_at, batch_id LIMIT ?",
        )
        .bind(tenant.0.to_string())
        .bind(device.map(|d| d.0.to_string()))
        .bind(device.map(|d| d.0.to_string()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(batch_from)
        .collect()
    }

    async fn unprocessed_batches(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, BatchRow)>> {
        sqlx::query(
            "SELECT * FROM batches WHERE kind = ? AND processed_at IS NULL
             ORDER BY received_at, tenant_id, device_id, batch_id LIMIT ?",
        )
        .bind(kind)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((TenantId(uuid_col(row, "tenant_id")?), batch_from(row)?)))
        .collect()
    }

    async fn batch_states(
        &self,
        tenant: TenantId,
        batches: &[(DeviceId, Uuid)],
    ) -> Result<Vec<BatchState>> {
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(batches.len());
        for (device, batch) in batches {
            let row: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT processed_at FROM batches WHERE tenant_id = ? AND device_id = ? AND batch_id = ?",
            )
            .bind(tenant.0.to_string())
            .bind(device.0.to_string())
            .bind(batch.to_string())
            .fetch_optional(&mut *conn)
            .await?;
            out.push(match row {
                None => BatchState::Unknown,
                Some(None) => BatchState::Pending,
                Some(Some(_)) => BatchState::Processed,
            });
        }
        Ok(out)
    }

    async fn commit_flow_segments(&self, tenant: TenantId, c: &SegmentCommit<'_>) -> Result<()> {
        let t = tenant.0.to_string();
        // IMMEDIATE takes the write lock first, so the checks below and the
        // writes cannot interleave with another committer.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        mark_batches(&mut tx, &t, BatchMark::Processed, c.processed, c.now).await?;
        for id in c.delete {
            let r = sqlx::query("DELETE FROM flow_segments WHERE tenant_id = ? AND id = ?")
                .bind(&t)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                return Err(StoreError::Raced(format!(
                    "flow segment {id} (already removed)"
                )));
            }
        }
        for s in c.insert {
            sqlx::query(
                "INSERT INTO flow_segments (tenant_id, id, level, partition_hour, start_ms, end_ms,
                 rows, bytes, blob_key, cut, compacted, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&t)
            .bind(s.id.to_string())
            .bind(s.level.as_str())
            .bind(s.partition_hour)
            .bind(s.start_ms)
            .bind(s.end_ms)
            .bind(to_i64(s.rows, "segment rows")?)
            .bind(to_i64(s.bytes, "segment bytes")?)
            .bind(&s.blob_key)
            .bind(s.cut as i64)
            .bind(s.compacted as i64)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Raced(format!("flow segment {} (already inserted)", s.id))
                } else {
                    e.into()
                }
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_flow_segments(
        &self,
        tenant: TenantId,
        level: SegmentLevel,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<FlowSegment>> {
        sqlx::query(
            "SELECT * FROM flow_segments WHERE tenant_id = ? AND level = ?
             AND start_ms < ? AND end_ms > ? ORDER BY start_ms, id",
        )
        .bind(tenant.0.to_string())
        .bind(level.as_str())
        .bind(end_ms)
        .bind(start_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(segment_from)
        .collect()
    }

    async fn delete_flow_segments(&self, tenant: TenantId, ids: &[Uuid]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query("DELETE FROM flow_segments WHERE tenant_id = ? AND id = ?")
                .bind(tenant.0.to_string())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn set_flow_retention(
        &self,
        tenant: TenantId,
        visible_days: u32,
        stored_days: u32,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_plans (tenant_id, plan, visible_days, stored_days, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET visible_days = excluded.visible_days,
             stored_days = excluded.stored_days, updated_at = excluded.updated_at",
        )
        .bind(tenant.0.to_string())
        .bind(DEFAULT_PLAN)
        .bind(i64::from(visible_days))
        .bind(i64::from(stored_days))
        .bind(crate::sqlite_lifecycle::unix_now())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::NotFound(format!("tenant {tenant}"))
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    async fn set_tenant_setting(
        &self,
        tenant: TenantId,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "tenant_settings",
            row: vec![key.to_string()],
        };
        sqlx::query(
            "INSERT INTO tenant_settings (tenant_id, key, value, updated_at, key_version) VALUES (?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER), ?) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at, key_version = excluded.key_version",
        )
        .bind(tenant.0.to_string())
        .bind(key)
        .bind(seal.seal_json("value", value)?)
        .bind(sealer.version())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tenant_setting(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let v: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM tenant_settings WHERE tenant_id = ? AND key = ?")
                .bind(tenant.0.to_string())
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        let Some(v) = v else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "tenant_settings",
            row: vec![key.to_string()],
        };
        seal.open_json("value", &v).map(Some)
    }

    async fn undetected_batches(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, BatchRow)>> {
        self.alarms_undetected(kind, limit).await
    }

    async fn commit_alarms(
        &self,
        tenant: TenantId,
        commit: &AlarmCommit<'_>,
    ) -> Result<Vec<AlarmOutcome>> {
        self.alarms_commit(tenant, commit).await
    }

    async fn detector_state(&self, tenant: TenantId) -> Result<Option<Vec<u8>>> {
        self.alarms_detector_state(tenant).await
    }

    async fn get_alarm(&self, tenant: TenantId, id: Uuid) -> Result<Option<AlarmRow>> {
        self.alarms_get(tenant, id).await
    }

    async fn list_alarms(&self, tenant: TenantId, filter: &AlarmFilter) -> Result<Vec<AlarmRow>> {
        self.alarms_list(tenant, filter).await
    }

    async fn alarm_counts(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(String, String, AlarmState, u64)>> {
        self.alarms_counts(tenant).await
    }

    async fn update_alarm(
        &self,
        tenant: TenantId,
        id: Uuid,
        actor: &str,
        update: &AlarmUpdate,
        now: i64,
    ) -> Result<AlarmRow> {
        self.alarms_update(tenant, id, actor, update, now).await
    }

    async fn alarm_history(&self, tenant: TenantId, id: Uuid) -> Result<Vec<AlarmEvent>> {
        self.alarms_history(tenant, id).await
    }

    async fn alarm_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, AlarmEvent)>> {
        self.alarms_events_after(after, limit).await
    }

    async fn create_alarm_rule(&self, tenant: TenantId, rule: &AlarmRuleRow) -> Result<()> {
        self.alarms_create_rule(tenant, rule).await
    }

    async fn list_alarm_rules(&self, tenant: TenantId) -> Result<Vec<AlarmRuleRow>> {
        self.alarms_list_rules(tenant).await
    }

    async fn delete_alarm_rule(&self, tenant: TenantId, id: Uuid) -> Result<bool> {
        self.alarms_delete("alarm_rules", tenant, id).await
    }

    async fn create_webhook(&self, tenant: TenantId, hook: &WebhookRow) -> Result<()> {
        self.alarms_create_webhook(tenant, hook).await
    }

    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<WebhookRow>> {
        self.alarms_list_webhooks(tenant).await
    }

    async fn delete_webhook(&self, tenant: TenantId, id: Uuid) -> Result<bool> {
        self.alarms_delete("webhooks", tenant, id).await
    }

    async fn queue_deliveries(
        &self,
        cursor_key: &str,
        cursor: i64,
        rows: &[(TenantId, DeliveryRow)],
    ) -> Result<()> {
        self.alarms_queue_deliveries(cursor_key, cursor, rows).await
    }

    async fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<(TenantId, DeliveryRow)>> {
        self.alarms_due_deliveries(now, limit).await
    }

    async fn record_delivery_attempt(&self, tenant: TenantId, row: &DeliveryRow) -> Result<()> {
        self.alarms_record_attempt(tenant, row).await
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        self.alarms_list_deliveries(tenant, status, limit).await
    }

    async fn append_audit(
        &self,
        tenant: Option<TenantId>,
        entry: &NewAuditEntry,
    ) -> Result<AuditEntry> {
        self.audit_append(tenant, entry).await
    }

    async fn list_audit(
        &self,
        tenant: TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        self.audit_list(tenant, after_seq, limit).await
    }

    async fn audit_chain(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.audit_chain_after(after_seq, limit).await
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>> {
        self.audit_read_anchor().await
    }

    async fn apply_billing(
        &self,
        tenant: TenantId,
        update: &BillingUpdate,
    ) -> Result<BillingOutcome> {
        self.billing_apply(tenant, update).await
    }

    async fn get_billing(&self, tenant: TenantId) -> Result<Option<BillingRow>> {
        self.billing_get(tenant).await
    }

    async fn billing_tenant(&self, customer_id: &str) -> Result<Option<TenantId>> {
        self.billing_tenant_of(customer_id).await
    }

    async fn upsert_plan(&self, plan: &Plan) -> Result<()> {
        self.plan_upsert(plan).await
    }
    async fn list_plans(&self) -> Result<Vec<Plan>> {
        self.plans_list().await
    }
    async fn get_plan(&self, name: &str) -> Result<Option<Plan>> {
        self.plan_get(name).await
    }
    async fn delete_plan(&self, name: &str) -> Result<bool> {
        self.plan_delete(name).await
    }
    async fn set_tenant_plan(&self, tenant: TenantId, plan: &TenantPlan) -> Result<()> {
        self.tenant_plan_set(tenant, plan).await
    }
    async fn tenant_plan(&self, tenant: TenantId) -> Result<TenantPlan> {
        self.tenant_plan_get(tenant).await
    }
    async fn effective_plan(&self, tenant: TenantId) -> Result<EffectivePlan> {
        self.plan_effective(tenant).await
    }
    async fn cancel_tenant(&self, tenant: TenantId, now: i64, delete_after: i64) -> Result<()> {
        self.tenant_cancel(tenant, now, delete_after).await
    }
    async fn reactivate_tenant(&self, tenant: TenantId) -> Result<bool> {
        self.tenant_reactivate(tenant).await
    }
    async fn tenants_due_for_deletion(&self, now: i64) -> Result<Vec<Tenant>> {
        self.tenants_due(now).await
    }
    async fn tenant_blob_keys(&self, tenant: TenantId) -> Result<Vec<String>> {
        self.blob_keys_of(tenant).await
    }
    async fn purge_tenant(
        &self,
        tenant: TenantId,
        now: i64,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        self.tenant_purge(tenant, now).await
    }
    async fn delete_tenant_data_before(
        &self,
        tenant: TenantId,
        before: i64,
    ) -> Result<RetentionReport> {
        self.data_before(tenant, before).await
    }
    async fn spent_spool(
        &self,
        tenant: Option<TenantId>,
        rules: &[SpoolRule<'_>],
        before: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, DeviceId, Uuid, String)>> {
        self.spool_spent(tenant, rules, before, limit).await
    }
    async fn mark_spool_deleted(
        &self,
        tenant: TenantId,
        batches: &[(DeviceId, Uuid)],
        now: i64,
    ) -> Result<()> {
        self.spool_mark_deleted(tenant, batches, now).await
    }

    async fn create_user(&self, tenant: Option<TenantId>, user: &UserRow) -> Result<()> {
        self.users_create(tenant, user).await
    }

    async fn get_user(&self, tenant: Option<TenantId>, id: UserId) -> Result<Option<UserRow>> {
        self.users_get(tenant, id).await
    }

    async fn user_by_email(
        &self,
        tenant: Option<TenantId>,
        email: &str,
    ) -> Result<Option<UserRow>> {
        self.users_by_email(tenant, email).await
    }

    async fn user_by_setup_token(
        &self,
        tenant: Option<TenantId>,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>> {
        self.users_by_setup_token(tenant, token_hash, now).await
    }

    async fn list_users(&self, tenant: Option<TenantId>) -> Result<Vec<UserRow>> {
        self.users_list(tenant).await
    }

    async fn update_user(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        update: &UserUpdate,
    ) -> Result<bool> {
        self.users_update(tenant, id, update).await
    }

    async fn login_failed(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
        max_failures: u32,
        lock_secs: i64,
    ) -> Result<LoginFailure> {
        self.users_login_failed(tenant, id, now, max_failures, lock_secs)
            .await
    }

    async fn login_succeeded(&self, tenant: Option<TenantId>, id: UserId) -> Result<()> {
        self.users_login_succeeded(tenant, id).await
    }

    async fn use_totp_step(&self, tenant: Option<TenantId>, id: UserId, step: i64) -> Result<bool> {
        self.users_use_totp_step(tenant, id, step).await
    }

    async fn use_recovery_code(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        code_hash: &str,
        now: i64,
    ) -> Result<bool> {
        self.users_use_recovery_code(tenant, id, code_hash, now)
            .await
    }

    async fn offboard_user(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
    ) -> Result<Option<Revoked>> {
        self.users_offboard(tenant, id, now).await
    }

    async fn create_session(&self, tenant: TenantId, session: &SessionRow) -> Result<()> {
        self.sessions_create(tenant, session).await
    }

    async fn get_session(&self, tenant: TenantId, id_hash: &str) -> Result<Option<SessionRow>> {
        self.sessions_get(tenant, id_hash).await
    }

    async fn touch_session(&self, tenant: TenantId, id_hash: &str, now: i64) -> Result<()> {
        self.sessions_touch(tenant, id_hash, now).await
    }

    async fn revoke_session(&self, tenant: TenantId, id_hash: &str, now: i64) -> Result<bool> {
        self.sessions_revoke(tenant, id_hash, now).await
    }

    async fn list_api_tokens(&self, tenant: TenantId) -> Result<Vec<ApiToken>> {
        self.tokens_list(tenant).await
    }

    async fn revoke_api_token(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool> {
        self.tokens_revoke(tenant, id, now).await
    }

    async fn create_msp_grant(&self, tenant: TenantId, grant: &MspGrantRow) -> Result<()> {
        self.grants_create(tenant, grant).await
    }

    async fn list_msp_grants(&self, tenant: TenantId) -> Result<Vec<MspGrantRow>> {
        self.grants_list(tenant).await
    }

    async fn active_msp_grant(
        &self,
        tenant: TenantId,
        user: UserId,
        now: i64,
    ) -> Result<Option<MspGrantRow>> {
        self.grants_active(tenant, user, now).await
    }

    async fn revoke_msp_grant(
        &self,
        tenant: TenantId,
        id: Uuid,
        now: i64,
    ) -> Result<Option<(MspGrantRow, Revoked)>> {
        self.grants_revoke(tenant, id, now).await
    }

    async fn config_doc_versions(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        limit: u32,
    ) -> Result<Vec<ConfigDocRow>> {
        self.cfg_doc_versions(tenant, layer, scope, limit).await
    }

    async fn config_doc(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        version: Option<u64>,
    ) -> Result<Option<ConfigDocRow>> {
        self.cfg_doc(tenant, layer, scope, version).await
    }

    async fn latest_config_docs(&self, tenant: TenantId) -> Result<Vec<ConfigDocRow>> {
        self.cfg_latest_docs(tenant).await
    }

    async fn save_config_doc(
        &self,
        tenant: TenantId,
        row: &ConfigDocRow,
        expected: u64,
    ) -> Result<bool> {
        self.cfg_save_doc(tenant, row, expected).await
    }

    async fn create_config_group(&self, tenant: TenantId, name: &str, now: i64) -> Result<bool> {
        self.cfg_create_group(tenant, name, now).await
    }

    async fn delete_config_group(&self, tenant: TenantId, name: &str) -> Result<bool> {
        self.cfg_delete_group(tenant, name).await
    }

    async fn config_groups(&self, tenant: TenantId) -> Result<Vec<String>> {
        self.cfg_groups(tenant).await
    }

    async fn set_device_group(
        &self,
        tenant: TenantId,
        device: DeviceId,
        group: Option<&str>,
    ) -> Result<()> {
        self.cfg_set_device_group(tenant, device, group).await
    }

    async fn device_groups(&self, tenant: TenantId) -> Result<Vec<(DeviceId, String)>> {
        self.cfg_device_groups(tenant).await
    }

    async fn allocate_config_revisions(&self, tenant: TenantId, n: u64) -> Result<u64> {
        self.cfg_allocate_revisions(tenant, n).await
    }

    async fn device_configs(&self, tenant: TenantId) -> Result<Vec<DeviceConfigRow>> {
        self.cfg_device_configs(tenant, None, None).await
    }

    async fn pending_device_configs(&self, tenant: TenantId) -> Result<Vec<DeviceConfigRow>> {
        self.cfg_device_configs(tenant, None, Some("pending")).await
    }

    async fn device_config(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Option<DeviceConfigRow>> {
        Ok(self
            .cfg_device_configs(tenant, Some(device), None)
            .await?
            .pop())
    }

    async fn put_device_configs(
        &self,
        tenant: TenantId,
        rows: &[(DeviceConfigRow, ConfigEvent)],
    ) -> Result<()> {
        self.cfg_put_device_configs(tenant, rows).await
    }

    async fn config_history(
        &self,
        tenant: TenantId,
        device: DeviceId,
        limit: u32,
    ) -> Result<Vec<ConfigEvent>> {
        self.cfg_history(tenant, device, limit).await
    }

    async fn supersede_instructions(
        &self,
        tenant: TenantId,
        kind: &str,
        newest: &[(DeviceId, u64)],
    ) -> Result<Vec<u64>> {
        self.cfg_supersede(tenant, kind, newest).await
    }

    async fn put_rollout(&self, tenant: TenantId, r: &RolloutRow) -> Result<()> {
        self.cfg_put_rollout(tenant, r).await
    }

    async fn rollouts(&self, tenant: TenantId, limit: u32) -> Result<Vec<RolloutRow>> {
        self.cfg_rollouts(tenant, limit).await
    }

    fn set_field_cipher(&self, cipher: Arc<dyn FieldCipher>) {
        self.install_cipher(cipher)
    }

    async fn data_keys(&self, tenant: TenantId) -> Result<Vec<DataKeyRow>> {
        self.keys_list(tenant).await
    }

    async fn add_data_key(&self, tenant: TenantId, row: &DataKeyRow) -> Result<()> {
        self.keys_add(tenant, row).await
    }

    async fn retire_data_key(&self, tenant: TenantId, version: u32, now: i64) -> Result<bool> {
        self.keys_retire(tenant, version, now).await
    }

    async fn reseal_fields(&self, tenant: TenantId, limit: u32) -> Result<u64> {
        self.keys_reseal(tenant, limit).await
    }

    async fn key_usage(&self, tenant: TenantId) -> Result<KeyUsage> {
        self.keys_usage(tenant).await
    }

    async fn segments_off_key(
        &self,
        tenant: TenantId,
        version: u32,
        limit: u32,
    ) -> Result<Vec<FlowSegment>> {
        sqlx::query(
            "SELECT * FROM flow_segments WHERE tenant_id = ?
             AND (key_version IS NULL OR key_version <> ?) ORDER BY start_ms, id LIMIT ?",
        )
        .bind(tenant.0.to_string())
        .bind(version)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(segment_from)
        .collect()
    }

    async fn set_segment_key_version(
        &self,
        tenant: TenantId,
        id: Uuid,
        version: u32,
    ) -> Result<bool> {
        let r =
            sqlx::query("UPDATE flow_segments SET key_version = ? WHERE tenant_id = ? AND id = ?")
                .bind(version)
                .bind(tenant.0.to_string())
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn destroy_tenant_keys(&self, tenant: TenantId) -> Result<()> {
        self.keys_destroy(tenant).await
    }

    async fn replace_meta(&self, key: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        let r = sqlx::query("UPDATE portal_meta SET value = ? WHERE key = ? AND value = ?")
            .bind(value)
            .bind(key)
            .bind(expected)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn replace_device_key(
        &self,
        tenant: TenantId,
        device: DeviceId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        self.actions_replace_device_key(tenant, device, old, new)
            .await
    }

    async fn list_device_batches(
        &self,
        tenant: TenantId,
        device: DeviceId,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<BatchRow>> {
        self.actions_device_batches(tenant, device, kind, limit)
            .await
    }

    async fn create_report(
        &self,
        tenant: TenantId,
        info: &ReportInfo,
        body: &serde_json::Value,
    ) -> Result<bool> {
        self.reports_create(tenant, info, body).await
    }
    async fn list_reports(
        &self,
        tenant: TenantId,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportInfo>> {
        self.reports_list(tenant, kind, limit).await
    }
    async fn get_report(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<(ReportInfo, serde_json::Value)>> {
        self.reports_get(tenant, id).await
    }
    async fn report_for_period(
        &self,
        tenant: TenantId,
        kind: &str,
        period_start: i64,
    ) -> Result<Option<ReportInfo>> {
        self.reports_for_period(tenant, kind, period_start).await
    }
    async fn mark_report_emailed(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool> {
        self.reports_mark_emailed(tenant, id, now).await
    }
    async fn alarm_counts_between(
        &self,
        tenant: TenantId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, String, AlarmState, u64)>> {
        self.reports_alarm_counts(tenant, from_ms, to_ms).await
    }

    async fn list_target_lists(&self, tenant: TenantId) -> Result<Vec<TargetListRow>> {
        self.targets_list(tenant).await
    }
    async fn get_target_list(&self, tenant: TenantId, name: &str) -> Result<Option<TargetListRow>> {
        self.targets_get(tenant, name).await
    }
    async fn put_target_list(
        &self,
        tenant: TenantId,
        list: &TargetListRow,
        expected_version: u64,
    ) -> Result<u64> {
        self.targets_put(tenant, list, expected_version).await
    }
    async fn record_target_import(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
        entries: Option<&[String]>,
        import: &TargetImport,
    ) -> Result<Option<u64>> {
        self.targets_record_import(tenant, name, source, entries, import)
            .await
    }
    async fn delete_target_list(&self, tenant: TenantId, name: &str) -> Result<bool> {
        self.targets_delete(tenant, name).await
    }
    async fn target_list_versions(&self, tenant: TenantId) -> Result<Vec<(String, u64)>> {
        self.targets_versions(tenant).await
    }

    async fn put_vpn_interface(&self, tenant: TenantId, row: &VpnInterfaceRow) -> Result<()> {
        self.vpn_put_interface(tenant, row).await
    }

    async fn get_vpn_interface(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Option<VpnInterfaceRow>> {
        self.vpn_get_interface(tenant, device).await
    }

    async fn create_vpn_peer(&self, tenant: TenantId, row: &VpnPeerRow) -> Result<()> {
        self.vpn_create_peer(tenant, row).await
    }

    async fn list_vpn_peers(&self, tenant: TenantId, device: DeviceId) -> Result<Vec<VpnPeerRow>> {
        self.vpn_list_peers(tenant, device).await
    }

    async fn get_vpn_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
    ) -> Result<Option<VpnPeerRow>> {
        self.vpn_get_peer(tenant, device, id).await
    }

    async fn revoke_vpn_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
        now: i64,
    ) -> Result<bool> {
        self.vpn_revoke_peer(tenant, device, id, now).await
    }
}
