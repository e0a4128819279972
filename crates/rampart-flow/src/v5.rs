//! NetFlow v5 (Cisco's fixed format): a 24-byte header and `count` 48-byte
//! records.
//!
//! Header: version, count, sysUptime (ms), unix_secs, unix_nsecs,
//! flow_sequence, engine_type, engine_id, sampling_interval (2 bits mode,
//! 14 bits interval). Record: srcaddr, dstaddr, nexthop, input, output,
//! dPkts, dOctets, First, Last (sysUptime ms), srcport, dstport, pad1,
//! tcp_flags, prot, tos, src_as, dst_as, src_mask, dst_mask, pad2.

use std::net::{IpAddr, Ipv4Addr};

use crate::decoder::Session;
use crate::error::DecodeError;
use crate::fields::uptime_to_ms;
use crate::record::{AppLabel, Direction, FlowRecord};
use crate::wire::{bytes, u16_at, u32_at, u8_at};

const HEADER_LEN: usize = 24;
const RECORD_LEN: usize = 48;

pub(crate) fn decode(s: &mut Session, d: &[u8]) -> Result<(), DecodeError> {
    let hdr = bytes(d, 0, HEADER_LEN)
        .ok_or_else(|| DecodeError::truncated("netflow v5 header", 0, HEADER_LEN, d.len()))?;
    let field = |at| u32_at(hdr, at).unwrap_or(0);
    let count = usize::from(u16_at(hdr, 2).unwrap_or(0));
    let uptime = field(4);
    let unix_secs = u64::from(field(8));
    let unix_nsecs = u64::from(field(12));
    let sequence = field(16);
    let engine_type = u8_at(hdr, 20).unwrap_or(0);
    let engine_id = u8_at(hdr, 21).unwrap_or(0);
    let sampling = u16_at(hdr, 22).unwrap_or(0);

    // The count is checked against the datagram before anything is read:
    // a v5 datagram has no other framing to tell records from garbage.
    let need = count * RECORD_LEN;
    let have = d.len() - HEADER_LEN;
    if need > have {
        return Err(DecodeError::truncated(
            "netflow v5 records",
            HEADER_LEN,
            need,
            have,
        ));
    }

    let export_ms = unix_secs * 1000 + unix_nsecs / 1_000_000;
    let domain_id = (u32::from(engine_type) << 8) | u32::from(engine_id);
    // Low 14 bits: one packet in N; the mode bits (deterministic/random) do
    // not change N. 0 = not sampled or not said: unknown.
    let sampling_rate = u32::from(sampling & 0x3FFF);
    s.stats.version = 5;
    s.stats.domain_id = domain_id;
    s.stats.sequence = sequence;
    s.stats.export_ms = export_ms;

    for i in 0..count {
        let Some(r) = bytes(d, HEADER_LEN + i * RECORD_LEN, RECORD_LEN) else {
            break; // unreachable: checked above
        };
        let word = |at| u32_at(r, at).unwrap_or(0);
        let half = |at| u16_at(r, at).unwrap_or(0);
        let byte = |at| u8_at(r, at).unwrap_or(0);
        let first = uptime_to_ms(export_ms, uptime, word(24));
        let last = uptime_to_ms(export_ms, uptime, word(28));
        s.out.push(FlowRecord {
            start_ms: first.min(last),
            end_ms: last,
            bytes: u64::from(word(20)),
            packets: u64::from(word(16)),
            src_addr: IpAddr::V4(Ipv4Addr::from(word(0))),
            dst_addr: IpAddr::V4(Ipv4Addr::from(word(4))),
            exporter: s.exporter,
            in_if: u32::from(half(12)),
            out_if: u32::from(half(14)),
            sampling_rate,
            domain_id,
            src_port: half(32),
            dst_port: half(34),
            protocol: byte(38),
            tcp_flags: byte(37),
            direction: Direction::Unknown,
            resample: 1,
            flags: 0,
            app: AppLabel::default(),
        });
        s.stats.records += 1;
    }
    Ok(())
}
