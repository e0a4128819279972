//! HTTP routes. Each module is one audience: the operator's admin API, a
//! tenant's own API, and the device API agents call.

pub mod actions;
pub mod admin;
pub mod alarms;
pub mod audit;
pub mod billing;
pub mod configs;
pub mod device;
pub mod flows;
pub mod keys;
pub mod plans;
pub mod reports;
pub mod targets;
pub mod tenant;
pub mod users;
pub mod vpn;

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::AppState;

/// Unix seconds as RFC 3339, for API views.
pub fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A query time: epoch milliseconds, or RFC 3339.
pub fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be RFC 3339 (2026-11-23T10:00:00Z) or epoch milliseconds"),
            )
        })
}

/// Epoch milliseconds as RFC 3339, for API views.
pub fn ms_rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        c.add_security_scheme("operator", bearer());
        c.add_security_scheme("tenant", bearer());
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::extract::SESSION_COOKIE,
                "session cookie set by POST /api/v1/auth/login; non-GET requests also need \
                 the session's csrf token in x-csrf-token",
            ))),
        );
        c.add_security_scheme(
            "device",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                rampart_proto::reqsig::HDR_SIGNATURE,
                "Ed25519 request signature by the device key, with x-rampart-device, \
                 x-rampart-timestamp and x-rampart-nonce (see ARCHITECTURE.md)",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rampart portal API",
        description = "Multi-tenant managed-security portal. Errors share one shape: \
                       {\"error\": {\"code\", \"message\", \"request_id\"}}."
    ),
    modifiers(&Security),
    tags(
        (name = "admin", description = "Operator API, on the admin domain"),
        (name = "tenant", description = "A tenant's API, on the tenant's domain"),
        (name = "flows", description = "A tenant's flows: top-N, time series, search, totals"),
        (name = "alarms", description = "A tenant's alarms, their rules, detector settings and webhooks"),
        (name = "config", description = "A tenant's device configuration: layered documents, rollout, drift, rollback"),
        (name = "device", description = "Agent API, on the tenant's domain, signed by the device key"),
        (name = "billing", description = "Billing provider webhooks, on the admin domain, authenticated by their signature"),
        (name = "meta", description = "Health and API description"),
    )
)]
pub struct ApiDoc;

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, body = Health),
        (status = 503, body = rampart_proto::api::ErrorBody)
    )
)]
pub async fn readyz(
    axum::extract::State(p): axum::extract::State<AppState>,
) -> Result<axum::Json<Health>, crate::error::ApiError> {
    p.store
        .get_meta("readiness-probe")
        .await
        .map_err(crate::error::ApiError::unavailable)?;
    Ok(axum::Json(Health { status: "ready" }))
}
