//! Billing on the admin domain: the Stripe webhook (public: its signature
//! is the authentication) and the operator's view of a tenant's billing.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use rampart_proto::api::ErrorBody;
use rampart_store::BillingRow;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rfc3339;
use crate::billing::{self, BillingError, MAX_BODY_BYTES, SIGNATURE_HEADER};
use crate::error::ApiError;
use crate::extract::{AdminHost, AppState, Operator, Path};
use rampart_alarms::webhook::VerifyError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stripe_webhook))
        .routes(routes!(tenant_billing))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub received: bool,
    pub event_id: String,
    /// This event id was applied before; nothing changed.
    pub duplicate: bool,
    /// `applied`, `stale` (older than the stored subscription state) or
    /// `ignored` (an event type the portal does not use).
    pub outcome: String,
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        let m = e.to_string();
        match e {
            BillingError::Disabled => ApiError::new(StatusCode::NOT_FOUND, "billing_disabled", m),
            BillingError::Signature(VerifyError::Missing | VerifyError::BadFormat) => {
                ApiError::bad_request("bad_signature", m)
            }
            BillingError::Signature(_) => ApiError::unauthorized(m),
            BillingError::Invalid(_) => ApiError::bad_request("invalid_event", m),
            BillingError::UnknownTenant(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_tenant", m)
            }
            BillingError::Conflict(_) => ApiError::conflict(m),
            BillingError::Service(s) => s.into(),
        }
    }
}

/// Stripe webhook endpoint: subscription, customer and payment-method
/// events set the tenant's plan, status, billing email and card brand and
/// last 4. Authenticated by `Stripe-Signature` (no bearer token).
#[utoipa::path(post, path = "/api/v1/billing/stripe", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event"),
    responses((status = 200, body = WebhookAnswer), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn stripe_webhook(
    State(p): State<AppState>,
    _admin: AdminHost,
    req: Request,
) -> Result<axum::Json<WebhookAnswer>, ApiError> {
    if p.config.stripe_webhook_secret.is_none() {
        return Err(BillingError::Disabled.into());
    }
    let (parts, body) = req.into_parts();
    // Not a string we keep: a header that is not text is no signature.
    let header = parts
        .headers
        .get(SIGNATURE_HEADER)
        .map(|h| h.to_str().unwrap_or("!"));
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body exceeds the {MAX_BODY_BYTES}-byte limit of this route: stripe events are smaller"),
            )
        })?;
    let h = billing::handle(&p, header, &body, crate::service::now()).await?;
    Ok(axum::Json(WebhookAnswer {
        received: true,
        event_id: h.event_id,
        duplicate: h.duplicate,
        outcome: h.outcome.into(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct BillingView {
    pub customer_id: String,
    pub email: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub plan: Option<String>,
    /// The provider's subscription status (`active`, `past_due`, ...).
    pub status: Option<String>,
    pub updated_at: String,
}

impl From<&BillingRow> for BillingView {
    fn from(b: &BillingRow) -> Self {
        BillingView {
            customer_id: b.customer_id.clone(),
            email: b.email.clone(),
            card_brand: b.card_brand.clone(),
            card_last4: b.card_last4.clone(),
            plan: b.plan.clone(),
            status: b.status.clone(),
            updated_at: rfc3339(b.updated_at),
        }
    }
}

/// A tenant's billing as the provider reported it.
#[utoipa::path(get, path = "/api/v1/admin/tenants/{tenant}/billing", tag = "admin",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = BillingView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tenant_billing(
    State(p): State<AppState>,
    _op: Operator,
    Path(tenant): Path<String>,
) -> Result<axum::Json<BillingView>, ApiError> {
    let t = p.find_tenant(&tenant).await?;
    let b = p
        .store
        .get_billing(t.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("billing of tenant {}", t.name)))?;
    Ok(axum::Json(BillingView::from(&b)))
}
