//! Request extractors. Each route states who may call it by the extractor it
//! takes: [`Operator`] (admin domain, operator token), [`TenantCaller`]
//! with the least role it needs (tenant domain, that tenant's token or a
//! user's session: [`TenantReader`], [`TenantAnalyst`], [`TenantAdmin`],
//! [`TenantOwner`]), [`DeviceRequest`] (tenant domain, signed by an
//! enrolled device) or bare [`TenantHost`] (enrollment, login).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use rampart_proto::api::DeviceStatus;
use rampart_proto::reqsig::DeviceAuth;
use rampart_store::{
    ApiToken, Device, DeviceId, Lifecycle, MspGrantRow, SessionRow, Tenant, TenantStatus, UserRow,
};
use serde::de::DeserializeOwned;

pub use crate::access::{role, MinRole, Role};
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

/// How a tenant caller authenticated.
pub enum Credential {
    /// One of the tenant's API tokens (bearer).
    Token(ApiToken),
    /// A session cookie of a user: the tenant's own user, or an MSP
    /// operator user with the tenant's grant.
    Session {
        session: Box<SessionRow>,
        user: Box<UserRow>,
        grant: Option<Box<MspGrantRow>>,
    },
}

/// A request on a tenant's domain by a caller of that tenant whose role is
/// at least `R`: the route's policy is this type, so a handler cannot
/// forget it. No or bad credentials answer 401; a role below `R` answers
/// 403 `insufficient_role` naming the role needed.
pub struct TenantCaller<R: MinRole> {
    pub tenant: Tenant,
    pub role: Role,
    pub credential: Credential,
    need: PhantomData<fn() -> R>,
}

/// Reads (devices, flows, alarms, audit).
pub type TenantReader = TenantCaller<role::ReadOnly>;
/// Works alarms and exports.
pub type TenantAnalyst = TenantCaller<role::Analyst>;
/// Manages devices, tokens, rules, webhooks, settings and users below owner.
pub type TenantAdmin = TenantCaller<role::Admin>;
/// Manages owners, MSP grants and destructive actions.
pub type TenantOwner = TenantCaller<role::Owner>;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "rampart_session";
/// The header that must carry the session's CSRF token on cookie writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session's `last_seen` is written at most this often (idle expiry is
/// counted in minutes; a write per request would cost an fsync each).
const SESSION_TOUCH_SECS: i64 = 60;

fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
}

fn insufficient(need: Role, has: Role) -> ApiError {
    ApiError::forbidden(
        "insufficient_role",
        format!(
            "this needs the {need} role or above and the caller has {has}: ask an owner of this tenant"
        ),
    )
}

impl<R: MinRole> TenantCaller<R> {
    /// For the few routes whose need depends on the request (a CSV export
    /// on a read route): the caller must have `need` too.
    pub fn require(&self, need: Role) -> Result<(), ApiError> {
        if self.role < need {
            return Err(insufficient(need, self.role));
        }
        Ok(())
    }

    /// The user behind the call (`None` for an API token).
    pub fn user(&self) -> Option<&UserRow> {
        match &self.credential {
            Credential::Token(_) => None,
            Credential::Session { user, .. } => Some(user),
        }
    }
}

async fn tenant_credential(
    parts: &Parts,
    portal: &AppState,
    tenant: &Tenant,
) -> Result<(Role, Credential), ApiError> {
    if let Some(secret) = bearer(parts) {
        return match portal.authenticate(secret).await? {
            Some(token) if token.tenant_id == Some(tenant.id) => {
                Ok((Role::from_stored(&token.role), Credential::Token(token)))
            }
            // A valid token of another tenant, or an operator token, gets the
            // same answer as a bad one: nothing to learn about other tenants.
            _ => Err(ApiError::unauthorized(
                "api token is invalid, expired or not for this tenant: use a token of this tenant",
            )),
        };
    }
    let Some(cookie) = session_cookie(parts) else {
        return Err(ApiError::unauthorized(
            "send an api token (authorization: bearer <token>) or log in at /api/v1/auth/login",
        ));
    };
    let expired = || {
        ApiError::unauthorized("session is invalid or expired: log in again at /api/v1/auth/login")
    };
    if cookie.len() > 128 {
        return Err(expired());
    }
    let hash = rampart_proto::sha256_hex(cookie.as_bytes());
    // Sessions are looked up per tenant: a cookie issued on another
    // tenant's domain is not found here.
    let session = portal
        .store
        .get_session(tenant.id, &hash)
        .await?
        .filter(|s| rampart_proto::ct_eq(s.id_hash.as_bytes(), hash.as_bytes()))
        .ok_or_else(expired)?;
    let now = now();
    let idle = i64::try_from(portal.config.session_idle_secs).unwrap_or(i64::MAX);
    if session.revoked_at.is_some()
        || now >= session.expires_at
        || now.saturating_sub(session.last_seen) >= idle
    {
        return Err(expired());
    }
    let (user, grant, role) = match portal
        .store
        .get_user(Some(tenant.id), session.user_id)
        .await?
    {
        Some(u) => {
            let role = u.role.as_deref().map(Role::from_stored);
            (Some(u), None, role)
        }
        None => match portal.store.get_user(None, session.user_id).await? {
            Some(u) => {
                let g = portal.store.active_msp_grant(tenant.id, u.id, now).await?;
                let role = g.as_ref().map(|g| Role::from_stored(&g.role));
                (Some(u), g, role)
            }
            None => (None, None, None),
        },
    };
    let (Some(user), Some(role)) = (user, role) else {
        return Err(expired());
    };
    if user.offboarded_at.is_some() {
        return Err(expired());
    }
    if !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(|v| rampart_proto::sha256_hex(v.as_bytes()));
        if !sent.is_some_and(|h| rampart_proto::ct_eq(h.as_bytes(), session.csrf_hash.as_bytes())) {
            return Err(ApiError::forbidden(
                "csrf_failed",
                "cookie-authenticated writes need the session's csrf token in x-csrf-token: use the csrf_token the login returned",
            ));
        }
    }
    if now - session.last_seen >= SESSION_TOUCH_SECS {
        portal.store.touch_session(tenant.id, &hash, now).await?;
    }
    Ok((
        role,
        Credential::Session {
            session: Box::new(session),
            user: Box::new(user),
            grant: grant.map(Box::new),
        },
    ))
}

impl<R: MinRole> FromRequestParts<AppState> for TenantCaller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, portal: &AppState) -> Result<Self, ApiError> {
        let TenantHost(tenant) = TenantHost::from_request_parts(parts, portal).await?;
        let (role, credential) = tenant_credential(parts, portal, &tenant).await?;
        if role < R::ROLE {
            return Err(insufficient(R::ROLE, role));
        }
        Ok(TenantCaller {
            tenant,
            role,
            credential,
            need: PhantomData,
        })
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
