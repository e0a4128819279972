//! Scheduled reports: a daily and a weekly summary per tenant (top talkers,
//! top destination ports, totals, alarms by kind, device health), kept
//! sealed in the store, downloadable as HTML and PDF and mailed to the
//! tenant's report recipients.
//!
//! Periods are UTC: a day is `[00:00, 24:00)`, a week runs from Monday
//! 00:00 to the next. The job (`jobs`, every `report_interval_secs`) makes
//! the report of the last period that ended at least `report_delay_secs`
//! ago for every live, active tenant with reports enabled, once: the store
//! keeps one report per tenant, kind and period start, so restarts and
//! replicas never make a period twice. The report is then mailed and marked
//! mailed; a failed send is retried by later passes for a day (two replicas
//! trying the same send at the same moment could both send it). Missed
//! periods older than the last one are not made up; an admin can make any
//! past period with `POST /api/v1/reports/generate`. Retention removes
//! reports past the plan's stored days, like the data they sum up.
//!
//! The numbers come from the same queries as the API: flows through the
//! flow store with the window clamped to the plan's visible window
//! (`routes::flows::visible_from`), as `GET /api/v1/flows/top` and
//! `/totals` do, and alarms from `Store::alarm_counts_between`, as
//! `GET /api/v1/alarms/counts?from=&to=` does. A section whose feature the
//! plan leaves out is left out of the report.
//!
//! The stored body is the report's numbers (JSON); HTML and PDF are
//! rendered from it on demand, so what is downloaded later is exactly what
//! was mailed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rampart_flowstore::{Dim, Metric, TopQuery};
use rampart_proto::api::Heartbeat;
use rampart_store::{ReportInfo, Tenant, TenantId, TenantStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::flows::Flows;
use crate::routes::{ms_rfc3339, rfc3339};
use crate::service::{Portal, ServiceError};

const DAY: i64 = 86_400;
/// How many top talkers and ports a report lists.
pub const TOP_N: usize = 10;
/// Where a tenant's report settings are kept (tenant settings, sealed).
const SETTINGS_KEY: &str = "reports";
/// A report's email is retried by later runs for this long after the
/// report was made, then given up (the report stays downloadable).
const MAIL_RETRY_SECS: i64 = DAY;

/// What can go wrong making a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("flow query: {0}")]
    Flows(#[from] rampart_flowstore::FlowStoreError),
}

impl From<rampart_store::StoreError> for ReportError {
    fn from(e: rampart_store::StoreError) -> Self {
        ReportError::Service(e.into())
    }
}

impl From<ReportError> for crate::error::ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Service(s) => s.into(),
            ReportError::Flows(f) => crate::error::ApiError::internal(f),
        }
    }
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// A report's period length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Daily,
    Weekly,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Daily, Kind::Weekly];

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "daily" => Some(Kind::Daily),
            "weekly" => Some(Kind::Weekly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
        }
    }

    fn secs(self) -> i64 {
        match self {
            Kind::Daily => DAY,
            Kind::Weekly => 7 * DAY,
        }
    }

    /// The start of the period of this kind that holds `t` (unix seconds).
    fn floor(self, t: i64) -> i64 {
        let day = t.div_euclid(DAY);
        match self {
            Kind::Daily => day * DAY,
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            Kind::Weekly => (day - (day + 3).rem_euclid(7)) * DAY,
        }
    }

    /// The last period of this kind that ended at or before `t`.
    pub fn last_period(self, t: i64) -> (i64, i64) {
        let end = self.floor(t);
        (end - self.secs(), end)
    }

    /// The period starting on `date` (`YYYY-MM-DD`, UTC); a week must
    /// start on a Monday.
    pub fn period_on(self, date: &str) -> Result<(i64, i64), String> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let d = time::Date::parse(date, &fmt).map_err(|_| {
            "period_start must be a date such as 2026-11-30 (UTC, no time)".to_string()
        })?;
        if self == Kind::Weekly && d.weekday() != time::Weekday::Monday {
            return Err(format!(
                "a weekly report starts on a monday, and {date} is a {}: choose a monday",
                d.weekday().to_string().to_lowercase()
            ));
        }
        let start = d.midnight().assume_utc().unix_timestamp();
        Ok((start, start + self.secs()))
    }
}

/// A tenant's report settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// Whether the job makes this tenant's daily and weekly reports
    /// (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who gets each report by email, at most 20 addresses; empty (the
    /// default): nobody, the reports are only downloadable.
    #[serde(default)]
    pub recipients: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            enabled: true,
            recipients: Vec::new(),
        }
    }
}

impl ReportSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.recipients.len() > crate::email::MAX_RECIPIENTS {
            return Err(format!(
                "at most {} recipients: use a mailing list for more",
                crate::email::MAX_RECIPIENTS
            ));
        }
        for r in &self.recipients {
            crate::email::validate_recipient(r)?;
        }
        Ok(())
    }
}

pub async fn settings(p: &Portal, tenant: TenantId) -> Result<ReportSettings> {
    match p.store.tenant_setting(tenant, SETTINGS_KEY).await? {
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ReportError::Service(ServiceError::Invalid(format!(
                "stored report settings: {e}"
            )))
        }),
        None => Ok(ReportSettings::default()),
    }
}

pub async fn set_settings(p: &Portal, tenant: TenantId, s: &ReportSettings) -> Result<()> {
    s.validate().map_err(ServiceError::Invalid)?;
    let v = serde_json::to_value(s).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    p.store.set_tenant_setting(tenant, SETTINGS_KEY, &v).await?;
    Ok(())
}

// ------------------------------------------------------------------ model

/// One key of a top list, as `GET /api/v1/flows/top` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopRow {
    /// An address or a port.
    #[schema(value_type = Object)]
    pub key: serde_json::Value,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowSection {
    /// The window queried, after clamping to the plan's visible window.
    pub from: String,
    pub to: String,
    /// True when a rollup that keeps only its top keys answered a top list.
    pub approximate: bool,
    /// Scaled by the sampling rates, as `/api/v1/flows/totals`.
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    pub records: u64,
    /// Sources by bytes.
    pub top_talkers: Vec<TopRow>,
    /// Destination ports by bytes.
    pub top_dst_ports: Vec<TopRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KindCount {
    pub kind: String,
    /// Alarms of this kind first seen in the period.
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmSection {
    /// Alarms first seen in the period, in any state.
    pub total: u64,
    /// Most first.
    pub by_kind: Vec<KindCount>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceHealth {
    pub id: uuid::Uuid,
    pub hostname: String,
    /// `pending`, `active` or `revoked`.
    pub status: String,
    pub last_seen: Option<String>,
    /// `online`, `offline` or `never_seen` when the report was made.
    pub connectivity: String,
    /// From the last heartbeat, when there was one.
    pub agent_version: Option<String>,
    pub outbox_batches: Option<u64>,
    pub outbox_bytes: Option<u64>,
    pub outbox_dropped_batches: Option<u64>,
}

/// A report's numbers: what is stored (sealed) and what the renderers read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub tenant: String,
    /// `daily` or `weekly`.
    pub kind: String,
    pub period_start: String,
    pub period_end: String,
    pub generated_at: String,
    /// Absent when the plan leaves flows out.
    pub flows: Option<FlowSection>,
    /// Absent when the plan leaves alarms out.
    pub alarms: Option<AlarmSection>,
    /// By hostname.
    pub devices: Vec<DeviceHealth>,
}

/// Computes a tenant's report over `[start, end)` (unix seconds), made at
/// `now`.
pub async fn build(
    p: &Portal,
    tenant: &Tenant,
    kind: Kind,
    start: i64,
    end: i64,
    now: i64,
) -> Result<Report> {
    let plan = p.plan(tenant.id).await?;
    let flows = if plan.has_feature("flows") {
        Some(flow_section(p, tenant.id, start, end).await?)
    } else {
        None
    };
    let alarms = if plan.has_feature("alarms") {
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for (kind, _, _, n) in p
            .store
            .alarm_counts_between(tenant.id, start * 1000, end * 1000)
            .await?
        {
            *by_kind.entry(kind).or_default() += n;
        }
        let mut by_kind: Vec<KindCount> = by_kind
            .into_iter()
            .map(|(kind, count)| KindCount { kind, count })
            .collect();
        by_kind.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
        Some(AlarmSection {
            total: by_kind.iter().map(|k| k.count).sum(),
            by_kind,
        })
    } else {
        None
    };
    let mut devices: Vec<DeviceHealth> = p
        .store
        .list_devices(tenant.id)
        .await?
        .into_iter()
        .map(|d| {
            let hb: Option<Heartbeat> = d
                .health
                .as_ref()
                .and_then(|h| serde_json::from_value(h.clone()).ok());
            DeviceHealth {
                id: d.id.0,
                connectivity: crate::routes::tenant::connectivity(
                    p.config.offline_after_secs,
                    d.last_seen,
                    now,
                )
                .into(),
                hostname: d.hostname,
                status: d.status,
                last_seen: d.last_seen.map(rfc3339),
                agent_version: hb.as_ref().map(|h| h.agent_version.clone()),
                outbox_batches: hb.as_ref().map(|h| h.outbox_batches),
                outbox_bytes: hb.as_ref().map(|h| h.outbox_bytes),
                outbox_dropped_batches: hb.as_ref().map(|h| h.outbox_dropped_batches),
            }
        })
        .collect();
    devices.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    Ok(Report {
        tenant: tenant.name.clone(),
        kind: kind.as_str().into(),
        period_start: rfc3339(start),
        period_end: rfc3339(end),
        generated_at: rfc3339(now),
        flows,
        alarms,
        devices,
    })
}

async fn flow_section(p: &Portal, tenant: TenantId, start: i64, end: i64) -> Result<FlowSection> {
    // Clamped exactly as the flow API clamps (at the real time, like it).
    let visible = crate::routes::flows::visible_from(p, tenant, crate::service::now_ms()).await?;
    let (start_ms, end_ms) = ((start * 1000).max(visible), (end * 1000).max(visible));
    let secrets = p.secrets(tenant).await?;
    let key = Flows::data_key(&secrets.data_key);
    let store = &p.flows.store;
    let totals = store.totals(tenant, &key, start_ms, end_ms, None).await?;
    let top = |dim| TopQuery {
        start_ms,
        end_ms,
        dim,
        metric: Metric::Bytes,
        n: TOP_N,
        filter: None,
    };
    let talkers = store.top_n(tenant, &key, &top(Dim::Src)).await?;
    let ports = store.top_n(tenant, &key, &top(Dim::DstPort)).await?;
    let rows = |a: &rampart_flowstore::Answer<Vec<rampart_flowstore::TopEntry>>| {
        a.data
            .iter()
            .map(|e| TopRow {
                key: serde_json::to_value(e.key).unwrap_or_default(),
                bytes: e.bytes,
                packets: e.packets,
                flows: e.flows,
            })
            .collect()
    };
    Ok(FlowSection {
        from: ms_rfc3339(start_ms),
        to: ms_rfc3339(end_ms),
        approximate: talkers.approximate || ports.approximate,
        bytes: totals.data.bytes,
        packets: totals.data.packets,
        flows: totals.data.flows,
        records: totals.data.records,
        top_talkers: rows(&talkers),
        top_dst_ports: rows(&ports),
    })
}

/// Makes and stores the tenant's report of `[start, end)`. `None` when the
/// period has a report already (another run made it first).
pub async fn generate(
    p: &Portal,
    tenant: &Tenant,
    kind: Kind,
    start: i64,
    end: i64,
    now: i64,
) -> Result<Option<(ReportInfo, Report)>> {
    let report = build(p, tenant, kind, start, end, now).await?;
    let info = ReportInfo {
        id: uuid::Uuid::new_v4(),
        kind: kind.as_str().into(),
        period_start: start,
        period_end: end,
        created_at: now,
        emailed_at: None,
    };
    let body = serde_json::to_value(&report).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if !p.store.create_report(tenant.id, &info, &body).await? {
        return Ok(None);
    }
    p.metrics.reports_generated.inc();
    tracing::info!(tenant = %tenant.name, report = %info.id, kind = kind.as_str(), period_start = start, "report made");
    Ok(Some((info, report)))
}

/// Reports start no earlier than this (2000-01-01T00:00:00Z).
const EARLIEST: i64 = 946_684_800;

/// Makes a report now, on request (API or CLI): of `kind` (`daily` or
/// `weekly`) for the period starting on `period_start` (`YYYY-MM-DD`),
/// by default the last one that ended. The period must have ended, and
/// must have no report yet ([`ServiceError::Conflict`] names the one it
/// has). The job mails it like one of its own if it is the period it is on.
pub async fn generate_now(
    p: &Portal,
    tenant: &Tenant,
    kind: &str,
    period_start: Option<&str>,
    now: i64,
) -> Result<(ReportInfo, Report)> {
    let kind = Kind::parse(kind)
        .ok_or_else(|| ServiceError::Invalid("kind must be daily or weekly".into()))?;
    let (start, end) = match period_start {
        None => kind.last_period(now),
        Some(d) => kind.period_on(d).map_err(ServiceError::Invalid)?,
    };
    if start < EARLIEST {
        return Err(
            ServiceError::Invalid("period_start must be 2000-01-01 or later".into()).into(),
        );
    }
    if end > now {
        return Err(ServiceError::Invalid(
            "that period has not ended yet: choose an earlier period_start".into(),
        )
        .into());
    }
    let exists = |id: Option<uuid::Uuid>| {
        ReportError::Service(ServiceError::Conflict(format!(
            "the {} period starting {} has a report already ({}): download that one",
            kind.as_str(),
            day(&rfc3339(start)),
            id.map(|i| i.to_string()).unwrap_or_default()
        )))
    };
    if let Some(i) = p
        .store
        .report_for_period(tenant.id, kind.as_str(), start)
        .await?
    {
        return Err(exists(Some(i.id)));
    }
    match generate(p, tenant, kind, start, end, now).await? {
        Some(made) => Ok(made),
        None => {
            let id = p
                .store
                .report_for_period(tenant.id, kind.as_str(), start)
                .await?
                .map(|i| i.id);
            Err(exists(id))
        }
    }
}

/// A stored report with its numbers; `None` for an unknown id.
pub async fn load(
    p: &Portal,
    tenant: TenantId,
    id: uuid::Uuid,
) -> Result<Option<(ReportInfo, Report)>> {
    let Some((info, body)) = p.store.get_report(tenant, id).await? else {
        return Ok(None);
    };
    let report = serde_json::from_value(body).map_err(|e| {
        ServiceError::Store(rampart_store::StoreError::Corrupt(format!(
            "report {id}: {e}"
        )))
    })?;
    Ok(Some((info, report)))
}

// ------------------------------------------------------------- scheduling

/// What one pass of the job did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub generated: usize,
    pub emailed: usize,
}

/// One pass at `now` (unix seconds): for every live, active tenant with
/// reports enabled, the last daily and weekly periods that ended at least
/// `report_delay_secs` before `now` get their report if they have none, and
/// a report not yet mailed is mailed. A period that ended before the tenant
/// existed is skipped. One tenant's failure does not stop the others.
pub async fn run_once(p: &Portal, now: i64) -> Result<Pass> {
    let mut pass = Pass::default();
    let due = now - p.config.report_delay_secs as i64;
    for t in p.store.list_tenants().await? {
        if !t.is_live() || t.status != TenantStatus::Active {
            continue;
        }
        if let Err(e) = tenant_pass(p, &t, now, due, &mut pass).await {
            tracing::warn!(tenant = %t.name, error = %e, "report pass failed for a tenant; will retry");
        }
    }
    Ok(pass)
}

async fn tenant_pass(p: &Portal, t: &Tenant, now: i64, due: i64, pass: &mut Pass) -> Result<()> {
    let s = settings(p, t.id).await?;
    if !s.enabled {
        return Ok(());
    }
    for kind in Kind::ALL {
        let (start, end) = kind.last_period(due);
        if end <= t.created_at {
            continue;
        }
        let can_mail = !s.recipients.is_empty() && p.alarms.mailer.is_some();
        let (info, report) = match p
            .store
            .report_for_period(t.id, kind.as_str(), start)
            .await?
        {
            Some(info) => {
                if !can_mail || info.emailed_at.is_some() || now - info.created_at > MAIL_RETRY_SECS
                {
                    continue;
                }
                match load(p, t.id, info.id).await? {
                    Some(made) => made,
                    None => continue,
                }
            }
            None => match generate(p, t, kind, start, end, now).await? {
                Some(made) => {
                    pass.generated += 1;
                    made
                }
                None => continue,
            },
        };
        if !can_mail {
            continue;
        }
        match mail(p, &s.recipients, &info, &report).await {
            Ok(()) => {
                p.store.mark_report_emailed(t.id, info.id, now).await?;
                pass.emailed += 1;
            }
            Err(e) => {
                p.metrics.report_mail_failures.inc();
                tracing::warn!(tenant = %t.name, report = %info.id, error = %e, "report email failed; a later pass retries")
            }
        }
    }
    Ok(())
}

/// Mails a report (text and HTML, the PDF attached).
pub async fn mail(p: &Portal, to: &[String], info: &ReportInfo, r: &Report) -> Result<(), String> {
    let mailer = p
        .alarms
        .mailer
        .as_ref()
        .ok_or("no smtp_url is configured: the operator must set one for report email")?;
    let pdf = pdf(info, r);
    mailer
        .send_report(crate::email::ReportMail {
            to,
            subject: format!(
                "Rampart {} report for {}: {}",
                r.kind,
                r.tenant,
                day(&r.period_start)
            ),
            text: text(r),
            html: html(info, r),
            pdf_name: file_name(r, "pdf"),
            pdf,
        })
        .await
}

/// The job, started by [`crate::run`].
pub async fn jobs(p: Arc<Portal>) {
    let every = Duration::from_secs(p.config.report_interval_secs);
    loop {
        match run_once(&p, crate::service::now()).await {
            Ok(r) if r != Pass::default() => {
                tracing::info!(generated = r.generated, emailed = r.emailed, "report pass")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "report pass failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}

// -------------------------------------------------------------- rendering

/// The date part of an RFC 3339 time.
fn day(t: &str) -> &str {
    t.get(..10).unwrap_or(t)
}

/// `rampart-acme-daily-2026-11-30.pdf`.
pub fn file_name(r: &Report, ext: &str) -> String {
    // Tenant names are slugs: safe in a file name and a header.
    format!(
        "rampart-{}-{}-{}.{ext}",
        r.tenant,
        r.kind,
        day(&r.period_start)
    )
}

fn key_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes with a binary-free SI unit, for chart labels (tables show exact
/// numbers).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bars of one chart: label, value, value's label.
type Bars = Vec<(String, u64, String)>;

fn top_bars(rows: &[TopRow]) -> Bars {
    rows.iter()
        .map(|r| (key_text(&r.key), r.bytes, human_bytes(r.bytes)))
        .collect()
}

fn alarm_bars(a: &AlarmSection) -> Bars {
    a.by_kind
        .iter()
        .map(|k| (k.kind.clone(), k.count, k.count.to_string()))
        .collect()
}

/// A horizontal bar chart as inline SVG.
fn svg_bars(title: &str, bars: &Bars) -> String {
    const ROW: u64 = 22;
    const LABEL_W: u64 = 220;
    const BAR_W: u64 = 320;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let h = ROW * bars.len() as u64 + 8;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"660\" height=\"{h}\" \
         viewBox=\"0 0 660 {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (label, v, vl)) in bars.iter().enumerate() {
        let y = ROW * i as u64 + 4;
        let w = ((*v as f64 / max as f64 * BAR_W as f64) as u64).max(1);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
             <rect x=\"{}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"#2f6fb0\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            LABEL_W - 6,
            y + 14,
            esc(&truncate(label, 34)),
            LABEL_W,
            ROW - 6,
            LABEL_W + w + 6,
            y + 14,
            esc(vl)
        );
    }
    s.push_str("</svg>");
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('~');
        t
    }
}

fn top_table(title: &str, key: &str, rows: &[TopRow]) -> String {
    let mut s = format!(
        "<h3>{}</h3><table><tr><th>{}</th><th>bytes</th><th>packets</th><th>flows</th></tr>",
        esc(title),
        esc(key)
    );
    for r in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&key_text(&r.key)),
            r.bytes,
            r.packets,
            r.flows
        );
    }
    s.push_str("</table>");
    if rows.is_empty() {
        s.push_str("<p>no flows in this period</p>");
    } else {
        s.push_str(&svg_bars(title, &top_bars(rows)));
    }
    s
}

/// The report as one self-contained HTML page (inline CSS and SVG charts,
/// no external resources); every tenant value is escaped.
pub fn html(info: &ReportInfo, r: &Report) -> String {
    let mut s = String::with_capacity(16 * 1024);
    let title = format!(
        "Rampart {} report for {}: {} to {}",
        r.kind, r.tenant, r.period_start, r.period_end
    );
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:Helvetica,Arial,sans-serif;color:#222;max-width:760px;margin:24px auto}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}\
         th{{background:#eef2f7;text-align:left}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         h1{{font-size:20px}}h2{{font-size:17px;margin-top:28px}}h3{{font-size:15px}}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        s,
        "<h1>{}</h1><p>Tenant <b>{}</b>, {} report, period {} to {} (UTC). Generated {}.</p>",
        esc(&format!("Rampart {} report", r.kind)),
        esc(&r.tenant),
        esc(&r.kind),
        esc(&r.period_start),
        esc(&r.period_end),
        esc(&r.generated_at)
    );
    match &r.flows {
        Some(f) => {
            let _ = write!(
                s,
                "<h2>Traffic</h2><table><tr><th>bytes</th><th>packets</th><th>flows</th><th>records</th></tr>\
                 <tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>\
                 <p>Window queried: {} to {}{}.</p>",
                f.bytes,
                f.packets,
                f.flows,
                f.records,
                esc(&f.from),
                esc(&f.to),
                if f.approximate {
                    " (top lists approximate: read from rollups that keep only their top keys)"
                } else {
                    ""
                }
            );
            s.push_str(&top_table("Top talkers", "source", &f.top_talkers));
            s.push_str(&top_table(
                "Top destination ports",
                "port",
                &f.top_dst_ports,
            ));
        }
        None => s.push_str("<h2>Traffic</h2><p>flows are not in this tenant's plan</p>"),
    }
    match &r.alarms {
        Some(a) => {
            let _ = write!(
                s,
                "<h2>Alarms</h2><p>{} alarm(s) raised in this period.</p><table><tr><th>kind</th><th>alarms</th></tr>",
                a.total
            );
            for k in &a.by_kind {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                    esc(&k.kind),
                    k.count
                );
            }
            s.push_str("</table>");
            if !a.by_kind.is_empty() {
                s.push_str(&svg_bars("Alarms by kind", &alarm_bars(a)));
            }
        }
        None => s.push_str("<h2>Alarms</h2><p>alarms are not in this tenant's plan</p>"),
    }
    s.push_str(
        "<h2>Devices</h2><table><tr><th>hostname</th><th>status</th><th>connectivity</th>\
         <th>last seen</th><th>outbox batches</th><th>outbox bytes</th><th>dropped batches</th></tr>",
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for d in &r.devices {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&d.hostname),
            esc(&d.status),
            esc(&d.connectivity),
            esc(d.last_seen.as_deref().unwrap_or("never")),
            opt(d.outbox_batches),
            opt(d.outbox_bytes),
            opt(d.outbox_dropped_batches)
        );
    }
    let _ = write!(
        s,
        "</table><p style=\"color:#777;font-size:11px\">Report {}</p></body></html>",
        info.id
    );
    s
}

/// The email's plain-text part: the headline numbers.
pub fn text(r: &Report) -> String {
    let mut s = format!(
        "Rampart {} report for {}\nPeriod: {} to {} (UTC)\n\n",
        r.kind, r.tenant, r.period_start, r.period_end
    );
    if let Some(f) = &r.flows {
        let _ = writeln!(
            s,
            "Traffic: {} bytes, {} packets, {} flows",
            f.bytes, f.packets, f.flows
        );
        for (i, t) in f.top_talkers.iter().enumerate() {
            let _ = writeln!(
                s,
                "  talker {}: {} {} bytes",
                i + 1,
                key_text(&t.key),
                t.bytes
            );
        }
    }
    if let Some(a) = &r.alarms {
        let _ = writeln!(s, "Alarms raised: {}", a.total);
        for k in &a.by_kind {
            let _ = writeln!(s, "  {}: {}", k.kind, k.count);
        }
    }
    let online = r
        .devices
        .iter()
        .filter(|d| d.connectivity == "online")
        .count();
    let _ = writeln!(s, "Devices: {} ({} online)", r.devices.len(), online);
    s.push_str("\nThe full report (HTML, with charts) and its PDF are attached.\n");
    s
}

/// The report as a PDF: A4 pages, the standard Helvetica fonts (no font
/// embedded; text stays extractable), vector bar charts.
pub fn pdf(info: &ReportInfo, r: &Report) -> Vec<u8> {
    let mut doc = PdfDoc::new();
    doc.heading(&format!("Rampart {} report: {}", r.kind, r.tenant), 18.0);
    doc.line(
        &format!("Period {} to {} (UTC)", r.period_start, r.period_end),
        10.0,
    );
    doc.line(&format!("Generated {}", r.generated_at), 10.0);
    doc.gap(10.0);
    match &r.flows {
        Some(f) => {
            doc.heading("Traffic", 14.0);
            doc.line(&format!("Total bytes: {}", f.bytes), 11.0);
            doc.line(&format!("Total packets: {}", f.packets), 11.0);
            doc.line(
                &format!("Total flows: {} ({} records)", f.flows, f.records),
                11.0,
            );
            if f.approximate {
                doc.line("Top lists are approximate (read from rollups).", 9.0);
            }
            doc.gap(8.0);
            doc.heading("Top talkers (bytes)", 12.0);
            doc.bars(&top_bars(&f.top_talkers), |b| {
                format!("{} bytes ({})", b.1, b.2)
            });
            doc.gap(8.0);
            doc.heading("Top destination ports (bytes)", 12.0);
            doc.bars(&top_bars(&f.top_dst_ports), |b| {
                format!("{} bytes ({})", b.1, b.2)
            });
        }
        None => doc.line("Flows are not in this tenant's plan.", 11.0),
    }
    doc.gap(10.0);
    match &r.alarms {
        Some(a) => {
            doc.heading("Alarms by kind", 14.0);
            doc.line(&format!("Alarms raised: {}", a.total), 11.0);
            doc.bars(&alarm_bars(a), |b| b.2.clone());
        }
        None => doc.line("Alarms are not in this tenant's plan.", 11.0),
    }
    doc.gap(10.0);
    doc.heading("Devices", 14.0);
    doc.columns(
        &[
            "hostname",
            "status",
            "connectivity",
            "last seen",
            "outbox",
            "dropped",
        ],
        true,
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for d in &r.devices {
        doc.columns(
            &[
                &truncate(&d.hostname, 28),
                &d.status,
                &d.connectivity,
                d.last_seen.as_deref().unwrap_or("never"),
                &opt(d.outbox_batches),
                &opt(d.outbox_dropped_batches),
            ],
            false,
        );
    }
    if r.devices.is_empty() {
        doc.line("No devices.", 10.0);
    }
    doc.finish(&format!("Rampart {} report {}", r.kind, info.id))
}

/// A small page-flowing writer over `pdf_writer`: text lines and bars top
/// to bottom, a new page when one is full.
struct PdfDoc {
    pages: Vec<pdf_writer::Content>,
    y: f32,
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const FONT: pdf_writer::Name<'static> = pdf_writer::Name(b"F1");
const FONT_BOLD: pdf_writer::Name<'static> = pdf_writer::Name(b"F2");

/// Text in the fonts' WinAnsi encoding: Latin-1 as is, anything else `?`.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

impl PdfDoc {
    fn new() -> Self {
        PdfDoc {
            pages: vec![pdf_writer::Content::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn room(&mut self, h: f32) {
        if self.y - h < MARGIN {
            self.pages.push(pdf_writer::Content::new());
            self.y = PAGE_H - MARGIN;
        }
    }

    fn page(&mut self) -> &mut pdf_writer::Content {
        let n = self.pages.len() - 1;
        &mut self.pages[n]
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        let bytes = win_ansi(s);
        let c = self.page();
        c.begin_text();
        c.set_font(if bold { FONT_BOLD } else { FONT }, size);
        c.set_fill_gray(0.1);
        c.next_line(x, y);
        c.show(pdf_writer::Str(&bytes));
        c.end_text();
    }

    fn heading(&mut self, s: &str, size: f32) {
        self.room(size * 1.6);
        self.y -= size * 1.4;
        let y = self.y;
        self.text_at(MARGIN, y, size, true, s);
        self.y -= size * 0.3;
    }

    fn line(&mut self, s: &str, size: f32) {
        self.room(size * 1.4);
        self.y -= size * 1.4;
        let y = self.y;
        self.text_at(MARGIN, y, size, false, s);
    }

    fn gap(&mut self, h: f32) {
        self.y -= h;
    }

    fn columns(&mut self, cells: &[&str], bold: bool) {
        const X: [f32; 6] = [0.0, 150.0, 200.0, 265.0, 390.0, 445.0];
        self.room(13.0);
        self.y -= 13.0;
        let y = self.y;
        for (i, c) in cells.iter().enumerate().take(X.len()) {
            self.text_at(MARGIN + X[i], y, 8.5, bold, c);
        }
    }

    /// One labelled bar per row, scaled to the largest value.
    fn bars(&mut self, bars: &Bars, value: impl Fn(&(String, u64, String)) -> String) {
        const LABEL_W: f32 = 150.0;
        const BAR_W: f32 = 220.0;
        const ROW: f32 = 15.0;
        if bars.is_empty() {
            self.line("None in this period.", 10.0);
            return;
        }
        let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f32;
        for b in bars {
            self.room(ROW);
            self.y -= ROW;
            let y = self.y;
            self.text_at(MARGIN, y + 3.0, 9.0, false, &truncate(&b.0, 30));
            let w = (b.1 as f32 / max * BAR_W).max(1.0);
            let c = self.page();
            c.set_fill_rgb(0.18, 0.44, 0.69);
            c.rect(MARGIN + LABEL_W, y + 1.0, w, ROW - 4.0);
            c.fill_nonzero();
            let label = value(b);
            self.text_at(MARGIN + LABEL_W + w + 6.0, y + 3.0, 9.0, false, &label);
        }
    }

    fn finish(self, title: &str) -> Vec<u8> {
        use pdf_writer::{Finish, Name, Pdf, Rect, Ref, TextStr};
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let font = Ref::new(3);
        let font_bold = Ref::new(4);
        let info = Ref::new(5);
        let page_ref = |i: usize| Ref::new(6 + 2 * i as i32);
        let content_ref = |i: usize| Ref::new(7 + 2 * i as i32);
        pdf.catalog(catalog).pages(tree);
        let n = self.pages.len();
        pdf.pages(tree).kids((0..n).map(page_ref)).count(n as i32);
        pdf.type1_font(font)
            .base_font(Name(b"Helvetica"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.type1_font(font_bold)
            .base_font(Name(b"Helvetica-Bold"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.document_info(info)
            .title(TextStr(title))
            .producer(TextStr("Rampart portal"));
        for (i, content) in self.pages.into_iter().enumerate() {
            let mut page = pdf.page(page_ref(i));
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
                .parent(tree)
                .contents(content_ref(i));
            let mut res = page.resources();
            res.fonts().pair(FONT, font).pair(FONT_BOLD, font_bold);
            res.finish();
            page.finish();
            pdf.stream(content_ref(i), &content.finish());
        }
        pdf.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn periods_are_utc_days_and_monday_weeks() {
        // 2026-12-02 was a Wednesday (calendar), 2026-11-30 the Monday before.
        let now = at("2026-12-02T00:10:00Z");
        assert_eq!(
            Kind::Daily.last_period(now),
            (at("2026-12-01T00:00:00Z"), at("2026-12-02T00:00:00Z"))
        );
        assert_eq!(
            Kind::Weekly.last_period(now),
            (at("2026-11-23T00:00:00Z"), at("2026-11-30T00:00:00Z"))
        );
        // Exactly at a boundary, the period that just ended is the last.
        assert_eq!(
            Kind::Weekly.last_period(at("2026-11-30T00:00:00Z")).1,
            at("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            Kind::Daily.period_on("2026-11-30"),
            Ok((at("2026-11-30T00:00:00Z"), at("2026-12-01T00:00:00Z")))
        );
        assert_eq!(
            Kind::Weekly.period_on("2026-11-30"),
            Ok((at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z")))
        );
        assert!(Kind::Weekly.period_on("2026-12-01").is_err(), "a tuesday");
        for bad in ["2026-13-01", "yesterday", "2026-11-30T00:00:00Z", ""] {
            assert!(Kind::Daily.period_on(bad).is_err(), "{bad}");
        }
    }

    fn hostile_report(devices: usize) -> (ReportInfo, Report) {
        let info = ReportInfo {
            id: uuid::Uuid::nil(),
            kind: "daily".into(),
            period_start: 0,
            period_end: DAY,
            created_at: DAY,
            emailed_at: None,
        };
        let row = |key: &str, bytes| TopRow {
            key: serde_json::Value::from(key),
            bytes,
            packets: 1,
            flows: 1,
        };
        let report = Report {
            tenant: "acme".into(),
            kind: "daily".into(),
            period_start: rfc3339(0),
            period_end: rfc3339(DAY),
            generated_at: rfc3339(DAY),
            flows: Some(FlowSection {
                from: rfc3339(0),
                to: rfc3339(DAY),
                approximate: false,
                bytes: u64::MAX,
                packets: 2,
                flows: 2,
                records: 2,
                top_talkers: vec![row("<img src=x onerror=alert(1)>", u64::MAX), row("b", 0)],
                top_dst_ports: vec![],
            }),
            alarms: Some(AlarmSection {
                total: 0,
                by_kind: vec![],
            }),
            devices: (0..devices)
                .map(|i| DeviceHealth {
                    id: uuid::Uuid::from_u128(i as u128),
                    hostname: format!("<script>alert({i})</script>-hôte→"),
                    status: "active".into(),
                    last_seen: None,
                    connectivity: "never_seen".into(),
                    agent_version: None,
                    outbox_batches: None,
                    outbox_bytes: None,
                    outbox_dropped_batches: None,
                })
                .collect(),
        };
        (info, report)
    }

    #[test]
    fn hostile_tenant_values_render_escaped_and_many_devices_flow_onto_pages() {
        let (info, r) = hostile_report(200);
        let page = html(&info, &r);
        assert!(
            !page.contains("<script") && !page.contains("<img"),
            "unescaped"
        );
        assert!(page.contains("&lt;script&gt;alert(7)&lt;/script&gt;-hôte→"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // Bytes at u64::MAX scale without overflow; an empty list says so.
        assert!(page.contains("no flows in this period"));
        let doc = pdf(&info, &r);
        assert!(doc.starts_with(b"%PDF-"));
        let pages = doc.windows(11).filter(|w| w == b"/Type /Page").count()
            - doc.windows(12).filter(|w| w == b"/Type /Pages").count();
        // 200 device rows of 13 pt do not fit on one A4 page.
        assert!(pages >= 4, "{pages} pages");
        let (info, r) = hostile_report(0);
        assert!(html(&info, &r).contains("<h2>Devices</h2>"));
        let doc = pdf(&info, &r);
        assert!(doc.windows(13).any(|w| w == b"(No devices.)"), "says so");
    }

    #[test]
    fn tenant_text_is_escaped_in_html() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(win_ansi("ü→a"), vec![0xfc, b'?', b'a']);
    }
}
