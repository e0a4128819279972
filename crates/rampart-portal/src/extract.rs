//! Request extractors. Each route states who may call it by the extractor it
//! takes: [`Operator`] (admin domain, operator token), [`TenantAdmin`]
//! (tenant domain, that tenant's token), [`DeviceRequest`] (tenant domain,
//! signed by an enrolled device) or bare [`TenantHost`] (enrollment).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use rampart_proto::api::DeviceStatus;
use rampart_proto::reqsig::DeviceAuth;
use rampart_store::{ApiToken, Device, DeviceId, Lifecycle, Tenant, TenantStatus};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::{now, NonceCheck, Portal};
use crate::tls::ConnInfo;

pub type AppState = Arc<Portal>;

/// JSON body extractor whose rejections use the API error shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection as R;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(R::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            )),
            Err(R::JsonSyntaxError(e)) => Err(ApiError::bad_request(
                "invalid_json",
                format!("body is not valid json: {}", e.body_text()),
            )),
            Err(R::JsonDataError(e)) => Err(ApiError::bad_request(
                "invalid_body",
                format!("body does not match the schema: {}", e.body_text()),
            )),
            Err(R::BytesRejection(e)) => Err(ApiError::new(
                e.status(),
                "bad_body",
                format!("cannot read the body: {}", e.body_text().to_lowercase()),
            )),
            Err(e) => Err(ApiError::bad_request("bad_body", e.body_text())),
        }
    }
}

/// The host the client addressed: the SNI name when TLS carried one (and
/// then the `Host` header must agree), otherwise the `Host` header.
fn addressed_host(parts: &Parts) -> Result<String, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port);
    let sni = parts
        .extensions
        .get::<ConnInfo>()
        .and_then(|c| c.sni.clone());
    match (sni, header) {
        (Some(sni), Some(h)) if sni != h => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!("host header {h} does not match the tls server name {sni}: use one domain per request"),
        )),
        (Some(sni), _) => Ok(sni),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(ApiError::bad_request("no_host", "send a host header")),
    }
}

/// `Host` without its port, lowercased; IPv6 literals keep their brackets.
pub fn strip_port(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return match h.find(']') {
            Some(end) => h[..=end].to_string(),
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The tenant whose domain the request reached. Suspended tenants are refused.
pub struct TenantHost(pub Tenant);

impl FromRequestParts<AppState> for TenantHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &AppState) -> Result<Self, ApiError> {
        let host = addressed_host(parts)?;
        let tenant = match portal.store.tenant_by_domain(&host).await? {
            Some(t) => t,
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_domain",
                    format!("no tenant is served at {host}: use your tenant's domain"),
                ))
            }
        };
        if let Lifecycle::Cancelled { delete_after, .. } = tenant.lifecycle {
            return Err(ApiError::forbidden(
                "tenant_cancelled",
                format!(
                    "this tenant is cancelled and its data will be deleted at {}: contact your provider to reactivate it",
                    crate::routes::rfc3339(delete_after)
                ),
            ));
        }
        if tenant.status == TenantStatus::Suspended {
            return Err(ApiError::forbidden(
                "tenant_suspended",
                "this tenant is suspended: contact your provider",
            ));
        }
        Ok(TenantHost(tenant))
    }
}

/// A request on a tenant's domain carrying one of that tenant's API tokens.
pub struct TenantAdmin {
    pub tenant: Tenant,
    pub token: ApiToken,
}

impl FromRequestParts<AppState> for TenantAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &AppState) -> Result<Self, ApiError> {
        let TenantHost(tenant) = TenantHost::from_request_parts(parts, portal).await?;
        let secret = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send an api token: authorization: bearer <token>")
        })?;
        match portal.authenticate(secret).await? {
            Some(token) if token.tenant_id == Some(tenant.id) => Ok(TenantAdmin { tenant, token }),
            // A valid token of another tenant, or an operator token, gets the
            // same answer as a bad one: nothing to learn about other tenants.
            _ => Err(ApiError::unauthorized(
                "api token is invalid, expired or not for this tenant: use a token of this tenant",
            )),
        }
    }
}

/// A request on the admin domain, with no credentials checked: for the
/// billing webhook, which its provider's signature authenticates. Every
/// other admin route takes [`Operator`].
pub struct AdminHost;

impl FromRequestParts<AppState> for AdminHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &AppState) -> Result<Self, ApiError> {
        let host = addressed_host(parts)?;
        if host != portal.config.admin_domain.to_ascii_lowercase() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "wrong_domain",
                format!(
                    "the admin api is served at {}: use that domain",
                    portal.config.admin_domain
                ),
            ));
        }
        Ok(AdminHost)
    }
}

/// A request on the admin domain carrying an operator token.
pub struct Operator {
    pub token: ApiToken,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &AppState) -> Result<Self, ApiError> {
        AdminHost::from_request_parts(parts, portal).await?;
        let secret = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send an operator token: authorization: bearer <token>")
        })?;
        match portal.authenticate(secret).await? {
            Some(token) if token.tenant_id.is_none() => Ok(Operator { token }),
            _ => Err(ApiError::unauthorized(
                "operator token is invalid or expired: create one with `rampart admin-token create`",
            )),
        }
    }
}

/// How stale `last_seen` may get before a device request refreshes it.
const LAST_SEEN_RESOLUTION_SECS: i64 = 15;

/// A request signed by an active enrolled device of the addressed tenant,
/// with its body (already counted against `limit`).
pub struct DeviceRequest {
    pub tenant: Tenant,
    pub device: Device,
    pub body: Bytes,
    /// Kept so query parameters are parsed only after the signature verified.
    pub uri: axum::http::Uri,
}

impl DeviceRequest {
    pub fn device_id(&self) -> DeviceId {
        self.device.id
    }

    pub async fn extract(req: Request, portal: &AppState, limit: usize) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let TenantHost(tenant) = TenantHost::from_request_parts(&mut parts, portal).await?;
        let host = addressed_host(&parts)?;
        let auth = DeviceAuth::from_headers(|h| parts.headers.get(h).and_then(|v| v.to_str().ok()))
            .map_err(|e| ApiError::bad_request("bad_signature_headers", e.to_string()))?
            .ok_or_else(|| ApiError::unauthorized("sign the request with the device key"))?;
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body exceeds the {limit}-byte limit of this route: send less per request"),
            )
        })?;
        let device = portal
            .store
            .get_device(tenant.id, DeviceId(auth.device))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown device: enroll this agent again"))?;
        let key = rampart_proto::keys::VerifyingKey::from_bytes(&device.public_key)
            .map_err(ApiError::internal)?;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let now = now();
        auth.verify(&key, parts.method.as_str(), &host, path, now, &body)
            .map_err(|e| ApiError::unauthorized(format!("device signature refused: {e}")))?;
        match portal.nonces.check(auth.device, &auth.nonce, now) {
            NonceCheck::Fresh => {}
            NonceCheck::Replayed => {
                return Err(ApiError::unauthorized(
                    "request nonce was already used: this looks like a replay",
                ))
            }
            NonceCheck::Full => return Err(ApiError::unavailable("nonce cache is full")),
        }
        match DeviceStatus::parse(&device.status) {
            Some(DeviceStatus::Active) => {}
            Some(DeviceStatus::Pending) => {
                return Err(ApiError::forbidden(
                    "device_pending",
                    "device awaits approval: ask the tenant admin to approve it",
                ))
            }
            _ => {
                return Err(ApiError::forbidden(
                    "device_revoked",
                    "device is revoked: enroll it again with a new token",
                ))
            }
        }
        // `last_seen` drives online/offline at a granularity of minutes; a
        // durable write on every request would cost one fsync per poll.
        if device
            .last_seen
            .is_none_or(|t| now - t >= LAST_SEEN_RESOLUTION_SECS)
        {
            portal.store.touch_device(tenant.id, device.id, now).await?;
        }
        Ok(DeviceRequest {
            tenant,
            device,
            body,
            uri: parts.uri,
        })
    }
}

/// JSON device requests (poll, ack, refusals): small bodies.
impl FromRequest<AppState> for DeviceRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, portal: &AppState) -> Result<Self, ApiError> {
        DeviceRequest::extract(req, portal, rampart_proto::api::MAX_JSON_BODY).await
    }
}

/// A device request whose body is a sealed batch frame (up to 16 MiB).
pub struct DeviceUpload(pub DeviceRequest);

impl FromRequest<AppState> for DeviceUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, portal: &AppState) -> Result<Self, ApiError> {
        DeviceRequest::extract(req, portal, rampart_proto::batch::MAX_FRAME_BYTES)
            .await
            .map(DeviceUpload)
    }
}

impl DeviceRequest {
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&self.uri)
            .map(|axum::extract::Query(v)| v)
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text().to_lowercase()))
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not valid: {e}")))
    }
}

/// Path parameters whose rejections use the API error shape.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text().to_lowercase()))
    }
}

/// Query parameters whose rejections use the API error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text().to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("Acme.Example:8443"), "acme.example");
        assert_eq!(strip_port("acme.example"), "acme.example");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:1"), "127.0.0.1");
    }
}
