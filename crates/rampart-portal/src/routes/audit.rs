//! The audit log through the API: a tenant reads its own entries on its
//! domain; the operator reads every entry (or one tenant's) on the admin
//! domain. Both page by seq. Verification is `rampart audit verify`.

use axum::extract::State;
use rampart_proto::api::ErrorBody;
use rampart_store::AuditEntry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::audit::hex;
use crate::error::ApiError;
use crate::extract::{AppState, Operator, Query, TenantAdmin};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant_audit))
        .routes(routes!(admin_audit))
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditView {
    /// Position in the portal's one chain (gaps in a tenant's listing are
    /// other tenants' entries).
    pub seq: u64,
    pub at: String,
    /// The tenant acted on; absent for portal-wide entries. Shown to the
    /// operator only (a tenant sees its own entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// `operator:<token name>`, `tenant:<token name>`, `cli`, `device:<id>`,
    /// `portal` or `stripe`.
    pub actor: String,
    /// e.g. `tenant.create`, `api_token.create`, `export.flows`.
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Hex SHA-256 of the entry, as chained.
    pub hash: String,
    /// Hex hash of the entry before it in the chain (operator only: it may
    /// be another tenant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
}

impl AuditView {
    fn base(e: &AuditEntry) -> AuditView {
        AuditView {
            seq: e.seq,
            at: rfc3339(e.at),
            tenant_id: None,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            // A detail that no longer parses is shown as stored; verify
            // says whether it was tampered with.
            detail: serde_json::from_str(&e.detail)
                .unwrap_or_else(|_| serde_json::Value::String(e.detail.clone())),
            hash: hex(&e.hash),
            prev_hash: None,
        }
    }

    /// What a tenant sees of its own entry.
    pub fn tenant(e: &AuditEntry) -> AuditView {
        Self::base(e)
    }

    /// What the operator sees: the tenant and the link too.
    pub fn operator(e: &AuditEntry) -> AuditView {
        AuditView {
            tenant_id: e.tenant_id.map(|t| t.0),
            prev_hash: Some(hex(&e.prev_hash)),
            ..Self::base(e)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditView>,
    /// Pass as `after` for the next page; absent when this page was not full.
    pub next: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this seq (the `next` of the previous page).
    pub after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminAuditQuery {
    /// Only this tenant's entries (id or name).
    pub tenant: Option<String>,
    /// Entries after this seq (the `next` of the previous page).
    pub after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    let l = l.unwrap_or(100);
    if !(1..=1000).contains(&l) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    Ok(l)
}

fn page(rows: &[AuditEntry], limit: u32, view: fn(&AuditEntry) -> AuditView) -> AuditPage {
    AuditPage {
        entries: rows.iter().map(view).collect(),
        next: (rows.len() == limit as usize)
            .then(|| rows.last().map(|e| e.seq))
            .flatten(),
    }
}

/// This tenant's audit log: who did what, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "tenant", security(("tenant" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn tenant_audit(
    State(p): State<AppState>,
    a: TenantAdmin,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let limit = limit(q.limit)?;
    let rows = p
        .store
        .list_audit(a.tenant.id, q.after.unwrap_or(0), limit)
        .await?;
    Ok(axum::Json(page(&rows, limit, AuditView::tenant)))
}

/// The portal's audit log, every tenant's and portal-wide, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("operator" = [])),
    params(AdminAuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn admin_audit(
    State(p): State<AppState>,
    _op: Operator,
    Query(q): Query<AdminAuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let limit = limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    let rows = match &q.tenant {
        Some(t) => {
            let t = p.find_tenant(t).await?;
            p.store.list_audit(t.id, after, limit).await?
        }
        None => p.store.audit_chain(after, limit).await?,
    };
    Ok(axum::Json(page(&rows, limit, AuditView::operator)))
}
