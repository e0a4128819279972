//! Plans and the tenant lifecycle: the operator defines plans, puts tenants
//! on them, cancels and reactivates tenants; a tenant reads its own plan.

use axum::extract::State;
use axum::http::StatusCode;
use rampart_proto::api::ErrorBody;
use rampart_store::{EffectivePlan, Plan, TenantPlan};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::{tenant_view, TenantView};
use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{AppState, Json, Operator, Path, TenantReader};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans))
        .routes(routes!(put_plan, delete_plan))
        .routes(routes!(get_tenant_plan, put_tenant_plan))
        .routes(routes!(cancel_tenant))
        .routes(routes!(reactivate_tenant))
        .routes(routes!(own_plan))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Days of data the tenant's queries can see (1 to 36500).
    pub visible_days: u32,
    /// Days of data kept (at least `visible_days`); older data is deleted by
    /// the lifecycle job.
    pub stored_days: u32,
    /// Devices (pending and active) the tenant may have; none: no limit.
    pub max_devices: Option<u32>,
    /// Features the tenant may use: flows, alarms, checks, config, vpn.
    pub features: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PlanView {
    pub name: String,
    pub visible_days: u32,
    pub stored_days: u32,
    pub max_devices: Option<u32>,
    pub features: Vec<String>,
    pub updated_at: String,
}

fn plan_view(p: Plan) -> PlanView {
    PlanView {
        updated_at: rfc3339(p.updated_at),
        name: p.name,
        visible_days: p.visible_days,
        stored_days: p.stored_days,
        max_devices: p.max_devices,
        features: p.features,
    }
}

/// A tenant's plan: the plan's name and what the tenant overrides of it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPlanBody {
    pub plan: String,
    pub visible_days: Option<u32>,
    pub stored_days: Option<u32>,
    pub max_devices: Option<u32>,
    pub features: Option<Vec<String>>,
}

/// What the tenant is held to, with the overrides applied.
#[derive(Serialize, ToSchema)]
pub struct EffectivePlanView {
    pub plan: String,
    pub visible_days: u32,
    pub stored_days: u32,
    pub max_devices: Option<u32>,
    pub features: Vec<String>,
    /// Devices counted against `max_devices` (pending and active).
    pub devices: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TenantPlanView {
    pub overrides: TenantPlanBody,
    pub effective: EffectivePlanView,
}

async fn effective_view(
    p: &crate::service::Portal,
    tenant: rampart_store::TenantId,
    e: EffectivePlan,
) -> Result<EffectivePlanView, ApiError> {
    let devices = p
        .store
        .list_devices(tenant)
        .await?
        .iter()
        .filter(|d| d.status != rampart_proto::api::DeviceStatus::Revoked.as_str())
        .count() as u32;
    Ok(EffectivePlanView {
        plan: e.plan,
        visible_days: e.visible_days,
        stored_days: e.stored_days,
        max_devices: e.max_devices,
        features: e.features,
        devices,
    })
}

/// List plans.
#[utoipa::path(get, path = "/api/v1/admin/plans", tag = "admin",
    security(("operator" = [])),
    responses((status = 200, body = Vec<PlanView>), (status = 401, body = ErrorBody)))]
async fn list_plans(
    State(p): State<AppState>,
    _op: Operator,
) -> Result<axum::Json<Vec<PlanView>>, ApiError> {
    let plans = p.store.list_plans().await?;
    Ok(axum::Json(plans.into_iter().map(plan_view).collect()))
}

/// Create or replace a plan. Tenants on it are held to the new values at
/// once (retention at the next lifecycle pass).
#[utoipa::path(put, path = "/api/v1/admin/plans/{plan}", tag = "admin",
    security(("operator" = [])),
    params(("plan" = String, Path, description = "Plan name: a-z, 0-9 and -")),
    request_body = PlanBody,
    responses((status = 200, body = PlanView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn put_plan(
    State(p): State<AppState>,
    op: Operator,
    Path(name): Path<String>,
    Json(b): Json<PlanBody>,
) -> Result<axum::Json<PlanView>, ApiError> {
    let plan = Plan {
        name,
        visible_days: b.visible_days,
        stored_days: b.stored_days,
        max_devices: b.max_devices,
        features: b.features,
        updated_at: 0,
    };
    Ok(axum::Json(plan_view(p.set_plan(&op.actor(), plan).await?)))
}

/// Delete a plan no tenant is on.
#[utoipa::path(delete, path = "/api/v1/admin/plans/{plan}", tag = "admin",
    security(("operator" = [])),
    params(("plan" = String, Path, description = "Plan name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_plan(
    State(p): State<AppState>,
    op: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.delete_plan(&op.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's plan, its overrides and what it is held to.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{tenant}/plan", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantPlanView), (status = 404, body = ErrorBody)))]
async fn get_tenant_plan(
    State(p): State<AppState>,
    _op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantPlanView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let tp = p.store.tenant_plan(t.id).await?;
    let eff = p.plan(t.id).await?;
    Ok(axum::Json(TenantPlanView {
        overrides: TenantPlanBody {
            plan: tp.plan,
            visible_days: tp.visible_days,
            stored_days: tp.stored_days,
            max_devices: tp.max_devices,
            features: tp.features,
        },
        effective: effective_view(&p, t.id, eff).await?,
    }))
}

/// Put a tenant on a plan, with optional overrides of its values. Lowering
/// `max_devices` below the devices enrolled keeps them and refuses new ones.
#[utoipa::path(put, path = "/api/v1/admin/tenants/{tenant}/plan", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    request_body = TenantPlanBody,
    responses((status = 200, body = EffectivePlanView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_tenant_plan(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
    Json(b): Json<TenantPlanBody>,
) -> Result<axum::Json<EffectivePlanView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let tp = TenantPlan {
        plan: b.plan,
        visible_days: b.visible_days,
        stored_days: b.stored_days,
        max_devices: b.max_devices,
        features: b.features,
    };
    let eff = p.set_tenant_plan(&op.actor(), t.id, tp).await?;
    Ok(axum::Json(effective_view(&p, t.id, eff).await?))
}

/// Cancel a tenant: its API, enrollment and agents are refused at once, and
/// its keys and data are destroyed after the cancellation window
/// (`tenant_delete_after_secs`, 7 days by default) unless it is reactivated.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/cancel", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_tenant(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let t = p.cancel_tenant(&op.actor(), t.id).await?;
    Ok(axum::Json(tenant_view(&p, &t)))
}

/// Reactivate a cancelled tenant inside its cancellation window.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/reactivate", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reactivate_tenant(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let t = p.reactivate_tenant(&op.actor(), t.id).await?;
    Ok(axum::Json(tenant_view(&p, &t)))
}

/// This tenant's plan: what it may keep and use, and its devices.
#[utoipa::path(get, path = "/api/v1/plan", tag = "tenant",
    security(("tenant" = [])),
    responses((status = 200, body = EffectivePlanView), (status = 401, body = ErrorBody)))]
async fn own_plan(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<EffectivePlanView>, ApiError> {
    let eff = p.plan(a.tenant.id).await?;
    Ok(axum::Json(effective_view(&p, a.tenant.id, eff).await?))
}
