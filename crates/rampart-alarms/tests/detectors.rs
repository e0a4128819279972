//! Each flow detector fires on a generated positive case and stays silent
//! over a generated benign baseline; snapshots restore exactly; state stays
//! within its caps.
//!
//! Expected values are the definitions in the settings (thresholds,
//! windows), not outputs of the code: "30 distinct ports in a minute is at
//! least 15 in 5 minutes", "2 GB in one bucket is above mean + 4σ of
//! buckets of at most 3.2 MB and above the 100 MB floor".

mod common;

use common::{benign_day, flow, obs, run, syn, Rng, DEVICE, HOUR, MIN, T0};
use rampart_alarms::detect::{is_probe, FlowDetectors, FlowObs};
use rampart_alarms::model::{AlarmKind, Candidate};
use rampart_alarms::settings::DetectorSettings;
use rampart_flow::filter::Filter;
use rampart_flow::{FlowFlags, FlowRecord};

fn kinds(cs: &[Candidate]) -> Vec<AlarmKind> {
    cs.iter().map(|c| c.kind).collect()
}

fn of(cs: &[Candidate], k: AlarmKind) -> Vec<&Candidate> {
    cs.iter().filter(|c| c.kind == k).collect()
}

#[track_caller]
fn filter_parses(c: &Candidate) {
    let f = c.flow_filter.as_deref().expect("a flow filter");
    Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert!(
        c.dedupe_key.starts_with(&format!("{}|", c.kind.as_str())),
        "{}",
        c.dedupe_key
    );
}

/// Default settings with a 1 h learning period, so tests stay short.
fn settings() -> DetectorSettings {
    let mut s = DetectorSettings::default();
    s.new_host.learn_ms = HOUR as i64;
    s
}

fn learned(s: &DetectorSettings, hours: u64) -> (FlowDetectors, Rng) {
    let mut d = FlowDetectors::new(s).unwrap();
    let mut rng = Rng(1);
    let c = run(&mut d, &benign_day(&mut rng, 20, T0, hours));
    assert!(c.is_empty(), "benign learning raised {:?}", kinds(&c));
    (d, rng)
}

#[test]
fn benign_days_stay_silent_with_default_settings() {
    // Three days of the generated office: 24 h learning, then two days
    // that must raise nothing.
    let mut d = FlowDetectors::new(&DetectorSettings::default()).unwrap();
    let flows = benign_day(&mut Rng(42), 20, T0, 72);
    let c = run(&mut d, &flows);
    let st = d.stats();
    println!(
        "benign: {} flows, {} candidates, {st:?}",
        flows.len(),
        c.len()
    );
    assert!(!st.new_host_learning);
    assert!(
        c.is_empty(),
        "benign traffic raised {:?}",
        &c[..c.len().min(3)]
    );
    assert_eq!(st.candidates, 0);
    assert_eq!(st.flows, flows.len() as u64);
    // 20 clients and the resolver (which queries outside servers).
    assert!(st.upload_hosts == 21 && st.known_hosts == 21, "{st:?}");
}

#[test]
fn new_host_after_learning_only() {
    let s = settings();
    let mut d = FlowDetectors::new(&s).unwrap();
    let mut rng = Rng(3);
    // A host that appears during learning is learned silently.
    let mut early = flow("10.1.0.77", "198.51.0.1", 50000, 443, 6, T0 + 10 * MIN);
    let mut flows = benign_day(&mut rng, 20, T0, 2);
    flows.push(early);
    flows.sort_by_key(|f| f.end_ms);
    assert!(run(&mut d, &flows).is_empty());
    assert!(!d.stats().new_host_learning);
    // After learning: 10.1.0.77 is known, 10.1.0.99 is new, and so is an
    // IPv6 unique-local host; an external source is never a "new host".
    early.end_ms = T0 + 2 * HOUR + MIN;
    let new4 = flow(
        "10.1.0.99",
        "198.51.0.1",
        50000,
        443,
        6,
        T0 + 2 * HOUR + MIN,
    );
    let new6 = flow(
        "fd00::99",
        "2001:db8::1",
        50000,
        443,
        6,
        T0 + 2 * HOUR + MIN,
    );
    let outside = flow("198.51.0.9", "10.1.0.1", 443, 50000, 6, T0 + 2 * HOUR + MIN);
    let again = flow(
        "10.1.0.99",
        "198.51.0.2",
        50001,
        443,
        6,
        T0 + 2 * HOUR + 2 * MIN,
    );
    let c = run(&mut d, &[early, new4, new6, outside, again]);
    assert_eq!(kinds(&c), vec![AlarmKind::NewHost, AlarmKind::NewHost]);
    assert_eq!(c[0].dedupe_key, "new_host|host=10.1.0.99");
    assert_eq!(c[1].dedupe_key, "new_host|host=fd00::99");
    assert_eq!(c[0].src, Some(common::ip("10.1.0.99")));
    assert_eq!(c[0].device, Some(DEVICE));
    filter_parses(&c[0]);
    filter_parses(&c[1]);
}

#[test]
fn port_scan() {
    let s = settings();
    let (mut d, _) = learned(&s, 1);
    let t = T0 + HOUR + MIN;
    // 14 ports: one short of the threshold (15), silent.
    let few: Vec<FlowRecord> = (1..=14)
        .map(|p| syn("10.1.0.5", "10.1.0.200", p, t + u64::from(p) * 100))
        .collect();
    assert!(run(&mut d, &few).is_empty());
    // 30 ports within a minute (on another target): one alarm; the second
    // 15 are a repeat within 15 min, held back.
    let scan: Vec<FlowRecord> = (1..=30)
        .map(|p| syn("10.1.0.5", "10.1.0.201", 1000 + p, t + u64::from(p) * 1000))
        .collect();
    let c = run(&mut d, &scan);
    assert_eq!(kinds(&c), vec![AlarmKind::PortScan]);
    assert_eq!(c[0].dedupe_key, "port_scan|src=10.1.0.5");
    assert_eq!(c[0].dst, Some(common::ip("10.1.0.201")));
    assert_eq!(c[0].evidence["distinct_ports"], 15);
    filter_parses(&c[0]);
    assert_eq!(d.stats().repeats_suppressed, 1);
    // 15 ports, one every 30 s: 7.5 min, never 15 within 5 min.
    let slow: Vec<FlowRecord> = (1..=15)
        .map(|p| syn("10.1.0.6", "10.1.0.200", p, t + u64::from(p) * 30_000))
        .collect();
    assert!(run(&mut d, &slow).is_empty());
    // Full exchanges (many packets, data pushed) to 30 ports are no probes.
    let busy: Vec<FlowRecord> = (1..=30)
        .map(|p| {
            flow(
                "10.1.0.7",
                "10.1.0.200",
                40000,
                8000 + p,
                6,
                t + u64::from(p),
            )
        })
        .collect();
    assert!(run(&mut d, &busy).is_empty());
    // A server's one-packet answers from port 53 to 30 client ports: replies.
    let answers: Vec<FlowRecord> = (1..=30)
        .map(|p| {
            let mut f = flow(
                "10.1.255.53",
                "10.1.0.8",
                53,
                50000 + p,
                17,
                t + u64::from(p),
            );
            f.packets = 1;
            f
        })
        .collect();
    assert!(run(&mut d, &answers).is_empty());
}

#[test]
fn host_scan_and_ping_sweep() {
    let s = settings();
    let (mut d, _) = learned(&s, 1);
    let t = T0 + HOUR + MIN;
    // An outside address knocking on SSH of 40 internal hosts.
    let scan: Vec<FlowRecord> = (1..=40u64)
        .map(|h| syn("203.0.113.66", &format!("10.1.1.{h}"), 22, t + h * 500))
        .collect();
    let c = run(&mut d, &scan);
    assert_eq!(kinds(&c), vec![AlarmKind::HostScan]);
    assert_eq!(c[0].dedupe_key, "host_scan|src=203.0.113.66");
    assert_eq!((c[0].dst_port, c[0].protocol), (Some(22), Some(6)));
    assert_eq!(c[0].evidence["distinct_hosts"], 25);
    filter_parses(&c[0]);
    // 24 hosts: silent.
    let few: Vec<FlowRecord> = (1..=24u64)
        .map(|h| syn("203.0.113.67", &format!("10.1.1.{h}"), 22, t + h * 500))
        .collect();
    assert!(run(&mut d, &few).is_empty());
    // ICMP echo requests (type 8 in the port's high byte) to 30 hosts.
    let sweep: Vec<FlowRecord> = (1..=30u64)
        .map(|h| {
            let mut f = flow(
                "10.1.0.9",
                &format!("10.1.2.{h}"),
                0,
                8 << 8,
                1,
                t + h * 100,
            );
            f.packets = 1;
            f
        })
        .collect();
    let c = run(&mut d, &sweep);
    assert_eq!(kinds(&c), vec![AlarmKind::HostScan]);
    assert_eq!((c[0].dst_port, c[0].protocol), (None, Some(1)));
    filter_parses(&c[0]);
    // Echo replies (type 0) to 30 hosts are answers; UDP 53 to 30 servers
    // is a resolver at work.
    let replies: Vec<FlowRecord> = (1..=30u64)
        .map(|h| {
            let mut f = flow("10.1.0.10", &format!("10.1.3.{h}"), 0, 0, 1, t + h * 100);
            f.packets = 1;
            f
        })
        .collect();
    let dns: Vec<FlowRecord> = (1..=30u64)
        .map(|h| {
            let mut f = flow(
                "10.1.0.11",
                &format!("203.0.113.{h}"),
                33000,
                53,
                17,
                t + h * 100,
            );
            f.packets = 1;
            f
        })
        .collect();
    assert!(run(&mut d, &replies).is_empty());
    assert!(run(&mut d, &dns).is_empty());
}

#[test]
fn probe_definition() {
    let t = T0;
    let mut f = syn("10.0.0.1", "10.0.0.2", 80, t);
    assert!(is_probe(&f, 3));
    f.tcp_flags = 0x02 | 0x04; // SYN, RST: half-open
    assert!(is_probe(&f, 3));
    f.tcp_flags = 0x02 | 0x10; // SYN-ACK: a server's reply
    assert!(!is_probe(&f, 3));
    f.tcp_flags = 0x02 | 0x10 | 0x04; // connect() probe torn down with RST
    assert!(is_probe(&f, 3));
    f.tcp_flags = 0x1b; // data pushed
    assert!(!is_probe(&f, 3));
    f.tcp_flags = 0x02;
    f.packets = 4;
    assert!(!is_probe(&f, 3));
    f.packets = 0; // no counters: not a probe
    assert!(!is_probe(&f, 3));
}

/// A bucket of `bytes` uploaded by `host` at `at`.
fn upload(host: &str, bytes: u64, at: u64) -> FlowRecord {
    let mut f = flow(host, "198.51.0.20", 50000, 443, 6, at);
    f.bytes = bytes;
    f
}

#[test]
fn abnormal_upload() {
    let s = settings();
    // Six hours of benign traffic: every host is past the warm-up (12
    // active buckets).
    let (mut d, mut rng) = learned(&s, 6);
    let t = T0 + 6 * HOUR;
    // 10.1.0.3 sends 2 GB in one bucket, then the day goes on.
    let mut flows = benign_day(&mut rng, 20, t, 1);
    flows.push(upload("10.1.0.3", 2_000_000_000, t + 2 * MIN));
    flows.sort_by_key(|f| f.end_ms);
    let c = run(&mut d, &flows);
    assert_eq!(kinds(&c), vec![AlarmKind::AbnormalUpload], "{c:?}");
    let a = &c[0];
    assert_eq!(a.dedupe_key, "abnormal_upload|host=10.1.0.3");
    // The bucket [t, t + 5 min) alarms at its end.
    assert_eq!(a.at_ms, (t + 5 * MIN) as i64);
    assert!(a.evidence["bytes"].as_u64().unwrap() >= 2_000_000_000);
    assert!(
        a.evidence["threshold"].as_f64().unwrap() < 20_000_000.0,
        "{}",
        a.evidence
    );
    filter_parses(a);
    // The outlier did not become the baseline: another 2 GB bucket 20 min
    // later (past repeat_after_ms) alarms again.
    let t2 = t + HOUR + 20 * MIN;
    let mut flows = benign_day(&mut rng, 20, t + HOUR, 1);
    flows.push(upload("10.1.0.3", 2_000_000_000, t2));
    flows.sort_by_key(|f| f.end_ms);
    let c = run(&mut d, &flows);
    assert_eq!(kinds(&c), vec![AlarmKind::AbnormalUpload]);
    assert_eq!(c[0].at_ms, (t2 - t2 % (5 * MIN) + 5 * MIN) as i64);
}

#[test]
fn upload_below_floor_or_in_warmup_is_silent() {
    // Default settings: 24 h of learning, so these hosts are not "new".
    let s = DetectorSettings::default();
    let mut d = FlowDetectors::new(&s).unwrap();
    // Warm-up: 11 buckets of 1 MB, then 500 MB: not yet 12 buckets learned.
    let mut flows: Vec<FlowRecord> = (0..11)
        .map(|i| upload("10.2.0.1", 1_000_000, T0 + i * 5 * MIN))
        .collect();
    flows.push(upload("10.2.0.1", 500_000_000, T0 + 11 * 5 * MIN));
    flows.push(upload("10.2.0.1", 1_000_000, T0 + 12 * 5 * MIN));
    let c = run(&mut d, &flows);
    assert!(c.is_empty(), "{c:?}");
    // A warm host at 1 MB per bucket sending 50 MB: far above mean + kσ but
    // under the 100 MB floor.
    let mut flows: Vec<FlowRecord> = (0..20)
        .map(|i| upload("10.2.0.2", 1_000_000, T0 + i * 5 * MIN))
        .collect();
    flows.push(upload("10.2.0.2", 50_000_000, T0 + 20 * 5 * MIN));
    flows.push(upload("10.2.0.2", 1_000_000, T0 + 21 * 5 * MIN));
    assert!(run(&mut d, &flows).is_empty());
    // A host that goes quiet after its outlier: the bucket is closed by
    // the watermark (other hosts' flows) a bucket after it ends.
    let mut flows: Vec<FlowRecord> = (0..20)
        .map(|i| upload("10.2.0.3", 1_000_000, T0 + i * 5 * MIN))
        .collect();
    flows.push(upload("10.2.0.3", 400_000_000, T0 + 20 * 5 * MIN));
    flows.extend((21..25).map(|i| upload("10.2.0.4", 1_000_000, T0 + i * 5 * MIN)));
    let c = run(&mut d, &flows);
    assert_eq!(kinds(&c), vec![AlarmKind::AbnormalUpload]);
    assert_eq!(c[0].src, Some(common::ip("10.2.0.3")));
}

#[test]
fn blocked_traffic() {
    let mut s = settings();
    s.blocked_countries = vec!["RU".into()];
    s.blocked_asns = vec![64_496];
    s.blocked_networks = vec!["192.0.2.128/25".into()];
    let mut d = FlowDetectors::new(&s).unwrap();
    let t = T0;
    let f = flow("10.1.0.4", "198.51.100.7", 50000, 443, 6, t);
    let mut o = obs(&f);
    o.dst_country = *b"RU";
    let c = d.observe(&o);
    assert_eq!(kinds(&c), vec![AlarmKind::BlockedTraffic]);
    assert_eq!(
        c[0].dedupe_key,
        "blocked_traffic|match=country:RU|host=10.1.0.4"
    );
    filter_parses(&c[0]);
    // Another RU address talking to the same host within 15 min: a
    // repeat, held back and counted into the next candidate.
    let g = flow("198.51.100.8", "10.1.0.4", 443, 50001, 6, t + MIN);
    let mut o = obs(&g);
    o.src_country = *b"RU";
    assert!(d.observe(&o).is_empty());
    let h = flow("10.1.0.4", "198.51.100.7", 50002, 443, 6, t + 16 * MIN);
    let mut o = obs(&h);
    o.dst_country = *b"RU";
    let c = d.observe(&o);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].evidence["repeats_suppressed"], 1);
    // ASN and network matches; unknown country and ASN 0 never match.
    let a = flow("10.1.0.5", "198.51.100.9", 50000, 443, 6, t + 17 * MIN);
    let mut o = obs(&a);
    o.dst_asn = 64_496;
    assert_eq!(
        d.observe(&o)[0].dedupe_key,
        "blocked_traffic|match=asn:64496|host=10.1.0.5"
    );
    let n = flow("192.0.2.200", "10.1.0.6", 443, 50000, 6, t + 17 * MIN);
    assert_eq!(
        d.observe(&obs(&n))[0].dedupe_key,
        "blocked_traffic|match=network:192.0.2.128/25|host=10.1.0.6"
    );
    let benign = flow("192.0.2.100", "10.1.0.6", 443, 50000, 6, t + 17 * MIN);
    assert!(d.observe(&obs(&benign)).is_empty());
}

/// A flow to an address in a named target list raises the blocked alarm;
/// when the list changes, detection follows it without losing state.
#[test]
fn blocked_traffic_by_target_list_follows_the_list() {
    let mut s = settings();
    s.blocked_lists = vec!["drop".into(), "absent".into()];
    let mut d = FlowDetectors::new(&s).unwrap();
    let mut lists = std::collections::BTreeMap::new();
    lists.insert(
        "drop".to_string(),
        vec![
            "203.0.113.0/24".to_string(),
            "2001:db8:bad::/48".to_string(),
            "evil.example".to_string(),
        ],
    );
    // A list the settings do not name is not used.
    lists.insert("other".to_string(), vec!["198.51.100.0/24".to_string()]);
    assert_eq!(d.set_blocked_lists(&lists), 2, "domains are left out");
    let t = T0;
    let f = flow("10.1.0.4", "203.0.113.9", 50000, 443, 6, t);
    let c = d.observe(&obs(&f));
    assert_eq!(kinds(&c), vec![AlarmKind::BlockedTraffic]);
    assert_eq!(
        c[0].dedupe_key,
        "blocked_traffic|match=list:drop|host=10.1.0.4"
    );
    assert_eq!(c[0].evidence["list_entry"], "203.0.113.0/24");
    filter_parses(&c[0]);
    let v6 = flow("2001:db8:bad::1", "fd00::5", 443, 50000, 6, t + MIN);
    assert_eq!(
        d.observe(&obs(&v6))[0].dedupe_key,
        "blocked_traffic|match=list:drop|host=fd00::5"
    );
    let other = flow("10.1.0.6", "198.51.100.7", 50000, 443, 6, t + MIN);
    assert!(d.observe(&obs(&other)).is_empty());
    // The list changes: its new entry matches, the removed one no longer.
    lists.insert("drop".to_string(), vec!["198.51.100.0/24".to_string()]);
    assert_eq!(d.set_blocked_lists(&lists), 1);
    let now_listed = flow("10.1.0.7", "198.51.100.7", 50000, 443, 6, t + 2 * MIN);
    assert_eq!(
        d.observe(&obs(&now_listed))[0].dedupe_key,
        "blocked_traffic|match=list:drop|host=10.1.0.7"
    );
    let removed = flow("10.1.0.8", "203.0.113.9", 50000, 443, 6, t + 2 * MIN);
    assert!(d.observe(&obs(&removed)).is_empty());
    // Bad list names are refused by validation.
    s.blocked_lists = vec!["Bad Name".into()];
    assert!(s.validate().unwrap_err().contains("blocked_lists[0]"));
}

#[test]
fn large_flow_to_new_destination() {
    let s = settings();
    let (mut d, _) = learned(&s, 2);
    let t = T0 + 2 * HOUR + MIN;
    // 500 MB to a destination learned in the benign hours: silent.
    let mut known = flow("10.1.0.2", "198.51.0.1", 50000, 443, 6, t);
    known.bytes = 500_000_000;
    // A new destination: first a small record (the transfer's start),
    // then a 500 MB one 10 min later: alarms once.
    let small = flow("10.1.0.2", "192.0.2.77", 50001, 443, 6, t);
    let mut big = flow("10.1.0.2", "192.0.2.77", 50001, 443, 6, t + 10 * MIN);
    big.bytes = 500_000_000;
    let mut big2 = big;
    big2.end_ms += 30 * MIN;
    // A destination first seen more than an hour before its large flow.
    let old = flow("10.1.0.2", "192.0.2.88", 50002, 443, 6, t);
    let mut old_big = flow("10.1.0.2", "192.0.2.88", 50002, 443, 6, t + 2 * HOUR);
    old_big.bytes = 500_000_000;
    let mut flows = vec![known, small, big, big2, old, old_big];
    flows.sort_by_key(|f| f.end_ms);
    let c: Vec<Candidate> = run(&mut d, &flows)
        .into_iter()
        .filter(|c| c.kind == AlarmKind::LargeFlowNewDst)
        .collect();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].dedupe_key, "large_flow_new_dst|dst=192.0.2.77");
    assert_eq!(c[0].evidence["bytes"], 500_000_000);
    filter_parses(&c[0]);
    // Sampling counts: 1 MB exported at 1:1000 is 1 GB.
    let mut sampled = flow("10.1.0.2", "192.0.2.99", 50003, 443, 6, t + 3 * HOUR);
    sampled.bytes = 1_000_000;
    sampled.sampling_rate = 1000;
    let c = d.observe(&obs(&sampled));
    assert_eq!(of(&c, AlarmKind::LargeFlowNewDst).len(), 1);
}

#[test]
fn flows_without_real_addresses() {
    let mut d = FlowDetectors::new(&DetectorSettings {
        new_host: rampart_alarms::settings::NewHostSettings {
            enabled: true,
            learn_ms: 0,
        },
        ..DetectorSettings::default()
    })
    .unwrap();
    let mut dropped = flow("0.0.0.0", "0.0.0.0", 1, 2, 6, T0);
    dropped.flags = FlowFlags::ADDR_DROPPED;
    assert!(d.observe(&obs(&dropped)).is_empty());
    assert_eq!(d.stats().flows_without_addresses, 1);
    // Pseudonyms all sit in fd72:616d::/32 (inside fc00::/7): internal or
    // not cannot be told, so no new-host alarm for them.
    let mut p = flow("fd72:616d::1", "fd72:616d::2", 50000, 443, 6, T0 + 1);
    p.flags = FlowFlags::ADDR_PSEUDONYM;
    assert!(d.observe(&obs(&p)).is_empty());
    let real = flow("10.9.9.9", "198.51.0.1", 50000, 443, 6, T0 + 2);
    assert_eq!(kinds(&d.observe(&obs(&real))), vec![AlarmKind::NewHost]);
}

/// A stream with every kind of positive in it, over benign traffic.
fn mixed_stream() -> Vec<FlowRecord> {
    let mut rng = Rng(9);
    let mut flows = benign_day(&mut rng, 20, T0, 8);
    let t = T0 + 2 * HOUR;
    flows.extend((1..=20).map(|p| syn("10.1.0.5", "10.1.0.200", p, t + u64::from(p) * 100)));
    flows
        .extend((1..=30u64).map(|h| syn("203.0.113.66", &format!("10.1.1.{h}"), 22, t + HOUR + h)));
    flows.push(flow("10.1.0.99", "198.51.0.1", 50000, 443, 6, t + 3 * HOUR));
    flows.push(upload("10.1.0.3", 2_000_000_000, t + 4 * HOUR));
    let mut big = flow("10.1.0.2", "192.0.2.77", 50001, 443, 6, t + 5 * HOUR);
    big.bytes = 500_000_000;
    flows.push(big);
    flows.sort_by_key(|f| f.end_ms);
    flows
}

fn mixed_obs(f: &FlowRecord) -> FlowObs<'_> {
    let mut o = obs(f);
    if f.dst_addr == common::ip("198.51.1.7") {
        o.dst_country = *b"RU";
    }
    o
}

#[test]
fn snapshot_restore_gives_the_same_alarms() {
    let mut s = settings();
    s.blocked_countries = vec!["RU".into()];
    let flows = mixed_stream();
    let mut whole = FlowDetectors::new(&s).unwrap();
    let all: Vec<Candidate> = flows
        .iter()
        .flat_map(|f| whole.observe(&mixed_obs(f)))
        .collect();
    let got: Vec<AlarmKind> = kinds(&all);
    for k in [
        AlarmKind::PortScan,
        AlarmKind::HostScan,
        AlarmKind::NewHost,
        AlarmKind::AbnormalUpload,
        AlarmKind::LargeFlowNewDst,
        AlarmKind::BlockedTraffic,
    ] {
        assert!(got.contains(&k), "{k:?} missing from {got:?}");
    }
    // Interrupt at several points, each time through a snapshot.
    for cut in [1, flows.len() / 3, flows.len() / 2, flows.len() - 5] {
        let mut a = FlowDetectors::new(&s).unwrap();
        let mut out: Vec<Candidate> = flows[..cut]
            .iter()
            .flat_map(|f| a.observe(&mixed_obs(f)))
            .collect();
        let snap = a.snapshot();
        let mut b = FlowDetectors::restore(&s, &snap).unwrap();
        assert_eq!(
            b.snapshot(),
            snap,
            "restore then snapshot changes the state"
        );
        out.extend(flows[cut..].iter().flat_map(|f| b.observe(&mixed_obs(f))));
        assert_eq!(out, all, "cut at {cut}");
        assert_eq!(b.stats(), whole.stats());
    }
    assert_eq!(whole.snapshot(), {
        let mut again = FlowDetectors::new(&s).unwrap();
        for f in &flows {
            again.observe(&mixed_obs(f));
        }
        again.snapshot()
    });
}

#[test]
fn restore_refuses_garbage_and_other_versions() {
    let s = DetectorSettings::default();
    assert!(matches!(
        FlowDetectors::restore(&s, b"not json"),
        Err(rampart_alarms::Error::Snapshot(_))
    ));
    let d = FlowDetectors::new(&s).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&d.snapshot()).unwrap();
    v["version"] = 99.into();
    let e = FlowDetectors::restore(&s, v.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        e,
        rampart_alarms::Error::SnapshotVersion {
            found: 99,
            expected: 1
        }
    );
    assert!(!e.to_string().ends_with('.'));
}

#[test]
fn a_million_sources_stay_within_the_caps() {
    let mut s = DetectorSettings::default();
    s.new_host.learn_ms = 0;
    let lim = s.limits.clone();
    let mut d = FlowDetectors::new(&s).unwrap();
    let n: u64 = 1_000_000;
    let mut candidates = 0usize;
    for i in 0..n {
        // Distinct internal sources, distinct external destinations, each
        // flow a probe and an upload: every map gets a new key per flow.
        let src = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
        let dst = std::net::Ipv4Addr::from(0x0b00_0000 + i as u32);
        let mut f = syn("10.0.0.0", "11.0.0.0", 22, T0 + i * 3);
        f.src_addr = src.into();
        f.dst_addr = dst.into();
        candidates += d.observe(&obs(&f)).len();
    }
    let st = d.stats();
    println!(
        "{st:?}, {candidates} candidates, snapshot {} bytes",
        d.snapshot().len()
    );
    assert_eq!(st.flows, n);
    assert!(st.known_hosts <= lim.max_known_hosts);
    assert_eq!(st.known_hosts as u64 + st.known_hosts_evicted, n);
    assert!(st.known_destinations <= lim.max_known_destinations);
    assert_eq!(
        st.known_destinations as u64 + st.known_destinations_evicted,
        n
    );
    assert!(st.upload_hosts <= lim.max_upload_hosts);
    assert!(st.port_scan_trackers <= lim.max_scan_trackers);
    assert!(st.host_scan_trackers <= lim.max_scan_trackers);
    assert!(st.repeat_keys <= lim.max_repeat_keys);
    assert!(st.known_hosts_evicted > 0 && st.scan_trackers_evicted > 0);
    // 1M new hosts in 50 min of flow time: the hourly budget (200 per kind)
    // holds the output.
    assert!(candidates <= 200, "{candidates}");
    assert!(st.over_budget as usize + candidates >= n as usize);
}

#[test]
fn settings_changes_keep_or_reset_state_as_documented() {
    let s = settings();
    let (mut d, _) = learned(&s, 2);
    let known = d.stats().known_hosts;
    assert!(known > 0);
    // Switching new-host off drops its state; on again, it learns anew.
    let mut off = s.clone();
    off.new_host.enabled = false;
    d.settings_changed(&off).unwrap();
    assert_eq!(d.stats().known_hosts, 0);
    d.settings_changed(&s).unwrap();
    assert!(d.stats().new_host_learning);
    let f = flow(
        "10.1.0.123",
        "198.51.0.1",
        50000,
        443,
        6,
        T0 + 2 * HOUR + MIN,
    );
    assert!(d.observe(&obs(&f)).is_empty());
    // A new bucket length drops the upload baselines, nothing else.
    let before = d.stats();
    let mut b = s.clone();
    b.upload.bucket_ms = 10 * MIN as i64;
    d.settings_changed(&b).unwrap();
    let after = d.stats();
    assert_eq!(after.upload_hosts, 0);
    assert_eq!(after.known_destinations, before.known_destinations);
    // Lower caps evict down to them, counted.
    let mut small = b.clone();
    small.limits.max_known_destinations = 100;
    d.settings_changed(&small).unwrap();
    let st = d.stats();
    assert_eq!(st.known_destinations, 100);
    assert_eq!(
        st.known_destinations_evicted as usize,
        before.known_destinations - 100
    );
    // Invalid settings change nothing.
    let mut bad = small.clone();
    bad.port_scan.min_ports = 0;
    assert!(d.settings_changed(&bad).is_err());
    assert_eq!(d.settings(), &small);
}
