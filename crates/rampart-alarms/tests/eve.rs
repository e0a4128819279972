//! Third-party Suricata EVE alerts become the right candidates.
//!
//! - `suricata_eve/telegraf/`: `v2/alert.json` (pretty-printed, read as its
//!   one-line form) and `test3.json` (the same alert on one line, with
//!   `severity` twice). Expected values: telegraf's `suricata_test.go`
//!   (TestSuricataParseVersion2 "v2/alert.json", TestSuricataAlerts):
//!   signature "Corrupted HTTP body", signature_id 6, gid 1, rev 0,
//!   severity 3, category "Misc activity", action "allowed", source
//!   10.0.0.5:18715, target 179.60.192.3:80, proto TCP.
//! - `suricata_verify/bug-130/test.yaml`: its three `alert` match blocks,
//!   written as EVE lines with exactly the fields the YAML states, plus the
//!   one field the EVE reader requires and the YAML does not state,
//!   `timestamp`: Suricata stamps an alert with the time of its packet,
//!   and the blocks name that packet (`pcap_cnt: 14`), so the time is read
//!   from record 14 of the case's `input.pcap`.
//! - `suricata_verify/bug-5197/test.yaml`: seven alerts that the YAML
//!   identifies by `alert.signature_id` only (1 to 7); they are written
//!   with that, the event type and a timestamp (the pcap's first packet,
//!   which nothing below asserts on beyond passing it through), and show
//!   that alerts without addresses, ports or signature text still become
//!   candidates.

mod common;

use std::net::IpAddr;

use common::{ip, read, read_str};
use rampart_alarms::eve::from_alert;
use rampart_alarms::model::{AlarmKind, Candidate, Severity};
use rampart_flow::eve::{parse_line, Alert, EveEvent};
use rampart_flow::filter::Filter;
use uuid::Uuid;

fn alert(line: &str) -> Alert {
    match parse_line(line.as_bytes(), ip("0.0.0.0")).unwrap() {
        EveEvent::Alert(a) => a,
        other => panic!("not an alert: {other:?}"),
    }
}

fn one_line(rel: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&read_str(rel)).unwrap();
    v.to_string()
}

/// (seconds, microseconds) of the `n`th (1-based) record of a classic
/// little-endian microsecond pcap.
fn pcap_record_time(rel: &str, n: usize) -> (u64, u64) {
    let b = read(rel);
    assert_eq!(
        &b[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "{rel}: not a LE µs pcap"
    );
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let mut off = 24;
    for _ in 1..n {
        off += 16 + u32_at(off + 8) as usize;
    }
    (u64::from(u32_at(off)), u64::from(u32_at(off + 4)))
}

/// One expected candidate.
struct Want {
    signature: &'static str,
    sid: u32,
    severity: Severity,
    src: Option<&'static str>,
    dst: Option<&'static str>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
}

#[track_caller]
fn check(c: &Candidate, w: &Want, at_ms: i64) {
    let addr = |s: Option<&str>| s.map(|s| s.parse::<IpAddr>().unwrap());
    assert_eq!(c.kind, AlarmKind::IdsAlert);
    assert_eq!(c.title, w.signature);
    assert_eq!(c.evidence["sid"], w.sid);
    assert_eq!(c.severity, w.severity);
    assert_eq!((c.src, c.dst), (addr(w.src), addr(w.dst)));
    assert_eq!(c.dst_port, w.dst_port);
    assert_eq!(c.evidence["src_port"], serde_json::json!(w.src_port));
    assert_eq!(c.protocol, w.protocol);
    assert_eq!(c.at_ms, at_ms);
    assert!(c.dedupe_key.starts_with("ids_alert|"), "{}", c.dedupe_key);
    match &c.flow_filter {
        Some(f) => {
            Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        None => assert!(w.src.is_none() && w.dst.is_none()),
    }
}

const TELEGRAF: Want = Want {
    signature: "Corrupted HTTP body",
    sid: 6,
    // severity 3 = priority 3.
    severity: Severity::Low,
    src: Some("10.0.0.5"),
    dst: Some("179.60.192.3"),
    src_port: Some(18715),
    dst_port: Some(80),
    protocol: Some(6),
};

/// 2021-05-30T20:07:13.208777+0200 = 18:07:13.208777Z;
/// `date -u -d 2021-05-30T18:07:13Z +%s` = 1622398033.
const TELEGRAF_MS: i64 = 1_622_398_033_208;

#[test]
fn telegraf_alerts() {
    let device = Uuid::from_u128(7);
    let v2 = from_alert(
        &alert(&one_line("suricata_eve/telegraf/v2/alert.json")),
        Some(device),
    );
    check(&v2, &TELEGRAF, TELEGRAF_MS);
    assert_eq!(v2.device, Some(device));
    for (k, want) in [
        ("gid", serde_json::json!(1)),
        ("rev", serde_json::json!(0)),
        ("category", serde_json::json!("Misc activity")),
        ("action", serde_json::json!("allowed")),
        ("in_iface", serde_json::json!("s1-suricata")),
        ("flow_id", serde_json::json!(1_696_236_471_136_137u64)),
    ] {
        assert_eq!(v2.evidence[k], want, "{k}");
    }
    let text = read_str("suricata_eve/telegraf/test3.json");
    let t3 = from_alert(&alert(text.lines().next().unwrap()), Some(device));
    check(&t3, &TELEGRAF, TELEGRAF_MS);
    // The same alert is the same problem.
    assert_eq!(v2.dedupe_key, t3.dedupe_key);
    assert_eq!(v2, t3);
}

#[test]
fn telegraf_flow_filter_selects_both_directions() {
    let c = from_alert(
        &alert(&one_line("suricata_eve/telegraf/v2/alert.json")),
        None,
    );
    let f = Filter::parse(c.flow_filter.as_deref().unwrap()).unwrap();
    let t = 1_622_398_033_208;
    let there = common::flow("10.0.0.5", "179.60.192.3", 18715, 80, 6, t);
    let back = common::flow("179.60.192.3", "10.0.0.5", 80, 18715, 6, t);
    let other_port = common::flow("10.0.0.5", "179.60.192.3", 18716, 80, 6, t);
    let other_host = common::flow("10.0.0.6", "179.60.192.3", 18715, 80, 6, t);
    let udp = common::flow("10.0.0.5", "179.60.192.3", 18715, 80, 17, t);
    assert!(f.matches(&there) && f.matches(&back));
    assert!(!f.matches(&other_port) && !f.matches(&other_host) && !f.matches(&udp));
}

/// The `alert` match blocks of bug-130/test.yaml, quoted from the file
/// (checked below): (signature, signature_id). Every block shares the rest:
/// action allowed, category "access to a potentially vulnerable web
/// application", gid 1, rev 1, severity 2, app_proto http, src_ip
/// 162.2.41.200, src_port 80, dest_ip 10.100.0.8, dest_port 44270, proto
/// TCP, pcap_cnt 14.
const BUG_130: [(&str, u32); 3] = [("no1", 9_000_000), ("ok1", 9_000_001), ("ok2", 9_000_002)];

fn bug_130_lines() -> Vec<(String, &'static str, u32)> {
    let yaml = read_str("suricata_eve/suricata_verify/bug-130/test.yaml");
    for needle in [
        "action: allowed",
        "category: access to a potentially vulnerable web application",
        "gid: 1",
        "rev: 1",
        "severity: 2",
        "app_proto: http",
        "dest_ip: 10.100.0.8",
        "dest_port: 44270",
        "event_type: alert",
        "pcap_cnt: 14",
        "proto: TCP",
        "src_ip: 162.2.41.200",
        "src_port: 80",
    ] {
        assert!(yaml.contains(needle), "test.yaml lacks {needle}");
    }
    for (sig, sid) in BUG_130 {
        let block = format!("signature: {sig}\n        signature_id: {sid}");
        assert!(yaml.contains(&block), "test.yaml lacks {block}");
    }
    assert_eq!(yaml.matches("event_type: alert").count(), 3);
    let (s, us) = pcap_record_time("suricata_eve/suricata_verify/bug-130/input.pcap", 14);
    // Suricata writes the packet time as local ISO 8601 with µs; UTC here.
    let ts = iso_utc(s, us);
    BUG_130
        .iter()
        .map(|(sig, sid)| {
            (
                format!(
                    r#"{{"timestamp":"{ts}","event_type":"alert","src_ip":"162.2.41.200","src_port":80,"dest_ip":"10.100.0.8","dest_port":44270,"proto":"TCP","app_proto":"http","pcap_cnt":14,"alert":{{"action":"allowed","gid":1,"signature_id":{sid},"rev":1,"signature":"{sig}","category":"access to a potentially vulnerable web application","severity":2}}}}"#
                ),
                *sig,
                *sid,
            )
        })
        .collect()
}

/// Unix seconds + µs as `YYYY-MM-DDTHH:MM:SS.ffffff+0000` (days to civil
/// date by H. Hinnant's algorithm).
fn iso_utc(secs: u64, us: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn iso_utc_is_right() {
    // `date -u -d @1235395413 +%FT%T` = 2009-02-23T13:23:33.
    assert_eq!(
        iso_utc(1_235_395_413, 589_165),
        "2009-02-23T13:23:33.589165+0000"
    );
    assert_eq!(iso_utc(0, 0), "1970-01-01T00:00:00.000000+0000");
}

#[test]
fn suricata_verify_bug_130_alerts() {
    // Record 14 of input.pcap: 1235395413.589165 s.
    let at_ms = 1_235_395_413_589;
    let mut keys = Vec::new();
    for (line, sig, sid) in bug_130_lines() {
        let c = from_alert(&alert(&line), None);
        let want = Want {
            signature: sig,
            sid,
            // severity 2 (the classtype web-application-activity's priority).
            severity: Severity::Medium,
            src: Some("162.2.41.200"),
            dst: Some("10.100.0.8"),
            src_port: Some(80),
            dst_port: Some(44270),
            protocol: Some(6),
        };
        check(&c, &want, at_ms);
        assert_eq!(c.evidence["app_proto"], "http");
        assert_eq!(
            c.evidence["category"],
            "access to a potentially vulnerable web application"
        );
        assert_eq!(c.device, None);
        keys.push(c.dedupe_key);
    }
    // Three rules, three problems.
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
}

#[test]
fn suricata_verify_bug_5197_alerts_without_addresses() {
    let yaml = read_str("suricata_eve/suricata_verify/bug-5197/test.yaml");
    let (s, us) = pcap_record_time("suricata_eve/suricata_verify/bug-5197/input.pcap", 1);
    let ts = iso_utc(s, us);
    let mut keys = Vec::new();
    for sid in 1..=7u32 {
        assert!(
            yaml.contains(&format!(
                "event_type: alert\n      alert.signature_id: {sid}\n"
            )),
            "test.yaml lacks sid {sid}"
        );
        let line = format!(
            r#"{{"timestamp":"{ts}","event_type":"alert","alert":{{"signature_id":{sid}}}}}"#
        );
        let c = from_alert(&alert(&line), None);
        assert_eq!(c.kind, AlarmKind::IdsAlert);
        assert_eq!(c.evidence["sid"], sid);
        // No rule message: the title names the rule; gid defaults to 1.
        assert_eq!(c.title, format!("[1:{sid}:0]"));
        // No severity in the event: 0, the lowest.
        assert_eq!(c.severity, Severity::Info);
        assert_eq!(
            (c.src, c.dst, c.dst_port, c.flow_filter.clone()),
            (None, None, None, None)
        );
        assert_eq!(c.at_ms, (s * 1000 + us / 1000) as i64);
        keys.push(c.dedupe_key);
    }
    assert_eq!(keys[0], "ids_alert|gid=1|sid=1|src=-|dst=-|dport=-");
    keys.dedup();
    assert_eq!(keys.len(), 7);
}

#[test]
fn severity_follows_suricata_priority() {
    // Suricata: priority 1 is the most severe.
    let table = [
        (0, Severity::Info),
        (1, Severity::High),
        (2, Severity::Medium),
        (3, Severity::Low),
        (4, Severity::Info),
        (255, Severity::Info),
    ];
    for (p, s) in table {
        assert_eq!(Severity::from_suricata(p), s, "priority {p}");
    }
    assert!(Severity::High > Severity::Medium && Severity::Low > Severity::Info);
}

#[test]
fn ipv6_alert_filter_parses() {
    let line = r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"alert","src_ip":"2001:db8::1","dest_ip":"2001:db8::2","proto":"IPv6-ICMP","alert":{"signature_id":2,"signature":"ping","severity":1}}"#;
    let c = from_alert(&alert(line), None);
    let f = c.flow_filter.unwrap();
    assert_eq!(
        f,
        "(src host 2001:db8::1 and dst host 2001:db8::2 or src host 2001:db8::2 and dst host 2001:db8::1) and proto 58"
    );
    Filter::parse(&f).unwrap();
    assert_eq!(c.severity, Severity::High);
}
