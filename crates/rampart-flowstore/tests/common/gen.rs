//! A generator of realistic flow mixes, shared by the tests and
//! `examples/measure.rs` (which includes this file by path).
//!
//! The mix: a few thousand internal hosts spread over six sites, each site
//! behind its own exporter (with its sampling rate, observation domain and
//! interfaces: one uplink, a handful of LAN ports, each host on one of
//! them), talking to external hosts and to each other with Zipf-like
//! popularity (a handful of hosts carry most flows, as on real networks);
//! common service ports with their protocols and ephemeral client ports;
//! heavy-tailed packet counts; downloads in full-size packets with a short
//! last one, requests and ACK streams in small ones; flow end times that
//! advance monotonically, as a collector receives them.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rampart_flow::{AppLabel, Direction, FlowRecord};
use rampart_flowstore::{Country, FlowRow};
use rampart_store::DeviceId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// (port, protocol, weight)
const SERVICES: [(u16, u8, u32); 13] = [
    (443, 6, 40),
    (443, 17, 12),
    (80, 6, 10),
    (53, 17, 16),
    (123, 17, 3),
    (22, 6, 2),
    (25, 6, 2),
    (993, 6, 3),
    (3389, 6, 1),
    (8080, 6, 3),
    (1194, 17, 1),
    (5060, 17, 1),
    (0, 1, 2),
];

const COUNTRIES: [&str; 12] = [
    "US", "DE", "FR", "GB", "NL", "IE", "JP", "SG", "BR", "CA", "SE", "CN",
];

struct Host {
    addr: IpAddr,
    country: Country,
    asn: u32,
    /// Internal hosts: their site (exporter) and LAN interface.
    site: usize,
    lan_if: u32,
}

struct Exporter {
    addr: IpAddr,
    device: Uuid,
    sampling: u32,
    domain: u32,
    app_labels: bool,
}

/// The uplink interface of every exporter.
const UPLINK_IF: u32 = 1;
const SITES: usize = 6;

/// Samples index `i` with probability proportional to `1 / (i + 1)^s`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (0..n)
            .map(|i| {
                acc += 1.0 / ((i + 1) as f64).powf(s);
                acc
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cdf.last().unwrap();
        let x = rng.gen::<f64>() * total;
        self.cdf.partition_point(|c| *c < x).min(self.cdf.len() - 1)
    }
}

pub struct Generator {
    rng: StdRng,
    internal: Vec<Host>,
    external: Vec<Host>,
    zin: Zipf,
    zex: Zipf,
    exporters: Vec<Exporter>,
    service_cdf: Vec<u32>,
    /// End time of the next flow, ms.
    clock: f64,
    step: f64,
}

impl Generator {
    /// `flows` flows whose end times spread evenly over `span_ms` from
    /// `start_ms`, among `hosts` internal hosts (and four times as many
    /// external ones), through `devices`.
    pub fn new(
        seed: u64,
        start_ms: u64,
        span_ms: u64,
        flows: u64,
        hosts: usize,
        devices: &[DeviceId],
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let internal = (0..hosts)
            .map(|i| Host {
                addr: IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
                country: Country::UNKNOWN,
                asn: 0,
                site: i % SITES,
                lan_if: 2 + (i / SITES % 8) as u32,
            })
            .collect();
        let external = (0..hosts * 4)
            .map(|i| {
                let addr = if i % 10 == 3 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        (i >> 8) as u16,
                        0,
                        0,
                        0,
                        0,
                        i as u16 + 1,
                    ))
                } else {
                    let x: u32 = rng.gen_range(0x0100_0000..0xdf00_0000);
                    IpAddr::V4(Ipv4Addr::from(x))
                };
                let c = COUNTRIES[(i * 7 + i / 3) % COUNTRIES.len()];
                Host {
                    addr,
                    country: Country::new(c),
                    asn: 64_496 + (i as u32 % 97) * 13,
                    site: 0,
                    lan_if: UPLINK_IF,
                }
            })
            .collect();
        let exporters = (0..SITES)
            .map(|e| Exporter {
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + e as u8)),
                device: devices[e % devices.len()].0,
                sampling: [1, 1, 100, 1000, 1, 0][e],
                domain: e as u32 * 256,
                app_labels: e == 4,
            })
            .collect();
        let mut acc = 0;
        let service_cdf = SERVICES
            .iter()
            .map(|s| {
                acc += s.2;
                acc
            })
            .collect();
        Generator {
            rng,
            zin: Zipf::new(hosts, 1.1),
            zex: Zipf::new(hosts * 4, 1.2),
            internal,
            external,
            exporters,
            service_cdf,
            clock: start_ms as f64,
            step: span_ms as f64 / flows.max(1) as f64,
        }
    }

    pub fn next_row(&mut self) -> FlowRow {
        let r = &mut self.rng;
        let end_ms = self.clock as u64;
        self.clock += self.step;
        let total = *self.service_cdf.last().unwrap();
        let pick = r.gen_range(0..total);
        let (port, proto, _) = SERVICES[self.service_cdf.partition_point(|c| *c <= pick)];
        let client = &self.internal[self.zin.sample(r)];
        let server = if r.gen_ratio(1, 10) {
            &self.internal[self.zin.sample(r)]
        } else {
            &self.external[self.zex.sample(r)]
        };
        let ephemeral = if proto == 1 {
            0
        } else {
            r.gen_range(32_768..61_000)
        };
        let reply = r.gen_bool(0.5);
        let (src, dst, sport, dport) = if reply {
            (server, client, port, ephemeral)
        } else {
            (client, server, ephemeral, port)
        };
        // Heavy-tailed packets: most flows are short, a few are huge.
        let u: f64 = r.gen_range(0.0001..1.0);
        let packets: u64 = match proto {
            17 if port == 53 || port == 123 => 1,
            1 => r.gen_range(1..3),
            _ => (2.0 / u.powf(0.9)).min(200_000.0) as u64,
        };
        // Data flows from the server: full-size packets and a short last
        // one. Towards it: requests and ACKs.
        let bytes = match (proto, reply) {
            (1, _) => packets * 84,
            (17, _) if packets == 1 => r.gen_range(60..300),
            (_, true) if packets > 2 => (packets - 1) * 1500 + r.gen_range(40..1500),
            (_, true) => packets * 40 + r.gen_range(0..600),
            (_, false) => packets * 52 + [0, 0, r.gen_range(100..700)][r.gen_range(0..3)],
        };
        let duration = if packets <= 2 {
            r.gen_range(0..50)
        } else {
            (-r.gen_range(0.001f64..1.0).ln() * 4_000.0).min(120_000.0) as u64
        };
        let e = &self.exporters[client.site];
        let (in_if, out_if) = if reply {
            (server.lan_if, client.lan_if)
        } else {
            (client.lan_if, server.lan_if)
        };
        let tcp_flags = if proto == 6 {
            [0x1b, 0x1b, 0x1b, 0x18, 0x02, 0x12, 0x11][r.gen_range(0..7)]
        } else {
            0
        };
        let app = if e.app_labels {
            AppLabel::new(match port {
                443 => "ssl",
                80 | 8080 => "http",
                53 => "dns",
                _ => "",
            })
        } else {
            AppLabel::default()
        };
        FlowRow {
            flow: FlowRecord {
                start_ms: end_ms.saturating_sub(duration),
                end_ms,
                bytes,
                packets,
                src_addr: src.addr,
                dst_addr: dst.addr,
                exporter: e.addr,
                in_if,
                out_if,
                sampling_rate: e.sampling,
                domain_id: e.domain,
                src_port: sport,
                dst_port: dport,
                protocol: proto,
                tcp_flags,
                direction: if reply {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                resample: if e.sampling == 1 && r.gen_ratio(1, 50) {
                    4
                } else {
                    1
                },
                flags: if e.sampling == 0 { 1 } else { 0 },
                app,
            },
            device: e.device,
            src_country: src.country,
            dst_country: dst.country,
            src_asn: src.asn,
            dst_asn: dst.asn,
        }
    }

    pub fn rows(&mut self, n: usize) -> Vec<FlowRow> {
        (0..n).map(|_| self.next_row()).collect()
    }
}
