//! What every alarm source produces: a [`Candidate`], which the portal turns
//! into a new alarm or, when an open alarm has the same
//! [`dedupe_key`](Candidate::dedupe_key), a bump of that alarm's count.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// How urgently a person should look. Ordered: `Info < Low < ... <
/// Critical`, so routing rules can say "medium and above".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Suricata's `alert.severity`, which is the rule's priority: 1 is the
    /// most severe (classification.config gives priority 1 to classes such
    /// as `trojan-activity`, 2 to `web-application-activity`, 3 to
    /// `misc-activity`, 4 to `tcp-connection`). So 1 → High, 2 → Medium,
    /// 3 → Low, and anything else, including 0 (what the EVE reader reports
    /// when the field is absent) and 4 and above → Info. Nothing maps to
    /// Critical: a single IDS signature is evidence, not an incident;
    /// Critical is left for correlated or operator-raised alarms.
    pub fn from_suricata(priority: u8) -> Severity {
        match priority {
            1 => Severity::High,
            2 => Severity::Medium,
            3 => Severity::Low,
            _ => Severity::Info,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::UnknownSeverity(crate::text::cut(s, 64).to_owned()))
    }
}

/// What kind of problem an alarm is. The names (`as_str`, and the serde
/// form) are stable: they are stored, routed on and start every dedupe key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A Suricata `alert` event.
    IdsAlert,
    /// A Suricata `anomaly` event (decoder or protocol anomaly).
    IdsAnomaly,
    /// An internal address seen for the first time, after learning.
    NewHost,
    /// One source probing many ports of one host.
    PortScan,
    /// One source probing one port on many hosts.
    HostScan,
    /// A host's outbound bytes far above its own baseline.
    AbnormalUpload,
    /// Traffic with a blocked country, ASN or network.
    BlockedTraffic,
    /// A large flow to a destination not seen before.
    LargeFlowNewDst,
    /// An agent silent past the offline threshold.
    AgentOffline,
    /// An agent's outbox discarding data because it is full.
    OutboxDropping,
    /// An agent refused an instruction (bad signature, replay, expired...).
    InstructionRefused,
    /// A checkpoint (health check) failed.
    CheckFailed,
    /// A filtering node reported an attack.
    WafAttack,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 13] = [
        AlarmKind::IdsAlert,
        AlarmKind::IdsAnomaly,
        AlarmKind::NewHost,
        AlarmKind::PortScan,
        AlarmKind::HostScan,
        AlarmKind::AbnormalUpload,
        AlarmKind::BlockedTraffic,
        AlarmKind::LargeFlowNewDst,
        AlarmKind::AgentOffline,
        AlarmKind::OutboxDropping,
        AlarmKind::InstructionRefused,
        AlarmKind::CheckFailed,
        AlarmKind::WafAttack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::IdsAlert => "ids_alert",
            AlarmKind::IdsAnomaly => "ids_anomaly",
            AlarmKind::NewHost => "new_host",
            AlarmKind::PortScan => "port_scan",
            AlarmKind::HostScan => "host_scan",
            AlarmKind::AbnormalUpload => "abnormal_upload",
            AlarmKind::BlockedTraffic => "blocked_traffic",
            AlarmKind::LargeFlowNewDst => "large_flow_new_dst",
            AlarmKind::AgentOffline => "agent_offline",
            AlarmKind::OutboxDropping => "outbox_dropping",
            AlarmKind::InstructionRefused => "instruction_refused",
            AlarmKind::CheckFailed => "check_failed",
            AlarmKind::WafAttack => "waf_attack",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlarmKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        AlarmKind::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::UnknownKind(crate::text::cut(s, 64).to_owned()))
    }
}

/// One occurrence of a possible problem, before deduplication, rules and
/// routing. Sources build it; the portal owns everything after (tenant,
/// state, count, first/last seen, history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub kind: AlarmKind,
    pub severity: Severity,
    /// One line for lists and notifications (at most 200 bytes).
    pub title: String,
    /// The device (agent, sensor, node) that reported it, if any.
    pub device: Option<Uuid>,
    /// Stable for "the same problem" and scoped to one tenant: it starts
    /// with `kind.as_str()` and `|`, then `name=value` parts separated by
    /// `|` (free text escaped, so parts cannot run into each other). An
    /// open alarm with the same key within the dedupe window takes this
    /// candidate as a repeat. The device is part of the key only where the
    /// problem is the device's own (operational alarms, failed checks): the
    /// same IDS signature between the same hosts, seen by two sensors, is
    /// one problem.
    pub dedupe_key: String,
    /// When it happened (event or flow time), ms since the Unix epoch.
    pub at_ms: i64,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// IANA protocol number.
    pub protocol: Option<u8>,
    /// The facts behind the alarm, as a JSON object (kind-specific keys).
    pub evidence: serde_json::Value,
    /// An nfdump-language filter (`rampart_flow::filter`) selecting the
    /// flows behind the alarm, for a link to the flow search around
    /// `at_ms`; `None` when no flow can be named (no addresses).
    pub flow_filter: Option<String>,
}

/// Builds a dedupe key: `kind|part|part...`.
pub(crate) fn dedupe_key(kind: AlarmKind, parts: &[String]) -> String {
    let mut k = kind.as_str().to_owned();
    for p in parts {
        k.push('|');
        k.push_str(p);
    }
    k
}

/// An optional address as a key part value (`-` when absent).
pub(crate) fn opt_addr(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "-".to_owned(), |a| a.to_canonical().to_string())
}

/// An nfdump filter for the flows of one conversation, both directions:
/// `(src host A and dst host B [and src port p and dst port q] or src host
/// B and dst host A [...]) [and proto n]`. Flow records are one-way, and the
/// flows behind an alert or a blocked connection are both halves. With one
/// address only, `host A`; with none, `None`.
pub(crate) fn conversation_filter(
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
) -> Option<String> {
    let proto = protocol
        .filter(|p| *p != 0)
        .map(|p| format!(" and proto {p}"))
        .unwrap_or_default();
    let one_way = |a: IpAddr, b: IpAddr, pa: Option<u16>, pb: Option<u16>| {
        let mut s = format!(
            "src host {} and dst host {}",
            a.to_canonical(),
            b.to_canonical()
        );
        if let Some(p) = pa {
            s.push_str(&format!(" and src port {p}"));
        }
        if let Some(p) = pb {
            s.push_str(&format!(" and dst port {p}"));
        }
        s
    };
    match (src, dst) {
        (Some(a), Some(b)) => Some(format!(
            "({} or {}){proto}",
            one_way(a, b, src_port, dst_port),
            one_way(b, a, dst_port, src_port)
        )),
        (Some(a), None) | (None, Some(a)) => Some(format!("host {}{proto}", a.to_canonical())),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in AlarmKind::ALL {
            assert_eq!(k.as_str().parse::<AlarmKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(matches!(
            "nope".parse::<AlarmKind>(),
            Err(Error::UnknownKind(_))
        ));
        assert!(matches!(
            "HIGH".parse::<Severity>(),
            Err(Error::UnknownSeverity(_))
        ));
    }
}
