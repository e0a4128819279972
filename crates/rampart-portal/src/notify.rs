//! Alarm notification. It follows the alarm history, which is
//! append-only: [`notify`] reads events after its cursor, routes `created`
//! and `state` events to the tenant's webhooks (and `created` ones to its
//! email route) and queues one delivery per (target, event), moving the
//! cursor in the same transaction; noisy kinds are left to [`digest`].
//! [`deliver`] retries with exponential backoff until a delivery ends
//! delivered or dead (the dead-letter list in the API).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rampart_alarms::model::Severity;
use rampart_alarms::webhook;
use rampart_store::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::alarms::{derived_id, kind_names};
use crate::service::{now, Portal, Result, ServiceError};

/// Where the notifier keeps its place in the alarm history (portal meta).
const NOTIFY_CURSOR: &str = "alarm_notify_cursor";
/// Webhook calls in flight at once.
const DELIVERY_CONCURRENCY: usize = 16;

/// The tenant's webhooks, read once per round.
async fn webhooks_of<'a>(
    p: &Portal,
    cache: &'a mut HashMap<TenantId, Vec<WebhookRow>>,
    tenant: TenantId,
) -> Result<&'a [WebhookRow]> {
    if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(tenant) {
        e.insert(p.store.list_webhooks(tenant).await?);
    }
    Ok(cache.get(&tenant).map(Vec::as_slice).unwrap_or_default())
}

/// A tenant's email route: who gets alarm mail, from which severity and
/// kinds on, and which noisy kinds come as one digest per period instead
/// of one mail each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRoute {
    /// At most 20 addresses; empty: no mail.
    pub recipients: Vec<String>,
    /// `info`, `low`, `medium` (default), `high` or `critical`.
    #[serde(default = "default_min_severity")]
    pub min_severity: String,
    /// Only these kinds (default: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// These kinds are mailed as one digest per `digest_secs`.
    #[serde(default)]
    pub digest_kinds: Vec<String>,
    /// 60 to 86400 (default 3600).
    #[serde(default = "default_digest_secs")]
    pub digest_secs: u32,
}

fn default_min_severity() -> String {
    "medium".into()
}

fn default_digest_secs() -> u32 {
    3600
}

const EMAIL_SETTING: &str = "alarm_email";

impl Default for EmailRoute {
    fn default() -> Self {
        EmailRoute {
            recipients: Vec::new(),
            min_severity: default_min_severity(),
            kinds: Vec::new(),
            digest_kinds: Vec::new(),
            digest_secs: default_digest_secs(),
        }
    }
}

impl EmailRoute {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.recipients.len() > crate::email::MAX_RECIPIENTS {
            return Err(format!(
                "recipients: at most {}",
                crate::email::MAX_RECIPIENTS
            ));
        }
        for r in &self.recipients {
            crate::email::validate_recipient(r)?;
        }
        self.min_severity
            .parse::<Severity>()
            .map_err(|_| "min_severity must be info, low, medium, high or critical".to_string())?;
        for k in self.kinds.iter().chain(&self.digest_kinds) {
            k.parse::<rampart_alarms::model::AlarmKind>()
                .map_err(|_| format!("kind {k:?} is unknown: use one of {}", kind_names()))?;
        }
        if !(60..=86_400).contains(&self.digest_secs) {
            return Err("digest_secs must be between 60 and 86400".into());
        }
        Ok(())
    }

    fn wants(&self, alarm: &AlarmRow) -> bool {
        let min: Severity = self.min_severity.parse().unwrap_or(Severity::Medium);
        let sev: Severity = alarm.severity.parse().unwrap_or(Severity::Info);
        !self.recipients.is_empty()
            && sev >= min
            && (self.kinds.is_empty() || self.kinds.contains(&alarm.kind))
    }

    fn digests(&self, kind: &str) -> bool {
        self.digest_kinds.iter().any(|k| k == kind)
    }
}

/// The route's delivery target ids, one per tenant and stable: mail for
/// one alarm, and digests (apart, since a digest is keyed by the newest
/// event it covers, which may have had a mail of its own).
fn email_target(tenant: TenantId) -> Uuid {
    derived_id(tenant, b"email-route", 0)
}

fn digest_target(tenant: TenantId) -> Uuid {
    derived_id(tenant, b"email-digest", 0)
}

pub async fn email_route(p: &Portal, tenant: TenantId) -> Result<Option<EmailRoute>> {
    match p.store.tenant_setting(tenant, EMAIL_SETTING).await? {
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| ServiceError::Invalid(format!("stored email route: {e}"))),
        None => Ok(None),
    }
}

pub async fn set_email_route(p: &Portal, tenant: TenantId, r: &EmailRoute) -> Result<()> {
    r.validate().map_err(ServiceError::Invalid)?;
    let v = serde_json::to_value(r).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    // A first digest covers what happens from now on, not the history.
    let start = meta_cursor(p, NOTIFY_CURSOR).await?;
    p.store
        .init_meta(&digest_cursor(tenant), start.to_string().as_bytes())
        .await?;
    p.store
        .set_tenant_setting(tenant, EMAIL_SETTING, &v)
        .await?;
    Ok(())
}

/// Where a tenant's digest keeps the last event it covered (portal meta).
fn digest_cursor(tenant: TenantId) -> String {
    format!("alarm_digest/{tenant}")
}

/// The tenant's webhooks and email route, read once per round.
#[derive(Default)]
struct Targets {
    hooks: HashMap<TenantId, Vec<WebhookRow>>,
    email: HashMap<TenantId, Option<EmailRoute>>,
}

impl Targets {
    async fn email(&mut self, p: &Portal, tenant: TenantId) -> Result<Option<&EmailRoute>> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.email.entry(tenant) {
            e.insert(email_route(p, tenant).await?);
        }
        Ok(self.email.get(&tenant).and_then(Option::as_ref))
    }
}

fn pending(
    channel: DeliveryChannel,
    id: Uuid,
    target_id: Uuid,
    alarm_id: Uuid,
    event_id: i64,
    body: String,
    now: i64,
) -> DeliveryRow {
    DeliveryRow {
        id,
        channel,
        target_id,
        alarm_id,
        event_id,
        body,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_at: now,
        last_error: None,
        created_at: now,
        finished_at: None,
    }
}

/// The text of one alarm in a mail.
fn alarm_text(p: &Portal, domain: &str, a: &AlarmRow) -> String {
    let base = p.config.tenant_url(domain);
    let v = crate::routes::alarms::AlarmView::from(a);
    let mut t = format!(
        "{} ({}, {})\nfirst seen {}, last seen {}, {} occurrence(s)\n",
        a.title, a.severity, a.kind, v.first_seen, v.last_seen, a.count
    );
    for (k, val) in [("source", &a.src), ("destination", &a.dst)] {
        if let Some(x) = val {
            t.push_str(&format!("{k}: {x}\n"));
        }
    }
    t.push_str(&format!("alarm: {base}/api/v1/alarms/{}\n", a.id));
    if let Some(link) = v.flows_link {
        t.push_str(&format!("flows: {base}{link}\n"));
    }
    t
}

/// Routes new history events to webhooks and email; returns deliveries
/// queued. Digest kinds are left to [`digest`].
pub async fn notify(p: &Portal) -> Result<usize> {
    let cursor = meta_cursor(p, NOTIFY_CURSOR).await?;
    let events = p.store.alarm_events_after(cursor, 256).await?;
    let Some(last) = events.last().map(|(_, e)| e.id) else {
        return Ok(0);
    };
    let mut targets = Targets::default();
    let mut rows = Vec::new();
    let now = now();
    for (tenant, ev) in &events {
        let muted = ev.detail.get("muted").and_then(|m| m.as_bool()) == Some(true);
        let kind = match ev.action.as_str() {
            "created" if muted => continue,
            "created" => "alarm.created",
            "state" => "alarm.state_changed",
            _ => continue,
        };
        let hooks = webhooks_of(p, &mut targets.hooks, *tenant).await?.to_vec();
        let email = targets.email(p, *tenant).await?.cloned();
        if hooks.is_empty() && email.is_none() {
            continue;
        }
        let Some(alarm) = p.store.get_alarm(*tenant, ev.alarm_id).await? else {
            continue;
        };
        let severity: Severity = alarm.severity.parse().unwrap_or(Severity::Info);
        for h in &hooks {
            let min: Severity = h.min_severity.parse().unwrap_or(Severity::Info);
            if severity < min || (!h.kinds.is_empty() && !h.kinds.contains(&alarm.kind)) {
                continue;
            }
            let body = serde_json::json!({
                "id": format!("{}-{}", tenant, ev.id),
                "type": kind,
                "created_at": crate::routes::rfc3339(ev.at),
                "actor": ev.actor,
                "alarm": crate::routes::alarms::AlarmView::from(&alarm),
            });
            rows.push((
                *tenant,
                pending(
                    DeliveryChannel::Webhook,
                    derived_id(*tenant, h.id.as_bytes(), ev.id as usize),
                    h.id,
                    alarm.id,
                    ev.id,
                    body.to_string(),
                    now,
                ),
            ));
        }
        // Mail announces new alarms only; state changes are for the API
        // and webhooks.
        if let Some(route) = email.filter(|r| kind == "alarm.created" && r.wants(&alarm)) {
            if route.digests(&alarm.kind) {
                continue;
            }
            let Some(t) = p.store.get_tenant(*tenant).await? else {
                continue;
            };
            let body = crate::email::EmailBody {
                to: route.recipients.clone(),
                subject: format!(
                    "[rampart {}] {} alarm: {}",
                    t.name, alarm.severity, alarm.title
                ),
                text: alarm_text(p, &t.domain, &alarm),
            };
            let target = email_target(*tenant);
            rows.push((
                *tenant,
                pending(
                    DeliveryChannel::Email,
                    derived_id(*tenant, target.as_bytes(), ev.id as usize),
                    target,
                    alarm.id,
                    ev.id,
                    serde_json::to_string(&body)
                        .map_err(|e| ServiceError::Invalid(e.to_string()))?,
                    now,
                ),
            ));
        }
    }
    let n = rows.len();
    p.store.queue_deliveries(NOTIFY_CURSOR, last, &rows).await?;
    Ok(n)
}

async fn meta_cursor(p: &Portal, key: &str) -> Result<i64> {
    Ok(p.store
        .get_meta(key)
        .await?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0))
}

/// Mails each tenant's digest kinds once their period has passed: one
/// mail listing the alarms of those kinds created since the last digest.
/// Periods are aligned to the epoch, so a restart does not shift them.
pub async fn digest(p: &Portal, now: i64) -> Result<usize> {
    let mut sent = 0;
    for t in p.store.list_tenants().await? {
        if !t.is_live() {
            continue;
        }
        // One tenant's unreadable route (its keys destroyed) must not stop
        // the others' digests.
        let route = match email_route(p, t.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e, "digest skipped");
                continue;
            }
        };
        let Some(route) = route else {
            continue;
        };
        if route.digest_kinds.is_empty() || route.recipients.is_empty() {
            continue;
        }
        let key = digest_cursor(t.id);
        let period = i64::from(route.digest_secs);
        let window = now.div_euclid(period);
        let cursor_key = format!("{key}/window");
        if meta_cursor(p, &cursor_key).await? >= window {
            continue;
        }
        // Events up to the start of this window belong to the digest.
        let until = window.saturating_mul(period);
        let mut after = meta_cursor(p, &key).await?;
        let mut alarms: Vec<AlarmRow> = Vec::new();
        let mut last_event = after;
        'scan: loop {
            let page = p.store.alarm_events_after(after, 512).await?;
            let Some(end) = page.last().map(|(_, e)| e.id) else {
                break;
            };
            for (tenant, ev) in &page {
                if ev.at >= until {
                    break 'scan;
                }
                last_event = ev.id;
                let muted = ev.detail.get("muted").and_then(|m| m.as_bool()) == Some(true);
                if *tenant != t.id || ev.action != "created" || muted {
                    continue;
                }
                if let Some(a) = p.store.get_alarm(t.id, ev.alarm_id).await? {
                    if route.digests(&a.kind) && route.wants(&a) {
                        alarms.push(a);
                    }
                }
            }
            after = end;
        }
        let mut rows = Vec::new();
        if let Some(newest) = alarms.last() {
            let mut text = format!(
                "{} alarm(s) of digest kinds ({}) since the last digest:\n\n",
                alarms.len(),
                route.digest_kinds.join(", ")
            );
            for a in alarms.iter().take(200) {
                text.push_str(&alarm_text(p, &t.domain, a));
                text.push('\n');
            }
            if alarms.len() > 200 {
                text.push_str(&format!(
                    "... and {} more: see the alarm list\n",
                    alarms.len() - 200
                ));
            }
            let body = crate::email::EmailBody {
                to: route.recipients.clone(),
                subject: format!("[rampart {}] digest: {} alarm(s)", t.name, alarms.len()),
                text,
            };
            let target = digest_target(t.id);
            rows.push((
                t.id,
                pending(
                    DeliveryChannel::Email,
                    derived_id(t.id, b"digest", window as usize),
                    target,
                    newest.id,
                    last_event,
                    serde_json::to_string(&body)
                        .map_err(|e| ServiceError::Invalid(e.to_string()))?,
                    crate::service::now(),
                ),
            ));
            sent += 1;
        }
        // The event cursor and the window move with the digest, together.
        p.store.queue_deliveries(&key, last_event, &rows).await?;
        p.store.queue_deliveries(&cursor_key, window, &[]).await?;
    }
    Ok(sent)
}

/// The addresses a webhook URL may not name unless allowed: loopback,
/// private, link-local and unspecified ranges.
fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL: http(s), a host, no credentials, and not a
/// private address unless the operator allows it.
pub fn validate_webhook_url(url: &str, allow_private: bool) -> std::result::Result<(), String> {
    if url.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("url does not parse: {e}"))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err("url must be https:// (or http://)".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "url must not carry credentials: the signature authenticates the portal".into(),
        );
    }
    let host = u.host_str().ok_or("url has no host")?;
    if !allow_private {
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if host.eq_ignore_ascii_case("localhost") || literal.is_some_and(is_private) {
            return Err("url names a loopback or private address: use a public host, or ask the operator to set alarm_webhooks_allow_private".into());
        }
    }
    Ok(())
}

/// Sends due deliveries; returns attempts made.
pub async fn deliver(p: &Arc<Portal>) -> Result<usize> {
    let due = p.store.due_deliveries(now(), 64).await?;
    let n = due.len();
    let mut hooks: HashMap<TenantId, Vec<WebhookRow>> = HashMap::new();
    let mut set = tokio::task::JoinSet::new();
    for (tenant, d) in due {
        // A webhook deleted since is a permanent failure; email needs none.
        let hook = match d.channel {
            DeliveryChannel::Webhook => Some(
                webhooks_of(p, &mut hooks, tenant)
                    .await?
                    .iter()
                    .find(|h| h.id == d.target_id)
                    .cloned(),
            ),
            DeliveryChannel::Email => None,
        };
        while set.len() >= DELIVERY_CONCURRENCY {
            let _ = set.join_next().await;
        }
        let p = p.clone();
        set.spawn(async move {
            if let Err(e) = attempt(&p, tenant, d, hook).await {
                tracing::warn!(tenant = %tenant, error = %e, "recording a delivery attempt failed");
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(n)
}

/// Why an attempt failed, and whether another could succeed.
struct Failed {
    error: String,
    permanent: bool,
}

impl From<String> for Failed {
    fn from(error: String) -> Self {
        Failed {
            error,
            permanent: false,
        }
    }
}

async fn attempt(
    p: &Portal,
    tenant: TenantId,
    mut d: DeliveryRow,
    hook: Option<Option<WebhookRow>>,
) -> Result<()> {
    let result: std::result::Result<(), Failed> = match hook {
        Some(None) => Err(Failed {
            error: "webhook was deleted".into(),
            permanent: true,
        }),
        Some(Some(h)) => send_webhook(p, tenant, &h, &d).await.map_err(Failed::from),
        None => send_email(p, &d).await.map_err(Failed::from),
    };
    d.attempts = d.attempts.saturating_add(1);
    let now = now();
    let outcome = match result {
        Ok(()) => {
            d.status = DeliveryStatus::Delivered;
            d.last_error = None;
            d.finished_at = Some(now);
            "delivered"
        }
        Err(f) => {
            d.last_error = Some(f.error.chars().take(512).collect());
            match p
                .alarms
                .backoff
                .delay_after(d.attempts)
                .filter(|_| !f.permanent)
            {
                Some(delay) => {
                    d.next_at = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                    "retry"
                }
                None => {
                    d.status = DeliveryStatus::Dead;
                    d.finished_at = Some(now);
                    tracing::warn!(tenant = %tenant, delivery = %d.id, channel = d.channel.as_str(), attempts = d.attempts, error = ?d.last_error, "alarm delivery dead-lettered");
                    "dead"
                }
            }
        }
    };
    p.metrics
        .alarm_deliveries
        .get_or_create(&crate::metrics::DeliveryLabels {
            channel: d.channel.as_str().into(),
            outcome: outcome.into(),
        })
        .inc();
    p.store.record_delivery_attempt(tenant, &d).await?;
    Ok(())
}

async fn send_email(p: &Portal, d: &DeliveryRow) -> std::result::Result<(), String> {
    let mailer = p
        .alarms
        .mailer
        .as_ref()
        .ok_or("no smtp_url is configured: the operator must set one for alarm email")?;
    let body: crate::email::EmailBody =
        serde_json::from_str(&d.body).map_err(|e| format!("stored email: {e}"))?;
    mailer.send(&body).await
}

async fn send_webhook(
    p: &Portal,
    tenant: TenantId,
    h: &WebhookRow,
    d: &DeliveryRow,
) -> std::result::Result<(), String> {
    validate_webhook_url(&h.url, p.alarms.allow_private_webhooks)?;
    let secrets = p.secrets(tenant).await.map_err(|e| e.to_string())?;
    let secret = secrets
        .unwrap_secret(tenant, &webhook_purpose(h.id), &h.secret_wrapped)
        .map_err(|e| e.to_string())?;
    let sig = webhook::sign(&secret, now(), d.body.as_bytes());
    let r = p
        .alarms
        .http
        .post(&h.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(webhook::SIGNATURE_HEADER, sig)
        .header("rampart-event-id", format!("{}-{}", tenant, d.event_id))
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", r.status()))
    }
}

/// The associated data a webhook's secret is wrapped under.
pub fn webhook_purpose(id: Uuid) -> String {
    format!("webhook/{id}")
}

/// Makes a webhook: a fresh signing secret (returned once, stored wrapped).
pub async fn create_webhook(
    p: &Portal,
    tenant: TenantId,
    url: String,
    min_severity: Severity,
    kinds: Vec<String>,
) -> Result<(WebhookRow, String)> {
    validate_webhook_url(&url, p.alarms.allow_private_webhooks).map_err(ServiceError::Invalid)?;
    for k in &kinds {
        k.parse::<rampart_alarms::model::AlarmKind>()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    }
    let id = Uuid::new_v4();
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    use base64::Engine;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let secrets = p.secrets(tenant).await?;
    let row = WebhookRow {
        id,
        url,
        secret_wrapped: secrets.wrap_secret(tenant, &webhook_purpose(id), secret.as_bytes()),
        min_severity: min_severity.as_str().into(),
        kinds,
        created_at: now(),
    };
    p.store.create_webhook(tenant, &row).await?;
    Ok((row, secret))
}
