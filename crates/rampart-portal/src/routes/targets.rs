//! A tenant's target lists: list, show, create or replace (with a version
//! precondition), delete, import now; and the import sources the operator
//! offers (by name only).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_proto::api::ErrorBody;
use rampart_store::{TargetImport, TargetListRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rfc3339;
use crate::error::ApiError;
use crate::extract::{AppState, Json, Path, TenantAdmin, TenantReader};
use crate::targets;

/// A list of 100 000 entries with its JSON quoting fits.
const MAX_BODY: usize = 2 * targets::MAX_LIST_BYTES;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_lists))
        .routes(routes!(list_sources))
        .routes(routes!(get_list, put_list, delete_list))
        .routes(routes!(import_list))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[derive(Serialize, ToSchema)]
pub struct ImportView {
    pub at: String,
    /// Lines (or hosts-file names) taken as entries.
    pub accepted: u64,
    /// Lines skipped as invalid.
    pub skipped: u64,
    /// Why the import failed; the entries were then kept as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn import_view(i: &TargetImport) -> ImportView {
    ImportView {
        at: rfc3339(i.at),
        accepted: i.accepted,
        skipped: i.skipped,
        error: i.error.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct TargetListView {
    pub name: String,
    pub description: String,
    /// `manual`, or `url:<source>` for a list imported from an operator's
    /// source.
    pub source: String,
    /// Send it back as `expected_version` (or `If-Match`) to replace the list.
    pub version: u64,
    pub entry_count: usize,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_import: Option<ImportView>,
    /// Domains, addresses and CIDRs, normalized and sorted (not in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<String>>,
}

fn view(l: &TargetListRow, with_entries: bool) -> TargetListView {
    TargetListView {
        name: l.name.clone(),
        description: l.description.clone(),
        source: l.source.clone(),
        version: l.version,
        entry_count: l.entries.len(),
        updated_at: rfc3339(l.updated_at),
        last_import: l.last_import.as_ref().map(import_view),
        entries: with_entries.then(|| l.entries.clone()),
    }
}

/// The list with its version as the entity tag.
fn with_etag(status: StatusCode, l: &TargetListRow) -> Response {
    let mut r = (status, axum::Json(view(l, true))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", l.version)) {
        r.headers_mut().insert(axum::http::header::ETAG, v);
    }
    r
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTargetList {
    #[serde(default)]
    pub description: String,
    /// Domains (`example.com`, `*.example.com`), addresses and CIDRs. Must
    /// be empty for a list bound to an import source.
    #[serde(default)]
    pub entries: Vec<String>,
    /// `manual` (default) or `url:<source>`, one of GET
    /// /api/v1/target-list-sources.
    pub source: Option<String>,
    /// The version this write replaces (0 or absent: create). A stale one
    /// is refused with 409. `If-Match: "<version>"` may carry it instead.
    pub expected_version: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    /// Use it as `source: "url:<name>"`.
    pub name: String,
    pub refresh_secs: u64,
}

/// The tenant's target lists, without their entries.
#[utoipa::path(get, path = "/api/v1/target-lists", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = Vec<TargetListView>), (status = 401, body = ErrorBody)))]
async fn list_lists(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<TargetListView>>, ApiError> {
    let rows = targets::list(&p, a.tenant.id).await?;
    Ok(axum::Json(rows.iter().map(|l| view(l, false)).collect()))
}

/// The import sources the operator offers, by name.
#[utoipa::path(get, path = "/api/v1/target-list-sources", tag = "tenant", security(("tenant" = [])),
    responses((status = 200, body = Vec<SourceView>), (status = 401, body = ErrorBody)))]
async fn list_sources(State(p): State<AppState>, _a: TenantReader) -> axum::Json<Vec<SourceView>> {
    axum::Json(
        p.config
            .target_list_sources
            .iter()
            .map(|s| SourceView {
                name: s.name.clone(),
                refresh_secs: s.refresh_secs,
            })
            .collect(),
    )
}

/// One target list with its entries; its version is also the `ETag`.
#[utoipa::path(get, path = "/api/v1/target-lists/{name}", tag = "tenant", security(("tenant" = [])),
    params(("name" = String, Path, description = "List name")),
    responses((status = 200, body = TargetListView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_list(
    State(p): State<AppState>,
    a: TenantReader,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let l = targets::get(&p, a.tenant.id, &name).await?;
    Ok(with_etag(StatusCode::OK, &l))
}

/// `If-Match: "3"` (or `3`, `W/"3"`) as a version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_if_match",
            "if-match must be the list's version, e.g. \"3\", from its etag",
        )
    })
}

/// Create or replace a list. Replacing needs the version replaced, in
/// `expected_version` or `If-Match`; a stale one answers 409 and changes
/// nothing.
#[utoipa::path(put, path = "/api/v1/target-lists/{name}", tag = "tenant", security(("tenant" = [])),
    params(("name" = String, Path, description = "List name")),
    request_body = PutTargetList,
    responses((status = 200, body = TargetListView), (status = 201, body = TargetListView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_list(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(req): Json<PutTargetList>,
) -> Result<Response, ApiError> {
    let header = if_match(&headers)?;
    let expected = match (req.expected_version, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::bad_request(
                "invalid",
                format!("expected_version {b} and if-match {h} differ: send one of them"),
            ))
        }
        (b, h) => b.or(h),
    };
    let l = targets::put(
        &p,
        a.tenant.id,
        &a.actor(),
        &name,
        targets::PutList {
            description: req.description,
            entries: req.entries,
            source: req.source,
            expected_version: expected,
        },
    )
    .await?;
    let status = if l.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &l))
}

/// Delete a list; one still used by the detector settings answers 409
/// naming where.
#[utoipa::path(delete, path = "/api/v1/target-lists/{name}", tag = "tenant", security(("tenant" = [])),
    params(("name" = String, Path, description = "List name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_list(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    targets::delete(&p, a.tenant.id, &a.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import a list from its source now. A failed fetch keeps the entries;
/// the answer's `last_import.error` says why. A list kept by hand, or bound
/// to a source the operator no longer offers, answers 409.
#[utoipa::path(post, path = "/api/v1/target-lists/{name}/import", tag = "tenant", security(("tenant" = [])),
    params(("name" = String, Path, description = "List name")),
    responses((status = 200, body = TargetListView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn import_list(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let l = targets::import_now(&p, a.tenant.id, &a.actor(), &name).await?;
    Ok(with_etag(StatusCode::OK, &l))
}
