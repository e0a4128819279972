//! A tenant's flow queries: top-N, time series, search with the nfdump-style
//! filter language, totals; and the tenant's edge data controls.
//!
//! Every query is clamped to the tenant's visible window before it reaches
//! the flow store, so a tenant never sees flows older than its plan allows,
//! and it runs under the tenant's own data key, so it cannot read another
//! tenant's segments even by mistake.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use rampart_flow::filter::Filter;
use rampart_flowstore::{
    Answer, Dim, FlowRow, Metric, RowFilter, SearchQuery, SeriesLabel, SeriesQuery, TopQuery,
};
use rampart_proto::api::ErrorBody;
use rampart_proto::controls::DataControls;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ms_rfc3339, parse_time};
use crate::error::ApiError;
use crate::extract::{AppState, Json, MinRole, Query, TenantAdmin, TenantCaller, TenantReader};
use crate::flows::Flows;
use crate::service::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(top))
        .routes(routes!(series))
        .routes(routes!(search))
        .routes(routes!(totals))
        .routes(routes!(get_data_controls, put_data_controls))
}

const DAY_MS: i64 = 86_400_000;

/// The time window and filter every flow query takes.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// Start (inclusive): RFC 3339, or milliseconds since the epoch.
    /// Default: one hour before `to`.
    pub from: Option<String>,
    /// End (exclusive): RFC 3339, or milliseconds since the epoch. Default: now.
    pub to: Option<String>,
    /// nfdump-style filter, e.g. `src host 10.0.0.1 and dst port 443 and proto tcp`
    /// (see docs/filter.md). A filter makes the query read raw segments.
    pub filter: Option<String>,
}

/// Every answer says how it was computed.
#[derive(Serialize, ToSchema)]
pub struct Meta {
    /// True when a rollup that keeps only its top keys was used, so small
    /// keys may be missing or counted in "other".
    pub approximate: bool,
    /// `raw`, `1m` or `1h`: the table the answer was read from.
    pub resolution: String,
    /// The window actually queried, after clamping to the visible window.
    pub from: String,
    pub to: String,
    /// The oldest instant the tenant's plan lets it see.
    pub visible_from: String,
    pub rows_scanned: u64,
}

struct Resolved {
    start_ms: i64,
    end_ms: i64,
    visible_from: i64,
    filter: Option<RowFilter>,
}

/// Parses the window and filter and clamps the window to what the plan lets
/// the tenant see.
async fn resolve<R: MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    w: &Window,
) -> Result<Resolved, ApiError> {
    let now = now_ms();
    let end = match &w.to {
        Some(v) => parse_time("to", v)?,
        None => now,
    };
    let start = match &w.from {
        Some(v) => parse_time("from", v)?,
        None => end - 3_600_000,
    };
    if start >= end {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from must be before to",
        ));
    }
    let visible_from = visible_from(p, a.tenant.id, now).await?;
    let filter = match w.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(src) => {
            let f = Filter::parse(src)
                .map_err(|e| ApiError::at_position("invalid_filter", e.to_string(), e.position))?;
            let f = Arc::new(f);
            let rf: RowFilter = Arc::new(move |r: &rampart_flow::FlowRecord| f.matches(r));
            Some(rf)
        }
    };
    Ok(Resolved {
        start_ms: start.max(visible_from),
        end_ms: end.max(visible_from),
        visible_from,
        filter,
    })
}

/// The oldest instant (ms) the tenant's plan lets it see at `now_ms`.
/// Every flow query, the API's and the reports' (`crate::reports`), clamps
/// its window to it, so they agree.
pub async fn visible_from(
    p: &crate::Portal,
    tenant: rampart_store::TenantId,
    now_ms: i64,
) -> Result<i64, crate::service::ServiceError> {
    let plan = p.store.flow_retention(tenant).await?;
    Ok(now_ms - i64::from(plan.visible_days) * DAY_MS)
}

fn meta<T>(r: &Resolved, a: &Answer<T>) -> Meta {
    Meta {
        approximate: a.approximate,
        resolution: a.level.as_str().into(),
        from: ms_rfc3339(r.start_ms),
        to: ms_rfc3339(r.end_ms),
        visible_from: ms_rfc3339(r.visible_from),
        rows_scanned: a.rows_scanned,
    }
}

fn parse_dim(v: &str) -> Result<Dim, ApiError> {
    v.parse::<Dim>().map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "dim must be one of src, dst, src_port, dst_port, proto, device, direction, \
             src_country, dst_country, src_asn, dst_asn",
        )
    })
}

fn parse_metric(v: Option<&str>) -> Result<Metric, ApiError> {
    v.unwrap_or("bytes").parse::<Metric>().map_err(|_| {
        ApiError::bad_request("invalid_query", "metric must be bytes, packets or flows")
    })
}

fn flow_error(e: rampart_flowstore::FlowStoreError) -> ApiError {
    if e.is_bad_request() {
        ApiError::bad_request("invalid_query", e.to_string())
    } else {
        ApiError::internal(e)
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopParams {
    /// src, dst, src_port, dst_port, proto, device, direction, src_country,
    /// dst_country, src_asn or dst_asn.
    pub dim: String,
    /// bytes (default), packets or flows. Bytes and packets are scaled by
    /// the sampling rates.
    pub metric: Option<String>,
    /// How many (1 to 1000, default 10).
    pub n: Option<usize>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TopEntryView {
    /// The key: an address, port, protocol number, device id, direction,
    /// ISO country code or ASN.
    #[schema(value_type = Object)]
    pub key: serde_json::Value,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TopAnswer {
    #[serde(flatten)]
    pub meta: Meta,
    pub dim: String,
    pub metric: String,
    pub entries: Vec<TopEntryView>,
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "format must be json or csv",
        )),
    }
}

/// A CSV field: quoted when it holds a separator, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn key_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The top N keys of one dimension by bytes, packets or flows.
#[utoipa::path(get, path = "/api/v1/flows/top", tag = "flows", security(("tenant" = [])),
    params(Window, TopParams),
    responses((status = 200, body = TopAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn top(
    State(p): State<AppState>,
    a: TenantReader,
    Query(w): Query<Window>,
    Query(q): Query<TopParams>,
) -> Result<Response, ApiError> {
    let dim = parse_dim(&q.dim)?;
    let metric = parse_metric(q.metric.as_deref())?;
    let n = q.n.unwrap_or(10);
    if !(1..=1000).contains(&n) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "n must be between 1 and 1000",
        ));
    }
    let csv = wants_csv(q.format.as_deref())?;
    if csv {
        // A CSV download is an export: analysts and above.
        a.require(crate::extract::Role::Analyst)?;
    }
    let r = resolve(&p, &a, &w).await?;
    let secrets = p.secrets(a.tenant.id).await?;
    let ans = p
        .flows
        .store
        .top_n(
            a.tenant.id,
            &Flows::data_key(&secrets.data_key),
            &TopQuery {
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                dim,
                metric,
                n,
                filter: r.filter.clone(),
            },
        )
        .await
        .map_err(flow_error)?;
    let entries: Vec<TopEntryView> = ans
        .data
        .iter()
        .map(|e| TopEntryView {
            key: serde_json::to_value(e.key).unwrap_or_default(),
            bytes: e.bytes,
            packets: e.packets,
            flows: e.flows,
        })
        .collect();
    if csv {
        crate::audit::export(&p, &a, "flows_top", true, entries.len()).await?;
        let mut body = String::from("key,bytes,packets,flows\n");
        for e in &entries {
            body.push_str(&format!(
                "{},{},{},{}\n",
                csv_field(&key_text(&e.key)),
                e.bytes,
                e.packets,
                e.flows
            ));
        }
        return Ok(csv_response("top", body));
    }
    Ok(axum::Json(TopAnswer {
        meta: meta(&r, &ans),
        dim: q.dim,
        metric: q.metric.unwrap_or_else(|| "bytes".into()),
        entries,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Bucket width in seconds (60 to 86400, default 300).
    pub bucket_secs: Option<i64>,
    /// bytes (default), packets or flows.
    pub metric: Option<String>,
    /// Stack the top keys of this dimension; without it, one total series.
    pub dim: Option<String>,
    /// How many keys to stack (1 to 50, default 5); the rest is `other`.
    pub top: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SeriesView {
    /// `total`, `other`, or the key of a stacked series.
    #[schema(value_type = Object)]
    pub key: serde_json::Value,
    pub values: Vec<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct SeriesAnswer {
    #[serde(flatten)]
    pub meta: Meta,
    pub bucket_secs: i64,
    /// RFC 3339 start of each bucket; buckets are aligned to multiples of
    /// the width since the epoch, and a flow counts in its start's bucket.
    pub buckets: Vec<String>,
    pub series: Vec<SeriesView>,
}

/// Bytes, packets or flows over time, total or stacked by the top keys.
#[utoipa::path(get, path = "/api/v1/flows/series", tag = "flows", security(("tenant" = [])),
    params(Window, SeriesParams),
    responses((status = 200, body = SeriesAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn series(
    State(p): State<AppState>,
    a: TenantReader,
    Query(w): Query<Window>,
    Query(q): Query<SeriesParams>,
) -> Result<axum::Json<SeriesAnswer>, ApiError> {
    let bucket_secs = q.bucket_secs.unwrap_or(300);
    if !(60..=86_400).contains(&bucket_secs) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "bucket_secs must be between 60 and 86400",
        ));
    }
    let top = q.top.unwrap_or(5);
    if !(1..=50).contains(&top) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "top must be between 1 and 50",
        ));
    }
    let dim = q.dim.as_deref().map(parse_dim).transpose()?;
    let metric = parse_metric(q.metric.as_deref())?;
    let r = resolve(&p, &a, &w).await?;
    if (r.end_ms - r.start_ms) / (bucket_secs * 1000) > 10_000 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "too many buckets (over 10000): widen bucket_secs or narrow the window",
        ));
    }
    let secrets = p.secrets(a.tenant.id).await?;
    let ans = p
        .flows
        .store
        .series(
            a.tenant.id,
            &Flows::data_key(&secrets.data_key),
            &SeriesQuery {
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                bucket_ms: bucket_secs * 1000,
                metric,
                dim,
                top,
                filter: r.filter.clone(),
            },
        )
        .await
        .map_err(flow_error)?;
    let series = ans
        .data
        .series
        .iter()
        .map(|(label, values)| SeriesView {
            key: match label {
                SeriesLabel::Total => serde_json::Value::from("total"),
                SeriesLabel::Other => serde_json::Value::from("other"),
                SeriesLabel::Key(k) => serde_json::to_value(k).unwrap_or_default(),
            },
            values: values.clone(),
        })
        .collect();
    Ok(axum::Json(SeriesAnswer {
        meta: meta(&r, &ans),
        bucket_secs,
        buckets: ans
            .data
            .bucket_starts
            .iter()
            .map(|b| ms_rfc3339(*b))
            .collect(),
        series,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Flows per page (1 to 10000, default 100).
    pub limit: Option<usize>,
    /// `next` from the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FlowView {
    pub start: String,
    pub end: String,
    pub src_addr: String,
    pub dst_addr: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// As exported (multiply by `sampling_rate` × `resample` to estimate).
    pub bytes: u64,
    pub packets: u64,
    pub tcp_flags: u8,
    pub in_if: u32,
    pub out_if: u32,
    pub direction: String,
    pub exporter: String,
    pub sampling_rate: u32,
    pub resample: u32,
    pub flags: u8,
    pub app: String,
    pub device: String,
    pub src_country: String,
    pub dst_country: String,
    pub src_asn: u32,
    pub dst_asn: u32,
}

const CSV_HEADER: &str = "start,end,src_addr,dst_addr,src_port,dst_port,protocol,bytes,packets,\
tcp_flags,in_if,out_if,direction,exporter,sampling_rate,resample,flags,app,device,src_country,\
dst_country,src_asn,dst_asn\n";

fn flow_view(r: &FlowRow) -> FlowView {
    let f = &r.flow;
    FlowView {
        start: ms_rfc3339(f.start_ms as i64),
        end: ms_rfc3339(f.end_ms as i64),
        src_addr: f.src_addr.to_string(),
        dst_addr: f.dst_addr.to_string(),
        src_port: f.src_port,
        dst_port: f.dst_port,
        protocol: f.protocol,
        bytes: f.bytes,
        packets: f.packets,
        tcp_flags: f.tcp_flags,
        in_if: f.in_if,
        out_if: f.out_if,
        direction: serde_json::to_value(f.direction)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        exporter: f.exporter.to_string(),
        sampling_rate: f.sampling_rate,
        resample: f.resample,
        flags: f.flags,
        app: f.app.as_str().to_string(),
        device: r.device.to_string(),
        src_country: r.src_country.to_string(),
        dst_country: r.dst_country.to_string(),
        src_asn: r.src_asn,
        dst_asn: r.dst_asn,
    }
}

fn csv_row(v: &FlowView) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        v.start,
        v.end,
        v.src_addr,
        v.dst_addr,
        v.src_port,
        v.dst_port,
        v.protocol,
        v.bytes,
        v.packets,
        v.tcp_flags,
        v.in_if,
        v.out_if,
        v.direction,
        v.exporter,
        v.sampling_rate,
        v.resample,
        v.flags,
        csv_field(&v.app),
        v.device,
        v.src_country,
        v.dst_country,
        v.src_asn,
        v.dst_asn
    )
}

#[derive(Serialize, ToSchema)]
pub struct SearchAnswer {
    #[serde(flatten)]
    pub meta: Meta,
    pub flows: Vec<FlowView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// Flows matching a filter, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/flows/search", tag = "flows", security(("tenant" = [])),
    params(Window, SearchParams),
    responses((status = 200, body = SearchAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn search(
    State(p): State<AppState>,
    a: TenantReader,
    Query(w): Query<Window>,
    Query(q): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 10000",
        ));
    }
    let csv = wants_csv(q.format.as_deref())?;
    if csv {
        // A CSV download is an export: analysts and above.
        a.require(crate::extract::Role::Analyst)?;
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor is not one this API gave out: start again without it",
                )
            })
        })
        .transpose()?;
    let r = resolve(&p, &a, &w).await?;
    let secrets = p.secrets(a.tenant.id).await?;
    let ans = p
        .flows
        .store
        .search(
            a.tenant.id,
            &Flows::data_key(&secrets.data_key),
            &SearchQuery {
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                filter: r.filter.clone(),
                limit,
                cursor,
            },
        )
        .await
        .map_err(flow_error)?;
    let flows: Vec<FlowView> = ans.data.rows.iter().map(flow_view).collect();
    let next = ans.data.next.as_ref().map(|c| c.to_string());
    if csv {
        // An export: which window and filter, and how much left the portal.
        let detail = serde_json::json!({
            "format": "csv",
            "rows": flows.len(),
            "from_ms": r.start_ms,
            "to_ms": r.end_ms,
            // Sealed under the tenant's key (a filter names hosts): the
            // audit log is clear and outlives a shredded tenant.
            "filter_sealed": w.filter.as_deref().map(|f| {
                use base64::Engine;
                let f: String = f.chars().take(512).collect();
                base64::engine::general_purpose::STANDARD.encode(secrets.wrap_secret(
                    a.tenant.id,
                    "audit/export-filter",
                    f.as_bytes(),
                ))
            }),
            "next_page": next.is_some(),
        });
        crate::audit::record(
            &p,
            Some(a.tenant.id),
            &a.actor(),
            "export.flows",
            "flows",
            detail,
        )
        .await?;
        let mut body = String::from(CSV_HEADER);
        for v in &flows {
            body.push_str(&csv_row(v));
        }
        let mut resp = csv_response("flows", body);
        if let Some(n) = next.as_deref().and_then(|n| n.parse().ok()) {
            resp.headers_mut().insert("x-next-cursor", n);
        }
        return Ok(resp);
    }
    Ok(axum::Json(SearchAnswer {
        meta: meta(&r, &ans),
        flows,
        next,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct TotalsAnswer {
    #[serde(flatten)]
    pub meta: Meta,
    /// Scaled by the sampling rates.
    pub bytes: u64,
    pub packets: u64,
    /// Exported flows these records stand for (resampling scales them).
    pub flows: u64,
    /// Flow records stored.
    pub records: u64,
}

/// Totals over the window.
#[utoipa::path(get, path = "/api/v1/flows/totals", tag = "flows", security(("tenant" = [])),
    params(Window),
    responses((status = 200, body = TotalsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn totals(
    State(p): State<AppState>,
    a: TenantReader,
    Query(w): Query<Window>,
) -> Result<axum::Json<TotalsAnswer>, ApiError> {
    let r = resolve(&p, &a, &w).await?;
    let secrets = p.secrets(a.tenant.id).await?;
    let ans = p
        .flows
        .store
        .totals(
            a.tenant.id,
            &Flows::data_key(&secrets.data_key),
            r.start_ms,
            r.end_ms,
            r.filter.clone(),
        )
        .await
        .map_err(flow_error)?;
    Ok(axum::Json(TotalsAnswer {
        meta: meta(&r, &ans),
        bytes: ans.data.bytes,
        packets: ans.data.packets,
        flows: ans.data.flows,
        records: ans.data.records,
    }))
}

/// The tenant's edge data controls: what its agents mask before flows leave
/// them.
#[utoipa::path(get, path = "/api/v1/data-controls", tag = "flows", security(("tenant" = [])),
    responses((status = 200, body = DataControls), (status = 401, body = ErrorBody)))]
async fn get_data_controls(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<DataControls>, ApiError> {
    Ok(axum::Json(
        crate::flows::data_controls(&p, a.tenant.id).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct ControlsUpdate {
    /// The stored controls, with their new version.
    pub controls: DataControls,
    /// Devices the signed instruction was queued for; each acks the version
    /// it applied.
    pub queued: usize,
}

/// Replace the edge data controls and send them, signed, to every device.
/// `version` in the body is ignored: the portal assigns the next one.
#[utoipa::path(put, path = "/api/v1/data-controls", tag = "flows", security(("tenant" = [])),
    request_body = DataControls,
    responses((status = 200, body = ControlsUpdate), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn put_data_controls(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(c): Json<DataControls>,
) -> Result<axum::Json<ControlsUpdate>, ApiError> {
    let (controls, queued) =
        crate::flows::set_data_controls(&p, &a.actor(), a.tenant.id, c).await?;
    Ok(axum::Json(ControlsUpdate { controls, queued }))
}
