//! Device configuration management: versioned documents per layer, the
//! effective configuration of each device, rollout as signed `apply_config`
//! instructions, drift, rollback and staged (canary) rollouts by group.
//!
//! The documents are the desired state: a device's effective configuration
//! is always the merge of the newest tenant, group and device documents
//! (RFC 7396, tenant < group < device), with its target lists and VPN
//! interface. `refresh` computes it for each device and queues it only
//! where its content hash changed, one revision per distinct content, so
//! re-running a refresh is free and two devices with the same content name
//! the same revision.
//!
//! The one exception is a group under a staged rollout: its canaries run
//! the new group document while the others keep the one before
//! (`from_version`), until the canaries are healthy (then everyone moves
//! on) or one fails (then the group document is reverted by a new version
//! with the old content, so "newest document = desired state" holds again
//! and the canaries are sent back).
//!
//! Instructions of kind `apply_config` supersede the device's older ones
//! that were not delivered, so a device that was offline gets the newest
//! only; one whose instruction expired before it came back is sent its
//! desired configuration again by the reconciler.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rampart_proto::api::DeviceStatus;
use rampart_proto::config::{self, ConfigDoc, ConfigError, EffectiveConfig, Layer};
use rampart_store::{ConfigDocRow, ConfigEvent, DeviceConfigRow, DeviceId, RolloutRow, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::{self, Actor};
use crate::service::{now, Portal, Result, ServiceError};

/// How long an `apply_config` instruction waits for an offline device
/// before the reconciler issues it again.
pub const CONFIG_TTL_SECS: i64 = 7 * 86_400;
/// Most versions listed per document.
pub const MAX_VERSIONS_LISTED: u32 = 500;
/// Longest comment on a document version.
pub const MAX_COMMENT_BYTES: usize = 1024;

/// A document's address: its layer and scope (empty for the tenant).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DocRef {
    pub layer: Layer,
    pub scope: String,
}

impl DocRef {
    pub fn tenant() -> Self {
        DocRef {
            layer: Layer::Tenant,
            scope: String::new(),
        }
    }

    /// From the URL form `{layer}/{scope}`, with `-` as the tenant's scope.
    pub fn parse(layer: &str, scope: &str) -> Result<Self> {
        let layer = match layer {
            "tenant" => Layer::Tenant,
            "group" => Layer::Group,
            "device" => Layer::Device,
            other => {
                return Err(ServiceError::Invalid(format!(
                    "unknown layer {other:?}: use tenant, group or device"
                )))
            }
        };
        let scope = match layer {
            Layer::Tenant if scope == "-" || scope.is_empty() => String::new(),
            Layer::Tenant => {
                return Err(ServiceError::Invalid(
                    "the tenant document's scope is -: use /config/docs/tenant/-".into(),
                ))
            }
            Layer::Group => {
                check_group_name(scope)?;
                scope.to_string()
            }
            Layer::Device => Uuid::parse_str(scope)
                .map_err(|_| ServiceError::Invalid("a device scope is a device id".into()))?
                .to_string(),
        };
        Ok(DocRef { layer, scope })
    }

    fn label(&self) -> String {
        match self.layer {
            Layer::Tenant => "tenant".into(),
            _ => format!("{}:{}", self.layer.as_str(), self.scope),
        }
    }
}

pub fn check_group_name(name: &str) -> Result<()> {
    if config::is_name(name) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "a group name is 1 to 64 characters of a-z, 0-9, - and _".into(),
        ))
    }
}

/// Asks for a staged rollout of a group document.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    /// Share of the group's devices that get the new document first (1-99).
    pub canary_percent: u32,
    /// How long every canary must have run it before the rest get it.
    #[serde(default = "default_bake")]
    pub bake_secs: u32,
}

fn default_bake() -> u32 {
    60
}

/// What a save did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SaveOutcome {
    pub version: u64,
    /// Devices sent a new configuration.
    pub queued: usize,
    /// Set when the save started a staged rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Uuid>,
}

/// Validates a document for `doc.layer`, with the layer's own rules.
pub fn validate(body: &Value, layer: Layer) -> Result<ConfigDoc> {
    let parsed = ConfigDoc::parse(body, layer).map_err(ServiceError::InvalidConfig)?;
    if let Some(d) = &parsed.detectors {
        let s: rampart_alarms::settings::DetectorSettings = serde_json::from_value(d.clone())
            .map_err(|e| {
                ServiceError::InvalidConfig(ConfigError {
                    path: "$.detectors".into(),
                    reason: e.to_string(),
                })
            })?;
        s.validate().map_err(|reason| {
            ServiceError::InvalidConfig(ConfigError {
                path: "$.detectors".into(),
                reason,
            })
        })?;
    }
    Ok(parsed)
}

/// Saves a new version of a document if `base_version` is still the
/// newest, then rolls it out (staged when asked, for a group).
#[allow(clippy::too_many_arguments)]
pub async fn save(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    doc: &DocRef,
    body: Value,
    base_version: u64,
    comment: &str,
    staged: Option<Staged>,
) -> Result<SaveOutcome> {
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(ServiceError::Invalid(format!(
            "comment is longer than {MAX_COMMENT_BYTES} bytes"
        )));
    }
    let parsed = validate(&body, doc.layer)?;
    check_scope(p, tenant, doc).await?;
    // Every list a rule names must exist now (it is resolved again at each
    // rollout; a list deleted since is refused while a document names it).
    resolve_lists(p, tenant, &parsed.list_names()).await?;
    if staged.is_some() && doc.layer != Layer::Group {
        return Err(ServiceError::Invalid(
            "staged rollouts are by group: save a group document with rollout".into(),
        ));
    }
    if let Some(s) = staged {
        if !(1..=99).contains(&s.canary_percent) || s.bake_secs > 86_400 {
            return Err(ServiceError::Invalid(
                "rollout needs canary_percent from 1 to 99 and bake_secs up to 86400".into(),
            ));
        }
    }
    if doc.layer == Layer::Group {
        if let Some(r) = active_rollout(p, tenant, &doc.scope).await? {
            return Err(ServiceError::Conflict(format!(
                "rollout {} of group {} is {}: let it finish or abort it first",
                r.id, doc.scope, r.state
            )));
        }
    }
    let version = store_version(p, actor, tenant, doc, body, base_version, comment).await?;
    if let Some(d) = parsed.detectors {
        let s: rampart_alarms::settings::DetectorSettings =
            serde_json::from_value(d).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        crate::alarms::set_settings(p, tenant, &s).await?;
    }
    if let Some(s) = staged {
        let (rollout, queued) = start_rollout(p, actor, tenant, &doc.scope, version, s).await?;
        return Ok(SaveOutcome {
            version,
            queued,
            rollout: Some(rollout),
        });
    }
    let queued = refresh(p, actor, tenant, affected(p, tenant, doc).await?.as_deref()).await?;
    Ok(SaveOutcome {
        version,
        queued,
        rollout: None,
    })
}

/// Writes the version after `base_version`; a stale base is a conflict.
async fn store_version(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    doc: &DocRef,
    body: Value,
    base_version: u64,
    comment: &str,
) -> Result<u64> {
    let row = ConfigDocRow {
        layer: doc.layer.as_str().into(),
        scope: doc.scope.clone(),
        version: base_version + 1,
        body,
        author: actor.to_string(),
        comment: comment.to_string(),
        created_at: now(),
    };
    if !p.store.save_config_doc(tenant, &row, base_version).await? {
        let newest = p
            .store
            .config_doc(tenant, &row.layer, &row.scope, None)
            .await?
            .map(|d| d.version)
            .unwrap_or(0);
        return Err(ServiceError::Conflict(format!(
            "the {} document is at version {newest}, not {base_version}: reload it, reapply your change and save with base_version {newest}",
            doc.label()
        )));
    }
    audit::record(
        p,
        Some(tenant),
        actor,
        "config.save",
        &doc.label(),
        json!({ "version": row.version, "bytes": row.body.to_string().len() }),
    )
    .await?;
    Ok(row.version)
}

/// Parses a document's address and checks that its group or device is the
/// tenant's (another tenant's device id is not found, like any unknown id).
pub async fn doc_ref(p: &Portal, tenant: TenantId, layer: &str, scope: &str) -> Result<DocRef> {
    let doc = DocRef::parse(layer, scope)?;
    check_scope(p, tenant, &doc).await?;
    Ok(doc)
}

async fn check_scope(p: &Portal, tenant: TenantId, doc: &DocRef) -> Result<()> {
    match doc.layer {
        Layer::Tenant => Ok(()),
        Layer::Group => {
            if p.store.config_groups(tenant).await?.contains(&doc.scope) {
                Ok(())
            } else {
                Err(ServiceError::NotFound(format!("group {}", doc.scope)))
            }
        }
        Layer::Device => {
            let id = DeviceId(
                Uuid::parse_str(&doc.scope).map_err(|e| ServiceError::Invalid(e.to_string()))?,
            );
            p.store
                .get_device(tenant, id)
                .await?
                .map(|_| ())
                .ok_or_else(|| ServiceError::NotFound(format!("device {id}")))
        }
    }
}

/// The devices a document reaches (`None`: all of the tenant's).
async fn affected(p: &Portal, tenant: TenantId, doc: &DocRef) -> Result<Option<Vec<DeviceId>>> {
    Ok(match doc.layer {
        Layer::Tenant => None,
        Layer::Group => Some(group_members(p, tenant, &doc.scope).await?),
        Layer::Device => Some(vec![DeviceId(
            Uuid::parse_str(&doc.scope).map_err(|e| ServiceError::Invalid(e.to_string()))?,
        )]),
    })
}

/// The devices in a group.
async fn group_members(p: &Portal, tenant: TenantId, group: &str) -> Result<Vec<DeviceId>> {
    Ok(p.store
        .device_groups(tenant)
        .await?
        .into_iter()
        .filter(|(_, g)| g == group)
        .map(|(d, _)| d)
        .collect())
}

/// Saves the content of an earlier version as the newest one and rolls it
/// out: one command, and the history keeps what was undone.
pub async fn rollback(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    doc: &DocRef,
    to_version: u64,
    comment: Option<&str>,
) -> Result<SaveOutcome> {
    let old = p
        .store
        .config_doc(tenant, doc.layer.as_str(), &doc.scope, Some(to_version))
        .await?
        .ok_or_else(|| {
            ServiceError::NotFound(format!(
                "version {to_version} of the {} document",
                doc.label()
            ))
        })?;
    let newest = p
        .store
        .config_doc(tenant, doc.layer.as_str(), &doc.scope, None)
        .await?
        .map(|d| d.version)
        .unwrap_or(0);
    let comment = comment
        .map(str::to_string)
        .unwrap_or_else(|| format!("rollback to version {to_version}"));
    save(p, actor, tenant, doc, old.body, newest, &comment, None).await
}

/// One change between two documents.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// JSON path from `$`.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub to: Option<Value>,
}

/// The changes from `a` to `b`: objects key by key, arrays index by index.
pub fn diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_at("$", a, b, &mut out);
    out
}

fn diff_at(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff_member(format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                diff_member(format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (u, v) if u != v => out.push(Change {
            path: path.to_string(),
            op: "changed",
            from: Some(u.clone()),
            to: Some(v.clone()),
        }),
        _ => {}
    }
}

/// A member present on either side: compared, removed or added.
fn diff_member(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(u), Some(v)) => diff_at(&path, u, v, out),
        (u, v) => out.push(Change {
            path,
            op: if u.is_some() { "removed" } else { "added" },
            from: u.cloned(),
            to: v.cloned(),
        }),
    }
}

/// The newest documents of a tenant, by address, and the group of each
/// device; what every effective configuration is computed from.
struct Docs {
    tenant: Option<Value>,
    groups: HashMap<String, Value>,
    devices: HashMap<String, Value>,
    group_of: HashMap<DeviceId, String>,
    /// Per group under a staged rollout: the document the non-canaries keep
    /// and the canaries.
    pinned: HashMap<String, (Value, BTreeSet<DeviceId>)>,
}

async fn load_docs(p: &Portal, tenant: TenantId) -> Result<Docs> {
    let mut docs = Docs {
        tenant: None,
        groups: HashMap::new(),
        devices: HashMap::new(),
        group_of: p.store.device_groups(tenant).await?.into_iter().collect(),
        pinned: HashMap::new(),
    };
    for d in p.store.latest_config_docs(tenant).await? {
        match d.layer.as_str() {
            "tenant" => docs.tenant = Some(d.body),
            "group" => {
                docs.groups.insert(d.scope, d.body);
            }
            "device" => {
                docs.devices.insert(d.scope, d.body);
            }
            _ => {}
        }
    }
    for r in p.store.rollouts(tenant, 100).await? {
        if r.is_active() {
            let from = p
                .store
                .config_doc(tenant, "group", &r.group, Some(r.from_version))
                .await?
                .map(|d| d.body)
                .unwrap_or_else(|| json!({}));
            docs.pinned.insert(
                r.group.clone(),
                (from, r.canaries.iter().copied().collect()),
            );
        }
    }
    Ok(docs)
}

impl Docs {
    /// The merged document of one device (detectors removed: they run in
    /// the portal).
    fn merged(&self, device: DeviceId) -> Value {
        let mut v = json!({});
        if let Some(t) = &self.tenant {
            config::merge_patch(&mut v, t);
        }
        if let Some(g) = self.group_of.get(&device) {
            let body = match self.pinned.get(g) {
                Some((from, canaries)) if !canaries.contains(&device) => Some(from),
                _ => self.groups.get(g),
            };
            if let Some(b) = body {
                config::merge_patch(&mut v, b);
            }
        }
        if let Some(d) = self.devices.get(&device.0.to_string()) {
            config::merge_patch(&mut v, d);
        }
        if let Value::Object(m) = &mut v {
            m.remove("detectors");
        }
        v
    }
}

/// A device's effective configuration (revision 0: not issued yet).
async fn effective(
    p: &Portal,
    tenant: TenantId,
    docs: &Docs,
    device: DeviceId,
) -> Result<EffectiveConfig> {
    let config = docs.merged(device);
    let parsed = ConfigDoc::parse(&config, Layer::Device).map_err(ServiceError::InvalidConfig)?;
    let lists = resolve_lists(p, tenant, &parsed.list_names()).await?;
    let vpn = vpn_interface(p, tenant, device).await?;
    let hash = EffectiveConfig::content_hash(&config, &lists, vpn.as_ref());
    Ok(EffectiveConfig {
        revision: 0,
        hash,
        config,
        lists,
        vpn,
    })
}

/// The target lists the rules name.
async fn resolve_lists(
    p: &Portal,
    tenant: TenantId,
    names: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Vec<String>>> {
    crate::targets::resolve(p, tenant, names)
        .await
        .map_err(|e| match e {
            ServiceError::Invalid(reason) => ServiceError::InvalidConfig(ConfigError {
                path: "$.rules".into(),
                reason,
            }),
            e => e,
        })
}

/// The device's WireGuard interface, if it has one.
async fn vpn_interface(
    p: &Portal,
    tenant: TenantId,
    device: DeviceId,
) -> Result<Option<rampart_proto::wg::WgInterface>> {
    crate::vpn::device_interface(p, tenant, device).await
}

/// The newest documents whose rules name target list `name` (a list in
/// use is not deleted).
pub async fn documents_naming_list(
    p: &Portal,
    tenant: TenantId,
    name: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in p.store.latest_config_docs(tenant).await? {
        let names = d.body["rules"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["list"] == name));
        if names {
            let doc = match d.layer.as_str() {
                "tenant" => "the tenant configuration document".to_string(),
                layer => format!("the {layer} {} configuration document", d.scope),
            };
            out.push(doc);
        }
    }
    Ok(out)
}

/// Computes the effective configuration of `only` (or every device of the
/// tenant that is not revoked) and queues it where it changed. Returns
/// how many devices were sent one. A device whose merge fails (a list
/// deleted meanwhile) keeps its configuration and is reported in its
/// history.
pub async fn refresh(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    only: Option<&[DeviceId]>,
) -> Result<usize> {
    let docs = load_docs(p, tenant).await?;
    let devices: Vec<DeviceId> = p
        .store
        .list_devices(tenant)
        .await?
        .into_iter()
        .filter(|d| d.status != DeviceStatus::Revoked.as_str())
        .map(|d| d.id)
        .filter(|d| only.is_none_or(|o| o.contains(d)))
        .collect();
    let current: HashMap<DeviceId, DeviceConfigRow> = p
        .store
        .device_configs(tenant)
        .await?
        .into_iter()
        .map(|r| (r.device_id, r))
        .collect();
    // Devices by the content they should run, where it changed.
    let mut by_hash: BTreeMap<String, (EffectiveConfig, Vec<DeviceId>)> = BTreeMap::new();
    let mut failures = Vec::new();
    for d in devices {
        match effective(p, tenant, &docs, d).await {
            Ok(eff) => {
                let unchanged = match current.get(&d) {
                    Some(c) => c.desired_hash == eff.hash,
                    // A tenant that does not use config management sends
                    // its devices nothing.
                    None => eff.is_empty(),
                };
                if unchanged {
                    continue;
                }
                by_hash
                    .entry(eff.hash.clone())
                    .or_insert((eff, Vec::new()))
                    .1
                    .push(d);
            }
            Err(e) => failures.push((d, e.to_string())),
        }
    }
    let at = now();
    if !failures.is_empty() {
        for (d, e) in &failures {
            tracing::warn!(tenant = %tenant, device = %d, error = %e, "device configuration not computed");
        }
        let rows: Vec<(DeviceConfigRow, ConfigEvent)> = failures
            .iter()
            .filter_map(|(d, e)| {
                let c = current.get(d)?.clone();
                let ev = ConfigEvent {
                    at,
                    revision: c.desired_revision,
                    event: "not_computed".into(),
                    detail: json!({ "error": e }),
                };
                Some((c, ev))
            })
            .collect();
        p.store.put_device_configs(tenant, &rows).await?;
    }
    if by_hash.is_empty() {
        return Ok(0);
    }
    let first = p
        .store
        .allocate_config_revisions(tenant, by_hash.len() as u64)
        .await?;
    let mut queued = 0;
    for (i, (hash, (eff, devs))) in by_hash.into_iter().enumerate() {
        let revision = first + i as u64;
        let eff = EffectiveConfig { revision, ..eff };
        let payload =
            serde_json::to_value(&eff).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let rows = p
            .queue_instructions(
                actor,
                tenant,
                &devs,
                config::INSTRUCTION_KIND,
                payload.clone(),
                Some(CONFIG_TTL_SECS),
            )
            .await?;
        let newest: Vec<(DeviceId, u64)> = rows.iter().map(|r| (r.device_id, r.seq)).collect();
        let superseded = p
            .store
            .supersede_instructions(tenant, config::INSTRUCTION_KIND, &newest)
            .await?;
        let mut puts = Vec::with_capacity(rows.len());
        for (r, superseded) in rows.into_iter().zip(superseded) {
            let prev = current.get(&r.device_id);
            let row = DeviceConfigRow {
                device_id: r.device_id,
                desired_revision: revision,
                desired_hash: hash.clone(),
                desired_body: payload.clone(),
                desired_seq: Some(r.seq),
                desired_at: at,
                applied_revision: prev.and_then(|c| c.applied_revision),
                applied_hash: prev.and_then(|c| c.applied_hash.clone()),
                applied_at: prev.and_then(|c| c.applied_at),
                status: "pending".into(),
                error: None,
            };
            let ev = ConfigEvent {
                at,
                revision,
                event: "queued".into(),
                detail: json!({ "seq": r.seq, "superseded": superseded, "by": actor.to_string() }),
            };
            puts.push((row, ev));
        }
        queued += puts.len();
        p.store.put_device_configs(tenant, &puts).await?;
    }
    Ok(queued)
}

/// Records an `apply_config` result: what the device runs now, and whether
/// the desired configuration is it. Then lets staged rollouts advance.
pub async fn on_ack(
    p: &Portal,
    tenant: TenantId,
    device: DeviceId,
    seq: u64,
    ok: bool,
    result: &Value,
) -> Result<()> {
    let Some(mut row) = p.store.device_config(tenant, device).await? else {
        return Ok(());
    };
    let report: Option<config::ApplyReport> = serde_json::from_value(result.clone()).ok();
    let at = now();
    let current = row.desired_seq == Some(seq);
    let (event, error) = match (&report, ok) {
        (Some(r), true) => {
            row.applied_revision = Some(r.running_revision);
            row.applied_hash = Some(r.running_hash.clone());
            row.applied_at = Some(at);
            ("applied", None)
        }
        (Some(r), false) => {
            row.applied_revision = Some(r.running_revision).filter(|v| *v > 0);
            row.applied_hash = Some(r.running_hash.clone()).filter(|h| !h.is_empty());
            let e = r
                .error
                .clone()
                .unwrap_or_else(|| "failed without a reason".into());
            (
                if r.rolled_back {
                    "rolled_back"
                } else {
                    "failed"
                },
                Some(e),
            )
        }
        (None, _) => (
            "failed",
            Some(
                result
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the agent did not report a configuration result: upgrade the agent")
                    .to_string(),
            ),
        ),
    };
    if current {
        row.status = if error.is_some() {
            "failed".into()
        } else if row.applied_hash.as_deref() == Some(row.desired_hash.as_str()) {
            "applied".into()
        } else {
            "pending".into()
        };
        row.error = error.clone();
    }
    let revision = report
        .as_ref()
        .map(|r| r.running_revision)
        .unwrap_or(row.desired_revision);
    let ev = ConfigEvent {
        at,
        revision: if event == "applied" {
            revision
        } else {
            row.desired_revision
        },
        event: event.into(),
        detail: json!({ "seq": seq, "error": error, "health": report.map(|r| r.health).unwrap_or_default(), "running_revision": revision }),
    };
    p.store.put_device_configs(tenant, &[(row, ev)]).await?;
    advance_rollouts(p, tenant).await
}

/// Puts a device in a group (or none) and sends it its new configuration.
pub async fn set_group(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    device: DeviceId,
    group: Option<&str>,
) -> Result<usize> {
    if let Some(g) = group {
        check_group_name(g)?;
    }
    p.store
        .get_device(tenant, device)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("device {device}")))?;
    p.store.set_device_group(tenant, device, group).await?;
    audit::record(
        p,
        Some(tenant),
        actor,
        "config.group",
        &format!("device:{device}"),
        json!({ "group": group }),
    )
    .await?;
    refresh(p, actor, tenant, Some(&[device])).await
}

pub async fn create_group(p: &Portal, actor: &Actor, tenant: TenantId, name: &str) -> Result<()> {
    check_group_name(name)?;
    if !p.store.create_config_group(tenant, name, now()).await? {
        return Err(ServiceError::Conflict(format!(
            "group {name} already exists: choose another name"
        )));
    }
    audit::record(
        p,
        Some(tenant),
        actor,
        "config.group_create",
        &format!("group:{name}"),
        json!({}),
    )
    .await?;
    Ok(())
}

pub async fn delete_group(p: &Portal, actor: &Actor, tenant: TenantId, name: &str) -> Result<()> {
    let members = group_members(p, tenant, name).await?.len();
    if members > 0 {
        return Err(ServiceError::Conflict(format!(
            "group {name} has {members} devices: move them to another group first"
        )));
    }
    if !p.store.delete_config_group(tenant, name).await? {
        return Err(ServiceError::NotFound(format!("group {name}")));
    }
    audit::record(
        p,
        Some(tenant),
        actor,
        "config.group_delete",
        &format!("group:{name}"),
        json!({}),
    )
    .await?;
    Ok(())
}

async fn active_rollout(p: &Portal, tenant: TenantId, group: &str) -> Result<Option<RolloutRow>> {
    Ok(p.store
        .rollouts(tenant, 100)
        .await?
        .into_iter()
        .find(|r| r.group == group && r.is_active()))
}

/// Starts a staged rollout of group document `version`: the canaries (the
/// first share of the group's devices by id, at least one) get it now.
async fn start_rollout(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    group: &str,
    version: u64,
    s: Staged,
) -> Result<(Uuid, usize)> {
    let mut all = group_members(p, tenant, group).await?;
    all.sort_by_key(|d| d.0);
    let n = (all.len() * s.canary_percent as usize).div_ceil(100).max(1);
    let members: Vec<DeviceId> = all.iter().copied().take(n).collect();
    let at = now();
    let r = RolloutRow {
        id: Uuid::new_v4(),
        group: group.to_string(),
        from_version: version - 1,
        to_version: version,
        canary_percent: s.canary_percent,
        bake_secs: s.bake_secs,
        canaries: members.clone(),
        state: "canary".into(),
        reason: None,
        created_by: actor.to_string(),
        created_at: at,
        updated_at: at,
    };
    p.store.put_rollout(tenant, &r).await?;
    audit::record(
        p,
        Some(tenant),
        actor,
        "config.rollout_start",
        &format!("group:{group}"),
        json!({ "rollout": r.id, "version": version, "canaries": members.len() }),
    )
    .await?;
    // Every member is refreshed: the non-canaries compute to what they
    // already run (the pinned document) and are left alone.
    let queued = refresh(p, actor, tenant, Some(&all)).await?;
    Ok((r.id, queued))
}

/// Moves staged rollouts of the tenant on: all canaries healthy for
/// `bake_secs` → done and the rest get it; a canary failed → failed, the
/// group document reverted and the canaries sent back.
pub async fn advance_rollouts(p: &Portal, tenant: TenantId) -> Result<()> {
    let at = now();
    let canary: Vec<RolloutRow> = p
        .store
        .rollouts(tenant, 100)
        .await?
        .into_iter()
        .filter(|r| r.state == "canary")
        .collect();
    if canary.is_empty() {
        return Ok(());
    }
    let configs: HashMap<DeviceId, DeviceConfigRow> = p
        .store
        .device_configs(tenant)
        .await?
        .into_iter()
        .map(|c| (c.device_id, c))
        .collect();
    for mut r in canary {
        let mut failed = None;
        let mut healthy_since = Some(0i64);
        for d in &r.canaries {
            match configs.get(d) {
                Some(c) if c.status == "failed" => {
                    failed = Some(format!(
                        "canary {d} failed: {}",
                        c.error.as_deref().unwrap_or("no reason given")
                    ));
                    break;
                }
                Some(c) if c.status == "applied" => {
                    let since = c.applied_at.unwrap_or(at).max(r.created_at);
                    healthy_since = healthy_since.map(|h| h.max(since));
                }
                _ => healthy_since = None,
            }
        }
        let actor = Actor::Portal;
        if let Some(reason) = failed {
            finish_rollout(p, &actor, tenant, &mut r, "failed", &reason).await?;
        } else if healthy_since.is_some_and(|h| at - h >= i64::from(r.bake_secs)) {
            r.state = "done".into();
            r.updated_at = at;
            p.store.put_rollout(tenant, &r).await?;
            audit::record(
                p,
                Some(tenant),
                &actor,
                "config.rollout_done",
                &format!("group:{}", r.group),
                json!({ "rollout": r.id }),
            )
            .await?;
            let all = affected(
                p,
                tenant,
                &DocRef {
                    layer: Layer::Group,
                    scope: r.group.clone(),
                },
            )
            .await?;
            refresh(p, &actor, tenant, all.as_deref()).await?;
        }
    }
    Ok(())
}

/// Ends a rollout that did not complete: the group document goes back to
/// the content before it (a new version), and the canaries with it.
async fn finish_rollout(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    r: &mut RolloutRow,
    state: &str,
    reason: &str,
) -> Result<()> {
    r.state = state.into();
    r.reason = Some(reason.to_string());
    r.updated_at = now();
    p.store.put_rollout(tenant, r).await?;
    let doc = DocRef {
        layer: Layer::Group,
        scope: r.group.clone(),
    };
    let before = p
        .store
        .config_doc(tenant, "group", &r.group, Some(r.from_version))
        .await?
        .map(|d| d.body)
        .unwrap_or_else(|| json!({}));
    let newest = p
        .store
        .config_doc(tenant, "group", &r.group, None)
        .await?
        .map(|d| d.version)
        .unwrap_or(0);
    store_version(
        p,
        actor,
        tenant,
        &doc,
        before,
        newest,
        &format!("rollout {} {state}: {reason}", r.id),
    )
    .await?;
    audit::record(
        p,
        Some(tenant),
        actor,
        &format!("config.rollout_{state}"),
        &format!("group:{}", r.group),
        json!({ "rollout": r.id }),
    )
    .await?;
    refresh(p, actor, tenant, Some(&r.canaries)).await?;
    Ok(())
}

/// Pauses, resumes or aborts a rollout.
pub async fn control_rollout(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    id: Uuid,
    action: &str,
) -> Result<RolloutRow> {
    let mut r = p
        .store
        .rollouts(tenant, 1000)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ServiceError::NotFound(format!("rollout {id}")))?;
    match (action, r.state.as_str()) {
        ("pause", "canary") => r.state = "paused".into(),
        ("resume", "paused") => r.state = "canary".into(),
        ("abort", "canary" | "paused") => {
            finish_rollout(
                p,
                actor,
                tenant,
                &mut r,
                "aborted",
                &format!("aborted by {actor}"),
            )
            .await?;
            return Ok(r);
        }
        ("pause" | "resume" | "abort", state) => {
            return Err(ServiceError::Conflict(format!(
                "rollout {id} is {state}: cannot {action} it"
            )))
        }
        (other, _) => {
            return Err(ServiceError::Invalid(format!(
                "unknown rollout action {other}: use pause, resume or abort"
            )))
        }
    }
    r.updated_at = now();
    p.store.put_rollout(tenant, &r).await?;
    audit::record(
        p,
        Some(tenant),
        actor,
        &format!("config.rollout_{action}"),
        &format!("group:{}", r.group),
        json!({ "rollout": id }),
    )
    .await?;
    if action == "resume" {
        advance_rollouts(p, tenant).await?;
    }
    Ok(r)
}

/// Sends again the desired configuration of devices whose instruction
/// expired, was refused or was lost, and moves rollouts on. Run by the
/// config job for every live tenant.
pub async fn reconcile(p: &Portal, tenant: TenantId) -> Result<usize> {
    let at = now();
    let mut again = Vec::new();
    for c in p.store.pending_device_configs(tenant).await? {
        let live = match c.desired_seq {
            Some(seq) => p
                .store
                .get_instruction(tenant, c.device_id, seq)
                .await?
                .is_some_and(|i| {
                    matches!(i.status.as_str(), "queued" | "delivered") && i.expires_at > at
                }),
            None => false,
        };
        if !live {
            again.push(c);
        }
    }
    let mut n = 0;
    for c in again {
        let rows = p
            .queue_instructions(
                &Actor::Portal,
                tenant,
                &[c.device_id],
                config::INSTRUCTION_KIND,
                c.desired_body.clone(),
                Some(CONFIG_TTL_SECS),
            )
            .await?;
        let Some(r) = rows.first() else { continue };
        let ev = ConfigEvent {
            at,
            revision: c.desired_revision,
            event: "reissued".into(),
            detail: json!({ "seq": r.seq }),
        };
        let row = DeviceConfigRow {
            desired_seq: Some(r.seq),
            ..c
        };
        p.store.put_device_configs(tenant, &[(row, ev)]).await?;
        n += 1;
    }
    advance_rollouts(p, tenant).await?;
    Ok(n)
}

/// The config job's pass over every live tenant.
pub async fn run_once(p: &Portal) -> Result<usize> {
    let mut n = 0;
    for t in p.store.list_tenants().await? {
        if !matches!(t.lifecycle, rampart_store::Lifecycle::Live) {
            continue;
        }
        match reconcile(p, t.id).await {
            Ok(k) => n += k,
            Err(e) => tracing::warn!(tenant = %t.name, error = %e, "config reconcile failed"),
        }
    }
    Ok(n)
}

/// Runs [`run_once`] every `config_reconcile_secs`.
pub async fn jobs(p: std::sync::Arc<Portal>) {
    let every = std::time::Duration::from_secs(p.config.config_reconcile_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        match run_once(&p).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reissued = n, "configurations sent again"),
            Err(e) => tracing::warn!(error = %e, "config pass failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_change_by_path() {
        let a = json!({"log_level": "info", "rules": [{"action": "block", "ip": "192.0.2.1"}], "upload": {"batch_max_records": 100}});
        let b = json!({"log_level": "debug", "rules": [{"action": "allow", "ip": "192.0.2.1"}, {"action": "block", "port": "23"}]});
        let d = diff(&a, &b);
        let got: Vec<(&str, &str)> = d.iter().map(|c| (c.path.as_str(), c.op)).collect();
        assert_eq!(
            got,
            vec![
                ("$.log_level", "changed"),
                ("$.rules[0].action", "changed"),
                ("$.rules[1]", "added"),
                ("$.upload", "removed"),
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
