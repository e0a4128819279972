//! Mute and allow rules, as a table of (rule, candidate, now, expected).

mod common;

use common::{ip, DEVICE};
use rampart_alarms::model::{AlarmKind, Candidate};
use rampart_alarms::rules::{evaluate, suppressed, MuteRule, RuleAction};
use rampart_alarms::source::{agent_offline, waf_attack};

fn rule(kind: Option<AlarmKind>, action: RuleAction) -> MuteRule {
    MuteRule {
        kind,
        host: None,
        network: None,
        port: None,
        expires_at_ms: None,
        action,
    }
}

/// A port-scan-like candidate 10.1.0.5 → 10.1.0.200, port 22.
fn scan() -> Candidate {
    let mut c = waf_attack(Some(DEVICE), "r1", Some(ip("10.1.0.5")), "/", 1000);
    c.kind = AlarmKind::PortScan;
    c.dst = Some(ip("10.1.0.200"));
    c.dst_port = Some(22);
    c
}

#[test]
fn rule_matching_table() {
    let now = 10_000;
    let with = |f: &dyn Fn(&mut MuteRule)| {
        let mut r = rule(None, RuleAction::Mute);
        f(&mut r);
        r
    };
    let c = scan();
    let table: Vec<(&str, MuteRule, bool)> = vec![
        (
            "kind matches",
            rule(Some(AlarmKind::PortScan), RuleAction::Mute),
            true,
        ),
        (
            "other kind",
            rule(Some(AlarmKind::HostScan), RuleAction::Mute),
            false,
        ),
        (
            "host is the source",
            with(&|r| r.host = Some(ip("10.1.0.5"))),
            true,
        ),
        (
            "host is the destination",
            with(&|r| r.host = Some(ip("10.1.0.200"))),
            true,
        ),
        (
            "host is neither",
            with(&|r| r.host = Some(ip("10.1.0.6"))),
            false,
        ),
        (
            "mapped form of the source",
            with(&|r| r.host = Some(ip("::ffff:10.1.0.5"))),
            true,
        ),
        (
            "network holds the source",
            with(&|r| r.network = Some("10.1.0.0/29".into())),
            true,
        ),
        (
            "network holds the destination",
            with(&|r| r.network = Some("10.1.0.192/26".into())),
            true,
        ),
        (
            "network holds neither",
            with(&|r| r.network = Some("10.2.0.0/16".into())),
            false,
        ),
        (
            "bad network matches nothing",
            with(&|r| r.network = Some("10.1.0.0/33".into())),
            false,
        ),
        ("port matches", with(&|r| r.port = Some(22)), true),
        ("other port", with(&|r| r.port = Some(23)), false),
        (
            "expired",
            with(&|r| {
                r.host = Some(ip("10.1.0.5"));
                r.expires_at_ms = Some(now)
            }),
            false,
        ),
        (
            "expires later",
            with(&|r| {
                r.host = Some(ip("10.1.0.5"));
                r.expires_at_ms = Some(now + 1)
            }),
            true,
        ),
        (
            "all criteria, one wrong",
            with(&|r| {
                r.kind = Some(AlarmKind::PortScan);
                r.host = Some(ip("10.1.0.5"));
                r.port = Some(23)
            }),
            false,
        ),
        (
            "all criteria right",
            with(&|r| {
                r.kind = Some(AlarmKind::PortScan);
                r.network = Some("10.0.0.0/8".into());
                r.port = Some(22)
            }),
            true,
        ),
    ];
    for (name, r, want) in &table {
        assert_eq!(r.matches(&c, now), *want, "{name}");
        assert_eq!(
            suppressed(std::slice::from_ref(r), &c, now),
            *want,
            "{name}"
        );
    }
    // A candidate without addresses or port never matches host, network or
    // port rules.
    let offline = agent_offline(DEVICE, "edge-1", 0, now);
    for (name, r, _) in &table[2..12] {
        assert!(!r.matches(&offline, now), "{name}");
    }
}

#[test]
fn allow_wins_over_mute() {
    let c = scan();
    let mute = rule(Some(AlarmKind::PortScan), RuleAction::Mute);
    let mut allow = rule(None, RuleAction::Allow);
    allow.host = Some(ip("10.1.0.5"));
    assert_eq!(
        evaluate(&[mute.clone(), allow.clone()], &c, 0),
        Some(RuleAction::Allow)
    );
    assert_eq!(
        evaluate(&[allow.clone(), mute.clone()], &c, 0),
        Some(RuleAction::Allow)
    );
    assert_eq!(
        evaluate(std::slice::from_ref(&mute), &c, 0),
        Some(RuleAction::Mute)
    );
    assert_eq!(evaluate(&[], &c, 0), None);
    assert!(!suppressed(&[], &c, 0));
    let mut expired_allow = allow;
    expired_allow.expires_at_ms = Some(5);
    assert_eq!(
        evaluate(&[expired_allow, mute], &c, 5),
        Some(RuleAction::Mute)
    );
}

#[test]
fn validation_and_serde() {
    assert!(rule(None, RuleAction::Mute)
        .validate()
        .unwrap_err()
        .contains("no kind"));
    let mut r = rule(None, RuleAction::Allow);
    r.network = Some("10.0.0.0/99".into());
    assert!(r.validate().unwrap_err().contains("network"));
    r.network = Some("10.0.0.0/8".into());
    r.validate().unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["action"], "allow");
    let back: MuteRule = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}
