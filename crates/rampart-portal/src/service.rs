//! What the portal does, independent of how it is asked: the HTTP routes and
//! the `rampart` CLI both call these methods, so there is one code path for
//! creating a tenant, minting a token or queueing an instruction.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rampart_proto::api::{DeviceStatus, EnrollRequest, EnrollResponse, Heartbeat};
use rampart_proto::batch;
use rampart_proto::envelope::Envelope;
use rampart_proto::keys::VerifyingKey;
use rampart_proto::token::EnrollmentToken;
use rampart_store::blob::{BlobStore, LocalBlobStore};
use rampart_store::sqlite::SqliteStore;
use rampart_store::*;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::alarms::Alarms;
use crate::audit::{self, Actor};
use crate::ca::LocalCa;
use crate::config::Config;
use crate::crypto::{self, Keyring, MasterKey, TenantSecrets};
use crate::flows::Flows;
use crate::metrics::Metrics;
use crate::tls::{self, CertStore};
use rampart_flowstore::geo::GeoDb;
use rampart_flowstore::{FlowStore, FlowStoreConfig};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    /// A configuration document refused, with the JSON path.
    #[error("invalid configuration at {0}")]
    InvalidConfig(rampart_proto::config::ConfigError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("key error: {0}")]
    Crypto(String),
    #[error("tls error: {0}")]
    Tls(String),
    #[error("{}", enrollment_message(*.0))]
    Enrollment(TokenRejection),
    /// The tenant's plan does not include a feature.
    #[error("this tenant's plan does not include {0}: ask your provider to add it")]
    NotInPlan(String),
    /// The tenant belongs to another region's deployment, whose admin API
    /// is at `url`.
    #[error("region {region} is served by another deployment: create the tenant at {url}")]
    WrongRegion { region: String, url: String },
}

fn enrollment_message(r: TokenRejection) -> String {
    let why = match r {
        TokenRejection::Unknown => "is unknown to this tenant",
        TokenRejection::Expired => "has expired",
        TokenRejection::UsedUp => "has been used up",
        TokenRejection::Revoked => "was revoked",
        TokenRejection::DeviceLimit(n) => {
            return format!(
                "this tenant's plan allows {n} devices and has them all: revoke one or ask your provider for a larger plan"
            )
        }
    };
    format!("enrollment token {why}: ask the tenant admin for a new one")
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the epoch (flow times are in ms).
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Tenant names are short slugs: they appear in URLs, logs and file names.
/// 1 to 63 of a-z, 0-9 and -: the names of tenants and plans.
pub fn is_slug(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub fn validate_name(name: &str) -> Result<()> {
    let ok = is_slug(name)
        && !name.starts_with('-')
        && !name.ends_with('-')
        // Deleted tenants are renamed `deleted-<id>`.
        && !name.starts_with("deleted-");
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid tenant name {name:?}: use 1 to 63 of a-z, 0-9 and -, not starting or ending with - nor with deleted-"
        )))
    }
}

/// Domains are DNS names (RFC 1123 labels), compared lowercase.
pub fn validate_domain(domain: &str) -> Result<()> {
    let ok = (1..=253).contains(&domain.len())
        && domain.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid domain {domain:?}: use a DNS name such as acme.portal.example.net"
        )))
    }
}

fn validate_labels(labels: &[String]) -> Result<()> {
    if labels.len() > 32 || labels.iter().any(|l| l.is_empty() || l.len() > 64) {
        return Err(ServiceError::Invalid(
            "labels: at most 32, each 1 to 64 characters".into(),
        ));
    }
    Ok(())
}

/// Wakes long polls when an instruction is queued for their device.
///
/// In-process only: the scale-out issue adds a pub/sub fan-out behind this.
#[derive(Default)]
pub struct Waker {
    devices: Mutex<HashMap<DeviceId, Arc<Notify>>>,
}

impl Waker {
    pub fn subscribe(&self, device: DeviceId) -> Arc<Notify> {
        let mut m = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(device).or_default().clone()
    }

    pub fn wake(&self, device: DeviceId) {
        let n = self
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device)
            .cloned();
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

/// Records "delivered" marks in batches, off the poll's path: the answer to a
/// long poll does not wait for a commit, and a burst of ten thousand
/// deliveries costs a few commits. A mark lost in a crash is harmless: the
/// instruction stays `queued`, and the agent's seq check makes redelivery safe.
pub struct DeliveryLog {
    tx: tokio::sync::mpsc::UnboundedSender<(TenantId, DeviceId, u64)>,
}

impl DeliveryLog {
    /// Starts the recorder on `store`.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(TenantId, DeviceId, u64)>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while rx.recv_many(&mut buf, 10_000).await > 0 {
                let mut by_tenant: HashMap<TenantId, Vec<(DeviceId, u64)>> = HashMap::new();
                for (t, d, seq) in buf.drain(..) {
                    by_tenant.entry(t).or_default().push((d, seq));
                }
                for (t, marks) in by_tenant {
                    if let Err(e) = store.mark_delivered(t, &marks, now()).await {
                        tracing::warn!(tenant = %t, error = %e, "recording deliveries failed");
                    }
                }
            }
        });
        DeliveryLog { tx }
    }

    pub fn record(&self, tenant: TenantId, device: DeviceId, seq: u64) {
        let _ = self.tx.send((tenant, device, seq));
    }
}

/// Remembers request nonces inside the signature time window, so that a
/// captured device request cannot be replayed.
pub struct NonceCache {
    inner: Mutex<NonceWindow>,
    /// Hard bound on memory; beyond it requests are refused (503).
    cap: usize,
}

/// Nonces seen, and the order they arrived in for expiry.
#[derive(Default)]
struct NonceWindow {
    seen: HashSet<(Uuid, String)>,
    order: VecDeque<(i64, Uuid, String)>,
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache {
            inner: Mutex::default(),
            cap: 2_000_000,
        }
    }
}

pub enum NonceCheck {
    Fresh,
    Replayed,
    Full,
}

impl NonceCache {
    pub fn check(&self, device: Uuid, nonce: &str, now: i64) -> NonceCheck {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let NonceWindow { seen: set, order } = &mut *g;
        // Anything older than twice the window can no longer verify anyway.
        let horizon = now - 2 * rampart_proto::reqsig::MAX_REQUEST_SKEW_SECS;
        while order.front().is_some_and(|(t, _, _)| *t < horizon) {
            if let Some((_, d, n)) = order.pop_front() {
                set.remove(&(d, n));
            }
        }
        let key = (device, nonce.to_string());
        if set.contains(&key) {
            return NonceCheck::Replayed;
        }
        if set.len() >= self.cap {
            return NonceCheck::Full;
        }
        set.insert(key.clone());
        order.push_back((now, key.0, key.1));
        NonceCheck::Fresh
    }
}

/// A tenant token or operator token, as minted (the secret is shown once).
pub struct MintedToken {
    pub row: ApiToken,
    pub secret: String,
}

/// Everything the portal needs at run time. Cheap to share behind an `Arc`.
pub struct Portal {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub master: Arc<dyn MasterKey>,
    pub ca: LocalCa,
    /// Master key, key vault and unwrapped-key cache; also the store's cipher.
    pub keyring: Arc<Keyring>,
    pub certs: Arc<CertStore>,
    pub waker: Waker,
    pub nonces: NonceCache,
    pub deliveries: DeliveryLog,
    pub metrics: Metrics,
    pub flows: Flows,
    pub alarms: Alarms,
    /// Login rate limiting (users and access).
    pub access: crate::users::Access,
}

impl Portal {
    /// Opens the embedded stores under `config.data_dir`, creating them on
    /// first start (master key, database, CA).
    pub async fn open(config: Config) -> Result<Portal> {
        config.validate().map_err(ServiceError::Invalid)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServiceError::Invalid(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let (master, source) =
            crypto::load_master_key(&config.master_key_path()).map_err(ServiceError::Crypto)?;
        if source == crypto::MasterKeySource::Generated {
            tracing::warn!(
                path = %config.master_key_path().display(),
                "GENERATED A NEW MASTER KEY. Every tenant key is wrapped by it: back it up \
                 somewhere other than the data dir, and for production move it out of the data \
                 dir (master_key_file) or into RAMPART_MASTER_KEY. Losing it loses all tenant data."
            );
        }
        let previous = match &config.previous_master_key_file {
            Some(p) => Some(
                Arc::new(crypto::read_master_key(p).map_err(ServiceError::Crypto)?)
                    as Arc<dyn MasterKey>,
            ),
            None => None,
        };
        let master = crypto::MasterRing {
            current: Arc::new(master),
            previous,
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.db_path()).await?);
        let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobStore::with_trash(
            config.blob_dir(),
            config.blob_trash_dir(),
            std::time::Duration::from_secs(config.blob_delete_grace_secs),
        ));
        let portal = Self::with_backends(config, store, blobs, Arc::new(master)).await?;
        for t in portal.store.list_tenants().await? {
            if t.region != portal.config.region {
                tracing::warn!(tenant = %t.name, tenant_region = %t.region, region = %portal.config.region,
                    "this store holds a tenant of another region: set `region` to the region this data belongs to");
            }
        }
        Ok(portal)
    }

    /// Assembles a portal over given backends (tests use an in-memory store).
    pub async fn with_backends(
        config: Config,
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        master: Arc<dyn MasterKey>,
    ) -> Result<Portal> {
        let vault = Arc::new(crate::vault::LocalKeyVault::new(
            config.vault_dir(),
            master.clone(),
        ));
        let keyring = Arc::new(Keyring::new(master.clone(), vault));
        store.set_field_cipher(keyring.clone());
        let ca = LocalCa::load_or_create(store.as_ref(), master.as_ref()).await?;
        if config.data_dir.is_dir() {
            let _ = std::fs::write(config.ca_cert_path(), ca.cert_pem());
        }
        // The admin certificate is reissued at every start and never stored.
        // It also names the loopback addresses, so local tools can reach the
        // API by IP with verification on (routing then follows `Host`).
        let admin = ca.issue(&[&config.admin_domain, "127.0.0.1", "::1"])?;
        let certs = Arc::new(CertStore::new(
            &config.admin_domain,
            tls::certified_key(&admin.chain_pem, &admin.key_der)?,
        ));
        let deliveries = DeliveryLog::start(store.clone());
        let geo = if config.geoip_files.is_empty() {
            None
        } else {
            let files = config.geoip_files.clone();
            let db = tokio::task::spawn_blocking(move || GeoDb::open(&files))
                .await
                .map_err(|e| ServiceError::Invalid(format!("opening geoip files: {e}")))?
                .map_err(|e| ServiceError::Invalid(format!("geoip_files: {e}")))?;
            Some(Arc::new(db))
        };
        let flows = Flows {
            store: FlowStore::new(
                store.clone(),
                blobs.clone(),
                FlowStoreConfig {
                    cache_bytes: usize::try_from(config.flow_cache_mib.saturating_mul(1024 * 1024))
                        .unwrap_or(usize::MAX),
                    ..FlowStoreConfig::default()
                },
            ),
            geo,
            wake: tokio::sync::Notify::new(),
        };
        let alarms = Alarms::new(
            config.alarm_webhooks_allow_private,
            rampart_alarms::webhook::Backoff {
                base_s: config.alarm_webhook_retry_secs,
                max_s: 3600,
                max_attempts: config.alarm_webhook_attempts,
            },
            config.agent_offline_alarm_secs,
            &config.alarm_webhook_ca_file,
            config
                .smtp_url
                .as_deref()
                .map(|u| (u, config.smtp_from.as_str())),
        )?;
        let config_access = config.clone();
        let portal = Portal {
            config,
            store,
            blobs,
            master,
            ca,
            keyring,
            certs,
            waker: Waker::default(),
            nonces: NonceCache::default(),
            deliveries,
            metrics: Metrics::new(),
            flows,
            alarms,
            access: crate::users::Access::new(&config_access),
        };
        portal.refresh_certs().await?;
        Ok(portal)
    }

    /// Loads the certificates of tenants not served yet, so tenants created
    /// by another process (the CLI, another replica) are picked up. Loaded
    /// ones are kept as they are: this runs every few seconds, and unwrapping
    /// and parsing every tenant's key each time would grow with the tenants.
    pub async fn refresh_certs(&self) -> Result<()> {
        let mut map = HashMap::new();
        for t in self.store.list_tenants().await? {
            if matches!(t.lifecycle, Lifecycle::Deleted { .. }) {
                continue;
            }
            if let Some(ck) = self.certs.get(&t.domain) {
                map.insert(t.domain, ck);
                continue;
            }
            let ck = match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => {
                    let (c, k) = (c.clone(), k.clone());
                    tokio::task::spawn_blocking(move || tls::certified_key_from_files(&c, &k))
                        .await
                        .map_err(|e| ServiceError::Tls(e.to_string()))
                        .and_then(|r| r)
                }
                // Per tenant: one tenant without keys (shredded) must not
                // keep the others' certificates from loading.
                _ => match self.store.tenant_keys(t.id).await {
                    Ok(keys) => self
                        .secrets(t.id)
                        .await
                        .and_then(|s| tls::certified_key(&keys.tls_cert_pem, &s.tls_key_der)),
                    Err(e) => Err(e.into()),
                },
            };
            match ck {
                Ok(ck) => {
                    map.insert(t.domain.clone(), Arc::new(ck));
                }
                Err(e) => {
                    tracing::error!(tenant = %t.name, error = %e, "cannot load tenant certificate")
                }
            }
        }
        self.certs.set_tenants(map);
        Ok(())
    }

    /// The tenant's private keys, unwrapped once and cached.
    pub async fn secrets(&self, tenant: TenantId) -> Result<Arc<TenantSecrets>> {
        self.keyring.load(self.store.as_ref(), tenant).await
    }

    /// Reads a spooled batch and opens it with the tenant's upload key,
    /// for the processors that consume the spool (flows, detection).
    pub async fn open_spooled(&self, tenant: TenantId, b: &BatchRow) -> Result<Vec<u8>> {
        let frame = self
            .blobs
            .get(&b.blob_key)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("spooled batch {}", b.blob_key)))?;
        let secrets = self.secrets(tenant).await?;
        let (t, d) = (tenant.0, b.device_id.0);
        tokio::task::spawn_blocking(move || {
            batch::parse(&frame)
                .and_then(|f| f.open(&secrets.upload, t, d))
                .map_err(|e| ServiceError::Invalid(e.to_string()))
        })
        .await
        .map_err(|e| ServiceError::Invalid(format!("open task failed: {e}")))?
    }

    /// Hex SHA-256 of the SPKI of the certificate the tenant's domain serves.
    pub async fn tenant_pin(&self, tenant: &Tenant) -> Result<String> {
        let chain = match &tenant.cert_file {
            Some(f) => tokio::fs::read_to_string(f)
                .await
                .map_err(|e| ServiceError::Tls(format!("cannot read {f}: {e}")))?,
            None => self.store.tenant_keys(tenant.id).await?.tls_cert_pem,
        };
        use rustls::pki_types::pem::PemObject;
        let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .ok_or_else(|| ServiceError::Tls("tenant certificate chain is empty".into()))?
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        rampart_proto::pin::spki_pin(&leaf).map_err(|e| ServiceError::Tls(e.to_string()))
    }

    /// Creates a tenant in this deployment's region.
    pub async fn create_tenant(
        &self,
        actor: &Actor,
        name: &str,
        domain: &str,
        cert_files: Option<(String, String)>,
    ) -> Result<Tenant> {
        self.create_tenant_in(actor, name, domain, None, cert_files)
            .await
    }

    /// Refuses a region other than this deployment's: a tenant's data stays
    /// in its region's store, so it must be created by that region's
    /// deployment, whose address the error gives.
    pub fn check_region(&self, region: &str) -> Result<()> {
        if region == self.config.region {
            return Ok(());
        }
        crate::config::validate_region(region).map_err(ServiceError::Invalid)?;
        match self.config.regions.get(region) {
            Some(url) => Err(ServiceError::WrongRegion {
                region: region.to_string(),
                url: url.clone(),
            }),
            None => {
                let mut known: Vec<&str> = vec![self.config.region.as_str()];
                known.extend(self.config.regions.keys().map(String::as_str));
                Err(ServiceError::Invalid(format!(
                    "unknown region {region}: use one of {}",
                    known.join(", ")
                )))
            }
        }
    }

    /// Creates a tenant with its keys (recorded as `tenant.create` and
    /// `key.create`) in `region`, which must be this deployment's (`None`:
    /// this deployment's).
    pub async fn create_tenant_in(
        &self,
        actor: &Actor,
        name: &str,
        domain: &str,
        region: Option<&str>,
        cert_files: Option<(String, String)>,
    ) -> Result<Tenant> {
        if let Some(r) = region {
            self.check_region(r)?;
        }
        validate_name(name)?;
        let domain = domain.to_ascii_lowercase();
        validate_domain(&domain)?;
        if domain == self.config.admin_domain.to_ascii_lowercase() {
            return Err(ServiceError::Invalid(format!(
                "domain {domain} is the admin domain: give the tenant its own"
            )));
        }
        if let Some((c, k)) = &cert_files {
            // Refuse unusable files now, as the operator's mistake, rather
            // than at the first handshake.
            let (c, k) = (c.clone(), k.clone());
            tokio::task::spawn_blocking(move || tls::certified_key_from_files(&c, &k))
                .await
                .map_err(|e| ServiceError::Tls(e.to_string()))?
                .map_err(|e| {
                    ServiceError::Invalid(format!(
                        "{e}: give readable pem files on the portal host"
                    ))
                })?;
        }
        let id = TenantId(Uuid::new_v4());
        let issued = self.ca.issue(&[&domain])?;
        let root = self.keyring.create_root(id).await?;
        let keys = crypto::new_tenant_keys(&root, id, issued.chain_pem, &issued.key_der);
        let key_detail = serde_json::json!({
            "keys": ["kek", "signing", "upload", "tls"],
            // The KEK is wrapped by a root key in the vault, not in the database.
            "root": "vault",
            "signing_pk": audit::hex(&keys.signing_pk),
            "upload_pk": audit::hex(&keys.upload_pk),
        });
        let certificate = if cert_files.is_some() {
            "operator_files"
        } else {
            "local_ca"
        };
        let tenant = Tenant {
            id,
            name: name.to_string(),
            domain,
            status: TenantStatus::Active,
            created_at: now(),
            cert_file: cert_files.as_ref().map(|c| c.0.clone()),
            key_file: cert_files.map(|c| c.1),
            lifecycle: Lifecycle::Live,
            region: self.config.region.clone(),
        };
        if let Err(e) = self
            .store
            .create_tenant(&NewTenant {
                tenant: tenant.clone(),
                keys,
            })
            .await
        {
            // No tenant row: its fresh vault entry would only be litter.
            let vault = self.keyring.vault.clone();
            let _ = tokio::task::spawn_blocking(move || vault.destroy(id)).await;
            return Err(e.into());
        }
        let target = format!("tenant:{id}");
        let detail = serde_json::json!({"name": tenant.name, "domain": tenant.domain, "certificate": certificate, "region": tenant.region});
        audit::record(self, Some(id), actor, "tenant.create", &target, detail).await?;
        audit::record(self, Some(id), actor, "key.create", &target, key_detail).await?;
        if self.config.default_plan != rampart_store::DEFAULT_PLAN {
            let plan = TenantPlan {
                plan: self.config.default_plan.clone(),
                ..TenantPlan::default()
            };
            self.set_tenant_plan(actor, id, plan).await?;
        }
        self.refresh_certs().await?;
        tracing::info!(tenant = %tenant.name, domain = %tenant.domain, "tenant created");
        Ok(tenant)
    }

    pub async fn find_tenant(&self, name_or_id: &str) -> Result<Tenant> {
        let t = match Uuid::parse_str(name_or_id) {
            Ok(id) => self.store.get_tenant(TenantId(id)).await?,
            Err(_) => self.store.tenant_by_name(name_or_id).await?,
        };
        t.ok_or_else(|| ServiceError::NotFound(format!("tenant {name_or_id}")))
    }

    pub async fn set_tenant_status(
        &self,
        actor: &Actor,
        tenant: TenantId,
        status: TenantStatus,
    ) -> Result<()> {
        self.store.set_tenant_status(tenant, status).await?;
        tracing::info!(%tenant, status = status.as_str(), "tenant status changed");
        let action = match status {
            TenantStatus::Active => "tenant.resume",
            TenantStatus::Suspended => "tenant.suspend",
        };
        let target = format!("tenant:{tenant}");
        audit::record(
            self,
            Some(tenant),
            actor,
            action,
            &target,
            serde_json::json!({}),
        )
        .await?;
        Ok(())
    }

    /// Sets the tenant's flow retention (its plan's windows; the caller
    /// validated them).
    pub async fn set_flow_plan(
        &self,
        actor: &Actor,
        tenant: TenantId,
        visible_days: u32,
        stored_days: u32,
    ) -> Result<()> {
        self.store
            .set_flow_retention(tenant, visible_days, stored_days)
            .await?;
        let detail = serde_json::json!({"visible_days": visible_days, "stored_days": stored_days});
        let target = format!("tenant:{tenant}");
        audit::record(self, Some(tenant), actor, "flow_plan.set", &target, detail).await?;
        Ok(())
    }

    /// Mints an API token: tenant-scoped, or an operator token when `tenant`
    /// is `None`. Only its SHA-256 is stored.
    pub async fn mint_api_token(
        &self,
        actor: &Actor,
        tenant: Option<TenantId>,
        name: &str,
        role: &str,
        ttl_secs: Option<i64>,
    ) -> Result<MintedToken> {
        self.mint_api_token_by(actor, tenant, name, role, ttl_secs, None)
            .await
    }

    /// [`Portal::mint_api_token`] on behalf of a user (`created_by`), whose
    /// offboarding revokes it.
    pub async fn mint_api_token_by(
        &self,
        actor: &Actor,
        tenant: Option<TenantId>,
        name: &str,
        role: &str,
        ttl_secs: Option<i64>,
        created_by: Option<UserId>,
    ) -> Result<MintedToken> {
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let prefix = if tenant.is_some() { "rmt_" } else { "rmo_" };
        let secret = format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let now = now();
        let row = ApiToken {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            name: name.to_string(),
            token_hash: rampart_proto::sha256_hex(secret.as_bytes()),
            role: role.to_string(),
            created_at: now,
            expires_at: ttl_secs.map(|t| now + t),
            revoked_at: None,
            created_by,
        };
        self.store.create_api_token(&row).await?;
        let detail = serde_json::json!({
            "name": row.name,
            "role": row.role,
            "scope": if tenant.is_some() { "tenant" } else { "operator" },
            "expires_at": row.expires_at,
            "created_by": row.created_by,
        });
        let target = format!("api_token:{}", row.id);
        audit::record(self, tenant, actor, "api_token.create", &target, detail).await?;
        Ok(MintedToken { row, secret })
    }

    /// The live token behind a bearer secret, or `None`.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        if secret.len() > 128 {
            return Ok(None);
        }
        let hash = rampart_proto::sha256_hex(secret.as_bytes());
        let Some(tok) = self.store.find_api_token(&hash).await? else {
            return Ok(None);
        };
        // The lookup was by hash; compare again in constant time so timing
        // says nothing about how much of a guess matched.
        if !rampart_proto::ct_eq(tok.token_hash.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        let now = now();
        if tok.revoked_at.is_some() || tok.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        Ok(Some(tok))
    }

    pub async fn create_enrollment_token(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        ttl_secs: i64,
        max_uses: u32,
        labels: Vec<String>,
        needs_approval: bool,
    ) -> Result<(EnrollmentTokenRow, String)> {
        if !(1..=90 * 86_400).contains(&ttl_secs) {
            return Err(ServiceError::Invalid(
                "ttl_secs must be between 1 and 7776000 (90 days)".into(),
            ));
        }
        if !(1..=100_000).contains(&max_uses) {
            return Err(ServiceError::Invalid(
                "max_uses must be between 1 and 100000".into(),
            ));
        }
        validate_labels(&labels)?;
        let token = EnrollmentToken::new(
            self.config.tenant_url(&tenant.domain),
            tenant.id.0,
            self.tenant_pin(tenant).await?,
        );
        let now = now();
        let row = EnrollmentTokenRow {
            id: Uuid::new_v4(),
            tenant_id: tenant.id,
            secret_hash: token.secret_hash(),
            created_at: now,
            expires_at: now + ttl_secs,
            max_uses,
            uses: 0,
            labels,
            needs_approval,
            revoked_at: None,
        };
        self.store.create_enrollment_token(tenant.id, &row).await?;
        // The audit log stays clear (it verifies without keys and outlives
        // a shredded tenant), so it counts tenant content rather than keep it.
        let detail = serde_json::json!({
            "expires_at": row.expires_at,
            "max_uses": row.max_uses,
            "labels": row.labels.len(),
            "needs_approval": row.needs_approval,
        });
        let target = format!("enrollment_token:{}", row.id);
        audit::record(
            self,
            Some(tenant.id),
            actor,
            "enrollment_token.create",
            &target,
            detail,
        )
        .await?;
        Ok((row, token.encode()))
    }

    /// Revokes an enrollment token; false when the tenant has no such token.
    pub async fn revoke_enrollment_token(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<bool> {
        if !self
            .store
            .revoke_enrollment_token(tenant, id, now())
            .await?
        {
            return Ok(false);
        }
        let target = format!("enrollment_token:{id}");
        audit::record(
            self,
            Some(tenant),
            actor,
            "enrollment_token.revoke",
            &target,
            serde_json::json!({}),
        )
        .await?;
        Ok(true)
    }

    /// Sets a device's status (the caller checked the transition) and ends
    /// its held long poll; false when the tenant has no such device.
    pub async fn set_device_status(
        &self,
        actor: &Actor,
        tenant: TenantId,
        device: DeviceId,
        status: DeviceStatus,
    ) -> Result<bool> {
        if !self
            .store
            .set_device_status(tenant, device, status.as_str())
            .await?
        {
            return Ok(false);
        }
        // A held long poll re-reads the device and ends at once on revocation.
        self.waker.wake(device);
        let action = match status {
            DeviceStatus::Active => "device.approve",
            DeviceStatus::Revoked => "device.revoke",
            _ => "device.status",
        };
        let detail = serde_json::json!({"status": status.as_str()});
        audit::record(
            self,
            Some(tenant),
            actor,
            action,
            &format!("device:{device}"),
            detail,
        )
        .await?;
        Ok(true)
    }

    /// Redeems an enrollment token for a new device key.
    pub async fn enroll(&self, tenant: &Tenant, req: &EnrollRequest) -> Result<EnrollResponse> {
        if req.hostname.is_empty() || req.hostname.len() > 253 || req.agent_version.len() > 64 {
            return Err(ServiceError::Invalid(
                "hostname must be 1 to 253 characters and agent_version at most 64".into(),
            ));
        }
        let pk = VerifyingKey::from_b64(&req.device_public_key)
            .map_err(|e| ServiceError::Invalid(format!("device_public_key: {e}")))?;
        let proof = rampart_proto::unb64("proof", &req.proof, 64)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        pk.verify(
            &EnrollRequest::proof_input(&req.secret, &req.device_public_key),
            &proof,
        )
        .map_err(|_| {
            ServiceError::Invalid(
                "proof does not verify: sign the secret with the device key".into(),
            )
        })?;
        let hash = rampart_proto::sha256_hex(req.secret.as_bytes());
        let device = NewDevice {
            id: DeviceId(Uuid::new_v4()),
            public_key: pk.to_bytes().to_vec(),
            hostname: req.hostname.clone(),
            now: now(),
        };
        let dev = self
            .store
            .redeem_enrollment(tenant.id, &hash, &device)
            .await?
            .map_err(ServiceError::Enrollment)?;
        let secrets = self.secrets(tenant.id).await?;
        tracing::info!(tenant = %tenant.name, device = %dev.id, hostname = %dev.hostname, status = %dev.status, "device enrolled");
        // No hostname or labels: the audit log holds no tenant content.
        let detail = serde_json::json!({
            "status": dev.status,
            "labels": dev.labels.len(),
            "enrollment_token": dev.enrollment_token_id,
        });
        let target = format!("device:{}", dev.id);
        audit::record(
            self,
            Some(tenant.id),
            &Actor::Device(dev.id),
            "device.enroll",
            &target,
            detail,
        )
        .await?;
        crate::flows::send_controls_to(self, tenant.id, dev.id).await?;
        // Every device gets the tenant's configuration, including future
        // ones; a failure here must not undo the enrollment (the config
        // job sends it again).
        if let Err(e) =
            crate::devconf::refresh(self, &Actor::Portal, tenant.id, Some(&[dev.id])).await
        {
            tracing::warn!(device = %dev.id, error = %e, "first configuration not queued");
        }
        Ok(EnrollResponse {
            tenant_id: tenant.id.0,
            device_id: dev.id.0,
            status: DeviceStatus::parse(&dev.status).unwrap_or(DeviceStatus::Pending),
            instruction_key: secrets.instruction_key().to_b64(),
            upload_key: secrets.upload_key().to_b64(),
            poll_wait_secs: self.config.poll_wait_secs,
        })
    }

    /// Signs an instruction for one device, stores it and wakes its poll.
    pub async fn queue_instruction(
        &self,
        actor: &Actor,
        tenant: TenantId,
        device: DeviceId,
        kind: &str,
        payload: serde_json::Value,
        ttl_secs: Option<i64>,
    ) -> Result<InstructionRow> {
        let dev = self
            .store
            .get_device(tenant, device)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("device {device}")))?;
        if dev.status == DeviceStatus::Revoked.as_str() {
            return Err(ServiceError::Conflict(format!(
                "device {device} is revoked: enroll it again to send it instructions"
            )));
        }
        self.queue_instructions(actor, tenant, &[device], kind, payload, ttl_secs)
            .await?
            .pop()
            .ok_or_else(|| ServiceError::NotFound(format!("device {device}")))
    }

    /// Signs one instruction per device and stores them all in two
    /// transactions (sequence numbers, then instructions), so reaching ten
    /// thousand devices costs two commits rather than twenty thousand.
    ///
    /// Recorded as one `instruction.queue` entry per call (kind and count,
    /// the first devices; not the payload), so a broadcast to ten thousand
    /// devices is one entry and one more commit.
    pub async fn queue_instructions(
        &self,
        actor: &Actor,
        tenant: TenantId,
        devices: &[DeviceId],
        kind: &str,
        payload: serde_json::Value,
        ttl_secs: Option<i64>,
    ) -> Result<Vec<InstructionRow>> {
        if kind.is_empty()
            || kind.len() > 32
            || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(ServiceError::Invalid(
                "kind must be 1 to 32 characters of a-z and _".into(),
            ));
        }
        let ttl = ttl_secs.unwrap_or(self.config.instruction_ttl_secs as i64);
        if !(10..=30 * 86_400).contains(&ttl) {
            return Err(ServiceError::Invalid(
                "ttl_secs must be between 10 and 2592000".into(),
            ));
        }
        let seqs = self.store.allocate_seqs(tenant, devices).await?;
        let secrets = self.secrets(tenant).await?;
        let now = now();
        let kind = kind.to_string();
        // Signing thousands of envelopes is CPU work: keep it off the
        // async threads.
        let rows = tokio::task::spawn_blocking(move || {
            seqs.into_iter()
                .map(|(device, seq)| {
                    let env = Envelope {
                        tenant: tenant.0,
                        device: device.0,
                        seq,
                        issued_at: now,
                        expires_at: now + ttl,
                        kind: kind.clone(),
                        payload: payload.clone(),
                    };
                    let signed = serde_json::to_value(env.sign(&secrets.signing))
                        .map_err(|e| ServiceError::Crypto(e.to_string()))?;
                    Ok(InstructionRow {
                        device_id: device,
                        seq,
                        kind: env.kind,
                        payload: env.payload,
                        signed,
                        issued_at: now,
                        expires_at: env.expires_at,
                        status: "queued".into(),
                        result: None,
                        delivered_at: None,
                        acked_at: None,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| ServiceError::Crypto(e.to_string()))??;
        self.store.insert_instructions(tenant, &rows).await?;
        self.metrics.instructions_queued.inc_by(rows.len() as u64);
        if let Some(first) = rows.first() {
            let target = match rows.len() {
                1 => format!("device:{}", first.device_id),
                n => format!("devices:{n}"),
            };
            let detail = serde_json::json!({
                "kind": first.kind,
                "count": rows.len(),
                "devices": rows.iter().take(20).map(|r| serde_json::json!({"device": r.device_id, "seq": r.seq})).collect::<Vec<_>>(),
                "expires_at": first.expires_at,
            });
            audit::record(
                self,
                Some(tenant),
                actor,
                "instruction.queue",
                &target,
                detail,
            )
            .await?;
        }
        for r in &rows {
            self.waker.wake(r.device_id);
        }
        Ok(rows)
    }

    /// Verifies, stores durably and then records a sealed batch. Answers
    /// `stored: false` for a batch id this device already delivered.
    pub async fn ingest_batch(
        &self,
        tenant: TenantId,
        device: DeviceId,
        frame_bytes: &[u8],
    ) -> Result<rampart_proto::api::BatchAck> {
        let frame = batch::parse(frame_bytes).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let secrets = self.secrets(tenant).await?;
        // Opening proves the batch was sealed for this tenant and bound to
        // this device before we spend disk on it.
        let plaintext = frame
            .open(&secrets.upload, tenant.0, device.0)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let h = &frame.header;
        if let Some(feature) = crate::lifecycle::feature_of_batch(&h.kind) {
            self.require_feature(tenant, feature).await?;
        }
        // A batch id this device already delivered is acknowledged without
        // touching what was stored: a retry must never rewrite data.
        if self
            .store
            .get_batch(tenant, device, h.batch_id)
            .await?
            .is_some()
        {
            self.metrics.record_batch(&h.kind, false, frame_bytes.len());
            return Ok(rampart_proto::api::BatchAck {
                batch_id: h.batch_id,
                stored: false,
            });
        }
        // The key names the content too, so two racing uploads of one id
        // with different content cannot overwrite each other's blob.
        let digest = rampart_proto::sha256_hex(frame_bytes);
        let key = format!(
            "spool/{tenant}/{device}/{}-{}.rpb",
            h.batch_id,
            &digest[..16]
        );
        self.blobs.put(&key, frame_bytes).await?;
        let row = BatchRow {
            batch_id: h.batch_id,
            device_id: device,
            kind: h.kind.clone(),
            priority: h.priority as u8,
            items: h.items,
            bytes: frame_bytes.len() as u64,
            created_at: h.created_at,
            received_at: now(),
            blob_key: key.clone(),
        };
        let stored = self.store.record_batch(tenant, &row).await?;
        if !stored {
            // Lost a race with an upload of the same id: keep the winner's blob.
            let winner = self.store.get_batch(tenant, device, h.batch_id).await?;
            if winner.is_some_and(|w| w.blob_key != key) {
                self.blobs.delete(&key).await?;
            }
        }
        self.metrics
            .record_batch(&h.kind, stored, frame_bytes.len());
        if stored && h.kind == "health" {
            self.apply_heartbeat(tenant, device, &plaintext).await?;
        }
        if stored && h.kind == "flows" {
            self.flows.wake.notify_one();
        }
        if stored && Alarms::reads(&h.kind) {
            self.alarms.wake.notify_one();
        }
        Ok(rampart_proto::api::BatchAck {
            batch_id: h.batch_id,
            stored,
        })
    }

    async fn apply_heartbeat(
        &self,
        tenant: TenantId,
        device: DeviceId,
        plaintext: &[u8],
    ) -> Result<()> {
        // A health batch holds one heartbeat per line; the newest wins.
        let newest = plaintext
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice::<Heartbeat>(l).ok())
            .max_by_key(|h| h.sent_at);
        if let Some(hb) = newest {
            let before = self
                .store
                .get_device(tenant, device)
                .await?
                .and_then(|d| d.health)
                .and_then(|h| serde_json::from_value::<Heartbeat>(h).ok())
                .map(|h| h.outbox_dropped_batches);
            let v = serde_json::to_value(&hb).map_err(|e| ServiceError::Invalid(e.to_string()))?;
            self.store.set_device_health(tenant, device, &v).await?;
            crate::alarms::outbox_drops(self, tenant, device, before, hb.outbox_dropped_batches)
                .await?;
        }
        Ok(())
    }
}
