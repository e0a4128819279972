//! The audit log of the SQLite backend (migration 0006). The `Store` impl
//! in `sqlite.rs` calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::sqlite::{to_i64, SqliteStore};
use crate::*;

/// The `portal_meta` key of the anchor: 8 bytes of seq (big-endian), then
/// the 32-byte hash.
const ANCHOR_KEY: &str = "audit_anchor";

fn entry_from(row: &SqliteRow) -> Result<AuditEntry> {
    let seq: i64 = row.try_get("seq")?;
    let seq = u64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("audit entry seq {seq} is negative")))?;
    let tenant: Option<String> = row.try_get("tenant_id")?;
    let tenant_id = tenant
        .map(|t| {
            Uuid::parse_str(&t).map(TenantId).map_err(|e| {
                StoreError::Corrupt(format!("audit entry seq {seq}: tenant_id {t:?}: {e}"))
            })
        })
        .transpose()?;
    Ok(AuditEntry {
        seq,
        tenant_id,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn anchor_from(bytes: &[u8]) -> Result<AuditAnchor> {
    if bytes.len() != 40 {
        return Err(StoreError::Corrupt(format!(
            "audit anchor is {} bytes, not 40",
            bytes.len()
        )));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[..8]);
    Ok(AuditAnchor {
        seq: u64::from_be_bytes(seq),
        hash: bytes[8..].to_vec(),
    })
}

async fn read_anchor(tx: &mut Transaction<'_, Sqlite>) -> Result<Option<AuditAnchor>> {
    let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM portal_meta WHERE key = ?")
        .bind(ANCHOR_KEY)
        .fetch_optional(&mut **tx)
        .await?;
    v.as_deref().map(anchor_from).transpose()
}

/// A cursor beyond any stored seq (they are below i64::MAX) reads nothing,
/// rather than failing on the conversion.
fn seq_bound(after_seq: u64) -> i64 {
    i64::try_from(after_seq).unwrap_or(i64::MAX)
}

impl SqliteStore {
    pub(crate) async fn audit_append(
        &self,
        tenant: Option<TenantId>,
        new: &NewAuditEntry,
    ) -> Result<AuditEntry> {
        // IMMEDIATE takes the write lock before the anchor is read, so two
        // appenders (threads or processes) cannot both extend the same head.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let (seq, prev_hash) = match read_anchor(&mut tx).await? {
            Some(a) => (
                a.seq
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Corrupt("audit seq overflow".into()))?,
                a.hash,
            ),
            None => {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                    .fetch_one(&mut *tx)
                    .await?;
                if n > 0 {
                    // Starting a new chain here would hide whatever was
                    // removed: refuse, and let verification say what broke.
                    return Err(StoreError::Corrupt(format!(
                        "the audit log has {n} entries but no anchor: it was tampered with; \
                         run `rampart audit verify`"
                    )));
                }
                (1, crate::audit::GENESIS.to_vec())
            }
        };
        let mut e = AuditEntry {
            seq,
            tenant_id: tenant,
            at: new.at,
            actor: new.actor.clone(),
            action: new.action.clone(),
            target: new.target.clone(),
            detail: new.detail.to_string(),
            prev_hash,
            hash: Vec::new(),
        };
        e.hash = crate::audit::entry_hash(&e).to_vec();
        sqlx::query(
            "INSERT INTO audit_log (seq, tenant_id, at, actor, action, target, detail, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(to_i64(e.seq, "audit seq")?)
        .bind(e.tenant_id.map(|t| t.0.to_string()))
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.detail)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            if crate::sqlite::is_unique_violation(&err) {
                StoreError::Corrupt(format!(
                    "audit seq {seq} exists beyond the anchor: the log was tampered with; \
                     run `rampart audit verify`"
                ))
            } else {
                err.into()
            }
        })?;
        let mut anchor = e.seq.to_be_bytes().to_vec();
        anchor.extend_from_slice(&e.hash);
        sqlx::query(
            "INSERT INTO portal_meta (key, value) VALUES (?, ?)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(ANCHOR_KEY)
        .bind(anchor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub(crate) async fn audit_list(
        &self,
        tenant: TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        sqlx::query("SELECT * FROM audit_log WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?")
            .bind(tenant.0.to_string())
            .bind(seq_bound(after_seq))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(entry_from)
            .collect()
    }

    pub(crate) async fn audit_chain_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(seq_bound(after_seq))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(entry_from)
            .collect()
    }

    pub(crate) async fn audit_read_anchor(&self) -> Result<Option<AuditAnchor>> {
        let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM portal_meta WHERE key = ?")
            .bind(ANCHOR_KEY)
            .fetch_optional(self.pool())
            .await?;
        v.as_deref().map(anchor_from).transpose()
    }
}
