//! A device's WireGuard VPN: its interface, its peers, the peers' client
//! profiles (wg-quick text and QR code), and the device's signed fetch of
//! its own secrets. Profiles hold private keys: admins only, never cached.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_proto::api::ErrorBody;
use rampart_proto::wg::{Cidr, WgSecrets};
use rampart_store::{DeviceId, VpnInterfaceRow, VpnPeerRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{
    AppState, DeviceRequest, Json, Path, TenantAdmin, TenantCaller, TenantReader,
};
use crate::routes::rfc3339;
use crate::vpn::{self, InterfaceSpec};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_interface, put_interface))
        .routes(routes!(list_peers, create_peer))
        .routes(routes!(revoke_peer))
        .routes(routes!(profile_conf))
        .routes(routes!(profile_png))
        .routes(routes!(vpn_keys))
}

#[derive(Serialize, ToSchema)]
pub struct InterfaceView {
    pub device_id: Uuid,
    /// The device's tunnel address with the network's prefix.
    pub address: String,
    /// The network peers get their addresses from.
    pub network: String,
    pub listen_port: u16,
    pub endpoint: String,
    pub dns: Vec<String>,
    pub client_allowed_ips: Vec<String>,
    /// The device's public key (base64, as `wg pubkey` prints it).
    pub public_key: String,
    pub live_peers: usize,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct PeerView {
    pub id: Uuid,
    pub name: String,
    /// The peer's tunnel address.
    pub address: String,
    pub public_key: String,
    pub preshared_key: bool,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutInterface {
    /// The device's tunnel address with prefix, e.g. `10.8.0.1/24`: peers
    /// get addresses from this network.
    pub address: String,
    /// UDP port; 51820 when left out.
    pub listen_port: Option<u16>,
    /// Host name or address clients reach the device at (no port).
    pub endpoint: String,
    /// DNS servers for client profiles (at most 4).
    #[serde(default)]
    pub dns: Vec<String>,
    /// What clients route through the tunnel; the network when left out.
    pub client_allowed_ips: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePeer {
    /// 1 to 64 letters, digits, `.`, `_` or `-`; unique among the device's
    /// live peers.
    pub name: String,
    /// Give the peer a preshared key too (default true).
    pub preshared_key: Option<bool>,
}

fn interface_view(r: &VpnInterfaceRow, live_peers: usize) -> InterfaceView {
    InterfaceView {
        device_id: r.device_id.0,
        network: Cidr::parse(&r.address)
            .map(|c| c.network().to_string())
            .unwrap_or_default(),
        address: r.address.clone(),
        listen_port: r.listen_port,
        endpoint: r.endpoint.clone(),
        dns: r.dns.clone(),
        client_allowed_ips: r.client_allowed_ips.clone(),
        public_key: r.public_key.clone(),
        live_peers,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

fn peer_view(r: &VpnPeerRow) -> PeerView {
    PeerView {
        id: r.id,
        name: r.name.clone(),
        address: r.address.clone(),
        public_key: r.public_key.clone(),
        preshared_key: r.preshared_key_wrapped.is_some(),
        created_at: rfc3339(r.created_at),
        revoked_at: r.revoked_at.map(rfc3339),
    }
}

/// The device (of the caller's tenant) and its interface.
async fn load<R: crate::extract::MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    id: Uuid,
) -> Result<VpnInterfaceRow, ApiError> {
    if p.store
        .get_device(a.tenant.id, DeviceId(id))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("device {id}")));
    }
    p.store
        .get_vpn_interface(a.tenant.id, DeviceId(id))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("vpn interface of device {id} (create it with PUT)"))
        })
}

fn live(peers: &[VpnPeerRow]) -> usize {
    peers.iter().filter(|x| x.revoked_at.is_none()).count()
}

/// A device's WireGuard interface (public key, address, endpoint).
#[utoipa::path(get, path = "/api/v1/devices/{id}/vpn", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = InterfaceView), (status = 404, body = ErrorBody)))]
async fn get_interface(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<InterfaceView>, ApiError> {
    let iface = load(&p, &a, id).await?;
    let peers = p.store.list_vpn_peers(a.tenant.id, DeviceId(id)).await?;
    Ok(axum::Json(interface_view(&iface, live(&peers))))
}

/// Create a device's WireGuard interface (its key pair is generated) or
/// change its address, port, endpoint or client settings (the key stays).
#[utoipa::path(put, path = "/api/v1/devices/{id}/vpn", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    request_body = PutInterface,
    responses((status = 201, body = InterfaceView, description = "created"), (status = 200, body = InterfaceView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_interface(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<PutInterface>,
) -> Result<(StatusCode, axum::Json<InterfaceView>), ApiError> {
    let spec = InterfaceSpec {
        address: req.address,
        listen_port: req.listen_port,
        endpoint: req.endpoint,
        dns: req.dns,
        client_allowed_ips: req.client_allowed_ips,
    };
    let (row, created) =
        vpn::put_interface(&p, &a.actor(), a.tenant.id, DeviceId(id), spec).await?;
    let peers = p.store.list_vpn_peers(a.tenant.id, DeviceId(id)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(interface_view(&row, live(&peers)))))
}

/// A device's VPN peers, revoked ones included, oldest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/vpn/peers", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Vec<PeerView>), (status = 404, body = ErrorBody)))]
async fn list_peers(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Vec<PeerView>>, ApiError> {
    load(&p, &a, id).await?;
    let peers = p.store.list_vpn_peers(a.tenant.id, DeviceId(id)).await?;
    Ok(axum::Json(peers.iter().map(peer_view).collect()))
}

/// Add a peer (client): a new key pair, the lowest free address of the
/// device's network and, unless turned off, a preshared key.
#[utoipa::path(post, path = "/api/v1/devices/{id}/vpn/peers", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    request_body = CreatePeer,
    responses((status = 201, body = PeerView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the name is taken or the network is full")))]
async fn create_peer(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<CreatePeer>,
) -> Result<(StatusCode, axum::Json<PeerView>), ApiError> {
    load(&p, &a, id).await?;
    let row = vpn::create_peer(
        &p,
        &a.actor(),
        a.tenant.id,
        DeviceId(id),
        &req.name,
        req.preshared_key.unwrap_or(true),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(peer_view(&row))))
}

/// Revoke a peer: its keys are deleted and the device's next configuration
/// drops it. Final.
#[utoipa::path(post, path = "/api/v1/devices/{id}/vpn/peers/{peer}/revoke", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id"), ("peer" = Uuid, Path, description = "Peer id")),
    responses((status = 200, body = PeerView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already revoked")))]
async fn revoke_peer(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((id, peer)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<PeerView>, ApiError> {
    load(&p, &a, id).await?;
    let row = vpn::revoke_peer(&p, &a.actor(), a.tenant.id, DeviceId(id), peer).await?;
    Ok(axum::Json(peer_view(&row)))
}

/// The peer's wg-quick profile text, or 410 once revoked.
async fn profile(
    p: &AppState,
    a: &TenantAdmin,
    id: Uuid,
    peer: Uuid,
) -> Result<(VpnPeerRow, zeroize::Zeroizing<String>), ApiError> {
    let iface = load(p, a, id).await?;
    let row = p
        .store
        .get_vpn_peer(a.tenant.id, DeviceId(id), peer)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("vpn peer {peer} of device {id}")))?;
    match vpn::client_profile(p, &a.actor(), a.tenant.id, &iface, &row).await? {
        Some(text) => Ok((row, text)),
        None => Err(ApiError::new(
            StatusCode::GONE,
            "peer_revoked",
            format!("vpn peer {peer} is revoked and its keys are deleted: add a new peer for this client"),
        )),
    }
}

/// Responses that hold a private key: a download, never stored by caches.
fn secret_download(content_type: &'static str, file: String, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The peer's client profile in wg-quick format (it holds the peer's
/// private key). 410 once the peer is revoked.
#[utoipa::path(get, path = "/api/v1/devices/{id}/vpn/peers/{peer}/profile.conf", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id"), ("peer" = Uuid, Path, description = "Peer id")),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 404, body = ErrorBody),
              (status = 410, body = ErrorBody, description = "the peer is revoked")))]
async fn profile_conf(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((id, peer)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let (row, text) = profile(&p, &a, id, peer).await?;
    Ok(secret_download(
        "text/plain; charset=utf-8",
        format!("{}.conf", row.name),
        text.as_bytes().to_vec(),
    ))
}

/// The same profile as a QR code (PNG), for WireGuard's mobile apps.
#[utoipa::path(get, path = "/api/v1/devices/{id}/vpn/peers/{peer}/profile.png", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Device id"), ("peer" = Uuid, Path, description = "Peer id")),
    responses((status = 200, body = Vec<u8>, content_type = "image/png"), (status = 404, body = ErrorBody),
              (status = 410, body = ErrorBody, description = "the peer is revoked")))]
async fn profile_png(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path((id, peer)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let (row, text) = profile(&p, &a, id, peer).await?;
    let png = tokio::task::spawn_blocking(move || vpn::qr_png(&text))
        .await
        .map_err(ApiError::internal)??;
    Ok(secret_download(
        "image/png",
        format!("{}.png", row.name),
        png,
    ))
}

/// The device's own WireGuard secrets: its interface private key and its
/// live peers' preshared keys. Kept out of configurations, which the portal
/// stores and shows to admins.
#[utoipa::path(get, path = "/api/v1/device/vpn-keys", tag = "device", security(("device" = [])),
    responses((status = 200, body = WgSecrets), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "the device has no vpn interface")))]
async fn vpn_keys(State(p): State<AppState>, req: DeviceRequest) -> Result<Response, ApiError> {
    let s = vpn::device_secrets(&p, req.tenant.id, req.device_id())
        .await?
        .ok_or_else(|| ApiError::not_found("vpn interface of this device"))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response())
}
