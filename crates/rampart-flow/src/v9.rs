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
use crate::wire::{all_zero, bytes, tail, u16_at, u32_at, walk_sets, SetItem, SetNames};

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
    let names = SetNames {
        header: "flowset header",
        length: "flowset length",
        set: "flowset",
    };
    walk_sets(d, HEADER_LEN, &names, |item| match item {
        SetItem::Malformed(e) => s.malformed(e),
        SetItem::Set { id: 0, body } => templates(s, domain, body),
        SetItem::Set { id: 1, body } => options_templates(s, domain, body),
        SetItem::Set { id: 2..=255, .. } => {} // reserved: skipped
        SetItem::Set { id, body } => s.data_set(domain, id, body, clock),
    });
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
