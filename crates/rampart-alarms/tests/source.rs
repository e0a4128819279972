//! The hook constructors and the agent watch.

mod common;

use common::{ip, DEVICE};
use rampart_alarms::model::{AlarmKind, Candidate, Severity};
use rampart_alarms::source::{
    agent_offline, check_failed, ids_anomaly, instruction_refused, outbox_dropping, waf_attack,
    AgentWatch, AlarmSource,
};
use rampart_flow::filter::Filter;
use uuid::Uuid;

#[test]
fn constructors_fix_kind_severity_and_key() {
    let d2 = Uuid::from_u128(2);
    let table: Vec<(Candidate, AlarmKind, Severity, String)> = vec![
        (
            agent_offline(DEVICE, "edge-1", 1_000, 601_000),
            AlarmKind::AgentOffline,
            Severity::High,
            format!("agent_offline|device={DEVICE}"),
        ),
        (
            outbox_dropping(DEVICE, 12, 5),
            AlarmKind::OutboxDropping,
            Severity::Medium,
            format!("outbox_dropping|device={DEVICE}"),
        ),
        (
            instruction_refused(DEVICE, 41, "replayed", 5),
            AlarmKind::InstructionRefused,
            Severity::High,
            format!("instruction_refused|device={DEVICE}|reason=replayed"),
        ),
        (
            check_failed(Some(d2), "tls-www", "TLS of www", "cert|expired", 5),
            AlarmKind::CheckFailed,
            Severity::Medium,
            format!("check_failed|device={d2}|check=tls-www|class=cert%7Cexpired"),
        ),
        (
            waf_attack(
                None,
                "942100",
                Some(ip("203.0.113.5")),
                "/login?id=1' or '1'='1",
                5,
            ),
            AlarmKind::WafAttack,
            Severity::High,
            "waf_attack|rule=942100|src=203.0.113.5".to_owned(),
        ),
        (
            ids_anomaly(
                None,
                "decode",
                "ipv4.trunc_pkt",
                Some(ip("10.0.0.1")),
                None,
                5,
            ),
            AlarmKind::IdsAnomaly,
            Severity::Low,
            "ids_anomaly|type=decode|event=ipv4.trunc_pkt|src=10.0.0.1".to_owned(),
        ),
    ];
    for (c, kind, sev, key) in table {
        assert_eq!((c.kind, c.severity, &c.dedupe_key), (kind, sev, &key));
        assert!(c.dedupe_key.starts_with(kind.as_str()));
        assert!(c.evidence.is_object());
        if let Some(f) = &c.flow_filter {
            Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        // Candidates travel as JSON between roles.
        let back: Candidate = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
    // Repeats of one problem share a key; the seq is evidence, not key.
    assert_eq!(
        instruction_refused(DEVICE, 1, "bad_signature", 1).dedupe_key,
        instruction_refused(DEVICE, 2, "bad_signature", 9).dedupe_key
    );
    let c = agent_offline(DEVICE, "edge-1", 1_000, 601_000);
    assert_eq!(c.title, "agent edge-1 offline for 10 min");
    assert_eq!(c.evidence["offline_for_ms"], 600_000);
    // Untrusted text is bounded.
    let long = "x".repeat(10_000);
    let c = check_failed(None, &long, &long, &long, 0);
    assert!(c.title.len() <= 200 && c.dedupe_key.len() < 400);
}

#[test]
fn agent_watch_reports_once_per_episode() {
    let a = Uuid::from_u128(10);
    let b = Uuid::from_u128(11);
    let mut w = AgentWatch::new(300_000, 2);
    assert_eq!(w.kinds(), &[AlarmKind::AgentOffline]);
    w.seen(a, "a", 0);
    w.seen(b, "b", 200_000);
    assert!(w.poll(300_000).is_empty());
    let c = w.poll(300_001);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].device, Some(a));
    let c = w.poll(900_000);
    assert_eq!(
        c.iter().map(|c| c.device).collect::<Vec<_>>(),
        vec![Some(b)]
    );
    assert!(w.poll(1_000_000).is_empty());
    // Back, then silent again: a new episode.
    w.seen(a, "a", 1_000_000);
    w.seen(a, "a", 10); // out of order: ignored
    assert!(w.poll(1_200_000).is_empty());
    assert_eq!(w.poll(1_300_001).len(), 1);
    // Full: the one silent longest (b) is forgotten.
    w.seen(Uuid::from_u128(12), "c", 1_300_000);
    assert_eq!((w.len(), w.evicted()), (2, 1));
}
