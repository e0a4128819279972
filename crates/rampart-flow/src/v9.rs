//! NetFlow v9 (RFC 3954).
//!
//! Header (20 bytes): version, count, sysUptime (ms), unix_secs, sequence,
//! source id. Then FlowSets: id 0 = template, 1 = options template, 2-255
//! reserved, >= 256 = data for that template id. Each FlowSet is id, length
//! (including its 4-byte header), contents, padding.

use crate::decoder::Session;
use crate::error::DecodeError;
use crate::fields::Clock;
use crate::template::{TemplateBuilder, TemplateKind};
use crate::wire::{all_zero, bytes, tail, u16_at, u32_at};

const HEADER_LEN: usize = 20;

pub(crate) fn decode(s: &mut Session, d: &[u8]) -> Result<(), DecodeError> {
    let hdr = bytes(d, 0, HEADER_LEN)
        .ok_or_else(|| DecodeError::truncated("netflow v9 header", 0, HEADER_LEN, d.len()))?;
    let uptime = u32_at(hdr, 4).unwrap_or(0);
    let unix_secs = u64::from(u32_at(hdr, 8).unwrap_or(0));
    let sequence = u32_at(hdr, 12).unwrap_or(0);
    let domain = u32_at(hdr, 16).unwrap_or(0);
    let export_ms = unix_secs * 1000;
    s.stats.version = 9;
    s.stats.domain_id = domain;
    s.stats.sequence = sequence;
    s.stats.export_ms = export_ms;
    let clock = Clock::Uptime { export_ms, uptime };

    // The header's record count is not used to stop: exporters disagree on
    // what it counts. Sets are read until the datagram ends; zero bytes
    // where a set header should be are padding (some exporters pad the
    // datagram).
    let mut off = HEADER_LEN;
    while off < d.len() {
        let rest = tail(d, off);
        let (Some(id), Some(len)) = (u16_at(rest, 0), u16_at(rest, 2)) else {
            if !all_zero(rest) {
                s.malformed(DecodeError::truncated("flowset header", off, 4, rest.len()));
            }
            break;
        };
        let len = usize::from(len);
        if len < 4 {
            if !all_zero(rest) {
                s.malformed(DecodeError::BadLength {
                    what: "flowset length",
                    value: len,
                    reason: "less than its own 4-byte header",
                });
            }
            break;
        }
        let truncated = len > rest.len();
        let body = rest.get(4..len.min(rest.len())).unwrap_or(&[]);
        match id {
            0 => templates(s, domain, body),
            1 => options_templates(s, domain, body),
            2..=255 => {} // reserved: skipped
            _ => s.data_set(domain, id, body, clock),
        }
        if truncated {
            s.malformed(DecodeError::truncated("flowset", off, len, rest.len()));
            break;
        }
        off += len;
    }
    Ok(())
}

/// Template FlowSet: records of template id, field count, then count x
/// (type, length).
fn templates(s: &mut Session, domain: u32, body: &[u8]) {
    let mut p = 0usize;
    while let (Some(id), Some(count)) = (u16_at(body, p), u16_at(body, p + 2)) {
        if id == 0 && count == 0 && all_zero(tail(body, p)) {
            return; // padding
        }
        let count = usize::from(count);
        let fields_at = p + 4;
        let fields_len = count * 4;
        let Some(fields) = bytes(body, fields_at, fields_len) else {
            s.refuse_template(DecodeError::truncated(
                "template record",
                fields_at,
                fields_len,
                tail(body, fields_at).len(),
            ));
            return;
        };
        p = fields_at + fields_len;
        if id < 256 {
            s.refuse_template(DecodeError::BadTemplateId { template_id: id });
            continue;
        }
        let mut b = TemplateBuilder::new(id, count);
        for f in fields.chunks_exact(4) {
            if let (Some(ty), Some(len)) = (u16_at(f, 0), u16_at(f, 2)) {
                b.push(Some(ty), len);
            }
        }
        s.store_template(domain, b.finish(TemplateKind::Data));
    }
}

/// Options Template FlowSet: template id, option scope length (bytes),
/// option length (bytes), scope fields, option fields. Scope field types
/// are their own namespace in v9 (1 = system, 2 = interface, ...), not
/// information elements, so their bytes are skipped.
fn options_templates(s: &mut Session, domain: u32, body: &[u8]) {
    let mut p = 0usize;
    while let (Some(id), Some(scope_len), Some(opt_len)) =
        (u16_at(body, p), u16_at(body, p + 2), u16_at(body, p + 4))
    {
        if id == 0 && all_zero(tail(body, p)) {
            return; // padding
        }
        let (scope_len, opt_len) = (usize::from(scope_len), usize::from(opt_len));
        let fields_at = p + 6;
        let Some(fields) = bytes(body, fields_at, scope_len + opt_len) else {
            s.refuse_template(DecodeError::truncated(
                "options template record",
                fields_at,
                scope_len + opt_len,
                tail(body, fields_at).len(),
            ));
            return;
        };
        p = fields_at + scope_len + opt_len;
        if scope_len % 4 != 0 || opt_len % 4 != 0 {
            s.refuse_template(DecodeError::BadLength {
                what: "options template scope/option length",
                value: if scope_len % 4 != 0 {
                    scope_len
                } else {
                    opt_len
                },
                reason: "not a multiple of the 4-byte field specifier",
            });
            continue;
        }
        if id < 256 {
            s.refuse_template(DecodeError::BadTemplateId { template_id: id });
            continue;
        }
        let mut b = TemplateBuilder::new(id, (scope_len + opt_len) / 4);
        for (i, f) in fields.chunks_exact(4).enumerate() {
            if let (Some(ty), Some(len)) = (u16_at(f, 0), u16_at(f, 2)) {
                let is_scope = i * 4 < scope_len;
                b.push((!is_scope).then_some(ty), len);
            }
        }
        s.store_template(domain, b.finish(TemplateKind::Options));
    }
}
