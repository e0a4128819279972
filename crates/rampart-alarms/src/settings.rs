//! Per-tenant detector settings, delivered to the portal as config, and the
//! [`Cidr`] type their network lists use.
//!
//! Every field has a default (`#[serde(default)]`), so a tenant's stored
//! settings name only what it changed; unknown fields are refused
//! (`deny_unknown_fields`) so a typo is an error rather than a silently
//! ignored threshold. [`DetectorSettings::validate`] checks the values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An IPv4 or IPv6 network: an address and a prefix length.
///
/// Written `a.b.c.d/n` or `x::/n`; a bare address is a host (`/32`,
/// `/128`). Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as
/// nfdump's `net` does. Families never mix, as in the flow filter: an IPv4
/// network contains only IPv4 addresses, except that an IPv4-mapped IPv6
/// address (`::ffff:10.0.0.1`, which some exporters send) is taken as the
/// IPv4 address it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, Error> {
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::BadCidr(format!("{addr}/{prefix}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Ok(Cidr { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cidr, Error> {
        let bad = || Error::BadCidr(crate::text::cut(s, 64).to_owned());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix = match p {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            // Digits only: `u8::from_str` would take "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        // A mapped address with a /n written for the IPv6 form would be
        // ambiguous; refuse instead of guessing.
        if matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) && p.is_some() {
            return Err(bad());
        }
        Cidr::new(addr, prefix).map_err(|_| bad())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Detector settings of one tenant. See each field's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSettings {
    /// The tenant's own address space, as CIDRs: decides which hosts are
    /// "internal" (new-host and upload detectors) and which traffic is
    /// outbound. Default: RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 6598
    /// shared space (100.64/10, carrier-grade NAT) and RFC 4193 unique-local
    /// IPv6 (fc00::/7): what sits behind a typical site's NAT. Tenants with
    /// public address space add theirs.
    pub internal_networks: Vec<String>,
    /// ISO 3166-1 alpha-2 codes (upper case). `ZZ` (unknown) is refused:
    /// without a GeoIP database every flow is `ZZ`.
    pub blocked_countries: Vec<String>,
    /// Autonomous system numbers; 0 (unknown) is refused.
    pub blocked_asns: Vec<u32>,
    /// CIDRs (threat lists, sanctioned ranges...).
    pub blocked_networks: Vec<String>,
    /// Names of the tenant's target lists whose addresses and CIDRs are
    /// blocked like `blocked_networks`. The portal resolves them (this
    /// crate does no IO) and hands them over with
    /// [`FlowDetectors::set_blocked_lists`](crate::detect::FlowDetectors::set_blocked_lists).
    /// Their domain entries are enforced on devices only: flow records
    /// carry addresses, not host names.
    pub blocked_lists: Vec<String>,
    pub new_host: NewHostSettings,
    pub port_scan: PortScanSettings,
    pub host_scan: HostScanSettings,
    pub upload: UploadSettings,
    pub blocked: BlockedSettings,
    pub large_flow: LargeFlowSettings,
    pub output: OutputSettings,
    pub limits: StateLimits,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            internal_networks: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            blocked_countries: Vec::new(),
            blocked_asns: Vec::new(),
            blocked_networks: Vec::new(),
            blocked_lists: Vec::new(),
            new_host: NewHostSettings::default(),
            port_scan: PortScanSettings::default(),
            host_scan: HostScanSettings::default(),
            upload: UploadSettings::default(),
            blocked: BlockedSettings::default(),
            large_flow: LargeFlowSettings::default(),
            output: OutputSettings::default(),
            limits: StateLimits::default(),
        }
    }
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A new internal source address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewHostSettings {
    pub enabled: bool,
    /// Flow time spent learning silently before any host counts as new.
    /// Default 24 h: one full day sees the hosts that come and go daily.
    /// Also the learning period of the large-flow detector's destinations.
    pub learn_ms: i64,
}

impl Default for NewHostSettings {
    fn default() -> Self {
        NewHostSettings {
            enabled: true,
            learn_ms: DAY_MS,
        }
    }
}

/// One source probing many ports of one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortScanSettings {
    pub enabled: bool,
    /// Sliding window. Default 5 min, as Zeek's `Scan::port_scan_interval`.
    pub window_ms: i64,
    /// Distinct destination ports probed within the window. Default 15, as
    /// Zeek's `Scan::port_scan_threshold`.
    pub min_ports: u32,
    /// A flow counts as a probe only with at most this many packets (as
    /// exported, not scaled by sampling: a probe is one or a few packets on
    /// the wire). Default 3: SYN, a retry, and the scanner's RST.
    pub max_probe_packets: u64,
}

impl Default for PortScanSettings {
    fn default() -> Self {
        PortScanSettings {
            enabled: true,
            window_ms: 5 * MINUTE_MS,
            min_ports: 15,
            max_probe_packets: 3,
        }
    }
}

/// One source probing one port on many destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostScanSettings {
    pub enabled: bool,
    /// Sliding window. Default 5 min, as Zeek's `Scan::addr_scan_interval`.
    pub window_ms: i64,
    /// Distinct destinations probed within the window. Default 25, as
    /// Zeek's `Scan::addr_scan_threshold`.
    pub min_hosts: u32,
    /// As [`PortScanSettings::max_probe_packets`]. Default 3.
    pub max_probe_packets: u64,
    /// UDP destination ports that legitimate clients send single packets to
    /// on many hosts: 53 (a recursive resolver queries many authoritative
    /// servers) and 123 (NTP pools). Default `[53, 123]`.
    pub ignore_udp_ports: Vec<u16>,
}

impl Default for HostScanSettings {
    fn default() -> Self {
        HostScanSettings {
            enabled: true,
            window_ms: 5 * MINUTE_MS,
            min_hosts: 25,
            max_probe_packets: 3,
            ignore_udp_ports: vec![53, 123],
        }
    }
}

/// A host's outbound bytes against its own baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    pub enabled: bool,
    /// Bucket length. Default 5 min: short enough to alarm while an
    /// exfiltration runs, long enough to smooth bursts.
    pub bucket_ms: i64,
    /// EWMA weight of a new bucket. Default 0.05: the baseline is
    /// dominated by the last ~20 active buckets (1/alpha), so it follows a
    /// host's habits over hours, not minutes.
    pub alpha: f64,
    /// Alarm when a bucket exceeds mean + k·σ. Default 4.
    pub k_sigma: f64,
    /// ...and at least this many bytes (scaled). Default 100 MB per bucket
    /// (about 2.7 Mbit/s sustained over 5 min): below it an outlier is not
    /// worth a person's time, however unusual for a quiet host.
    pub min_bytes: u64,
    /// Active buckets learned before any alarm. Default 12 (an hour of
    /// activity at 5 min).
    pub warmup_buckets: u32,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            enabled: true,
            bucket_ms: 5 * MINUTE_MS,
            alpha: 0.05,
            k_sigma: 4.0,
            min_bytes: 100_000_000,
            warmup_buckets: 12,
        }
    }
}

/// Traffic with blocked countries, ASNs or networks (the lists are on
/// [`DetectorSettings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockedSettings {
    pub enabled: bool,
}

impl Default for BlockedSettings {
    fn default() -> Self {
        BlockedSettings { enabled: true }
    }
}

/// A large flow to an external destination not seen before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LargeFlowSettings {
    pub enabled: bool,
    /// One flow record of at least this many bytes (scaled). Default
    /// 100 MB.
    pub min_bytes: u64,
    /// A destination stays "new" this long after it was first seen, so that
    /// a transfer whose first records are small (exporters cut long flows
    /// into records by their active timeout) still alarms on a later, large
    /// record. Default 1 h.
    pub new_for_ms: i64,
}

impl Default for LargeFlowSettings {
    fn default() -> Self {
        LargeFlowSettings {
            enabled: true,
            min_bytes: 100_000_000,
            new_for_ms: HOUR_MS,
        }
    }
}

/// Bounds on what the detectors emit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSettings {
    /// The same dedupe key is emitted at most once per this much flow time;
    /// repeats in between are counted and reported in the next candidate's
    /// evidence (`repeats_suppressed`). Default 15 min: a blocked
    /// connection makes a flow record every few seconds, and the portal's
    /// alarm already says "still happening".
    pub repeat_after_ms: i64,
    /// At most this many candidates of one kind per hour of flow time;
    /// beyond it they are dropped and counted in the stats. Default 200: a
    /// sweep of a /16 should not become 65,536 alarms.
    pub max_per_kind_per_hour: u32,
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings {
            repeat_after_ms: 15 * MINUTE_MS,
            max_per_kind_per_hour: 200,
        }
    }
}

/// Bounds on detector state (entries per map). A full map evicts the
/// eighth of its entries seen longest ago and counts them
/// ([`crate::detect::DetectorStats`]). Tenants may lower them; `validate`
/// refuses more than [`StateLimits::HARD_MAX`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateLimits {
    /// Internal hosts remembered by the new-host detector. Default 200,000.
    pub max_known_hosts: usize,
    /// Destinations remembered by the large-flow detector. Default 200,000.
    pub max_known_destinations: usize,
    /// Port-scan trackers (source, destination) and host-scan trackers
    /// (source, port, protocol), each. Default 50,000.
    pub max_scan_trackers: usize,
    /// Hosts with an upload baseline. Default 50,000.
    pub max_upload_hosts: usize,
    /// Dedupe keys remembered for `repeat_after_ms`. Default 50,000.
    pub max_repeat_keys: usize,
}

impl StateLimits {
    pub const HARD_MAX: usize = 1_000_000;
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_known_hosts: 200_000,
            max_known_destinations: 200_000,
            max_scan_trackers: 50_000,
            max_upload_hosts: 50_000,
            max_repeat_keys: 50_000,
        }
    }
}

fn window(name: &str, v: i64) -> Result<(), String> {
    if v <= 0 || v > 7 * DAY_MS {
        return Err(format!(
            "{name} is {v}: use a duration in ms above 0 and at most 7 days (604800000)"
        ));
    }
    Ok(())
}

fn at_least_one(name: &str, v: u64) -> Result<(), String> {
    if v == 0 {
        return Err(format!("{name} is 0: use 1 or more"));
    }
    Ok(())
}

fn cidrs(name: &str, list: &[String]) -> Result<Vec<Cidr>, String> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Cidr>().map_err(|_| {
                format!("{name}[{i}] {s:?} is not a network: write it as 10.0.0.0/8 or fc00::/7")
            })
        })
        .collect()
}

/// Longest list accepted in settings. Lists are matched per flow.
const MAX_LIST: usize = 10_000;
/// Most target lists named by `blocked_lists` (each can hold 100 000
/// networks, and all are kept in memory per tenant).
const MAX_BLOCKED_LISTS: usize = 16;

impl DetectorSettings {
    /// Checks every value; the error names the bad field and says what to
    /// write instead.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())
    }

    /// Validates and parses the lists once, for the detectors.
    pub(crate) fn compile(&self) -> Result<Compiled, String> {
        for (name, len) in [
            ("internal_networks", self.internal_networks.len()),
            ("blocked_countries", self.blocked_countries.len()),
            ("blocked_asns", self.blocked_asns.len()),
            ("blocked_networks", self.blocked_networks.len()),
            ("blocked_lists", self.blocked_lists.len()),
            (
                "host_scan.ignore_udp_ports",
                self.host_scan.ignore_udp_ports.len(),
            ),
        ] {
            if len > MAX_LIST {
                return Err(format!(
                    "{name} has {len} entries: keep it to {MAX_LIST} or fewer"
                ));
            }
        }
        let internal = cidrs("internal_networks", &self.internal_networks)?;
        let blocked_networks = cidrs("blocked_networks", &self.blocked_networks)?;
        let mut countries = Vec::with_capacity(self.blocked_countries.len());
        for (i, c) in self.blocked_countries.iter().enumerate() {
            match c.as_bytes() {
                [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() && c != "ZZ" => {
                    countries.push([*a, *b]);
                }
                _ => {
                    return Err(format!(
                        "blocked_countries[{i}] {c:?} is not a country: use an upper-case ISO 3166-1 alpha-2 code such as RU (ZZ, unknown, cannot be blocked)"
                    ))
                }
            }
        }
        if self.blocked_lists.len() > MAX_BLOCKED_LISTS {
            return Err(format!(
                "blocked_lists has {} entries: name {MAX_BLOCKED_LISTS} lists or fewer",
                self.blocked_lists.len()
            ));
        }
        for (i, n) in self.blocked_lists.iter().enumerate() {
            let ok = (1..=64).contains(&n.len())
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(format!(
                    "blocked_lists[{i}] {:?} is not a list name: use 1 to 64 of a-z, 0-9, - and _",
                    crate::text::cut(n, 64)
                ));
            }
        }
        if let Some(i) = self.blocked_asns.iter().position(|a| *a == 0) {
            return Err(format!(
                "blocked_asns[{i}] is 0, which means unknown: use a real AS number"
            ));
        }
        let n = &self.new_host;
        if n.learn_ms < 0 || n.learn_ms > 30 * DAY_MS {
            return Err(format!(
                "new_host.learn_ms is {}: use 0 (no learning) to 30 days (2592000000)",
                n.learn_ms
            ));
        }
        let p = &self.port_scan;
        window("port_scan.window_ms", p.window_ms)?;
        if p.min_ports < 2 || p.min_ports > 1000 {
            return Err(format!(
                "port_scan.min_ports is {}: use 2 to 1000",
                p.min_ports
            ));
        }
        at_least_one("port_scan.max_probe_packets", p.max_probe_packets)?;
        let h = &self.host_scan;
        window("host_scan.window_ms", h.window_ms)?;
        if h.min_hosts < 2 || h.min_hosts > 1000 {
            return Err(format!(
                "host_scan.min_hosts is {}: use 2 to 1000",
                h.min_hosts
            ));
        }
        at_least_one("host_scan.max_probe_packets", h.max_probe_packets)?;
        let u = &self.upload;
        window("upload.bucket_ms", u.bucket_ms)?;
        if !(u.alpha > 0.0 && u.alpha <= 1.0) {
            return Err(format!(
                "upload.alpha is {}: use a weight above 0 and at most 1",
                u.alpha
            ));
        }
        if !(u.k_sigma.is_finite() && u.k_sigma > 0.0 && u.k_sigma <= 100.0) {
            return Err(format!(
                "upload.k_sigma is {}: use a number above 0 and at most 100",
                u.k_sigma
            ));
        }
        at_least_one("upload.min_bytes", u.min_bytes)?;
        at_least_one("upload.warmup_buckets", u64::from(u.warmup_buckets))?;
        let l = &self.large_flow;
        at_least_one("large_flow.min_bytes", l.min_bytes)?;
        window("large_flow.new_for_ms", l.new_for_ms)?;
        let o = &self.output;
        if o.repeat_after_ms < 0 || o.repeat_after_ms > 7 * DAY_MS {
            return Err(format!(
                "output.repeat_after_ms is {}: use 0 (no limit) to 7 days (604800000)",
                o.repeat_after_ms
            ));
        }
        at_least_one(
            "output.max_per_kind_per_hour",
            u64::from(o.max_per_kind_per_hour),
        )?;
        let lim = &self.limits;
        for (name, v) in [
            ("limits.max_known_hosts", lim.max_known_hosts),
            ("limits.max_known_destinations", lim.max_known_destinations),
            ("limits.max_scan_trackers", lim.max_scan_trackers),
            ("limits.max_upload_hosts", lim.max_upload_hosts),
            ("limits.max_repeat_keys", lim.max_repeat_keys),
        ] {
            if !(8..=StateLimits::HARD_MAX).contains(&v) {
                return Err(format!("{name} is {v}: use 8 to {}", StateLimits::HARD_MAX));
            }
        }
        Ok(Compiled {
            internal,
            blocked_networks,
            countries,
            asns: self.blocked_asns.clone(),
        })
    }
}

/// The parsed lists of valid settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct Compiled {
    pub internal: Vec<Cidr>,
    pub blocked_networks: Vec<Cidr>,
    pub countries: Vec<[u8; 2]>,
    pub asns: Vec<u32>,
}

impl Compiled {
    pub fn is_internal(&self, a: IpAddr) -> bool {
        self.internal.iter().any(|c| c.contains(a))
    }
}
