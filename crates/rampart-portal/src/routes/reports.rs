//! A tenant's scheduled reports: list, numbers, HTML and PDF downloads,
//! generate now, and who gets them by email (see `crate::reports`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_proto::api::ErrorBody;
use rampart_store::ReportInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{
    AppState, Json, MinRole, Path, Query, TenantAdmin, TenantCaller, TenantReader,
};
use crate::reports::{self, Kind, Report, ReportSettings};
use crate::service::now;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reports))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(generate))
        .routes(routes!(get_report))
        .routes(routes!(get_html))
        .routes(routes!(get_pdf))
}

/// Listing more than this many at once is refused.
const MAX_LIMIT: u32 = 1000;

/// A report as the list shows it.
#[derive(Serialize, ToSchema)]
pub struct ReportItem {
    pub id: Uuid,
    /// `daily` or `weekly`.
    pub kind: String,
    /// The period is `[period_start, period_end)`, UTC.
    pub period_start: String,
    pub period_end: String,
    pub created_at: String,
    /// When the report was mailed to the tenant's report recipients.
    pub emailed_at: Option<String>,
}

fn item(i: &ReportInfo) -> ReportItem {
    ReportItem {
        id: i.id,
        kind: i.kind.clone(),
        period_start: rfc3339(i.period_start),
        period_end: rfc3339(i.period_end),
        created_at: rfc3339(i.created_at),
        emailed_at: i.emailed_at.map(rfc3339),
    }
}

/// A report with its numbers.
#[derive(Serialize, ToSchema)]
pub struct ReportView {
    #[serde(flatten)]
    pub item: ReportItem,
    pub report: Report,
}

fn parse_kind(v: &str) -> Result<Kind, ApiError> {
    Kind::parse(v)
        .ok_or_else(|| ApiError::bad_request("invalid_report", "kind must be daily or weekly"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `daily` or `weekly`; default both.
    pub kind: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// The tenant's reports, newest period first.
#[utoipa::path(get, path = "/api/v1/reports", tag = "tenant", security(("tenant" = [])),
    params(ListParams),
    responses((status = 200, body = Vec<ReportItem>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_reports(
    State(p): State<AppState>,
    a: TenantReader,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<Vec<ReportItem>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let rows = p
        .store
        .list_reports(a.tenant.id, kind.map(Kind::as_str), limit)
        .await?;
    Ok(axum::Json(rows.iter().map(item).collect()))
}

async fn load<R: MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    id: Uuid,
) -> Result<(ReportInfo, Report), ApiError> {
    reports::load(p, a.tenant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("report {id}")))
}

/// One report's numbers.
#[utoipa::path(get, path = "/api/v1/reports/{id}", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 200, body = ReportView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_report(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<ReportView>, ApiError> {
    let (info, report) = load(&p, &a, id).await?;
    Ok(axum::Json(ReportView {
        item: item(&info),
        report,
    }))
}

fn download(content_type: &'static str, name: String, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            // The page needs nothing but its inline styles and SVG.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'".to_string(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        body,
    )
        .into_response()
}

/// The report as one self-contained HTML page with its charts.
#[utoipa::path(get, path = "/api/v1/reports/{id}/html", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 200, content_type = "text/html", body = String), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_html(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (info, report) = load(&p, &a, id).await?;
    let body = reports::html(&info, &report).into_bytes();
    Ok(download(
        "text/html; charset=utf-8",
        reports::file_name(&report, "html"),
        body,
    ))
}

/// The report as a PDF with its charts.
#[utoipa::path(get, path = "/api/v1/reports/{id}/pdf", tag = "tenant", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Report id")),
    responses((status = 200, content_type = "application/pdf", body = Vec<u8>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_pdf(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (info, report) = load(&p, &a, id).await?;
    let body = tokio::task::spawn_blocking(move || {
        let pdf = reports::pdf(&info, &report);
        (pdf, reports::file_name(&report, "pdf"))
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(download("application/pdf", body.1, body.0))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// `daily` or `weekly`.
    pub kind: String,
    /// The period's first day, `YYYY-MM-DD` (UTC; a Monday for weekly).
    /// Default: the last period that has ended.
    pub period_start: Option<String>,
}

/// Make a report now for a period that has ended (the job makes each
/// period's report on its own; this is for a period it did not, or to try
/// reports out). A period has one report: a second is refused with 409.
#[utoipa::path(post, path = "/api/v1/reports/generate", tag = "tenant", security(("tenant" = [])),
    request_body = GenerateRequest,
    responses((status = 201, body = ReportView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn generate(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(r): Json<GenerateRequest>,
) -> Result<(StatusCode, axum::Json<ReportView>), ApiError> {
    let (info, report) =
        reports::generate_now(&p, &a.tenant, &r.kind, r.period_start.as_deref(), now()).await?;
    crate::audit::record(
        &p,
        Some(a.tenant.id),
        &a.actor(),
        "report.generate",
        "report",
        serde_json::json!({"id": info.id, "kind": info.kind, "period_start": info.period_start}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ReportView {
            item: item(&info),
            report,
        }),
    ))
}

/// Whether the job makes this tenant's reports, and who gets them by email.
#[utoipa::path(get, path = "/api/v1/reports/settings", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = ReportSettings), (status = 401, body = ErrorBody)))]
async fn get_settings(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<ReportSettings>, ApiError> {
    Ok(axum::Json(reports::settings(&p, a.tenant.id).await?))
}

/// Replace the report settings (empty recipients: no email).
#[utoipa::path(put, path = "/api/v1/reports/settings", tag = "tenant", security(("tenant" = [])),
    request_body = ReportSettings,
    responses((status = 200, body = ReportSettings), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn put_settings(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(s): Json<ReportSettings>,
) -> Result<axum::Json<ReportSettings>, ApiError> {
    reports::set_settings(&p, a.tenant.id, &s).await?;
    // Recipients are tenant content: the clear audit log counts them.
    crate::audit::record(
        &p,
        Some(a.tenant.id),
        &a.actor(),
        "report_settings.set",
        "report_settings",
        serde_json::json!({"enabled": s.enabled, "recipients": s.recipients.len()}),
    )
    .await?;
    Ok(axum::Json(s))
}
