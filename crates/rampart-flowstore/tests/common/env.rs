//! A real metadata store and blob directory in a temp dir, with tenants,
//! devices and recorded batches, shared by the tests and the measurement
//! example.

#![allow(dead_code)]

use std::sync::Arc;

use rampart_flowstore::{FlowStore, FlowStoreConfig};
use rampart_store::blob::LocalBlobStore;
use rampart_store::sqlite::SqliteStore;
use rampart_store::*;
use uuid::Uuid;

pub struct Env {
    /// Removed on drop, unless the store lives in a directory given.
    _tmp: Option<tempfile::TempDir>,
    pub root: std::path::PathBuf,
    pub meta: Arc<SqliteStore>,
    pub blobs: Arc<LocalBlobStore>,
}

impl Env {
    pub async fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let mut env = Env::at(&root).await;
        env._tmp = Some(tmp);
        env
    }

    /// A store in `root`, kept after the process ends.
    pub async fn at(root: &std::path::Path) -> Env {
        std::fs::create_dir_all(root).unwrap();
        let meta = Arc::new(SqliteStore::open(&root.join("meta.db")).await.unwrap());
        // Device hostnames and labels are sealed: a bare store needs a cipher.
        meta.set_field_cipher(Arc::new(rampart_store::suite::TestCipher::default()));
        let blobs = Arc::new(LocalBlobStore::new(root.join("blobs")));
        Env {
            _tmp: None,
            root: root.to_path_buf(),
            meta,
            blobs,
        }
    }

    pub fn flow_store(&self, cfg: FlowStoreConfig) -> FlowStore {
        FlowStore::new(self.meta.clone(), self.blobs.clone(), cfg)
    }

    pub fn blob_dir(&self) -> std::path::PathBuf {
        self.root.join("blobs")
    }

    /// A tenant with `devices` active devices.
    pub async fn tenant(&self, name: &str, devices: usize) -> (TenantId, Vec<DeviceId>) {
        let id = TenantId(Uuid::new_v4());
        self.meta
            .create_tenant(&NewTenant {
                tenant: Tenant {
                    id,
                    name: name.into(),
                    domain: format!("{name}.example.net"),
                    status: TenantStatus::Active,
                    created_at: 1,
                    cert_file: None,
                    key_file: None,
                    lifecycle: rampart_store::Lifecycle::Live,
                    region: "default".into(),
                },
                keys: TenantKeys {
                    kek_wrapped: vec![1; 40],
                    signing_sk_wrapped: vec![2; 40],
                    signing_pk: vec![3; 32],
                    upload_sk_wrapped: vec![4; 40],
                    upload_pk: vec![5; 32],
                    tls_cert_pem: "-".into(),
                    tls_key_wrapped: vec![6; 40],
                },
            })
            .await
            .unwrap();
        let hash = format!("enroll-{name}");
        self.meta
            .create_enrollment_token(
                id,
                &EnrollmentTokenRow {
                    id: Uuid::new_v4(),
                    tenant_id: id,
                    secret_hash: hash.clone(),
                    created_at: 1,
                    expires_at: i64::MAX,
                    max_uses: devices as u32,
                    uses: 0,
                    labels: vec![],
                    needs_approval: false,
                    revoked_at: None,
                },
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..devices {
            let d = self
                .meta
                .redeem_enrollment(
                    id,
                    &hash,
                    &NewDevice {
                        id: DeviceId(Uuid::new_v4()),
                        public_key: vec![9; 32],
                        hostname: "edge".into(),
                        now: 2,
                    },
                )
                .await
                .unwrap()
                .unwrap();
            out.push(d.id);
        }
        (id, out)
    }

    /// Records a spooled "flows" batch, as ingest does, and returns its id.
    pub async fn batch(&self, tenant: TenantId, device: DeviceId) -> (DeviceId, Uuid) {
        let id = Uuid::new_v4();
        assert!(self
            .meta
            .record_batch(
                tenant,
                &BatchRow {
                    batch_id: id,
                    device_id: device,
                    kind: "flows".into(),
                    priority: 1,
                    items: 1,
                    bytes: 1,
                    created_at: 1,
                    received_at: 1,
                    blob_key: format!("spool/{id}.rpb"),
                },
            )
            .await
            .unwrap());
        (device, id)
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
