//! Mute and allow rules.
//!
//! A rule names what it applies to (any of kind, host, network, port; every
//! criterion given must match) and what it does:
//!
//! - [`RuleAction::Mute`]: "I know, stop telling me". The alarm is still
//!   recorded and counted (it shows in lists, marked muted), but nothing is
//!   notified. Meant to be temporary, so it usually has an expiry: a
//!   maintenance window, a known incident being handled.
//! - [`RuleAction::Allow`]: "this is expected, it is not a problem". An
//!   allow-list entry: a candidate it matches raises no alarm at all and is
//!   not recorded (the vulnerability scanner's address for `port_scan`, the
//!   backup server for `abnormal_upload`). Meant to be permanent, though it
//!   may expire too.
//!
//! Allow wins over Mute when both match. Both suppress notification, so
//! [`suppressed`] is true for either; [`evaluate`] tells them apart.
//! Expired rules (`expires_at_ms <= now_ms`) never match.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{AlarmKind, Candidate};
use crate::settings::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Mute,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuteRule {
    /// Only this kind; `None` = every kind.
    pub kind: Option<AlarmKind>,
    /// The candidate's source or destination is this address.
    pub host: Option<IpAddr>,
    /// The candidate's source or destination is in this CIDR. A rule whose
    /// network does not parse matches nothing ([`MuteRule::validate`]
    /// refuses it when the rule is saved).
    pub network: Option<String>,
    /// The candidate's destination port is this one. Candidates without a
    /// port (port scans, uploads, operational alarms) never match a rule
    /// with a port.
    pub port: Option<u16>,
    /// Ms since the Unix epoch; `None` = never expires.
    pub expires_at_ms: Option<i64>,
    pub action: RuleAction,
}

impl MuteRule {
    /// Refuses rules that would match everything (no criterion) and
    /// networks that do not parse; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = &self.network {
            n.parse::<Cidr>().map_err(|_| {
                format!("network {n:?} is not a network: write it as 10.0.0.0/8 or fc00::/7")
            })?;
        }
        if self.kind.is_none()
            && self.host.is_none()
            && self.network.is_none()
            && self.port.is_none()
        {
            return Err(
                "rule has no kind, host, network or port: name at least one, a rule for everything would hide every alarm"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// True when the rule is in force at `now_ms` and every criterion it
    /// names matches `c`.
    pub fn matches(&self, c: &Candidate, now_ms: i64) -> bool {
        if self.expires_at_ms.is_some_and(|e| e <= now_ms) {
            return false;
        }
        if self.kind.is_some_and(|k| k != c.kind) {
            return false;
        }
        let addrs = [c.src, c.dst];
        let addrs = addrs.iter().flatten().map(|a| a.to_canonical());
        if let Some(h) = self.host {
            let h = h.to_canonical();
            if !addrs.clone().any(|a| a == h) {
                return false;
            }
        }
        if let Some(n) = &self.network {
            match n.parse::<Cidr>() {
                Ok(net) if addrs.clone().any(|a| net.contains(a)) => {}
                _ => return false,
            }
        }
        if let Some(p) = self.port {
            if c.dst_port != Some(p) {
                return false;
            }
        }
        true
    }
}

/// The action of the strongest rule in force that matches: Allow over
/// Mute; `None` when no rule matches.
pub fn evaluate(rules: &[MuteRule], c: &Candidate, now_ms: i64) -> Option<RuleAction> {
    let mut found = None;
    for r in rules.iter().filter(|r| r.matches(c, now_ms)) {
        if r.action == RuleAction::Allow {
            return Some(RuleAction::Allow);
        }
        found = Some(RuleAction::Mute);
    }
    found
}

/// True when some rule in force mutes or allows `c`: no notification.
pub fn suppressed(rules: &[MuteRule], c: &Candidate, now_ms: i64) -> bool {
    evaluate(rules, c, now_ms).is_some()
}
