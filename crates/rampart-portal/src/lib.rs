//! The Rampart portal: one HTTPS service for many tenants.
//!
//! [`app`] builds the router from a [`service::Portal`]; [`run`] serves it
//! over TLS with per-tenant certificates and starts the background jobs.
//! Binaries stay thin: `main.rs` only parses flags and calls into here.
//!
//! Invariants:
//! - every tenant-scoped handler gets its tenant from an extractor
//!   (`TenantCaller<R>` with its least role, `DeviceRequest`, `TenantHost`)
//!   and passes it first to the store; no handler takes a tenant id from
//!   the URL or body;
//! - private keys exist unwrapped only in memory ([`crypto`]);
//! - the library never uses the agent crate (only the demo command does).

pub mod access;
pub mod actions;
pub mod alarms;
pub mod audit;
pub mod backup;
pub mod billing;
pub mod ca;
pub mod config;
pub mod crypto;
pub mod devconf;
pub mod email;
pub mod error;
pub mod extract;
pub mod flows;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod reports;
pub mod routes;
pub mod service;
pub mod targets;
pub mod tls;
pub mod users;
pub mod vault;
pub mod vpn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, REQUEST_ID};
use crate::extract::AppState;
use crate::metrics::HttpLabels;
pub use crate::service::Portal;

/// The OpenAPI document, generated from the same route table the router is
/// built from, so the two cannot drift.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(routes::ApiDoc::openapi())
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .merge(routes::admin::router())
        .merge(routes::keys::router())
        .merge(routes::tenant::router())
        .merge(routes::device::router())
        .merge(routes::flows::router())
        .merge(routes::alarms::router())
        .merge(routes::audit::router())
        .merge(routes::billing::router())
        .merge(routes::plans::router())
        .merge(routes::configs::router())
        .merge(routes::users::router())
        .merge(routes::actions::router())
        .merge(routes::reports::router())
        .merge(routes::targets::router())
        .merge(routes::vpn::router())
}

/// The whole HTTP application. Serving (TLS, sockets) is separate: tests
/// call this with `Router::oneshot`.
pub fn app(portal: AppState) -> axum::Router {
    let (router, api) = api_router().split_for_parts();
    let api_json = Arc::new(api.to_pretty_json().unwrap_or_default());
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let body = api_json.clone();
                async move {
                    (
                        [("content-type", "application/json")],
                        body.as_ref().clone(),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route: see /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route: see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(rampart_proto::api::MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(
            portal.clone(),
            plan_features,
        ))
        .layer(middleware::from_fn_with_state(portal.clone(), observe))
        .with_state(portal)
}

/// Gives each request an id (in the error body, the log and the
/// `x-request-id` header) and counts it by route and status.
/// Refuses the routes of a feature the addressed tenant's plan leaves out,
/// in one place rather than in every handler of the feature. Requests that
/// address no tenant go on, and their handler's extractor answers them.
async fn plan_features(State(p): State<AppState>, req: Request, next: Next) -> Response {
    let Some(feature) = lifecycle::feature_of_path(req.uri().path()) else {
        return next.run(req).await;
    };
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(extract::strip_port);
    let tenant = match host {
        Some(h) => p.store.tenant_by_domain(&h).await,
        None => Ok(None),
    };
    match tenant {
        Ok(Some(t)) => match p.require_feature(t.id, feature).await {
            Ok(()) => next.run(req).await,
            Err(e) => ApiError::from(e).into_response(),
        },
        Ok(None) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn observe(State(p): State<AppState>, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = resp.status().as_u16();
    p.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    tracing::debug!(request_id = %id, %method, %route, status, elapsed_ms = start.elapsed().as_millis() as u64, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Binds the HTTPS listener with a deep accept queue: after a portal restart
/// thousands of agents reconnect at once, and the default 1024 drops some.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves the portal until `shutdown` resolves: HTTPS on `listener`, the
/// metrics listener if configured, and the background jobs.
pub async fn run(
    portal: Arc<Portal>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    if let Some(addr) = portal.config.metrics_listen {
        let ml = tokio::net::TcpListener::bind(addr).await?;
        let p = portal.clone();
        let metrics_app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let p = p.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        p.metrics.encode(),
                    )
                        .into_response()
                }
            }),
        );
        tracing::info!(%addr, "metrics listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(ml, metrics_app).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tokio::spawn(background(portal.clone()));
    tokio::spawn(purge_deleted_blobs(portal.clone()));
    tokio::spawn(flows::jobs(portal.clone()));
    tokio::spawn(alarms::jobs(portal.clone()));
    tokio::spawn(lifecycle::jobs(portal.clone()));
    tokio::spawn(devconf::jobs(portal.clone()));
    tokio::spawn(keys::jobs(portal.clone()));
    tokio::spawn(reports::jobs(portal.clone()));
    tokio::spawn(targets::jobs(portal.clone()));
    let tls = tls::server_config(portal.certs.clone());
    tracing::info!(addr = %listener.local_addr()?, admin_domain = %portal.config.admin_domain, "portal listening (https)");
    tls::serve(listener, tls, app(portal), shutdown).await;
    Ok(())
}

/// Periodic jobs: pick up tenants created elsewhere, update gauges.
async fn background(p: Arc<Portal>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Err(e) = p.refresh_certs().await {
            tracing::warn!(error = %e, "refreshing tenant certificates failed");
        }
        let since = service::now() - p.config.offline_after_secs as i64;
        match p.store.count_devices_seen_since(since).await {
            Ok(n) => {
                p.metrics.devices_online.set(n as i64);
            }
            Err(e) => tracing::warn!(error = %e, "counting online devices failed"),
        }
    }
}

/// Removes deleted blobs past their grace period, unless a backup holds a
/// lease (see `rampart_store::blob::LocalBlobStore`). Once a minute: the
/// trash is walked whole.
async fn purge_deleted_blobs(p: Arc<Portal>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match p.blobs.purge_deleted(std::time::SystemTime::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(blobs = n, "purged deleted blobs past their grace period"),
            Err(e) => tracing::warn!(error = %e, "purging deleted blobs failed"),
        }
    }
}
