//! Suricata EVE reading, against `shared/testdata/suricata_eve`.
//!
//! - `telegraf/`: EVE events from telegraf's Suricata input tests. The
//!   `v2/*.json` files and `test2.json` are single events pretty-printed
//!   over several lines; EVE logs hold one event per line, so each is read
//!   as its one-line form. `suricata_test.go` states the fields telegraf
//!   reads from each, which are the values asserted here.
//! - `suricata_verify/dns-udp-eve-txt/test.yaml`: the two `flow` events
//!   Suricata logs for that pcap, field by field (the `match:` blocks). No
//!   eve.json is stored, so [`verify_dns_flow_lines`] writes those fields as
//!   EVE lines, nothing added.
//! - `anomaly` events: no sample under `shared/testdata/suricata_eve` has
//!   one (neither the telegraf files nor the suricata_verify `test.yaml`s
//!   mention "anomaly"), so [`DOCUMENTED_ANOMALIES`] are the example events
//!   of Suricata's user guide ("Eve JSON Format", "Event type: Anomaly"),
//!   written on one line, nothing added; the other anomaly lines here are
//!   written from that section's field list and say so.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rampart_flow::eve::{parse_line, Alert, Anomaly, EveError, EveEvent, MAX_LINE_LEN};
use rampart_flow::FlowRecord;

const EVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/suricata_eve"
);

fn exporter() -> IpAddr {
    "0.0.0.0".parse().unwrap()
}

fn one_line(rel: &str) -> String {
    let p = format!("{EVE}/{rel}");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
    // Go's reader takes duplicate keys (test3.json has two "severity"s),
    // serde_json's Value keeps the last too.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.to_string()
}

fn parse(line: &str) -> Result<EveEvent, EveError> {
    parse_line(line.as_bytes(), exporter())
}

fn kind(e: &EveEvent) -> &str {
    match e {
        EveEvent::Flow { .. } => "flow",
        EveEvent::Netflow(_) => "netflow",
        EveEvent::Alert(_) => "alert",
        EveEvent::Anomaly(_) => "anomaly",
        EveEvent::Other { event_type } => event_type,
    }
}

/// 2021-05-30T20:07:13.208777+0200 = 18:07:13.208777Z;
/// `date -u -d 2021-05-30T18:07:13Z +%s` = 1622398033.
const ALERT_MS: u64 = 1_622_398_033_208;

fn telegraf_alert() -> Alert {
    // TestSuricataParseVersion2 "v2/alert.json" and TestSuricataAlerts.
    Alert {
        timestamp_ms: ALERT_MS,
        src_addr: Some("10.0.0.5".parse().unwrap()),
        dst_addr: Some("179.60.192.3".parse().unwrap()),
        src_port: Some(18715),
        dst_port: Some(80),
        protocol: Some(6),
        gid: 1,
        signature_id: 6,
        rev: 0,
        signature: "Corrupted HTTP body".to_owned(),
        category: "Misc activity".to_owned(),
        severity: 3,
        action: "allowed".to_owned(),
        flow_id: Some(1_696_236_471_136_137),
        app_proto: None,
        in_iface: Some("s1-suricata".to_owned()),
    }
}

#[test]
fn telegraf_events_by_type() {
    let files = [
        "v2/alert.json",
        "v2/dns.json",
        "v2/drop.json",
        "v2/flow.json",
        "v2/http.json",
        "v2/status.json",
        "test1.json",
        "test2.json",
        "test3.json",
    ];
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for f in files {
        let e = parse(&one_line(&format!("telegraf/{f}"))).unwrap_or_else(|e| panic!("{f}: {e}"));
        *counts.entry(kind(&e).to_owned()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [
        ("alert", 2),
        ("dns", 1),
        ("drop", 1),
        ("flow", 1),
        ("http", 1),
        ("stats", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, want);
}

#[test]
fn telegraf_alert_fields() {
    let EveEvent::Alert(a) = parse(&one_line("telegraf/v2/alert.json")).unwrap() else {
        panic!("not an alert")
    };
    assert_eq!(a, telegraf_alert());
}

#[test]
fn duplicate_key_last_wins_like_go() {
    // test3.json: the same alert on one line, with "severity" twice.
    let line = std::fs::read(format!("{EVE}/telegraf/test3.json")).unwrap();
    let line = line.split(|b| *b == b'\n').next().unwrap();
    assert_eq!(line.windows(10).filter(|w| w == b"\"severity\"").count(), 2);
    let EveEvent::Alert(a) = parse_line(line, exporter()).unwrap() else {
        panic!("not an alert")
    };
    assert_eq!(a, telegraf_alert());
}

#[test]
fn telegraf_flow_without_counters_is_kept() {
    // v2/flow.json: a "new" flow with only age/state/alerted: no counters, no
    // start or end. Missing counters never drop a flow: it counts 0 and
    // takes the event's time, 2023-04-07T00:28:22.136079+0800
    // (`date -u -d 2023-04-06T16:28:22Z +%s` = 1680798502).
    let e = parse(&one_line("telegraf/v2/flow.json")).unwrap();
    let EveEvent::Flow { toserver, toclient } = e else {
        panic!("not a flow: {e:?}")
    };
    assert_eq!(toclient, None);
    let r = toserver;
    assert_eq!(r.src_addr, "192.168.0.121".parse::<IpAddr>().unwrap());
    assert_eq!(r.dst_addr, "142.251.130.3".parse::<IpAddr>().unwrap());
    assert_eq!((r.src_port, r.dst_port, r.protocol), (50212, 443, 6));
    assert_eq!((r.bytes, r.packets, r.tcp_flags), (0, 0, 0));
    assert_eq!(
        (r.start_ms, r.end_ms),
        (1_680_798_502_136, 1_680_798_502_136)
    );
    assert_eq!((r.sampling_rate, r.resample), (1, 1));
    assert!(r.app.is_empty());
}

/// dns-udp-eve-txt/test.yaml's two flow checks as EVE lines.
fn verify_dns_flow_lines() -> [String; 2] {
    let yaml = std::fs::read_to_string(format!("{EVE}/suricata_verify/dns-udp-eve-txt/test.yaml"))
        .unwrap();
    // The values below are the file's; fail loudly if it changes.
    for needle in [
        "flow.bytes_toclient: 116",
        "flow.bytes_toserver: 100",
        "flow.end: 2017-06-08T15:45:58.525601+0000",
        "flow.start: 2017-06-08T15:45:58.520996+0000",
        "src_port: 60922",
        "flow.bytes_toclient: 129",
        "flow.bytes_toserver: 81",
        "flow.end: 2017-06-08T15:45:57.833020+0000",
        "flow.start: 2017-06-08T15:45:57.828730+0000",
        "src_port: 52345",
    ] {
        assert!(yaml.contains(needle), "test.yaml lacks {needle}");
    }
    let line = |sport: u32, bts: u64, btc: u64, start: &str, end: &str| {
        format!(
            r#"{{"event_type":"flow","app_proto":"dns","src_ip":"10.16.1.11","src_port":{sport},"dest_ip":"10.16.1.1","dest_port":53,"proto":"UDP","flow":{{"age":0,"alerted":false,"bytes_toclient":{btc},"bytes_toserver":{bts},"end":"{end}","pkts_toclient":1,"pkts_toserver":1,"reason":"shutdown","start":"{start}","state":"established"}}}}"#
        )
    };
    [
        line(
            60922,
            100,
            116,
            "2017-06-08T15:45:58.520996+0000",
            "2017-06-08T15:45:58.525601+0000",
        ),
        line(
            52345,
            81,
            129,
            "2017-06-08T15:45:57.828730+0000",
            "2017-06-08T15:45:57.833020+0000",
        ),
    ]
}

#[track_caller]
fn dns_flow(r: &FlowRecord, toserver: bool, sport: u16, bytes: u64, start_ms: u64, end_ms: u64) {
    let (client, server): (IpAddr, IpAddr) =
        ("10.16.1.11".parse().unwrap(), "10.16.1.1".parse().unwrap());
    let (src, dst, sp, dp) = if toserver {
        (client, server, sport, 53)
    } else {
        (server, client, 53, sport)
    };
    assert_eq!(
        (r.src_addr, r.dst_addr, r.src_port, r.dst_port),
        (src, dst, sp, dp)
    );
    assert_eq!((r.protocol, r.bytes, r.packets), (17, bytes, 1));
    assert_eq!((r.start_ms, r.end_ms), (start_ms, end_ms));
    assert_eq!(r.app.as_str(), "dns");
    assert_eq!(r.exporter, exporter());
}

#[test]
fn suricata_verify_dns_flows() {
    // `date -u -d 2017-06-08T15:45:58Z +%s` = 1496936758.
    let [a, b] = verify_dns_flow_lines();
    let e = parse(&a).unwrap();
    let EveEvent::Flow {
        toserver,
        toclient: Some(toclient),
    } = e
    else {
        panic!("not a two-way flow: {e:?}")
    };
    dns_flow(
        &toserver,
        true,
        60922,
        100,
        1_496_936_758_520,
        1_496_936_758_525,
    );
    dns_flow(
        &toclient,
        false,
        60922,
        116,
        1_496_936_758_520,
        1_496_936_758_525,
    );

    let e = parse(&b).unwrap();
    let mut out = Vec::new();
    assert_eq!(e.push_flows(&mut out), 2);
    dns_flow(
        &out[0],
        true,
        52345,
        81,
        1_496_936_757_828,
        1_496_936_757_833,
    );
    dns_flow(
        &out[1],
        false,
        52345,
        129,
        1_496_936_757_828,
        1_496_936_757_833,
    );
}

#[test]
fn netflow_pair_equals_the_flow_event() {
    // Suricata's netflow output (output-json-netflow.c) logs one event per
    // direction, the response one with source and destination swapped and
    // only when the server sent packets. The dns flow above, so logged:
    let toserver = r#"{"timestamp":"2017-06-08T15:45:58.525601+0000","event_type":"netflow","src_ip":"10.16.1.11","src_port":60922,"dest_ip":"10.16.1.1","dest_port":53,"proto":"UDP","app_proto":"dns","netflow":{"pkts":1,"bytes":100,"start":"2017-06-08T15:45:58.520996+0000","end":"2017-06-08T15:45:58.525601+0000","age":0,"min_ttl":64,"max_ttl":64}}"#;
    let toclient = r#"{"timestamp":"2017-06-08T15:45:58.525601+0000","event_type":"netflow","src_ip":"10.16.1.1","src_port":53,"dest_ip":"10.16.1.11","dest_port":60922,"proto":"UDP","app_proto":"dns","netflow":{"pkts":1,"bytes":116,"start":"2017-06-08T15:45:58.520996+0000","end":"2017-06-08T15:45:58.525601+0000","age":0,"min_ttl":64,"max_ttl":64}}"#;
    let mut netflow = Vec::new();
    for l in [toserver, toclient] {
        let e = parse(l).unwrap();
        assert!(matches!(e, EveEvent::Netflow(_)), "{e:?}");
        assert_eq!(e.push_flows(&mut netflow), 1);
    }
    let mut flow = Vec::new();
    parse(&verify_dns_flow_lines()[0])
        .unwrap()
        .push_flows(&mut flow);
    assert_eq!(netflow, flow);
}

#[test]
fn tcp_flags_are_per_direction() {
    // bug-130/test.yaml's flow: tcp_flags 1b (FIN SYN PSH ACK) each way.
    // Different per-direction flags show which goes where.
    let line = r#"{"timestamp":"2016-09-13T04:05:06.123456+0000","event_type":"flow","src_ip":"10.100.0.8","src_port":44270,"dest_ip":"162.2.41.200","dest_port":80,"proto":"TCP","app_proto":"http","flow":{"pkts_toserver":5,"pkts_toclient":4,"bytes_toserver":500,"bytes_toclient":2000},"tcp":{"tcp_flags":"1b","tcp_flags_ts":"1a","tcp_flags_tc":"13"}}"#;
    let e = parse(line).unwrap();
    let flows: Vec<&FlowRecord> = e.flows().collect();
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].tcp_flags, flows[1].tcp_flags), (0x1a, 0x13));
    assert_eq!((flows[0].bytes, flows[1].bytes), (500, 2000));
    assert_eq!(flows[0].app.as_str(), "http");
    // No start or end: the event time, 2016-09-13T04:05:06.123Z.
    assert_eq!(flows[0].start_ms, 1_473_739_506_123);
}

#[test]
fn icmp_type_and_code_go_to_the_destination_port() {
    // Suricata logs icmp_type/icmp_code (and response_*) instead of ports,
    // for ICMP and ICMPv6; NetFlow exporters put type << 8 | code in the
    // destination port.
    let line = r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"flow","src_ip":"2001:db8::1","dest_ip":"2001:db8::2","proto":"IPv6-ICMP","icmp_type":128,"icmp_code":0,"response_icmp_type":129,"response_icmp_code":0,"flow":{"pkts_toserver":1,"pkts_toclient":1,"bytes_toserver":118,"bytes_toclient":118,"start":"2016-09-13T04:05:06Z","end":"2016-09-13T04:05:06Z"}}"#;
    let e = parse(line).unwrap();
    let f: Vec<&FlowRecord> = e.flows().collect();
    assert_eq!(
        (f[0].protocol, f[0].src_port, f[0].dst_port),
        (58, 0, 128 << 8)
    );
    assert_eq!(
        (f[1].protocol, f[1].src_port, f[1].dst_port),
        (58, 0, 129 << 8)
    );
    // Suricata's name for a protocol it has no entry for is the number.
    let line = r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"netflow","src_ip":"192.0.2.1","dest_ip":"192.0.2.2","proto":"047","netflow":{"pkts":3,"bytes":300}}"#;
    let e = parse(line).unwrap();
    assert_eq!(e.flows().next().unwrap().protocol, 47);
}

#[test]
fn bad_lines_are_typed_errors() {
    let good = &verify_dns_flow_lines()[0];
    let cases: Vec<(String, &str)> = vec![
        (good[..good.len() / 2].to_owned(), "Json"),
        ("not json".to_owned(), "Json"),
        ("[1,2,3]".to_owned(), "Json"),
        ("{}".to_owned(), "event_type"),
        (good.replace("\"event_type\":\"flow\",", ""), "event_type"),
        (good.replace("10.16.1.11", "10.16.1.311"), "src_ip"),
        (good.replace("\"dest_ip\":\"10.16.1.1\",", ""), "dest_ip"),
        (good.replace(":60922", ":70000"), "src_port"),
        (good.replace(":60922", ":-1"), "Json"),
        (good.replace("\"UDP\"", "\"QUIC\""), "proto"),
        (good.replace("\"UDP\"", "300"), "proto"),
        (good.replace("\"bytes_toserver\":100", "\"bytes_toserver\":\"100\""), "Json"),
        (good.replace("+0000\",\"pkts", "+9900\",\"pkts"), "flow.end"),
        (good.replace("\"flow\":{", "\"flow\":[{").replace("}}", "}]}"), "Json"),
        (good.replace("\"flow\",", "\"netflow\","), "netflow"),
        (
            good.replace("\"proto\"", "\"tcp\":{\"tcp_flags_ts\":\"1ff\"},\"proto\""),
            "tcp_flags_ts",
        ),
        ("{\"event_type\":\"alert\"}".to_owned(), "timestamp"),
        (
            "{\"event_type\":\"alert\",\"timestamp\":\"2016-09-13T04:05:06Z\",\"alert\":{}}"
                .to_owned(),
            "signature_id",
        ),
        (
            "{\"event_type\":\"alert\",\"timestamp\":\"2016-09-13T04:05:06Z\",\"alert\":{\"signature_id\":4294967296}}"
                .to_owned(),
            "signature_id",
        ),
    ];
    for (line, what) in &cases {
        let e = parse(line).expect_err(what);
        assert!(format!("{e:?}").contains(what), "{what}: {e:?}");
        assert!(!e.to_string().ends_with('.'), "{e}");
    }

    let long = format!("{{\"event_type\":\"{}\"}}", "x".repeat(MAX_LINE_LEN));
    assert_eq!(
        parse(&long),
        Err(EveError::LineTooLong {
            len: MAX_LINE_LEN + 17,
            limit: MAX_LINE_LEN
        })
    );
    // Half a million nested arrays in an unread key: skipped without
    // recursion (no stack overflow), and the event is still read.
    let n = 500_000;
    let deep = format!(
        "{{\"event_type\":\"x\",\"a\":{}{}}}",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(deep.len() <= MAX_LINE_LEN);
    assert_eq!(
        parse(&deep),
        Ok(EveEvent::Other {
            event_type: "x".to_owned()
        })
    );
    // In a key that is read, depth is bounded by serde_json's limit.
    let deep = format!(
        "{{\"event_type\":\"flow\",\"flow\":{{\"a\":{}{}}}}}",
        "{\"a\":".repeat(n / 8),
        "}".repeat(n / 8)
    );
    assert!(matches!(
        parse(&deep),
        Err(EveError::Json(_)) | Err(EveError::MissingField { .. })
    ));
}

#[test]
fn other_event_types_are_named_and_bounded() {
    assert_eq!(
        parse(r#"{"event_type":"fileinfo","fileinfo":{"size":1483}}"#).unwrap(),
        EveEvent::Other {
            event_type: "fileinfo".to_owned()
        }
    );
    let long = format!("{{\"event_type\":\"{}\"}}", "y".repeat(1000));
    let EveEvent::Other { event_type } = parse(&long).unwrap() else {
        panic!()
    };
    assert_eq!(event_type.len(), 64);
    // A trailing newline (and CR) is fine.
    let line = format!("{}\r\n", verify_dns_flow_lines()[0]);
    assert!(matches!(parse(&line), Ok(EveEvent::Flow { .. })));
}

/// The three complete `anomaly` events in Suricata's user guide ("Eve JSON
/// Format", "Event type: Anomaly", docs.suricata.io; the source is
/// `doc/userguide/output/eve/eve-json-format.rst` in OISF/suricata), each on
/// one line as an EVE log holds it.
const DOCUMENTED_ANOMALIES: [&str; 3] = [
    r#"{"timestamp":"1969-12-31T16:04:21.000000-0800","pcap_cnt":9262,"event_type":"anomaly","src_ip":"208.21.2.184","src_port":0,"dest_ip":"10.1.1.99","dest_port":0,"proto":"UDP","packet":"////////AQEBAQEBCABFAAA8xZ5AAP8R1+DQFQK4CgE=","packet_info":{"linktype":1},"anomaly":{"type":"decode","event":"decoder.udp.pkt_too_small"}}"#,
    r#"{"timestamp":"2016-01-11T05:10:54.612110-0800","flow_id":412547343494194,"pcap_cnt":1391293,"event_type":"anomaly","src_ip":"192.168.122.149","src_port":49324,"dest_ip":"69.195.71.174","dest_port":443,"proto":"TCP","app_proto":"tls","anomaly":{"type":"applayer","event":"APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION","layer":"proto_detect"}}"#,
    r#"{"timestamp":"2016-01-11T05:10:52.828802-0800","flow_id":201217772575257,"pcap_cnt":1391281,"event_type":"anomaly","src_ip":"192.168.122.149","src_port":49323,"dest_ip":"69.195.71.174","dest_port":443,"proto":"TCP","tx_id":0,"app_proto":"tls","anomaly":{"type":"applayer","event":"INVALID_RECORD_TYPE","layer":"proto_parser"}}"#,
];

fn anomaly(line: &str) -> Anomaly {
    match parse(line) {
        Ok(EveEvent::Anomaly(a)) => a,
        other => panic!("not an anomaly: {other:?}"),
    }
}

#[test]
fn documented_anomaly_events() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    // 1969-12-31T16:04:21-0800 is 1970-01-01T00:04:21Z: 261 s.
    let decode = Anomaly {
        timestamp_ms: 261_000,
        src_addr: ip("208.21.2.184"),
        dst_addr: ip("10.1.1.99"),
        src_port: Some(0),
        dst_port: Some(0),
        protocol: Some(17),
        kind: "decode".into(),
        event: "decoder.udp.pkt_too_small".into(),
        layer: None,
        code: None,
        app_proto: None,
        in_iface: None,
        flow_id: None,
    };
    // `date -u -d 2016-01-11T13:10:54Z +%s` = 1452517854.
    let detect = Anomaly {
        timestamp_ms: 1_452_517_854_612,
        src_addr: ip("192.168.122.149"),
        dst_addr: ip("69.195.71.174"),
        src_port: Some(49324),
        dst_port: Some(443),
        protocol: Some(6),
        kind: "applayer".into(),
        event: "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION".into(),
        layer: Some("proto_detect".into()),
        code: None,
        app_proto: Some("tls".into()),
        in_iface: None,
        flow_id: Some(412_547_343_494_194),
    };
    let parser = Anomaly {
        timestamp_ms: 1_452_517_852_828,
        src_port: Some(49323),
        event: "INVALID_RECORD_TYPE".into(),
        layer: Some("proto_parser".into()),
        flow_id: Some(201_217_772_575_257),
        ..detect.clone()
    };
    for (line, want) in DOCUMENTED_ANOMALIES.iter().zip([decode, detect, parser]) {
        let e = parse(line).unwrap();
        assert_eq!(kind(&e), "anomaly");
        assert_eq!(e.flows().count(), 0, "anomalies carry no flows");
        assert_eq!(anomaly(line), want);
    }
}

#[test]
fn anomaly_without_a_tuple_or_a_name() {
    // Written from the guide's field list, not a capture: a stream anomaly
    // with only the common fields an IP-less packet has, and an `unknown`
    // one, which carries a `code` in place of the event name.
    let a = anomaly(
        r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"anomaly","in_iface":"eth0","anomaly":{"type":"stream","event":"stream.pkt_invalid_timestamp"}}"#,
    );
    assert_eq!(
        (a.src_addr, a.dst_addr, a.src_port, a.protocol),
        (None, None, None, None)
    );
    assert_eq!(
        (a.kind.as_str(), a.event.as_str()),
        ("stream", "stream.pkt_invalid_timestamp")
    );
    assert_eq!(a.in_iface.as_deref(), Some("eth0"));
    let a = anomaly(
        r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"anomaly","anomaly":{"type":"unknown","code":4242}}"#,
    );
    assert_eq!(
        (a.kind.as_str(), a.event.as_str(), a.code),
        ("unknown", "", Some(4242))
    );
}

#[test]
fn bad_anomaly_lines_are_typed_errors() {
    let good = DOCUMENTED_ANOMALIES[1];
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("\"timestamp\"", "\"time\""),
            r#"MissingField { event_type: "anomaly", field: "timestamp" }"#,
        ),
        (
            good.replace("2016-01-11T", "2016-13-11T"),
            r#"BadField { field: "timestamp""#,
        ),
        (
            good.replace("\"anomaly\":{", "\"other\":{"),
            r#"field: "anomaly" }"#,
        ),
        (
            good.replace("\"type\":\"applayer\",", ""),
            r#"field: "anomaly.type" }"#,
        ),
        (good.replace("\"type\":\"applayer\"", "\"type\":7"), "Json("),
        (
            good.replace(
                "\"event\":\"APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION\",",
                "",
            ),
            r#"field: "anomaly.event" }"#,
        ),
        (
            good.replace(
                "\"layer\":\"proto_detect\"",
                "\"layer\":\"x\",\"code\":4294967296",
            ),
            r#"BadField { field: "anomaly.code""#,
        ),
        (
            good.replace("\"layer\":\"proto_detect\"", "\"code\":-1"),
            "Json(",
        ),
        (
            good.replace(":49324", ":65536"),
            r#"BadField { field: "src_port""#,
        ),
        (
            good.replace("69.195.71.174", "69.195.71"),
            r#"BadField { field: "dest_ip""#,
        ),
        (
            good.replace("\"TCP\"", "\"QUIC\""),
            r#"BadField { field: "proto""#,
        ),
        (
            good.replace("\"anomaly\":{", "\"anomaly\":[{")
                .replace("}}", "}]}"),
            "Json(",
        ),
    ];
    for (line, what) in &cases {
        assert_ne!(line, good, "{what}: the case changes nothing");
        let e = parse(line).expect_err(what);
        assert!(format!("{e:?}").contains(what), "{what}: {e:?}");
        assert!(!e.to_string().ends_with('.'), "{e}");
    }
    // Oversized: an event name as long as the line limit allows is read
    // (the agent clips it to the wire limit); one byte more and the line is
    // refused before it is parsed.
    let base = DOCUMENTED_ANOMALIES[2];
    let pad = "x".repeat(MAX_LINE_LEN - base.len());
    let at_limit = base.replace("INVALID_RECORD_TYPE", &format!("INVALID_RECORD_TYPE{pad}"));
    assert_eq!(at_limit.len(), MAX_LINE_LEN);
    assert_eq!(anomaly(&at_limit).event.len(), 19 + pad.len());
    let over = at_limit.replacen('x', "xx", 1);
    assert_eq!(
        parse(&over),
        Err(EveError::LineTooLong {
            len: MAX_LINE_LEN + 1,
            limit: MAX_LINE_LEN
        })
    );
}
