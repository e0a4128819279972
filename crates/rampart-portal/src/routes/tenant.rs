//! A tenant's own API, on the tenant's domain, with that tenant's tokens.
//! Every handler takes a [`TenantCaller`] naming its least role and passes its
//! tenant first to the store.

use axum::extract::State;
use axum::http::StatusCode;
use rampart_proto::api::{DeviceStatus, ErrorBody};
use rampart_store::{BatchRow, Device, DeviceEvent, DeviceId, EnrollmentTokenRow, InstructionRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{
    AppState, Json, MinRole, Path, Query, TenantAdmin, TenantCaller, TenantReader,
};
use crate::service::{now, Portal};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant_info))
        .routes(routes!(list_enrollment_tokens, create_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
        .routes(routes!(list_devices))
        .routes(routes!(get_device))
        .routes(routes!(approve_device))
        .routes(routes!(revoke_device))
        .routes(routes!(list_instructions, create_instruction))
        .routes(routes!(broadcast_instruction))
        .routes(routes!(list_device_events))
        .routes(routes!(list_batches))
}

#[derive(Serialize, ToSchema)]
pub struct TenantInfo {
    pub id: Uuid,
    pub name: String,
    pub domain: String,
    /// Hex SHA-256 of the tenant certificate's SPKI; agents pin it.
    pub pin: String,
    /// Base64 Ed25519 key that verifies this tenant's instructions.
    pub instruction_key: String,
    /// Base64 X25519 key that uploads are sealed to.
    pub upload_key: String,
}

/// This tenant, with its public keys and certificate pin.
#[utoipa::path(get, path = "/api/v1/tenant", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = TenantInfo), (status = 401, body = ErrorBody)))]
async fn tenant_info(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<TenantInfo>, ApiError> {
    let s = p.secrets(a.tenant.id).await?;
    Ok(axum::Json(TenantInfo {
        id: a.tenant.id.0,
        name: a.tenant.name.clone(),
        domain: a.tenant.domain.clone(),
        pin: p.tenant_pin(&a.tenant).await?,
        instruction_key: s.instruction_key().to_b64(),
        upload_key: s.upload_key().to_b64(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Seconds until the token expires (1 to 7776000). Default one day.
    #[serde(default = "default_ttl")]
    pub ttl_secs: i64,
    /// How many agents may enroll with it. Default 1.
    #[serde(default = "default_uses")]
    pub max_uses: u32,
    /// Labels and groups given to every device enrolled with it.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Enrolled devices stay `pending` until an admin approves them.
    #[serde(default)]
    pub needs_approval: bool,
}

fn default_ttl() -> i64 {
    86_400
}
fn default_uses() -> u32 {
    1
}

#[derive(Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub id: Uuid,
    /// Give this to `rampart-agent enroll`. Shown once.
    pub token: String,
    pub expires_at: String,
    pub max_uses: u32,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub id: Uuid,
    pub created_at: String,
    pub expires_at: String,
    pub max_uses: u32,
    pub uses: u32,
    pub labels: Vec<String>,
    pub needs_approval: bool,
    /// `usable`, `expired`, `used_up` or `revoked`.
    pub state: String,
}

fn token_view(t: &EnrollmentTokenRow, now: i64) -> EnrollmentTokenView {
    let state = if t.revoked_at.is_some() {
        "revoked"
    } else if now >= t.expires_at {
        "expired"
    } else if t.uses >= t.max_uses {
        "used_up"
    } else {
        "usable"
    };
    EnrollmentTokenView {
        id: t.id,
        created_at: rfc3339(t.created_at),
        expires_at: rfc3339(t.expires_at),
        max_uses: t.max_uses,
        uses: t.uses,
        labels: t.labels.clone(),
        needs_approval: t.needs_approval,
        state: state.into(),
    }
}

/// Create an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "tenant", security(("tenant" = [])),
    request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_enrollment_token(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(req): Json<CreateEnrollmentToken>,
) -> Result<(StatusCode, axum::Json<CreatedEnrollmentToken>), ApiError> {
    let (row, token) = p
        .create_enrollment_token(
            &a.actor(),
            &a.tenant,
            req.ttl_secs,
            req.max_uses,
            req.labels,
            req.needs_approval,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedEnrollmentToken {
            id: row.id,
            token,
            expires_at: rfc3339(row.expires_at),
            max_uses: row.max_uses,
        }),
    ))
}

/// List enrollment tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = Vec<EnrollmentTokenView>), (status = 401, body = ErrorBody)))]
async fn list_enrollment_tokens(
    State(p): State<AppState>,
    a: TenantAdmin,
) -> Result<axum::Json<Vec<EnrollmentTokenView>>, ApiError> {
    let now = now();
    let rows = p.store.list_enrollment_tokens(a.tenant.id).await?;
    Ok(axum::Json(
        rows.iter().map(|t| token_view(t, now)).collect(),
    ))
}

/// Revoke an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Enrollment token id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_enrollment_token(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if p.revoke_enrollment_token(&a.actor(), a.tenant.id, id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("enrollment token {id}")))
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    pub hostname: String,
    pub labels: Vec<String>,
    /// `pending`, `active` or `revoked`.
    pub status: String,
    /// `online`, `offline` or `never_seen`.
    pub connectivity: String,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    /// The last heartbeat: version, uptime, outbox depth and drops, last error.
    #[schema(value_type = Object)]
    pub health: Option<serde_json::Value>,
}

/// `online`, `offline` or `never_seen` at `now` (unix seconds), by
/// `offline_after_secs`; the device list and the reports agree on it.
pub fn connectivity(offline_after_secs: u64, last_seen: Option<i64>, now: i64) -> &'static str {
    match last_seen {
        None => "never_seen",
        Some(t) if now - t <= offline_after_secs as i64 => "online",
        Some(_) => "offline",
    }
}

fn device_view(p: &Portal, d: &Device, now: i64) -> DeviceView {
    let connectivity = connectivity(p.config.offline_after_secs, d.last_seen, now);
    DeviceView {
        id: d.id.0,
        hostname: d.hostname.clone(),
        labels: d.labels.clone(),
        status: d.status.clone(),
        connectivity: connectivity.into(),
        enrolled_at: rfc3339(d.enrolled_at),
        last_seen: d.last_seen.map(rfc3339),
        health: d.health.clone(),
    }
}

async fn load_device<R: MinRole>(
    p: &Portal,
    a: &TenantCaller<R>,
    id: Uuid,
) -> Result<Device, ApiError> {
    p.store
        .get_device(a.tenant.id, DeviceId(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id}")))
}

/// List devices with their online state.
#[utoipa::path(get, path = "/api/v1/devices", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = Vec<DeviceView>), (status = 401, body = ErrorBody)))]
async fn list_devices(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<DeviceView>>, ApiError> {
    let now = now();
    let ds = p.store.list_devices(a.tenant.id).await?;
    Ok(axum::Json(
        ds.iter().map(|d| device_view(&p, d, now)).collect(),
    ))
}

/// Show one device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody)))]
async fn get_device(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let d = load_device(&p, &a, id).await?;
    Ok(axum::Json(device_view(&p, &d, now())))
}

async fn set_device_status<R: MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    id: Uuid,
    from: &[DeviceStatus],
    to: DeviceStatus,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let mut d = load_device(p, a, id).await?;
    if !from.iter().any(|s| s.as_str() == d.status) {
        return Err(ApiError::conflict(format!(
            "device {id} is {}: it cannot become {}",
            d.status,
            to.as_str()
        )));
    }
    if !p
        .set_device_status(&a.actor(), a.tenant.id, d.id, to)
        .await?
    {
        return Err(ApiError::not_found(format!("device {id}")));
    }
    tracing::info!(tenant = %a.tenant.name, device = %d.id, status = to.as_str(), "device status changed");
    d.status = to.as_str().to_string();
    Ok(axum::Json(device_view(p, &d, now())))
}

/// Approve a pending device.
#[utoipa::path(post, path = "/api/v1/devices/{id}/approve", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_device(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    set_device_status(&p, &a, id, &[DeviceStatus::Pending], DeviceStatus::Active).await
}

/// Revoke a device: its next request fails at once.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_device(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    set_device_status(
        &p,
        &a,
        id,
        &[DeviceStatus::Pending, DeviceStatus::Active],
        DeviceStatus::Revoked,
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstruction {
    /// What to do, e.g. `ping`.
    pub kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Seconds until the instruction expires (10 to 2592000).
    pub ttl_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct InstructionView {
    pub seq: u64,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `queued`, `delivered`, `ok`, `failed` or `refused`.
    pub status: String,
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
    pub issued_at: String,
    pub expires_at: String,
    pub delivered_at: Option<String>,
    pub acked_at: Option<String>,
}

fn instruction_view(r: &InstructionRow) -> InstructionView {
    InstructionView {
        seq: r.seq,
        kind: r.kind.clone(),
        payload: r.payload.clone(),
        status: r.status.clone(),
        result: r.result.clone(),
        issued_at: rfc3339(r.issued_at),
        expires_at: rfc3339(r.expires_at),
        delivered_at: r.delivered_at.map(rfc3339),
        acked_at: r.acked_at.map(rfc3339),
    }
}

/// Sign and queue an instruction for a device.
#[utoipa::path(post, path = "/api/v1/devices/{id}/instructions", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    request_body = CreateInstruction,
    responses((status = 201, body = InstructionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_instruction(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<CreateInstruction>,
) -> Result<(StatusCode, axum::Json<InstructionView>), ApiError> {
    let row = p
        .queue_instruction(
            &a.actor(),
            a.tenant.id,
            DeviceId(id),
            &req.kind,
            req.payload,
            req.ttl_secs,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(instruction_view(&row))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBroadcast {
    pub kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub ttl_secs: Option<i64>,
    /// Every active device of the tenant.
    #[serde(default)]
    pub all: bool,
    /// Active devices carrying this label.
    pub label: Option<String>,
    /// These devices (each must be an active device of this tenant).
    pub devices: Option<Vec<Uuid>>,
}

#[derive(Serialize, ToSchema)]
pub struct QueuedInstruction {
    pub device_id: Uuid,
    pub seq: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BroadcastResult {
    pub queued: usize,
    pub instructions: Vec<QueuedInstruction>,
}

/// Sign and queue one instruction for many devices: all active devices, those
/// with a label, or a list. Give exactly one of `all`, `label`, `devices`.
#[utoipa::path(post, path = "/api/v1/instructions", tag = "tenant", security(("tenant" = [])),
    request_body = CreateBroadcast,
    responses((status = 201, body = BroadcastResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn broadcast_instruction(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(req): Json<CreateBroadcast>,
) -> Result<(StatusCode, axum::Json<BroadcastResult>), ApiError> {
    let chosen = [req.all, req.label.is_some(), req.devices.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen != 1 {
        return Err(ApiError::bad_request(
            "invalid",
            "give exactly one target: all, label or devices",
        ));
    }
    if req.devices.as_ref().is_some_and(|d| d.len() > 100_000) {
        return Err(ApiError::bad_request(
            "invalid",
            "at most 100000 devices per request",
        ));
    }
    let active: Vec<Device> = p
        .store
        .list_devices(a.tenant.id)
        .await?
        .into_iter()
        .filter(|d| d.status == DeviceStatus::Active.as_str())
        .collect();
    let targets: Vec<DeviceId> = match (&req.label, &req.devices) {
        (Some(label), _) => active
            .iter()
            .filter(|d| d.labels.contains(label))
            .map(|d| d.id)
            .collect(),
        (_, Some(ids)) => {
            let known: std::collections::HashSet<Uuid> = active.iter().map(|d| d.id.0).collect();
            if let Some(bad) = ids.iter().find(|id| !known.contains(id)) {
                return Err(ApiError::bad_request(
                    "invalid",
                    format!("device {bad} is not an active device of this tenant"),
                ));
            }
            ids.iter().map(|id| DeviceId(*id)).collect()
        }
        _ => active.iter().map(|d| d.id).collect(),
    };
    let rows = p
        .queue_instructions(
            &a.actor(),
            a.tenant.id,
            &targets,
            &req.kind,
            req.payload,
            req.ttl_secs,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(BroadcastResult {
            queued: rows.len(),
            instructions: rows
                .iter()
                .map(|r| QueuedInstruction {
                    device_id: r.device_id.0,
                    seq: r.seq,
                })
                .collect(),
        }),
    ))
}

/// A device's instructions and their results.
#[utoipa::path(get, path = "/api/v1/devices/{id}/instructions", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Vec<InstructionView>), (status = 404, body = ErrorBody)))]
async fn list_instructions(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Vec<InstructionView>>, ApiError> {
    let d = load_device(&p, &a, id).await?;
    let rows = p.store.list_instructions(a.tenant.id, d.id).await?;
    Ok(axum::Json(rows.iter().map(instruction_view).collect()))
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    /// e.g. `refusal`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

fn event_view(e: &DeviceEvent) -> EventView {
    EventView {
        at: rfc3339(e.at),
        kind: e.kind.clone(),
        detail: e.detail.clone(),
    }
}

/// Events a device reported, such as refused instructions.
#[utoipa::path(get, path = "/api/v1/devices/{id}/events", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Vec<EventView>), (status = 404, body = ErrorBody)))]
async fn list_device_events(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Vec<EventView>>, ApiError> {
    let d = load_device(&p, &a, id).await?;
    let rows = p.store.list_device_events(a.tenant.id, d.id).await?;
    Ok(axum::Json(rows.iter().map(event_view).collect()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// Only this device's batches.
    pub device: Option<Uuid>,
    /// At most this many (1 to 10000, default 1000).
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub device_id: Uuid,
    pub kind: String,
    /// `alarm`, `health` or `data`.
    pub priority: String,
    pub items: u32,
    pub bytes: u64,
    pub created_at: String,
    pub received_at: String,
}

fn batch_view(b: &BatchRow) -> BatchView {
    BatchView {
        batch_id: b.batch_id,
        device_id: b.device_id.0,
        kind: b.kind.clone(),
        priority: rampart_proto::batch::Priority::from_u8(b.priority)
            .map(|p| p.as_str())
            .unwrap_or("unknown")
            .into(),
        items: b.items,
        bytes: b.bytes,
        created_at: rfc3339(b.created_at),
        received_at: rfc3339(b.received_at),
    }
}

/// Batches received, oldest first.
#[utoipa::path(get, path = "/api/v1/batches", tag = "tenant", security(("tenant" = [])),
    params(BatchQuery),
    responses((status = 200, body = Vec<BatchView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_batches(
    State(p): State<AppState>,
    a: TenantReader,
    Query(q): Query<BatchQuery>,
) -> Result<axum::Json<Vec<BatchView>>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 10000",
        ));
    }
    let rows = p
        .store
        .list_batches(a.tenant.id, q.device.map(DeviceId), limit)
        .await?;
    Ok(axum::Json(rows.iter().map(batch_view).collect()))
}
