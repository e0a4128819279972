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
    /// Removes for good the deleted blobs whose grace period is over and
    /// that no live backup lease protects; returns how many. Backends that
    /// delete at once have nothing to purge.
    async fn purge_deleted(&self, _now: std::time::SystemTime) -> Result<u64> {
        Ok(0)
    }
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
///
/// With a trash ([`LocalBlobStore::with_trash`]), `delete` moves the file
/// into the trash instead of removing it, and [`BlobStore::purge_deleted`]
/// removes it once it has been there for the grace period and no backup
/// lease is live. That is what makes an online backup consistent: a backup
/// copies the blobs its database snapshot names, and a blob the snapshot
/// names may be deleted (compaction, retention) before it is copied; the
/// backup then reads it from the trash (see `crate::backup` in the portal
/// and ARCHITECTURE.md).
pub struct LocalBlobStore {
    root: PathBuf,
    trash: Option<Trash>,
}

/// Where deleted blobs wait, and for how long at least.
struct Trash {
    dir: PathBuf,
    grace: std::time::Duration,
}

/// Leases live in the trash directory, one file per backup holding the
/// unix second it expires at.
const LEASE_DIR: &str = ".leases";

impl LocalBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBlobStore {
            root: root.into(),
            trash: None,
        }
    }

    /// A store whose deletes keep the blob in `trash` for at least `grace`,
    /// and for as long as any backup lease is live.
    pub fn with_trash(
        root: impl Into<PathBuf>,
        trash: impl Into<PathBuf>,
        grace: std::time::Duration,
    ) -> Self {
        LocalBlobStore {
            root: root.into(),
            trash: Some(Trash {
                dir: trash.into(),
                grace,
            }),
        }
    }

    /// The blob as stored, or, when it was deleted and is still in the
    /// trash, as it was: what a backup reads for a key its snapshot names.
    pub fn open_for_backup(&self, key: &str) -> Result<Option<std::fs::File>> {
        let mut paths = vec![self.path(key)?];
        if let Some(t) = &self.trash {
            paths.push(t.dir.join(key));
        }
        for p in paths {
            match std::fs::File::open(&p) {
                Ok(f) => return Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(key)(e)),
            }
        }
        Ok(None)
    }

    /// Takes (or renews) the backup lease `id` until `expires`: while it is
    /// live, nothing is purged from the trash. A crashed backup's lease
    /// simply expires.
    pub fn hold_lease(&self, id: &str, expires: std::time::SystemTime) -> Result<()> {
        let Some(t) = &self.trash else {
            return Err(StoreError::Corrupt(
                "this blob store has no trash, so it cannot hold backup leases".into(),
            ));
        };
        validate_key(id)?;
        let secs = expires
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let key = format!("{LEASE_DIR}/{id}");
        put_durable(&t.dir.join(LEASE_DIR).join(id), secs.to_string().as_bytes()).map_err(io(&key))
    }

    pub fn release_lease(&self, id: &str) -> Result<()> {
        if let Some(t) = &self.trash {
            validate_key(id)?;
            match std::fs::remove_file(t.dir.join(LEASE_DIR).join(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(id)(e)),
            }
        }
        Ok(())
    }

    fn path_in_trash(&self, key: &str) -> Option<PathBuf> {
        self.trash.as_ref().map(|t| t.dir.join(key))
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
        let path = self.path(key)?;
        let Some(to) = self.path_in_trash(key) else {
            return match tokio::fs::remove_file(path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(key)(e)),
            };
        };
        tokio::task::spawn_blocking(move || move_to_trash(&path, &to))
            .await
            .map_err(|e| StoreError::Io {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?
            .map_err(io(key))
    }

    async fn purge_deleted(&self, now: std::time::SystemTime) -> Result<u64> {
        let Some(t) = &self.trash else {
            return Ok(0);
        };
        let (dir, grace) = (t.dir.clone(), t.grace);
        tokio::task::spawn_blocking(move || purge(&dir, grace, now))
            .await
            .map_err(|e| StoreError::Io {
                key: "trash".into(),
                source: std::io::Error::other(e),
            })?
            .map_err(io("trash"))
    }
}

/// Renames the blob into the trash and stamps it with the time of its
/// deletion (its mtime), which the grace period counts from.
fn move_to_trash(path: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::rename(path, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(std::time::SystemTime::now())
}

/// Whether a backup lease in `dir` is live at `now`. An unreadable lease
/// counts as live: keeping a file too long is the safe mistake.
fn lease_live(dir: &Path, now: std::time::SystemTime) -> std::io::Result<bool> {
    let now_s = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let entries = match std::fs::read_dir(dir.join(LEASE_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for e in entries {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue; // a lease being written
        }
        let until = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match until {
            Some(u) if u <= now_s => {
                let _ = std::fs::remove_file(&p);
            }
            _ => return Ok(true),
        }
    }
    Ok(false)
}

fn purge(
    dir: &Path,
    grace: std::time::Duration,
    now: std::time::SystemTime,
) -> std::io::Result<u64> {
    if lease_live(dir, now)? {
        return Ok(0);
    }
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let ty = e.file_type()?;
            if ty.is_dir() {
                if e.file_name() != LEASE_DIR {
                    stack.push(e.path());
                }
                continue;
            }
            let deleted = e.metadata()?.modified()?;
            if now.duration_since(deleted).is_ok_and(|age| age >= grace) {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
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

    #[tokio::test]
    async fn deleted_blobs_stay_readable_for_backups_until_grace_and_leases_end() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::with_trash(
            dir.path().join("blobs"),
            dir.path().join("trash"),
            Duration::from_secs(600),
        );
        s.put("seg/a.bin", b"old").await.unwrap();
        s.delete("seg/a.bin").await.unwrap();
        // Gone for readers, still there for a backup.
        assert_eq!(s.get("seg/a.bin").await.unwrap(), None);
        let mut f = s
            .open_for_backup("seg/a.bin")
            .unwrap()
            .expect("in the trash");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, b"old");
        let now = SystemTime::now();
        // Inside the grace period nothing is purged.
        assert_eq!(s.purge_deleted(now).await.unwrap(), 0);
        // After it, a live lease still keeps it.
        let later = now + Duration::from_secs(601);
        s.hold_lease("b1", later + Duration::from_secs(60)).unwrap();
        assert_eq!(s.purge_deleted(later).await.unwrap(), 0);
        assert!(s.open_for_backup("seg/a.bin").unwrap().is_some());
        // A released (or expired) lease no longer does.
        s.release_lease("b1").unwrap();
        assert_eq!(s.purge_deleted(later).await.unwrap(), 1);
        assert!(s.open_for_backup("seg/a.bin").unwrap().is_none());
        s.hold_lease("b2", now).unwrap();
        s.put("seg/b.bin", b"x").await.unwrap();
        s.delete("seg/b.bin").await.unwrap();
        assert_eq!(s.purge_deleted(later).await.unwrap(), 1, "expired lease");
        // Without a trash, delete removes at once and leases are refused.
        let plain = LocalBlobStore::new(dir.path().join("plain"));
        plain.put("k", b"v").await.unwrap();
        plain.delete("k").await.unwrap();
        assert!(plain.open_for_backup("k").unwrap().is_none());
        assert!(plain.hold_lease("b3", later).is_err());
    }
}
