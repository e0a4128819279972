//! Suricata EVE alerts through the real pipeline: a tailed EVE file's
//! `alert` events leave the agent as one sealed "ids_alerts" batch at alarm
//! priority, masked by the same data controls as flows, while its `flow`
//! events still become flows.
//!
//! The events are telegraf's Suricata test files (`v2/alert.json`,
//! `v2/flow.json`, see shared/testdata/suricata_eve/PROVENANCE.md); the
//! expected values are the ones telegraf's `suricata_test.go` asserts.
//! No sample there has an `anomaly` event, so [`ANOMALY`] is an example
//! from Suricata's user guide ("Eve JSON Format", "Event type: Anomaly").

mod flowkit;

use std::net::IpAddr;
use std::sync::Arc;

use flowkit::{contains, wait_for, Env, EVE};
use rampart_agent::masking::Controls;
use rampart_agent::pipeline::FlowOptions;
use rampart_proto::alerts::{self, AnomalyInfo, IdsAlert};
use rampart_proto::batch::Priority;
use rampart_proto::controls::{DataControls, PseudonymKey};

fn one_line(rel: &str) -> String {
    let text = std::fs::read_to_string(format!("{EVE}/{rel}")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    format!("{v}\n")
}

/// An `applayer` anomaly, one of the guide's examples, on one line.
const ANOMALY: &str = r#"{"timestamp":"2016-01-11T05:10:54.612110-0800","flow_id":412547343494194,"pcap_cnt":1391293,"event_type":"anomaly","src_ip":"192.168.122.149","src_port":49324,"dest_ip":"69.195.71.174","dest_port":443,"proto":"TCP","app_proto":"tls","anomaly":{"type":"applayer","event":"APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION","layer":"proto_detect"}}"#;

/// Tails an EVE file holding the alert and a flow event under `controls`,
/// and returns the alerts batch (header, frame, plaintext) and the flows.
fn run(controls: Option<DataControls>, key: Option<&PseudonymKey>) -> (flowkit::Shipped, usize) {
    run_lines(&one_line("telegraf/v2/alert.json"), controls, key)
}

/// Tails an EVE file to which `event` (one alert or anomaly line) and a
/// flow event are appended, as [`run`] does.
fn run_lines(
    event: &str,
    controls: Option<DataControls>,
    key: Option<&PseudonymKey>,
) -> (flowkit::Shipped, usize) {
    let env = Env::new();
    let eve = env.path("eve.json");
    // A first run tails from the end (like `tail -F`): the events are
    // appended once the tailer is reading.
    std::fs::write(&eve, "").unwrap();
    let c = Arc::new(Controls::load(&env.sd));
    if let Some(ctl) = controls {
        c.set(ctl).unwrap();
    }
    if let Some(k) = key {
        c.set_key(k).unwrap();
    }
    let flows = env.start_with(
        FlowOptions {
            eve: vec![eve.clone()],
            ..Env::options()
        },
        c,
    );
    // Its counters appear after its first poll, which opened the file.
    wait_for(10, "the tailer to open the file", || {
        flows
            .status()
            .files
            .values()
            .any(|f| f.path.ends_with("eve.json"))
    });
    flowkit::append(
        &eve,
        format!(
            "{}\n{}",
            event.trim_end(),
            one_line("telegraf/v2/flow.json")
        )
        .as_bytes(),
    );
    wait_for(10, "the alert to ship", || {
        flows.status().alerts_shipped == 1
    });
    flows.stop();
    let shipped = env.drain();
    let flow_records: usize = shipped.iter().map(|s| s.records.len()).sum();
    let mut alert_batches: Vec<flowkit::Shipped> = shipped
        .into_iter()
        .filter(|s| s.header.kind == alerts::BATCH_KIND)
        .collect();
    assert_eq!(alert_batches.len(), 1);
    (alert_batches.remove(0), flow_records)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn eve_alerts_ship_sealed_at_alarm_priority_with_their_fields() {
    let (b, flows) = run(None, None);
    assert_eq!(b.header.priority, Priority::Alarm);
    assert_eq!(b.header.items, 1);
    let got = alerts::decode(&b.plaintext).unwrap();
    // TestSuricataAlerts: alert.json's fields as telegraf reads them.
    let want = IdsAlert {
        event_type: "alert".into(),
        // 2021-05-30T20:07:13.208777+0200
        timestamp_ms: 1_622_398_033_208,
        src_addr: Some(ip("10.0.0.5")),
        dst_addr: Some(ip("179.60.192.3")),
        src_port: Some(18715),
        dst_port: Some(80),
        protocol: Some(6),
        gid: 1,
        signature_id: 6,
        rev: 0,
        signature: "Corrupted HTTP body".into(),
        category: "Misc activity".into(),
        severity: 3,
        action: "allowed".into(),
        flow_id: Some(1_696_236_471_136_137),
        app_proto: None,
        in_iface: Some("s1-suricata".into()),
        anomaly: None,
    };
    assert_eq!(got, vec![want]);
    assert!(flows >= 1, "the flow event still becomes flows");
}

#[test]
fn masked_alert_addresses_never_reach_the_sealed_bytes() {
    let key = PseudonymKey {
        key_id: "k1".into(),
        key_b64: rampart_proto::b64(&[7u8; 32]),
    };
    for controls in [
        DataControls {
            version: 1,
            pseudonymize_addresses: true,
            ..DataControls::default()
        },
        DataControls {
            version: 2,
            collect_addresses: false,
            ..DataControls::default()
        },
    ] {
        let pseudonyms = controls.pseudonymize_addresses;
        let (b, _) = run(Some(controls), Some(&key));
        for bytes in [&b.frame, &b.plaintext] {
            for a in ["10.0.0.5", "179.60.192.3"] {
                let v4: std::net::Ipv4Addr = a.parse().unwrap();
                assert!(!contains(bytes, a.as_bytes()), "{a} as text");
                assert!(!contains(bytes, &v4.octets()), "{a} as octets");
            }
        }
        let got = alerts::decode(&b.plaintext).unwrap();
        let a = &got[0];
        if pseudonyms {
            let is_pseudonym = |x: Option<IpAddr>| matches!(x, Some(IpAddr::V6(v)) if v.octets()[..4] == rampart_agent::masking::PSEUDONYM_PREFIX);
            assert!(
                is_pseudonym(a.src_addr) && is_pseudonym(a.dst_addr),
                "{a:?}"
            );
        } else {
            assert_eq!((a.src_addr, a.dst_addr), (None, None));
        }
        assert_eq!(a.signature, "Corrupted HTTP body", "the rest is kept");
    }
}

#[test]
fn eve_anomalies_ship_as_ids_alerts() {
    let (b, flows) = run_lines(ANOMALY, None, None);
    assert_eq!(b.header.priority, Priority::Alarm);
    assert_eq!(b.header.items, 1);
    let got = alerts::decode(&b.plaintext).unwrap();
    let want = IdsAlert {
        event_type: "anomaly".into(),
        // 2016-01-11T05:10:54.612110-0800 = 13:10:54.612Z.
        timestamp_ms: 1_452_517_854_612,
        src_addr: Some(ip("192.168.122.149")),
        dst_addr: Some(ip("69.195.71.174")),
        src_port: Some(49324),
        dst_port: Some(443),
        protocol: Some(6),
        gid: 0,
        signature_id: 0,
        rev: 0,
        signature: "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION".into(),
        category: "anomaly".into(),
        severity: 0,
        action: String::new(),
        flow_id: Some(412_547_343_494_194),
        app_proto: Some("tls".into()),
        in_iface: None,
        anomaly: Some(AnomalyInfo {
            kind: "applayer".into(),
            event: "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION".into(),
            layer: Some("proto_detect".into()),
            code: None,
        }),
    };
    assert_eq!(got, vec![want]);
    assert!(flows >= 1, "the flow event still becomes flows");
}

#[test]
fn masked_anomaly_addresses_never_reach_the_sealed_bytes() {
    let controls = DataControls {
        version: 1,
        collect_addresses: false,
        ..DataControls::default()
    };
    let key = PseudonymKey {
        key_id: "k1".into(),
        key_b64: rampart_proto::b64(&[7u8; 32]),
    };
    let (b, _) = run_lines(ANOMALY, Some(controls), Some(&key));
    for bytes in [&b.frame, &b.plaintext] {
        for a in ["192.168.122.149", "69.195.71.174"] {
            let v4: std::net::Ipv4Addr = a.parse().unwrap();
            assert!(!contains(bytes, a.as_bytes()), "{a} as text");
            assert!(!contains(bytes, &v4.octets()), "{a} as octets");
        }
    }
    let got = alerts::decode(&b.plaintext).unwrap();
    assert_eq!((got[0].src_addr, got[0].dst_addr), (None, None));
    assert_eq!(got[0].event_type, "anomaly");
    assert_eq!(
        got[0].anomaly.as_ref().map(|x| x.event.as_str()),
        Some("APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION"),
        "the anomaly itself is kept"
    );
}

#[test]
fn unnamed_and_oversized_anomalies_fit_the_wire() {
    use rampart_agent::tail::{EveParser, LineParser};
    // Written from the guide's field list: an `unknown` anomaly has a code
    // and no event name; the long name is over the wire's text limit.
    let unknown = r#"{"timestamp":"2016-09-13T04:05:06Z","event_type":"anomaly","anomaly":{"type":"unknown","code":4242}}"#;
    let long = ANOMALY.replace(
        "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION",
        &"é".repeat(alerts::MAX_TEXT),
    );
    let mut p = EveParser::default();
    let mut flows = Vec::new();
    for line in [unknown, &long] {
        p.line(format!("{line}\n").as_bytes(), &mut flows).unwrap();
    }
    assert!(flows.is_empty(), "anomalies carry no flows");
    let got = p.take_alerts();
    assert_eq!(got[0].signature, "unknown anomaly code 4242");
    let info = got[0].anomaly.as_ref().unwrap();
    assert_eq!(
        (info.kind.as_str(), info.event.as_str(), info.code),
        ("unknown", "", Some(4242))
    );
    let info = got[1].anomaly.as_ref().unwrap();
    assert!(info.event.len() <= alerts::MAX_TEXT && got[1].signature == info.event);
    assert!(info.event.chars().all(|c| c == 'é'));
    assert_eq!(alerts::decode(&alerts::encode(&got)).unwrap(), got);
}
