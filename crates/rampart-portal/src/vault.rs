//! The key vault: each tenant's root key, kept outside the database.
//!
//! The root key wraps the tenant's KEK, which the database holds only in
//! that wrapped form. Because the root key is never in the database, a
//! backup of the database (and of the blob dir) is unreadable for a tenant
//! once its vault entry is destroyed: crypto-shredding reaches copies the
//! portal cannot delete. `rampart backup` therefore leaves `vault/` and
//! `master.key` out; a restore needs the vault, and any copy of the vault
//! must honour the deletion window (a vault copy older than a shredding
//! brings the tenant back).
//!
//! [`KeyVault`] is the seam for a KMS or HSM; [`LocalKeyVault`] keeps one
//! small file per tenant under `<data_dir>/vault/`, the root key wrapped
//! by the master key, written with mode 0600 and fsync-then-rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rampart_proto::wrap::Kek;
use rampart_store::TenantId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::MasterKey;
use crate::service::ServiceError;

/// Holds tenants' root keys. Calls do blocking IO: call them from
/// `spawn_blocking`.
pub trait KeyVault: Send + Sync + 'static {
    /// Makes and stores a new root key for `tenant`; a conflict if it has one.
    fn create(&self, tenant: TenantId) -> Result<Zeroizing<[u8; 32]>, ServiceError>;
    /// The tenant's root key; `None` when it has no entry (destroyed).
    fn root(&self, tenant: TenantId) -> Result<Option<Zeroizing<[u8; 32]>>, ServiceError>;
    /// Destroys the entry; false when there was none.
    fn destroy(&self, tenant: TenantId) -> Result<bool, ServiceError>;
    /// Re-wraps under the current master key every entry wrapped by another
    /// (after a master key rotation); returns how many.
    fn rewrap(&self) -> Result<u64, ServiceError>;
    fn status(&self) -> Result<VaultStatus, ServiceError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VaultStatus {
    pub master_key_id: String,
    pub entries: u64,
    /// Entries still wrapped by a previous master key.
    pub under_previous_master: u64,
}

/// One entry file.
#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    tenant: TenantId,
    master_key_id: String,
    /// Base64 of the root key wrapped by the master key.
    root_wrapped: String,
}

pub struct LocalKeyVault {
    dir: PathBuf,
    master: Arc<dyn MasterKey>,
}

fn io_err(path: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Crypto(format!(
        "key vault file {}: {e}: check the vault_dir permissions",
        path.display()
    ))
}

fn aad(tenant: TenantId) -> Vec<u8> {
    format!("rampart/vault/{tenant}/root/v1").into_bytes()
}

impl LocalKeyVault {
    pub fn new(dir: PathBuf, master: Arc<dyn MasterKey>) -> Self {
        LocalKeyVault { dir, master }
    }

    fn path(&self, tenant: TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.key"))
    }

    fn read(&self, tenant: TenantId) -> Result<Option<Entry>, ServiceError> {
        let path = self.path(tenant);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let e: Entry = serde_json::from_str(&text).map_err(|e| {
            ServiceError::Crypto(format!("key vault file {} is damaged: {e}", path.display()))
        })?;
        if e.format != 1 || e.tenant != tenant {
            return Err(ServiceError::Crypto(format!(
                "key vault file {} is not tenant {tenant}'s",
                path.display()
            )));
        }
        Ok(Some(e))
    }

    fn open(&self, e: &Entry) -> Result<Zeroizing<[u8; 32]>, ServiceError> {
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&e.root_wrapped)
            .map_err(|_| {
                ServiceError::Crypto(format!("key vault entry of {} is damaged", e.tenant))
            })?;
        let root = self.master.unwrap(&wrapped, &aad(e.tenant))?;
        let mut out = Zeroizing::new([0u8; 32]);
        if root.len() != 32 {
            return Err(ServiceError::Crypto(format!(
                "key vault entry of {} is not a 32-byte key",
                e.tenant
            )));
        }
        out.copy_from_slice(&root);
        Ok(out)
    }

    /// Writes the entry whole: a temp file (0600), fsync, rename over, fsync
    /// the directory, so a crash leaves the old entry or the new one.
    fn write(&self, tenant: TenantId, root: &[u8; 32]) -> Result<(), ServiceError> {
        let e = Entry {
            format: 1,
            tenant,
            master_key_id: self.master.id(),
            root_wrapped: base64::engine::general_purpose::STANDARD
                .encode(self.master.wrap(root, &aad(tenant))),
        };
        let text = serde_json::to_vec(&e).map_err(|e| ServiceError::Crypto(e.to_string()))?;
        let path = self.path(tenant);
        let tmp = self.dir.join(format!("{tenant}.key.tmp"));
        let _ = std::fs::remove_file(&tmp);
        crate::crypto::write_secret_file(&tmp, &text).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), ServiceError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))
    }

    fn entries(&self) -> Result<Vec<TenantId>, ServiceError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir, e)),
        };
        let mut out = Vec::new();
        for de in rd {
            let de = de.map_err(|e| io_err(&self.dir, e))?;
            let name = de.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                continue;
            };
            if let Ok(u) = uuid::Uuid::parse_str(id) {
                out.push(TenantId(u));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl KeyVault for LocalKeyVault {
    fn create(&self, tenant: TenantId) -> Result<Zeroizing<[u8; 32]>, ServiceError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        if self.read(tenant)?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "tenant {tenant} already has a key vault entry"
            )));
        }
        let k = Kek::generate();
        let mut root = Zeroizing::new([0u8; 32]);
        root.copy_from_slice(k.as_bytes());
        self.write(tenant, &root)?;
        Ok(root)
    }

    fn root(&self, tenant: TenantId) -> Result<Option<Zeroizing<[u8; 32]>>, ServiceError> {
        self.read(tenant)?.map(|e| self.open(&e)).transpose()
    }

    fn destroy(&self, tenant: TenantId) -> Result<bool, ServiceError> {
        let path = self.path(tenant);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn rewrap(&self) -> Result<u64, ServiceError> {
        let current = self.master.id();
        let mut n = 0;
        for t in self.entries()? {
            let Some(e) = self.read(t)? else { continue };
            if e.master_key_id == current {
                continue;
            }
            let root = self.open(&e)?;
            self.write(t, &root)?;
            n += 1;
        }
        Ok(n)
    }

    fn status(&self) -> Result<VaultStatus, ServiceError> {
        let current = self.master.id();
        let mut s = VaultStatus {
            master_key_id: current.clone(),
            ..VaultStatus::default()
        };
        for t in self.entries()? {
            if let Some(e) = self.read(t)? {
                s.entries += 1;
                if e.master_key_id != current {
                    s.under_previous_master += 1;
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterRing;

    fn master() -> Arc<dyn MasterKey> {
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = crate::crypto::load_master_key(&dir.path().join("m.key")).unwrap();
        Arc::new(k)
    }

    #[test]
    fn entries_are_private_files_that_open_only_with_their_master_and_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let m = master();
        let v = LocalKeyVault::new(dir.path().join("vault"), m.clone());
        let t = TenantId(uuid::Uuid::new_v4());
        let root = v.create(t).unwrap();
        assert!(matches!(v.create(t), Err(ServiceError::Conflict(_))));
        assert_eq!(*v.root(t).unwrap().unwrap(), *root);
        let path = dir.path().join("vault").join(format!("{t}.key"));
        let text = std::fs::read(&path).unwrap();
        assert!(!text.windows(32).any(|w| w == root.as_slice()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another master key cannot open it; a file moved to another
        // tenant's name is refused.
        let other = LocalKeyVault::new(dir.path().join("vault"), master());
        assert!(other.root(t).is_err());
        let u = TenantId(uuid::Uuid::new_v4());
        std::fs::copy(&path, dir.path().join("vault").join(format!("{u}.key"))).unwrap();
        assert!(v.root(u).is_err());
        assert!(v.destroy(t).unwrap());
        assert!(!v.destroy(t).unwrap());
        assert!(v.root(t).unwrap().is_none());
    }

    #[test]
    fn rewrap_moves_every_entry_to_the_current_master() {
        let dir = tempfile::tempdir().unwrap();
        let old = master();
        let v_old = LocalKeyVault::new(dir.path().to_path_buf(), old.clone());
        let ts: Vec<TenantId> = (0..3).map(|_| TenantId(uuid::Uuid::new_v4())).collect();
        let roots: Vec<_> = ts.iter().map(|t| v_old.create(*t).unwrap()).collect();
        let new = master();
        let ring: Arc<dyn MasterKey> = Arc::new(MasterRing {
            current: new.clone(),
            previous: Some(old.clone()),
        });
        let v = LocalKeyVault::new(dir.path().to_path_buf(), ring);
        assert_eq!(v.status().unwrap().under_previous_master, 3);
        assert_eq!(v.rewrap().unwrap(), 3);
        assert_eq!(v.rewrap().unwrap(), 0, "done once");
        assert_eq!(v.status().unwrap().under_previous_master, 0);
        // The new master alone opens every entry; the old one none.
        let v_new = LocalKeyVault::new(dir.path().to_path_buf(), new);
        for (t, r) in ts.iter().zip(&roots) {
            assert_eq!(*v_new.root(*t).unwrap().unwrap(), **r);
            assert!(v_old.root(*t).is_err());
        }
    }
}
