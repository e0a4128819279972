//! The traffic model: who talks to whom, over what, how much and when.
//!
//! A site network of `hosts` internal hosts spread over `exporters` sites
//! (one exporter per site, a host always seen by its site's exporter),
//! talking to a pool of `external` Internet hosts. Both ends are picked with
//! Zipf popularity (a few busy servers and clients, a long tail). A
//! conversation is a service (HTTPS, QUIC, DNS, ...) and gives one flow per
//! direction (unanswered probes give one). Sizes are log-normal per service,
//! with a small share of elephant flows; durations are capped at the active
//! timeout a real exporter would use.
//!
//! Everything comes from one seeded ChaCha8 stream, so a seed, a flow count
//! and an end time give the same flows, byte for byte, on every run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One unidirectional flow as an exporter would report it.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub start_ms: u64,
    pub end_ms: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub tos: u8,
    pub bytes: u64,
    pub packets: u64,
    pub in_if: u16,
    pub out_if: u16,
    pub src_mask: u8,
    pub dst_mask: u8,
    pub exporter: usize,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub seed: u64,
    pub flows: u64,
    pub exporters: usize,
    pub hosts: usize,
    pub external: usize,
    pub ipv6_share: f64,
    /// Flow end times are spread over [end - days, end].
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Zipf(s) over ranks 1..=n by inverse CDF (binary search in a table of n
/// floats, which bounds the memory by n, not by the flow count).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// A rank in 0..n.
    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn public_v4(mut h: u64) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from(h as u32);
        let [o1, o2, ..] = a.octets();
        let special = o1 == 0
            || o1 == 10
            || o1 == 127
            || (o1 == 100 && (64..128).contains(&o2))
            || (o1 == 169 && o2 == 254)
            || (o1 == 172 && (16..32).contains(&o2))
            || (o1 == 192 && o2 == 168)
            || o1 >= 224;
        if !special {
            return a;
        }
        h = splitmix(h);
    }
}

#[derive(Clone, Copy)]
enum Service {
    Https,
    Quic,
    Http,
    Dns,
    Ntp,
    Ssh,
    Smtp,
    Imaps,
    Rdp,
    Icmp,
    OtherTcp,
    P2p,
    /// Outside client to an internal server (HTTPS).
    InboundHttps,
    /// Unanswered SYN probe from outside.
    Scan,
}

const SERVICES: &[(Service, u32)] = &[
    (Service::Https, 45),
    (Service::Quic, 10),
    (Service::Http, 7),
    (Service::Dns, 15),
    (Service::Ntp, 2),
    (Service::Ssh, 2),
    (Service::Smtp, 1),
    (Service::Imaps, 1),
    (Service::Rdp, 1),
    (Service::Icmp, 3),
    (Service::OtherTcp, 4),
    (Service::P2p, 3),
    (Service::InboundHttps, 4),
    (Service::Scan, 2),
];

const OTHER_TCP_PORTS: &[u16] = &[8080, 8443, 5222, 1935, 3306, 5432, 6443, 9000, 993, 465];

pub struct Model {
    cfg: ModelConfig,
    rng: ChaCha8Rng,
    host_zipf: Zipf,
    ext_zipf: Zipf,
    service_total: u32,
    /// Flows generated so far (the end-time slot of the next one).
    n: u64,
    pending: Option<Flow>,
    boot_seed: u64,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Model {
        Model {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            host_zipf: Zipf::new(cfg.hosts, 1.0),
            ext_zipf: Zipf::new(cfg.external, 1.1),
            service_total: SERVICES.iter().map(|(_, w)| w).sum(),
            n: 0,
            pending: None,
            boot_seed: splitmix(cfg.seed ^ 0xb007),
            cfg,
        }
    }

    /// When exporter `e` booted (for NetFlow v9's sysUptime-relative times):
    /// between one and four days before the first flow.
    pub fn boot_ms(&self, e: usize) -> u64 {
        let jitter = splitmix(self.boot_seed ^ e as u64) % (3 * 86_400_000);
        self.cfg.start_ms.saturating_sub(86_400_000 + jitter)
    }

    /// Internal host `h`: 10.<site>.<x>.<y>, and fd00:0:<site>::<n> for IPv6.
    fn internal(&self, h: usize, v6: bool) -> (IpAddr, usize) {
        let site = h % self.cfg.exporters;
        let n = h / self.cfg.exporters;
        if v6 {
            let a = Ipv6Addr::new(0xfd00, 0, site as u16, 0, 0, 0, 0, n as u16 + 1);
            (IpAddr::V6(a), site)
        } else {
            let a = Ipv4Addr::new(10, (site % 256) as u8, (n / 250) as u8, (n % 250) as u8 + 1);
            (IpAddr::V4(a), site)
        }
    }

    /// External host of popularity rank `r`: a fixed pseudo-random public
    /// address (ranks are scattered, not sequential).
    fn external(&self, r: usize, v6: bool) -> IpAddr {
        let h = splitmix(self.cfg.seed ^ 0xe7e7 ^ (r as u64).wrapping_mul(0x1000_0000_01b3));
        if v6 {
            let hi = 0x2a00_0000_0000_0000u64 | (h >> 12) & 0x000f_ffff_ffff_ffff;
            let lo = splitmix(h);
            IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)))
        } else {
            IpAddr::V4(public_v4(h))
        }
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box-Muller.
        let u1: f64 = self.rng.gen::<f64>().max(1e-300);
        let u2: f64 = self.rng.gen();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }

    fn pick_service(&mut self) -> Service {
        let mut x = self.rng.gen_range(0..self.service_total);
        for (s, w) in SERVICES {
            if x < *w {
                return *s;
            }
            x -= w;
        }
        Service::Https
    }

    fn ephemeral(&mut self) -> u16 {
        self.rng.gen_range(32768..61000)
    }

    /// The next end-time slot: flows come out in end-time order, evenly
    /// spread with jitter over the window.
    fn next_end(&mut self) -> u64 {
        let span = (self.cfg.end_ms - self.cfg.start_ms) as f64;
        let slot = (self.n as f64 + self.rng.gen::<f64>()) / self.cfg.flows as f64;
        self.n += 1;
        self.cfg.start_ms + (slot * span) as u64
    }

    /// The next flow, or `None` after `flows` flows.
    pub fn next_flow(&mut self) -> Option<Flow> {
        if self.n >= self.cfg.flows {
            return None;
        }
        if let Some(mut f) = self.pending.take() {
            // The reply of the previous conversation: same duration, own
            // end-time slot.
            let d = f.end_ms - f.start_ms;
            f.end_ms = self.next_end();
            f.start_ms = f.end_ms.saturating_sub(d);
            return Some(f);
        }
        let v6 = self.rng.gen_bool(self.cfg.ipv6_share);
        let hr = self.host_zipf.sample(&mut self.rng);
        // Scatter host popularity over sites so no site holds all the top.
        let h = splitmix(hr as u64 ^ self.cfg.seed) as usize % self.cfg.hosts;
        let (inside, site) = self.internal(h, v6);
        let er = self.ext_zipf.sample(&mut self.rng);
        let outside = self.external(er, v6);
        let service = self.pick_service();
        let client_port = self.ephemeral();

        // (client is inside?, proto, server port, request pkts, bytes/pkt
        // request, response pkts factor, bytes/pkt response, duration ms,
        // answered?)
        let elephant = self.rng.gen_bool(0.005);
        let (inside_client, proto, sport, req_pkts, req_bpp, resp_pkts, resp_bpp, dur_ms, answered) =
            match service {
                Service::Https | Service::InboundHttps | Service::Http | Service::Quic => {
                    let p = if elephant {
                        self.lognormal(3000.0, 1.0)
                    } else {
                        self.lognormal(8.0, 1.3)
                    };
                    let resp = p * self.rng.gen_range(1.0..3.0);
                    let d = if elephant {
                        self.lognormal(300_000.0, 0.8).min(1_800_000.0)
                    } else {
                        self.lognormal(2_000.0, 1.5).min(120_000.0)
                    };
                    let (proto, port) = match service {
                        Service::Quic => (17, 443),
                        Service::Http => (6, 80),
                        _ => (6, 443),
                    };
                    let inside_client = !matches!(service, Service::InboundHttps);
                    let rb = self.rng.gen_range(60.0..220.0);
                    let sb = self.rng.gen_range(900.0..1460.0);
                    (inside_client, proto, port, p, rb, resp, sb, d, true)
                }
                Service::Dns => {
                    let rb = self.rng.gen_range(60.0..90.0);
                    let sb = self.rng.gen_range(90.0..320.0);
                    let d = self.rng.gen_range(0.0..40.0);
                    (true, 17, 53, 1.0, rb, 1.0, sb, d, self.rng.gen_bool(0.97))
                }
                Service::Ntp => (true, 17, 123, 1.0, 76.0, 1.0, 76.0, 0.0, true),
                Service::Ssh => {
                    let p = self.lognormal(40.0, 1.5);
                    let b = self.rng.gen_range(90.0..300.0);
                    let d = self.lognormal(20_000.0, 1.5).min(1_800_000.0);
                    (true, 6, 22, p, b, p * 1.1, b, d, true)
                }
                Service::Smtp | Service::Imaps | Service::Rdp | Service::OtherTcp => {
                    let port = match service {
                        Service::Smtp => 587,
                        Service::Imaps => 993,
                        Service::Rdp => 3389,
                        _ => OTHER_TCP_PORTS[self.rng.gen_range(0..OTHER_TCP_PORTS.len())],
                    };
                    let p = self.lognormal(15.0, 1.2);
                    let d = self.lognormal(5_000.0, 1.2).min(120_000.0);
                    (true, 6, port, p, 180.0, p * 1.5, 900.0, d, true)
                }
                Service::P2p => {
                    let port = self.ephemeral();
                    let p = self.lognormal(20.0, 1.5);
                    let d = self.lognormal(10_000.0, 1.0).min(120_000.0);
                    (true, 17, port, p, 700.0, p, 900.0, d, true)
                }
                Service::Icmp => {
                    let p = self.rng.gen_range(1..10) as f64;
                    (
                        true,
                        1,
                        0,
                        p,
                        84.0,
                        p,
                        84.0,
                        p * 1000.0,
                        self.rng.gen_bool(0.9),
                    )
                }
                Service::Scan => (
                    false,
                    6,
                    [22, 23, 445, 3389][self.rng.gen_range(0..4)],
                    1.0,
                    60.0,
                    0.0,
                    0.0,
                    0.0,
                    false,
                ),
            };
        let (client, server) = if inside_client {
            (inside, outside)
        } else {
            (outside, inside)
        };
        // (request src, request dst, reply src, reply dst) ports. ICMP has
        // type << 8 | code in the destination port, as exporters and nfdump
        // do (echo request 8/0, echo reply 0/0).
        let (req_sp, req_dp, rep_sp, rep_dp) = if proto == 1 {
            (0, 8 << 8, 0, 0)
        } else {
            (client_port, sport, sport, client_port)
        };
        let end_ms = self.next_end();
        let dur = dur_ms as u64;
        let clamp_pk = |p: f64| (p.round() as u64).clamp(1, 2_000_000);
        let req_packets = clamp_pk(req_pkts);
        let req_bytes =
            ((req_packets as f64 * req_bpp) as u64).clamp(req_packets * 28, u64::from(u32::MAX));
        let flags_req = match (proto, answered, self.rng.gen_range(0..10)) {
            (6, false, _) => 0x02,
            (6, true, 0 | 1) => 0x18, // ongoing: ACK|PSH
            (6, true, 2) => 0x16,     // reset: SYN|RST|ACK
            (6, true, _) => 0x1b,     // FIN|SYN|PSH|ACK
            _ => 0,
        };
        // Internal side on ifIndex 2..=9 (site VLANs), Internet on 1.
        let lan_if = 2 + (h % 8) as u16;
        let (in_if, out_if) = if inside_client {
            (lan_if, 1)
        } else {
            (1, lan_if)
        };
        let mask_of = |a: IpAddr, internal: bool| match (a, internal) {
            (IpAddr::V4(_), true) => 24,
            (IpAddr::V6(_), true) => 64,
            (IpAddr::V4(_), false) => 16 + (splitmix(er as u64) % 9) as u8,
            (IpAddr::V6(_), false) => 32 + (splitmix(er as u64) % 17) as u8,
        };
        let tos = if self.rng.gen_bool(0.05) { 0xb8 } else { 0 };
        let req = Flow {
            start_ms: end_ms.saturating_sub(dur),
            end_ms,
            src: client,
            dst: server,
            src_port: req_sp,
            dst_port: req_dp,
            proto,
            tcp_flags: flags_req,
            tos,
            bytes: req_bytes,
            packets: req_packets,
            in_if,
            out_if,
            src_mask: mask_of(client, inside_client),
            dst_mask: mask_of(server, !inside_client),
            exporter: site,
        };
        if answered {
            let rp = clamp_pk(resp_pkts);
            let rb = ((rp as f64 * resp_bpp) as u64).clamp(rp * 28, u64::from(u32::MAX));
            self.pending = Some(Flow {
                src: server,
                dst: client,
                src_port: rep_sp,
                dst_port: rep_dp,
                tcp_flags: if proto == 6 { flags_req | 0x10 } else { 0 },
                bytes: rb,
                packets: rp,
                in_if: out_if,
                out_if: in_if,
                src_mask: req.dst_mask,
                dst_mask: req.src_mask,
                ..req
            });
        }
        Some(req)
    }
}
