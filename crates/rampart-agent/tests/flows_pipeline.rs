//! The flow pipeline as a library, from collector to sealed batch: a real
//! UDP socket on 127.0.0.1 fed goflow2's NetFlow v5 packet, the default
//! sampling rate recorded, the per-exporter rate limit against a flood
//! (scaled totals checked against the truth), and Suricata EVE tailing.
//! Every batch is taken out of the outbox and opened with the tenant key.

mod flowkit;

use std::net::{IpAddr, UdpSocket};

use flowkit::{flows_of, wait_for, Env, EVE, GOFLOW2};
use rampart_agent::pipeline::{Chunk, FlowOptions};
use rampart_flow::{AppLabel, Direction, FlowFlags, FlowRecord};
use rampart_proto::batch::Priority;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn netflow_v5_over_udp_reaches_the_outbox_sealed_with_the_default_sampling_rate() {
    let env = Env::new();
    let opts = FlowOptions {
        netflow_listen: vec!["127.0.0.1:0".parse().unwrap()],
        default_sampling_rate: 64,
        ..Env::options()
    };
    let c = env.start(opts);
    let to = c.local_addrs()[0];
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let v5 = std::fs::read(format!("{GOFLOW2}/TestDecodeNetFlowV5_data.bin")).unwrap();
    sender.send_to(&v5, to).unwrap();
    // A datagram of an unknown version: counted, not fatal.
    sender.send_to(&[0, 99, 0, 0], to).unwrap();
    wait_for(10, "6 flows and 2 datagrams", || {
        let s = c.status();
        flows_of(&s, "127.0.0.1") == 6 && s.exporters["127.0.0.1"].datagrams == 2
    });
    let status = c.status();
    c.stop();

    let e = &status.exporters["127.0.0.1"];
    assert_eq!((e.errors, e.sampling_assumed, e.dropped), (1, 6, 0));
    let batches = env.drain();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.header.kind, "flows");
    assert_eq!(b.header.priority, Priority::Data);
    assert_eq!(b.header.items, 6);
    // The goflow2 test's expectations (Records[0].Input = 9, 6 records) and
    // the first record as read from its byte literal, as in
    // rampart-flow/tests/goflow2.rs.
    let r = &b.records[0];
    assert_eq!(r.in_if, 9);
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.128.2.121"), ip("10.128.2.1"))
    );
    assert_eq!((r.src_port, r.dst_port, r.protocol), (8080, 47384, 6));
    assert_eq!(
        (r.packets, r.bytes, r.out_if, r.tcp_flags),
        (5, 590, 2, 0x1b)
    );
    assert_eq!(r.exporter, ip("127.0.0.1"));
    // The capture's sampling_interval is 0 (unknown): the configured default
    // is used and the record says so.
    for r in &b.records {
        assert_eq!(r.sampling_rate, 64);
        assert_eq!(r.flags, FlowFlags::SAMPLING_ASSUMED);
        assert_eq!(r.resample, 1);
    }
}

fn flood_record(n: u64, host: u8) -> FlowRecord {
    FlowRecord {
        start_ms: 1_700_000_000_000 + n,
        end_ms: 1_700_000_000_000 + n,
        bytes: 100 + (n % 1400),
        packets: 1 + n % 3,
        src_addr: IpAddr::from([10, 9, 0, host]),
        dst_addr: ip("192.0.2.80"),
        exporter: ip("198.51.100.1"),
        in_if: 1,
        out_if: 2,
        sampling_rate: 1,
        domain_id: 0,
        src_port: 40_000,
        dst_port: 80,
        protocol: 6,
        tcp_flags: 0x1b,
        direction: Direction::Ingress,
        resample: 1,
        flags: 0,
        app: AppLabel::default(),
    }
}

/// An exporter sends 10 times the limit for 4 seconds, its records always
/// in the same order (hosts 1, 2, 3, 4, 1, 2, ...), which is what made
/// every-k-th sampling alias onto one host. Tolerances: the total flow and
/// byte estimates are exact but for the partial blocks where k changes,
/// well within 1%; per host the estimate is a sum of one uniform pick per
/// block, whose standard deviation here is about 1.5% of a host's flows,
/// so 8% is over 5 sigma.
#[test]
fn a_flood_is_resampled_and_scaled_totals_stay_within_tolerance() {
    const LIMIT: u32 = 5_000;
    const PER_SECOND: u64 = 50_000;
    const SECONDS: u64 = 4;
    let env = Env::new();
    let opts = FlowOptions {
        max_flows_per_exporter: LIMIT,
        ..Env::options()
    };
    let c = env.start(opts);
    let mut truth_bytes = [0u64; 4];
    let base_ms = 1_800_000_000_000;
    for s in 0..SECONDS {
        for part in 0..25u64 {
            let records: Vec<_> = (0..PER_SECOND / 25)
                .map(|i| {
                    let n = s * PER_SECOND + part * (PER_SECOND / 25) + i;
                    let r = flood_record(n, (n % 4) as u8 + 1);
                    truth_bytes[(n % 4) as usize] += r.bytes;
                    r
                })
                .collect();
            assert!(c.submit(Chunk {
                file: None,
                received_ms: base_ms + s * 1000 + part * 40,
                records,
                alerts: Vec::new(),
                checkpoint: None,
            }));
        }
    }
    c.stop();
    let kept = env.drain_records();
    let total = PER_SECOND * SECONDS;

    // Thinned: the first second of the flood keeps under twice the limit,
    // the others at most the limit.
    assert!(
        (kept.len() as u64) < 5 * u64::from(LIMIT),
        "kept {}",
        kept.len()
    );
    assert!(kept.iter().all(|r| r.resample.is_power_of_two()));
    assert!(kept.iter().any(|r| r.resample >= 8));

    let flows: u64 = kept.iter().map(|r| r.scaled_flows()).sum();
    let err = (flows as f64 - total as f64).abs() / total as f64;
    assert!(err < 0.01, "estimated {flows} flows of {total}");
    let bytes: u64 = kept.iter().map(|r| r.scaled_bytes()).sum();
    let truth: u64 = truth_bytes.iter().sum();
    let err = (bytes as f64 - truth as f64).abs() / truth as f64;
    assert!(err < 0.02, "estimated {bytes} bytes of {truth}");
    for host in 1..=4u8 {
        let est: u64 = kept
            .iter()
            .filter(|r| r.src_addr == IpAddr::from([10, 9, 0, host]))
            .map(|r| r.scaled_flows())
            .sum();
        let want = total / 4;
        let err = (est as f64 - want as f64).abs() / want as f64;
        assert!(err < 0.08, "host {host}: estimated {est} flows of {want}");
    }
}

#[test]
fn rate_limit_counters_account_for_every_flow() {
    let env = Env::new();
    let opts = FlowOptions {
        max_flows_per_exporter: 100,
        ..Env::options()
    };
    let c = env.start(opts);
    let records: Vec<_> = (0..1000).map(|n| flood_record(n, 1)).collect();
    assert!(c.submit(Chunk {
        file: None,
        received_ms: 1_800_000_000_000,
        records,
        alerts: Vec::new(),
        checkpoint: None,
    }));
    wait_for(10, "counters", || {
        flows_of(&c.status(), "198.51.100.1") == 1000
    });
    let e = c.status().exporters["198.51.100.1"].clone();
    c.stop();
    let kept = env.drain_records();
    // 1,000 flows in one second at 100/s: 100 kept whole, then stages of
    // 12 kept flows at k = 2, 4, 8, ... (see ratelimit.rs).
    assert!(kept.len() < 200, "kept {} of 1000", kept.len());
    assert_eq!(kept.len() as u64 + e.rate_limited, 1000);
    assert_eq!(
        kept.iter().filter(|r| r.resample > 1).count() as u64,
        e.resampled
    );
    assert_eq!(e.resampled, kept.len() as u64 - 100);
}

#[test]
fn eve_flow_events_are_tailed_and_alerts_passed_over() {
    let env = Env::new();
    let path = env.path("eve.json");
    std::fs::write(&path, b"").unwrap();
    let opts = FlowOptions {
        eve: vec![path.clone()],
        ..Env::options()
    };
    let c = env.start(opts);
    let label = format!("eve:{}", path.display());
    wait_for(10, "the tailer to open the file", || {
        c.status().files.contains_key(&label)
    });
    // telegraf's test events, one JSON object per line as Suricata writes.
    let compact = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{EVE}/telegraf/v2/{name}")).unwrap())
                .unwrap();
        let mut line = serde_json::to_vec(&v).unwrap();
        line.push(b'\n');
        line
    };
    flowkit::append(&path, &compact("alert.json"));
    flowkit::append(&path, &compact("flow.json"));
    flowkit::append(&path, &compact("dns.json"));
    wait_for(10, "three lines and their counters", || {
        let s = c.status();
        s.files[&label].lines == 3 && flows_of(&s, &label) == 1
    });
    let status = c.status();
    c.stop();
    assert_eq!(status.files[&label].parse_errors, 0);
    let records = env.drain_records();
    // flow.json: 192.168.0.121:50212 -> 142.251.130.3:443 TCP, no packets
    // counted yet; the alert and dns events carry no flow.
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("192.168.0.121"), ip("142.251.130.3"))
    );
    assert_eq!((r.src_port, r.dst_port, r.protocol), (50212, 443, 6));
    assert_eq!(r.sampling_rate, 1);
    assert_eq!(status.exporters[&label].flows, 1);
}
