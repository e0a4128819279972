//! Large objects (sealed batches in the ingest spool, later flow segments,
//! backups and reports). The embedded backend is a directory; scale-out puts
//! an S3-compatible store behind the same trait.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::{Result, StoreError};

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `data` under `key`, replacing any previous value. Durable when it
    /// returns: the caller may acknowledge the data to its sender.
    async fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Keys are relative paths of plain segments, so no key can escape the root.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadKey(key.to_string()))
    }
}

/// Blobs as files under a root directory, written with temp-file, fsync,
/// rename and directory fsync, so a put that returned survives power loss.
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBlobStore { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        key: key.to_string(),
        source,
    }
}

fn put_durable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        uuid::Uuid::new_v4().simple()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let data = data.to_vec();
        tokio::task::spawn_blocking(move || put_durable(&path, &data))
            .await
            .map_err(|e| StoreError::Io {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?
            .map_err(io(key))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(key)(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(key)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} must be refused");
        }
        validate_key("spool/3f1e/2026-11-23/abc.rpb").unwrap();
    }

    #[tokio::test]
    async fn local_blobs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::new(dir.path());
        assert_eq!(s.get("a/b.bin").await.unwrap(), None);
        s.put("a/b.bin", b"one").await.unwrap();
        s.put("a/b.bin", b"two").await.unwrap();
        assert_eq!(
            s.get("a/b.bin").await.unwrap().as_deref(),
            Some(&b"two"[..])
        );
        s.delete("a/b.bin").await.unwrap();
        s.delete("a/b.bin").await.unwrap();
        assert_eq!(s.get("a/b.bin").await.unwrap(), None);
        assert!(s.put("../x", b"no").await.is_err());
    }
}
