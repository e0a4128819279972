//! Users and access on a tenant's domain: login and sessions, TOTP, users,
//! scoped API tokens and MSP grants. The policy of each route is the role
//! its extractor names (see ARCHITECTURE.md, "Roles").

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_proto::api::ErrorBody;
use rampart_store::{ApiToken, MspGrantRow, UserRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::access::Role;
use crate::error::ApiError;
use crate::extract::{
    AppState, Credential, Json, Path, TenantAdmin, TenantHost, TenantOwner, TenantReader,
    SESSION_COOKIE,
};
use crate::service::now;
use crate::tls::ConnInfo;
use crate::users::{self, LoginRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(setup))
        .routes(routes!(totp_begin))
        .routes(routes!(totp_confirm))
        .routes(routes!(list_users, create_user))
        .routes(routes!(set_role))
        .routes(routes!(offboard_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_grants, create_grant))
        .routes(routes!(revoke_grant))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
    /// The 6-digit code of the authenticator, when TOTP is on.
    pub totp_code: Option<String>,
    /// A recovery code instead of the TOTP code; each works once.
    pub recovery_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedIn {
    /// Send this in `x-csrf-token` on every non-GET request made with the
    /// session cookie. Shown once.
    pub csrf_token: String,
    pub expires_at: String,
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    /// True for an MSP operator user acting through this tenant's grant.
    pub msp: bool,
}

fn cookie(value: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
    // Host-only (no Domain), so it goes back to this tenant's domain only.
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .map_err(ApiError::internal)
}

/// Log in with email and password (and a second factor when TOTP is on).
/// Sets the session cookie (`Secure; HttpOnly; SameSite=Strict`) and
/// returns the CSRF token. Attempts are limited per client address and a
/// run of failures locks the account (429 with `retry-after`).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "tenant",
    request_body = Login,
    responses((status = 200, body = LoggedIn), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(p): State<AppState>,
    TenantHost(tenant): TenantHost,
    conn: Option<axum::Extension<ConnInfo>>,
    Json(req): Json<Login>,
) -> Result<Response, ApiError> {
    // Without a connection (in-process callers) every attempt shares one bucket.
    let ip = conn
        .map(|c| c.peer.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let done = users::login(
        &p,
        &tenant,
        ip,
        &LoginRequest {
            email: &req.email,
            password: &req.password,
            totp_code: req.totp_code.as_deref(),
            recovery_code: req.recovery_code.as_deref(),
        },
    )
    .await?;
    let mut resp = axum::Json(LoggedIn {
        csrf_token: done.csrf_token,
        expires_at: rfc3339(done.expires_at),
        user_id: done.user.id.0,
        email: done.user.email,
        role: done.role,
        msp: done.msp,
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&done.cookie, done.expires_at - now())?,
    );
    Ok(resp)
}

/// End this session (the cookie stops working at once).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "tenant", security(("session" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn logout(State(p): State<AppState>, a: TenantReader) -> Result<Response, ApiError> {
    users::logout(&p, &a).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0)?);
    Ok(resp)
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub role: Role,
    /// `token`, `session` or `msp`.
    pub via: String,
    /// The token's name, or the user's email.
    pub name: String,
    pub user_id: Option<Uuid>,
}

/// Who the caller is here, and with which role.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "tenant", security(("tenant" = []), ("session" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(a: TenantReader) -> axum::Json<Me> {
    let (via, name, user_id) = match &a.credential {
        Credential::Token(t) => ("token", t.name.clone(), None),
        Credential::Session {
            user, grant: None, ..
        } => ("session", user.email.clone(), Some(user.id.0)),
        Credential::Session { user, .. } => ("msp", user.email.clone(), Some(user.id.0)),
    };
    axum::Json(Me {
        role: a.role,
        via: via.into(),
        name,
        user_id,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The one-time setup token of the invitation.
    pub token: String,
    pub password: String,
}

/// Set the password of an invited user with its one-time setup token.
#[utoipa::path(post, path = "/api/v1/auth/setup", tag = "tenant",
    request_body = Setup,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn setup(
    State(p): State<AppState>,
    TenantHost(tenant): TenantHost,
    Json(req): Json<Setup>,
) -> Result<StatusCode, ApiError> {
    users::redeem_setup(&p, &tenant, &req.token, &req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32 secret for the authenticator. Shown once.
    pub secret: String,
    pub otpauth_uri: String,
}

/// Start TOTP for the logged-in user; confirm with a code to turn it on.
#[utoipa::path(post, path = "/api/v1/auth/totp", tag = "tenant", security(("session" = [])),
    responses((status = 200, body = TotpSetup), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn totp_begin(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<TotpSetup>, ApiError> {
    let s = users::totp_begin(&p, &a).await?;
    Ok(axum::Json(TotpSetup {
        secret: s.secret_base32,
        otpauth_uri: s.otpauth_uri,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each works once instead of a TOTP code. Shown once: store them safely.
    pub recovery_codes: Vec<String>,
}

/// Confirm TOTP with a code: it is required at every login from now on.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "tenant", security(("session" = [])),
    request_body = TotpConfirm,
    responses((status = 200, body = RecoveryCodes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn totp_confirm(
    State(p): State<AppState>,
    a: TenantReader,
    Json(req): Json<TotpConfirm>,
) -> Result<axum::Json<RecoveryCodes>, ApiError> {
    let recovery_codes = users::totp_confirm(&p, &a, &req.code).await?;
    Ok(axum::Json(RecoveryCodes { recovery_codes }))
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub role: Option<String>,
    /// `active`, `invited` (setup token not used yet) or `locked`.
    pub state: String,
    pub totp: bool,
    pub created_at: String,
}

fn user_view(u: &UserRow) -> UserView {
    let state = if u.locked_until.is_some_and(|t| t > now()) {
        "locked"
    } else if u.password_hash.is_none() {
        "invited"
    } else {
        "active"
    };
    UserView {
        id: u.id.0,
        email: u.email.clone(),
        role: u.role.clone(),
        state: state.into(),
        totp: u.totp_enabled,
        created_at: rfc3339(u.created_at),
    }
}

/// This tenant's users.
#[utoipa::path(get, path = "/api/v1/users", tag = "tenant", security(("tenant" = []), ("session" = [])),
    responses((status = 200, body = Vec<UserView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(p): State<AppState>,
    a: TenantAdmin,
) -> Result<axum::Json<Vec<UserView>>, ApiError> {
    let rows = p.store.list_users(Some(a.tenant.id)).await?;
    Ok(axum::Json(rows.iter().map(user_view).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub role: Role,
    /// An initial password; without one, a one-time setup token is returned
    /// for the user to set it (`POST /api/v1/auth/setup`).
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    /// Give this to the user. Shown once.
    pub setup_token: Option<String>,
}

/// Create or invite a user (only owners create owners).
#[utoipa::path(post, path = "/api/v1/users", tag = "tenant", security(("tenant" = []), ("session" = [])),
    request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<CreatedUser>), ApiError> {
    let c =
        users::create_tenant_user(&p, &a, &req.email, req.role, req.password.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedUser {
            user: user_view(&c.user),
            setup_token: c.setup_token,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

/// Change a user's role (only owners change owners or make them).
#[utoipa::path(put, path = "/api/v1/users/{id}/role", tag = "tenant", security(("tenant" = []), ("session" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = SetRole,
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_role(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<SetRole>,
) -> Result<axum::Json<UserView>, ApiError> {
    let u = users::set_role(&p, &a, id, req.role).await?;
    Ok(axum::Json(user_view(&u)))
}

#[derive(Serialize, ToSchema)]
pub struct Offboarded {
    pub sessions_revoked: u64,
    pub tokens_revoked: u64,
}

/// Offboard a user: its sessions and every token it created are revoked at once.
#[utoipa::path(post, path = "/api/v1/users/{id}/offboard", tag = "tenant", security(("tenant" = []), ("session" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = Offboarded), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn offboard_user(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Offboarded>, ApiError> {
    let n = users::offboard_tenant_user(&p, &a, id).await?;
    Ok(axum::Json(Offboarded {
        sessions_revoked: n.sessions,
        tokens_revoked: n.tokens,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The user who minted it (none: the CLI).
    pub created_by: Option<Uuid>,
}

fn token_view(t: &ApiToken) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name.clone(),
        role: t.role.clone(),
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        revoked_at: t.revoked_at.map(rfc3339),
        created_by: t.created_by.map(|u| u.0),
    }
}

/// This tenant's API tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tenant", security(("tenant" = []), ("session" = [])),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_tokens(
    State(p): State<AppState>,
    a: TenantAdmin,
) -> Result<axum::Json<Vec<TokenView>>, ApiError> {
    let rows = p.store.list_api_tokens(a.tenant.id).await?;
    Ok(axum::Json(rows.iter().map(token_view).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// At most the caller's own role.
    pub role: Role,
    /// Seconds until it expires: 60 to 31536000, default 90 days.
    pub ttl_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    /// `authorization: bearer <token>`. Shown once.
    pub token: String,
    pub role: String,
    pub expires_at: Option<String>,
}

/// Mint an API token of this tenant, scoped to a role and an expiry.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tenant", security(("tenant" = []), ("session" = [])),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_token(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let t = users::mint_token(&p, &a, &req.name, req.role, req.ttl_secs).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            id: t.row.id,
            token: t.secret,
            role: t.row.role,
            expires_at: t.row.expires_at.map(rfc3339),
        }),
    ))
}

/// Revoke an API token: its next request fails.
#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "tenant", security(("tenant" = []), ("session" = [])),
    params(("id" = Uuid, Path, description = "API token id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    users::revoke_token(&p, &a, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn grant_view(g: &MspGrantRow) -> GrantView {
    GrantView {
        id: g.id,
        user_id: g.user_id.0,
        role: g.role.clone(),
        created_by: g.created_by.clone(),
        created_at: rfc3339(g.created_at),
        expires_at: g.expires_at.map(rfc3339),
        revoked_at: g.revoked_at.map(rfc3339),
    }
}

/// The MSP grants of this tenant.
#[utoipa::path(get, path = "/api/v1/msp-grants", tag = "tenant", security(("tenant" = []), ("session" = [])),
    responses((status = 200, body = Vec<GrantView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_grants(
    State(p): State<AppState>,
    a: TenantOwner,
) -> Result<axum::Json<Vec<GrantView>>, ApiError> {
    let rows = p.store.list_msp_grants(a.tenant.id).await?;
    Ok(axum::Json(rows.iter().map(grant_view).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// The MSP operator user's email (created by the portal's operator).
    pub email: String,
    /// At most `admin`.
    pub role: Role,
    /// Seconds until the grant lapses (60 to 31536000); none: until revoked.
    pub ttl_secs: Option<i64>,
}

/// Grant an MSP operator user a role in this tenant.
#[utoipa::path(post, path = "/api/v1/msp-grants", tag = "tenant", security(("tenant" = []), ("session" = [])),
    request_body = CreateGrant,
    responses((status = 201, body = GrantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_grant(
    State(p): State<AppState>,
    a: TenantOwner,
    Json(req): Json<CreateGrant>,
) -> Result<(StatusCode, axum::Json<GrantView>), ApiError> {
    let g = users::grant_msp(&p, &a, &req.email, req.role, req.ttl_secs).await?;
    Ok((StatusCode::CREATED, axum::Json(grant_view(&g))))
}

/// Revoke an MSP grant: the MSP user's sessions and tokens here end with it.
#[utoipa::path(post, path = "/api/v1/msp-grants/{id}/revoke", tag = "tenant", security(("tenant" = []), ("session" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_grant(
    State(p): State<AppState>,
    a: TenantOwner,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    users::revoke_grant(&p, &a, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
