//! The information elements we map (IANA IPFIX registry numbering, which
//! NetFlow v9 shares for these numbers) and the normalisation of one decoded
//! data record into a [`FlowRecord`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::{AppLabel, Direction, FlowRecord};
use crate::wire::uint;

pub(crate) const OCTET_DELTA_COUNT: u16 = 1;
pub(crate) const PACKET_DELTA_COUNT: u16 = 2;
pub(crate) const PROTOCOL_IDENTIFIER: u16 = 4;
pub(crate) const TCP_CONTROL_BITS: u16 = 6;
pub(crate) const SOURCE_TRANSPORT_PORT: u16 = 7;
pub(crate) const SOURCE_IPV4_ADDRESS: u16 = 8;
pub(crate) const INGRESS_INTERFACE: u16 = 10;
pub(crate) const DESTINATION_TRANSPORT_PORT: u16 = 11;
pub(crate) const DESTINATION_IPV4_ADDRESS: u16 = 12;
pub(crate) const EGRESS_INTERFACE: u16 = 14;
/// v9 LAST_SWITCHED / IPFIX flowEndSysUpTime.
pub(crate) const FLOW_END_SYS_UP_TIME: u16 = 21;
/// v9 FIRST_SWITCHED / IPFIX flowStartSysUpTime.
pub(crate) const FLOW_START_SYS_UP_TIME: u16 = 22;
/// v9 OUT_BYTES / IPFIX postOctetDeltaCount.
pub(crate) const POST_OCTET_DELTA_COUNT: u16 = 23;
/// v9 OUT_PKTS / IPFIX postPacketDeltaCount.
pub(crate) const POST_PACKET_DELTA_COUNT: u16 = 24;
pub(crate) const SOURCE_IPV6_ADDRESS: u16 = 27;
pub(crate) const DESTINATION_IPV6_ADDRESS: u16 = 28;
pub(crate) const SAMPLING_INTERVAL: u16 = 34;
pub(crate) const SAMPLER_ID: u16 = 48;
pub(crate) const SAMPLER_RANDOM_INTERVAL: u16 = 50;
pub(crate) const FLOW_DIRECTION: u16 = 61;
pub(crate) const OCTET_TOTAL_COUNT: u16 = 85;
pub(crate) const PACKET_TOTAL_COUNT: u16 = 86;
pub(crate) const FLOW_START_SECONDS: u16 = 150;
pub(crate) const FLOW_END_SECONDS: u16 = 151;
pub(crate) const FLOW_START_MILLISECONDS: u16 = 152;
pub(crate) const FLOW_END_MILLISECONDS: u16 = 153;
pub(crate) const FLOW_START_MICROSECONDS: u16 = 154;
pub(crate) const FLOW_END_MICROSECONDS: u16 = 155;
pub(crate) const FLOW_START_NANOSECONDS: u16 = 156;
pub(crate) const FLOW_END_NANOSECONDS: u16 = 157;
pub(crate) const FLOW_START_DELTA_MICROSECONDS: u16 = 158;
pub(crate) const FLOW_END_DELTA_MICROSECONDS: u16 = 159;
pub(crate) const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
pub(crate) const FLOW_DURATION_MILLISECONDS: u16 = 161;
pub(crate) const FLOW_DURATION_MICROSECONDS: u16 = 162;
/// Cisco ASA NSEL fwd_flow_delta_bytes.
pub(crate) const INITIATOR_OCTETS: u16 = 231;
pub(crate) const INGRESS_PHYSICAL_INTERFACE: u16 = 252;
pub(crate) const EGRESS_PHYSICAL_INTERFACE: u16 = 253;
pub(crate) const INITIATOR_PACKETS: u16 = 298;
pub(crate) const SELECTOR_ID: u16 = 302;
pub(crate) const SAMPLING_PACKET_INTERVAL: u16 = 305;
pub(crate) const SAMPLING_PACKET_SPACE: u16 = 306;
pub(crate) const SAMPLING_SIZE: u16 = 309;
pub(crate) const SAMPLING_POPULATION: u16 = 310;

/// Seconds between the NTP era (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Whether a field is mapped: a known element with a length we can read.
/// Addresses must have their exact size, NTP timestamps 8 bytes, integers
/// 1 to 8 bytes (RFC 7011 §6.2 reduced-size encoding). Anything else,
/// variable-length fields included, is skipped.
pub(crate) fn accepts(ie: u16, len: u16) -> bool {
    match ie {
        SOURCE_IPV4_ADDRESS | DESTINATION_IPV4_ADDRESS => len == 4,
        SOURCE_IPV6_ADDRESS | DESTINATION_IPV6_ADDRESS => len == 16,
        FLOW_START_MICROSECONDS
        | FLOW_END_MICROSECONDS
        | FLOW_START_NANOSECONDS
        | FLOW_END_NANOSECONDS => len == 8,
        OCTET_DELTA_COUNT
        | PACKET_DELTA_COUNT
        | PROTOCOL_IDENTIFIER
        | TCP_CONTROL_BITS
        | SOURCE_TRANSPORT_PORT
        | INGRESS_INTERFACE
        | DESTINATION_TRANSPORT_PORT
        | EGRESS_INTERFACE
        | FLOW_END_SYS_UP_TIME
        | FLOW_START_SYS_UP_TIME
        | POST_OCTET_DELTA_COUNT
        | POST_PACKET_DELTA_COUNT
        | SAMPLING_INTERVAL
        | SAMPLER_ID
        | SAMPLER_RANDOM_INTERVAL
        | FLOW_DIRECTION
        | OCTET_TOTAL_COUNT
        | PACKET_TOTAL_COUNT
        | FLOW_START_SECONDS
        | FLOW_END_SECONDS
        | FLOW_START_MILLISECONDS
        | FLOW_END_MILLISECONDS
        | FLOW_START_DELTA_MICROSECONDS
        | FLOW_END_DELTA_MICROSECONDS
        | SYSTEM_INIT_TIME_MILLISECONDS
        | FLOW_DURATION_MILLISECONDS
        | FLOW_DURATION_MICROSECONDS
        | INITIATOR_OCTETS
        | INGRESS_PHYSICAL_INTERFACE
        | EGRESS_PHYSICAL_INTERFACE
        | INITIATOR_PACKETS
        | SELECTOR_ID
        | SAMPLING_PACKET_INTERVAL
        | SAMPLING_PACKET_SPACE
        | SAMPLING_SIZE
        | SAMPLING_POPULATION => (1..=8).contains(&len),
        _ => false,
    }
}

/// How relative times in a record are anchored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// NetFlow v5/v9: FIRST/LAST_SWITCHED are the exporter's sysUptime (ms)
    /// when the packet was switched; the header gives sysUptime at export.
    Uptime { export_ms: u64, uptime: u32 },
    /// IPFIX: flowStart/EndSysUpTime count from systemInitTimeMilliseconds
    /// (IE 160), learnt from options data or carried in the record.
    Ipfix {
        export_ms: u64,
        system_init_ms: Option<u64>,
    },
}

impl Clock {
    pub(crate) fn export_ms(self) -> u64 {
        match self {
            Clock::Uptime { export_ms, .. } | Clock::Ipfix { export_ms, .. } => export_ms,
        }
    }
}

/// `base + delta`, saturating at both ends of u64.
fn offset(base: u64, delta_ms: i64) -> u64 {
    if delta_ms >= 0 {
        base.saturating_add(delta_ms.unsigned_abs())
    } else {
        base.saturating_sub(delta_ms.unsigned_abs())
    }
}

/// Absolute time of a sysUptime stamp `t`, given the export time and the
/// sysUptime at export. The distance is read as a signed 32-bit number of
/// milliseconds, so a wrap of the 32-bit uptime (every 49.7 days) between
/// the flow and the export, or a stamp slightly after the header's (seen
/// from softflowd), land a few ms from the export time rather than 49 days
/// away. Flows older than 24.8 days cannot be told apart from that.
pub(crate) fn uptime_to_ms(export_ms: u64, uptime: u32, t: u32) -> u64 {
    let behind = i64::from(uptime.wrapping_sub(t) as i32);
    offset(export_ms, -behind)
}

/// NTP 64-bit timestamp (RFC 7011 §6.1.9/§6.1.10) to ms since the Unix epoch.
fn ntp_to_ms(v: u64) -> Option<u64> {
    let secs = (v >> 32).checked_sub(NTP_UNIX_OFFSET)?;
    let frac = v & 0xFFFF_FFFF;
    Some(secs * 1000 + ((frac * 1000) >> 32))
}

fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The mapped values of one data record, as they were read.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    src4: Option<Ipv4Addr>,
    dst4: Option<Ipv4Addr>,
    src6: Option<Ipv6Addr>,
    dst6: Option<Ipv6Addr>,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    tcp_flags: u8,
    direction: Direction,
    in_if: Option<u32>,
    out_if: Option<u32>,
    in_phys: Option<u32>,
    out_phys: Option<u32>,
    /// Delta, post-delta, total, initiator: the first non-zero one wins.
    bytes: [Option<u64>; 4],
    packets: [Option<u64>; 4],
    first_up: Option<u32>,
    last_up: Option<u32>,
    start_abs: Option<u64>,
    end_abs: Option<u64>,
    start_ntp: Option<u64>,
    end_ntp: Option<u64>,
    start_s: Option<u64>,
    end_s: Option<u64>,
    start_delta_us: Option<u64>,
    end_delta_us: Option<u64>,
    duration_ms: Option<u64>,
    pub system_init_ms: Option<u64>,
    sampling_interval: u64,
    sampler_random_interval: u64,
    packet_interval: u64,
    packet_space: u64,
    sampling_size: u64,
    sampling_population: u64,
    pub sampler_id: Option<u32>,
}

impl Scratch {
    /// Records one field. `v` has a length `accepts` allowed for `ie`.
    pub(crate) fn apply(&mut self, ie: u16, v: &[u8]) {
        match ie {
            SOURCE_IPV4_ADDRESS => self.src4 = v4(v),
            DESTINATION_IPV4_ADDRESS => self.dst4 = v4(v),
            SOURCE_IPV6_ADDRESS => self.src6 = v6(v),
            DESTINATION_IPV6_ADDRESS => self.dst6 = v6(v),
            FLOW_START_MICROSECONDS | FLOW_START_NANOSECONDS => self.start_ntp = ntp_to_ms(uint(v)),
            FLOW_END_MICROSECONDS | FLOW_END_NANOSECONDS => self.end_ntp = ntp_to_ms(uint(v)),
            _ => self.apply_uint(ie, uint(v)),
        }
    }

    // Narrowing casts below keep the low bits of oversized values, as a
    // reduced-size field would; the values are not trusted for anything.
    fn apply_uint(&mut self, ie: u16, n: u64) {
        match ie {
            OCTET_DELTA_COUNT => self.bytes[0] = Some(n),
            POST_OCTET_DELTA_COUNT => self.bytes[1] = Some(n),
            OCTET_TOTAL_COUNT => self.bytes[2] = Some(n),
            INITIATOR_OCTETS => self.bytes[3] = Some(n),
            PACKET_DELTA_COUNT => self.packets[0] = Some(n),
            POST_PACKET_DELTA_COUNT => self.packets[1] = Some(n),
            PACKET_TOTAL_COUNT => self.packets[2] = Some(n),
            INITIATOR_PACKETS => self.packets[3] = Some(n),
            PROTOCOL_IDENTIFIER => self.protocol = n as u8,
            TCP_CONTROL_BITS => self.tcp_flags = n as u8,
            SOURCE_TRANSPORT_PORT => self.src_port = n as u16,
            DESTINATION_TRANSPORT_PORT => self.dst_port = n as u16,
            INGRESS_INTERFACE => self.in_if = Some(n as u32),
            EGRESS_INTERFACE => self.out_if = Some(n as u32),
            INGRESS_PHYSICAL_INTERFACE => self.in_phys = Some(n as u32),
            EGRESS_PHYSICAL_INTERFACE => self.out_phys = Some(n as u32),
            FLOW_DIRECTION => self.direction = Direction::from_wire(n),
            FLOW_END_SYS_UP_TIME => self.last_up = Some(n as u32),
            FLOW_START_SYS_UP_TIME => self.first_up = Some(n as u32),
            FLOW_START_SECONDS => self.start_s = Some(n.saturating_mul(1000)),
            FLOW_END_SECONDS => self.end_s = Some(n.saturating_mul(1000)),
            FLOW_START_MILLISECONDS => self.start_abs = Some(n),
            FLOW_END_MILLISECONDS => self.end_abs = Some(n),
            FLOW_START_DELTA_MICROSECONDS => self.start_delta_us = Some(n),
            FLOW_END_DELTA_MICROSECONDS => self.end_delta_us = Some(n),
            FLOW_DURATION_MILLISECONDS => self.duration_ms = Some(n),
            FLOW_DURATION_MICROSECONDS => self.duration_ms = Some(n / 1000),
            SYSTEM_INIT_TIME_MILLISECONDS => self.system_init_ms = Some(n),
            SAMPLING_INTERVAL => self.sampling_interval = n,
            SAMPLER_RANDOM_INTERVAL => self.sampler_random_interval = n,
            SAMPLING_PACKET_INTERVAL => self.packet_interval = n,
            SAMPLING_PACKET_SPACE => self.packet_space = n,
            SAMPLING_SIZE => self.sampling_size = n,
            SAMPLING_POPULATION => self.sampling_population = n,
            SAMPLER_ID | SELECTOR_ID => self.sampler_id = Some(n as u32),
            _ => {}
        }
    }

    /// The sampling rate this record states itself (1 in N packets), if any:
    /// samplingInterval (34), samplerRandomInterval (50),
    /// (samplingPacketInterval + samplingPacketSpace) / samplingPacketInterval
    /// (305/306, RFC 5476 systematic count-based), or
    /// samplingPopulation / samplingSize (310/309).
    pub(crate) fn own_sampling_rate(&self) -> Option<u32> {
        if self.sampling_interval > 0 {
            return Some(sat_u32(self.sampling_interval));
        }
        if self.sampler_random_interval > 0 {
            return Some(sat_u32(self.sampler_random_interval));
        }
        if self.packet_interval > 0 {
            let total = self.packet_interval.saturating_add(self.packet_space);
            return Some(sat_u32(total / self.packet_interval).max(1));
        }
        if self.sampling_size > 0 && self.sampling_population > 0 {
            return Some(sat_u32(self.sampling_population / self.sampling_size).max(1));
        }
        None
    }

    fn uptime_ms(&self, clock: Clock, t: u32) -> Option<u64> {
        match clock {
            Clock::Uptime { export_ms, uptime } => Some(uptime_to_ms(export_ms, uptime, t)),
            Clock::Ipfix { system_init_ms, .. } => {
                let init = self.system_init_ms.or(system_init_ms)?;
                Some(init.saturating_add(u64::from(t)))
            }
        }
    }

    fn times(&self, clock: Clock) -> (u64, u64) {
        let export_ms = clock.export_ms();
        let before_export = |us: u64| export_ms.saturating_sub(us / 1000);
        let start = self
            .start_abs
            .or(self.start_ntp)
            .or(self.start_s)
            .or(self.start_delta_us.map(before_export))
            .or_else(|| self.first_up.and_then(|t| self.uptime_ms(clock, t)));
        let end = self
            .end_abs
            .or(self.end_ntp)
            .or(self.end_s)
            .or(self.end_delta_us.map(before_export))
            .or_else(|| self.last_up.and_then(|t| self.uptime_ms(clock, t)));
        let dur = self.duration_ms.unwrap_or(0);
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) => (s, e),
            (Some(s), None) => (s, s.saturating_add(dur)),
            (None, Some(e)) => (e.saturating_sub(dur), e),
            (None, None) => (export_ms, export_ms),
        };
        (start.min(end), end)
    }

    /// The flow record, or `None` when the record names no address (then it
    /// is not a flow: e.g. per-client application statistics).
    pub(crate) fn build(
        &self,
        clock: Clock,
        exporter: IpAddr,
        domain_id: u32,
        sampling_rate: u32,
    ) -> Option<FlowRecord> {
        let src = pick(self.src4, self.src6);
        let dst = pick(self.dst4, self.dst6);
        let (src_addr, dst_addr) = match (src, dst) {
            (None, None) => return None,
            (Some(s), Some(d)) => (s, d),
            (Some(s), None) => (s, unspecified_like(s)),
            (None, Some(d)) => (unspecified_like(d), d),
        };
        let (start_ms, end_ms) = self.times(clock);
        Some(FlowRecord {
            start_ms,
            end_ms,
            bytes: first_nonzero(&self.bytes),
            packets: first_nonzero(&self.packets),
            src_addr,
            dst_addr,
            exporter,
            in_if: self.in_if.or(self.in_phys).unwrap_or(0),
            out_if: self.out_if.or(self.out_phys).unwrap_or(0),
            sampling_rate,
            domain_id,
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
            tcp_flags: self.tcp_flags,
            direction: self.direction,
            resample: 1,
            flags: 0,
            app: AppLabel::default(),
        })
    }
}

fn v4(v: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = v.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn v6(v: &[u8]) -> Option<Ipv6Addr> {
    let a: [u8; 16] = v.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// IPv4 when the record has a non-zero one, else IPv6, else whatever is there
/// (dual-stack templates export both and fill one).
fn pick(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Option<IpAddr> {
    match (v4, v6) {
        (Some(a), _) if !a.is_unspecified() => Some(IpAddr::V4(a)),
        (_, Some(b)) => Some(IpAddr::V6(b)),
        (Some(a), None) => Some(IpAddr::V4(a)),
        (None, None) => None,
    }
}

fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn first_nonzero(c: &[Option<u64>]) -> u64 {
    c.iter().flatten().copied().find(|&v| v != 0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_wraps() {
        // Stamp 1 ms before export.
        assert_eq!(uptime_to_ms(10_000, 500, 499), 9_999);
        // Uptime wrapped between the flow and the export.
        assert_eq!(uptime_to_ms(10_000, 5, u32::MAX - 4), 9_990);
        // Stamp 1 ms after the header (softflowd does that).
        assert_eq!(uptime_to_ms(10_000, 500, 501), 10_001);
        assert_eq!(uptime_to_ms(0, 500, 0), 0);
    }

    #[test]
    fn ntp() {
        // 2016-11-11T12:09:19Z plus half a second.
        let secs = 1_478_866_159u64 + NTP_UNIX_OFFSET;
        assert_eq!(
            ntp_to_ms((secs << 32) | 0x8000_0000),
            Some(1_478_866_159_500)
        );
        assert_eq!(ntp_to_ms(0), None);
    }

    #[test]
    fn sampling_rates() {
        let mut s = Scratch::default();
        assert_eq!(s.own_sampling_rate(), None);
        s.apply_uint(SAMPLING_PACKET_INTERVAL, 1);
        s.apply_uint(SAMPLING_PACKET_SPACE, 99);
        assert_eq!(s.own_sampling_rate(), Some(100));
        s.apply_uint(SAMPLING_INTERVAL, 1000);
        assert_eq!(s.own_sampling_rate(), Some(1000));
    }

    #[test]
    fn counters_fall_back() {
        let mut s = Scratch::default();
        s.apply_uint(OCTET_DELTA_COUNT, 0);
        s.apply_uint(POST_OCTET_DELTA_COUNT, 32);
        s.apply_uint(OCTET_TOTAL_COUNT, 99);
        s.apply(SOURCE_IPV4_ADDRESS, &[10, 0, 0, 1]);
        let clock = Clock::Ipfix {
            export_ms: 5_000,
            system_init_ms: None,
        };
        let r = s.build(clock, s_addr(), 0, 0).unwrap();
        assert_eq!(r.bytes, 32);
        assert_eq!(r.dst_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        // No time fields, and sysUpTime without a known init time: export time.
        assert_eq!((r.start_ms, r.end_ms), (5_000, 5_000));
        s.apply_uint(FLOW_END_SYS_UP_TIME, 100);
        assert_eq!(s.times(clock), (5_000, 5_000));
        s.apply_uint(SYSTEM_INIT_TIME_MILLISECONDS, 1_000);
        s.apply_uint(FLOW_DURATION_MILLISECONDS, 40);
        assert_eq!(s.times(clock), (1_060, 1_100));
    }

    fn s_addr() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    }
}
