//! Reading a database snapshot (`SqliteStore::snapshot_to`, `VACUUM INTO`)
//! for backups: which blobs it names and which migrations it has.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;

use crate::sqlite::SqliteStore;
use crate::Result;

/// The column that names a blob, in every table that names one. Found by
/// name rather than listed, so a table added later with a `blob_key`
/// column is backed up with its blobs without anyone remembering to.
const BLOB_COLUMN: &str = "blob_key";

impl SqliteStore {
    /// The newest migration this build knows: a snapshot with a higher
    /// level was made by a newer portal.
    pub fn latest_migration() -> i64 {
        super::sqlite::migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    }

    /// The snapshot's migration level and every blob key it names (sorted,
    /// without repeats), read without changing the file.
    pub async fn inspect_snapshot(path: &Path) -> Result<(i64, Vec<String>)> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .immutable(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let level: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&pool)
                .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c
             WHERE m.type = 'table' AND c.name = ? ORDER BY m.name",
        )
        .bind(BLOB_COLUMN)
        .fetch_all(&pool)
        .await?;
        let mut keys = Vec::new();
        for t in tables {
            // Table names come from the schema, not from input; quoted anyway.
            let q = format!(
                "SELECT DISTINCT {BLOB_COLUMN} FROM \"{}\"",
                t.replace('"', "\"\"")
            );
            for row in sqlx::query(&q).fetch_all(&pool).await? {
                keys.push(row.try_get::<String, _>(0)?);
            }
        }
        pool.close().await;
        keys.sort();
        keys.dedup();
        Ok((level.unwrap_or(0), keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite;
    use crate::Store;

    #[tokio::test]
    async fn a_snapshot_names_every_blob_of_its_batches_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("live.db"))
            .await
            .unwrap();
        // The shared suite leaves batches and flow segments behind.
        suite::run_all(&s).await;
        let snap = dir.path().join("snap.db");
        s.snapshot_to(&snap).await.unwrap();
        let (level, keys) = SqliteStore::inspect_snapshot(&snap).await.unwrap();
        assert_eq!(level, SqliteStore::latest_migration());
        let mut want: Vec<String> = Vec::new();
        for t in s.list_tenants().await.unwrap() {
            for b in s.list_batches(t.id, None, 10_000).await.unwrap() {
                want.push(b.blob_key);
            }
            for level in crate::SegmentLevel::ALL {
                for seg in s
                    .list_flow_segments(t.id, level, i64::MIN, i64::MAX)
                    .await
                    .unwrap()
                {
                    want.push(seg.blob_key);
                }
            }
        }
        want.sort();
        want.dedup();
        assert!(!want.is_empty(), "the suite left no blobs to look for");
        assert_eq!(keys, want);
    }
}
