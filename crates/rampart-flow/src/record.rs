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
/// and a test keeps it within 112 bytes (three 17-byte `IpAddr`s are most of
/// it).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small() {
        // 4 x u64 + 3 x IpAddr (17 bytes each) + 4 x u32 + 2 x u16 + 3 x u8
        // = 106 bytes, padded to 112 by the u64 alignment.
        let size = std::mem::size_of::<FlowRecord>();
        assert!(size <= 112, "FlowRecord grew to {size} bytes");
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
        };
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["src_addr"], "10.0.0.1");
        assert_eq!(v["dst_addr"], "2001:db8::1");
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["tcp_flags"], 0x12);
    }
}
