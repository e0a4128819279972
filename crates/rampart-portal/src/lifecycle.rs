//! A tenant's life after creation: its plan (what it may keep and use),
//! retention by that plan, cancellation, reactivation and, at the end of the
//! cancellation window, deletion by destroying its keys and data.
//!
//! The lifecycle job runs every `lifecycle_interval_secs` and does three
//! things, each resumable after a crash:
//! - retention: per tenant, everything older than the plan's stored days
//!   (flow segments, alarms and their history, device events, finished
//!   instructions, batch records whose frames are gone);
//! - the spool cleaner: sealed frames whose flows and alarms were taken
//!   out and that are older than `spool_keep_secs`;
//! - deletion: cancelled tenants past `delete_after` lose their keys first
//!   (after which nothing of theirs can be opened, so a crash later leaves
//!   only unreadable bytes), then their blobs and rows; the tenant row stays
//!   as a tombstone and the audit log records what was removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_store::{EffectivePlan, Lifecycle, Plan, SpoolRule, Tenant, TenantId, TenantPlan};

use crate::audit::{self, Actor};
use crate::service::{now, Portal, Result, ServiceError};

/// What a plan may switch on. Routes and ingest of a feature outside the
/// tenant's plan are refused with `feature_not_in_plan`.
pub const FEATURES: &[&str] = &["flows", "alarms", "checks", "config", "vpn"];

/// The feature a request path belongs to, if it is gated by one.
pub fn feature_of_path(path: &str) -> Option<&'static str> {
    let p = path.strip_prefix("/api/v1/")?;
    let first = p.split('/').next()?;
    // A device's VPN (`devices/{id}/vpn…`) and the device's fetch of its keys.
    if (first == "devices" && p.split('/').nth(2) == Some("vpn")) || p == "device/vpn-keys" {
        return Some("vpn");
    }
    match first {
        "flows" | "data-controls" => Some("flows"),
        "alarms" | "alarm-rules" | "alarm-settings" | "alarm-email" | "alarm-deliveries"
        | "webhooks" => Some("alarms"),
        "config" => Some("config"),
        _ => None,
    }
}

/// The feature a batch kind feeds.
pub fn feature_of_batch(kind: &str) -> Option<&'static str> {
    match kind {
        "flows" => Some("flows"),
        "ids_alerts" => Some("alarms"),
        _ => None,
    }
}

/// Checks a plan (or a tenant's overrides) before it is stored.
pub fn validate_plan(
    visible_days: Option<u32>,
    stored_days: Option<u32>,
    max_devices: Option<u32>,
    features: Option<&[String]>,
) -> Result<()> {
    let bad = |m: &str| Err(ServiceError::Invalid(m.into()));
    if visible_days.is_some_and(|d| !(1..=36_500).contains(&d)) {
        return bad("visible_days must be 1 to 36500");
    }
    if stored_days.is_some_and(|d| !(1..=36_500).contains(&d)) {
        return bad("stored_days must be 1 to 36500");
    }
    if let (Some(v), Some(s)) = (visible_days, stored_days) {
        if s < v {
            return bad("stored_days must be at least visible_days: data must be kept as long as it is shown");
        }
    }
    if max_devices.is_some_and(|n| n > 1_000_000) {
        return bad("max_devices must be at most 1000000");
    }
    if let Some(fs) = features {
        if fs.len() > FEATURES.len() {
            return bad("features lists a feature twice");
        }
        for f in fs {
            if !FEATURES.contains(&f.as_str()) {
                return Err(ServiceError::Invalid(format!(
                    "unknown feature {f:?}: use {}",
                    FEATURES.join(", ")
                )));
            }
        }
    }
    Ok(())
}

pub fn validate_plan_name(name: &str) -> Result<()> {
    if crate::service::is_slug(name) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid plan name {name:?}: use 1 to 63 of a-z, 0-9 and -"
        )))
    }
}

impl Portal {
    /// The plan the tenant is held to.
    pub async fn plan(&self, tenant: TenantId) -> Result<EffectivePlan> {
        Ok(self.store.effective_plan(tenant).await?)
    }

    /// Refuses what the tenant's plan does not include.
    pub async fn require_feature(&self, tenant: TenantId, feature: &str) -> Result<()> {
        if self.plan(tenant).await?.has_feature(feature) {
            Ok(())
        } else {
            Err(ServiceError::NotInPlan(feature.into()))
        }
    }

    /// Creates or replaces a plan (recorded as `plan.set`).
    pub async fn set_plan(&self, actor: &Actor, plan: Plan) -> Result<Plan> {
        validate_plan_name(&plan.name)?;
        validate_plan(
            Some(plan.visible_days),
            Some(plan.stored_days),
            plan.max_devices,
            Some(&plan.features),
        )?;
        let plan = Plan {
            updated_at: now(),
            ..plan
        };
        self.store.upsert_plan(&plan).await?;
        let detail = serde_json::to_value(&plan).unwrap_or_default();
        let target = format!("plan:{}", plan.name);
        audit::record(self, None, actor, "plan.set", &target, detail).await?;
        Ok(plan)
    }

    pub async fn delete_plan(&self, actor: &Actor, name: &str) -> Result<()> {
        if !self.store.delete_plan(name).await? {
            return Err(ServiceError::NotFound(format!("plan {name}")));
        }
        let target = format!("plan:{name}");
        audit::record(
            self,
            None,
            actor,
            "plan.delete",
            &target,
            serde_json::json!({}),
        )
        .await?;
        Ok(())
    }

    /// Puts a tenant on a plan with overrides (recorded as
    /// `tenant.plan_set`). The overrides are checked together with the
    /// plan, so the windows that result are consistent.
    pub async fn set_tenant_plan(
        &self,
        actor: &Actor,
        tenant: TenantId,
        tp: TenantPlan,
    ) -> Result<EffectivePlan> {
        let plan = self
            .store
            .get_plan(&tp.plan)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("plan {}", tp.plan)))?;
        validate_plan(
            tp.visible_days,
            tp.stored_days,
            tp.max_devices,
            tp.features.as_deref(),
        )?;
        let eff = EffectivePlan::resolve(&plan, &tp);
        validate_plan(Some(eff.visible_days), Some(eff.stored_days), None, None)?;
        self.store.set_tenant_plan(tenant, &tp).await?;
        let detail = serde_json::json!({"plan": tp, "effective": eff});
        let target = format!("tenant:{tenant}");
        audit::record(
            self,
            Some(tenant),
            actor,
            "tenant.plan_set",
            &target,
            detail,
        )
        .await?;
        Ok(eff)
    }

    /// Cancels a tenant: its API, enrollment and agents are refused from
    /// now on, and its keys and data are destroyed after
    /// `tenant_delete_after_secs` unless it is reactivated first
    /// (recorded as `tenant.cancel`). Held long polls are woken so its
    /// agents hear of it at once.
    pub async fn cancel_tenant(&self, actor: &Actor, tenant: TenantId) -> Result<Tenant> {
        let at = now();
        let delete_after = at + self.config.tenant_delete_after_secs as i64;
        self.store
            .cancel_tenant(tenant, at, delete_after)
            .await
            .map_err(|e| match e {
                rampart_store::StoreError::Conflict(_) => ServiceError::Conflict(format!(
                    "tenant {tenant} is already cancelled or deleted: reactivate it first"
                )),
                e => e.into(),
            })?;
        for d in self.store.list_devices(tenant).await? {
            self.waker.wake(d.id);
        }
        let detail = serde_json::json!({"delete_after": delete_after});
        let target = format!("tenant:{tenant}");
        audit::record(self, Some(tenant), actor, "tenant.cancel", &target, detail).await?;
        tracing::warn!(%tenant, delete_after, "tenant cancelled");
        self.find_tenant(&tenant.to_string()).await
    }

    /// Undoes a cancellation inside its window (recorded as
    /// `tenant.reactivate`).
    pub async fn reactivate_tenant(&self, actor: &Actor, tenant: TenantId) -> Result<Tenant> {
        if !self.store.reactivate_tenant(tenant).await? {
            let t = self.find_tenant(&tenant.to_string()).await?;
            return Err(ServiceError::Conflict(match t.lifecycle {
                Lifecycle::Deleted { .. } => format!(
                    "tenant {tenant} was deleted: its keys and data are gone and cannot come back"
                ),
                _ => format!("tenant {tenant} is not cancelled: nothing to reactivate"),
            }));
        }
        let target = format!("tenant:{tenant}");
        audit::record(
            self,
            Some(tenant),
            actor,
            "tenant.reactivate",
            &target,
            serde_json::json!({}),
        )
        .await?;
        tracing::info!(%tenant, "tenant reactivated");
        self.find_tenant(&tenant.to_string()).await
    }

    /// Destroys a cancelled tenant: keys first, its vault entry included
    /// (crypto-shredding: what is left anywhere, a copy or a backup of the
    /// database included, can no longer be opened for it), then its blobs,
    /// then every row, leaving a tombstone and an audit record
    /// `tenant.delete` that says what went.
    pub async fn delete_tenant(&self, tenant: &Tenant) -> Result<BTreeMap<String, u64>> {
        let shredded = self.destroy_tenant_keys(&Actor::Portal, tenant.id).await?;
        let blobs = self.store.tenant_blob_keys(tenant.id).await?;
        let mut deleted_blobs = 0u64;
        for key in &blobs {
            self.blobs.delete(key).await?;
            deleted_blobs += 1;
        }
        let mut removed = self.store.purge_tenant(tenant.id, now()).await?;
        self.refresh_certs().await?;
        removed.insert("blobs".into(), deleted_blobs);
        for (kind, n) in &removed {
            self.metrics.removed(&format!("tenant_{kind}"), *n);
        }
        self.metrics.tenants_deleted.inc();
        let detail = serde_json::json!({
            "name": tenant.name,
            "domain": tenant.domain,
            "cancelled": match tenant.lifecycle {
                Lifecycle::Cancelled { at, .. } => Some(at),
                _ => None,
            },
            "removed": removed,
            "keys": "destroyed",
            "vault_entry": shredded.vault_entry,
            "data_key_versions": shredded.data_key_versions,
        });
        let target = format!("tenant:{}", tenant.id);
        audit::record(
            self,
            Some(tenant.id),
            &Actor::Portal,
            "tenant.delete",
            &target,
            detail,
        )
        .await?;
        tracing::warn!(tenant = %tenant.id, name = %tenant.name, "tenant keys and data destroyed");
        Ok(removed)
    }
}

/// Spooled frames are done with once the consumers of their kind took
/// them: flows are stored and detected, IDS alerts detected.
const SPENT: &[SpoolRule<'static>] = &[
    SpoolRule {
        kind: Some("flows"),
        processed: true,
        detected: true,
    },
    SpoolRule {
        kind: Some("ids_alerts"),
        processed: false,
        detected: true,
    },
];

/// Frames removed per spool-cleaner pass.
const SPOOL_PASS: u32 = 10_000;

/// What one pass did, for the logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub flow_segments: u64,
    pub rows: u64,
    pub spool_frames: u64,
    pub tenants_deleted: u64,
}

/// One lifecycle pass at `now` (unix seconds).
pub async fn run_once(p: &Portal, now: i64) -> Result<PassReport> {
    let mut report = PassReport::default();
    for t in p.store.tenants_due_for_deletion(now).await? {
        p.delete_tenant(&t).await?;
        report.tenants_deleted += 1;
    }
    for t in p.store.list_tenants().await? {
        if matches!(t.lifecycle, Lifecycle::Deleted { .. }) {
            continue;
        }
        let plan = p.plan(t.id).await?;
        let cutoff = now - i64::from(plan.stored_days) * 86_400;
        let flows = p
            .flows
            .store
            .enforce_retention(t.id, now.saturating_mul(1000), plan.stored_days)
            .await
            .map_err(|e| ServiceError::Invalid(format!("flow retention: {e}")))?;
        report.flow_segments += flows.segments as u64;
        p.metrics.removed("flow_segments", flows.segments as u64);
        // Frames of batches past the stored window go whatever their state.
        let any = [SpoolRule {
            kind: None,
            processed: false,
            detected: false,
        }];
        report.spool_frames += clean_spool(p, Some(t.id), &any, cutoff).await?;
        let r = p.store.delete_tenant_data_before(t.id, cutoff).await?;
        for (kind, n) in [
            ("alarms", r.alarms),
            ("alarm_history", r.alarm_history),
            ("alarm_deliveries", r.alarm_deliveries),
            ("device_events", r.device_events),
            ("instructions", r.instructions),
            ("batches", r.batches),
            ("reports", r.reports),
        ] {
            p.metrics.removed(kind, n);
            report.rows += n;
        }
    }
    let keep = p.config.spool_keep_secs as i64;
    report.spool_frames += clean_spool(p, None, SPENT, now - keep).await?;
    p.metrics.lifecycle_last_run.set(now);
    Ok(report)
}

/// Deletes spooled frames chosen by `rules` received before `before`,
/// then records them deleted (a crash between leaves a record whose frame
/// is gone, which the next pass records).
async fn clean_spool(
    p: &Portal,
    tenant: Option<TenantId>,
    rules: &[SpoolRule<'_>],
    before: i64,
) -> Result<u64> {
    let spent = p
        .store
        .spent_spool(tenant, rules, before, SPOOL_PASS)
        .await?;
    let mut by_tenant: BTreeMap<TenantId, Vec<_>> = BTreeMap::new();
    for (t, device, batch, key) in spent {
        p.blobs.delete(&key).await?;
        by_tenant.entry(t).or_default().push((device, batch));
    }
    let mut n = 0;
    for (t, batches) in by_tenant {
        p.store.mark_spool_deleted(t, &batches, now()).await?;
        n += batches.len() as u64;
    }
    p.metrics.removed("spool_frames", n);
    Ok(n)
}

/// The lifecycle loop, started by [`crate::run`].
pub async fn jobs(p: Arc<Portal>) {
    let every = Duration::from_secs(p.config.lifecycle_interval_secs);
    loop {
        match run_once(&p, now()).await {
            Ok(r) if r != PassReport::default() => tracing::info!(
                flow_segments = r.flow_segments,
                rows = r.rows,
                spool_frames = r.spool_frames,
                tenants_deleted = r.tenants_deleted,
                "lifecycle pass removed data"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lifecycle pass failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}
