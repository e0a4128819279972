//! `rampart backup` and `rampart restore`: an encrypted, checksummed,
//! consistent online snapshot of the embedded store, and its restoration
//! into a new data dir.
//!
//! A backup directory holds:
//! - `rampart-backup.json`: the header, in the clear: format and version,
//!   the backup id, the backup key wrapped by the master key (associated
//!   data `rampart/backup/<id>/key/v1`), and the SHA-256 of the sealed
//!   manifest. Written last, so a backup cut short has none and is refused.
//! - `manifest.sealed`: the manifest (format version, portal version,
//!   created_at, region, migration level, what was left out, and for each
//!   file its name, what it restores to, its size and SHA-256 before and
//!   after sealing), sealed like the files: the manifest is authenticated.
//! - `files/NNNNNN`: the database snapshot (`000000`) and each blob it
//!   names, sealed. Blob keys (which carry tenant ids and hours) appear
//!   only inside the sealed manifest.
//!
//! Sealing: the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár)
//! of RustCrypto's `aead::stream` over XChaCha20-Poly1305, in 64 KiB
//! chunks, so files of any size are sealed and opened in bounded memory,
//! and a truncated, reordered or cut-at-a-chunk-boundary file fails to
//! open. Each file has its own random nonce prefix and its name and the
//! backup id as associated data, so files cannot be swapped between slots
//! or backups.
//!
//! The backup key is random per backup and wrapped by the portal's
//! [`MasterKey`](crate::crypto::MasterKey), not derived from it: it works
//! the same when the master key lives in a KMS that only wraps and
//! unwraps, and a backup opens only where that master key is available.
//! The tenants' keys inside the database are still wrapped by the master
//! key as in the live store.
//!
//! Consistency: the database is copied with `VACUUM INTO` (one read
//! transaction, so one point in time, while the portal keeps writing), and
//! the blobs copied are exactly those the snapshot names. A blob the
//! snapshot names can be deleted by compaction or retention before it is
//! copied; the portal's blob store moves deleted blobs to a trash for
//! `blob_delete_grace_secs`, and purges nothing while a backup's lease is
//! live, so the backup reads such a blob from the trash (see
//! [`LocalBlobStore`]).
//!
//! Left out: `master.key` (a backup must not carry the key that opens it)
//! and [`VAULT_DIR`], the per-tenant key vault: destroying a tenant's vault
//! entry must make older backups unreadable for that tenant, so restore
//! takes the vault from the operator (`--vault DIR`) or expects it in place.
//! Also left out: operator-provided tenant certificate files, which live
//! outside the data dir where the operator keeps them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use chacha20poly1305::aead::generic_array::GenericArray;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rampart_store::blob::{validate_key, LocalBlobStore};
use rampart_store::sqlite::SqliteStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{self, Actor};
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::service::{now, Portal, ServiceError};

/// The per-tenant key vault's directory in the data dir: never backed up,
/// and restored only from what the operator gives.
pub const VAULT_DIR: &str = "vault";
/// The master key's default file in the data dir: never backed up.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const FORMAT: &str = "rampart-backup";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_FILE: &str = "rampart-backup.json";
pub const MANIFEST_FILE: &str = "manifest.sealed";
const FILES_DIR: &str = "files";
const DB_FILE: &str = "rampart.db";
const SEAL_MAGIC: &[u8; 8] = b"RBKSEAL1";
/// Plaintext bytes per STREAM chunk.
const CHUNK: usize = 64 * 1024;
/// A STREAM nonce for XChaCha20-Poly1305 is 24 - 5 bytes: the rest is the
/// chunk counter and the last-chunk flag.
const NONCE_PREFIX: usize = 19;
const TAG: usize = 16;
/// How long a lease lasts without renewal; a crashed backup's lease lapses.
const LEASE_TTL: Duration = Duration::from_secs(600);
const LEASE_RENEW: Duration = Duration::from_secs(60);
/// Bounds on what restore reads before it has authenticated anything.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] rampart_store::StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the backup key does not unwrap with this master key: restore with the master key of the portal that made the backup (or the header {HEADER_FILE} was altered)")]
    WrongKey,
    #[error(
        "backup file {file} is damaged or was tampered with ({why}): restore from another backup"
    )]
    Tampered { file: String, why: String },
    #[error("not a complete backup at {}: {why}", .dir.display())]
    NotABackup { dir: PathBuf, why: String },
    #[error("blob {0} named by the snapshot is missing from the blob store and its trash: run the backup again (a backup that outlives blob_delete_grace_secs without renewing its lease can lose a deleted blob)")]
    BlobMissing(String),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// The clear-text header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub backup_id: Uuid,
    /// Base64 of the backup key wrapped by the master key.
    pub key_wrapped: String,
    pub manifest_sealed_sha256: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Database,
    Blob,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the backup directory (`files/000001`).
    pub name: String,
    pub kind: FileKind,
    /// What it restores to: the blob key, or `rampart.db`.
    pub target: String,
    pub size: u64,
    pub sha256: String,
    pub sealed_size: u64,
    pub sealed_sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: Uuid,
    pub portal_version: String,
    /// Unix seconds when the snapshot was taken.
    pub created_at: i64,
    pub region: String,
    /// The newest store migration in the snapshot.
    pub migration_level: i64,
    /// What a backup never holds (see the module docs).
    pub excluded: Vec<String>,
    pub files: Vec<FileEntry>,
}

/// What `rampart backup` reports.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub backup_id: Uuid,
    pub dir: PathBuf,
    pub created_at: i64,
    pub migration_level: i64,
    pub blobs: usize,
    /// Plaintext bytes backed up (database and blobs).
    pub bytes: u64,
}

/// What `rampart restore` reports.
#[derive(Debug, Serialize)]
pub struct RestoreSummary {
    pub backup_id: Uuid,
    pub data_dir: PathBuf,
    pub created_at: i64,
    pub migration_level: i64,
    pub blobs: usize,
    pub bytes: u64,
    pub vault_copied: bool,
}

fn aad(id: Uuid, slot: &str) -> Vec<u8> {
    format!("rampart/backup/{id}/{slot}/v1").into_bytes()
}

fn sha_hex(h: Sha256) -> String {
    hex::encode(h.finalize())
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Sizes and digests of one sealed file: (size, sha256, sealed size, sealed sha256).
type Sealed = (u64, String, u64, String);

/// Writes `w` while hashing and counting what is written.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(data)?;
        self.hash.update(data);
        self.len += data.len() as u64;
        Ok(())
    }
}

/// Seals `input` to `out` with STREAM; returns sizes and digests of both sides.
fn seal_stream(
    key: &[u8; 32],
    aad: &[u8],
    input: &mut impl Read,
    out: &mut impl Write,
) -> std::io::Result<Sealed> {
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let prefix: [u8; NONCE_PREFIX] = rand::random();
    let mut enc = EncryptorBE32::from_aead(cipher, GenericArray::from_slice(&prefix));
    let mut w = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        len: 0,
    };
    w.put(SEAL_MAGIC)?;
    w.put(&prefix)?;
    let (mut plain_hash, mut plain_len) = (Sha256::new(), 0u64);
    let mut cur = Zeroizing::new(vec![0u8; CHUNK]);
    let mut next = Zeroizing::new(vec![0u8; CHUNK]);
    let mut n = read_full(input, &mut cur)?;
    let seal_err = |_| std::io::Error::other("sealing a backup chunk failed");
    loop {
        plain_hash.update(&cur[..n]);
        plain_len += n as u64;
        let m = if n == CHUNK {
            read_full(input, &mut next)?
        } else {
            0
        };
        if m == 0 {
            let ct = enc
                .encrypt_last(Payload {
                    msg: &cur[..n],
                    aad,
                })
                .map_err(seal_err)?;
            w.put(&ct)?;
            break;
        }
        let ct = enc
            .encrypt_next(Payload {
                msg: &cur[..n],
                aad,
            })
            .map_err(seal_err)?;
        w.put(&ct)?;
        std::mem::swap(&mut cur, &mut next);
        n = m;
    }
    Ok((plain_len, sha_hex(plain_hash), w.len, sha_hex(w.hash)))
}

/// Opens a file sealed by [`seal_stream`], writing the plaintext to `out`;
/// returns its size and SHA-256. Any damage is an error (`Err(why)`).
fn open_stream(
    key: &[u8; 32],
    aad: &[u8],
    input: &mut impl Read,
    out: &mut impl Write,
) -> std::result::Result<(u64, String), String> {
    let mut head = [0u8; SEAL_MAGIC.len() + NONCE_PREFIX];
    let got = read_full(input, &mut head).map_err(|e| e.to_string())?;
    if got < head.len() || &head[..SEAL_MAGIC.len()] != SEAL_MAGIC {
        return Err("no sealed-file header".into());
    }
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let mut dec =
        DecryptorBE32::from_aead(cipher, GenericArray::from_slice(&head[SEAL_MAGIC.len()..]));
    let unit = CHUNK + TAG;
    let mut cur = vec![0u8; unit];
    let mut next = vec![0u8; unit];
    let mut n = read_full(input, &mut cur).map_err(|e| e.to_string())?;
    let (mut hash, mut len) = (Sha256::new(), 0u64);
    let mut emit = |pt: &[u8]| -> std::result::Result<(), String> {
        hash.update(pt);
        len += pt.len() as u64;
        out.write_all(pt).map_err(|e| e.to_string())
    };
    loop {
        let m = if n == unit {
            read_full(input, &mut next).map_err(|e| e.to_string())?
        } else {
            0
        };
        if m == 0 {
            let pt = Zeroizing::new(
                dec.decrypt_last(Payload {
                    msg: &cur[..n],
                    aad,
                })
                .map_err(|_| "the last chunk does not authenticate (truncated?)")?,
            );
            emit(&pt)?;
            break;
        }
        let pt = Zeroizing::new(
            dec.decrypt_next(Payload {
                msg: &cur[..n],
                aad,
            })
            .map_err(|_| "a chunk does not authenticate")?,
        );
        emit(&pt)?;
        std::mem::swap(&mut cur, &mut next);
        n = m;
    }
    Ok((len, sha_hex(hash)))
}

/// Creates `path` and writes it through `f`, then fsyncs it.
fn write_new(path: &Path, f: impl FnOnce(&mut std::fs::File) -> Result<Sealed>) -> Result<Sealed> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("cannot create", path))?;
    let r = f(&mut file)?;
    file.sync_all().map_err(io_err("cannot sync", path))?;
    Ok(r)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

/// True when `dir` does not exist or holds nothing but the names in `allow`.
fn empty_but(dir: &Path, allow: &[&str]) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(io_err("cannot list", dir))?;
                if !allow.iter().any(|a| e.file_name() == *a) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err("cannot list", dir)(e)),
    }
}

/// Removes the snapshot's plaintext copy however the backup ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes a backup of the portal's data dir into `out` (which must be
/// empty or not exist), while the portal may be running in another process.
/// Recorded in the audit log as `backup.create`.
pub async fn create(portal: &Portal, out: &Path) -> Result<BackupSummary> {
    let config = &portal.config;
    if !empty_but(out, &[])? {
        return Err(BackupError::Usage(format!(
            "{} is not empty: give a new directory for the backup",
            out.display()
        )));
    }
    if out.starts_with(&config.data_dir) {
        return Err(BackupError::Usage(format!(
            "{} is inside the data dir: put backups elsewhere",
            out.display()
        )));
    }
    let id = Uuid::new_v4();
    let lease_id = format!("backup-{id}");
    let blobs = LocalBlobStore::with_trash(
        config.blob_dir(),
        config.blob_trash_dir(),
        Duration::from_secs(config.blob_delete_grace_secs),
    );
    // The lease first, then the snapshot: every blob the snapshot names is
    // then either still in place or in the trash, where it stays.
    blobs.hold_lease(&lease_id, SystemTime::now() + LEASE_TTL)?;
    let r = create_leased(portal, out, id, &lease_id, blobs).await;
    // A lease that could not be released lapses after LEASE_TTL.
    let cleanup = LocalBlobStore::with_trash(
        config.blob_dir(),
        config.blob_trash_dir(),
        Duration::from_secs(config.blob_delete_grace_secs),
    );
    if let Err(e) = cleanup.release_lease(&lease_id) {
        tracing::warn!(error = %e, lease = %lease_id, "could not release the backup lease; it lapses by itself");
    }
    if r.is_err() {
        // What was written is no backup (it has no header); leave the
        // directory as it was given, empty.
        let _ = std::fs::remove_dir_all(out.join(FILES_DIR));
        let _ = std::fs::remove_file(out.join(MANIFEST_FILE));
    }
    let summary = r?;
    audit::record(
        portal,
        None,
        &Actor::Cli,
        "backup.create",
        &format!("backup:{id}"),
        serde_json::json!({
            "dir": out.display().to_string(),
            "created_at": summary.created_at,
            "migration_level": summary.migration_level,
            "blobs": summary.blobs,
            "bytes": summary.bytes,
        }),
    )
    .await?;
    Ok(summary)
}

async fn create_leased(
    portal: &Portal,
    out: &Path,
    id: Uuid,
    lease_id: &str,
    blobs: LocalBlobStore,
) -> Result<BackupSummary> {
    let config = &portal.config;
    // The plaintext snapshot stays inside the data dir, beside the live
    // database it copies, and is removed when the backup ends.
    let tmp = TempFile(config.data_dir.join(format!(".backup-{id}.db")));
    let store = SqliteStore::open(&config.db_path()).await?;
    let created_at = now();
    store.snapshot_to(&tmp.0).await?;
    drop(store);
    let (migration_level, keys) = SqliteStore::inspect_snapshot(&tmp.0).await?;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, key.as_mut());
    let key_wrapped = portal.master.wrap(key.as_ref(), &aad(id, "key"));
    let out = out.to_path_buf();
    let region = config.region.clone();
    let lease_id = lease_id.to_string();
    let tmp_path = tmp.0.clone();
    let summary = tokio::task::spawn_blocking(move || -> Result<BackupSummary> {
        let files_dir = out.join(FILES_DIR);
        std::fs::create_dir_all(&files_dir).map_err(io_err("cannot create", &files_dir))?;
        let mut files = Vec::with_capacity(keys.len() + 1);
        let mut seal_one = |kind: FileKind, target: &str, src: &mut std::fs::File| {
            let name = format!("{FILES_DIR}/{:06}", files.len());
            let path = out.join(&name);
            let (size, sha256, sealed_size, sealed_sha256) = write_new(&path, |f| {
                let mut w = std::io::BufWriter::new(f);
                let r = seal_stream(&key, &aad(id, &name), src, &mut w)
                    .map_err(io_err("cannot seal into", &path))?;
                w.flush().map_err(io_err("cannot write", &path))?;
                Ok(r)
            })?;
            files.push(FileEntry {
                name,
                kind,
                target: target.to_string(),
                size,
                sha256,
                sealed_size,
                sealed_sha256,
            });
            Ok::<_, BackupError>(())
        };
        let mut db = std::fs::File::open(&tmp_path).map_err(io_err("cannot read", &tmp_path))?;
        seal_one(FileKind::Database, DB_FILE, &mut db)?;
        let mut renewed = std::time::Instant::now();
        for k in &keys {
            if renewed.elapsed() >= LEASE_RENEW {
                blobs.hold_lease(&lease_id, SystemTime::now() + LEASE_TTL)?;
                renewed = std::time::Instant::now();
            }
            let mut f = blobs
                .open_for_backup(k)?
                .ok_or_else(|| BackupError::BlobMissing(k.clone()))?;
            seal_one(FileKind::Blob, k, &mut f)?;
        }
        fsync_dir(&files_dir)?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            backup_id: id,
            portal_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at,
            region,
            migration_level,
            excluded: vec![MASTER_KEY_FILE.to_string(), format!("{VAULT_DIR}/")],
            files,
        };
        let text = serde_json::to_vec(&manifest)
            .map_err(|e| BackupError::Usage(format!("cannot encode the manifest: {e}")))?;
        let mpath = out.join(MANIFEST_FILE);
        let (_, _, _, manifest_sha) = write_new(&mpath, |f| {
            seal_stream(&key, &aad(id, MANIFEST_FILE), &mut text.as_slice(), f)
                .map_err(io_err("cannot seal into", &mpath))
        })?;
        let header = Header {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            backup_id: id,
            key_wrapped: base64::engine::general_purpose::STANDARD.encode(&key_wrapped),
            manifest_sealed_sha256: manifest_sha,
        };
        let hpath = out.join(HEADER_FILE);
        let htext = serde_json::to_vec_pretty(&header)
            .map_err(|e| BackupError::Usage(format!("cannot encode the header: {e}")))?;
        write_new(&hpath, |f| {
            f.write_all(&htext)
                .map_err(io_err("cannot write", &hpath))?;
            Ok((0, String::new(), 0, String::new()))
        })?;
        fsync_dir(&out)?;
        Ok(BackupSummary {
            backup_id: id,
            dir: out,
            created_at,
            migration_level: manifest.migration_level,
            blobs: manifest.files.len() - 1,
            bytes: manifest.files.iter().map(|f| f.size).sum(),
        })
    })
    .await
    .map_err(|e| BackupError::Usage(format!("backup task failed: {e}")))??;
    drop(tmp);
    tracing::info!(backup = %summary.backup_id, blobs = summary.blobs, bytes = summary.bytes, "backup written");
    Ok(summary)
}

/// Reads a small file of the backup, refusing one larger than `max`.
fn read_bounded(path: &Path, max: u64, dir: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| BackupError::NotABackup {
        dir: dir.to_path_buf(),
        why: format!("cannot open {}: {e}", path.display()),
    })?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("cannot read", path))?;
    if buf.len() as u64 > max {
        return Err(BackupError::Tampered {
            file: path.display().to_string(),
            why: format!("larger than {max} bytes"),
        });
    }
    Ok(buf)
}

fn file_sha(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(io_err("cannot read", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, sha_hex(h)))
}

/// Opens a backup: checks the header, unwraps the key, authenticates the
/// manifest and checks every file's size and SHA-256 against it. Nothing
/// is written. Returns the key and the manifest.
pub fn verify(master: &dyn MasterKey, from: &Path) -> Result<(Zeroizing<[u8; 32]>, Manifest)> {
    let not = |why: String| BackupError::NotABackup {
        dir: from.to_path_buf(),
        why,
    };
    let hbytes = read_bounded(&from.join(HEADER_FILE), MAX_HEADER_BYTES, from)?;
    let header: Header = serde_json::from_slice(&hbytes).map_err(|e| BackupError::Tampered {
        file: HEADER_FILE.into(),
        why: format!("not a backup header: {e}"),
    })?;
    if header.format != FORMAT || header.format_version != FORMAT_VERSION {
        return Err(not(format!(
            "format {} version {} is not {FORMAT} version {FORMAT_VERSION}: use the rampart version that made it",
            header.format, header.format_version
        )));
    }
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&header.key_wrapped)
        .map_err(|_| BackupError::Tampered {
            file: HEADER_FILE.into(),
            why: "key_wrapped is not base64".into(),
        })?;
    let id = header.backup_id;
    let raw = master
        .unwrap(&wrapped, &aad(id, "key"))
        .map_err(|_| BackupError::WrongKey)?;
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(
        raw.as_slice()
            .try_into()
            .map_err(|_| BackupError::WrongKey)?,
    );
    let mpath = from.join(MANIFEST_FILE);
    let sealed = read_bounded(&mpath, MAX_MANIFEST_BYTES, from)?;
    let tampered = |file: &str, why: String| BackupError::Tampered {
        file: file.to_string(),
        why,
    };
    if sha_hex(Sha256::new_with_prefix(&sealed)) != header.manifest_sealed_sha256 {
        return Err(tampered(
            MANIFEST_FILE,
            "its SHA-256 differs from the header's".into(),
        ));
    }
    let mut text = Zeroizing::new(Vec::new());
    open_stream(
        &key,
        &aad(id, MANIFEST_FILE),
        &mut sealed.as_slice(),
        &mut *text,
    )
    .map_err(|why| tampered(MANIFEST_FILE, why))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| tampered(MANIFEST_FILE, format!("not a manifest: {e}")))?;
    if manifest.backup_id != id || manifest.format_version != FORMAT_VERSION {
        return Err(tampered(MANIFEST_FILE, "it names another backup".into()));
    }
    if manifest.migration_level > SqliteStore::latest_migration() {
        return Err(BackupError::Usage(format!(
            "the backup has store migration {} and this rampart knows only up to {}: restore with rampart {} or newer",
            manifest.migration_level,
            SqliteStore::latest_migration(),
            manifest.portal_version
        )));
    }
    // Every file named exactly once, in its slot, the database first; no
    // file in the backup the manifest does not name.
    let mut named = std::collections::BTreeSet::new();
    for (i, f) in manifest.files.iter().enumerate() {
        let want_kind = if i == 0 {
            FileKind::Database
        } else {
            FileKind::Blob
        };
        if f.name != format!("{FILES_DIR}/{i:06}") || f.kind != want_kind {
            return Err(tampered(
                MANIFEST_FILE,
                format!("entry {i} is out of place"),
            ));
        }
        if f.kind == FileKind::Blob {
            validate_key(&f.target)
                .map_err(|e| tampered(MANIFEST_FILE, format!("entry {i}: {e}")))?;
        }
        named.insert(f.name.clone());
    }
    if manifest.files.is_empty() {
        return Err(tampered(MANIFEST_FILE, "it names no database".into()));
    }
    let files_dir = from.join(FILES_DIR);
    for e in std::fs::read_dir(&files_dir).map_err(io_err("cannot list", &files_dir))? {
        let e = e.map_err(io_err("cannot list", &files_dir))?;
        let name = format!("{FILES_DIR}/{}", e.file_name().to_string_lossy());
        if !named.contains(&name) {
            return Err(tampered(&name, "the manifest does not name it".into()));
        }
    }
    for f in &manifest.files {
        let path = from.join(&f.name);
        if !path.exists() {
            return Err(tampered(&f.name, "it is missing".into()));
        }
        let (len, sha) = file_sha(&path)?;
        if len != f.sealed_size {
            return Err(tampered(
                &f.name,
                format!("{len} bytes where the manifest says {}", f.sealed_size),
            ));
        }
        if sha != f.sealed_sha256 {
            return Err(tampered(
                &f.name,
                "its SHA-256 differs from the manifest's".into(),
            ));
        }
    }
    Ok((key, manifest))
}

/// Opens one sealed file of the backup into `dest` (through a temp file,
/// fsync and rename), checking the plaintext against the manifest.
fn restore_file(key: &[u8; 32], id: Uuid, from: &Path, f: &FileEntry, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| BackupError::Usage(format!("{} has no parent", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let tmp = dir.join(format!(".restore-{}", Uuid::new_v4().simple()));
    let guard = TempFile(tmp.clone());
    let src_path = from.join(&f.name);
    let mut src = std::io::BufReader::new(
        std::fs::File::open(&src_path).map_err(io_err("cannot read", &src_path))?,
    );
    write_new(&tmp, |out| {
        let mut w = std::io::BufWriter::new(out);
        let (len, sha) = open_stream(key, &aad(id, &f.name), &mut src, &mut w).map_err(|why| {
            BackupError::Tampered {
                file: f.name.clone(),
                why,
            }
        })?;
        w.flush().map_err(io_err("cannot write", &tmp))?;
        if len != f.size || sha != f.sha256 {
            return Err(BackupError::Tampered {
                file: f.name.clone(),
                why: "its content differs from the manifest's".into(),
            });
        }
        Ok((0, String::new(), 0, String::new()))
    })?;
    std::fs::rename(&tmp, dest).map_err(io_err("cannot write", dest))?;
    std::mem::forget(guard);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io_err("cannot create", to))?;
    for e in std::fs::read_dir(from).map_err(io_err("cannot list", from))? {
        let e = e.map_err(io_err("cannot list", from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().map_err(io_err("cannot stat", &src))?;
        if ty.is_dir() {
            copy_dir(&src, &dst)?;
        } else if ty.is_file() {
            std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(io_err("cannot sync", &dst))?;
        } else {
            return Err(BackupError::Usage(format!(
                "{} is neither a file nor a directory: give a vault of plain files",
                src.display()
            )));
        }
    }
    fsync_dir(to)
}

/// Restores the backup at `from` into `config.data_dir`, which must not
/// exist or be empty (a `master.key` alone is allowed): verifies it whole
/// first, then writes the database and the blobs, and copies `vault` in
/// when given. The caller opens the portal on the new data dir and records
/// the restore in its audit log ([`record_restore`]).
pub async fn restore(
    config: &Config,
    master: &dyn MasterKey,
    from: &Path,
    vault: Option<&Path>,
) -> Result<RestoreSummary> {
    let data_dir = config.data_dir.clone();
    if !empty_but(&data_dir, &[MASTER_KEY_FILE])? {
        return Err(BackupError::Usage(format!(
            "{} is not empty: restore into a new data dir",
            data_dir.display()
        )));
    }
    if let Some(v) = vault {
        if !v.is_dir() {
            return Err(BackupError::Usage(format!(
                "--vault {} is not a directory",
                v.display()
            )));
        }
    }
    let (key, manifest) = verify(master, from)?;
    let from = from.to_path_buf();
    let vault = vault.map(Path::to_path_buf);
    let blob_dir = config.blob_dir();
    let db_path = config.db_path();
    tokio::task::spawn_blocking(move || -> Result<RestoreSummary> {
        std::fs::create_dir_all(&data_dir).map_err(io_err("cannot create", &data_dir))?;
        let id = manifest.backup_id;
        for f in &manifest.files {
            let dest = match f.kind {
                FileKind::Database => db_path.clone(),
                FileKind::Blob => blob_dir.join(&f.target),
            };
            restore_file(&key, id, &from, f, &dest)?;
        }
        if blob_dir.exists() {
            fsync_dir(&blob_dir)?;
        }
        if let Some(v) = &vault {
            copy_dir(v, &data_dir.join(VAULT_DIR))?;
        }
        fsync_dir(&data_dir)?;
        Ok(RestoreSummary {
            backup_id: id,
            data_dir,
            created_at: manifest.created_at,
            migration_level: manifest.migration_level,
            blobs: manifest.files.len() - 1,
            bytes: manifest.files.iter().map(|f| f.size).sum(),
            vault_copied: vault.is_some(),
        })
    })
    .await
    .map_err(|e| BackupError::Usage(format!("restore task failed: {e}")))?
}

/// Records a finished restore (`backup.restore`) in the restored portal's
/// audit log.
pub async fn record_restore(portal: &Portal, s: &RestoreSummary, from: &Path) -> Result<()> {
    audit::record(
        portal,
        None,
        &Actor::Cli,
        "backup.restore",
        &format!("backup:{}", s.backup_id),
        serde_json::json!({
            "from": from.display().to_string(),
            "created_at": s.created_at,
            "migration_level": s.migration_level,
            "blobs": s.blobs,
            "bytes": s.bytes,
            "vault_copied": s.vault_copied,
        }),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize) {
        let key = [7u8; 32];
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        let (size, sha, sealed_size, _) =
            seal_stream(&key, b"slot", &mut data.as_slice(), &mut sealed).unwrap();
        assert_eq!(size, len as u64);
        assert_eq!(sealed_size, sealed.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        let mut out = Vec::new();
        let (n, sha2) = open_stream(&key, b"slot", &mut sealed.as_slice(), &mut out).unwrap();
        assert_eq!((n, sha2), (size, sha));
        assert_eq!(out, data);
        // Another slot's associated data, a flipped bit, or a cut anywhere
        // (including at a chunk boundary) does not open.
        assert!(open_stream(&key, b"other", &mut sealed.as_slice(), &mut Vec::new()).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open_stream(&key, b"slot", &mut bad.as_slice(), &mut Vec::new()).is_err());
        let head = SEAL_MAGIC.len() + NONCE_PREFIX;
        let chunks = (sealed.len() - head).div_ceil(CHUNK + TAG);
        for cut in [sealed.len() - 1, head + (CHUNK + TAG) * (chunks - 1), head] {
            if cut < sealed.len() {
                assert!(
                    open_stream(&key, b"slot", &mut &sealed[..cut], &mut Vec::new()).is_err(),
                    "cut at {cut} of {} opened",
                    sealed.len()
                );
            }
        }
    }

    #[test]
    fn sealed_files_open_only_whole_and_in_their_slot() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            round_trip(len);
        }
    }
}
