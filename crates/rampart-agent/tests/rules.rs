//! Block and allow rules: the evaluator over a table of flows (first match
//! wins, schedules, port ranges, IPv4 and IPv6 networks, lists, domains,
//! countries), and the nftables ruleset rendered from the same rules,
//! checked by Debian's `nft -c` (scripts/test installs nftables).
//!
//! Expected verdicts follow from the rules' definitions by hand; times are
//! calendar facts (2026-12-04 is a Friday).

use std::collections::BTreeMap;
use std::net::IpAddr;

use rampart_agent::rules::{apply, check, Firewall, FlowKey, RuleSet};
use rampart_proto::config::{Direction, Rule, RuleAction};

/// 2026-12-04T10:00:00Z, a Friday.
const FRI_1000: i64 = 1_796_378_400;
const HOUR: i64 = 3600;

fn rules() -> Vec<Rule> {
    serde_json::from_value(serde_json::json!([
        {"action": "allow", "direction": "outbound", "ip": "192.0.2.10"},
        {"action": "block", "direction": "outbound", "list": "bad"},
        {"action": "block", "direction": "inbound", "cidr": "203.0.113.0/24", "port": "22", "protocol": "tcp"},
        {"action": "block", "port": "8000-8080",
         "schedule": {"days": ["fri"], "start": "09:00", "end": "17:00"}},
        {"action": "block", "direction": "outbound", "country": "RU"},
        {"action": "allow", "cidr": "2001:db8::/32",
         "schedule": {"days": ["thu"], "start": "22:00", "end": "06:00"}},
        {"action": "block", "direction": "outbound", "domain": "*.ads.example"},
        {"action": "block", "direction": "outbound", "domain": "tracker.example", "port": "443"}
    ]))
    .unwrap()
}

fn lists() -> BTreeMap<String, Vec<String>> {
    let mut l = BTreeMap::new();
    l.insert(
        "bad".to_string(),
        vec![
            "192.0.2.0/24".to_string(),
            "2001:db8:bad::/48".to_string(),
            "evil.example".to_string(),
        ],
    );
    l
}

/// A resolver with fixed answers, so the expectations do not depend on DNS.
fn resolver(d: &str) -> Vec<IpAddr> {
    match d {
        "evil.example" => vec!["198.51.100.66".parse().unwrap()],
        "tracker.example" => vec![
            "198.51.100.80".parse().unwrap(),
            "2001:db8:7::80".parse().unwrap(),
        ],
        _ => Vec::new(),
    }
}

fn ruleset() -> RuleSet {
    RuleSet::build(&rules(), &lists(), &mut resolver).unwrap()
}

fn out(dst: &str, port: u16, protocol: u8) -> FlowKey {
    FlowKey {
        src: "10.0.0.5".parse().unwrap(),
        dst: dst.parse().unwrap(),
        dst_port: port,
        protocol,
        direction: Direction::Outbound,
        country: None,
    }
}

fn inb(src: &str, port: u16, protocol: u8) -> FlowKey {
    FlowKey {
        src: src.parse().unwrap(),
        dst: "10.0.0.5".parse().unwrap(),
        dst_port: port,
        protocol,
        direction: Direction::Inbound,
        country: None,
    }
}

/// A rule's action and index, or none.
type Verdict = Option<(RuleAction, usize)>;

#[test]
fn first_matching_rule_in_force_decides() {
    use RuleAction::{Allow, Block};
    let set = ruleset();
    let ru = FlowKey {
        country: Some(*b"RU"),
        ..out("5.6.7.8", 443, 6)
    };
    let cases: Vec<(&str, FlowKey, i64, Verdict)> = vec![
        (
            "allow before the list",
            out("192.0.2.10", 443, 6),
            FRI_1000,
            Some((Allow, 0)),
        ),
        (
            "v4 network of the list",
            out("192.0.2.11", 443, 6),
            FRI_1000,
            Some((Block, 1)),
        ),
        (
            "v6 network of the list",
            out("2001:db8:bad::5", 53, 17),
            FRI_1000,
            Some((Block, 1)),
        ),
        (
            "mapped v4 address",
            out("::ffff:192.0.2.11", 80, 6),
            FRI_1000,
            Some((Block, 1)),
        ),
        (
            "a list domain's address",
            out("198.51.100.66", 443, 6),
            FRI_1000,
            Some((Block, 1)),
        ),
        (
            "the list is outbound only",
            inb("192.0.2.11", 443, 6),
            FRI_1000,
            None,
        ),
        (
            "inbound ssh from the range",
            inb("203.0.113.9", 22, 6),
            FRI_1000,
            Some((Block, 2)),
        ),
        ("udp is not tcp", inb("203.0.113.9", 22, 17), FRI_1000, None),
        (
            "outside the range",
            inb("203.0.114.9", 22, 6),
            FRI_1000,
            None,
        ),
        (
            "rule 2 is inbound only",
            out("203.0.113.9", 22, 6),
            FRI_1000,
            None,
        ),
        (
            "range start, in schedule",
            out("10.9.9.9", 8000, 17),
            FRI_1000,
            Some((Block, 3)),
        ),
        (
            "range end, in schedule",
            out("10.9.9.9", 8080, 6),
            FRI_1000,
            Some((Block, 3)),
        ),
        (
            "inbound too (both)",
            inb("10.9.9.9", 8080, 6),
            FRI_1000,
            Some((Block, 3)),
        ),
        ("below the range", out("10.9.9.9", 7999, 6), FRI_1000, None),
        ("icmp has no port", out("10.9.9.9", 8000, 1), FRI_1000, None),
        (
            "schedule ended at 17:00",
            out("10.9.9.9", 8080, 6),
            FRI_1000 + 7 * HOUR,
            None,
        ),
        (
            "16:59 still in force",
            out("10.9.9.9", 8080, 6),
            FRI_1000 + 7 * HOUR - 60,
            Some((Block, 3)),
        ),
        (
            "not on saturday",
            out("10.9.9.9", 8080, 6),
            FRI_1000 + 24 * HOUR,
            None,
        ),
        ("country", ru, FRI_1000, Some((Block, 4))),
        (
            "unknown country never matches",
            out("5.6.7.8", 443, 6),
            FRI_1000,
            None,
        ),
        (
            "thursday night window is off at 10:00",
            out("2001:db8:1::1", 443, 6),
            FRI_1000,
            None,
        ),
        // Fri 05:00 belongs to the window that started Thursday 22:00.
        (
            "thursday night window at 05:00",
            out("2001:db8:1::1", 443, 6),
            FRI_1000 - 5 * HOUR,
            Some((Allow, 5)),
        ),
        (
            "the list still wins at 05:00",
            out("2001:db8:bad::1", 443, 6),
            FRI_1000 - 5 * HOUR,
            Some((Block, 1)),
        ),
        (
            "a wildcard domain resolves to nothing",
            out("203.0.113.200", 443, 6),
            FRI_1000,
            None,
        ),
        (
            "resolved domain on its port",
            out("198.51.100.80", 443, 6),
            FRI_1000,
            Some((Block, 7)),
        ),
        (
            "resolved domain, v6",
            out("2001:db8:7::80", 443, 6),
            FRI_1000,
            Some((Block, 7)),
        ),
        (
            "resolved domain, other port",
            out("198.51.100.80", 80, 6),
            FRI_1000,
            None,
        ),
    ];
    for (what, flow, now, want) in cases {
        assert_eq!(set.verdict(&flow, now), want, "{what}");
    }
}

#[test]
fn next_change_is_the_next_schedule_boundary() {
    let set = ruleset();
    // At Friday 10:00 the next change is rule 3 ending at 17:00.
    assert_eq!(set.next_change(FRI_1000), Some(FRI_1000 + 7 * HOUR));
    // After it, Thursday 22:00 (rule 5 starts) comes before next Friday 09:00.
    let thu_2200 = FRI_1000 + 6 * 24 * HOUR + 12 * HOUR;
    assert_eq!(set.next_change(FRI_1000 + 7 * HOUR), Some(thu_2200));
    // No schedule, no change.
    let plain: Vec<Rule> =
        serde_json::from_value(serde_json::json!([{"action": "block", "ip": "192.0.2.1"}]))
            .unwrap();
    let set = RuleSet::build(&plain, &BTreeMap::new(), &mut resolver).unwrap();
    assert_eq!(set.next_change(FRI_1000), None);
}

#[test]
fn a_rule_naming_a_missing_list_is_refused() {
    let e = RuleSet::build(&rules(), &BTreeMap::new(), &mut resolver).unwrap_err();
    assert!(e.starts_with("rules[1].list"), "{e}");
}

/// Output order and sets as nftables must see them, then `nft -c`.
#[test]
fn rendered_ruleset_holds_the_rules_in_force_in_order_and_nft_accepts_it() {
    let set = ruleset();
    let r = set.render(FRI_1000);
    // 0, 1, 2, 3 and 7 are in force; 4 is by country, 5 scheduled off, 6
    // a wildcard that resolved to nothing.
    assert_eq!(
        (
            r.in_force,
            r.country,
            r.scheduled_off,
            r.empty,
            r.unresolved_domains
        ),
        (5, 1, 1, 1, 1),
        "{}",
        r.script
    );
    let s = &r.script;
    assert!(s.starts_with("table inet rampart\ndelete table inet rampart\ntable inet rampart {"));
    for want in [
        "set list0_v4 {",
        "elements = { 192.0.2.0/24, 198.51.100.66 }",
        "set list0_v6 {",
        "elements = { 2001:db8:bad::/48 }",
    ] {
        assert!(s.contains(want), "{want} missing:\n{s}");
    }
    let chain = |name: &str| -> Vec<String> {
        let start = s.find(&format!("chain {name} {{")).expect("chain");
        s[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.trim() != "}")
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(
        chain("output"),
        vec![
            "ip daddr 192.0.2.10 accept comment \"rule 0\"",
            "ip daddr @list0_v4 drop comment \"rule 1\"",
            "ip6 daddr @list0_v6 drop comment \"rule 1\"",
            "meta l4proto { tcp, udp, sctp } th dport 8000-8080 drop comment \"rule 3\"",
            "ip daddr 198.51.100.80 meta l4proto { tcp, udp, sctp } th dport 443 drop comment \"rule 7\"",
            "ip6 daddr 2001:db8:7::80 meta l4proto { tcp, udp, sctp } th dport 443 drop comment \"rule 7\"",
        ]
    );
    assert_eq!(
        chain("input"),
        vec![
            "ip saddr 203.0.113.0/24 tcp dport 22 drop comment \"rule 2\"",
            "meta l4proto { tcp, udp, sctp } th dport 8000-8080 drop comment \"rule 3\"",
        ]
    );
    check(s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    // Out of its schedule, rule 3 is left out and the thursday window's
    // allow rule (an IPv6 network, so IPv6 only) is in.
    let night = set.render(FRI_1000 - 5 * HOUR);
    assert!(!night.script.contains("rule 3"), "{}", night.script);
    assert!(night
        .script
        .contains("ip6 saddr 2001:db8::/32 accept comment \"rule 5\""));
    check(&night.script).unwrap_or_else(|e| panic!("{e}\n{}", night.script));
}

/// Overlapping networks in one list are merged by nftables, not refused.
#[test]
fn overlapping_list_entries_render_to_a_set_nft_accepts() {
    let rules: Vec<Rule> =
        serde_json::from_value(serde_json::json!([{"action": "block", "list": "drop"}])).unwrap();
    let mut lists = BTreeMap::new();
    lists.insert(
        "drop".to_string(),
        vec![
            "10.0.0.0/8".to_string(),
            "10.1.0.0/16".to_string(),
            "10.1.2.3".to_string(),
        ],
    );
    let set = RuleSet::build(&rules, &lists, &mut resolver).unwrap();
    let r = set.render(FRI_1000);
    check(&r.script).unwrap_or_else(|e| panic!("{e}\n{}", r.script));
}

/// Loads `scripts` one after the other into a fresh network namespace
/// (`unshare -n`, so the machine's own firewall is never touched) and lists
/// the table: what `apply`'s `nft -f` leaves in force.
fn load_in_netns(scripts: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = String::new();
    for (i, s) in scripts.iter().enumerate() {
        let f = dir.path().join(format!("{i}.nft"));
        std::fs::write(&f, s).unwrap();
        cmd.push_str(&format!("nft -f {} && ", f.display()));
    }
    cmd.push_str("nft list table inet rampart");
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &cmd])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("unshare runs (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The script replaces the table whole in one transaction: loading the
/// night ruleset over the day one leaves only the night's rules.
#[test]
fn a_rendered_script_replaces_the_previous_table_whole() {
    let set = ruleset();
    let day = set.render(FRI_1000).script;
    let night = set.render(FRI_1000 - 5 * HOUR).script;
    let listed = load_in_netns(&[&day]);
    assert!(listed.contains("comment \"rule 3\""), "{listed}");
    let listed = load_in_netns(&[&day, &night]);
    assert!(!listed.contains("comment \"rule 3\""), "{listed}");
    assert!(listed.contains("comment \"rule 5\""), "{listed}");
    assert!(listed.contains("192.0.2.0/24"), "{listed}");
}

/// Without `--firewall nft` the rules are only built (a missing list is
/// still an error the config applier reports) and nothing runs nft.
#[test]
fn with_the_firewall_off_rules_are_checked_but_not_applied() {
    let e = apply(Firewall::Off, &rules(), &BTreeMap::new(), FRI_1000).unwrap_err();
    assert!(e.starts_with("rules[1].list"), "{e}");
    let ok = apply(Firewall::Off, &rules(), &lists(), FRI_1000).unwrap();
    assert!(ok.starts_with("8 rules evaluated on flows only"), "{ok}");
}
