//! The billing tables of the SQLite backend (migration 0007). The `Store`
//! impl in `sqlite.rs` calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{opt_sealed_col, uuid_col, SqliteStore};
use crate::*;

/// Applied event ids are kept this long (seconds). The provider retries an
/// event for 3 days; a replay older than the signature tolerance (minutes)
/// is refused before it gets here.
const EVENT_RETENTION_SECS: i64 = 30 * 86_400;

/// The billing row's seal: one row per tenant, so no row identity.
fn seal(sealer: &dyn TenantSealer, tenant: TenantId) -> RowSeal<'_> {
    RowSeal {
        sealer,
        tenant,
        table: "billing",
        row: vec![],
    }
}

fn billing_from(sealer: &dyn TenantSealer, row: &SqliteRow) -> Result<BillingRow> {
    let tenant = TenantId(uuid_col(row, "tenant_id")?);
    let seal = seal(sealer, tenant);
    Ok(BillingRow {
        tenant_id: tenant,
        customer_id: row.try_get("customer_id")?,
        email: opt_sealed_col(&seal, row, "email")?,
        card_brand: opt_sealed_col(&seal, row, "card_brand")?,
        card_last4: opt_sealed_col(&seal, row, "card_last4")?,
        plan: row.try_get("plan")?,
        status: row.try_get("status")?,
        status_at: row.try_get("status_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqliteStore {
    pub(crate) async fn billing_apply(
        &self,
        tenant: TenantId,
        u: &BillingUpdate,
    ) -> Result<BillingOutcome> {
        let t = tenant.0.to_string();
        let sealer = self.sealer(tenant).await?;
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM billing_events WHERE received_at < ?")
            .bind(u.now.saturating_sub(EVENT_RETENTION_SECS))
            .execute(&mut *tx)
            .await?;
        let fresh = sqlx::query(
            "INSERT INTO billing_events (event_id, received_at) VALUES (?, ?)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&u.event_id)
        .bind(u.now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            return Ok(BillingOutcome::Duplicate);
        }
        let old = sqlx::query("SELECT * FROM billing WHERE tenant_id = ?")
            .bind(&t)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(|r| billing_from(sealer.as_ref(), r))
            .transpose()?;
        let keep = |new: &Option<String>, old: Option<&Option<String>>| {
            new.clone().or_else(|| old.cloned().flatten())
        };
        let mut row = BillingRow {
            tenant_id: tenant,
            customer_id: u.customer_id.clone(),
            email: keep(&u.email, old.as_ref().map(|o| &o.email)),
            card_brand: keep(&u.card_brand, old.as_ref().map(|o| &o.card_brand)),
            card_last4: keep(&u.card_last4, old.as_ref().map(|o| &o.card_last4)),
            plan: old.as_ref().and_then(|o| o.plan.clone()),
            status: old.as_ref().and_then(|o| o.status.clone()),
            status_at: old.as_ref().and_then(|o| o.status_at),
            updated_at: u.now,
        };
        // A brand without its last 4 (or the reverse) would mix two cards.
        if u.card_brand.is_some() || u.card_last4.is_some() {
            row.card_brand = u.card_brand.clone();
            row.card_last4 = u.card_last4.clone();
        }
        let mut stale = false;
        let mut tenant_status = None;
        if let Some(sub) = &u.subscription {
            if row.status_at.is_some_and(|at| u.event_at < at) {
                stale = true;
            } else {
                row.plan = sub.plan.clone().or(row.plan);
                row.status = Some(sub.status.clone());
                row.status_at = Some(u.event_at);
                tenant_status = sub.tenant_status;
            }
        }
        let seal = seal(sealer.as_ref(), tenant);
        sqlx::query(
            "INSERT INTO billing (tenant_id, customer_id, email, card_brand, card_last4, plan,
             status, status_at, updated_at, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET customer_id = excluded.customer_id,
             email = excluded.email, card_brand = excluded.card_brand,
             card_last4 = excluded.card_last4, plan = excluded.plan, status = excluded.status,
             status_at = excluded.status_at, updated_at = excluded.updated_at,
             key_version = excluded.key_version",
        )
        .bind(&t)
        .bind(&row.customer_id)
        .bind(seal.seal_opt("email", row.email.as_deref())?)
        .bind(seal.seal_opt("card_brand", row.card_brand.as_deref())?)
        .bind(seal.seal_opt("card_last4", row.card_last4.as_deref())?)
        .bind(&row.plan)
        .bind(&row.status)
        .bind(row.status_at)
        .bind(row.updated_at)
        .bind(sealer.version())
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
                "billing customer {} (billed to another tenant)",
                u.customer_id
            )),
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::NotFound(format!("tenant {tenant}"))
            }
            _ => e.into(),
        })?;
        if let Some(status) = tenant_status {
            sqlx::query("UPDATE tenants SET status = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(&t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(if stale {
            BillingOutcome::Stale { row }
        } else {
            BillingOutcome::Applied { row, tenant_status }
        })
    }

    pub(crate) async fn billing_get(&self, tenant: TenantId) -> Result<Option<BillingRow>> {
        let Some(row) = sqlx::query("SELECT * FROM billing WHERE tenant_id = ?")
            .bind(tenant.0.to_string())
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        billing_from(sealer.as_ref(), &row).map(Some)
    }

    pub(crate) async fn billing_tenant_of(&self, customer_id: &str) -> Result<Option<TenantId>> {
        let t: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM billing WHERE customer_id = ?")
                .bind(customer_id)
                .fetch_optional(self.pool())
                .await?;
        t.map(|t| {
            uuid::Uuid::parse_str(&t)
                .map(TenantId)
                .map_err(|e| StoreError::Corrupt(format!("billing tenant_id: {e}")))
        })
        .transpose()
    }
}
