//! Templates (NetFlow v9 RFC 3954 §5.2-5.3, IPFIX RFC 7011 §3.4) and the
//! cache that keeps them per (exporter, observation domain, template id).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::error::DecodeError;
use crate::fields;

/// Field length that marks a variable-length field (RFC 7011 §7). Some
/// NetFlow v9 exporters (H3C) use it the same way.
pub(crate) const VARLEN: u16 = 0xFFFF;

/// Most fields a template may declare. Real templates have a few dozen; the
/// wire format allows ~16 000. Beyond this a template is refused.
pub const MAX_TEMPLATE_FIELDS: usize = 512;

/// Longest record that can exist: a 65 535-byte IPFIX message minus its
/// 16-byte header and a 4-byte set header. A template whose minimum record
/// length exceeds it could never be used, so it is refused.
pub const MAX_RECORD_LEN: usize = 65_535 - 16 - 4;

/// Whether a template describes flow data or options (metadata such as the
/// sampling interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    Data,
    Options,
}

/// One field of a compiled template. `ie == 0` means "skip `len` bytes":
/// fields we do not map, enterprise-specific fields, NetFlow v9 scope fields
/// and runs of those are merged into one skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub ie: u16,
    pub len: u16,
}

/// A template as the data decoder uses it.
#[derive(Debug)]
pub(crate) struct Template {
    pub id: u16,
    pub kind: TemplateKind,
    pub fields: Box<[Field]>,
    /// Shortest possible record: fixed lengths plus one byte per
    /// variable-length field. Always at least 1.
    pub min_len: usize,
}

/// Compiles template fields as they are read off the wire, merging skipped
/// fields and checking the limits. Memory is bounded by
/// [`MAX_TEMPLATE_FIELDS`] whatever the declared count.
pub(crate) struct TemplateBuilder {
    id: u16,
    fields: Vec<Field>,
    declared: usize,
    min_len: usize,
    too_long: Option<usize>,
}

impl TemplateBuilder {
    pub fn new(id: u16, declared: usize) -> Self {
        TemplateBuilder {
            id,
            fields: Vec::with_capacity(declared.min(64)),
            declared,
            min_len: 0,
            too_long: None,
        }
    }

    /// Adds one field. `ie` is `None` for fields that must be skipped
    /// whatever their number (enterprise-specific, NetFlow v9 scope).
    pub fn push(&mut self, ie: Option<u16>, len: u16) {
        if self.declared > MAX_TEMPLATE_FIELDS || self.too_long.is_some() {
            return; // refused in finish(); keep reading to find the boundary
        }
        let keep = ie.filter(|&ie| fields::accepts(ie, len));
        // A variable-length field takes at least its 1-byte length prefix.
        self.min_len += if len == VARLEN { 1 } else { usize::from(len) };
        if self.min_len > MAX_RECORD_LEN {
            self.too_long = Some(self.min_len);
            return;
        }
        if len == VARLEN {
            self.fields.push(Field {
                ie: keep.unwrap_or(0),
                len,
            });
            return;
        }
        match keep {
            Some(ie) => self.fields.push(Field { ie, len }),
            None if len == 0 => {}
            None => match self.fields.last_mut() {
                // min_len <= MAX_RECORD_LEN < VARLEN, so a merged skip never
                // reaches the VARLEN marker.
                Some(last) if last.ie == 0 && last.len != VARLEN => last.len += len,
                _ => self.fields.push(Field { ie: 0, len }),
            },
        }
    }

    pub fn finish(self, kind: TemplateKind) -> Result<Template, DecodeError> {
        if self.declared > MAX_TEMPLATE_FIELDS {
            return Err(DecodeError::TooManyFields {
                template_id: self.id,
                count: self.declared,
                limit: MAX_TEMPLATE_FIELDS,
            });
        }
        if let Some(length) = self.too_long {
            return Err(DecodeError::AbsurdFieldLength {
                template_id: self.id,
                length,
            });
        }
        if self.min_len == 0 {
            return Err(DecodeError::ZeroLengthTemplate {
                template_id: self.id,
            });
        }
        Ok(Template {
            id: self.id,
            kind,
            fields: self.fields.into_boxed_slice(),
            min_len: self.min_len,
        })
    }
}

struct Entry {
    template: Arc<Template>,
    refreshed_ms: u64,
}

/// What happened when a template was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    New,
    Refreshed,
    /// New, and this many of the exporter's least recently refreshed
    /// templates were dropped to stay within the per-exporter bound.
    Evicted(usize),
}

/// Templates keyed by (exporter address, observation domain / source id,
/// template id).
///
/// A template that has not been (re)announced within the timeout is dropped:
/// lazily when it is looked up, and by [`TemplateCache::expire`]. Each
/// exporter holds at most `max_per_exporter` templates; a new one beyond that
/// first drops the exporter's expired templates, then, if still full, its
/// least recently refreshed eighth. There is no clock inside: callers pass
/// `now_ms`.
pub struct TemplateCache {
    timeout_ms: u64,
    max_per_exporter: usize,
    exporters: HashMap<IpAddr, HashMap<(u32, u16), Entry>>,
}

impl TemplateCache {
    pub fn new(timeout_ms: u64, max_per_exporter: usize) -> Self {
        TemplateCache {
            timeout_ms,
            max_per_exporter: max_per_exporter.max(1),
            exporters: HashMap::new(),
        }
    }

    /// Number of templates held, all exporters together (expired ones
    /// included until they are looked up or [`expire`](Self::expire)d).
    pub fn len(&self) -> usize {
        self.exporters.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.exporters.values().all(HashMap::is_empty)
    }

    /// Number of templates held for one exporter.
    pub fn len_for(&self, exporter: IpAddr) -> usize {
        self.exporters.get(&exporter).map_or(0, HashMap::len)
    }

    /// Whether a live (not expired) template is held.
    pub fn contains(&self, exporter: IpAddr, domain: u32, template_id: u16, now_ms: u64) -> bool {
        self.exporters
            .get(&exporter)
            .and_then(|m| m.get(&(domain, template_id)))
            .is_some_and(|e| !self.is_expired(e, now_ms))
    }

    /// The kind of a live template, if held.
    pub fn kind(
        &self,
        exporter: IpAddr,
        domain: u32,
        template_id: u16,
        now_ms: u64,
    ) -> Option<TemplateKind> {
        self.exporters
            .get(&exporter)
            .and_then(|m| m.get(&(domain, template_id)))
            .filter(|e| !self.is_expired(e, now_ms))
            .map(|e| e.template.kind)
    }

    /// Drops every template not refreshed within the timeout; returns how
    /// many were dropped.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let timeout = self.timeout_ms;
        let mut dropped = 0;
        self.exporters.retain(|_, m| {
            let before = m.len();
            m.retain(|_, e| now_ms.saturating_sub(e.refreshed_ms) <= timeout);
            dropped += before - m.len();
            !m.is_empty()
        });
        dropped
    }

    /// Forgets every template of an exporter; returns how many there were.
    pub fn remove_exporter(&mut self, exporter: IpAddr) -> usize {
        self.exporters.remove(&exporter).map_or(0, |m| m.len())
    }

    fn is_expired(&self, e: &Entry, now_ms: u64) -> bool {
        now_ms.saturating_sub(e.refreshed_ms) > self.timeout_ms
    }

    /// Looks a template up, dropping it if it has expired.
    pub(crate) fn get(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        template_id: u16,
        now_ms: u64,
    ) -> Option<Arc<Template>> {
        let timeout = self.timeout_ms;
        let m = self.exporters.get_mut(&exporter)?;
        let key = (domain, template_id);
        let e = m.get(&key)?;
        if now_ms.saturating_sub(e.refreshed_ms) > timeout {
            m.remove(&key);
            return None;
        }
        Some(Arc::clone(&e.template))
    }

    pub(crate) fn insert(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        template: Template,
        now_ms: u64,
    ) -> Stored {
        let timeout = self.timeout_ms;
        let max = self.max_per_exporter;
        let m = self.exporters.entry(exporter).or_default();
        let key = (domain, template.id);
        let entry = Entry {
            template: Arc::new(template),
            refreshed_ms: now_ms,
        };
        if let Some(old) = m.get_mut(&key) {
            *old = entry;
            return Stored::Refreshed;
        }
        let mut stored = Stored::New;
        if m.len() >= max {
            m.retain(|_, e| now_ms.saturating_sub(e.refreshed_ms) <= timeout);
        }
        if m.len() >= max {
            // Make room for several at once: a datagram full of new
            // templates then costs one sort per `max / 8` of them, not a
            // scan of the exporter's templates for each.
            let mut ages: Vec<(u64, (u32, u16))> =
                m.iter().map(|(k, e)| (e.refreshed_ms, *k)).collect();
            ages.sort_unstable();
            let drop = (m.len() + 1 - max).max(max / 8).max(1);
            for (_, k) in ages.iter().take(drop) {
                m.remove(k);
            }
            stored = Stored::Evicted(drop.min(ages.len()));
        }
        m.insert(key, entry);
        stored
    }

    /// IPFIX template withdrawal (RFC 7011 §8.1) of one template.
    pub(crate) fn withdraw(&mut self, exporter: IpAddr, domain: u32, template_id: u16) -> bool {
        self.exporters
            .get_mut(&exporter)
            .is_some_and(|m| m.remove(&(domain, template_id)).is_some())
    }

    /// IPFIX "withdraw all" of one kind for a domain; returns how many.
    pub(crate) fn withdraw_all(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        kind: TemplateKind,
    ) -> usize {
        let Some(m) = self.exporters.get_mut(&exporter) else {
            return 0;
        };
        let before = m.len();
        m.retain(|(d, _), e| !(*d == domain && e.template.kind == kind));
        before - m.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(id: u16) -> Template {
        let mut b = TemplateBuilder::new(id, 1);
        b.push(Some(8), 4);
        b.finish(TemplateKind::Data).unwrap()
    }

    const EXP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn builder_merges_skips_and_checks_limits() {
        let mut b = TemplateBuilder::new(300, 5);
        b.push(Some(9999), 2); // unmapped
        b.push(None, 3); // enterprise
        b.push(Some(8), 4); // sourceIPv4Address
        b.push(Some(8), 3); // wrong length: skipped
        b.push(Some(1), VARLEN); // varlen counter: skipped
        let t = b.finish(TemplateKind::Data).unwrap();
        assert_eq!(
            &*t.fields,
            &[
                Field { ie: 0, len: 5 },
                Field { ie: 8, len: 4 },
                Field { ie: 0, len: 3 },
                Field { ie: 0, len: VARLEN }
            ]
        );
        assert_eq!(t.min_len, 13);

        let mut b = TemplateBuilder::new(300, 2);
        b.push(None, 0);
        b.push(Some(1), 0);
        assert_eq!(
            b.finish(TemplateKind::Data).unwrap_err(),
            DecodeError::ZeroLengthTemplate { template_id: 300 }
        );

        let mut b = TemplateBuilder::new(300, 2);
        b.push(None, 65_000);
        b.push(None, 1_000);
        assert!(matches!(
            b.finish(TemplateKind::Data),
            Err(DecodeError::AbsurdFieldLength { .. })
        ));

        let b = TemplateBuilder::new(300, MAX_TEMPLATE_FIELDS + 1);
        assert!(matches!(
            b.finish(TemplateKind::Data),
            Err(DecodeError::TooManyFields { .. })
        ));
    }

    #[test]
    fn expiry_and_bound() {
        let mut c = TemplateCache::new(1_000, 2);
        assert_eq!(c.insert(EXP, 1, tpl(256), 0), Stored::New);
        assert_eq!(c.insert(EXP, 1, tpl(257), 10), Stored::New);
        assert_eq!(c.insert(EXP, 1, tpl(256), 20), Stored::Refreshed);
        // Full: 257 is the least recently refreshed.
        assert_eq!(c.insert(EXP, 1, tpl(258), 30), Stored::Evicted(1));
        assert!(!c.contains(EXP, 1, 257, 30));
        assert!(c.contains(EXP, 1, 256, 30));
        assert_eq!(c.len_for(EXP), 2);

        // With a bound of 16, a full exporter loses its oldest 2 at once.
        let mut b = TemplateCache::new(1_000, 16);
        for id in 0..16u16 {
            b.insert(EXP, 0, tpl(300 + id), u64::from(id));
        }
        assert_eq!(b.insert(EXP, 0, tpl(400), 20), Stored::Evicted(2));
        assert_eq!(b.len_for(EXP), 15);
        assert!(!b.contains(EXP, 0, 300, 20) && !b.contains(EXP, 0, 301, 20));
        assert!(b.contains(EXP, 0, 302, 20) && b.contains(EXP, 0, 400, 20));
        // Other domains are other keys.
        assert!(!c.contains(EXP, 2, 256, 30));
        // Not refreshed within 1 000 ms: gone.
        assert!(c.get(EXP, 1, 256, 1_020).is_some());
        assert!(c.get(EXP, 1, 256, 1_021).is_none());
        assert_eq!(c.expire(5_000), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn withdrawal() {
        let mut c = TemplateCache::new(1_000, 10);
        c.insert(EXP, 1, tpl(256), 0);
        c.insert(EXP, 1, tpl(257), 0);
        c.insert(EXP, 2, tpl(256), 0);
        assert!(c.withdraw(EXP, 1, 256));
        assert!(!c.withdraw(EXP, 1, 256));
        assert_eq!(c.withdraw_all(EXP, 1, TemplateKind::Data), 1);
        assert_eq!(c.withdraw_all(EXP, 1, TemplateKind::Options), 0);
        assert_eq!(c.len(), 1);
    }
}
