//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) export datagrams, written by
//! hand from the RFCs' field ids and lengths.
//!
//! Each exporter has one template for IPv4 flows and one for IPv6 flows
//! (ids 256 and 257), buffers records and sends a datagram when the next
//! record would not fit in `max_payload` bytes or `max_records` are
//! buffered. Templates go in the first datagram and then in every
//! `template_every`-th one, as exporters over UDP do (RFC 7011 §8.4; Cisco's
//! "template refresh-rate"). Export times follow the flows: a datagram is
//! stamped with the end of its newest flow, rounded up to the second.

use std::net::IpAddr;

use crate::model::Flow;

/// Information element / field type ids (RFC 3954 §8, IANA IPFIX registry).
mod ie {
    pub const OCTETS: u16 = 1;
    pub const PACKETS: u16 = 2;
    pub const PROTOCOL: u16 = 4;
    pub const TOS: u16 = 5;
    pub const TCP_FLAGS: u16 = 6;
    pub const SRC_PORT: u16 = 7;
    pub const SRC_V4: u16 = 8;
    pub const SRC_MASK: u16 = 9;
    pub const INPUT_IF: u16 = 10;
    pub const DST_PORT: u16 = 11;
    pub const DST_V4: u16 = 12;
    pub const DST_MASK: u16 = 13;
    pub const OUTPUT_IF: u16 = 14;
    pub const LAST_SWITCHED: u16 = 21;
    pub const FIRST_SWITCHED: u16 = 22;
    pub const SRC_V6: u16 = 27;
    pub const DST_V6: u16 = 28;
    pub const SRC_V6_MASK: u16 = 29;
    pub const DST_V6_MASK: u16 = 30;
    pub const DIRECTION: u16 = 61;
    pub const FLOW_START_MS: u16 = 152;
    pub const FLOW_END_MS: u16 = 153;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    V9,
    Ipfix,
}

type Field = (u16, u16);

/// Templates: (field, length). v9 uses the classic Cisco layout with
/// sysUptime-relative times and 4-byte counters; IPFIX uses absolute
/// millisecond times and full-size 8-byte counters.
fn template(proto: Proto, v6: bool) -> Vec<Field> {
    let (src, dst, smask, dmask, alen) = if v6 {
        (ie::SRC_V6, ie::DST_V6, ie::SRC_V6_MASK, ie::DST_V6_MASK, 16)
    } else {
        (ie::SRC_V4, ie::DST_V4, ie::SRC_MASK, ie::DST_MASK, 4)
    };
    match proto {
        Proto::V9 => vec![
            (ie::OCTETS, 4),
            (ie::PACKETS, 4),
            (ie::FIRST_SWITCHED, 4),
            (ie::LAST_SWITCHED, 4),
            (src, alen),
            (dst, alen),
            (ie::INPUT_IF, 2),
            (ie::OUTPUT_IF, 2),
            (ie::SRC_PORT, 2),
            (ie::DST_PORT, 2),
            (ie::PROTOCOL, 1),
            (ie::TCP_FLAGS, 1),
            (ie::TOS, 1),
            (ie::DIRECTION, 1),
            (smask, 1),
            (dmask, 1),
        ],
        Proto::Ipfix => vec![
            (ie::OCTETS, 8),
            (ie::PACKETS, 8),
            (ie::FLOW_START_MS, 8),
            (ie::FLOW_END_MS, 8),
            (src, alen),
            (dst, alen),
            (ie::INPUT_IF, 4),
            (ie::OUTPUT_IF, 4),
            (ie::SRC_PORT, 2),
            (ie::DST_PORT, 2),
            (ie::PROTOCOL, 1),
            (ie::TCP_FLAGS, 2),
            (ie::TOS, 1),
            (ie::DIRECTION, 1),
            (smask, 1),
            (dmask, 1),
        ],
    }
}

fn record_len(t: &[Field]) -> usize {
    t.iter().map(|(_, l)| usize::from(*l)).sum()
}

const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;

pub struct ExporterConfig {
    pub proto: Proto,
    pub domain: u32,
    pub boot_ms: u64,
    pub max_records: usize,
    pub max_payload: usize,
    pub template_every: u64,
}

pub struct Exporter {
    cfg: ExporterConfig,
    t4: Vec<Field>,
    t6: Vec<Field>,
    v4: Vec<Flow>,
    v6: Vec<Flow>,
    /// Datagrams sent (v9 sequence number).
    datagrams: u64,
    /// Data records sent (IPFIX sequence number).
    records: u64,
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

impl Exporter {
    pub fn new(cfg: ExporterConfig) -> Exporter {
        Exporter {
            t4: template(cfg.proto, false),
            t6: template(cfg.proto, true),
            cfg,
            v4: Vec::new(),
            v6: Vec::new(),
            datagrams: 0,
            records: 0,
        }
    }

    fn header_len(&self) -> usize {
        match self.cfg.proto {
            Proto::V9 => 20,
            Proto::Ipfix => 16,
        }
    }

    fn templates_due(&self) -> bool {
        self.datagrams.is_multiple_of(self.cfg.template_every)
    }

    fn templates_len(&self) -> usize {
        // Set header + per template (id, count) + 4 bytes per field.
        4 + 4 + 4 * self.t4.len() + 4 + 4 * self.t6.len()
    }

    /// Bytes the datagram would take with the buffered records.
    fn size_with(&self, n4: usize, n6: usize) -> usize {
        let set = |n: usize, rl: usize| if n == 0 { 0 } else { (4 + n * rl + 3) & !3 };
        self.header_len()
            + if self.templates_due() {
                self.templates_len()
            } else {
                0
            }
            + set(n4, record_len(&self.t4))
            + set(n6, record_len(&self.t6))
    }

    /// Buffers `f`; returns a datagram when one is complete.
    pub fn push(&mut self, f: Flow) -> Option<Vec<u8>> {
        let v6 = f.src.is_ipv6();
        let (n4, n6) = (
            self.v4.len() + usize::from(!v6),
            self.v6.len() + usize::from(v6),
        );
        let mut out = None;
        if self.size_with(n4, n6) > self.cfg.max_payload {
            out = self.flush();
        }
        if v6 {
            self.v6.push(f);
        } else {
            self.v4.push(f);
        }
        if self.v4.len() + self.v6.len() >= self.cfg.max_records {
            debug_assert!(out.is_none());
            out = self.flush();
        }
        out
    }

    /// The datagram of whatever is buffered, if anything.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.v4.is_empty() && self.v6.is_empty() {
            return None;
        }
        let newest = self
            .v4
            .iter()
            .chain(&self.v6)
            .map(|f| f.end_ms)
            .max()
            .unwrap_or(0);
        let export_ms = (newest / 1000 + 1) * 1000;
        let with_templates = self.templates_due();
        let n = self.v4.len() + self.v6.len();
        let mut b = Vec::with_capacity(self.size_with(self.v4.len(), self.v6.len()));
        match self.cfg.proto {
            Proto::V9 => {
                put_u16(&mut b, 9);
                // Count: template records plus data records (RFC 3954 §5.1).
                put_u16(&mut b, (n + if with_templates { 2 } else { 0 }) as u16);
                put_u32(&mut b, (export_ms - self.cfg.boot_ms) as u32);
                put_u32(&mut b, (export_ms / 1000) as u32);
                put_u32(&mut b, self.datagrams as u32);
                put_u32(&mut b, self.cfg.domain);
            }
            Proto::Ipfix => {
                put_u16(&mut b, 10);
                put_u16(&mut b, 0); // length, patched below
                put_u32(&mut b, (export_ms / 1000) as u32);
                put_u32(&mut b, self.records as u32);
                put_u32(&mut b, self.cfg.domain);
            }
        }
        if with_templates {
            let set_id = match self.cfg.proto {
                Proto::V9 => 0,
                Proto::Ipfix => 2,
            };
            let start = b.len();
            put_u16(&mut b, set_id);
            put_u16(&mut b, 0);
            for (id, t) in [(TEMPLATE_V4, &self.t4), (TEMPLATE_V6, &self.t6)] {
                put_u16(&mut b, id);
                put_u16(&mut b, t.len() as u16);
                for (f, l) in t.iter() {
                    put_u16(&mut b, *f);
                    put_u16(&mut b, *l);
                }
            }
            let len = (b.len() - start) as u16;
            b[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        let v4 = std::mem::take(&mut self.v4);
        let v6 = std::mem::take(&mut self.v6);
        for (id, t, flows) in [(TEMPLATE_V4, &self.t4, &v4), (TEMPLATE_V6, &self.t6, &v6)] {
            if flows.is_empty() {
                continue;
            }
            let start = b.len();
            put_u16(&mut b, id);
            put_u16(&mut b, 0);
            for f in flows {
                self.record(&mut b, t, f);
            }
            while (b.len() - start) % 4 != 0 {
                b.push(0);
            }
            let len = (b.len() - start) as u16;
            b[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        if self.cfg.proto == Proto::Ipfix {
            let len = b.len() as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
        }
        self.datagrams += 1;
        self.records += n as u64;
        // Give the buffers back to avoid reallocating.
        self.v4 = v4;
        self.v6 = v6;
        self.v4.clear();
        self.v6.clear();
        Some(b)
    }

    fn record(&self, b: &mut Vec<u8>, t: &[Field], f: &Flow) {
        for &(id, len) in t {
            match id {
                ie::SRC_V4 | ie::SRC_V6 => put_addr(b, f.src),
                ie::DST_V4 | ie::DST_V6 => put_addr(b, f.dst),
                _ => {
                    let v: u64 = match id {
                        ie::OCTETS => f.bytes,
                        ie::PACKETS => f.packets,
                        ie::FIRST_SWITCHED => f.start_ms - self.cfg.boot_ms,
                        ie::LAST_SWITCHED => f.end_ms - self.cfg.boot_ms,
                        ie::FLOW_START_MS => f.start_ms,
                        ie::FLOW_END_MS => f.end_ms,
                        ie::INPUT_IF => u64::from(f.in_if),
                        ie::OUTPUT_IF => u64::from(f.out_if),
                        ie::SRC_PORT => u64::from(f.src_port),
                        ie::DST_PORT => u64::from(f.dst_port),
                        ie::PROTOCOL => u64::from(f.proto),
                        ie::TCP_FLAGS => u64::from(f.tcp_flags),
                        ie::TOS => u64::from(f.tos),
                        ie::DIRECTION => 0, // ingress
                        ie::SRC_MASK | ie::SRC_V6_MASK => u64::from(f.src_mask),
                        ie::DST_MASK | ie::DST_V6_MASK => u64::from(f.dst_mask),
                        _ => 0,
                    };
                    let bytes = v.to_be_bytes();
                    b.extend_from_slice(&bytes[8 - usize::from(len)..]);
                }
            }
        }
    }
}

fn put_addr(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
    }
}
