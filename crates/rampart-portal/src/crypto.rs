//! The portal's key hierarchy.
//!
//! ```text
//! master key (file or env; behind MasterKey so a KMS can replace it)
//!   └─ per-tenant root key, in the key vault outside the database
//!      (KeyVault; locally <data_dir>/vault/<tenant>.key, wrapped by the master key)
//!        └─ per-tenant KEK (random, stored in the database wrapped by the root key)
//!             ├─ instruction signing key (Ed25519)
//!             ├─ upload key (HPKE X25519)
//!             ├─ TLS key of the tenant certificate
//!             ├─ data keys v1, v2, ... (random, stored wrapped by the KEK)
//!             │    ├─ flow segments and rollups (the flowstore's key ring)
//!             │    └─ field key vN (derived) – every sealed store column
//!             ├─ blind-index key (derived) – equality lookups on sealed values
//!             ├─ secrets key (derived) – webhook signing secrets
//!             └─ pseudonym key (derived) – the agents' keyed hash of addresses
//! ```
//! Derived keys are never stored: they exist only in memory while the KEK
//! is unwrapped. Every wrap binds the tenant id and the key's purpose as
//! associated data, so a wrapped key moved to another tenant's row does not
//! unwrap. Destroying a tenant's vault entry (and its wrapped keys) destroys
//! everything under it, in this database and in every backup of it
//! (crypto-shredding): the root key was never in the database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use hmac::Mac;
use rampart_flowstore::DataKey;
use rampart_proto::keys::{HpkePublicKey, HpkeSecretKey, SigningKey, VerifyingKey};
use rampart_proto::wrap::Kek;
use rampart_store::cipher::{FieldCipher, TenantSealer};
use rampart_store::{DataKeyRow, Store, StoreError, TenantId, TenantKeys};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::service::ServiceError;
use crate::vault::KeyVault;

/// The root of the key hierarchy. A KMS-backed implementation wraps and
/// unwraps remotely; the local one holds the key in memory.
pub trait MasterKey: Send + Sync + 'static {
    /// Names the key (not secret), so a wrapped blob can say which master
    /// key wrapped it and a rotation can tell what is left to re-wrap.
    fn id(&self) -> String;
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8>;
    fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ServiceError>;
}

pub struct LocalMasterKey(Kek);

impl MasterKey for LocalMasterKey {
    fn id(&self) -> String {
        let d = sha2::Sha256::new()
            .chain_update(b"rampart master key id v1\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
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

/// The current master key and, during a master key rotation, the previous
/// one: wraps with the current, unwraps with either, so the portal keeps
/// running while the vault and the CA key are re-wrapped.
pub struct MasterRing {
    pub current: Arc<dyn MasterKey>,
    pub previous: Option<Arc<dyn MasterKey>>,
}

impl MasterKey for MasterRing {
    fn id(&self) -> String {
        self.current.id()
    }
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.current.wrap(plaintext, aad)
    }
    fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        match (self.current.unwrap(blob, aad), &self.previous) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(prev)) => prev.unwrap(blob, aad).map_err(|_| {
                ServiceError::Crypto(
                    "cannot unwrap with the master key or the previous master key: give the key this data dir was created with".into(),
                )
            }),
            (Err(e), None) => Err(e),
        }
    }
}

/// Where the master key came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    Env,
    File,
    Generated,
}

/// Reads a master key file that must exist (the previous master key
/// during a rotation).
pub fn read_master_key(path: &Path) -> Result<LocalMasterKey, String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read master key {}: {e}", path.display()))?;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .and_then(|b| Kek::from_bytes(&b).ok())
        .map(LocalMasterKey)
        .ok_or_else(|| format!("master key {} is not base64 of 32 bytes", path.display()))
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

pub(crate) fn write_secret_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
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

fn crypto_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Crypto(e.to_string())
}

/// A tenant's private keys, unwrapped, held in memory only.
pub struct TenantSecrets {
    pub tenant: TenantId,
    pub signing: SigningKey,
    pub upload: HpkeSecretKey,
    pub tls_key_der: Zeroizing<Vec<u8>>,
    /// The flow segments' key ring: every active data key version.
    pub data_key: DataKey,
    /// HMAC key the tenant's agents pseudonymise addresses with, so a
    /// pseudonym is stable within the tenant and meaningless outside it.
    pub pseudonym_key: Zeroizing<[u8; 32]>,
    /// Wraps the small secrets the tenant configures (webhook signing
    /// secrets), so destroying the KEK destroys them too.
    secrets_key: Kek,
    /// Wraps new data key versions.
    kek: Kek,
    /// Field keys by data key version (derived from each data key).
    field_keys: Vec<(u32, Kek)>,
    /// Keyed digests for sealed values looked up by equality.
    index_key: Zeroizing<[u8; 32]>,
}

/// Purposes of keys derived from the KEK or a data key (HKDF info strings).
const PSEUDONYM_KEY: &str = "pseudonym";
const SECRETS_KEY: &str = "tenant-secrets";
const INDEX_KEY: &str = "blind-index";
/// Names the pseudonym key version agents are given, so a later rotation can
/// be told apart from it.
pub const PSEUDONYM_KEY_ID: &str = "v1";

fn derive(ikm: &[u8; 32], tenant: TenantId, purpose: &str) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
    let _ = hk.expand(&aad(tenant, purpose), out.as_mut());
    out
}

fn data_key_purpose(version: u32) -> String {
    format!("data-key/{version}")
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

    /// A new data key version, wrapped by the KEK, ready to store.
    fn new_data_key(&self, version: u32, now: i64) -> DataKeyRow {
        new_data_key(&self.kek, self.tenant, version, now)
    }
}

fn new_data_key(kek: &Kek, tenant: TenantId, version: u32, now: i64) -> DataKeyRow {
    let k = Kek::generate();
    DataKeyRow {
        version,
        key_wrapped: Some(kek.wrap(k.as_bytes(), &aad(tenant, &data_key_purpose(version)))),
        created_at: now,
        retired_at: None,
    }
}

/// Field ciphertexts: the data key version (u32, big endian), then the
/// field key's wrap (XChaCha20-Poly1305, random nonce) with the store's
/// associated data and the version as associated data.
impl TenantSealer for TenantSecrets {
    fn version(&self) -> u32 {
        self.data_key.version()
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> rampart_store::Result<Vec<u8>> {
        let v = self.version();
        let key = self
            .field_keys
            .iter()
            .find(|(ver, _)| *ver == v)
            .map(|(_, k)| k)
            .ok_or_else(|| StoreError::Crypto(format!("no field key for version {v}")))?;
        let mut out = v.to_be_bytes().to_vec();
        out.extend_from_slice(&key.wrap(plaintext, &[aad, &v.to_be_bytes()].concat()));
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> rampart_store::Result<Vec<u8>> {
        let (v, blob) = sealed
            .split_first_chunk::<4>()
            .ok_or_else(|| StoreError::Crypto("sealed value is too short".into()))?;
        let v = u32::from_be_bytes(*v);
        let key = self
            .field_keys
            .iter()
            .find(|(ver, _)| *ver == v)
            .map(|(_, k)| k)
            .ok_or_else(|| {
                StoreError::Crypto(format!(
                    "data key version {v} of tenant {} is not active (retired or destroyed)",
                    self.tenant
                ))
            })?;
        key.unwrap(blob, &[aad, &v.to_be_bytes()].concat())
            .map(|p| p.to_vec())
            .map_err(|_| {
                StoreError::Crypto(format!(
                    "a sealed value of tenant {} does not open: tampered, or moved from another row",
                    self.tenant
                ))
            })
    }

    fn blind_index(&self, aad: &[u8], value: &[u8]) -> String {
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(self.index_key.as_ref())
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        m.update(&(aad.len() as u64).to_be_bytes());
        m.update(aad);
        m.update(value);
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Makes a tenant's keys under its vault root key and returns them wrapped,
/// ready to store (the data keys follow with [`Keyring::load`]).
pub fn new_tenant_keys(
    root: &Kek,
    tenant: TenantId,
    tls_cert_pem: String,
    tls_key_der: &[u8],
) -> TenantKeys {
    let kek = Kek::generate();
    let signing = SigningKey::generate();
    let (upload, upload_pk) = HpkeSecretKey::generate();
    TenantKeys {
        kek_wrapped: root.wrap(kek.as_bytes(), &aad(tenant, "kek")),
        signing_sk_wrapped: kek.wrap(&signing.secret_bytes(), &aad(tenant, "signing")),
        signing_pk: signing.verifying_key().to_bytes().to_vec(),
        upload_sk_wrapped: kek.wrap(&upload.secret_bytes(), &aad(tenant, "upload")),
        upload_pk: upload_pk.to_bytes(),
        tls_cert_pem,
        tls_key_wrapped: kek.wrap(tls_key_der, &aad(tenant, "tls")),
    }
}

/// Unwraps a tenant's keys: the KEK with the vault root key, the rest with
/// the KEK, and every active data key version (`data_keys`, at least one).
pub fn open_tenant_keys(
    root: &Kek,
    tenant: TenantId,
    keys: &TenantKeys,
    data_keys: &[DataKeyRow],
) -> Result<TenantSecrets, ServiceError> {
    let kek_bytes = root.unwrap(&keys.kek_wrapped, &aad(tenant, "kek")).map_err(|e| {
        ServiceError::Crypto(format!(
            "tenant {tenant} KEK does not open with its vault key ({e}): the vault entry is not the one this database was written with"
        ))
    })?;
    let kek = Kek::from_bytes(&kek_bytes).map_err(crypto_err)?;
    let un = |blob: &[u8], purpose: &str| {
        kek.unwrap(blob, &aad(tenant, purpose))
            .map_err(|e| ServiceError::Crypto(format!("tenant {tenant} {purpose} key: {e}")))
    };
    let signing =
        SigningKey::from_secret(&un(&keys.signing_sk_wrapped, "signing")?).map_err(crypto_err)?;
    let upload =
        HpkeSecretKey::from_bytes(&un(&keys.upload_sk_wrapped, "upload")?).map_err(crypto_err)?;
    let mut ring = Vec::new();
    let mut field_keys = Vec::new();
    for row in data_keys {
        let Some(w) = &row.key_wrapped else { continue };
        let k = un(w, &data_key_purpose(row.version))?;
        let k: [u8; 32] = k.as_slice().try_into().map_err(|_| {
            crypto_err(format!(
                "tenant {tenant} data key {} is not 32 bytes",
                row.version
            ))
        })?;
        let fk = derive(&k, tenant, &format!("fields/{}", row.version));
        field_keys.push((
            row.version,
            Kek::from_bytes(fk.as_ref()).map_err(crypto_err)?,
        ));
        ring.push((row.version, k));
    }
    let current =
        ring.iter().map(|(v, _)| *v).max().ok_or_else(|| {
            ServiceError::Crypto(format!("tenant {tenant} has no active data key"))
        })?;
    let data_key = DataKey::ring(current, ring)
        .ok_or_else(|| crypto_err(format!("tenant {tenant} data key ring")))?;
    Ok(TenantSecrets {
        tenant,
        signing,
        upload,
        tls_key_der: un(&keys.tls_key_wrapped, "tls")?,
        data_key,
        pseudonym_key: derive(kek.as_bytes(), tenant, PSEUDONYM_KEY),
        secrets_key: Kek::from_bytes(derive(kek.as_bytes(), tenant, SECRETS_KEY).as_ref())
            .map_err(crypto_err)?,
        index_key: derive(kek.as_bytes(), tenant, INDEX_KEY),
        field_keys,
        kek,
    })
}

/// How long unwrapped keys are served from the cache before they are read
/// again, so a rotation made by another process (the CLI, a replica)
/// reaches this one within a minute. Retirement waits longer than this
/// (`key_retire_grace_secs`), so no process still writes under a version
/// being retired.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Unwrapped tenant keys, cached so each request does not pay for unwrapping.
#[derive(Default)]
pub struct KeyCache {
    inner: Mutex<HashMap<TenantId, (Instant, Arc<TenantSecrets>)>>,
}

impl KeyCache {
    pub fn get(&self, tenant: TenantId) -> Option<Arc<TenantSecrets>> {
        let m = self.inner.lock().ok()?;
        let (at, s) = m.get(&tenant)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| s.clone())
    }
    pub fn insert(&self, tenant: TenantId, s: Arc<TenantSecrets>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(tenant, (Instant::now(), s));
        }
    }
    pub fn remove(&self, tenant: TenantId) -> Option<Arc<TenantSecrets>> {
        self.inner.lock().ok()?.remove(&tenant).map(|(_, s)| s)
    }
}

/// Everything that turns a tenant id into its unwrapped keys: the master
/// key, the vault and the cache. It is also the store's [`FieldCipher`], so
/// the store seals with the same keys the portal uses.
pub struct Keyring {
    pub master: Arc<dyn MasterKey>,
    pub vault: Arc<dyn KeyVault>,
    pub cache: KeyCache,
}

impl Keyring {
    pub fn new(master: Arc<dyn MasterKey>, vault: Arc<dyn KeyVault>) -> Self {
        Keyring {
            master,
            vault,
            cache: KeyCache::default(),
        }
    }

    /// The tenant's vault root key, read off the async threads.
    pub async fn root(&self, tenant: TenantId) -> Result<Kek, ServiceError> {
        let vault = self.vault.clone();
        let root = tokio::task::spawn_blocking(move || vault.root(tenant))
            .await
            .map_err(crypto_err)??;
        let root = root.ok_or_else(|| {
            ServiceError::Crypto(format!(
                "tenant {tenant} has no key vault entry: its keys were destroyed, it was created \
                 before the vault existed (create it again), or vault_dir is not the vault of this database"
            ))
        })?;
        Kek::from_bytes(root.as_ref()).map_err(crypto_err)
    }

    /// A new tenant's root key, stored in the vault.
    pub async fn create_root(&self, tenant: TenantId) -> Result<Kek, ServiceError> {
        let vault = self.vault.clone();
        let root = tokio::task::spawn_blocking(move || vault.create(tenant))
            .await
            .map_err(crypto_err)??;
        Kek::from_bytes(root.as_ref()).map_err(crypto_err)
    }

    /// The tenant's keys, from the cache or unwrapped afresh.
    pub async fn load(
        &self,
        store: &dyn Store,
        tenant: TenantId,
    ) -> Result<Arc<TenantSecrets>, ServiceError> {
        if let Some(s) = self.cache.get(tenant) {
            return Ok(s);
        }
        self.load_fresh(store, tenant).await
    }

    /// Unwraps the tenant's keys from the store and the vault (creating
    /// data key version 1 for a tenant that has none yet) and caches them.
    pub async fn load_fresh(
        &self,
        store: &dyn Store,
        tenant: TenantId,
    ) -> Result<Arc<TenantSecrets>, ServiceError> {
        let keys = store.tenant_keys(tenant).await.map_err(|e| match e {
            StoreError::NotFound(_) => {
                ServiceError::Crypto(format!("tenant {tenant} has no keys: they were destroyed"))
            }
            e => e.into(),
        })?;
        let root = self.root(tenant).await?;
        let mut data_keys = store.data_keys(tenant).await?;
        if data_keys.is_empty() {
            let row = {
                let kek_bytes = root
                    .unwrap(&keys.kek_wrapped, &aad(tenant, "kek"))
                    .map_err(crypto_err)?;
                let kek = Kek::from_bytes(&kek_bytes).map_err(crypto_err)?;
                new_data_key(&kek, tenant, 1, crate::service::now())
            };
            match store.add_data_key(tenant, &row).await {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            data_keys = store.data_keys(tenant).await?;
        }
        let s = Arc::new(open_tenant_keys(&root, tenant, &keys, &data_keys)?);
        self.cache.insert(tenant, s.clone());
        Ok(s)
    }

    /// Adds the next data key version; new writes use it from now on (in
    /// this process at once, in others within [`KEY_CACHE_TTL`]).
    pub async fn rotate(&self, store: &dyn Store, tenant: TenantId) -> Result<u32, ServiceError> {
        let s = self.load_fresh(store, tenant).await?;
        let next = store
            .data_keys(tenant)
            .await?
            .iter()
            .map(|k| k.version)
            .max()
            .unwrap_or(0)
            + 1;
        store
            .add_data_key(tenant, &s.new_data_key(next, crate::service::now()))
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => ServiceError::Conflict(format!(
                    "another rotation of tenant {tenant} is under way: retry"
                )),
                e => e.into(),
            })?;
        self.cache.remove(tenant);
        Ok(next)
    }
}

#[async_trait]
impl FieldCipher for Keyring {
    async fn sealer(
        &self,
        store: &dyn Store,
        tenant: TenantId,
    ) -> rampart_store::Result<Arc<dyn TenantSealer>> {
        match self.load(store, tenant).await {
            Ok(s) => Ok(s),
            Err(ServiceError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Crypto(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dk(kek_of: &TenantKeys, root: &Kek, t: TenantId, version: u32) -> DataKeyRow {
        let kek =
            Kek::from_bytes(&root.unwrap(&kek_of.kek_wrapped, &aad(t, "kek")).unwrap()).unwrap();
        new_data_key(&kek, t, version, 1)
    }

    #[test]
    fn wrapped_keys_open_only_for_their_tenant_and_root() {
        let root = Kek::generate();
        let t = TenantId(uuid::Uuid::new_v4());
        let keys = new_tenant_keys(&root, t, "pem".into(), b"tls-der");
        let dks = vec![dk(&keys, &root, t, 1)];
        let s = open_tenant_keys(&root, t, &keys, &dks).unwrap();
        assert_eq!(s.instruction_key().to_bytes().to_vec(), keys.signing_pk);
        assert_eq!(s.upload_key().to_bytes(), keys.upload_pk);
        assert_eq!(&*s.tls_key_der, b"tls-der");
        let other = TenantId(uuid::Uuid::new_v4());
        assert!(open_tenant_keys(&root, other, &keys, &dks).is_err());
        assert!(open_tenant_keys(&Kek::generate(), t, &keys, &dks).is_err());
        assert!(
            open_tenant_keys(&root, t, &keys, &[]).is_err(),
            "no data key"
        );
        // Derived keys differ per tenant and per purpose, and are stable.
        let again = open_tenant_keys(&root, t, &keys, &dks).unwrap();
        assert_eq!(*s.pseudonym_key, *again.pseudonym_key);
        assert_ne!(*s.pseudonym_key, *s.index_key);
        let keys2 = new_tenant_keys(&root, other, "pem".into(), b"tls-der");
        let s2 = open_tenant_keys(&root, other, &keys2, &[dk(&keys2, &root, other, 1)]).unwrap();
        assert_ne!(*s.pseudonym_key, *s2.pseudonym_key);
    }

    #[test]
    fn sealed_fields_name_their_version_and_open_only_with_their_aad() {
        let root = Kek::generate();
        let t = TenantId(uuid::Uuid::new_v4());
        let keys = new_tenant_keys(&root, t, "pem".into(), b"tls-der");
        let v1 = dk(&keys, &root, t, 1);
        let s1 = open_tenant_keys(&root, t, &keys, std::slice::from_ref(&v1)).unwrap();
        let old = s1.seal(b"row-a", b"secret").unwrap();
        assert_eq!(old[..4], 1u32.to_be_bytes());
        assert!(!old.windows(6).any(|w| w == b"secret"));
        assert_eq!(s1.open(b"row-a", &old).unwrap(), b"secret");
        assert!(s1.open(b"row-b", &old).is_err(), "moved to another row");
        // Version 2 added: new values name it, old ones still open.
        let v2 = dk(&keys, &root, t, 2);
        let s2 = open_tenant_keys(&root, t, &keys, &[v1, v2.clone()]).unwrap();
        assert_eq!(TenantSealer::version(&s2), 2);
        let new = s2.seal(b"row-a", b"secret").unwrap();
        assert_eq!(new[..4], 2u32.to_be_bytes());
        assert_eq!(s2.open(b"row-a", &old).unwrap(), b"secret");
        // Relabelling a value with another version does not open it.
        let mut relabelled = new.clone();
        relabelled[..4].copy_from_slice(&1u32.to_be_bytes());
        assert!(s2.open(b"row-a", &relabelled).is_err());
        // Version 1 retired: its values are gone, version 2's open.
        let retired = DataKeyRow {
            key_wrapped: None,
            retired_at: Some(2),
            ..dk(&keys, &root, t, 1)
        };
        let s3 = open_tenant_keys(&root, t, &keys, &[retired, v2]).unwrap();
        assert!(s3.open(b"row-a", &old).is_err());
        assert_eq!(s3.open(b"row-a", &new).unwrap(), b"secret");
        // The blind index is keyed: stable within the tenant, not across.
        assert_eq!(s1.blind_index(b"a", b"k"), s3.blind_index(b"a", b"k"));
        assert_ne!(s1.blind_index(b"a", b"k"), s1.blind_index(b"a", b"j"));
    }

    #[test]
    fn a_master_ring_unwraps_with_either_key_and_wraps_with_the_current() {
        let old: Arc<dyn MasterKey> = Arc::new(LocalMasterKey(Kek::generate()));
        let new: Arc<dyn MasterKey> = Arc::new(LocalMasterKey(Kek::generate()));
        let blob = old.wrap(b"root", b"aad");
        let ring = MasterRing {
            current: new.clone(),
            previous: Some(old.clone()),
        };
        assert_eq!(&*ring.unwrap(&blob, b"aad").unwrap(), b"root");
        assert_eq!(ring.id(), new.id());
        assert_ne!(old.id(), new.id());
        let rewrapped = ring.wrap(b"root", b"aad");
        assert!(old.unwrap(&rewrapped, b"aad").is_err());
        assert_eq!(&*new.unwrap(&rewrapped, b"aad").unwrap(), b"root");
        let alone = MasterRing {
            current: new,
            previous: None,
        };
        assert!(alone.unwrap(&blob, b"aad").is_err());
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
