//! Suricata alerts to candidates.
//!
//! The agent reads EVE lines with `rampart_flow::eve::parse_line`, the one
//! EVE reader shared with the flow collectors; its `alert` events arrive
//! here as [`Alert`]s. (`anomaly` events are not typed by that reader yet;
//! [`crate::source::ids_anomaly`] builds their candidates.)

use serde_json::json;
use uuid::Uuid;

use rampart_flow::eve::Alert;

use crate::model::{conversation_filter, dedupe_key, opt_addr, AlarmKind, Candidate, Severity};
use crate::text::{cut, ms_i64, title};

/// Longest text evidence value kept from an alert (category, interface...).
const MAX_TEXT: usize = 256;

/// The candidate for one Suricata alert.
///
/// - title: the signature (`[gid:sid:rev]` when the rule has no `msg`);
/// - severity: [`Severity::from_suricata`] of `alert.severity`;
/// - dedupe key over (gid, sid, src, dst, dst port): the same rule firing
///   on the same pair of hosts and service is one problem, whatever the
///   client port, sensor or flow;
/// - evidence: gid, sid, rev, category, action, app_proto, flow_id,
///   in_iface and the source port;
/// - flow filter: both directions of the conversation (ports and protocol
///   when the alert has them).
///
/// Alerts without addresses (packets without an IP layer, decoder events)
/// still become candidates, with `-` for the addresses in the key and no
/// flow filter.
pub fn from_alert(a: &Alert, device: Option<Uuid>) -> Candidate {
    let name = if a.signature.trim().is_empty() {
        format!("[{}:{}:{}]", a.gid, a.signature_id, a.rev)
    } else {
        a.signature.clone()
    };
    let port = a.dst_port.map_or_else(|| "-".to_owned(), |p| p.to_string());
    Candidate {
        kind: AlarmKind::IdsAlert,
        severity: Severity::from_suricata(a.severity),
        title: title(&name),
        device,
        dedupe_key: dedupe_key(
            AlarmKind::IdsAlert,
            &[
                format!("gid={}", a.gid),
                format!("sid={}", a.signature_id),
                format!("src={}", opt_addr(a.src_addr)),
                format!("dst={}", opt_addr(a.dst_addr)),
                format!("dport={port}"),
            ],
        ),
        at_ms: ms_i64(a.timestamp_ms),
        src: a.src_addr,
        dst: a.dst_addr,
        dst_port: a.dst_port,
        protocol: a.protocol,
        evidence: json!({
            "gid": a.gid,
            "sid": a.signature_id,
            "rev": a.rev,
            "signature": cut(&a.signature, MAX_TEXT),
            "category": cut(&a.category, MAX_TEXT),
            "suricata_severity": a.severity,
            "action": cut(&a.action, MAX_TEXT),
            "app_proto": a.app_proto.as_deref().map(|s| cut(s, MAX_TEXT)),
            "flow_id": a.flow_id,
            "in_iface": a.in_iface.as_deref().map(|s| cut(s, MAX_TEXT)),
            "src_port": a.src_port,
        }),
        flow_filter: conversation_filter(
            a.src_addr, a.dst_addr, a.src_port, a.dst_port, a.protocol,
        ),
    }
}
