//! The portal side of the alarms: the detection queue and the operational
//! sources (refused instructions, agents gone silent, outboxes dropping
//! data). Notification is [`crate::notify`].
//!
//! Detection never sits on the ingest path: ingest only makes a batch
//! durable and rings [`Alarms::wake`]. The detection loop takes batches the
//! detectors have not seen (`detected_at IS NULL`, a queue separate from the
//! flow store's), runs them through `rampart_alarms`, and commits the alarms,
//! the detector state and the "detected" marks in one transaction. So a
//! crash or a restart repeats a batch's detection from the state saved with
//! the batches before it (no alarm lost, none raised twice), and a batch
//! uploaded twice is detected once (the spool keeps one row per batch id).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart_alarms::detect::{FlowDetectors, FlowObs};
use rampart_alarms::model::Candidate;
use rampart_alarms::rules::{MuteRule, RuleAction};
use rampart_alarms::settings::DetectorSettings;
use rampart_alarms::source::{AgentWatch, AlarmSource};
use rampart_alarms::webhook;
use rampart_proto::alerts::{self, IdsAlert};
use rampart_store::*;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::service::{now, now_ms, Portal, Result, ServiceError};

/// Batches taken per kind and round of the detection loop.
const BATCHES_PER_ROUND: u32 = 64;
/// Evidence items kept on an alarm (the newest).
const MAX_EVIDENCE: usize = 20;
/// Tenant setting holding the detector settings.
const SETTINGS_KEY: &str = "detector_settings";
/// A webhook call may take this long.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an occurrence of a key extends its open alarm (bumps its
/// count) rather than opening a new one.
pub const DEDUPE_WINDOW_MS: i64 = 3_600_000;

/// Spool kinds the detectors read.
const DETECTED_KINDS: [&str; 2] = [alerts::BATCH_KIND, "flows"];

/// A tenant's flow detectors, kept between rounds, with the settings they
/// were built from.
struct TenantDetectors {
    settings: DetectorSettings,
    flows: FlowDetectors,
    /// When the state was last saved, and how big it was.
    saved: Option<(std::time::Instant, usize)>,
    /// (name, version) of the `blocked_lists` target lists loaded.
    lists: Vec<(String, u64)>,
}

/// The detector state is saved with every commit while it is small. A
/// large one (it can reach tens of MB at the caps) is saved at most this
/// often: a restart then replays no batch (they are marked detected) but
/// resumes from baselines up to this old, which can only delay an alarm
/// (windows start over), never duplicate one (open alarms dedupe).
const LARGE_STATE_SAVE_EVERY: Duration = Duration::from_secs(30);
const SMALL_STATE: usize = 1 << 20;

/// The alarm half of the portal.
pub struct Alarms {
    /// Rung by ingest when a batch the detectors read lands, and by
    /// operational sources, so alarms are raised within moments.
    pub wake: Notify,
    detectors: tokio::sync::Mutex<HashMap<TenantId, TenantDetectors>>,
    agents: tokio::sync::Mutex<HashMap<TenantId, AgentWatch>>,
    pub(crate) http: reqwest::Client,
    pub(crate) backoff: webhook::Backoff,
    /// Lets tests and operators on private networks send webhooks to
    /// loopback and private addresses (off by default: a tenant must not
    /// make the portal call its own infrastructure).
    pub(crate) allow_private_webhooks: bool,
    offline_after_ms: i64,
    /// The operator's SMTP relay, when one is configured.
    pub(crate) mailer: Option<crate::email::Mailer>,
}

impl Alarms {
    pub fn new(
        allow_private_webhooks: bool,
        backoff: webhook::Backoff,
        offline_after_secs: u64,
        ca_file: &std::path::Path,
        smtp: Option<(&str, &str)>,
    ) -> Result<Self> {
        let mailer = smtp
            .map(|(url, from)| crate::email::Mailer::new(url, from))
            .transpose()
            .map_err(ServiceError::Invalid)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(webhook_tls(ca_file)?)
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rampart-portal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ServiceError::Invalid(format!("webhook client: {e}")))?;
        Ok(Alarms {
            wake: Notify::new(),
            detectors: Default::default(),
            agents: Default::default(),
            http,
            backoff,
            allow_private_webhooks,
            offline_after_ms: i64::try_from(offline_after_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            mailer,
        })
    }

    /// Whether ingest of a batch of `kind` should wake the detectors.
    pub fn reads(kind: &str) -> bool {
        DETECTED_KINDS.contains(&kind)
    }
}

/// TLS for webhook calls: verified against the operator's CA bundle (the
/// system's by default). A missing bundle leaves https webhooks failing with
/// a certificate error, never unverified.
pub(crate) fn webhook_tls(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match rustls::pki_types::CertificateDer::pem_file_iter(ca_file) {
        Ok(certs) => {
            let (added, _ignored) = roots.add_parsable_certificates(certs.flatten());
            tracing::debug!(file = %ca_file.display(), added, "webhook CA bundle loaded");
        }
        Err(e) => {
            tracing::warn!(file = %ca_file.display(), error = %e, "webhook CA bundle unreadable: https webhooks will fail until alarm_webhook_ca_file names one")
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServiceError::Tls(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The tenant's detector settings (the defaults until set).
pub async fn settings(p: &Portal, tenant: TenantId) -> Result<DetectorSettings> {
    match p.store.tenant_setting(tenant, SETTINGS_KEY).await? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ServiceError::Invalid(format!("stored detector settings: {e}"))),
        None => Ok(DetectorSettings::default()),
    }
}

pub async fn set_settings(p: &Portal, tenant: TenantId, s: &DetectorSettings) -> Result<()> {
    s.validate().map_err(ServiceError::Invalid)?;
    crate::targets::check_exist(p, tenant, &s.blocked_lists).await?;
    let v = serde_json::to_value(s).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    p.store.set_tenant_setting(tenant, SETTINGS_KEY, &v).await?;
    Ok(())
}

/// A stable alarm id for the `i`th candidate raised from `origin`, so a
/// retried commit proposes the same ids.
pub(crate) fn derived_id(tenant: TenantId, origin: &[u8], i: usize) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"rampart-alarm-id-v1");
    h.update(tenant.0.as_bytes());
    h.update(origin);
    h.update((i as u64).to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn occurrence(
    c: &Candidate,
    new_id: Uuid,
    origin: serde_json::Value,
    muted: bool,
) -> AlarmOccurrence {
    let mut ev = serde_json::json!({ "at": c.at_ms, "origin": origin });
    if let (Some(obj), Some(extra)) = (ev.as_object_mut(), c.evidence.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    AlarmOccurrence {
        new_id,
        device_id: c.device.map(DeviceId),
        kind: c.kind.as_str().into(),
        severity: c.severity.as_str().into(),
        title: c.title.clone(),
        dedupe_key: c.dedupe_key.clone(),
        at: c.at_ms,
        src: c.src.map(|a| a.to_string()),
        dst: c.dst.map(|a| a.to_string()),
        dst_port: c.dst_port,
        protocol: c.protocol,
        evidence: serde_json::Value::Array(vec![ev]),
        flow_filter: c.flow_filter.clone(),
        window_ms: DEDUPE_WINDOW_MS,
        muted,
    }
}

/// The tenant's rules in force, in the engine's form (rows that no longer
/// parse are skipped with a warning rather than stopping detection).
async fn rules(p: &Portal, tenant: TenantId) -> Result<Vec<MuteRule>> {
    Ok(p.store
        .list_alarm_rules(tenant)
        .await?
        .into_iter()
        .filter_map(|r| match rule_from_row(&r) {
            Ok(rule) => Some(rule),
            Err(e) => {
                tracing::warn!(tenant = %tenant, rule = %r.id, error = %e, "alarm rule skipped");
                None
            }
        })
        .collect())
}

pub fn rule_from_row(r: &AlarmRuleRow) -> std::result::Result<MuteRule, String> {
    Ok(MuteRule {
        kind: r
            .kind
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: rampart_alarms::Error| e.to_string())?,
        host: r
            .host
            .as_deref()
            .map(str::parse::<IpAddr>)
            .transpose()
            .map_err(|e| e.to_string())?,
        network: r.network.clone(),
        port: r.port,
        expires_at_ms: r.expires_at,
        action: match r.action.as_str() {
            "allow" => RuleAction::Allow,
            _ => RuleAction::Mute,
        },
    })
}

/// Stores a mute or allow rule after the engine's own parse of it: a rule
/// the detectors could not apply is refused here, not skipped later.
pub async fn create_rule(p: &Portal, tenant: TenantId, row: &AlarmRuleRow) -> Result<()> {
    if !matches!(row.action.as_str(), "mute" | "allow") {
        return Err(ServiceError::Invalid("action must be mute or allow".into()));
    }
    if row.comment.len() > 1024 {
        return Err(ServiceError::Invalid(
            "comment must be at most 1024 characters".into(),
        ));
    }
    rule_from_row(row)
        .map_err(ServiceError::Invalid)?
        .validate()
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    p.store.create_alarm_rule(tenant, row).await?;
    Ok(())
}

/// Records candidates that come from no batch (operational sources): rules
/// apply, then dedupe as for every other source.
pub async fn raise(
    p: &Portal,
    tenant: TenantId,
    cands: Vec<Candidate>,
) -> Result<Vec<AlarmOutcome>> {
    let rules = rules(p, tenant).await?;
    let origin = Uuid::new_v4();
    let occ = occurrences(
        p,
        tenant,
        &rules,
        cands.iter().map(|c| (c, origin)),
        |_| serde_json::json!({ "source": "portal" }),
    );
    if occ.is_empty() {
        return Ok(Vec::new());
    }
    let out = p
        .store
        .commit_alarms(
            tenant,
            &AlarmCommit {
                occurrences: &occ,
                max_evidence: MAX_EVIDENCE,
                now: now(),
                ..Default::default()
            },
        )
        .await?;
    p.metrics.alarms_raised.inc_by(created(&out));
    p.alarms.wake.notify_one();
    Ok(out)
}

/// Applies the rules (allowed candidates are dropped and counted, muted
/// ones kept as muted) and gives each occurrence an id derived from its
/// origin (a batch, or one call) and its place there.
fn occurrences<'a>(
    p: &Portal,
    tenant: TenantId,
    rules: &[MuteRule],
    cands: impl Iterator<Item = (&'a Candidate, Uuid)>,
    origin_json: impl Fn(Uuid) -> serde_json::Value,
) -> Vec<AlarmOccurrence> {
    let now_ms = now_ms();
    let mut seq: HashMap<Uuid, usize> = HashMap::new();
    let mut out = Vec::new();
    for (c, origin) in cands {
        let verdict = rampart_alarms::rules::evaluate(rules, c, now_ms);
        if verdict == Some(RuleAction::Allow) {
            p.metrics.alarms_suppressed.inc();
            continue;
        }
        let i = seq.entry(origin).or_default();
        *i += 1;
        out.push(occurrence(
            c,
            derived_id(tenant, origin.as_bytes(), *i),
            origin_json(origin),
            verdict == Some(RuleAction::Mute),
        ));
    }
    out
}

fn created(out: &[AlarmOutcome]) -> u64 {
    out.iter()
        .filter(|o| matches!(o, AlarmOutcome::Created(_)))
        .count() as u64
}

/// Runs the detectors until no batch is waiting; returns batches detected.
pub async fn detect(p: &Portal) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut round = 0;
        for kind in DETECTED_KINDS {
            let queue = p.store.undetected_batches(kind, BATCHES_PER_ROUND).await?;
            round += queue.len();
            let mut by_tenant: HashMap<TenantId, Vec<BatchRow>> = HashMap::new();
            for (t, b) in queue {
                by_tenant.entry(t).or_default().push(b);
            }
            for (tenant, batches) in by_tenant {
                if let Err(e) = detect_tenant(p, tenant, kind, &batches).await {
                    match e {
                        ServiceError::Store(StoreError::Raced(what)) => {
                            tracing::info!(tenant = %tenant, what, "detection raced another processor; skipped");
                        }
                        e => return Err(e),
                    }
                }
            }
        }
        total += round;
        if round == 0 {
            return Ok(total);
        }
    }
}

async fn detect_tenant(
    p: &Portal,
    tenant: TenantId,
    kind: &str,
    batches: &[BatchRow],
) -> Result<()> {
    let rules = rules(p, tenant).await?;
    let mut cache = p.alarms.detectors.lock().await;
    let settings = settings(p, tenant).await?;
    let stale = cache.get(&tenant).is_none_or(|d| d.settings != settings);
    if stale {
        let saved = p.store.detector_state(tenant).await?;
        let restored = match saved {
            Some(bytes) => FlowDetectors::restore(&settings, &bytes)
                .inspect_err(|e| {
                    tracing::warn!(tenant = %tenant, error = %e, "detector state unreadable: learning afresh")
                })
                .ok(),
            None => None,
        };
        let flows = match restored {
            Some(d) => d,
            None => {
                FlowDetectors::new(&settings).map_err(|e| ServiceError::Invalid(e.to_string()))?
            }
        };
        cache.insert(
            tenant,
            TenantDetectors {
                settings: settings.clone(),
                flows,
                saved: None,
                lists: Vec::new(),
            },
        );
    }
    // Taken out of the cache while it works, and put back only once its
    // results are committed: after any error the next round reloads the
    // state that was saved with the alarms.
    let Some(mut det) = cache.remove(&tenant) else {
        return Ok(());
    };
    // The blocked lists follow their target lists: reloaded when a
    // version moved, the learned state kept.
    let lists = crate::targets::versions_of(p, tenant, &settings.blocked_lists).await?;
    if lists != det.lists {
        let resolved = crate::targets::entries_of(p, tenant, &lists).await?;
        let networks = det.flows.set_blocked_lists(&resolved);
        tracing::debug!(tenant = %tenant, lists = lists.len(), networks, "blocked lists loaded");
        det.lists = lists;
    }
    let mut cands: Vec<(Candidate, Uuid)> = Vec::new();
    let mut detected = Vec::with_capacity(batches.len());
    for b in batches {
        detected.push((b.device_id, b.batch_id));
        let found = if kind == "flows" {
            let (back, found) = flow_candidates(p, tenant, b, det.flows).await?;
            det.flows = back;
            found
        } else {
            alert_candidates(p, tenant, b).await
        };
        match found {
            Ok(found) => cands.extend(found.into_iter().map(|c| (c, b.batch_id))),
            Err(e) => {
                p.metrics.alarm_batches_rejected.inc();
                tracing::warn!(tenant = %tenant, device = %b.device_id, batch = %b.batch_id, kind, error = %e, "batch skipped by the detectors");
            }
        }
    }
    let occ = occurrences(
        p,
        tenant,
        &rules,
        cands.iter().map(|(c, b)| (c, *b)),
        |b| serde_json::json!({ "batch": b }),
    );
    let save = kind == "flows"
        && det
            .saved
            .is_none_or(|(at, len)| len <= SMALL_STATE || at.elapsed() >= LARGE_STATE_SAVE_EVERY);
    let state = if save {
        let (back, st) = blocking(move || {
            let st = det.flows.snapshot();
            (det, st)
        })
        .await?;
        det = back;
        Some(st)
    } else {
        None
    };
    let out = p
        .store
        .commit_alarms(
            tenant,
            &AlarmCommit {
                occurrences: &occ,
                detector_state: state.as_deref(),
                detected: &detected,
                max_evidence: MAX_EVIDENCE,
                now: now(),
            },
        )
        .await?;
    if let Some(st) = &state {
        det.saved = Some((std::time::Instant::now(), st.len()));
    }
    cache.insert(tenant, det);
    p.metrics.alarms_raised.inc_by(created(&out));
    Ok(())
}

/// Runs CPU-heavy detector work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Invalid(format!("detector task failed: {e}")))
}

async fn alert_candidates(p: &Portal, tenant: TenantId, b: &BatchRow) -> Result<Vec<Candidate>> {
    let plain = p.open_spooled(tenant, b).await?;
    let list = alerts::decode(&plain).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let device = Some(b.device_id.0);
    Ok(list
        .iter()
        .map(|a| {
            if a.event_type != "anomaly" {
                return rampart_alarms::eve::from_alert(&eve_alert(a), device);
            }
            // The agent names an `unknown` anomaly (a code, no event name)
            // in `signature`; one without its `anomaly` part is still an
            // anomaly, of unknown type.
            let (kind, event) = match &a.anomaly {
                Some(x) if !x.event.is_empty() => (x.kind.as_str(), x.event.as_str()),
                Some(x) => (x.kind.as_str(), a.signature.as_str()),
                None => ("unknown", a.signature.as_str()),
            };
            rampart_alarms::source::ids_anomaly(
                device,
                kind,
                event,
                a.src_addr,
                a.dst_addr,
                i64::try_from(a.timestamp_ms).unwrap_or(i64::MAX),
            )
        })
        .collect())
}

/// The engine reads the typed EVE alert of `rampart_flow` (alerts only:
/// anomalies go to `ids_anomaly` in [`alert_candidates`]).
fn eve_alert(a: &IdsAlert) -> rampart_flow::eve::Alert {
    rampart_flow::eve::Alert {
        timestamp_ms: a.timestamp_ms,
        src_addr: a.src_addr,
        dst_addr: a.dst_addr,
        src_port: a.src_port,
        dst_port: a.dst_port,
        protocol: a.protocol,
        gid: a.gid,
        signature_id: a.signature_id,
        rev: a.rev,
        signature: a.signature.clone(),
        category: a.category.clone(),
        severity: a.severity,
        action: a.action.clone(),
        flow_id: a.flow_id,
        app_proto: a.app_proto.clone(),
        in_iface: a.in_iface.clone(),
    }
}

/// Runs one flows batch through the detectors. The outer error is the
/// detectors' task failing (the state is then lost and reloaded); the
/// inner one a batch that cannot be read, which is skipped.
async fn flow_candidates(
    p: &Portal,
    tenant: TenantId,
    b: &BatchRow,
    mut det: FlowDetectors,
) -> Result<(FlowDetectors, Result<Vec<Candidate>>)> {
    let records = match crate::flows::read_batch(p, tenant, b).await {
        Ok(r) => r,
        Err(e) => return Ok((det, Err(e))),
    };
    p.metrics.alarm_flows_evaluated.inc_by(records.len() as u64);
    let geo = p.flows.geo.clone();
    let device = b.device_id.0;
    blocking(move || {
        let unknown = *b"ZZ";
        let mut out = Vec::new();
        for r in &records {
            let (sc, dc, sa, da) = match &geo {
                Some(g) => {
                    let (s, d) = (g.lookup(r.src_addr), g.lookup(r.dst_addr));
                    (
                        s.country.unwrap_or(unknown),
                        d.country.unwrap_or(unknown),
                        s.asn.unwrap_or(0),
                        d.asn.unwrap_or(0),
                    )
                }
                None => (unknown, unknown, 0, 0),
            };
            out.extend(det.observe(&FlowObs {
                flow: r,
                device,
                src_country: sc,
                dst_country: dc,
                src_asn: sa,
                dst_asn: da,
            }));
        }
        (det, Ok(out))
    })
    .await
}

/// Alarms agents that went silent, once per silence. Devices seen again
/// are forgotten by the watch, so a later silence alarms again.
pub async fn watch_agents(p: &Portal) -> Result<()> {
    let now_ms = now_ms();
    for t in p.store.list_tenants().await? {
        if t.status != TenantStatus::Active || !t.is_live() {
            continue;
        }
        let devices = p.store.list_devices(t.id).await?;
        let due = {
            let mut agents = p.alarms.agents.lock().await;
            let w = agents
                .entry(t.id)
                .or_insert_with(|| AgentWatch::new(p.alarms.offline_after_ms, 100_000));
            for d in &devices {
                if d.status == rampart_proto::api::DeviceStatus::Active.as_str() {
                    let seen = d.last_seen.unwrap_or(d.enrolled_at).saturating_mul(1000);
                    w.seen(d.id.0, &d.hostname, seen);
                } else {
                    w.forget(d.id.0);
                }
            }
            w.poll(now_ms)
        };
        if !due.is_empty() {
            raise(p, t.id, due).await?;
        }
    }
    Ok(())
}

/// The alarm loop, started by [`crate::run`]: detection, operational
/// sources, notification and delivery.
pub async fn jobs(p: Arc<Portal>) {
    let mut last_watch = tokio::time::Instant::now();
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), p.alarms.wake.notified()).await;
        if let Err(e) = detect(&p).await {
            tracing::warn!(error = %e, "alarm detection failed; will retry");
        }
        if last_watch.elapsed() >= Duration::from_secs(15) {
            last_watch = tokio::time::Instant::now();
            if let Err(e) = watch_agents(&p).await {
                tracing::warn!(error = %e, "watching for silent agents failed; will retry");
            }
        }
        match lag_secs(&p).await {
            Ok(lag) => {
                p.metrics.alarm_detection_lag.set(lag);
            }
            Err(e) => tracing::warn!(error = %e, "measuring the detection lag failed"),
        }
        if let Err(e) = crate::notify::notify(&p).await {
            tracing::warn!(error = %e, "alarm notification failed; will retry");
        }
        if let Err(e) = crate::notify::digest(&p, now()).await {
            tracing::warn!(error = %e, "alarm digests failed; will retry");
        }
        if let Err(e) = crate::notify::deliver(&p).await {
            tracing::warn!(error = %e, "webhook delivery failed; will retry");
        }
    }
}

/// Seconds since the oldest batch the detectors have not seen arrived.
async fn lag_secs(p: &Portal) -> Result<i64> {
    let mut oldest: Option<i64> = None;
    for kind in DETECTED_KINDS {
        if let Some((_, b)) = p
            .store
            .undetected_batches(kind, 1)
            .await?
            .into_iter()
            .next()
        {
            oldest = Some(oldest.map_or(b.received_at, |o| o.min(b.received_at)));
        }
    }
    Ok(oldest.map_or(0, |o| (now() - o).max(0)))
}

/// A heartbeat's outbox drop counter went up: the agent is losing data.
pub async fn outbox_drops(
    p: &Portal,
    tenant: TenantId,
    device: DeviceId,
    before: Option<u64>,
    after: u64,
) -> Result<()> {
    let Some(before) = before else {
        return Ok(());
    };
    if after > before {
        let c = rampart_alarms::source::outbox_dropping(device.0, after - before, now_ms());
        raise(p, tenant, vec![c]).await?;
    }
    Ok(())
}

/// Keys of a set of alarm kinds, for validation messages.
pub fn kind_names() -> String {
    rampart_alarms::model::AlarmKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
