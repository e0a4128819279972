//! Users, sessions, MSP grants and API token listing of the SQLite backend
//! (migration 0009). The `Store` impl in `sqlite.rs` calls these.
//!
//! A user scope is `Option<TenantId>`: `Some` matches `tenant_id = ?`,
//! `None` matches `tenant_id IS NULL` (MSP users). `SCOPE` is the one
//! condition every user query carries.
//!
//! A tenant user's email and password hash are sealed under the tenant's
//! data key (migration 0012, `cipher::SEALED`); the email is found by its
//! blind index `email_index`. An MSP user belongs to no tenant, so no
//! tenant key applies: its row stays clear (ARCHITECTURE.md › Crypto).

use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{opt_sealed_col, opt_uuid_col, row_seal, sealed_col, uuid_col, SqliteStore};
use crate::*;

/// `tenant_id IS ?` matches NULL with NULL and a value with itself.
const SCOPE: &str = "tenant_id IS ?";

fn scope(tenant: Option<TenantId>) -> Option<String> {
    tenant.map(|t| t.0.to_string())
}

/// The email's blind index: one associated data per tenant (not per row),
/// so equal emails give equal indexes within the tenant and only there.
fn email_index(sealer: &dyn TenantSealer, tenant: TenantId, email: &str) -> String {
    sealer.blind_index(
        &crate::cipher::aad(tenant, "users", &[], "email"),
        email.to_ascii_lowercase().as_bytes(),
    )
}

fn user_seal(sealer: &dyn TenantSealer, tenant: TenantId, id: UserId) -> RowSeal<'_> {
    RowSeal {
        sealer,
        tenant,
        table: "users",
        row: vec![id.0.to_string()],
    }
}

/// `sealer` is the scope's tenant's (`None` for the MSP scope): every query
/// is scoped, so a tenant row read here is that tenant's.
fn user_from(sealer: Option<&dyn TenantSealer>, row: &SqliteRow) -> Result<UserRow> {
    let tenant_id = opt_uuid_col(row, "tenant_id")?.map(TenantId);
    let (email, password_hash) = match (tenant_id, sealer) {
        (None, _) => (row.try_get("email")?, row.try_get("password_hash")?),
        (Some(t), Some(sealer)) => {
            let seal = row_seal(sealer, t, "users", row, &["id"])?;
            (
                sealed_col(&seal, row, "email")?,
                opt_sealed_col(&seal, row, "password_hash")?,
            )
        }
        (Some(t), None) => {
            return Err(StoreError::Corrupt(format!(
                "user of tenant {t} read in the msp scope"
            )))
        }
    };
    Ok(UserRow {
        id: UserId(uuid_col(row, "id")?),
        tenant_id,
        email,
        role: row.try_get("role")?,
        password_hash,
        setup_token_hash: row.try_get("setup_token_hash")?,
        setup_expires_at: row.try_get("setup_expires_at")?,
        totp_secret_wrapped: row.try_get("totp_secret_wrapped")?,
        totp_enabled: row.try_get::<i64, _>("totp_enabled")? != 0,
        totp_last_step: row.try_get("totp_last_step")?,
        failed_logins: u32::try_from(row.try_get::<i64, _>("failed_logins")?)
            .map_err(|e| StoreError::Corrupt(format!("failed_logins: {e}")))?,
        locked_until: row.try_get("locked_until")?,
        created_at: row.try_get("created_at")?,
        offboarded_at: row.try_get("offboarded_at")?,
    })
}

fn session_from(row: &SqliteRow) -> Result<SessionRow> {
    Ok(SessionRow {
        id_hash: row.try_get("id_hash")?,
        tenant_id: TenantId(uuid_col(row, "tenant_id")?),
        user_id: UserId(uuid_col(row, "user_id")?),
        csrf_hash: row.try_get("csrf_hash")?,
        created_at: row.try_get("created_at")?,
        last_seen: row.try_get("last_seen")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn grant_from(row: &SqliteRow) -> Result<MspGrantRow> {
    Ok(MspGrantRow {
        id: uuid_col(row, "id")?,
        tenant_id: TenantId(uuid_col(row, "tenant_id")?),
        user_id: UserId(uuid_col(row, "user_id")?),
        role: row.try_get("role")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(crate) fn api_token_from(row: &SqliteRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: uuid_col(row, "id")?,
        tenant_id: opt_uuid_col(row, "tenant_id")?.map(TenantId),
        name: row.try_get("name")?,
        token_hash: row.try_get("token_hash")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        created_by: opt_uuid_col(row, "created_by")?.map(UserId),
    })
}

impl SqliteStore {
    /// The scope's sealer: the tenant's, none for MSP users.
    async fn user_sealer(&self, tenant: Option<TenantId>) -> Result<Option<Arc<dyn TenantSealer>>> {
        match tenant {
            Some(t) => Ok(Some(self.sealer(t).await?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn users_create(&self, tenant: Option<TenantId>, u: &UserRow) -> Result<()> {
        // A tenant user's email and password hash go in sealed, with the
        // email's index; an MSP user's stay TEXT (`users_portal_email`).
        let mut q = sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, password_hash, setup_token_hash,
             setup_expires_at, totp_secret_wrapped, totp_enabled, totp_last_step, failed_logins,
             locked_until, created_at, offboarded_at, email_index, key_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.0.to_string())
        .bind(scope(tenant));
        let (index, version) = match tenant {
            Some(t) => {
                let sealer = self.sealer(t).await?;
                let seal = user_seal(sealer.as_ref(), t, u.id);
                q = q
                    .bind(seal.seal_str("email", &u.email)?)
                    .bind(&u.role)
                    .bind(seal.seal_opt("password_hash", u.password_hash.as_deref())?);
                (
                    Some(email_index(sealer.as_ref(), t, &u.email)),
                    Some(sealer.version()),
                )
            }
            None => {
                q = q
                    .bind(u.email.clone())
                    .bind(&u.role)
                    .bind(u.password_hash.clone());
                (None, None)
            }
        };
        q.bind(&u.setup_token_hash)
            .bind(u.setup_expires_at)
            .bind(&u.totp_secret_wrapped)
            .bind(i64::from(u.totp_enabled))
            .bind(u.totp_last_step)
            .bind(i64::from(u.failed_logins))
            .bind(u.locked_until)
            .bind(u.created_at)
            .bind(u.offboarded_at)
            .bind(index)
            .bind(version)
            .execute(self.pool())
            .await
            .map_err(|e| {
                if crate::sqlite::is_unique_violation(&e) {
                    StoreError::Conflict(format!("user {}", u.email))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    pub(crate) async fn users_get(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
    ) -> Result<Option<UserRow>> {
        let sealer = self.user_sealer(tenant).await?;
        sqlx::query(&format!("SELECT * FROM users WHERE {SCOPE} AND id = ?"))
            .bind(scope(tenant))
            .bind(id.0.to_string())
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(|r| user_from(sealer.as_deref(), r))
            .transpose()
    }

    pub(crate) async fn users_by_email(
        &self,
        tenant: Option<TenantId>,
        email: &str,
    ) -> Result<Option<UserRow>> {
        let sealer = self.user_sealer(tenant).await?;
        // A tenant's users by the email's blind index, MSP users by email.
        let (column, key) = match (tenant, &sealer) {
            (Some(t), Some(s)) => ("email_index", email_index(s.as_ref(), t, email)),
            _ => ("email", email.to_ascii_lowercase()),
        };
        sqlx::query(&format!(
            "SELECT * FROM users WHERE {SCOPE} AND {column} = ? AND offboarded_at IS NULL"
        ))
        .bind(scope(tenant))
        .bind(key)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(|r| user_from(sealer.as_deref(), r))
        .transpose()
    }

    pub(crate) async fn users_by_setup_token(
        &self,
        tenant: Option<TenantId>,
        hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>> {
        let sealer = self.user_sealer(tenant).await?;
        sqlx::query(&format!(
            "SELECT * FROM users WHERE {SCOPE} AND setup_token_hash = ? AND setup_expires_at > ?
             AND offboarded_at IS NULL"
        ))
        .bind(scope(tenant))
        .bind(hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(|r| user_from(sealer.as_deref(), r))
        .transpose()
    }

    pub(crate) async fn users_list(&self, tenant: Option<TenantId>) -> Result<Vec<UserRow>> {
        let sealer = self.user_sealer(tenant).await?;
        let mut users = sqlx::query(&format!(
            "SELECT * FROM users WHERE {SCOPE} AND offboarded_at IS NULL"
        ))
        .bind(scope(tenant))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| user_from(sealer.as_deref(), r))
        .collect::<Result<Vec<_>>>()?;
        // Sealed emails do not sort in SQL.
        users.sort_by(|a, b| a.email.cmp(&b.email).then(a.id.cmp(&b.id)));
        Ok(users)
    }

    pub(crate) async fn users_update(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        u: &UserUpdate,
    ) -> Result<bool> {
        let uid = id.0.to_string();
        // Before the transaction: a sealer may read the store on a miss.
        let sealer = match (&u.password_hash, tenant) {
            (Some(_), Some(t)) => Some(self.sealer(t).await?),
            _ => None,
        };
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let live = sqlx::query(&format!(
            "SELECT 1 FROM users WHERE {SCOPE} AND id = ? AND offboarded_at IS NULL"
        ))
        .bind(scope(tenant))
        .bind(&uid)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !live {
            return Ok(false);
        }
        if let Some(role) = &u.role {
            sqlx::query("UPDATE users SET role = ? WHERE id = ?")
                .bind(role)
                .bind(&uid)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(hash) = &u.password_hash {
            // key_version stays: it is the row's oldest, and this one is the newest.
            let q = sqlx::query(
                "UPDATE users SET password_hash = ?, setup_token_hash = NULL,
                 setup_expires_at = NULL WHERE id = ?",
            );
            let q = match (tenant, &sealer) {
                (Some(t), Some(s)) => {
                    q.bind(user_seal(s.as_ref(), t, id).seal_str("password_hash", hash)?)
                }
                _ => q.bind(hash.clone()),
            };
            q.bind(&uid).execute(&mut *tx).await?;
        }
        if let Some(secret) = &u.totp_secret_wrapped {
            sqlx::query(
                "UPDATE users SET totp_secret_wrapped = ?, totp_enabled = 0, totp_last_step = 0
                 WHERE id = ?",
            )
            .bind(secret)
            .bind(&uid)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(on) = u.totp_enabled {
            sqlx::query("UPDATE users SET totp_enabled = ? WHERE id = ?")
                .bind(i64::from(on))
                .bind(&uid)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(codes) = &u.recovery_code_hashes {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = ?")
                .bind(&uid)
                .execute(&mut *tx)
                .await?;
            for c in codes {
                sqlx::query(
                    "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&uid)
                .bind(c)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn users_login_failed(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
        max_failures: u32,
        lock_secs: i64,
    ) -> Result<LoginFailure> {
        let uid = id.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(&format!(
            "SELECT failed_logins FROM users WHERE {SCOPE} AND id = ?"
        ))
        .bind(scope(tenant))
        .bind(&uid)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        let failures = u32::try_from(row.try_get::<i64, _>("failed_logins")?)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let (stored, locked_until) = if failures >= max_failures.max(1) {
            (0, Some(now.saturating_add(lock_secs)))
        } else {
            (failures, None)
        };
        sqlx::query(
            "UPDATE users SET failed_logins = ?, locked_until = COALESCE(?, locked_until)
             WHERE id = ?",
        )
        .bind(i64::from(stored))
        .bind(locked_until)
        .bind(&uid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(LoginFailure {
            failures,
            locked_until,
        })
    }

    pub(crate) async fn users_login_succeeded(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE {SCOPE} AND id = ?"
        ))
        .bind(scope(tenant))
        .bind(id.0.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn users_use_totp_step(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        step: i64,
    ) -> Result<bool> {
        let n = sqlx::query(&format!(
            "UPDATE users SET totp_last_step = ? WHERE {SCOPE} AND id = ? AND totp_last_step < ?"
        ))
        .bind(step)
        .bind(scope(tenant))
        .bind(id.0.to_string())
        .bind(step)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn users_use_recovery_code(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        hash: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(&format!(
            "UPDATE recovery_codes SET used_at = ?
             WHERE user_id = (SELECT id FROM users WHERE {SCOPE} AND id = ?)
             AND code_hash = ? AND used_at IS NULL"
        ))
        .bind(now)
        .bind(scope(tenant))
        .bind(id.0.to_string())
        .bind(hash)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn users_offboard(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
    ) -> Result<Option<Revoked>> {
        let uid = id.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(&format!(
            "UPDATE users SET offboarded_at = ?, setup_token_hash = NULL
             WHERE {SCOPE} AND id = ? AND offboarded_at IS NULL"
        ))
        .bind(now)
        .bind(scope(tenant))
        .bind(&uid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        // What the user holds, by the column naming them.
        let mut revoked = [0u64; 3];
        for (n, (table, col)) in revoked.iter_mut().zip([
            ("sessions", "user_id"),
            ("api_tokens", "created_by"),
            ("msp_grants", "user_id"),
        ]) {
            *n = sqlx::query(&format!(
                "UPDATE {table} SET revoked_at = ? WHERE {col} = ? AND revoked_at IS NULL"
            ))
            .bind(now)
            .bind(&uid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let [sessions, tokens, grants] = revoked;
        tx.commit().await?;
        Ok(Some(Revoked {
            sessions,
            tokens,
            grants,
        }))
    }

    pub(crate) async fn sessions_create(&self, tenant: TenantId, s: &SessionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, tenant_id, user_id, csrf_hash, created_at, last_seen,
             expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(tenant.0.to_string())
        .bind(s.user_id.0.to_string())
        .bind(&s.csrf_hash)
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.expires_at)
        .bind(s.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn sessions_get(
        &self,
        tenant: TenantId,
        id_hash: &str,
    ) -> Result<Option<SessionRow>> {
        sqlx::query("SELECT * FROM sessions WHERE tenant_id = ? AND id_hash = ?")
            .bind(tenant.0.to_string())
            .bind(id_hash)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    pub(crate) async fn sessions_touch(
        &self,
        tenant: TenantId,
        id_hash: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen = ? WHERE tenant_id = ? AND id_hash = ?")
            .bind(now)
            .bind(tenant.0.to_string())
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub(crate) async fn sessions_revoke(
        &self,
        tenant: TenantId,
        id_hash: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE tenant_id = ? AND id_hash = ?
             AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(id_hash)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn tokens_list(&self, tenant: TenantId) -> Result<Vec<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = ? ORDER BY created_at DESC, id")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(api_token_from)
            .collect()
    }

    pub(crate) async fn tokens_revoke(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant.0.to_string())
        .bind(id.to_string())
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn grants_create(&self, tenant: TenantId, g: &MspGrantRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO msp_grants (id, tenant_id, user_id, role, created_by, created_at,
             expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(g.id.to_string())
        .bind(tenant.0.to_string())
        .bind(g.user_id.0.to_string())
        .bind(&g.role)
        .bind(&g.created_by)
        .bind(g.created_at)
        .bind(g.expires_at)
        .bind(g.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn grants_list(&self, tenant: TenantId) -> Result<Vec<MspGrantRow>> {
        sqlx::query("SELECT * FROM msp_grants WHERE tenant_id = ? ORDER BY created_at DESC, id")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(grant_from)
            .collect()
    }

    pub(crate) async fn grants_active(
        &self,
        tenant: TenantId,
        user: UserId,
        now: i64,
    ) -> Result<Option<MspGrantRow>> {
        sqlx::query(
            "SELECT * FROM msp_grants WHERE tenant_id = ? AND user_id = ? AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC, id LIMIT 1",
        )
        .bind(tenant.0.to_string())
        .bind(user.0.to_string())
        .bind(now)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(grant_from)
        .transpose()
    }

    pub(crate) async fn grants_revoke(
        &self,
        tenant: TenantId,
        id: Uuid,
        now: i64,
    ) -> Result<Option<(MspGrantRow, Revoked)>> {
        let t = tenant.0.to_string();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let Some(grant) = sqlx::query(
            "SELECT * FROM msp_grants WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(&t)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(grant_from)
        .transpose()?
        else {
            return Ok(None);
        };
        let uid = grant.user_id.0.to_string();
        let grants = sqlx::query("UPDATE msp_grants SET revoked_at = ? WHERE id = ?")
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE tenant_id = ? AND user_id = ?
             AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&t)
        .bind(&uid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tokens = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE tenant_id = ? AND created_by = ?
             AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&t)
        .bind(&uid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        let grant = MspGrantRow {
            revoked_at: Some(now),
            ..grant
        };
        Ok(Some((
            grant,
            Revoked {
                sessions,
                tokens,
                grants,
            },
        )))
    }
}
