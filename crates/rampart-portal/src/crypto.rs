//! The portal's key hierarchy.
//!
//! ```text
//! master key (file or env; behind MasterKey so a KMS can replace it)
//!   └─ per-tenant KEK (random, stored wrapped by the master key)
//!        ├─ instruction signing key (Ed25519)
//!        ├─ upload key (HPKE X25519)
//!        ├─ TLS key of the tenant certificate
//!        ├─ data key (derived: HKDF-SHA256) – flow segments and rollups
//!        └─ pseudonym key (derived) – the agents' keyed hash of addresses
//! ```
//! The derived keys are never stored anywhere: they exist only in memory
//! while the KEK is unwrapped, so destroying the wrapped KEK also makes every
//! flow segment unreadable and every pseudonym meaningless.
//! Every wrap binds the tenant id and the key's purpose as associated data,
//! so a wrapped key moved to another tenant's row does not unwrap. Destroying
//! a tenant's wrapped KEK destroys everything under it (crypto-shredding).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rampart_proto::keys::{HpkePublicKey, HpkeSecretKey, SigningKey, VerifyingKey};
use rampart_proto::wrap::Kek;
use rampart_store::{TenantId, TenantKeys};
use zeroize::Zeroizing;

use crate::service::ServiceError;

/// The root of the key hierarchy. A KMS-backed implementation wraps and
/// unwraps remotely; the local one holds the key in memory.
pub trait MasterKey: Send + Sync + 'static {
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8>;
    fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ServiceError>;
}

pub struct LocalMasterKey(Kek);

impl MasterKey for LocalMasterKey {
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.0.wrap(plaintext, aad)
    }
    fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        self.0.unwrap(blob, aad).map_err(|e| {
            ServiceError::Crypto(format!(
                "cannot unwrap with the master key ({e}): is this the master key this data dir was created with?"
            ))
        })
    }
}

/// Where the master key came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    Env,
    File,
    Generated,
}

/// Loads the master key from `RAMPART_MASTER_KEY` (base64) or `path`, or
/// generates one into `path` (mode 0600) on first start.
pub fn load_master_key(path: &Path) -> Result<(LocalMasterKey, MasterKeySource), String> {
    let decode = |s: &str, from: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|b| Kek::from_bytes(&b).ok())
            .ok_or_else(|| format!("master key from {from} is not base64 of 32 bytes"))
    };
    if let Ok(v) = std::env::var("RAMPART_MASTER_KEY") {
        return Ok((
            LocalMasterKey(decode(&v, "RAMPART_MASTER_KEY")?),
            MasterKeySource::Env,
        ));
    }
    match std::fs::read_to_string(path) {
        Ok(s) => Ok((
            LocalMasterKey(decode(&s, &path.display().to_string())?),
            MasterKeySource::File,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Kek::generate();
            write_secret_file(
                path,
                base64::engine::general_purpose::STANDARD
                    .encode(k.as_bytes())
                    .as_bytes(),
            )
            .map_err(|e| format!("cannot write master key {}: {e}", path.display()))?;
            Ok((LocalMasterKey(k), MasterKeySource::Generated))
        }
        Err(e) => Err(format!("cannot read master key {}: {e}", path.display())),
    }
}

/// Loads the master key from `RAMPART_MASTER_KEY` or `path`, never
/// generating one: for `rampart restore`, where a new key could open nothing.
pub fn load_existing_master_key(path: &Path) -> Result<LocalMasterKey, String> {
    if std::env::var_os("RAMPART_MASTER_KEY").is_none() && !path.exists() {
        return Err(format!(
            "no master key at {}: give the master key of the portal that made the backup \
             (--master-key-file or RAMPART_MASTER_KEY)",
            path.display()
        ));
    }
    load_master_key(path).map(|(k, _)| k)
}

fn write_secret_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn aad(tenant: TenantId, purpose: &str) -> Vec<u8> {
    format!("rampart/tenant/{tenant}/{purpose}/v1").into_bytes()
}

/// A tenant's private keys, unwrapped, held in memory only.
pub struct TenantSecrets {
    pub signing: SigningKey,
    pub upload: HpkeSecretKey,
    pub tls_key_der: Zeroizing<Vec<u8>>,
    /// Encrypts the tenant's flow segments and rollups at rest.
    pub data_key: Zeroizing<[u8; 32]>,
    /// HMAC key the tenant's agents pseudonymise addresses with, so a
    /// pseudonym is stable within the tenant and meaningless outside it.
    pub pseudonym_key: Zeroizing<[u8; 32]>,
    /// Wraps the small secrets the tenant configures (webhook signing
    /// secrets), so destroying the KEK destroys them too.
    secrets_key: Kek,
}

/// Purposes of keys derived from the KEK (HKDF info strings).
const DATA_KEY: &str = "flow-data";
const PSEUDONYM_KEY: &str = "pseudonym";
const SECRETS_KEY: &str = "tenant-secrets";
/// Names the pseudonym key version agents are given, so a later rotation can
/// be told apart from it.
pub const PSEUDONYM_KEY_ID: &str = "v1";

fn derive(kek: &Kek, tenant: TenantId, purpose: &str) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, kek.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
    let _ = hk.expand(&aad(tenant, purpose), out.as_mut());
    out
}

impl TenantSecrets {
    pub fn instruction_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
    pub fn upload_key(&self) -> HpkePublicKey {
        self.upload.public_key()
    }

    /// Wraps a tenant-configured secret; `purpose` names the slot (e.g.
    /// `webhook/<id>`), so a wrapped secret cannot be moved to another.
    pub fn wrap_secret(&self, tenant: TenantId, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        self.secrets_key.wrap(plaintext, &aad(tenant, purpose))
    }

    pub fn unwrap_secret(
        &self,
        tenant: TenantId,
        purpose: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        self.secrets_key
            .unwrap(blob, &aad(tenant, purpose))
            .map_err(|e| ServiceError::Crypto(format!("tenant {tenant} {purpose} secret: {e}")))
    }
}

/// Makes a tenant's keys and returns them wrapped, ready to store.
pub fn new_tenant_keys(
    master: &dyn MasterKey,
    tenant: TenantId,
    tls_cert_pem: String,
    tls_key_der: &[u8],
) -> TenantKeys {
    let kek = Kek::generate();
    let signing = SigningKey::generate();
    let (upload, upload_pk) = HpkeSecretKey::generate();
    TenantKeys {
        kek_wrapped: master.wrap(kek.as_bytes(), &aad(tenant, "kek")),
        signing_sk_wrapped: kek.wrap(&signing.secret_bytes(), &aad(tenant, "signing")),
        signing_pk: signing.verifying_key().to_bytes().to_vec(),
        upload_sk_wrapped: kek.wrap(&upload.secret_bytes(), &aad(tenant, "upload")),
        upload_pk: upload_pk.to_bytes(),
        tls_cert_pem,
        tls_key_wrapped: kek.wrap(tls_key_der, &aad(tenant, "tls")),
    }
}

pub fn open_tenant_keys(
    master: &dyn MasterKey,
    tenant: TenantId,
    keys: &TenantKeys,
) -> Result<TenantSecrets, ServiceError> {
    let kek_bytes = master.unwrap(&keys.kek_wrapped, &aad(tenant, "kek"))?;
    let kek = Kek::from_bytes(&kek_bytes).map_err(|e| ServiceError::Crypto(e.to_string()))?;
    let un = |blob: &[u8], purpose: &str| {
        kek.unwrap(blob, &aad(tenant, purpose))
            .map_err(|e| ServiceError::Crypto(format!("tenant {tenant} {purpose} key: {e}")))
    };
    let signing = SigningKey::from_secret(&un(&keys.signing_sk_wrapped, "signing")?)
        .map_err(|e| ServiceError::Crypto(e.to_string()))?;
    let upload = HpkeSecretKey::from_bytes(&un(&keys.upload_sk_wrapped, "upload")?)
        .map_err(|e| ServiceError::Crypto(e.to_string()))?;
    Ok(TenantSecrets {
        signing,
        upload,
        tls_key_der: un(&keys.tls_key_wrapped, "tls")?,
        data_key: derive(&kek, tenant, DATA_KEY),
        pseudonym_key: derive(&kek, tenant, PSEUDONYM_KEY),
        secrets_key: Kek::from_bytes(derive(&kek, tenant, SECRETS_KEY).as_ref())
            .map_err(|e| ServiceError::Crypto(e.to_string()))?,
    })
}

/// Unwrapped tenant keys, cached so each request does not pay for unwrapping.
#[derive(Default)]
pub struct KeyCache {
    inner: Mutex<HashMap<TenantId, Arc<TenantSecrets>>>,
}

impl KeyCache {
    pub fn get(&self, tenant: TenantId) -> Option<Arc<TenantSecrets>> {
        self.inner.lock().ok()?.get(&tenant).cloned()
    }
    pub fn insert(&self, tenant: TenantId, s: Arc<TenantSecrets>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(tenant, s);
        }
    }
    /// Forgets a tenant's unwrapped keys (its keys were destroyed).
    pub fn remove(&self, tenant: TenantId) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(&tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_for_their_tenant() {
        let master = LocalMasterKey(Kek::generate());
        let t = TenantId(uuid::Uuid::new_v4());
        let keys = new_tenant_keys(&master, t, "pem".into(), b"tls-der");
        let s = open_tenant_keys(&master, t, &keys).unwrap();
        assert_eq!(s.instruction_key().to_bytes().to_vec(), keys.signing_pk);
        assert_eq!(s.upload_key().to_bytes(), keys.upload_pk);
        assert_eq!(&*s.tls_key_der, b"tls-der");
        let other = TenantId(uuid::Uuid::new_v4());
        assert!(open_tenant_keys(&master, other, &keys).is_err());
        // Derived keys differ per tenant and per purpose.
        let t2_keys = new_tenant_keys(&master, other, "pem".into(), b"tls-der");
        let s2 = open_tenant_keys(&master, other, &t2_keys).unwrap();
        assert_ne!(*s.data_key, *s2.data_key);
        assert_ne!(*s.data_key, *s.pseudonym_key);
        let again = open_tenant_keys(&master, t, &keys).unwrap();
        assert_eq!(*s.data_key, *again.data_key);
        let other_master = LocalMasterKey(Kek::generate());
        assert!(open_tenant_keys(&other_master, t, &keys).is_err());
    }

    #[test]
    fn master_key_is_generated_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let (k1, src1) = load_master_key(&p).unwrap();
        assert_eq!(src1, MasterKeySource::Generated);
        let (k2, src2) = load_master_key(&p).unwrap();
        assert_eq!(src2, MasterKeySource::File);
        assert_eq!(k1.0.as_bytes(), k2.0.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
