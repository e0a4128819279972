//! IPFIX (RFC 7011; information elements per RFC 7012 / IANA).
//!
//! Message header (16 bytes): version 10, length (whole message), export
//! time (s), sequence number, observation domain id. Sets: id 2 = template,
//! 3 = options template, 4-255 reserved, >= 256 = data. Field specifiers
//! with the enterprise bit carry a 4-byte PEN and are skipped; length 65535
//! marks a variable-length field (§7).

use crate::decoder::Session;
use crate::error::DecodeError;
use crate::fields::Clock;
use crate::template::{TemplateBuilder, TemplateKind};
use crate::wire::{all_zero, bytes, tail, u16_at, u32_at, walk_sets, SetItem, SetNames};

const HEADER_LEN: usize = 16;
const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;

pub(crate) fn decode(s: &mut Session, d: &[u8]) -> Result<(), DecodeError> {
    let hdr = bytes(d, 0, HEADER_LEN)
        .ok_or_else(|| DecodeError::truncated("ipfix message header", 0, HEADER_LEN, d.len()))?;
    let length = usize::from(u16_at(hdr, 2).unwrap_or(0));
    if length < HEADER_LEN {
        return Err(DecodeError::BadLength {
            what: "ipfix message length",
            value: length,
            reason: "shorter than the 16-byte message header",
        });
    }
    let export_ms = u64::from(u32_at(hdr, 4).unwrap_or(0)) * 1000;
    let sequence = u32_at(hdr, 8).unwrap_or(0);
    let domain = u32_at(hdr, 12).unwrap_or(0);
    s.stats.version = 10;
    s.stats.domain_id = domain;
    s.stats.sequence = sequence;
    s.stats.export_ms = export_ms;

    // Bytes after the message are ignored (one message per datagram). A
    // message longer than the datagram was cut short: its complete sets are
    // still decoded.
    let msg = d.get(..length.min(d.len())).unwrap_or(d);
    if length > d.len() {
        s.malformed(DecodeError::truncated("ipfix message", 0, length, d.len()));
    }

    let names = SetNames {
        header: "set header",
        length: "set length",
        set: "set",
    };
    walk_sets(msg, HEADER_LEN, &names, |item| match item {
        SetItem::Malformed(e) => s.malformed(e),
        SetItem::Set { id, body } if id == TEMPLATE_SET || id == OPTIONS_TEMPLATE_SET => {
            templates(s, domain, id, body)
        }
        SetItem::Set { id: 0..=255, .. } => {} // 0, 1 (v9 ids), 4-255: reserved, skipped
        SetItem::Set { id, body } => {
            let clock = Clock::Ipfix {
                export_ms,
                system_init_ms: s.domains.system_init_ms(domain),
            };
            s.data_set(domain, id, body, clock);
        }
    });
    Ok(())
}

/// Template Set (id 2) or Options Template Set (id 3). Records: template id,
/// field count, [scope field count,] field specifiers. A record with field
/// count 0 is a withdrawal (§8.1); template id = set id withdraws them all.
fn templates(s: &mut Session, domain: u32, set_id: u16, body: &[u8]) {
    let options = set_id == OPTIONS_TEMPLATE_SET;
    let kind = if options {
        TemplateKind::Options
    } else {
        TemplateKind::Data
    };
    let mut p = 0usize;
    while let (Some(id), Some(count)) = (u16_at(body, p), u16_at(body, p + 2)) {
        if id == 0 && all_zero(tail(body, p)) {
            return; // padding
        }
        if count == 0 {
            p += 4;
            if id == set_id {
                s.withdraw_all(domain, kind);
            } else if id >= 256 {
                s.withdraw(domain, id);
            } else {
                s.refuse_template(DecodeError::BadTemplateId { template_id: id });
            }
            continue;
        }
        let count = usize::from(count);
        let mut scope = 0usize;
        p += 4;
        if options {
            let Some(sc) = u16_at(body, p) else {
                s.refuse_template(DecodeError::truncated(
                    "options template record",
                    p,
                    2,
                    tail(body, p).len(),
                ));
                return;
            };
            scope = usize::from(sc);
            p += 2;
        }
        // Read every specifier, even of a template about to be refused, to
        // find where the next record starts. Each takes 4 or 8 bytes, so the
        // loop is bounded by the set length whatever `count` says.
        let mut b = TemplateBuilder::new(id, count);
        for _ in 0..count {
            let (Some(ty), Some(len)) = (u16_at(body, p), u16_at(body, p + 2)) else {
                s.refuse_template(DecodeError::truncated(
                    "template field specifier",
                    p,
                    4,
                    tail(body, p).len(),
                ));
                return;
            };
            p += 4;
            let ie = if ty & 0x8000 != 0 {
                // Enterprise-specific: a 4-byte PEN follows; never mapped.
                if bytes(body, p, 4).is_none() {
                    s.refuse_template(DecodeError::truncated(
                        "enterprise number",
                        p,
                        4,
                        tail(body, p).len(),
                    ));
                    return;
                }
                p += 4;
                None
            } else {
                Some(ty)
            };
            b.push(ie, len);
        }
        if id < 256 {
            s.refuse_template(DecodeError::BadTemplateId { template_id: id });
        } else if scope > count {
            s.refuse_template(DecodeError::BadScope {
                template_id: id,
                scope,
                count,
            });
        } else {
            s.store_template(domain, b.finish(kind));
        }
    }
}
