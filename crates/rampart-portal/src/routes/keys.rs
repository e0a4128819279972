//! The operator's key operations on a tenant: rotate its data key, read
//! its key status. Admin domain and operator token only.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{AppState, Operator, Path};
use crate::keys::KeyStatus;
use rampart_proto::api::ErrorBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(key_status))
        .routes(routes!(rotate_key))
}

#[derive(Serialize, ToSchema)]
pub struct Rotated {
    /// The data key version new writes now use; older data is re-encrypted
    /// in the background and the old version retired after.
    pub version: u32,
}

/// A tenant's data key versions and how much data each still holds.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{tenant}/keys", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = KeyStatus), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn key_status(
    State(p): State<AppState>,
    _op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<KeyStatus>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    Ok(axum::Json(p.key_status(t.id).await?))
}

/// Rotate a tenant's data key: new writes use a new version at once.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/keys/rotate", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = Rotated), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rotate_key(
    State(p): State<AppState>,
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Rotated>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let version = p.rotate_tenant_key(&op.actor(), t.id).await?;
    Ok(axum::Json(Rotated { version }))
}
