//! Users and access: local accounts, login with a second factor, sessions,
//! scoped API tokens, offboarding and MSP grants. Called by the routes
//! (`routes/users.rs`) and the CLI, like `service.rs`.
//!
//! Every change and every login (success, failure, lockout) is recorded
//! with [`audit::record`]. A user's role is read at every request (from
//! the account, or for an MSP user from the tenant's live grant), so a role
//! change, an offboarding or a revoked grant takes effect at the next
//! request, not at the next login.

use std::net::IpAddr;
use std::time::Instant;

use axum::http::StatusCode;
use rampart_store::*;
use uuid::Uuid;

use crate::access::{self, LoginLimiter, Role};
use crate::audit::{self, Actor};
use crate::error::ApiError;
use crate::extract::{Credential, MinRole, TenantCaller};
use crate::service::{now, MintedToken, Portal, ServiceError};

/// Emails are bounded (RFC 5321's 254) before any lookup.
pub const MAX_EMAIL_BYTES: usize = 254;
/// A login or setup body's codes and tokens are bounded before use.
const MAX_CODE_BYTES: usize = 64;
/// Tokens minted through the API expire; this is the default and the most.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 90 * 86_400;
pub const MAX_TOKEN_TTL_SECS: i64 = 365 * 86_400;

/// The in-memory state of access control: the per-IP login limiter.
pub struct Access {
    pub limiter: LoginLimiter,
}

impl Access {
    pub fn new(config: &crate::config::Config) -> Self {
        Access {
            limiter: LoginLimiter::new(config.login_ip_burst, config.login_ip_per_min),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    Invalid(String),
    #[error("email, password or second factor is wrong: check them and retry")]
    BadCredentials,
    #[error("this account needs a second factor: send totp_code or recovery_code")]
    SecondFactor,
    #[error("account locked after repeated failed logins: retry in {0} seconds or ask an admin")]
    Locked(u64),
    #[error("too many login attempts from this address: retry in {0} seconds")]
    RateLimited(u64),
    #[error("{0}")]
    Forbidden(String),
    #[error("this needs a logged-in user, not an api token: log in at /api/v1/auth/login")]
    SessionRequired,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        AccessError::Service(ServiceError::Store(e))
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let msg = e.to_string();
        match e {
            AccessError::Invalid(m) => ApiError::bad_request("invalid", m),
            AccessError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", msg)
            }
            AccessError::SecondFactor => {
                ApiError::new(StatusCode::UNAUTHORIZED, "second_factor_required", msg)
            }
            AccessError::Locked(s) => ApiError::too_many("account_locked", msg, s),
            AccessError::RateLimited(s) => ApiError::too_many("rate_limited", msg, s),
            AccessError::Forbidden(m) => ApiError::forbidden("insufficient_role", m),
            AccessError::SessionRequired => ApiError::forbidden("session_required", msg),
            AccessError::NotFound(what) => ApiError::not_found(what),
            AccessError::Conflict(m) => ApiError::conflict(m),
            AccessError::Service(s) => s.into(),
        }
    }
}

type Result<T, E = AccessError> = std::result::Result<T, E>;

/// Lowercased and checked: an address, bounded, no spaces or controls.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= MAX_EMAIL_BYTES
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(AccessError::Invalid(format!(
            "email must be an address like ana@example.net of at most {MAX_EMAIL_BYTES} bytes"
        )));
    }
    Ok(e)
}

async fn hash_password(pw: &str) -> Result<String> {
    access::check_password_policy(pw).map_err(AccessError::Invalid)?;
    let pw = zeroize::Zeroizing::new(pw.to_string());
    tokio::task::spawn_blocking(move || access::hash_password(&pw))
        .await
        .map_err(|e| ServiceError::Crypto(format!("hash task failed: {e}")))?
        .map_err(|e| AccessError::Service(ServiceError::Crypto(e)))
}

async fn verify_password(phc: Option<String>, pw: &str) -> Result<bool> {
    let pw = zeroize::Zeroizing::new(pw.to_string());
    tokio::task::spawn_blocking(move || {
        let phc = phc.as_deref().unwrap_or_else(|| access::dummy_hash());
        access::verify_password(phc, &pw)
    })
    .await
    .map_err(|e| AccessError::Service(ServiceError::Crypto(format!("verify task failed: {e}"))))
}

fn user_target(u: &UserRow) -> String {
    format!("user:{}", u.id)
}

/// Adds what an audit detail may say of an email. The audit log is clear
/// and outlives a shredded tenant, so it keeps no tenant content: a
/// tenant user's email is left out (the target names the user by id), an
/// email with no account here is sealed under the tenant's secrets key,
/// and an MSP user's (the MSP's own staff) stays clear.
async fn note_email(
    p: &Portal,
    tenant: TenantId,
    user: Option<&UserRow>,
    email: &str,
    detail: &mut serde_json::Value,
) -> Result<()> {
    match user {
        Some(u) if u.tenant_id.is_none() => detail["email"] = email.into(),
        Some(_) => {}
        None => {
            use base64::Engine;
            let sealed =
                p.secrets(tenant)
                    .await?
                    .wrap_secret(tenant, "audit/email", email.as_bytes());
            detail["email_sealed"] = base64::engine::general_purpose::STANDARD
                .encode(sealed)
                .into();
        }
    }
    Ok(())
}

/// Who the caller is in the audit log.
impl<R: MinRole> TenantCaller<R> {
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::Token(t) => Actor::Tenant(t.name.clone()),
            Credential::Session {
                user, grant: None, ..
            } => Actor::User(user.id),
            Credential::Session { user, .. } => Actor::Msp(user.email.clone()),
        }
    }

    /// The session behind the call, for the routes only a person may use.
    pub fn session(&self) -> Result<(&SessionRow, &UserRow)> {
        match &self.credential {
            Credential::Session { session, user, .. } => Ok((session, user)),
            Credential::Token(_) => Err(AccessError::SessionRequired),
        }
    }
}

/// A user created: the row and, when no password was given, the one-time
/// setup token (shown once).
pub struct CreatedUser {
    pub user: UserRow,
    pub setup_token: Option<String>,
}

/// Creates a tenant user (`tenant` given, with a role) or an MSP operator
/// user (`tenant` `None`, no role), with an initial password or a setup
/// token the user redeems at `POST /api/v1/auth/setup`.
pub async fn create_user(
    p: &Portal,
    actor: &Actor,
    tenant: Option<TenantId>,
    email: &str,
    role: Option<Role>,
    password: Option<&str>,
) -> Result<CreatedUser> {
    let email = normalize_email(email)?;
    let now = now();
    let (password_hash, setup) = match password {
        Some(pw) => (Some(hash_password(pw).await?), None),
        None if tenant.is_none() => {
            return Err(AccessError::Invalid(
                "an msp user needs an initial password: pass --password-stdin".into(),
            ))
        }
        None => (None, Some(access::random_token(32))),
    };
    let ttl = i64::try_from(p.config.user_setup_ttl_secs).unwrap_or(86_400);
    let user = UserRow {
        id: UserId(Uuid::new_v4()),
        tenant_id: tenant,
        email,
        role: role.map(|r| r.as_str().to_string()),
        password_hash,
        setup_token_hash: setup
            .as_ref()
            .map(|s| rampart_proto::sha256_hex(s.as_bytes())),
        setup_expires_at: setup.as_ref().map(|_| now + ttl),
        totp_secret_wrapped: None,
        totp_enabled: false,
        totp_last_step: 0,
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        offboarded_at: None,
    };
    p.store.create_user(tenant, &user).await?;
    let action = if tenant.is_some() {
        "user.create"
    } else {
        "msp_user.create"
    };
    let mut detail = serde_json::json!({
        "role": user.role,
        "setup": if setup.is_some() { "token" } else { "password" },
    });
    if tenant.is_none() {
        detail["email"] = user.email.clone().into();
    }
    audit::record(p, tenant, actor, action, &user_target(&user), detail).await?;
    Ok(CreatedUser {
        user,
        setup_token: setup,
    })
}

/// Sets the password of the invited user holding this setup token.
pub async fn redeem_setup(p: &Portal, tenant: &Tenant, token: &str, password: &str) -> Result<()> {
    let bad = || {
        AccessError::Invalid(
            "setup token is unknown, used or expired: ask an admin for a new invitation".into(),
        )
    };
    if token.len() > MAX_CODE_BYTES {
        return Err(bad());
    }
    let hash = rampart_proto::sha256_hex(token.as_bytes());
    let user = p
        .store
        .user_by_setup_token(Some(tenant.id), &hash, now())
        .await?
        .ok_or_else(bad)?;
    let phc = hash_password(password).await?;
    let update = UserUpdate {
        password_hash: Some(phc),
        ..UserUpdate::default()
    };
    if !p
        .store
        .update_user(Some(tenant.id), user.id, &update)
        .await?
    {
        return Err(bad());
    }
    let actor = Actor::User(user.id);
    audit::record(
        p,
        Some(tenant.id),
        &actor,
        "user.setup",
        &user_target(&user),
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// What a login asks for.
pub struct LoginRequest<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub totp_code: Option<&'a str>,
    pub recovery_code: Option<&'a str>,
}

/// A session opened: the cookie value and CSRF token (both shown once).
pub struct LoggedIn {
    pub cookie: String,
    pub csrf_token: String,
    pub expires_at: i64,
    pub user: UserRow,
    pub role: Role,
    pub msp: bool,
}

async fn login_failure(
    p: &Portal,
    tenant: &Tenant,
    user: Option<&UserRow>,
    email: &str,
    reason: &str,
) -> Result<AccessError> {
    let now = now();
    let target = user
        .map(user_target)
        // No account: the email itself goes sealed into the detail.
        .unwrap_or_else(|| "user:unknown".to_string());
    let mut err = AccessError::BadCredentials;
    let mut detail = serde_json::json!({"reason": reason});
    note_email(p, tenant.id, user, email, &mut detail).await?;
    if let Some(u) = user {
        let lock = i64::try_from(p.config.login_lockout_secs).unwrap_or(900);
        let f = p
            .store
            .login_failed(u.tenant_id, u.id, now, p.config.login_max_failures, lock)
            .await?;
        detail["failures"] = f.failures.into();
        if let Some(until) = f.locked_until {
            let mut lock_detail = serde_json::json!({"locked_until": until});
            note_email(p, tenant.id, user, email, &mut lock_detail).await?;
            audit::record(
                p,
                Some(tenant.id),
                &Actor::Portal,
                "login.lockout",
                &target,
                lock_detail,
            )
            .await?;
            tracing::warn!(tenant = %tenant.name, user = %u.id, "account locked after failed logins");
            err = AccessError::Locked(lock as u64);
        }
    }
    audit::record(
        p,
        Some(tenant.id),
        &Actor::Portal,
        "login.failure",
        &target,
        detail,
    )
    .await?;
    Ok(err)
}

/// Logs a user in on `tenant`'s domain: the tenant's own user, or an MSP
/// user with a live grant from this tenant. The client IP's bucket is
/// taken first; a locked account is refused before its password is
/// checked; an unknown email costs one argon2 verification like a wrong
/// password.
pub async fn login(
    p: &Portal,
    tenant: &Tenant,
    ip: IpAddr,
    req: &LoginRequest<'_>,
) -> Result<LoggedIn> {
    p.access
        .limiter
        .check(ip, Instant::now())
        .map_err(AccessError::RateLimited)?;
    let now = now();
    let email = match normalize_email(req.email) {
        Ok(e) => e,
        Err(_) => return Err(AccessError::BadCredentials),
    };
    if req.password.len() > access::MAX_PASSWORD_BYTES {
        return Err(login_failure(p, tenant, None, &email, "password_too_long").await?);
    }
    let user = match p.store.user_by_email(Some(tenant.id), &email).await? {
        Some(u) => Some(u),
        None => p.store.user_by_email(None, &email).await?,
    };
    if let Some(u) = &user {
        if let Some(until) = u.locked_until.filter(|t| *t > now) {
            let mut detail = serde_json::json!({"reason": "locked"});
            note_email(p, tenant.id, Some(u), &email, &mut detail).await?;
            audit::record(
                p,
                Some(tenant.id),
                &Actor::Portal,
                "login.failure",
                &user_target(u),
                detail,
            )
            .await?;
            return Err(AccessError::Locked((until - now) as u64));
        }
    }
    let ok = verify_password(
        user.as_ref().and_then(|u| u.password_hash.clone()),
        req.password,
    )
    .await?;
    let user = match user {
        Some(u) if ok => u,
        other => return Err(login_failure(p, tenant, other.as_ref(), &email, "password").await?),
    };
    let (role, msp) = if user.tenant_id.is_some() {
        (
            user.role
                .as_deref()
                .map(Role::from_stored)
                .unwrap_or(Role::ReadOnly),
            false,
        )
    } else {
        match p.store.active_msp_grant(tenant.id, user.id, now).await? {
            Some(g) => (Role::from_stored(&g.role), true),
            // The password was right, but this tenant granted nothing:
            // the same answer as a wrong one.
            None => return Err(login_failure(p, tenant, None, &email, "no_grant").await?),
        }
    };
    if user.totp_enabled {
        let second = match (req.totp_code, req.recovery_code) {
            (Some(code), _) if code.len() <= MAX_CODE_BYTES => {
                let secret = unwrap_totp(p, &user).await?;
                match access::check_totp(&secret, code, now) {
                    Some(step) => p.store.use_totp_step(user.tenant_id, user.id, step).await?,
                    None => false,
                }
            }
            (None, Some(code)) if code.len() <= MAX_CODE_BYTES => {
                match access::recovery_code_hash(code) {
                    Some(h) => {
                        let used = p
                            .store
                            .use_recovery_code(user.tenant_id, user.id, &h, now)
                            .await?;
                        if used {
                            let mut detail = serde_json::json!({});
                            note_email(p, tenant.id, Some(&user), &email, &mut detail).await?;
                            audit::record(
                                p,
                                Some(tenant.id),
                                &Actor::Portal,
                                "login.recovery_code",
                                &user_target(&user),
                                detail,
                            )
                            .await?;
                        }
                        used
                    }
                    None => false,
                }
            }
            (None, None) => return Err(AccessError::SecondFactor),
            _ => false,
        };
        if !second {
            return Err(login_failure(p, tenant, Some(&user), &email, "second_factor").await?);
        }
    }
    p.store.login_succeeded(user.tenant_id, user.id).await?;
    let cookie = access::random_token(32);
    let csrf_token = access::random_token(32);
    let max = i64::try_from(p.config.session_max_secs).unwrap_or(43_200);
    let session = SessionRow {
        id_hash: rampart_proto::sha256_hex(cookie.as_bytes()),
        tenant_id: tenant.id,
        user_id: user.id,
        csrf_hash: rampart_proto::sha256_hex(csrf_token.as_bytes()),
        created_at: now,
        last_seen: now,
        expires_at: now + max,
        revoked_at: None,
    };
    p.store.create_session(tenant.id, &session).await?;
    let actor = if msp {
        Actor::Msp(user.email.clone())
    } else {
        Actor::User(user.id)
    };
    let detail = serde_json::json!({"role": role, "second_factor": user.totp_enabled, "msp": msp});
    audit::record(
        p,
        Some(tenant.id),
        &actor,
        "login.success",
        &user_target(&user),
        detail,
    )
    .await?;
    Ok(LoggedIn {
        cookie,
        csrf_token,
        expires_at: session.expires_at,
        user,
        role,
        msp,
    })
}

/// Ends the caller's session.
pub async fn logout<R: MinRole>(p: &Portal, c: &TenantCaller<R>) -> Result<()> {
    let (session, user) = c.session()?;
    p.store
        .revoke_session(c.tenant.id, &session.id_hash, now())
        .await?;
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "logout",
        &user_target(user),
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

fn totp_purpose(u: &UserRow) -> String {
    format!("user/{}/totp", u.id)
}

fn msp_totp_aad(u: &UserRow) -> Vec<u8> {
    format!("rampart/portal/user/{}/totp/v1", u.id).into_bytes()
}

/// A tenant user's TOTP secret is wrapped under the tenant's key (and so
/// shredded with it); an MSP user's, who has no tenant, under the master key.
async fn wrap_totp(p: &Portal, u: &UserRow, secret: &[u8]) -> Result<Vec<u8>> {
    Ok(match u.tenant_id {
        Some(t) => p.secrets(t).await?.wrap_secret(t, &totp_purpose(u), secret),
        None => p.master.wrap(secret, &msp_totp_aad(u)),
    })
}

async fn unwrap_totp(p: &Portal, u: &UserRow) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let blob = u.totp_secret_wrapped.as_deref().ok_or_else(|| {
        AccessError::Invalid("totp is not set up: start at /api/v1/auth/totp".into())
    })?;
    Ok(match u.tenant_id {
        Some(t) => p
            .secrets(t)
            .await?
            .unwrap_secret(t, &totp_purpose(u), blob)?,
        None => p.master.unwrap(blob, &msp_totp_aad(u))?,
    })
}

/// A TOTP secret being set up: shown once, to put in an authenticator.
pub struct TotpSetup {
    pub secret_base32: String,
    pub otpauth_uri: String,
}

/// Starts TOTP for the logged-in user: a new secret, stored wrapped, not
/// yet required until a code confirms it.
pub async fn totp_begin<R: MinRole>(p: &Portal, c: &TenantCaller<R>) -> Result<TotpSetup> {
    let (_, user) = c.session()?;
    if user.totp_enabled {
        return Err(AccessError::Conflict(
            "totp is already on for this account: ask an admin to reset it to start over".into(),
        ));
    }
    let mut secret = zeroize::Zeroizing::new([0u8; access::TOTP_SECRET_BYTES]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, secret.as_mut());
    let wrapped = wrap_totp(p, user, secret.as_ref()).await?;
    let update = UserUpdate {
        totp_secret_wrapped: Some(Some(wrapped)),
        ..UserUpdate::default()
    };
    if !p
        .store
        .update_user(user.tenant_id, user.id, &update)
        .await?
    {
        return Err(AccessError::NotFound(format!("user {}", user.id)));
    }
    Ok(TotpSetup {
        secret_base32: access::base32(secret.as_ref()),
        otpauth_uri: access::otpauth_uri(
            &format!("Rampart {}", c.tenant.name),
            &user.email,
            secret.as_ref(),
        ),
    })
}

/// Confirms the pending TOTP secret with a code, turns TOTP on and returns
/// fresh recovery codes (shown once, stored as SHA-256).
pub async fn totp_confirm<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    code: &str,
) -> Result<Vec<String>> {
    let (_, user) = c.session()?;
    // Re-read: the session's copy predates `totp_begin`.
    let user = p
        .store
        .get_user(user.tenant_id, user.id)
        .await?
        .ok_or_else(|| AccessError::NotFound(format!("user {}", user.id)))?;
    if user.totp_enabled {
        return Err(AccessError::Conflict(
            "totp is already on for this account".into(),
        ));
    }
    let secret = unwrap_totp(p, &user).await?;
    let step = (code.len() <= MAX_CODE_BYTES)
        .then(|| access::check_totp(&secret, code, now()))
        .flatten()
        .ok_or_else(|| {
            AccessError::Invalid(
                "totp code is wrong: check the authenticator's clock and retry".into(),
            )
        })?;
    if !p.store.use_totp_step(user.tenant_id, user.id, step).await? {
        return Err(AccessError::Invalid(
            "totp code was already used: wait for the next one".into(),
        ));
    }
    let codes: Vec<String> = (0..access::RECOVERY_CODES)
        .map(|_| access::new_recovery_code())
        .collect();
    let hashes = codes
        .iter()
        .filter_map(|c| access::recovery_code_hash(c))
        .collect();
    let update = UserUpdate {
        totp_enabled: Some(true),
        recovery_code_hashes: Some(hashes),
        ..UserUpdate::default()
    };
    p.store
        .update_user(user.tenant_id, user.id, &update)
        .await?;
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "user.totp_enable",
        &user_target(&user),
        serde_json::json!({"recovery_codes": codes.len()}),
    )
    .await?;
    Ok(codes)
}

/// Only an owner may create, change or offboard an owner, or make one.
fn check_may_manage<R: MinRole>(
    c: &TenantCaller<R>,
    target: Option<Role>,
    new: Option<Role>,
) -> Result<()> {
    if (target == Some(Role::Owner) || new == Some(Role::Owner)) && c.role < Role::Owner {
        return Err(AccessError::Forbidden(
            "managing owners needs the owner role: ask an owner of this tenant".into(),
        ));
    }
    Ok(())
}

/// Creates a user of the caller's tenant.
pub async fn create_tenant_user<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    email: &str,
    role: Role,
    password: Option<&str>,
) -> Result<CreatedUser> {
    check_may_manage(c, None, Some(role))?;
    create_user(
        p,
        &c.actor(),
        Some(c.tenant.id),
        email,
        Some(role),
        password,
    )
    .await
}

async fn tenant_user<R: MinRole>(p: &Portal, c: &TenantCaller<R>, id: Uuid) -> Result<UserRow> {
    p.store
        .get_user(Some(c.tenant.id), UserId(id))
        .await?
        .filter(|u| u.offboarded_at.is_none())
        .ok_or_else(|| AccessError::NotFound(format!("user {id}")))
}

/// Changes a user's role.
pub async fn set_role<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    id: Uuid,
    role: Role,
) -> Result<UserRow> {
    let user = tenant_user(p, c, id).await?;
    check_may_manage(c, user.role.as_deref().map(Role::from_stored), Some(role))?;
    if c.user().is_some_and(|u| u.id == user.id) {
        return Err(AccessError::Forbidden(
            "you cannot change your own role: ask another owner or admin".into(),
        ));
    }
    let update = UserUpdate {
        role: Some(role.as_str().to_string()),
        ..UserUpdate::default()
    };
    if !p
        .store
        .update_user(Some(c.tenant.id), user.id, &update)
        .await?
    {
        return Err(AccessError::NotFound(format!("user {id}")));
    }
    let detail = serde_json::json!({"from": user.role, "to": role});
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "user.role",
        &user_target(&user),
        detail,
    )
    .await?;
    Ok(UserRow {
        role: Some(role.as_str().to_string()),
        ..user
    })
}

/// Offboards a user: every session and every token it created end in the
/// same transaction, so its very next request fails.
pub async fn offboard(
    p: &Portal,
    actor: &Actor,
    tenant: Option<TenantId>,
    user: &UserRow,
) -> Result<Revoked> {
    let n = p
        .store
        .offboard_user(tenant, user.id, now())
        .await?
        .ok_or_else(|| AccessError::NotFound(format!("user {}", user.id)))?;
    let mut detail = serde_json::json!({
        "sessions_revoked": n.sessions,
        "tokens_revoked": n.tokens,
        "grants_revoked": n.grants,
    });
    if user.tenant_id.is_none() {
        detail["email"] = user.email.clone().into();
    }
    audit::record(
        p,
        tenant,
        actor,
        "user.offboard",
        &user_target(user),
        detail,
    )
    .await?;
    tracing::info!(user = %user.id, sessions = n.sessions, tokens = n.tokens, "user offboarded");
    Ok(n)
}

/// Offboards a user of the caller's tenant (owners only by owners; not oneself).
pub async fn offboard_tenant_user<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    id: Uuid,
) -> Result<Revoked> {
    let user = tenant_user(p, c, id).await?;
    check_may_manage(c, user.role.as_deref().map(Role::from_stored), None)?;
    if c.user().is_some_and(|u| u.id == user.id) {
        return Err(AccessError::Forbidden(
            "you cannot offboard yourself: ask another owner or admin".into(),
        ));
    }
    offboard(p, &c.actor(), Some(c.tenant.id), &user).await
}

/// Mints a tenant API token for the caller: its role at most the caller's,
/// an expiry (default 90 days, at most a year), recorded as created by the
/// caller's user so offboarding revokes it.
pub async fn mint_token<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    name: &str,
    role: Role,
    ttl_secs: Option<i64>,
) -> Result<MintedToken> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(AccessError::Invalid("name must be 1 to 100 bytes".into()));
    }
    if role > c.role {
        return Err(AccessError::Forbidden(format!(
            "a token's role can be at most the caller's ({}): choose {} or below",
            c.role, c.role
        )));
    }
    let ttl = ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
    if !(60..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(AccessError::Invalid(format!(
            "ttl_secs must be between 60 and {MAX_TOKEN_TTL_SECS} (a year)"
        )));
    }
    Ok(p.mint_api_token_by(
        &c.actor(),
        Some(c.tenant.id),
        name,
        role.as_str(),
        Some(ttl),
        c.user().map(|u| u.id),
    )
    .await?)
}

/// Revokes one of the tenant's API tokens.
pub async fn revoke_token<R: MinRole>(p: &Portal, c: &TenantCaller<R>, id: Uuid) -> Result<()> {
    if !p.store.revoke_api_token(c.tenant.id, id, now()).await? {
        return Err(AccessError::NotFound(format!("api token {id}")));
    }
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "api_token.revoke",
        &format!("api_token:{id}"),
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// The highest role a tenant can grant an MSP: grants themselves and
/// owners stay the tenant's own.
pub const MAX_GRANT_ROLE: Role = Role::Admin;

/// Grants an MSP operator user a role in the caller's tenant.
pub async fn grant_msp<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    email: &str,
    role: Role,
    ttl_secs: Option<i64>,
) -> Result<MspGrantRow> {
    if role > MAX_GRANT_ROLE {
        return Err(AccessError::Invalid(format!(
            "an msp can be granted at most {MAX_GRANT_ROLE}: owners stay the tenant's own"
        )));
    }
    if ttl_secs.is_some_and(|t| !(60..=MAX_TOKEN_TTL_SECS).contains(&t)) {
        return Err(AccessError::Invalid(format!(
            "ttl_secs must be between 60 and {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let email = normalize_email(email)?;
    let user = p
        .store
        .user_by_email(None, &email)
        .await?
        .ok_or_else(|| AccessError::NotFound(format!("msp user {email}")))?;
    let now = now();
    let grant = MspGrantRow {
        id: Uuid::new_v4(),
        tenant_id: c.tenant.id,
        user_id: user.id,
        role: role.as_str().to_string(),
        created_by: c.actor().to_string(),
        created_at: now,
        expires_at: ttl_secs.map(|t| now + t),
        revoked_at: None,
    };
    p.store.create_msp_grant(c.tenant.id, &grant).await?;
    let detail = serde_json::json!({"email": email, "role": role, "expires_at": grant.expires_at});
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "msp_grant.create",
        &format!("msp_grant:{}", grant.id),
        detail,
    )
    .await?;
    Ok(grant)
}

/// Revokes a grant; the MSP user's sessions and tokens in this tenant end
/// with it.
pub async fn revoke_grant<R: MinRole>(
    p: &Portal,
    c: &TenantCaller<R>,
    id: Uuid,
) -> Result<Revoked> {
    let (grant, n) = p
        .store
        .revoke_msp_grant(c.tenant.id, id, now())
        .await?
        .ok_or_else(|| AccessError::NotFound(format!("msp grant {id}")))?;
    let detail = serde_json::json!({
        "user": grant.user_id,
        "sessions_revoked": n.sessions,
        "tokens_revoked": n.tokens,
    });
    audit::record(
        p,
        Some(c.tenant.id),
        &c.actor(),
        "msp_grant.revoke",
        &format!("msp_grant:{id}"),
        detail,
    )
    .await?;
    Ok(n)
}
