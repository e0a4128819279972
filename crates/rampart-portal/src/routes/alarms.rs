//! A tenant's alarms: list and filter, show with evidence and history,
//! acknowledge, resolve, archive, assign, note, export a timeline, counts
//! for the dashboard; mute/allow rules, detector settings, webhooks and the
//! dead-letter list of their deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_alarms::model::Severity;
use rampart_alarms::settings::DetectorSettings;
use rampart_proto::api::ErrorBody;
use rampart_store::{
    AlarmEvent, AlarmFilter, AlarmRow, AlarmRuleRow, AlarmState, AlarmUpdate, DeliveryRow,
    DeliveryStatus, DeviceId, WebhookRow,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ms_rfc3339, parse_time, rfc3339};
use crate::error::ApiError;
use crate::extract::{
    AppState, Json, MinRole, Path, Query, TenantAdmin, TenantAnalyst, TenantCaller, TenantReader,
};
use crate::service::now;
use crate::{alarms, notify};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alarms))
        .routes(routes!(alarm_counts))
        .routes(routes!(alarm_timeline))
        .routes(routes!(get_alarm))
        .routes(routes!(ack_alarm))
        .routes(routes!(resolve_alarm))
        .routes(routes!(archive_alarm))
        .routes(routes!(assign_alarm))
        .routes(routes!(note_alarm))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(delete_rule))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(get_email_route, put_email_route))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Listing more than this many at once is refused.
const MAX_LIMIT: u32 = 1000;
/// A timeline export covers at most this many alarms.
const MAX_TIMELINE_ALARMS: u32 = 5000;

/// One alarm as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AlarmView {
    pub id: Uuid,
    /// The engine's kind, e.g. `ids_alert`, `port_scan`, `agent_offline`.
    pub kind: String,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    pub title: String,
    /// `active`, `acknowledged`, `resolved` or `archived`.
    pub state: String,
    pub device_id: Option<Uuid>,
    pub assignee: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Occurrences folded into this alarm (same dedupe key within the window).
    pub count: u64,
    pub dedupe_key: String,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    /// The newest pieces of evidence, newest last.
    #[schema(value_type = Vec<Object>)]
    pub evidence: serde_json::Value,
    /// nfdump-language filter selecting the flows behind the alarm.
    pub flow_filter: Option<String>,
    /// The flow search for those flows around the alarm's time.
    pub flows_link: Option<String>,
}

impl From<&AlarmRow> for AlarmView {
    fn from(a: &AlarmRow) -> Self {
        // An hour either side of the alarm's span.
        let flows_link = a.flow_filter.as_ref().map(|f| {
            let q: String = url_encode(f);
            format!(
                "/api/v1/flows/search?filter={q}&from={}&to={}",
                a.first_seen.saturating_sub(3_600_000),
                a.last_seen.saturating_add(3_600_000)
            )
        });
        AlarmView {
            id: a.id,
            kind: a.kind.clone(),
            severity: a.severity.clone(),
            title: a.title.clone(),
            state: a.state.as_str().into(),
            device_id: a.device_id.map(|d| d.0),
            assignee: a.assignee.clone(),
            first_seen: ms_rfc3339(a.first_seen),
            last_seen: ms_rfc3339(a.last_seen),
            count: a.count,
            dedupe_key: a.dedupe_key.clone(),
            src: a.src.clone(),
            dst: a.dst.clone(),
            dst_port: a.dst_port,
            protocol: a.protocol,
            evidence: a.evidence.clone(),
            flow_filter: a.flow_filter.clone(),
            flows_link,
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `active`, `acknowledged`, `resolved` or `archived`. Default: all but archived.
    pub state: Option<String>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub device: Option<Uuid>,
    /// On last seen: RFC 3339 or epoch ms.
    pub from: Option<String>,
    pub to: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AlarmList {
    pub alarms: Vec<AlarmView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn parse_state(v: &str) -> Result<AlarmState, ApiError> {
    AlarmState::parse(v).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            "state must be active, acknowledged, resolved or archived",
        )
    })
}

fn filter_from(q: &ListParams) -> Result<AlarmFilter, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if let Some(k) = &q.kind {
        k.parse::<rampart_alarms::model::AlarmKind>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("kind must be one of {}", alarms::kind_names()),
            )
        })?;
    }
    if let Some(s) = &q.severity {
        s.parse::<Severity>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "severity must be info, low, medium, high or critical",
            )
        })?;
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => {
            let bad = || {
                ApiError::bad_request(
                    "invalid_query",
                    "cursor is not one this API gave: start over without it",
                )
            };
            let (ls, id) = c.split_once('_').ok_or_else(bad)?;
            Some((
                ls.parse::<i64>().map_err(|_| bad())?,
                Uuid::parse_str(id).map_err(|_| bad())?,
            ))
        }
    };
    Ok(AlarmFilter {
        state: q.state.as_deref().map(parse_state).transpose()?,
        kind: q.kind.clone(),
        severity: q.severity.clone(),
        device_id: q.device.map(DeviceId),
        from: q
            .from
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?,
        to: q.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        before,
        limit,
    })
}

/// List alarms, newest first, filtered by state, kind, severity, device and time.
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", security(("tenant" = [])),
    params(ListParams),
    responses((status = 200, body = AlarmList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_alarms(
    State(p): State<AppState>,
    a: TenantReader,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<AlarmList>, ApiError> {
    let f = filter_from(&q)?;
    let rows = p.store.list_alarms(a.tenant.id, &f).await?;
    let next_cursor = (rows.len() == f.limit as usize)
        .then(|| rows.last().map(|r| format!("{}_{}", r.last_seen, r.id)))
        .flatten();
    Ok(axum::Json(AlarmList {
        alarms: rows.iter().map(AlarmView::from).collect(),
        next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct AlarmCount {
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub count: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountWindow {
    /// With `to`: count the alarms first seen in `[from, to)`, in every
    /// state (archived included), as the reports do. RFC 3339 or epoch ms.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Alarms per kind, severity and state (archived ones left out), for the
/// dashboard; or, with `from` and `to`, those raised in that window.
#[utoipa::path(get, path = "/api/v1/alarms/counts", tag = "alarms", security(("tenant" = [])),
    params(CountWindow),
    responses((status = 200, body = Vec<AlarmCount>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn alarm_counts(
    State(p): State<AppState>,
    a: TenantReader,
    Query(w): Query<CountWindow>,
) -> Result<axum::Json<Vec<AlarmCount>>, ApiError> {
    let counts = match (&w.from, &w.to) {
        (None, None) => p.store.alarm_counts(a.tenant.id).await?,
        (Some(from), Some(to)) => {
            let (from, to) = (parse_time("from", from)?, parse_time("to", to)?);
            if from >= to {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "from must be before to",
                ));
            }
            p.store.alarm_counts_between(a.tenant.id, from, to).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give both from and to, or neither",
            ))
        }
    };
    Ok(axum::Json(
        counts
            .into_iter()
            .map(|(kind, severity, state, count)| AlarmCount {
                kind,
                severity,
                state: state.as_str().into(),
                count,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct HistoryView {
    pub at: String,
    pub actor: String,
    /// `created`, `bumped`, `state`, `assigned` or `note`.
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<&AlarmEvent> for HistoryView {
    fn from(e: &AlarmEvent) -> Self {
        HistoryView {
            at: rfc3339(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AlarmDetail {
    pub alarm: AlarmView,
    /// Every change, oldest first.
    pub history: Vec<HistoryView>,
}

async fn detail<R: MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    id: Uuid,
) -> Result<AlarmDetail, ApiError> {
    let alarm = p
        .store
        .get_alarm(a.tenant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("alarm {id}")))?;
    let history = p.store.alarm_history(a.tenant.id, id).await?;
    Ok(AlarmDetail {
        alarm: AlarmView::from(&alarm),
        history: history.iter().map(HistoryView::from).collect(),
    })
}

/// One alarm with its evidence, the link to its flows and its history.
#[utoipa::path(get, path = "/api/v1/alarms/{id}", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    responses((status = 200, body = AlarmDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_alarm(
    State(p): State<AppState>,
    a: TenantReader,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AlarmDetail>, ApiError> {
    Ok(axum::Json(detail(&p, &a, id).await?))
}

/// The alarm history's actor: `token:<name>` for an API token,
/// `user:<id>` (a tenant user) or `msp:<email>` for a person.
fn actor<R: MinRole>(a: &TenantCaller<R>) -> String {
    match &a.credential {
        crate::extract::Credential::Token(t) => format!("token:{}", t.name),
        _ => a.actor().to_string(),
    }
}

async fn update<R: MinRole>(
    p: &AppState,
    a: &TenantCaller<R>,
    id: Uuid,
    u: AlarmUpdate,
) -> Result<axum::Json<AlarmView>, ApiError> {
    let row = p
        .store
        .update_alarm(a.tenant.id, id, &actor(a), &u, now())
        .await
        .map_err(|e| match e {
            rampart_store::StoreError::NotFound(_) => ApiError::not_found(format!("alarm {id}")),
            e => e.into(),
        })?;
    if matches!(u, AlarmUpdate::State(_)) {
        // State changes are notified.
        p.alarms.wake.notify_one();
    }
    Ok(axum::Json(AlarmView::from(&row)))
}

/// Acknowledge: someone is on it.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/ack", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    responses((status = 200, body = AlarmView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn ack_alarm(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AlarmView>, ApiError> {
    update(&p, &a, id, AlarmUpdate::State(AlarmState::Acknowledged)).await
}

/// Resolve: a new occurrence afterwards opens a new alarm.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/resolve", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    responses((status = 200, body = AlarmView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resolve_alarm(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AlarmView>, ApiError> {
    update(&p, &a, id, AlarmUpdate::State(AlarmState::Resolved)).await
}

/// Archive: out of the default lists, kept for the record.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/archive", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    responses((status = 200, body = AlarmView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_alarm(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AlarmView>, ApiError> {
    update(&p, &a, id, AlarmUpdate::State(AlarmState::Archived)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Who works on it (1 to 128 characters); null to unassign.
    pub assignee: Option<String>,
}

/// Assign the alarm to someone, or unassign it.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/assign", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    request_body = Assign,
    responses((status = 200, body = AlarmView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn assign_alarm(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Path(id): Path<Uuid>,
    Json(req): Json<Assign>,
) -> Result<axum::Json<AlarmView>, ApiError> {
    if req
        .assignee
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 128)
    {
        return Err(ApiError::bad_request(
            "invalid",
            "assignee must be 1 to 128 characters, or null to unassign",
        ));
    }
    update(&p, &a, id, AlarmUpdate::Assign(req.assignee)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// 1 to 4096 characters.
    pub text: String,
}

/// Add a note to the alarm's history.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/notes", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Alarm id")),
    request_body = Note,
    responses((status = 200, body = AlarmView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn note_alarm(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Path(id): Path<Uuid>,
    Json(req): Json<Note>,
) -> Result<axum::Json<AlarmView>, ApiError> {
    if req.text.is_empty() || req.text.len() > 4096 {
        return Err(ApiError::bad_request(
            "invalid",
            "text must be 1 to 4096 characters",
        ));
    }
    update(&p, &a, id, AlarmUpdate::Note(req.text)).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// On last seen: RFC 3339 or epoch ms. Default: the last 24 hours.
    pub from: Option<String>,
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    pub alarm_id: Uuid,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub actor: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Export every change of the alarms seen in a window, oldest first, as JSON or CSV.
#[utoipa::path(get, path = "/api/v1/alarms/timeline", tag = "alarms", security(("tenant" = [])),
    params(TimelineParams),
    responses((status = 200, body = Vec<TimelineEntry>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn alarm_timeline(
    State(p): State<AppState>,
    a: TenantAnalyst,
    Query(q): Query<TimelineParams>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "format must be json or csv",
            ))
        }
    };
    let to = match &q.to {
        Some(v) => parse_time("to", v)?,
        None => crate::service::now_ms(),
    };
    let from = match &q.from {
        Some(v) => parse_time("from", v)?,
        None => to.saturating_sub(86_400_000),
    };
    let f = AlarmFilter {
        from: Some(from),
        to: Some(to),
        limit: MAX_TIMELINE_ALARMS,
        ..Default::default()
    };
    let mut entries = Vec::new();
    let mut alarms = p.store.list_alarms(a.tenant.id, &f).await?;
    let archived = AlarmFilter {
        state: Some(AlarmState::Archived),
        ..f
    };
    alarms.extend(p.store.list_alarms(a.tenant.id, &archived).await?);
    for al in &alarms {
        for e in p.store.alarm_history(a.tenant.id, al.id).await? {
            entries.push((e, al));
        }
    }
    entries.sort_by_key(|(e, _)| e.id);
    let rows: Vec<TimelineEntry> = entries
        .into_iter()
        .map(|(e, al)| TimelineEntry {
            at: rfc3339(e.at),
            alarm_id: al.id,
            kind: al.kind.clone(),
            severity: al.severity.clone(),
            title: al.title.clone(),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        })
        .collect();
    crate::audit::export(&p, &a, "alarm_timeline", csv, rows.len()).await?;
    if !csv {
        return Ok(axum::Json(rows).into_response());
    }
    let mut body = String::from("at,alarm_id,kind,severity,title,actor,action,detail\n");
    for r in &rows {
        body.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.at,
            r.alarm_id,
            r.kind,
            r.severity,
            csv_field(&r.title),
            csv_field(&r.actor),
            r.action,
            csv_field(&r.detail.to_string())
        ));
    }
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"alarm-timeline.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// A mute or allow rule as the API takes and shows it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_deserializing)]
    pub id: Option<Uuid>,
    /// `mute` (silence matching alarms for a while) or `allow` (known-good
    /// traffic that should never alarm).
    pub action: String,
    /// Alarm kind; absent matches every kind.
    pub kind: Option<String>,
    /// Matches alarms whose source or destination is this address.
    pub host: Option<String>,
    /// Matches alarms whose source or destination is in this CIDR.
    pub network: Option<String>,
    pub port: Option<u16>,
    /// RFC 3339 or epoch ms; absent never expires.
    pub expires_at: Option<String>,
    #[serde(default)]
    pub comment: String,
}

fn rule_view(r: &AlarmRuleRow) -> Rule {
    Rule {
        id: Some(r.id),
        action: r.action.clone(),
        kind: r.kind.clone(),
        host: r.host.clone(),
        network: r.network.clone(),
        port: r.port,
        expires_at: r.expires_at.map(ms_rfc3339),
        comment: r.comment.clone(),
    }
}

#[utoipa::path(get, path = "/api/v1/alarm-rules", tag = "alarms", security(("tenant" = [])),
    responses((status = 200, body = Vec<Rule>), (status = 401, body = ErrorBody)))]
async fn list_rules(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<Vec<Rule>>, ApiError> {
    let rows = p.store.list_alarm_rules(a.tenant.id).await?;
    Ok(axum::Json(rows.iter().map(rule_view).collect()))
}

/// Add a mute or allow rule (by kind, host, network, port, with an expiry).
#[utoipa::path(post, path = "/api/v1/alarm-rules", tag = "alarms", security(("tenant" = [])),
    request_body = Rule,
    responses((status = 201, body = Rule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_rule(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(r): Json<Rule>,
) -> Result<(StatusCode, axum::Json<Rule>), ApiError> {
    let row = AlarmRuleRow {
        id: Uuid::new_v4(),
        action: r.action,
        kind: r.kind,
        host: r.host,
        network: r.network,
        port: r.port,
        expires_at: r
            .expires_at
            .as_deref()
            .map(|v| parse_time("expires_at", v))
            .transpose()?,
        comment: r.comment,
        created_at: now(),
    };
    alarms::create_rule(&p, a.tenant.id, &row).await?;
    Ok((StatusCode::CREATED, axum::Json(rule_view(&row))))
}

#[utoipa::path(delete, path = "/api/v1/alarm-rules/{id}", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_rule(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if p.store.delete_alarm_rule(a.tenant.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("alarm rule {id}")))
    }
}

/// The tenant's detector settings: thresholds, windows, on/off, internal
/// networks and blocked countries, ASNs and networks.
#[utoipa::path(get, path = "/api/v1/alarm-settings", tag = "alarms", security(("tenant" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
async fn get_settings(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<DetectorSettings>, ApiError> {
    Ok(axum::Json(alarms::settings(&p, a.tenant.id).await?))
}

/// Replace the detector settings (omitted fields take their defaults).
#[utoipa::path(put, path = "/api/v1/alarm-settings", tag = "alarms", security(("tenant" = [])),
    request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn put_settings(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(s): Json<DetectorSettings>,
) -> Result<axum::Json<DetectorSettings>, ApiError> {
    alarms::set_settings(&p, a.tenant.id, &s).await?;
    Ok(axum::Json(s))
}

/// Who gets alarm email: recipients, minimum severity, kinds, and the
/// noisy kinds sent as one digest per period.
#[utoipa::path(get, path = "/api/v1/alarm-email", tag = "alarms", security(("tenant" = [])),
    responses((status = 200, body = notify::EmailRoute), (status = 401, body = ErrorBody)))]
async fn get_email_route(
    State(p): State<AppState>,
    a: TenantReader,
) -> Result<axum::Json<notify::EmailRoute>, ApiError> {
    let r = notify::email_route(&p, a.tenant.id).await?;
    Ok(axum::Json(r.unwrap_or_default()))
}

/// Replace the email route (empty recipients: no mail).
#[utoipa::path(put, path = "/api/v1/alarm-email", tag = "alarms", security(("tenant" = [])),
    request_body = notify::EmailRoute,
    responses((status = 200, body = notify::EmailRoute), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn put_email_route(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(r): Json<notify::EmailRoute>,
) -> Result<axum::Json<notify::EmailRoute>, ApiError> {
    notify::set_email_route(&p, a.tenant.id, &r).await?;
    Ok(axum::Json(r))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub min_severity: String,
    /// Alarm kinds sent; empty: every kind.
    pub kinds: Vec<String>,
    pub created_at: String,
}

fn webhook_view(h: &WebhookRow) -> WebhookView {
    WebhookView {
        id: h.id,
        url: h.url.clone(),
        min_severity: h.min_severity.clone(),
        kinds: h.kinds.clone(),
        created_at: rfc3339(h.created_at),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where alarm events are POSTed (https, or http where allowed).
    pub url: String,
    /// Send alarms of at least this severity (default `info`: all).
    pub min_severity: Option<String>,
    /// Send only these kinds (default: all).
    #[serde(default)]
    pub kinds: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub webhook: WebhookView,
    /// The signing secret, shown only now. Each delivery carries
    /// `Rampart-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub secret: String,
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "alarms", security(("tenant" = [])),
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = ErrorBody)))]
async fn list_webhooks(
    State(p): State<AppState>,
    a: TenantAdmin,
) -> Result<axum::Json<Vec<WebhookView>>, ApiError> {
    let rows = p.store.list_webhooks(a.tenant.id).await?;
    Ok(axum::Json(rows.iter().map(webhook_view).collect()))
}

/// Add a webhook for alarm events; the answer holds its signing secret, once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "alarms", security(("tenant" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_webhook(
    State(p): State<AppState>,
    a: TenantAdmin,
    Json(req): Json<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<CreatedWebhook>), ApiError> {
    let min = match req.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => s.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid",
                "min_severity must be info, low, medium, high or critical",
            )
        })?,
    };
    if req.kinds.len() > 32 {
        return Err(ApiError::bad_request("invalid", "kinds: at most 32"));
    }
    let (row, secret) = notify::create_webhook(&p, a.tenant.id, req.url, min, req.kinds).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhook {
            webhook: webhook_view(&row),
            secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "alarms", security(("tenant" = [])),
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(p): State<AppState>,
    a: TenantAdmin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if p.store.delete_webhook(a.tenant.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("webhook {id}")))
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead` (the dead-letter list). Default: all.
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    /// `webhook` or `email`.
    pub channel: String,
    /// The webhook id; for email, the tenant's email route.
    pub target_id: Uuid,
    pub alarm_id: Uuid,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

fn delivery_view(d: &DeliveryRow) -> DeliveryView {
    DeliveryView {
        id: d.id,
        channel: d.channel.as_str().into(),
        target_id: d.target_id,
        alarm_id: d.alarm_id,
        status: d.status.as_str().into(),
        attempts: d.attempts,
        next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.next_at)),
        last_error: d.last_error.clone(),
        created_at: rfc3339(d.created_at),
        finished_at: d.finished_at.map(rfc3339),
    }
}

/// Alarm notifications (webhook calls and mail), newest first;
/// `status=dead` is the dead-letter list.
#[utoipa::path(get, path = "/api/v1/alarm-deliveries", tag = "alarms", security(("tenant" = [])),
    params(DeliveryParams),
    responses((status = 200, body = Vec<DeliveryView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_deliveries(
    State(p): State<AppState>,
    a: TenantReader,
    Query(q): Query<DeliveryParams>,
) -> Result<axum::Json<Vec<DeliveryView>>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "status must be pending, delivered or dead")
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let rows = p.store.list_deliveries(a.tenant.id, status, limit).await?;
    Ok(axum::Json(rows.iter().map(delivery_view).collect()))
}
