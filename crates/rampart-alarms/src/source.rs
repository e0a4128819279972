//! How the other roles raise alarms.
//!
//! Most sources are events: a Suricata alert, a failed check, a filtering
//! node's attack report, an agent's refusal. They need no interface beyond
//! a constructor: the role builds a [`Candidate`] with one of the functions
//! here (or [`crate::eve::from_alert`]) and hands it to the portal's alarm
//! queue. The constructors fix each kind's severity, title and dedupe key in
//! one place, so every producer of a kind deduplicates the same way.
//!
//! Some sources are conditions that become true as time passes with no
//! event at all (an agent that stops talking). Those implement
//! [`AlarmSource`]: the portal calls [`AlarmSource::poll`] on a timer with
//! its clock. [`AgentWatch`] is the one this crate ships.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::json;
use uuid::Uuid;

use crate::model::{dedupe_key, opt_addr, AlarmKind, Candidate, Severity};
use crate::text::{cut, key_part, title};

/// Longest free-text evidence value kept (paths, reasons, names).
const MAX_EVIDENCE_TEXT: usize = 512;

/// A source of candidates that appear because time passed.
///
/// Implementations are deterministic in `now_ms` (they read no clock) and
/// report each condition once per episode: polling again while nothing
/// changed returns nothing new.
pub trait AlarmSource {
    /// The kinds this source can raise (for settings and routing pages).
    fn kinds(&self) -> &'static [AlarmKind];
    /// Candidates that became due at or before `now_ms`.
    fn poll(&mut self, now_ms: i64) -> Vec<Candidate>;
}

fn text(s: &str) -> &str {
    cut(s, MAX_EVIDENCE_TEXT)
}

/// An agent silent since `last_seen_ms`. Severity High: no data arrives from
/// that site, so nothing else there can alarm. One key per device.
pub fn agent_offline(device: Uuid, hostname: &str, last_seen_ms: i64, now_ms: i64) -> Candidate {
    let silent = now_ms.saturating_sub(last_seen_ms).max(0);
    Candidate {
        kind: AlarmKind::AgentOffline,
        severity: Severity::High,
        title: title(&format!(
            "agent {} offline for {}",
            hostname,
            crate::text::duration(silent - silent % 1000)
        )),
        device: Some(device),
        dedupe_key: dedupe_key(AlarmKind::AgentOffline, &[format!("device={device}")]),
        at_ms: now_ms,
        src: None,
        dst: None,
        dst_port: None,
        protocol: None,
        evidence: json!({
            "hostname": text(hostname),
            "last_seen_ms": last_seen_ms,
            "offline_for_ms": silent,
        }),
        flow_filter: None,
    }
}

/// An agent's outbox discarded `dropped` batches (or records; the caller
/// says which in its own evidence) because it was full. Medium: data is
/// being lost, but the agent still talks.
pub fn outbox_dropping(device: Uuid, dropped: u64, at_ms: i64) -> Candidate {
    Candidate {
        kind: AlarmKind::OutboxDropping,
        severity: Severity::Medium,
        title: format!("agent outbox full: {dropped} dropped"),
        device: Some(device),
        dedupe_key: dedupe_key(AlarmKind::OutboxDropping, &[format!("device={device}")]),
        at_ms,
        src: None,
        dst: None,
        dst_port: None,
        protocol: None,
        evidence: json!({ "dropped": dropped }),
        flow_filter: None,
    }
}

/// An agent refused instruction `seq` for `reason` (the `Refusal` name:
/// bad signature, replayed sequence, expired...). High: a refused
/// instruction means tampering, a replay or a badly broken portal clock.
/// Keyed by device and reason, so a replay storm is one alarm with a count.
pub fn instruction_refused(device: Uuid, seq: u64, reason: &str, at_ms: i64) -> Candidate {
    Candidate {
        kind: AlarmKind::InstructionRefused,
        severity: Severity::High,
        title: title(&format!("agent refused instruction {seq}: {reason}")),
        device: Some(device),
        dedupe_key: dedupe_key(
            AlarmKind::InstructionRefused,
            &[
                format!("device={device}"),
                format!("reason={}", key_part(reason)),
            ],
        ),
        at_ms,
        src: None,
        dst: None,
        dst_port: None,
        protocol: None,
        evidence: json!({ "seq": seq, "reason": text(reason) }),
        flow_filter: None,
    }
}

/// Hook for checkpoints: check `check_id` (shown as `check_name`) failed
/// with `error_class` (a short, stable class such as `timeout` or
/// `tls_expired`, not a free-form message, so repeats deduplicate). Medium.
/// Keyed by device, check and class: a check that starts failing another
/// way is a new problem.
pub fn check_failed(
    device: Option<Uuid>,
    check_id: &str,
    check_name: &str,
    error_class: &str,
    at_ms: i64,
) -> Candidate {
    let dev = device.map_or_else(|| "-".to_owned(), |d| d.to_string());
    Candidate {
        kind: AlarmKind::CheckFailed,
        severity: Severity::Medium,
        title: title(&format!("check {check_name} failed: {error_class}")),
        device,
        dedupe_key: dedupe_key(
            AlarmKind::CheckFailed,
            &[
                format!("device={dev}"),
                format!("check={}", key_part(check_id)),
                format!("class={}", key_part(error_class)),
            ],
        ),
        at_ms,
        src: None,
        dst: None,
        dst_port: None,
        protocol: None,
        evidence: json!({
            "check_id": text(check_id),
            "check_name": text(check_name),
            "error_class": text(error_class),
        }),
        flow_filter: None,
    }
}

/// Hook for filtering nodes: rule `rule_id` matched a request from `src`
/// for `path`. High: the node saw an attack attempt against a protected
/// application. Keyed by rule and source (not path: a scanner walks many
/// paths with one rule, which is one problem).
pub fn waf_attack(
    device: Option<Uuid>,
    rule_id: &str,
    src: Option<IpAddr>,
    path: &str,
    at_ms: i64,
) -> Candidate {
    let from = src.map_or_else(
        || "an unknown source".to_owned(),
        |a| a.to_canonical().to_string(),
    );
    Candidate {
        kind: AlarmKind::WafAttack,
        severity: Severity::High,
        title: title(&format!(
            "attack blocked by rule {rule_id} from {from} on {path}"
        )),
        device,
        dedupe_key: dedupe_key(
            AlarmKind::WafAttack,
            &[
                format!("rule={}", key_part(rule_id)),
                format!("src={}", opt_addr(src)),
            ],
        ),
        at_ms,
        src,
        dst: None,
        dst_port: None,
        protocol: None,
        evidence: json!({ "rule_id": text(rule_id), "path": text(path) }),
        flow_filter: src.map(|a| format!("src host {}", a.to_canonical())),
    }
}

/// A Suricata `anomaly` event (`anomaly.type` such as `decode` or
/// `applayer`, `anomaly.event` such as `ipv4.trunc_pkt`). Low: anomalies
/// are mostly broken or unusual packets, worth a look, rarely an attack.
/// Keyed by type, event and source.
pub fn ids_anomaly(
    device: Option<Uuid>,
    anomaly_type: &str,
    event: &str,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    at_ms: i64,
) -> Candidate {
    Candidate {
        kind: AlarmKind::IdsAnomaly,
        severity: Severity::Low,
        title: title(&format!("suricata {anomaly_type} anomaly: {event}")),
        device,
        dedupe_key: dedupe_key(
            AlarmKind::IdsAnomaly,
            &[
                format!("type={}", key_part(anomaly_type)),
                format!("event={}", key_part(event)),
                format!("src={}", opt_addr(src)),
            ],
        ),
        at_ms,
        src,
        dst,
        dst_port: None,
        protocol: None,
        evidence: json!({ "type": text(anomaly_type), "event": text(event) }),
        flow_filter: crate::model::conversation_filter(src, dst, None, None, None),
    }
}

#[derive(Debug, Clone)]
struct Watched {
    hostname: String,
    last_seen_ms: i64,
    reported: bool,
}

/// Watches agents' last contact and raises [`AlarmKind::AgentOffline`] once
/// per offline episode.
///
/// The portal calls [`seen`](AgentWatch::seen) on every check-in (and, at
/// start, once per device from the store, so a restart does not forget
/// anyone) and [`poll`](AlarmSource::poll) on a timer. A device that comes
/// back is re-armed. After a restart a still-offline agent is reported
/// again; its dedupe key is the same, so the open alarm just counts it.
/// At most `max_devices` are watched; beyond that the one silent longest is
/// forgotten and counted in [`evicted`](AgentWatch::evicted).
#[derive(Debug, Clone)]
pub struct AgentWatch {
    offline_after_ms: i64,
    max_devices: usize,
    devices: HashMap<Uuid, Watched>,
    evicted: u64,
}

impl AgentWatch {
    pub fn new(offline_after_ms: i64, max_devices: usize) -> Self {
        AgentWatch {
            offline_after_ms: offline_after_ms.max(0),
            max_devices: max_devices.max(1),
            devices: HashMap::new(),
            evicted: 0,
        }
    }

    /// The device talked at `at_ms`. Older reports than the last one kept
    /// are ignored, so check-ins processed out of order do no harm.
    pub fn seen(&mut self, device: Uuid, hostname: &str, at_ms: i64) {
        if let Some(w) = self.devices.get_mut(&device) {
            if at_ms >= w.last_seen_ms {
                w.last_seen_ms = at_ms;
                w.reported = false;
                if w.hostname != hostname {
                    w.hostname = cut(hostname, 255).to_owned();
                }
            }
            return;
        }
        if self.devices.len() >= self.max_devices {
            let oldest = self
                .devices
                .iter()
                .min_by_key(|(id, w)| (w.last_seen_ms, **id))
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.devices.remove(&id);
                self.evicted += 1;
            }
        }
        self.devices.insert(
            device,
            Watched {
                hostname: cut(hostname, 255).to_owned(),
                last_seen_ms: at_ms,
                reported: false,
            },
        );
    }

    /// Stop watching a device (deleted or decommissioned).
    pub fn forget(&mut self, device: Uuid) {
        self.devices.remove(&device);
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Devices forgotten because the watch was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

impl AlarmSource for AgentWatch {
    fn kinds(&self) -> &'static [AlarmKind] {
        &[AlarmKind::AgentOffline]
    }

    fn poll(&mut self, now_ms: i64) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self
            .devices
            .iter_mut()
            .filter(|(_, w)| {
                !w.reported && now_ms.saturating_sub(w.last_seen_ms) > self.offline_after_ms
            })
            .map(|(id, w)| {
                w.reported = true;
                agent_offline(*id, &w.hostname, w.last_seen_ms, now_ms)
            })
            .collect();
        // Map order is random; callers and tests get a stable order.
        out.sort_by(|a, b| a.dedupe_key.cmp(&b.dedupe_key));
        out
    }
}
