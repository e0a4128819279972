//! `rampart_flow::eve::parse_line` on arbitrary input, whole and split at
//! `\n` (the seeds are EVE files, one event per line). Must never panic;
//! flows are well formed, and alerts and anomalies carry what their types
//! promise (an anomaly is named, or has the code Suricata logs instead).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use rampart_flow::eve::{parse_line, EveEvent};

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn check(line: &[u8]) {
    let Ok(event) = parse_line(line, EXPORTER) else {
        return;
    };
    let mut n = 0;
    for r in event.flows() {
        n += 1;
        assert!(r.start_ms <= r.end_ms);
        assert_eq!(r.exporter, EXPORTER);
        assert_eq!((r.sampling_rate, r.resample), (1, 1));
    }
    match &event {
        EveEvent::Flow { toclient, .. } => assert_eq!(n, 1 + usize::from(toclient.is_some())),
        EveEvent::Netflow(_) => assert_eq!(n, 1),
        EveEvent::Alert(_) => assert_eq!(n, 0),
        EveEvent::Anomaly(a) => {
            assert_eq!(n, 0);
            assert!(!a.event.is_empty() || a.code.is_some(), "{a:?}");
        }
        EveEvent::Other { event_type } => {
            assert_eq!(n, 0);
            assert!(event_type.len() <= 64);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    for line in data.split(|b| *b == b'\n') {
        check(line);
    }
});
