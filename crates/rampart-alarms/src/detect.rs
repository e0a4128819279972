//! The flow detectors of one tenant.
//!
//! [`FlowDetectors::observe`] takes one enriched flow at a time and returns
//! the candidates it completes. Everything runs on **flow time** (each
//! record's `end_ms`), never on a clock, so replaying the same flows gives
//! the same candidates, and a restored [`snapshot`](FlowDetectors::snapshot)
//! carries on exactly where the original would have.
//!
//! # Time
//!
//! The detectors keep a watermark, the latest `end_ms` seen. Windows and
//! buckets use each flow's own time; the watermark drives what happens
//! "later": expiring trackers, closing upload buckets of hosts that went
//! quiet, the hourly output budget. Learning periods count *learned time*:
//! every advance of the watermark, each step counted as at most
//! [`MAX_LEARN_STEP_MS`]. One exporter with a clock years ahead can so end
//! no learning period early, and a tenant that is idle at night learns a
//! little longer in wall time.
//!
//! # Detectors
//!
//! - **new host**: an address in `internal_networks` seen for the first
//!   time as a flow *source*, once `new_host.learn_ms` of learned time has
//!   passed since the detector started (everything seen until then is
//!   learned silently). Sources, not destinations: a destination that never
//!   answers (a scan's target list) is no host on the network.
//! - **port scan / host scan**: see [`is_probe`] for what counts as a probe.
//!   A port scan is one source probing `min_ports` distinct ports of one
//!   destination within a sliding `window_ms`; a host scan one source
//!   probing `min_hosts` distinct destinations on one (port, protocol)
//!   within its window (ICMP echo requests count as port 0 of their
//!   protocol, so a ping sweep is a host scan). A tracker that alarms
//!   starts counting afresh.
//! - **abnormal upload**: per internal host, outbound (destination not
//!   internal) scaled bytes per `bucket_ms` bucket, aligned to the epoch.
//!   A bucket closes when the host's next flow falls in a later bucket, or
//!   when the watermark is a full bucket past its end (late flows get that
//!   much grace). Only buckets with traffic update the baseline: counting
//!   idle buckets as zeros would decay a host's baseline every night and
//!   weekend and make each morning an outlier. The baseline is an EWMA of
//!   mean and variance (`mean += α·d`, `var = (1-α)·(var + α·d²)`, with
//!   `d = x - mean`). After `warmup_buckets` buckets, a bucket alarms when
//!   it exceeds `mean + k·σ` and `min_bytes`; from then on every bucket is
//!   clamped to `mean + k·σ` before it updates the baseline, so an
//!   exfiltration of 10 GB moves the mean by at most `α·k·σ` and does not
//!   teach the detector that 10 GB is normal, while a host whose traffic
//!   really grows is still followed, a bounded step at a time. The
//!   candidate is tenant-wide (`device` is `None`): a host's flows may
//!   come through several devices.
//! - **blocked traffic**: source or destination country in
//!   `blocked_countries`, ASN in `blocked_asns`, address in
//!   `blocked_networks`, or in a network of a `blocked_lists` target list
//!   (first match in that order). Keyed by the match and
//!   the internal side of the flow, so many remote addresses of one
//!   blocked country talking to one host are one alarm.
//! - **large flow to a new destination**: a flow record of at least
//!   `large_flow.min_bytes` scaled bytes to a destination outside
//!   `internal_networks` that was first seen, after learning, at most
//!   `new_for_ms` before. Destinations are tenant-wide and learned from
//!   every flow; each new destination alarms at most once.
//!
//! Flows whose addresses were dropped at the edge
//! (`FlowFlags::ADDR_DROPPED`) are counted and skipped. Pseudonymised
//! addresses (`ADDR_PSEUDONYM`) all fall in `fd72:616d::/32`, so whether a
//! host is internal cannot be told: such flows go only to the scan and
//! blocked detectors.
//!
//! # Output
//!
//! Candidates pass two bounds ([`OutputSettings`](crate::settings::OutputSettings)):
//! one dedupe key at most once per `repeat_after_ms` (the repeats are
//! counted into the next one's evidence), and at most
//! `max_per_kind_per_hour` per kind per hour of flow time.
//!
//! # Bounds
//!
//! Every map has a cap from
//! [`StateLimits`](crate::settings::StateLimits); a full map evicts the eighth
//! of its entries seen longest ago (ties broken by key, so eviction is
//! deterministic) and counts them in [`DetectorStats`]. An evicted host
//! that comes back is new again: that is the price of the bound, and the
//! eviction counters show when it is being paid. Scan trackers keep at
//! most their threshold of entries, and the tracker cap shrinks for
//! thresholds above the defaults so that each scan detector keeps at most
//! [`MAX_SCAN_ENTRIES`] entries.
//!
//! # Settings changes
//!
//! [`FlowDetectors::settings_changed`] keeps all state that still means
//! the same thing: learned hosts, destinations, baselines, trackers.
//! Upload baselines are dropped when `bucket_ms` changes (their buckets no
//! longer compare); a detector switched off drops its state, and one
//! switched on starts a new learning period; lowered limits evict down to
//! the new caps (counted).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

use rampart_flow::{FlowFlags, FlowRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::model::{dedupe_key, AlarmKind, Candidate, Severity};
use crate::settings::{Compiled, DetectorSettings};
use crate::text::{bytes, duration, ms_i64};
use crate::Error;

/// Most learned time one watermark step adds: 5 minutes.
pub const MAX_LEARN_STEP_MS: i64 = 5 * 60_000;
/// Most (port or host) entries one scan detector keeps across trackers.
pub const MAX_SCAN_ENTRIES: usize = 1_250_000;
/// Housekeeping (tracker expiry, closing quiet upload buckets) runs every
/// this much flow time.
const SWEEP_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Snapshot format version; bump on any change to [`Snapshot`].
const SNAPSHOT_VERSION: u32 = 1;
/// Ports or hosts listed in a scan candidate's evidence.
const MAX_SAMPLE: usize = 20;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// One flow with what the portal's enrichment added.
#[derive(Debug, Clone, Copy)]
pub struct FlowObs<'a> {
    pub flow: &'a FlowRecord,
    /// The device whose batch carried the flow.
    pub device: Uuid,
    /// ISO 3166-1 alpha-2, upper case; `*b"ZZ"` when unknown.
    pub src_country: [u8; 2],
    pub dst_country: [u8; 2],
    /// 0 when unknown.
    pub src_asn: u32,
    pub dst_asn: u32,
}

/// Sizes and counters, for metrics and the detector status page. Counters
/// survive snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    pub flows: u64,
    /// Flows skipped because their addresses were dropped at the edge.
    pub flows_without_addresses: u64,
    /// Learned flow time so far (see the module docs).
    pub learned_ms: i64,
    pub new_host_learning: bool,
    pub large_flow_learning: bool,
    pub known_hosts: usize,
    pub known_hosts_evicted: u64,
    pub known_destinations: usize,
    pub known_destinations_evicted: u64,
    pub port_scan_trackers: usize,
    pub host_scan_trackers: usize,
    pub scan_trackers_evicted: u64,
    pub upload_hosts: usize,
    pub upload_hosts_evicted: u64,
    pub repeat_keys: usize,
    pub repeat_keys_evicted: u64,
    /// Candidates returned.
    pub candidates: u64,
    /// Candidates held back by `repeat_after_ms`.
    pub repeats_suppressed: u64,
    /// Candidates dropped by `max_per_kind_per_hour`.
    pub over_budget: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counters {
    flows: u64,
    flows_without_addresses: u64,
    known_hosts_evicted: u64,
    known_destinations_evicted: u64,
    scan_trackers_evicted: u64,
    upload_hosts_evicted: u64,
    repeat_keys_evicted: u64,
    candidates: u64,
    repeats_suppressed: u64,
    over_budget: u64,
}

// ---------------------------------------------------------------------------
// Bounded maps

trait Aged {
    fn last_ms(&self) -> i64;
}

impl Aged for i64 {
    fn last_ms(&self) -> i64 {
        *self
    }
}

/// A map of at most `cap` entries that evicts its oldest eighth when full.
#[derive(Debug, Clone)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq + Ord + Clone, V: Aged> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Inserts a new entry, evicting first if full; returns how many were
    /// evicted.
    fn insert(&mut self, k: K, v: V) -> u64 {
        let mut evicted = 0;
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            evicted = self.evict(self.map.len() + 1 - self.cap + self.cap / 8);
        }
        self.map.insert(k, v);
        evicted
    }

    /// Removes the `n` entries seen longest ago (ties: smallest key).
    fn evict(&mut self, n: usize) -> u64 {
        let n = n.min(self.map.len());
        if n == 0 {
            return 0;
        }
        let mut ages: Vec<(i64, K)> = self
            .map
            .iter()
            .map(|(k, v)| (v.last_ms(), k.clone()))
            .collect();
        if n < ages.len() {
            ages.select_nth_unstable(n - 1);
            ages.truncate(n);
        }
        for (_, k) in &ages {
            self.map.remove(k);
        }
        n as u64
    }

    /// Lowers (or raises) the cap, evicting down to it.
    fn set_cap(&mut self, cap: usize) -> u64 {
        self.cap = cap.max(1);
        let over = self.map.len().saturating_sub(self.cap);
        self.evict(over)
    }

    /// Entries sorted by key, for a deterministic snapshot.
    fn sorted(&self) -> Vec<(K, V)>
    where
        V: Clone,
    {
        let mut v: Vec<(K, V)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn load(&mut self, entries: Vec<(K, V)>) -> u64 {
        self.map = entries.into_iter().collect();
        let over = self.map.len().saturating_sub(self.cap);
        self.evict(over)
    }
}

// ---------------------------------------------------------------------------
// Per-detector state

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dst {
    first_ms: i64,
    last_ms: i64,
    /// First seen while the detector was learning: never new.
    learned: bool,
    /// Already alarmed once.
    alarmed: bool,
}

impl Aged for Dst {
    fn last_ms(&self) -> i64 {
        self.last_ms
    }
}

/// Distinct ports probed on one destination: (port, last probe ms), at
/// most the threshold of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PortTracker {
    last_ms: i64,
    ports: Vec<(u16, i64)>,
}

impl Aged for PortTracker {
    fn last_ms(&self) -> i64 {
        self.last_ms
    }
}

/// Distinct destinations probed on one port: (address fold, last probe
/// ms). Addresses are folded to 64 bits ([`fold`]) to halve the memory of
/// the largest map; a collision can only undercount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HostTracker {
    last_ms: i64,
    hosts: Vec<(u64, i64)>,
}

impl Aged for HostTracker {
    fn last_ms(&self) -> i64 {
        self.last_ms
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Upload {
    last_ms: i64,
    /// Index (`end_ms / bucket_ms`) of the open bucket.
    bucket: i64,
    /// Scaled bytes in the open bucket; 0 = nothing open.
    bytes: u64,
    /// Buckets learned (saturating).
    n: u32,
    /// EWMA mean and variance, as `f64::to_bits` so a snapshot restores
    /// them exactly (JSON text would not promise the last bit).
    mean_bits: u64,
    var_bits: u64,
}

impl Aged for Upload {
    fn last_ms(&self) -> i64 {
        self.last_ms
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Repeat {
    last_ms: i64,
    suppressed: u64,
}

impl Aged for Repeat {
    fn last_ms(&self) -> i64 {
        self.last_ms
    }
}

type PortKey = (IpAddr, IpAddr);
type HostKey = (IpAddr, u16, u8);

/// Everything a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    clock_ms: Option<i64>,
    learned_ms: i64,
    next_sweep_ms: i64,
    new_host_since: i64,
    large_flow_since: i64,
    upload_bucket_ms: i64,
    budget_hour: i64,
    budget: Vec<(AlarmKind, u32)>,
    hosts: Vec<(IpAddr, i64)>,
    dsts: Vec<(IpAddr, Dst)>,
    port_trackers: Vec<(PortKey, PortTracker)>,
    host_trackers: Vec<(HostKey, HostTracker)>,
    uploads: Vec<(IpAddr, Upload)>,
    repeats: Vec<(String, Repeat)>,
    counters: Counters,
}

/// The flow detectors of one tenant; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct FlowDetectors {
    settings: DetectorSettings,
    compiled: Compiled,
    clock_ms: Option<i64>,
    learned_ms: i64,
    next_sweep_ms: i64,
    /// `learned_ms` when each learning detector (re)started.
    new_host_since: i64,
    large_flow_since: i64,
    upload_bucket_ms: i64,
    budget_hour: i64,
    budget: BTreeMap<AlarmKind, u32>,
    hosts: Bounded<IpAddr, i64>,
    dsts: Bounded<IpAddr, Dst>,
    port_trackers: Bounded<PortKey, PortTracker>,
    host_trackers: Bounded<HostKey, HostTracker>,
    uploads: Bounded<IpAddr, Upload>,
    repeats: Bounded<String, Repeat>,
    c: Counters,
    /// The networks of the `blocked_lists` target lists, in the settings'
    /// order. Not in the snapshot: the portal sets them from the lists.
    lists: Vec<(String, crate::netset::NetSet)>,
}

fn scan_cap(max_trackers: usize, threshold: u32) -> usize {
    let per = usize::try_from(threshold.max(1)).unwrap_or(usize::MAX);
    max_trackers.min(MAX_SCAN_ENTRIES / per).max(1)
}

/// Folds an address to 64 bits for the host-scan trackers.
fn fold(a: IpAddr) -> u64 {
    match a.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            // Truncations are the point: high half xor rotated low half.
            let hi = (x >> 64) as u64;
            let lo = x as u64;
            hi ^ lo.rotate_left(29) ^ (1 << 63)
        }
    }
}

/// Addresses that are no single host: unspecified, multicast, limited
/// broadcast.
fn not_a_host(a: IpAddr) -> bool {
    match a.to_canonical() {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Whether a flow record looks like a scanner's probe.
///
/// Few packets (at most `max_packets`, as exported: sampling multiplies
/// estimates, not what a probe is on the wire; 0, a record without
/// counters, is no probe), and:
/// - TCP with flags exported: SYN set, no PSH (no data was pushed) and not
///   a bare reply (ACK without RST is the server's SYN-ACK). This counts
///   half-open probes (S, S+R), connect probes (S+A+R) and attempts that
///   got no answer (S), which is what Zeek's scan detection counts too
///   (failed or rejected attempts);
/// - TCP without flags, UDP, SCTP: any, unless it looks like a reply: a
///   source port below 1024 to a destination port at or above 1024 is a
///   service answering a client (a DNS server's many answers to one
///   client's ephemeral ports are no port scan). A scan sent from a low
///   source port (`nmap -g 53`) to high ports is missed that way, which is
///   the price of not alarming on every busy server;
/// - ICMP / ICMPv6: echo requests only (type 8 / 128, which exporters put
///   in the destination port's high byte); errors and replies are answers.
pub fn is_probe(f: &FlowRecord, max_packets: u64) -> bool {
    if f.packets == 0 || f.packets > max_packets {
        return false;
    }
    let reply = f.src_port < 1024 && f.dst_port >= 1024;
    match f.protocol {
        TCP if f.tcp_flags != 0 => {
            let fl = f.tcp_flags;
            fl & TCP_SYN != 0 && fl & TCP_PSH == 0 && (fl & TCP_ACK == 0 || fl & TCP_RST != 0)
        }
        TCP | UDP | SCTP => !reply,
        ICMP => f.dst_port >> 8 == 8,
        ICMPV6 => f.dst_port >> 8 == 128,
        _ => false,
    }
}

impl FlowDetectors {
    /// Detectors with empty state. Fails when the settings do not validate.
    pub fn new(settings: &DetectorSettings) -> Result<Self, Error> {
        let compiled = settings.compile().map_err(Error::Settings)?;
        let lim = &settings.limits;
        Ok(FlowDetectors {
            compiled,
            clock_ms: None,
            learned_ms: 0,
            next_sweep_ms: i64::MIN,
            new_host_since: 0,
            large_flow_since: 0,
            upload_bucket_ms: settings.upload.bucket_ms,
            budget_hour: i64::MIN,
            budget: BTreeMap::new(),
            hosts: Bounded::new(lim.max_known_hosts),
            dsts: Bounded::new(lim.max_known_destinations),
            port_trackers: Bounded::new(scan_cap(
                lim.max_scan_trackers,
                settings.port_scan.min_ports,
            )),
            host_trackers: Bounded::new(scan_cap(
                lim.max_scan_trackers,
                settings.host_scan.min_hosts,
            )),
            uploads: Bounded::new(lim.max_upload_hosts),
            repeats: Bounded::new(lim.max_repeat_keys),
            c: Counters::default(),
            lists: Vec::new(),
            settings: settings.clone(),
        })
    }

    /// Sets the networks of the settings' `blocked_lists` from the lists'
    /// entries (by name; the portal resolves them). Domain entries are left
    /// out (flows carry addresses only), as are lists the settings do not
    /// name; a named list missing here matches nothing. Returns the
    /// networks loaded. Learned state is kept: a list changes often, the
    /// baselines should not start over each time.
    pub fn set_blocked_lists(
        &mut self,
        lists: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> usize {
        self.lists = self
            .settings
            .blocked_lists
            .iter()
            .filter_map(|name| {
                let entries = lists.get(name)?;
                let (set, _domains) =
                    crate::netset::NetSet::from_entries(entries.iter().map(String::as_str));
                Some((name.clone(), set))
            })
            .collect();
        self.lists.iter().map(|(_, s)| s.len()).sum()
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Feeds one flow; returns the candidates it completed (possibly for
    /// other hosts, when the flow's time closes their upload buckets).
    pub fn observe(&mut self, o: &FlowObs<'_>) -> Vec<Candidate> {
        let mut out = Vec::new();
        let f = o.flow;
        self.c.flows += 1;
        if f.flags & FlowFlags::ADDR_DROPPED != 0
            || (f.src_addr.is_unspecified() && f.dst_addr.is_unspecified())
        {
            self.c.flows_without_addresses += 1;
            return out;
        }
        let t = ms_i64(f.end_ms);
        self.advance(t, &mut out);
        let pseudonym = f.flags & FlowFlags::ADDR_PSEUDONYM != 0;
        let src = f.src_addr.to_canonical();
        let dst = f.dst_addr.to_canonical();
        let src_internal = !pseudonym && self.compiled.is_internal(src);
        let dst_internal = !pseudonym && self.compiled.is_internal(dst);

        if self.settings.blocked.enabled {
            self.blocked(o, src, dst, src_internal, dst_internal, t, &mut out);
        }
        if self.settings.new_host.enabled && src_internal && !not_a_host(src) {
            self.new_host(o, src, t, &mut out);
        }
        if !pseudonym && !dst_internal && !not_a_host(dst) {
            if self.settings.large_flow.enabled {
                self.large_flow(o, src, dst, t, &mut out);
            }
            if self.settings.upload.enabled && src_internal {
                self.upload(o, src, t, &mut out);
            }
        }
        if !not_a_host(dst) && !not_a_host(src) {
            if self.settings.port_scan.enabled {
                self.port_scan(o, src, dst, t, &mut out);
            }
            if self.settings.host_scan.enabled {
                self.host_scan(o, src, dst, t, &mut out);
            }
        }
        out
    }

    /// Moves the watermark and runs housekeeping when due.
    fn advance(&mut self, t: i64, out: &mut Vec<Candidate>) {
        match self.clock_ms {
            None => {
                self.clock_ms = Some(t);
                self.next_sweep_ms = t.saturating_add(SWEEP_MS);
            }
            Some(c) if t > c => {
                self.learned_ms = self
                    .learned_ms
                    .saturating_add(t.saturating_sub(c).min(MAX_LEARN_STEP_MS));
                self.clock_ms = Some(t);
            }
            Some(_) => {}
        }
        let now = self.clock_ms.unwrap_or(t);
        if now >= self.next_sweep_ms {
            self.sweep(now, out);
            self.next_sweep_ms = now.saturating_add(SWEEP_MS);
        }
    }

    fn learning_done(&self, since: i64, learn_ms: i64) -> bool {
        self.learned_ms.saturating_sub(since) >= learn_ms
    }

    fn now(&self) -> i64 {
        self.clock_ms.unwrap_or(0)
    }

    // ---- output -------------------------------------------------------------

    /// Applies the repeat and budget bounds, then returns the candidate.
    fn emit(&mut self, mut c: Candidate, out: &mut Vec<Candidate>) {
        let now = self.now();
        let hour = now.div_euclid(HOUR_MS);
        if hour != self.budget_hour {
            self.budget_hour = hour;
            self.budget.clear();
        }
        let used = self.budget.get(&c.kind).copied().unwrap_or(0);
        if used >= self.settings.output.max_per_kind_per_hour {
            self.c.over_budget += 1;
            return;
        }
        let repeat_after = self.settings.output.repeat_after_ms;
        if repeat_after > 0 {
            if let Some(r) = self.repeats.map.get_mut(&c.dedupe_key) {
                if now.saturating_sub(r.last_ms) < repeat_after {
                    r.suppressed += 1;
                    self.c.repeats_suppressed += 1;
                    return;
                }
                if let Some(ev) = c.evidence.as_object_mut() {
                    ev.insert("repeats_suppressed".to_owned(), json!(r.suppressed));
                }
                r.last_ms = now;
                r.suppressed = 0;
            } else {
                self.c.repeat_keys_evicted += self.repeats.insert(
                    c.dedupe_key.clone(),
                    Repeat {
                        last_ms: now,
                        suppressed: 0,
                    },
                );
            }
        }
        self.budget.insert(c.kind, used + 1);
        self.c.candidates += 1;
        out.push(c);
    }

    // ---- housekeeping -------------------------------------------------------

    fn sweep(&mut self, now: i64, out: &mut Vec<Candidate>) {
        let pw = self.settings.port_scan.window_ms;
        self.port_trackers
            .map
            .retain(|_, t| t.last_ms > now.saturating_sub(pw));
        let hw = self.settings.host_scan.window_ms;
        self.host_trackers
            .map
            .retain(|_, t| t.last_ms > now.saturating_sub(hw));
        let ra = self.settings.output.repeat_after_ms;
        // A key with held-back repeats stays (within the cap) so the next
        // candidate can say how many there were.
        self.repeats
            .map
            .retain(|_, r| r.suppressed > 0 || r.last_ms > now.saturating_sub(ra));
        // Close the buckets of hosts that went quiet: the watermark is a
        // full bucket past the bucket's end.
        let b = self.upload_bucket_ms;
        let mut due: Vec<IpAddr> = self
            .uploads
            .map
            .iter()
            .filter(|(_, u)| u.bytes > 0 && u.bucket.saturating_add(2).saturating_mul(b) <= now)
            .map(|(a, _)| *a)
            .collect();
        due.sort();
        for host in due {
            if let Some(c) = self.close_bucket(host) {
                self.emit(c, out);
            }
        }
    }

    // ---- blocked ------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &mut self,
        o: &FlowObs<'_>,
        src: IpAddr,
        dst: IpAddr,
        src_internal: bool,
        dst_internal: bool,
        t: i64,
        out: &mut Vec<Candidate>,
    ) {
        let cc = &self.compiled;
        let country = |c: [u8; 2]| c != *b"ZZ" && cc.countries.contains(&c);
        let code = |c: [u8; 2]| String::from_utf8_lossy(&c).into_owned();
        let asn = |a: u32| a != 0 && cc.asns.contains(&a);
        let net = |a: IpAddr| cc.blocked_networks.iter().find(|n| n.contains(a));
        let listed = |a: IpAddr| {
            self.lists
                .iter()
                .find_map(|(name, set)| set.find(a).map(|n| (name.clone(), n)))
        };
        let mut entry = None;
        let hit: Option<(&str, String, IpAddr)> = if country(o.src_country) {
            Some(("country", code(o.src_country), src))
        } else if country(o.dst_country) {
            Some(("country", code(o.dst_country), dst))
        } else if asn(o.src_asn) {
            Some(("asn", o.src_asn.to_string(), src))
        } else if asn(o.dst_asn) {
            Some(("asn", o.dst_asn.to_string(), dst))
        } else if let Some(n) = net(src) {
            Some(("network", n.to_string(), src))
        } else if let Some(n) = net(dst) {
            Some(("network", n.to_string(), dst))
        } else if let Some((name, n)) = listed(src) {
            entry = Some(n.to_string());
            Some(("list", name, src))
        } else {
            listed(dst).map(|(name, n)| {
                entry = Some(n.to_string());
                ("list", name, dst)
            })
        };
        let Some((what, value, remote)) = hit else {
            return;
        };
        // The tenant's side of the flow is what the alarm is about.
        let host = if src_internal {
            src
        } else if dst_internal || remote == src {
            dst
        } else {
            src
        };
        let f = o.flow;
        let c = Candidate {
            kind: AlarmKind::BlockedTraffic,
            severity: Severity::Medium,
            title: crate::text::title(&format!(
                "traffic with blocked {what} {value}: {src} to {dst}"
            )),
            device: Some(o.device),
            dedupe_key: dedupe_key(
                AlarmKind::BlockedTraffic,
                &[format!("match={what}:{value}"), format!("host={host}")],
            ),
            at_ms: t,
            src: Some(src),
            dst: Some(dst),
            dst_port: Some(f.dst_port),
            protocol: Some(f.protocol),
            evidence: json!({
                "match": what,
                "value": value,
                "remote": remote.to_string(),
                "list_entry": entry,
                "src_country": code(o.src_country),
                "dst_country": code(o.dst_country),
                "src_asn": o.src_asn,
                "dst_asn": o.dst_asn,
                "src_port": f.src_port,
                "bytes": f.scaled_bytes(),
                "packets": f.scaled_packets(),
            }),
            flow_filter: Some(format!("host {src} and host {dst}")),
        };
        self.emit(c, out);
    }

    // ---- new host -----------------------------------------------------------

    fn new_host(&mut self, o: &FlowObs<'_>, src: IpAddr, t: i64, out: &mut Vec<Candidate>) {
        if let Some(last) = self.hosts.map.get_mut(&src) {
            *last = (*last).max(t);
            return;
        }
        self.c.known_hosts_evicted += self.hosts.insert(src, t);
        if !self.learning_done(self.new_host_since, self.settings.new_host.learn_ms) {
            return;
        }
        let f = o.flow;
        let c = Candidate {
            kind: AlarmKind::NewHost,
            severity: Severity::Low,
            title: format!("new host {src} on the network"),
            device: Some(o.device),
            dedupe_key: dedupe_key(AlarmKind::NewHost, &[format!("host={src}")]),
            at_ms: t,
            src: Some(src),
            dst: Some(f.dst_addr.to_canonical()),
            dst_port: Some(f.dst_port),
            protocol: Some(f.protocol),
            evidence: json!({
                "host": src.to_string(),
                "first_flow": {
                    "dst": f.dst_addr.to_canonical().to_string(),
                    "src_port": f.src_port,
                    "dst_port": f.dst_port,
                    "protocol": f.protocol,
                    "bytes": f.scaled_bytes(),
                },
                "country": String::from_utf8_lossy(&o.src_country),
            }),
            flow_filter: Some(format!("host {src}")),
        };
        self.emit(c, out);
    }

    // ---- large flow to a new destination ------------------------------------

    fn large_flow(
        &mut self,
        o: &FlowObs<'_>,
        src: IpAddr,
        dst: IpAddr,
        t: i64,
        out: &mut Vec<Candidate>,
    ) {
        let learning = !self.learning_done(self.large_flow_since, self.settings.new_host.learn_ms);
        let s = &self.settings.large_flow;
        let (min_bytes, new_for) = (s.min_bytes, s.new_for_ms);
        let first_ms = match self.dsts.map.get_mut(&dst) {
            Some(d) => {
                d.last_ms = d.last_ms.max(t);
                d.first_ms = d.first_ms.min(t);
                if d.learned || d.alarmed {
                    return;
                }
                d.first_ms
            }
            None => {
                self.c.known_destinations_evicted += self.dsts.insert(
                    dst,
                    Dst {
                        first_ms: t,
                        last_ms: t,
                        learned: learning,
                        alarmed: false,
                    },
                );
                if learning {
                    return;
                }
                t
            }
        };
        let scaled = o.flow.scaled_bytes();
        if scaled < min_bytes || t.saturating_sub(first_ms) > new_for {
            return;
        }
        if let Some(d) = self.dsts.map.get_mut(&dst) {
            d.alarmed = true;
        }
        let f = o.flow;
        let c = Candidate {
            kind: AlarmKind::LargeFlowNewDst,
            severity: Severity::Medium,
            title: format!(
                "large flow ({}) from {src} to new destination {dst}",
                bytes(scaled)
            ),
            device: Some(o.device),
            dedupe_key: dedupe_key(AlarmKind::LargeFlowNewDst, &[format!("dst={dst}")]),
            at_ms: t,
            src: Some(src),
            dst: Some(dst),
            dst_port: Some(f.dst_port),
            protocol: Some(f.protocol),
            evidence: json!({
                "bytes": scaled,
                "threshold": min_bytes,
                "dst_first_seen_ms": first_ms,
                "src_port": f.src_port,
                "dst_country": String::from_utf8_lossy(&o.dst_country),
                "dst_asn": o.dst_asn,
            }),
            flow_filter: Some(format!("src host {src} and dst host {dst}")),
        };
        self.emit(c, out);
    }

    // ---- abnormal upload ----------------------------------------------------

    fn upload(&mut self, o: &FlowObs<'_>, src: IpAddr, t: i64, out: &mut Vec<Candidate>) {
        let b = self.upload_bucket_ms;
        let idx = t.div_euclid(b);
        let scaled = o.flow.scaled_bytes();
        if !self.uploads.map.contains_key(&src) {
            self.c.upload_hosts_evicted += self.uploads.insert(
                src,
                Upload {
                    last_ms: t,
                    bucket: idx,
                    bytes: 0,
                    n: 0,
                    mean_bits: 0f64.to_bits(),
                    var_bits: 0f64.to_bits(),
                },
            );
        }
        let later = self
            .uploads
            .map
            .get(&src)
            .is_some_and(|u| idx > u.bucket && u.bytes > 0);
        if later {
            if let Some(c) = self.close_bucket(src) {
                self.emit(c, out);
            }
        }
        if let Some(u) = self.uploads.map.get_mut(&src) {
            u.last_ms = u.last_ms.max(t);
            if idx > u.bucket {
                u.bucket = idx;
            }
            // A late flow (idx below the open bucket) counts in the open one.
            u.bytes = u.bytes.saturating_add(scaled);
        }
    }

    /// Closes `host`'s open bucket: tests it against the baseline, then
    /// updates the baseline.
    fn close_bucket(&mut self, host: IpAddr) -> Option<Candidate> {
        let s = &self.settings.upload;
        let (alpha, k, min_bytes, warmup) = (s.alpha, s.k_sigma, s.min_bytes, s.warmup_buckets);
        let b = self.upload_bucket_ms;
        let u = self.uploads.map.get_mut(&host)?;
        if u.bytes == 0 {
            return None;
        }
        let x = u.bytes as f64;
        let sent = u.bytes;
        let mean = f64::from_bits(u.mean_bits);
        let var = f64::from_bits(u.var_bits);
        let sigma = var.max(0.0).sqrt();
        let threshold = mean + k * sigma;
        let warm = u.n >= warmup;
        let alarm = warm && x > threshold && sent >= min_bytes;
        let learn_x = if warm { x.min(threshold) } else { x };
        let d = learn_x - mean;
        let new_mean = mean + alpha * d;
        let new_var = (1.0 - alpha) * (var + alpha * d * d);
        if new_mean.is_finite() && new_var.is_finite() {
            u.mean_bits = new_mean.to_bits();
            u.var_bits = new_var.to_bits();
        }
        u.n = u.n.saturating_add(1);
        u.bytes = 0;
        let bucket = u.bucket;
        let n = u.n;
        if !alarm {
            return None;
        }
        let start = bucket.saturating_mul(b);
        let end = start.saturating_add(b);
        Some(Candidate {
            kind: AlarmKind::AbnormalUpload,
            severity: Severity::Medium,
            title: format!(
                "abnormal upload from {host}: {} in {} (baseline {})",
                bytes(sent),
                duration(b),
                bytes(mean.max(0.0) as u64)
            ),
            device: None,
            dedupe_key: dedupe_key(AlarmKind::AbnormalUpload, &[format!("host={host}")]),
            at_ms: end,
            src: Some(host),
            dst: None,
            dst_port: None,
            protocol: None,
            evidence: json!({
                "bytes": sent,
                "bucket_start_ms": start,
                "bucket_ms": b,
                "mean": mean,
                "stddev": sigma,
                "threshold": threshold,
                "k_sigma": k,
                "min_bytes": min_bytes,
                "buckets_learned": n - 1,
            }),
            flow_filter: Some(self.outbound_filter(host)),
        })
    }

    /// `src host H and not dst net N and ...` over the internal networks,
    /// or just `src host H` when that would be too long for a filter.
    fn outbound_filter(&self, host: IpAddr) -> String {
        let mut s = format!("src host {host}");
        for n in &self.compiled.internal {
            s.push_str(&format!(" and not dst net {n}"));
        }
        if s.len() > rampart_flow::filter::MAX_FILTER_LEN {
            return format!("src host {host}");
        }
        s
    }

    // ---- scans --------------------------------------------------------------

    fn port_scan(
        &mut self,
        o: &FlowObs<'_>,
        src: IpAddr,
        dst: IpAddr,
        t: i64,
        out: &mut Vec<Candidate>,
    ) {
        let f = o.flow;
        let s = &self.settings.port_scan;
        if !matches!(f.protocol, TCP | UDP | SCTP) || !is_probe(f, s.max_probe_packets) {
            return;
        }
        let (window, need) = (s.window_ms, s.min_ports as usize);
        let key = (src, dst);
        if !self.port_trackers.map.contains_key(&key) {
            self.c.scan_trackers_evicted += self.port_trackers.insert(
                key,
                PortTracker {
                    last_ms: t,
                    ports: Vec::new(),
                },
            );
        }
        let Some(tr) = self.port_trackers.map.get_mut(&key) else {
            return;
        };
        tr.last_ms = tr.last_ms.max(t);
        let horizon = tr.last_ms.saturating_sub(window);
        tr.ports.retain(|(_, seen)| *seen > horizon);
        match tr.ports.iter().position(|(p, _)| *p == f.dst_port) {
            Some(i) => {
                if let Some(e) = tr.ports.get_mut(i) {
                    e.1 = e.1.max(t);
                }
            }
            None if tr.ports.len() < need => tr.ports.push((f.dst_port, t)),
            None => {}
        }
        if tr.ports.len() < need {
            return;
        }
        let mut sample: Vec<u16> = tr.ports.iter().map(|(p, _)| *p).collect();
        sample.sort_unstable();
        sample.truncate(MAX_SAMPLE);
        let n = tr.ports.len();
        tr.ports.clear();
        let c = Candidate {
            kind: AlarmKind::PortScan,
            severity: Severity::Medium,
            title: format!(
                "port scan from {src} to {dst} ({n} ports in {})",
                duration(window)
            ),
            device: Some(o.device),
            dedupe_key: dedupe_key(AlarmKind::PortScan, &[format!("src={src}")]),
            at_ms: t,
            src: Some(src),
            dst: Some(dst),
            dst_port: None,
            protocol: Some(f.protocol),
            evidence: json!({
                "distinct_ports": n,
                "window_ms": window,
                "sample_ports": sample,
                "src_country": String::from_utf8_lossy(&o.src_country),
                "src_asn": o.src_asn,
            }),
            flow_filter: Some(format!("src host {src} and dst host {dst}")),
        };
        self.emit(c, out);
    }

    fn host_scan(
        &mut self,
        o: &FlowObs<'_>,
        src: IpAddr,
        dst: IpAddr,
        t: i64,
        out: &mut Vec<Candidate>,
    ) {
        let f = o.flow;
        let s = &self.settings.host_scan;
        if !is_probe(f, s.max_probe_packets)
            || (f.protocol == UDP && s.ignore_udp_ports.contains(&f.dst_port))
        {
            return;
        }
        let (window, need) = (s.window_ms, s.min_hosts as usize);
        // ICMP echo: the port is the type; one tracker per protocol.
        let port = if matches!(f.protocol, ICMP | ICMPV6) {
            0
        } else {
            f.dst_port
        };
        let key = (src, port, f.protocol);
        if !self.host_trackers.map.contains_key(&key) {
            self.c.scan_trackers_evicted += self.host_trackers.insert(
                key,
                HostTracker {
                    last_ms: t,
                    hosts: Vec::new(),
                },
            );
        }
        let Some(tr) = self.host_trackers.map.get_mut(&key) else {
            return;
        };
        tr.last_ms = tr.last_ms.max(t);
        let horizon = tr.last_ms.saturating_sub(window);
        tr.hosts.retain(|(_, seen)| *seen > horizon);
        let h = fold(dst);
        match tr.hosts.iter().position(|(x, _)| *x == h) {
            Some(i) => {
                if let Some(e) = tr.hosts.get_mut(i) {
                    e.1 = e.1.max(t);
                }
            }
            None if tr.hosts.len() < need => tr.hosts.push((h, t)),
            None => {}
        }
        if tr.hosts.len() < need {
            return;
        }
        let n = tr.hosts.len();
        tr.hosts.clear();
        let proto = f.protocol;
        let what = if matches!(proto, ICMP | ICMPV6) {
            "ping".to_owned()
        } else {
            format!("port {port}")
        };
        let filter = if matches!(proto, ICMP | ICMPV6) {
            format!("src host {src} and proto {proto}")
        } else {
            format!("src host {src} and dst port {port} and proto {proto}")
        };
        let c = Candidate {
            kind: AlarmKind::HostScan,
            severity: Severity::Medium,
            title: format!(
                "host scan from {src} on {what} ({n} hosts in {})",
                duration(window)
            ),
            device: Some(o.device),
            dedupe_key: dedupe_key(AlarmKind::HostScan, &[format!("src={src}")]),
            at_ms: t,
            src: Some(src),
            dst: None,
            dst_port: (!matches!(proto, ICMP | ICMPV6)).then_some(port),
            protocol: Some(proto),
            evidence: json!({
                "distinct_hosts": n,
                "window_ms": window,
                "last_dst": dst.to_string(),
                "src_country": String::from_utf8_lossy(&o.src_country),
                "src_asn": o.src_asn,
            }),
            flow_filter: Some(filter),
        };
        self.emit(c, out);
    }

    // ---- settings, snapshot, stats ------------------------------------------

    /// Applies new settings, keeping what state still means the same; see
    /// the module docs. On error nothing changes.
    pub fn settings_changed(&mut self, new: &DetectorSettings) -> Result<(), Error> {
        let compiled = new.compile().map_err(Error::Settings)?;
        let old = std::mem::replace(&mut self.settings, new.clone());
        self.compiled = compiled;
        if !new.new_host.enabled {
            self.hosts.map.clear();
        } else if !old.new_host.enabled {
            self.new_host_since = self.learned_ms;
        }
        if !new.large_flow.enabled {
            self.dsts.map.clear();
        } else if !old.large_flow.enabled {
            self.large_flow_since = self.learned_ms;
        }
        if !new.upload.enabled || new.upload.bucket_ms != self.upload_bucket_ms {
            self.uploads.map.clear();
            self.upload_bucket_ms = new.upload.bucket_ms;
        }
        if !new.port_scan.enabled {
            self.port_trackers.map.clear();
        }
        if !new.host_scan.enabled {
            self.host_trackers.map.clear();
        }
        self.apply_limits();
        Ok(())
    }

    /// Caps and per-tracker thresholds from the current settings.
    fn apply_limits(&mut self) {
        let lim = self.settings.limits.clone();
        self.c.known_hosts_evicted += self.hosts.set_cap(lim.max_known_hosts);
        self.c.known_destinations_evicted += self.dsts.set_cap(lim.max_known_destinations);
        self.c.upload_hosts_evicted += self.uploads.set_cap(lim.max_upload_hosts);
        self.c.repeat_keys_evicted += self.repeats.set_cap(lim.max_repeat_keys);
        let pn = self.settings.port_scan.min_ports;
        let hn = self.settings.host_scan.min_hosts;
        self.c.scan_trackers_evicted += self
            .port_trackers
            .set_cap(scan_cap(lim.max_scan_trackers, pn));
        self.c.scan_trackers_evicted += self
            .host_trackers
            .set_cap(scan_cap(lim.max_scan_trackers, hn));
        let pn = pn as usize;
        let hn = hn as usize;
        for t in self.port_trackers.map.values_mut() {
            t.ports.truncate(pn);
        }
        for t in self.host_trackers.map.values_mut() {
            t.hosts.truncate(hn);
        }
    }

    /// The whole state as JSON bytes (versioned; entries sorted, so equal
    /// states give equal bytes). Settings are not in it: the portal keeps
    /// those and passes them to [`restore`](FlowDetectors::restore).
    pub fn snapshot(&self) -> Vec<u8> {
        let s = Snapshot {
            version: SNAPSHOT_VERSION,
            clock_ms: self.clock_ms,
            learned_ms: self.learned_ms,
            next_sweep_ms: self.next_sweep_ms,
            new_host_since: self.new_host_since,
            large_flow_since: self.large_flow_since,
            upload_bucket_ms: self.upload_bucket_ms,
            budget_hour: self.budget_hour,
            budget: self.budget.iter().map(|(k, v)| (*k, *v)).collect(),
            hosts: self.hosts.sorted(),
            dsts: self.dsts.sorted(),
            port_trackers: self.port_trackers.sorted(),
            host_trackers: self.host_trackers.sorted(),
            uploads: self.uploads.sorted(),
            repeats: self.repeats.sorted(),
            counters: self.c.clone(),
        };
        // Serializing these plain types cannot fail; an empty snapshot
        // (which restore refuses) would be the only outcome if it did.
        serde_json::to_vec(&s).unwrap_or_default()
    }

    /// Detectors with `settings` and the state of a
    /// [`snapshot`](FlowDetectors::snapshot). State that does not fit the settings is
    /// adjusted as by [`settings_changed`](FlowDetectors::settings_changed).
    pub fn restore(settings: &DetectorSettings, snapshot: &[u8]) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version =
            serde_json::from_slice(snapshot).map_err(|e| Error::Snapshot(e.to_string()))?;
        if v.version != SNAPSHOT_VERSION {
            return Err(Error::SnapshotVersion {
                found: v.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let s: Snapshot =
            serde_json::from_slice(snapshot).map_err(|e| Error::Snapshot(e.to_string()))?;
        let mut d = FlowDetectors::new(settings)?;
        d.clock_ms = s.clock_ms;
        d.learned_ms = s.learned_ms.max(0);
        d.next_sweep_ms = s.next_sweep_ms;
        d.new_host_since = s.new_host_since.clamp(0, d.learned_ms);
        d.large_flow_since = s.large_flow_since.clamp(0, d.learned_ms);
        d.budget_hour = s.budget_hour;
        d.budget = s.budget.into_iter().collect();
        d.c = s.counters;
        d.c.known_hosts_evicted += d.hosts.load(s.hosts);
        d.c.known_destinations_evicted += d.dsts.load(s.dsts);
        d.c.scan_trackers_evicted += d.port_trackers.load(s.port_trackers);
        d.c.scan_trackers_evicted += d.host_trackers.load(s.host_trackers);
        d.c.repeat_keys_evicted += d.repeats.load(s.repeats);
        if s.upload_bucket_ms == settings.upload.bucket_ms && settings.upload.enabled {
            d.c.upload_hosts_evicted += d.uploads.load(s.uploads);
            for u in d.uploads.map.values_mut() {
                let (m, v) = (f64::from_bits(u.mean_bits), f64::from_bits(u.var_bits));
                if !(m.is_finite() && v.is_finite() && v >= 0.0) {
                    *u = Upload {
                        last_ms: u.last_ms,
                        bucket: u.bucket,
                        bytes: 0,
                        n: 0,
                        mean_bits: 0f64.to_bits(),
                        var_bits: 0f64.to_bits(),
                    };
                }
            }
        }
        // What the settings switch off is not kept.
        if !settings.new_host.enabled {
            d.hosts.map.clear();
        }
        if !settings.large_flow.enabled {
            d.dsts.map.clear();
        }
        if !settings.port_scan.enabled {
            d.port_trackers.map.clear();
        }
        if !settings.host_scan.enabled {
            d.host_trackers.map.clear();
        }
        d.apply_limits();
        Ok(d)
    }

    pub fn stats(&self) -> DetectorStats {
        let c = &self.c;
        DetectorStats {
            flows: c.flows,
            flows_without_addresses: c.flows_without_addresses,
            learned_ms: self.learned_ms,
            new_host_learning: !self
                .learning_done(self.new_host_since, self.settings.new_host.learn_ms),
            large_flow_learning: !self
                .learning_done(self.large_flow_since, self.settings.new_host.learn_ms),
            known_hosts: self.hosts.len(),
            known_hosts_evicted: c.known_hosts_evicted,
            known_destinations: self.dsts.len(),
            known_destinations_evicted: c.known_destinations_evicted,
            port_scan_trackers: self.port_trackers.len(),
            host_scan_trackers: self.host_trackers.len(),
            scan_trackers_evicted: c.scan_trackers_evicted,
            upload_hosts: self.uploads.len(),
            upload_hosts_evicted: c.upload_hosts_evicted,
            repeat_keys: self.repeats.len(),
            repeat_keys_evicted: c.repeat_keys_evicted,
            candidates: c.candidates,
            repeats_suppressed: c.repeats_suppressed,
            over_budget: c.over_budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_evicts_oldest_eighth() {
        let mut m: Bounded<u32, i64> = Bounded::new(16);
        let mut evicted = 0;
        for i in 0..16u32 {
            evicted += m.insert(i, i64::from(i));
        }
        assert_eq!((m.len(), evicted), (16, 0));
        evicted += m.insert(100, 100);
        // Full: 1 + 16/8 = 3 evicted, the oldest (0, 1, 2).
        assert_eq!(evicted, 3);
        assert_eq!(m.len(), 14);
        assert!(!m.map.contains_key(&0) && !m.map.contains_key(&2));
        assert!(m.map.contains_key(&3) && m.map.contains_key(&100));
        assert_eq!(m.set_cap(4), 10);
        let mut keys: Vec<u32> = m.map.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![13, 14, 15, 100]);
    }

    #[test]
    fn folds_keep_v4_apart() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(fold(a), fold(b));
        assert_ne!(fold(a), fold("10.0.0.2".parse().unwrap()));
        assert!(fold("2001:db8::1".parse().unwrap()) >= 1 << 63);
    }
}
