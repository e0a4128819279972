//! Key operations: data key rotation, the background re-encryption job,
//! master key rotation and crypto-shredding. See `crypto.rs` for the
//! hierarchy and ARCHITECTURE.md › Crypto for what each step guarantees.
//!
//! Rotation without downtime: `rotate_tenant_key` adds a data key version
//! and new writes use it at once (other processes within the key cache's
//! TTL). Each pass of [`jobs`] then re-seals a bounded number of rows and
//! segment files per tenant that are still under older versions; the work
//! is found by index (`key_version` columns), so a pass resumes where the
//! last one stopped. When nothing uses an old version any more and the
//! newest version is older than `key_retire_grace_secs`, the old version's
//! wrapped key is dropped (retired). Each pass also re-wraps vault entries
//! still under a previous master key.

use std::sync::Arc;
use std::time::Duration;

use rampart_store::{DataKeyRow, KeyUsage, TenantId};
use serde::Serialize;

use crate::audit::{self, Actor};
use crate::service::{now, Portal, Result, ServiceError};
use crate::vault::VaultStatus;

/// One data key version and how much still uses it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeyVersionView {
    pub version: u32,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    /// New writes use this version.
    pub current: bool,
    /// Rows whose oldest sealed value is under this version.
    pub rows: u64,
    /// Flow segment files verified to be sealed under it.
    pub segments: u64,
}

/// A tenant's keys, for `GET /api/v1/admin/tenants/{tenant}/keys` and
/// `rampart keys status`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeyStatus {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub current_version: u32,
    pub versions: Vec<KeyVersionView>,
    /// Rows and segments still under versions older than the current one.
    pub rows_on_old_versions: u64,
    pub segments_on_old_versions: u64,
    /// Segment files not yet checked by the job (written since the last pass).
    pub segments_unverified: u64,
    /// The id of the master key that wraps the vault (not secret).
    pub master_key_id: String,
}

/// What one pass of the job did, summed over tenants.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PassReport {
    pub rows_resealed: u64,
    pub segments_resealed: u64,
    pub versions_retired: u64,
    pub vault_entries_rewrapped: u64,
    /// Tenants with work left for a later pass.
    pub tenants_pending: u64,
}

/// What destroying a tenant's keys removed, for the cancellation job.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Shredded {
    pub tenant_id: TenantId,
    /// Whether a vault entry existed (false when it was destroyed before).
    pub vault_entry: bool,
    pub data_key_versions: u32,
}

fn status_of(tenant: TenantId, keys: &[DataKeyRow], usage: &KeyUsage, master: String) -> KeyStatus {
    let current = keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| k.version)
        .max()
        .unwrap_or(0);
    let count = |list: &[(u32, u64)], v: u32| {
        list.iter()
            .filter(|(ver, _)| *ver == v)
            .map(|(_, n)| *n)
            .sum()
    };
    let old = |list: &[(u32, u64)]| {
        list.iter()
            .filter(|(ver, _)| *ver < current)
            .map(|(_, n)| *n)
            .sum()
    };
    KeyStatus {
        tenant_id: tenant,
        current_version: current,
        versions: keys
            .iter()
            .map(|k| KeyVersionView {
                version: k.version,
                created_at: k.created_at,
                retired_at: k.retired_at,
                current: k.version == current,
                rows: count(&usage.fields, k.version),
                segments: count(&usage.segments, k.version),
            })
            .collect(),
        rows_on_old_versions: old(&usage.fields),
        segments_on_old_versions: old(&usage.segments),
        segments_unverified: usage.segments_unverified,
        master_key_id: master,
    }
}

impl Portal {
    async fn tenant_exists(&self, tenant: TenantId) -> Result<()> {
        self.store
            .get_tenant(tenant)
            .await?
            .map(|_| ())
            .ok_or_else(|| ServiceError::NotFound(format!("tenant {tenant}")))
    }

    /// Adds the tenant's next data key version: new writes use it, and the
    /// job re-encrypts older data (recorded as `key.rotate`).
    pub async fn rotate_tenant_key(&self, actor: &Actor, tenant: TenantId) -> Result<u32> {
        self.tenant_exists(tenant).await?;
        let version = self.keyring.rotate(self.store.as_ref(), tenant).await?;
        self.metrics.key_rotations.inc();
        tracing::info!(%tenant, version, "tenant data key rotated");
        audit::record(
            self,
            Some(tenant),
            actor,
            "key.rotate",
            &format!("tenant:{tenant}"),
            serde_json::json!({"data_key_version": version}),
        )
        .await?;
        Ok(version)
    }

    /// The tenant's key versions and how much data is still on old ones.
    pub async fn key_status(&self, tenant: TenantId) -> Result<KeyStatus> {
        self.tenant_exists(tenant).await?;
        let keys = self.store.data_keys(tenant).await?;
        let usage = self.store.key_usage(tenant).await?;
        Ok(status_of(tenant, &keys, &usage, self.keyring.master.id()))
    }

    /// Crypto-shredding: destroys the tenant's vault entry and every wrapped
    /// key in the database, and forgets the unwrapped ones. Nothing of the
    /// tenant opens afterwards, here or in any backup taken before (backups
    /// never hold the vault). Irreversible; recorded as `key.destroy`.
    pub async fn destroy_tenant_keys(&self, actor: &Actor, tenant: TenantId) -> Result<Shredded> {
        let versions = self.store.data_keys(tenant).await?.len() as u32;
        let vault = self.keyring.vault.clone();
        let vault_entry = tokio::task::spawn_blocking(move || vault.destroy(tenant))
            .await
            .map_err(|e| ServiceError::Crypto(e.to_string()))??;
        self.store.destroy_tenant_keys(tenant).await?;
        if let Some(s) = self.keyring.cache.remove(tenant) {
            self.flows.store.forget_key(&s.data_key);
        }
        tracing::warn!(%tenant, vault_entry, versions, "tenant keys destroyed");
        audit::record(
            self,
            Some(tenant),
            actor,
            "key.destroy",
            &format!("tenant:{tenant}"),
            serde_json::json!({
                "destroyed": ["vault_root", "kek", "signing", "upload", "tls", "data_keys"],
                "vault_entry": vault_entry,
                "data_key_versions": versions,
            }),
        )
        .await?;
        Ok(Shredded {
            tenant_id: tenant,
            vault_entry,
            data_key_versions: versions,
        })
    }

    /// Re-wraps every vault entry and the local CA key under the current
    /// master key (the previous one given as `previous_master_key_file`);
    /// afterwards the previous key can be destroyed. Recorded as
    /// `key.rotate_master`.
    pub async fn rotate_master(&self, actor: &Actor) -> Result<u64> {
        let vault = self.keyring.vault.clone();
        let n = tokio::task::spawn_blocking(move || vault.rewrap())
            .await
            .map_err(|e| ServiceError::Crypto(e.to_string()))??;
        crate::ca::LocalCa::rewrap(self.store.as_ref(), self.master.as_ref()).await?;
        audit::record(
            self,
            None,
            actor,
            "key.rotate_master",
            "portal",
            serde_json::json!({"vault_entries_rewrapped": n, "ca_key": "rewrapped",
                "master_key_id": self.keyring.master.id()}),
        )
        .await?;
        Ok(n)
    }

    pub async fn vault_status(&self) -> Result<VaultStatus> {
        let vault = self.keyring.vault.clone();
        tokio::task::spawn_blocking(move || vault.status())
            .await
            .map_err(|e| ServiceError::Crypto(e.to_string()))?
    }

    /// One bounded pass of the rotation job over every tenant.
    pub async fn rekey_pass(&self) -> Result<PassReport> {
        let mut report = PassReport::default();
        let vault = self.keyring.vault.clone();
        report.vault_entries_rewrapped = tokio::task::spawn_blocking(move || vault.rewrap())
            .await
            .map_err(|e| ServiceError::Crypto(e.to_string()))??;
        if report.vault_entries_rewrapped > 0 {
            audit::record(
                self,
                None,
                &Actor::Portal,
                "key.rewrap_master",
                "portal",
                serde_json::json!({"vault_entries_rewrapped": report.vault_entries_rewrapped}),
            )
            .await?;
        }
        for t in self.store.list_tenants().await? {
            match self.rekey_tenant(t.id, &mut report).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(tenant = %t.id, error = %e, "key rotation pass failed"),
            }
        }
        self.metrics
            .key_objects_resealed
            .get_or_create(&crate::metrics::KindLabels {
                kind: "rows".into(),
            })
            .inc_by(report.rows_resealed);
        self.metrics
            .key_objects_resealed
            .get_or_create(&crate::metrics::KindLabels {
                kind: "segments".into(),
            })
            .inc_by(report.segments_resealed);
        self.metrics.key_rotation_last_run.set(now());
        Ok(report)
    }

    async fn rekey_tenant(&self, tenant: TenantId, report: &mut PassReport) -> Result<()> {
        let keys = self.store.data_keys(tenant).await?;
        let active: Vec<&DataKeyRow> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
        if active.len() < 2 {
            return Ok(());
        }
        let newest = active.iter().map(|k| k.version).max().unwrap_or(0);
        let mut s = self.secrets(tenant).await?;
        if rampart_store::cipher::TenantSealer::version(s.as_ref()) != newest {
            s = self.keyring.load_fresh(self.store.as_ref(), tenant).await?;
        }
        let batch = self.config.key_rekey_batch;
        let rows = self.store.reseal_fields(tenant, batch).await?;
        report.rows_resealed += rows;
        let segs = self.store.segments_off_key(tenant, newest, batch).await?;
        for seg in &segs {
            let rewritten = self
                .flows
                .store
                .rekey(tenant, &s.data_key, seg)
                .await
                .map_err(|e| ServiceError::Crypto(format!("re-sealing segment {}: {e}", seg.id)))?;
            if rewritten {
                report.segments_resealed += 1;
            }
        }
        if rows > 0 || !segs.is_empty() {
            report.tenants_pending += 1;
            return Ok(());
        }
        let usage = self.store.key_usage(tenant).await?;
        let in_use = usage.fields.iter().any(|(v, n)| *v < newest && *n > 0)
            || usage.segments.iter().any(|(v, n)| *v < newest && *n > 0)
            || usage.segments_unverified > 0;
        let newest_at = active
            .iter()
            .find(|k| k.version == newest)
            .map_or(0, |k| k.created_at);
        let grace = i64::try_from(self.config.key_retire_grace_secs).unwrap_or(i64::MAX);
        if in_use || now() < newest_at.saturating_add(grace) {
            report.tenants_pending += 1;
            return Ok(());
        }
        for old in active.iter().filter(|k| k.version < newest) {
            if self
                .store
                .retire_data_key(tenant, old.version, now())
                .await?
            {
                report.versions_retired += 1;
                tracing::info!(%tenant, version = old.version, "data key version retired");
                audit::record(
                    self,
                    Some(tenant),
                    &Actor::Portal,
                    "key.retire",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"data_key_version": old.version}),
                )
                .await?;
            }
        }
        if let Some(old) = self.keyring.cache.remove(tenant) {
            self.flows.store.forget_key(&old.data_key);
        }
        Ok(())
    }

    /// Runs passes until none finds work left (bounded), for the CLI.
    pub async fn rekey_until_done(&self, max_passes: u32) -> Result<PassReport> {
        let mut total = PassReport::default();
        for _ in 0..max_passes.max(1) {
            let r = self.rekey_pass().await?;
            total.rows_resealed += r.rows_resealed;
            total.segments_resealed += r.segments_resealed;
            total.versions_retired += r.versions_retired;
            total.vault_entries_rewrapped += r.vault_entries_rewrapped;
            total.tenants_pending = r.tenants_pending;
            if r.rows_resealed == 0 && r.segments_resealed == 0 && r.versions_retired == 0 {
                break;
            }
        }
        Ok(total)
    }
}

/// The background job: one pass every `key_rekey_interval_secs`.
pub async fn jobs(p: Arc<Portal>) {
    let mut tick = tokio::time::interval(Duration::from_secs(p.config.key_rekey_interval_secs));
    loop {
        tick.tick().await;
        match p.rekey_pass().await {
            Ok(r) if r != PassReport::default() => tracing::info!(
                rows = r.rows_resealed,
                segments = r.segments_resealed,
                retired = r.versions_retired,
                vault = r.vault_entries_rewrapped,
                pending = r.tenants_pending,
                "key rotation pass"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "key rotation pass failed"),
        }
    }
}
