//! Remote actions: a tenant admin's requests (`/api/v1/devices/{id}/actions`,
//! `/diagnostics`) and the device's key rotation (`/api/v1/device/key`).
//! The logic is in [`crate::actions`].

use axum::extract::State;
use axum::http::StatusCode;
use rampart_proto::actions::{DeviceKeyView, KeyRotateRequest, ACTIONS};
use rampart_proto::api::ErrorBody;
use rampart_store::{BatchRow, DeviceId, InstructionRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{AppState, DeviceRequest, Json, Path, TenantAdmin, TenantReader};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_action))
        .routes(routes!(get_action))
        .routes(routes!(list_diagnostics))
        .routes(routes!(get_diagnostics))
        .routes(routes!(device_key, rotate_device_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAction {
    /// `restart`, `rotate_key`, `diagnostics` or `connectivity_test`.
    pub action: String,
    /// For `connectivity_test`: `{"targets": [{"target": "host:port",
    /// "timeout_ms": 3000}], "portal": true}` (at most 16 targets, each at
    /// most 10000 ms). The other actions take none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Seconds until the instruction expires (10 to 2592000).
    pub ttl_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ActionView {
    pub seq: u64,
    /// The API name: `restart`, `rotate_key`, `diagnostics`, `connectivity_test`.
    pub action: String,
    /// The instruction kind, e.g. `restart_agent`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// `queued`, `delivered`, `ok`, `failed` or `refused`.
    pub status: String,
    /// The agent's result: for `diagnostics` the `batch_id` of the bundle,
    /// for `connectivity_test` one entry per target.
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
    pub issued_at: String,
    pub expires_at: String,
    pub delivered_at: Option<String>,
    pub acked_at: Option<String>,
}

/// The view of an instruction that is an action; `None` for other kinds.
fn action_view(r: &InstructionRow) -> Option<ActionView> {
    let (action, _) = ACTIONS.iter().find(|(_, k)| *k == r.kind)?;
    Some(ActionView {
        seq: r.seq,
        action: (*action).into(),
        kind: r.kind.clone(),
        params: r.payload.clone(),
        status: r.status.clone(),
        result: r.result.clone(),
        issued_at: rfc3339(r.issued_at),
        expires_at: rfc3339(r.expires_at),
        delivered_at: r.delivered_at.map(rfc3339),
        acked_at: r.acked_at.map(rfc3339),
    })
}

/// Send a remote action to a device as a signed one-shot instruction; its
/// outcome shows at `GET .../actions/{seq}` (and among the instructions).
#[utoipa::path(post, path = "/api/v1/devices/{id}/actions", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    request_body = CreateAction,
    responses((status = 201, body = ActionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_action(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<CreateAction>,
) -> Result<(StatusCode, axum::Json<ActionView>), ApiError> {
    let row = p
        .queue_action(
            &a.actor(),
            a.tenant.id,
            DeviceId(id),
            &req.action,
            req.params,
            req.ttl_secs,
        )
        .await?;
    let view = action_view(&row).ok_or_else(|| ApiError::internal("queued a non-action"))?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// One action of a device and its result.
#[utoipa::path(get, path = "/api/v1/devices/{id}/actions/{seq}", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id"), ("seq" = u64, Path, description = "The action's instruction seq")),
    responses((status = 200, body = ActionView), (status = 404, body = ErrorBody)))]
async fn get_action(
    State(p): State<AppState>,
    a: TenantReader,
    Path((id, seq)): Path<(Uuid, u64)>,
) -> Result<axum::Json<ActionView>, ApiError> {
    p.store
        .get_instruction(a.tenant.id, DeviceId(id), seq)
        .await?
        .as_ref()
        .and_then(action_view)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("action {seq} of device {id}")))
}

#[derive(Serialize, ToSchema)]
pub struct DiagnosticsView {
    pub batch_id: Uuid,
    /// Sealed size.
    pub bytes: u64,
    pub created_at: String,
    pub received_at: String,
}

fn diagnostics_view(b: &BatchRow) -> DiagnosticsView {
    DiagnosticsView {
        batch_id: b.batch_id,
        bytes: b.bytes,
        created_at: rfc3339(b.created_at),
        received_at: rfc3339(b.received_at),
    }
}

/// Diagnostics bundles a device uploaded, newest first (at most 100).
#[utoipa::path(get, path = "/api/v1/devices/{id}/diagnostics", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Vec<DiagnosticsView>), (status = 404, body = ErrorBody)))]
async fn list_diagnostics(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Vec<DiagnosticsView>>, ApiError> {
    let d = p
        .store
        .get_device(a.tenant.id, DeviceId(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id}")))?;
    let rows = p.list_diagnostics(a.tenant.id, d.id).await?;
    Ok(axum::Json(rows.iter().map(diagnostics_view).collect()))
}

/// One diagnostics bundle, opened: agent version, options, data controls,
/// status, run state, outbox, state file names and recent log lines.
#[utoipa::path(get, path = "/api/v1/devices/{id}/diagnostics/{batch_id}", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id"), ("batch_id" = Uuid, Path, description = "The bundle's batch id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn get_diagnostics(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((id, batch_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let bundle = p
        .read_diagnostics(&a.actor(), a.tenant.id, DeviceId(id), batch_id)
        .await?;
    Ok(axum::Json(bundle))
}

/// The key this device's requests verify under (answers only when signed
/// with it: an agent settling an interrupted rotation asks with each key).
#[utoipa::path(get, path = "/api/v1/device/key", tag = "device", security(("device" = [])),
    responses((status = 200, body = DeviceKeyView), (status = 401, body = ErrorBody)))]
async fn device_key(
    State(_p): State<AppState>,
    req: DeviceRequest,
) -> Result<axum::Json<DeviceKeyView>, ApiError> {
    let key = rampart_proto::keys::VerifyingKey::from_bytes(&req.device.public_key)
        .map_err(ApiError::internal)?;
    Ok(axum::Json(DeviceKeyView {
        public_key: key.to_b64(),
    }))
}

/// Replace this device's key for a pending `rotate_device_key`
/// instruction. Signed with the current key; `proof` is the new key's
/// signature over the rotation message. Later requests must be signed with
/// the new key.
#[utoipa::path(post, path = "/api/v1/device/key", tag = "device", security(("device" = [])),
    request_body = KeyRotateRequest,
    responses((status = 200, body = DeviceKeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "no such pending rotation, or the key changed meanwhile")))]
async fn rotate_device_key(
    State(p): State<AppState>,
    req: DeviceRequest,
) -> Result<axum::Json<DeviceKeyView>, ApiError> {
    let body: KeyRotateRequest = req.json()?;
    let view = p
        .rotate_device_key(req.tenant.id, &req.device, &body)
        .await?;
    Ok(axum::Json(view))
}
