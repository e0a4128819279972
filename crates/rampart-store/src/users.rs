//! Rows of users and access (migration 0009): local accounts, sessions and
//! MSP grants. Plain data, like `model.rs`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::TenantId;

/// A user account: a tenant's user, or a portal-level MSP operator user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: UserId,
    /// `None` for an MSP operator user, who belongs to no tenant.
    pub tenant_id: Option<TenantId>,
    /// Lowercase.
    pub email: String,
    /// The tenant role (`owner`, `admin`, `analyst`, `read_only`); `None`
    /// for MSP users, whose role in a tenant is that tenant's grant.
    pub role: Option<String>,
    /// argon2id PHC string; `None` until the user sets a password.
    pub password_hash: Option<String>,
    /// SHA-256 hex of the one-time setup token, until it is used.
    pub setup_token_hash: Option<String>,
    pub setup_expires_at: Option<i64>,
    /// The TOTP secret, wrapped (never in the clear).
    pub totp_secret_wrapped: Option<Vec<u8>>,
    /// TOTP is required at login (set once a code confirmed the secret).
    pub totp_enabled: bool,
    /// The last TOTP time step accepted: a code is accepted once.
    pub totp_last_step: i64,
    pub failed_logins: u32,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub offboarded_at: Option<i64>,
}

/// A change to a user's credentials or role; `None` fields stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub role: Option<String>,
    /// Sets the password and clears the setup token.
    pub password_hash: Option<String>,
    /// Replaces the wrapped TOTP secret (`Some(None)` removes it and
    /// disables TOTP).
    pub totp_secret_wrapped: Option<Option<Vec<u8>>>,
    pub totp_enabled: Option<bool>,
    /// Replaces every recovery code with these SHA-256 hashes.
    pub recovery_code_hashes: Option<Vec<String>>,
}

/// What a failed login did to the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailure {
    /// Failures in a row, this one included (0 again once it locked).
    pub failures: u32,
    /// Set when this failure locked the account.
    pub locked_until: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 hex of the cookie value.
    pub id_hash: String,
    /// The tenant whose domain issued it; it works there only.
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// SHA-256 hex of the session's CSRF token.
    pub csrf_hash: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A tenant owner's grant of a role to an MSP operator user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MspGrantRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: String,
    /// The actor who granted it, as written in the audit log.
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What an offboarding or a grant revocation ended, in one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    pub sessions: u64,
    pub tokens: u64,
    pub grants: u64,
}
