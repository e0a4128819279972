//! Suricata EVE alerts through the real pipeline: a tailed EVE file's
//! `alert` events leave the agent as one sealed "ids_alerts" batch at alarm
//! priority, masked by the same data controls as flows, while its `flow`
//! events still become flows.
//!
//! The events are telegraf's Suricata test files (`v2/alert.json`,
//! `v2/flow.json`, see shared/testdata/suricata_eve/PROVENANCE.md); the
//! expected values are the ones telegraf's `suricata_test.go` asserts.

mod flowkit;

use std::net::IpAddr;
use std::sync::Arc;

use flowkit::{contains, wait_for, Env, EVE};
use rampart_agent::masking::Controls;
use rampart_agent::pipeline::FlowOptions;
use rampart_proto::alerts::{self, IdsAlert};
use rampart_proto::batch::Priority;
use rampart_proto::controls::{DataControls, PseudonymKey};

fn one_line(rel: &str) -> String {
    let text = std::fs::read_to_string(format!("{EVE}/{rel}")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    format!("{v}\n")
}

/// Tails an EVE file holding the alert and a flow event under `controls`,
/// and returns the alerts batch (header, frame, plaintext) and the flows.
fn run(controls: Option<DataControls>, key: Option<&PseudonymKey>) -> (flowkit::Shipped, usize) {
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
        (one_line("telegraf/v2/alert.json") + &one_line("telegraf/v2/flow.json")).as_bytes(),
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
