use std::net::IpAddr;

use serde::Serialize;

/// Direction of a flow relative to the interface that observed it
/// (IPFIX `flowDirection`, IE 61; NetFlow v9 `DIRECTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Not exported (always so for NetFlow v5), or a value other than 0/1.
    #[default]
    Unknown,
    Ingress,
    Egress,
}

impl Direction {
    pub(crate) fn from_wire(v: u64) -> Self {
        match v {
            0 => Direction::Ingress,
            1 => Direction::Egress,
            _ => Direction::Unknown,
        }
    }
}

/// One normalised flow record, whatever the export protocol.
///
/// Counters are as exported: not multiplied by `sampling_rate`. Times are
/// milliseconds since the Unix epoch; when a record carries no usable time
/// both are the export time of its datagram, when it carries only one end
/// the other is derived from the duration if exported, else equal to it.
/// `start_ms <= end_ms` always holds (a start after the end is clamped to the
/// end).
///
/// Fields are ordered largest first; the compiler lays the struct out itself,
/// and a test keeps it within 128 bytes (three 17-byte `IpAddr`s are most of
/// it), so a batch of 10,000 is about 1.2 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FlowRecord {
    /// Flow start, ms since the Unix epoch.
    pub start_ms: u64,
    /// Flow end (last packet), ms since the Unix epoch.
    pub end_ms: u64,
    /// Octets, as exported (unscaled).
    pub bytes: u64,
    /// Packets, as exported (unscaled).
    pub packets: u64,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    /// The exporter's address, as given by the caller of `decode`.
    pub exporter: IpAddr,
    /// Raw ingress ifIndex (0 when not exported).
    pub in_if: u32,
    /// Raw egress ifIndex (0 when not exported).
    pub out_if: u32,
    /// One packet in `sampling_rate` was sampled; 0 = unknown, 1 = unsampled.
    pub sampling_rate: u32,
    /// IPFIX observation domain id, NetFlow v9 source id; for NetFlow v5,
    /// which has neither, `engine_type << 8 | engine_id`.
    pub domain_id: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 = TCP, 17 = UDP, ...).
    pub protocol: u8,
    /// Cumulative TCP flags (low 8 bits of `tcpControlBits`).
    pub tcp_flags: u8,
    pub direction: Direction,
    /// One flow in `resample` was kept by the collector's per-exporter rate
    /// limit (flow-level sampling on top of the exporter's packet sampling);
    /// 1 = every flow kept. The decoders always set 1.
    pub resample: u32,
    /// [`FlowFlags`] bits.
    pub flags: u8,
    /// Application label where the source names one (Zeek `service`,
    /// Suricata `app_proto`); empty for NetFlow/IPFIX.
    pub app: AppLabel,
}

/// Bits of [`FlowRecord::flags`].
pub struct FlowFlags;

impl FlowFlags {
    /// The exporter announced no sampling rate and the collector's
    /// configured default was used instead.
    pub const SAMPLING_ASSUMED: u8 = 1;
    /// The addresses were truncated to a prefix at the edge.
    pub const ADDR_TRUNCATED: u8 = 2;
    /// The addresses are keyed-hash pseudonyms, not real addresses.
    pub const ADDR_PSEUDONYM: u8 = 4;
    /// Address collection is switched off: both addresses are unspecified.
    pub const ADDR_DROPPED: u8 = 8;
}

impl FlowRecord {
    /// Bytes scaled by both samplings: the estimate of the real traffic.
    /// An unknown (0) sampling rate counts as 1.
    pub fn scaled_bytes(&self) -> u64 {
        self.bytes.saturating_mul(self.scale())
    }

    /// Packets scaled by both samplings.
    pub fn scaled_packets(&self) -> u64 {
        self.packets.saturating_mul(self.scale())
    }

    /// Exported flows this record stands for: only the collector's
    /// flow-level resampling multiplies flows; packet sampling does not,
    /// because a sampled flow is still one flow.
    pub fn scaled_flows(&self) -> u64 {
        u64::from(self.resample.max(1))
    }

    fn scale(&self) -> u64 {
        u64::from(self.sampling_rate.max(1)).saturating_mul(u64::from(self.resample.max(1)))
    }
}

/// A short ASCII application label kept inline so [`FlowRecord`] stays
/// `Copy` and allocation-free: up to 15 bytes, longer labels are cut.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AppLabel {
    len: u8,
    buf: [u8; 15],
}

impl AppLabel {
    pub const MAX: usize = 15;

    /// Lower-cased, non-printable bytes replaced by `?`, cut at 15 bytes
    /// (on a character boundary, since only ASCII is kept).
    pub fn new(s: &str) -> Self {
        let mut l = AppLabel::default();
        for (slot, b) in l.buf.iter_mut().zip(s.bytes()) {
            *slot = if b.is_ascii_graphic() {
                b.to_ascii_lowercase()
            } else {
                b'?'
            };
            l.len += 1;
        }
        l
    }

    pub fn as_str(&self) -> &str {
        let n = usize::from(self.len).min(Self::MAX);
        // Only ASCII is ever stored, so this cannot fail.
        self.buf
            .get(..n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for AppLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for AppLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small() {
        // 4 x u64 + 3 x IpAddr (17 bytes each) + 5 x u32 + 2 x u16 + 4 x u8
        // + 16-byte label = 127 bytes, padded to 128 by the u64 alignment.
        let size = std::mem::size_of::<FlowRecord>();
        assert!(size <= 128, "FlowRecord grew to {size} bytes");
    }

    #[test]
    fn serializes_to_json() {
        let r = FlowRecord {
            start_ms: 1,
            end_ms: 2,
            bytes: 3,
            packets: 4,
            src_addr: "10.0.0.1".parse().unwrap(),
            dst_addr: "2001:db8::1".parse().unwrap(),
            exporter: "192.0.2.1".parse().unwrap(),
            in_if: 5,
            out_if: 6,
            sampling_rate: 0,
            domain_id: 7,
            src_port: 8,
            dst_port: 9,
            protocol: 6,
            tcp_flags: 0x12,
            direction: Direction::Egress,
            resample: 1,
            flags: 0,
            app: AppLabel::new("HTTP"),
        };
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["src_addr"], "10.0.0.1");
        assert_eq!(v["dst_addr"], "2001:db8::1");
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["tcp_flags"], 0x12);
        assert_eq!(v["app"], "http");
    }

    #[test]
    fn app_label_is_cut_and_cleaned() {
        assert_eq!(
            AppLabel::new("a-very-long-application-name").as_str(),
            "a-very-long-app"
        );
        assert_eq!(AppLabel::new("d n\u{e9}").as_str(), "d?n??");
        assert!(AppLabel::new("").is_empty());
    }
}
