//! The operator's admin API, served on the admin domain only.

use axum::extract::State;
use axum::http::StatusCode;
use rampart_store::{Lifecycle, Tenant, TenantStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{AppState, Json, Operator, Path};
use rampart_proto::api::ErrorBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(resume_tenant))
        .routes(routes!(set_flow_plan))
        .routes(routes!(create_tenant_token))
}

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub domain: String,
    /// `active` or `suspended`.
    pub status: String,
    pub created_at: String,
    /// Base URL of the tenant's API.
    pub url: String,
    /// `live`, `cancelled` (access stopped; data deleted at `delete_after`
    /// unless reactivated) or `deleted` (keys and data destroyed).
    pub lifecycle: String,
    pub cancelled_at: Option<String>,
    pub delete_after: Option<String>,
    pub deleted_at: Option<String>,
    /// The region whose deployment holds the tenant and its data.
    pub region: String,
}

pub fn tenant_view(p: &crate::service::Portal, t: &Tenant) -> TenantView {
    let (lifecycle, cancelled_at, delete_after, deleted_at) = match t.lifecycle {
        Lifecycle::Live => ("live", None, None, None),
        Lifecycle::Cancelled { at, delete_after } => {
            ("cancelled", Some(at), Some(delete_after), None)
        }
        Lifecycle::Deleted { at } => ("deleted", None, None, Some(at)),
    };
    TenantView {
        lifecycle: lifecycle.into(),
        cancelled_at: cancelled_at.map(rfc3339),
        delete_after: delete_after.map(rfc3339),
        deleted_at: deleted_at.map(rfc3339),
        id: t.id.0,
        name: t.name.clone(),
        domain: t.domain.clone(),
        status: t.status.as_str().into(),
        created_at: rfc3339(t.created_at),
        url: p.config.tenant_url(&t.domain),
        region: t.region.clone(),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Slug: a-z, 0-9 and -.
    pub name: String,
    /// DNS name the tenant's API is served on.
    pub domain: String,
    /// Operator-provided certificate chain (PEM) on the portal host; the
    /// local CA issues one when absent.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The tenant's region; this deployment's when absent. Another
    /// region's is refused (421 `wrong_region`) with that deployment's URL.
    pub region: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    /// The tenant's first API token (role `owner`), shown once.
    pub admin_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Lifetime in seconds; no expiry when absent.
    pub ttl_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    /// The secret, shown once; only its hash is stored.
    pub token: String,
    pub expires_at: Option<String>,
}

/// List tenants.
#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin",
    security(("operator" = [])),
    responses((status = 200, body = Vec<TenantView>), (status = 401, body = ErrorBody)))]
async fn list_tenants(
    State(p): State<AppState>,
    _op: Operator,
) -> Result<axum::Json<Vec<TenantView>>, ApiError> {
    let ts = p.store.list_tenants().await?;
    Ok(axum::Json(ts.iter().map(|t| tenant_view(&p, t)).collect()))
}

/// Create a tenant with its keys and certificate; returns its first admin token.
#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin",
    security(("operator" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 421, body = ErrorBody, description = "The region is another deployment's: the message gives its URL")))]
async fn create_tenant(
    State(p): State<AppState>,
    op: Operator,
    Json(req): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<CreatedTenant>), ApiError> {
    let files = match (req.cert_file, req.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "invalid",
                "give both cert_file and key_file, or neither",
            ))
        }
    };
    let actor = op.actor();
    let t = p
        .create_tenant_in(&actor, &req.name, &req.domain, req.region.as_deref(), files)
        .await?;
    let tok = p
        .mint_api_token(&actor, Some(t.id), "initial owner", "owner", None)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedTenant {
            tenant: tenant_view(&p, &t),
            admin_token: tok.secret,
        }),
    ))
}

/// Show one tenant, by id or name.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{tenant}", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
async fn get_tenant(
    State(p): State<AppState>,
    _op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    Ok(axum::Json(tenant_view(&p, &t)))
}

async fn set_status(
    p: &AppState,
    op: &Operator,
    tenant: &str,
    status: TenantStatus,
) -> Result<axum::Json<TenantView>, ApiError> {
    let mut t = p.find_tenant(tenant).await?;
    p.set_tenant_status(&op.actor(), t.id, status).await?;
    t.status = status;
    Ok(axum::Json(tenant_view(p, &t)))
}

/// Suspend a tenant: its API and its agents are refused at once.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/suspend", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
async fn suspend_tenant(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    set_status(&p, &op, &tenant, TenantStatus::Suspended).await
}

/// Resume a suspended tenant.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/resume", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
async fn resume_tenant(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    set_status(&p, &op, &tenant, TenantStatus::Active).await
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowPlan {
    /// Days of flows the tenant's queries can see (1 to 36500).
    pub visible_days: u32,
    /// Days of flows kept on disk (at least `visible_days`);
    /// older segments and rollups are deleted by the retention job. At most
    /// 36500: long windows serve archives and replayed old captures.
    pub stored_days: u32,
}

/// Checks a flow plan; shared by the API and the CLI.
pub fn validate_flow_plan(plan: &FlowPlan) -> Result<(), ApiError> {
    if !(1..=36_500).contains(&plan.visible_days)
        || plan.stored_days < plan.visible_days
        || plan.stored_days > 36_500
    {
        return Err(ApiError::bad_request(
            "invalid",
            "visible_days must be 1 to 36500 and stored_days between visible_days and 36500",
        ));
    }
    Ok(())
}

/// Set a tenant's flow retention (its plan's visible and stored windows).
#[utoipa::path(put, path = "/api/v1/admin/tenants/{tenant}/flow-plan", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    request_body = FlowPlan,
    responses((status = 200, body = FlowPlan), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_flow_plan(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
    Json(plan): Json<FlowPlan>,
) -> Result<axum::Json<FlowPlan>, ApiError> {
    validate_flow_plan(&plan)?;
    let t = p.find_tenant(&tenant).await?;
    p.set_flow_plan(&op.actor(), t.id, plan.visible_days, plan.stored_days)
        .await?;
    Ok(axum::Json(plan))
}

/// Mint an admin API token for a tenant (shown once).
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/tokens", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 404, body = ErrorBody)))]
async fn create_tenant_token(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    if req.name.is_empty() || req.name.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid",
            "name must be 1 to 64 characters",
        ));
    }
    if req
        .ttl_secs
        .is_some_and(|t| !(60..=10 * 365 * 86_400).contains(&t))
    {
        return Err(ApiError::bad_request(
            "invalid",
            "ttl_secs must be between 60 and 315360000",
        ));
    }
    let t = p.find_tenant(&tenant).await?;
    let tok = p
        .mint_api_token(&op.actor(), Some(t.id), &req.name, "admin", req.ttl_secs)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            id: tok.row.id,
            token: tok.secret,
            expires_at: tok.row.expires_at.map(rfc3339),
        }),
    ))
}
