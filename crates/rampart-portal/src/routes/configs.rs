//! Config management on the tenant's domain: the document schema, the
//! versioned documents of each layer with diff and rollback, groups,
//! per-device drift and history, and staged rollouts.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use rampart_proto::api::ErrorBody;
use rampart_store::{ConfigDocRow, ConfigEvent, DeviceConfigRow, DeviceId, RolloutRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::devconf::{self, Change, SaveOutcome, Staged};
use crate::error::ApiError;
use crate::extract::{AppState, Json, Path, Query, TenantAdmin, TenantReader};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schema))
        .routes(routes!(get_doc, put_doc))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(diff_versions))
        .routes(routes!(rollback))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(delete_group))
        .routes(routes!(set_group))
        .routes(routes!(list_drift))
        .routes(routes!(device_detail))
        .routes(routes!(list_rollouts))
        .routes(routes!(control_rollout))
}

/// One version of a document (version 0: none saved yet).
#[derive(Serialize, ToSchema)]
pub struct DocView {
    pub layer: String,
    /// Empty for the tenant document.
    pub scope: String,
    pub version: u64,
    #[schema(value_type = Object)]
    pub config: Value,
    pub author: Option<String>,
    pub comment: Option<String>,
    pub created_at: Option<String>,
}

fn doc_view(d: ConfigDocRow) -> DocView {
    DocView {
        layer: d.layer,
        scope: d.scope,
        version: d.version,
        config: d.body,
        author: Some(d.author),
        comment: Some(d.comment),
        created_at: Some(rfc3339(d.created_at)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveBody {
    /// The whole document of this layer (see `GET /api/v1/config/schema`).
    #[schema(value_type = Object)]
    pub config: Value,
    /// The version this edit started from (0 for a first save): a save on a
    /// stale version is refused with 409.
    pub base_version: u64,
    #[serde(default)]
    pub comment: String,
    /// Group documents only: roll out to a canary share first.
    #[serde(default)]
    pub rollout: Option<Staged>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub to_version: u64,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DiffQuery {
    pub from: u64,
    pub to: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DiffView {
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    pub devices: usize,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroupBody {
    /// None: in no group.
    pub group: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// Devices sent a new configuration.
    pub queued: usize,
}

/// Desired against applied, per device.
#[derive(Serialize, ToSchema)]
pub struct DriftView {
    pub device_id: Uuid,
    pub hostname: String,
    pub group: Option<String>,
    pub desired_revision: Option<u64>,
    pub desired_hash: Option<String>,
    pub applied_revision: Option<u64>,
    pub applied_hash: Option<String>,
    /// `pending`, `applied`, `failed`, or `none` when nothing was sent yet.
    pub status: String,
    /// The device runs what it should.
    pub in_sync: bool,
    pub error: Option<String>,
    pub desired_at: Option<String>,
    pub applied_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    pub revision: u64,
    pub event: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceConfigView {
    #[serde(flatten)]
    pub drift: DriftView,
    /// The effective configuration last sent.
    #[schema(value_type = Option<Object>)]
    pub desired: Option<Value>,
    /// Newest first.
    pub history: Vec<EventView>,
}

#[derive(Serialize, ToSchema)]
pub struct RolloutView {
    pub id: Uuid,
    pub group: String,
    pub from_version: u64,
    pub to_version: u64,
    pub canary_percent: u32,
    pub bake_secs: u32,
    pub canaries: Vec<Uuid>,
    /// `canary`, `paused`, `done`, `failed` or `aborted`.
    pub state: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

fn rollout_view(r: RolloutRow) -> RolloutView {
    RolloutView {
        id: r.id,
        group: r.group,
        from_version: r.from_version,
        to_version: r.to_version,
        canary_percent: r.canary_percent,
        bake_secs: r.bake_secs,
        canaries: r.canaries.into_iter().map(|d| d.0).collect(),
        state: r.state,
        reason: r.reason,
        created_by: r.created_by,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

fn drift_view(
    id: DeviceId,
    hostname: String,
    group: Option<String>,
    c: Option<&DeviceConfigRow>,
) -> DriftView {
    DriftView {
        device_id: id.0,
        hostname,
        group,
        desired_revision: c.map(|c| c.desired_revision),
        desired_hash: c.map(|c| c.desired_hash.clone()),
        applied_revision: c.and_then(|c| c.applied_revision),
        applied_hash: c.and_then(|c| c.applied_hash.clone()),
        status: c.map(|c| c.status.clone()).unwrap_or_else(|| "none".into()),
        in_sync: c.is_some_and(|c| c.applied_hash.as_deref() == Some(c.desired_hash.as_str())),
        error: c.and_then(|c| c.error.clone()),
        desired_at: c.map(|c| rfc3339(c.desired_at)),
        applied_at: c.and_then(|c| c.applied_at).map(rfc3339),
    }
}

fn event_view(e: ConfigEvent) -> EventView {
    EventView {
        at: rfc3339(e.at),
        revision: e.revision,
        event: e.event,
        detail: e.detail,
    }
}

fn device_id(s: &str) -> Result<DeviceId, ApiError> {
    Uuid::parse_str(s)
        .map(DeviceId)
        .map_err(|_| ApiError::bad_request("invalid_path", "device id must be a UUID"))
}

/// The JSON Schema (draft 2020-12) of a configuration document.
#[utoipa::path(get, path = "/api/v1/config/schema", tag = "config", security(("tenant" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
async fn schema(_a: TenantReader) -> axum::Json<Value> {
    axum::Json(rampart_proto::config::schema())
}

/// The newest version of a document. `layer` is tenant (scope `-`), group
/// (scope: its name) or device (scope: its id).
#[utoipa::path(get, path = "/api/v1/config/docs/{layer}/{scope}", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path)),
    responses((status = 200, body = DocView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get_doc(
    State(p): State<AppState>,
    a: TenantReader,
    Path((layer, scope)): Path<(String, String)>,
) -> Result<axum::Json<DocView>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let row = p
        .store
        .config_doc(a.tenant.id, doc.layer.as_str(), &doc.scope, None)
        .await?;
    Ok(axum::Json(match row {
        Some(d) => doc_view(d),
        None => DocView {
            layer: doc.layer.as_str().into(),
            scope: doc.scope,
            version: 0,
            config: serde_json::json!({}),
            author: None,
            comment: None,
            created_at: None,
        },
    }))
}

/// Save a new version and roll it out. Refused with the JSON path when
/// invalid (400 `invalid_config`), with 409 when `base_version` is stale.
#[utoipa::path(put, path = "/api/v1/config/docs/{layer}/{scope}", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path)),
    request_body = SaveBody,
    responses((status = 200, body = SaveOutcome), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_doc(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((layer, scope)): Path<(String, String)>,
    Json(b): Json<SaveBody>,
) -> Result<axum::Json<SaveOutcome>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let out = devconf::save(
        &p,
        &a.actor(),
        a.tenant.id,
        &doc,
        b.config,
        b.base_version,
        &b.comment,
        b.rollout,
    )
    .await?;
    Ok(axum::Json(out))
}

/// Versions of a document, newest first, without their bodies.
#[utoipa::path(get, path = "/api/v1/config/docs/{layer}/{scope}/versions", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path)),
    responses((status = 200, body = Vec<DocView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_versions(
    State(p): State<AppState>,
    a: TenantReader,
    Path((layer, scope)): Path<(String, String)>,
) -> Result<axum::Json<Vec<DocView>>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let rows = p
        .store
        .config_doc_versions(
            a.tenant.id,
            doc.layer.as_str(),
            &doc.scope,
            devconf::MAX_VERSIONS_LISTED,
        )
        .await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|d| DocView {
                config: Value::Null,
                ..doc_view(d)
            })
            .collect(),
    ))
}

/// One version of a document.
#[utoipa::path(get, path = "/api/v1/config/docs/{layer}/{scope}/versions/{version}", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path), ("version" = u64, Path)),
    responses((status = 200, body = DocView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(p): State<AppState>,
    a: TenantReader,
    Path((layer, scope, version)): Path<(String, String, u64)>,
) -> Result<axum::Json<DocView>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let row = p
        .store
        .config_doc(a.tenant.id, doc.layer.as_str(), &doc.scope, Some(version))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {version}")))?;
    Ok(axum::Json(doc_view(row)))
}

/// What changed between two versions, by JSON path.
#[utoipa::path(get, path = "/api/v1/config/docs/{layer}/{scope}/diff", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path), DiffQuery),
    responses((status = 200, body = DiffView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn diff_versions(
    State(p): State<AppState>,
    a: TenantReader,
    Path((layer, scope)): Path<(String, String)>,
    Query(q): Query<DiffQuery>,
) -> Result<axum::Json<DiffView>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let mut bodies = Vec::with_capacity(2);
    for v in [q.from, q.to] {
        // Version 0 is the empty document before the first save.
        let body = if v == 0 {
            serde_json::json!({})
        } else {
            p.store
                .config_doc(a.tenant.id, doc.layer.as_str(), &doc.scope, Some(v))
                .await?
                .ok_or_else(|| ApiError::not_found(format!("version {v}")))?
                .body
        };
        bodies.push(body);
    }
    Ok(axum::Json(DiffView {
        from: q.from,
        to: q.to,
        changes: devconf::diff(&bodies[0], &bodies[1]),
    }))
}

/// Roll back: save an earlier version's content as the newest version and
/// roll it out.
#[utoipa::path(post, path = "/api/v1/config/docs/{layer}/{scope}/rollback", tag = "config", security(("tenant" = [])),
    params(("layer" = String, Path), ("scope" = String, Path)),
    request_body = RollbackBody,
    responses((status = 200, body = SaveOutcome), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((layer, scope)): Path<(String, String)>,
    Json(b): Json<RollbackBody>,
) -> Result<axum::Json<SaveOutcome>, ApiError> {
    let doc = devconf::doc_ref(&p, a.tenant.id, &layer, &scope).await?;
    let out = devconf::rollback(
        &p,
        &a.actor(),
        a.tenant.id,
        &doc,
        b.to_version,
        b.comment.as_deref(),
    )
    .await?;
    Ok(axum::Json(out))
}

/// Groups and how many devices each has.
#[utoipa::path(get, path = "/api/v1/config/groups", tag = "config", security(("tenant" = [])),
    responses((status = 200, body = Vec<GroupView>), (status = 401, body = ErrorBody)))]
async fn list_groups(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<GroupView>>, ApiError> {
    let members = p.store.device_groups(a.tenant.id).await?;
    let groups = p.store.config_groups(a.tenant.id).await?;
    Ok(axum::Json(
        groups
            .into_iter()
            .map(|name| GroupView {
                devices: members.iter().filter(|(_, g)| *g == name).count(),
                name,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/config/groups", tag = "config", security(("tenant" = [])),
    request_body = GroupBody,
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_group(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(b): Json<GroupBody>,
) -> Result<(StatusCode, axum::Json<GroupView>), ApiError> {
    devconf::create_group(&p, &a.actor(), a.tenant.id, &b.name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(GroupView {
            name: b.name,
            devices: 0,
        }),
    ))
}

/// Delete a group without devices, with its documents.
#[utoipa::path(delete, path = "/api/v1/config/groups/{group}", tag = "config", security(("tenant" = [])),
    params(("group" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_group(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    devconf::delete_group(&p, &a.actor(), a.tenant.id, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put a device in a group (or none); it is sent its new configuration.
#[utoipa::path(put, path = "/api/v1/config/devices/{id}/group", tag = "config", security(("tenant" = [])),
    params(("id" = Uuid, Path)),
    request_body = DeviceGroupBody,
    responses((status = 200, body = Queued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_group(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<String>,
    Json(b): Json<DeviceGroupBody>,
) -> Result<axum::Json<Queued>, ApiError> {
    let id = device_id(&id)?;
    let queued = devconf::set_group(&p, &a.actor(), a.tenant.id, id, b.group.as_deref()).await?;
    Ok(axum::Json(Queued { queued }))
}

/// Drift: for every device, the configuration it should run and the one
/// it reported running.
#[utoipa::path(get, path = "/api/v1/config/devices", tag = "config", security(("tenant" = [])),
    responses((status = 200, body = Vec<DriftView>), (status = 401, body = ErrorBody)))]
async fn list_drift(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<DriftView>>, ApiError> {
    let t = a.tenant.id;
    let configs: HashMap<DeviceId, DeviceConfigRow> = p
        .store
        .device_configs(t)
        .await?
        .into_iter()
        .map(|c| (c.device_id, c))
        .collect();
    let groups: HashMap<DeviceId, String> = p.store.device_groups(t).await?.into_iter().collect();
    let devices = p.store.list_devices(t).await?;
    Ok(axum::Json(
        devices
            .into_iter()
            .map(|d| {
                drift_view(
                    d.id,
                    d.hostname,
                    groups.get(&d.id).cloned(),
                    configs.get(&d.id),
                )
            })
            .collect(),
    ))
}

/// One device's drift, the effective configuration sent and its history.
#[utoipa::path(get, path = "/api/v1/config/devices/{id}", tag = "config", security(("tenant" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceConfigView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn device_detail(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<String>,
) -> Result<axum::Json<DeviceConfigView>, ApiError> {
    let t = a.tenant.id;
    let id = device_id(&id)?;
    let dev = p
        .store
        .get_device(t, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id}")))?;
    let c = p.store.device_config(t, id).await?;
    let group = p
        .store
        .device_groups(t)
        .await?
        .into_iter()
        .find(|(d, _)| *d == id)
        .map(|(_, g)| g);
    let history = p.store.config_history(t, id, 200).await?;
    Ok(axum::Json(DeviceConfigView {
        drift: drift_view(id, dev.hostname, group, c.as_ref()),
        desired: c.map(|c| c.desired_body),
        history: history.into_iter().map(event_view).collect(),
    }))
}

/// Staged rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/config/rollouts", tag = "config", security(("tenant" = [])),
    responses((status = 200, body = Vec<RolloutView>), (status = 401, body = ErrorBody)))]
async fn list_rollouts(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<RolloutView>>, ApiError> {
    let rows = p.store.rollouts(a.tenant.id, 200).await?;
    Ok(axum::Json(rows.into_iter().map(rollout_view).collect()))
}

/// Pause, resume or abort a rollout (abort reverts the group document and
/// sends the canaries back).
#[utoipa::path(post, path = "/api/v1/config/rollouts/{id}/{action}", tag = "config", security(("tenant" = [])),
    params(("id" = Uuid, Path), ("action" = String, Path, description = "pause, resume or abort")),
    responses((status = 200, body = RolloutView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn control_rollout(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((id, action)): Path<(String, String)>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request("invalid_path", "rollout id must be a UUID"))?;
    let r = devconf::control_rollout(&p, &a.actor(), a.tenant.id, id, &action).await?;
    Ok(axum::Json(rollout_view(r)))
}
