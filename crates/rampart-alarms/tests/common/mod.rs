//! Helpers shared by the integration tests: generated flows and paths to
//! the third-party test data.
#![allow(dead_code)]

use std::net::IpAddr;

use rampart_alarms::detect::{FlowDetectors, FlowObs};
use rampart_alarms::model::Candidate;
use rampart_flow::{AppLabel, Direction, FlowRecord};
use uuid::Uuid;

pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

pub fn read(rel: &str) -> Vec<u8> {
    let p = format!("{TESTDATA}/{rel}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

pub fn read_str(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub const DEVICE: Uuid = Uuid::from_u128(0x5eed);

/// 2024-01-01T00:00:00Z, an arbitrary start for generated traffic.
pub const T0: u64 = 1_704_067_200_000;
pub const MIN: u64 = 60_000;
pub const HOUR: u64 = 60 * MIN;

/// An unsampled flow record.
pub fn flow(src: &str, dst: &str, sport: u16, dport: u16, proto: u8, at_ms: u64) -> FlowRecord {
    FlowRecord {
        start_ms: at_ms.saturating_sub(1000),
        end_ms: at_ms,
        bytes: 1500,
        packets: 10,
        src_addr: ip(src),
        dst_addr: ip(dst),
        exporter: ip("192.0.2.1"),
        in_if: 1,
        out_if: 2,
        sampling_rate: 1,
        domain_id: 0,
        src_port: sport,
        dst_port: dport,
        protocol: proto,
        tcp_flags: if proto == 6 { 0x1b } else { 0 },
        direction: Direction::Unknown,
        resample: 1,
        flags: 0,
        app: AppLabel::default(),
    }
}

/// A one-packet TCP SYN probe.
pub fn syn(src: &str, dst: &str, dport: u16, at_ms: u64) -> FlowRecord {
    let mut f = flow(src, dst, 40000, dport, 6, at_ms);
    f.packets = 1;
    f.bytes = 60;
    f.tcp_flags = 0x02;
    f
}

pub fn obs(f: &FlowRecord) -> FlowObs<'_> {
    FlowObs {
        flow: f,
        device: DEVICE,
        src_country: *b"ZZ",
        dst_country: *b"ZZ",
        src_asn: 0,
        dst_asn: 0,
    }
}

/// Feeds flows, collecting every candidate.
pub fn run(d: &mut FlowDetectors, flows: &[FlowRecord]) -> Vec<Candidate> {
    flows.iter().flat_map(|f| d.observe(&obs(f))).collect()
}

/// A small deterministic generator (SplitMix64), so baselines are varied
/// but every run is the same.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A benign office day: `hosts` internal clients (10.1.0.x) browsing a pool
/// of 300 external web servers (HTTPS, full TCP exchanges), resolving names
/// at the internal resolver 10.1.255.53 (answers from port 53), and the
/// resolver itself querying many external authoritative servers on UDP 53.
/// Uploads vary per host between 0.5 and 3 MB per 5 minutes.
pub fn benign_day(rng: &mut Rng, hosts: u32, from_ms: u64, hours: u64) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    let end = from_ms + hours * HOUR;
    let mut t = from_ms;
    while t < end {
        for h in 1..=hosts {
            let src = format!("10.1.0.{h}");
            // A few HTTPS connections per 5 minutes.
            for _ in 0..(1 + rng.below(4)) {
                let srv = format!("198.51.{}.{}", rng.below(2), 1 + rng.below(150));
                let at = t + rng.below(5 * MIN);
                let sport = 49152 + rng.below(16000) as u16;
                let mut up = flow(&src, &srv, sport, 443, 6, at);
                up.bytes = 100_000 + rng.below(700_000);
                up.packets = 20 + rng.below(400);
                let mut down = flow(&srv, &src, 443, sport, 6, at);
                down.bytes = 1_000_000 + rng.below(5_000_000);
                down.packets = 50 + rng.below(3000);
                out.push(up);
                out.push(down);
            }
            // DNS: client to resolver, resolver's answer back.
            let at = t + rng.below(5 * MIN);
            let sport = 49152 + rng.below(16000) as u16;
            let mut q = flow(&src, "10.1.255.53", sport, 53, 17, at);
            q.packets = 1;
            q.bytes = 70;
            let mut a = flow("10.1.255.53", &src, 53, sport, 17, at);
            a.packets = 1;
            a.bytes = 200;
            out.push(q);
            out.push(a);
        }
        // The resolver's upstream queries: 40 authoritative servers.
        for _ in 0..40 {
            let at = t + rng.below(5 * MIN);
            let ns = format!("203.0.113.{}", 1 + rng.below(200));
            let mut q = flow(
                "10.1.255.53",
                &ns,
                30000 + rng.below(30000) as u16,
                53,
                17,
                at,
            );
            q.packets = 1;
            q.bytes = 80;
            out.push(q);
        }
        t += 5 * MIN;
    }
    out.sort_by_key(|f| f.end_ms);
    out
}
