use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::error::DecodeError;
use crate::fields::{Clock, Scratch};
use crate::record::FlowRecord;
use crate::template::{Stored, Template, TemplateCache, TemplateKind, VARLEN};
use crate::wire::{bytes, u16_at, u8_at};
use crate::{ipfix, v5, v9};

/// Observation domains (source ids) remembered per exporter for sampling
/// and system init time; beyond this the oldest is forgotten.
const MAX_DOMAINS_PER_EXPORTER: usize = 64;
/// Samplers (sampler / selector ids) remembered per domain.
const MAX_SAMPLERS_PER_DOMAIN: usize = 32;

/// Limits of a [`Decoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// A template not re-announced within this many ms is dropped. RFC 7011
    /// §8.4 asks for at least 3 times the exporter's refresh interval;
    /// exporters commonly refresh every 30 minutes or less.
    pub template_timeout_ms: u64,
    /// Templates kept per exporter; a new one beyond this drops the
    /// exporter's expired templates, else its least recently refreshed
    /// eighth (at least one).
    pub max_templates_per_exporter: usize,
    /// Exporters kept (templates, sampling state and counters); a new one
    /// beyond this replaces the one heard from least recently.
    pub max_exporters: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            template_timeout_ms: 90 * 60 * 1000,
            max_templates_per_exporter: 512,
            max_exporters: 1024,
        }
    }
}

/// What one call to [`Decoder::decode`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// 5, 9 or 10 (IPFIX).
    pub version: u16,
    /// Observation domain / source id of the datagram (v5: engine type/id).
    pub domain_id: u32,
    /// Header sequence number (v5/IPFIX: flows or records before this
    /// datagram, v9: datagrams before this one).
    pub sequence: u32,
    /// Export time from the header, ms since the Unix epoch.
    pub export_ms: u64,
    /// Flow records appended to `out`.
    pub records: usize,
    /// Options data records read (their sampling data is kept, nothing is
    /// appended).
    pub options_records: usize,
    /// Data records without any address, which are not flows (for example
    /// per-client application statistics); skipped.
    pub non_flow_records: usize,
    /// Template records stored, new or refreshed.
    pub templates: usize,
    /// Templates withdrawn (IPFIX).
    pub templates_withdrawn: usize,
    /// Template records refused (reserved id, absurd length, zero length,
    /// too many fields, truncated); also counted as malformed.
    pub templates_refused: usize,
    /// Templates dropped to make room under the per-exporter bound.
    pub templates_evicted: usize,
    /// Data sets skipped because their template is unknown or expired.
    pub missing_template_sets: usize,
    /// Sets or records skipped as malformed (overrunning their set or the
    /// datagram).
    pub malformed_sets: usize,
    /// The first problem that made part of the datagram unusable, if any.
    pub error: Option<DecodeError>,
}

/// Running totals for one exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExporterCounters {
    /// Datagrams given to `decode`, whatever became of them.
    pub datagrams: u64,
    /// Flow records produced.
    pub records: u64,
    /// Datagrams refused, plus template records refused and sets skipped as
    /// malformed in accepted datagrams.
    pub malformed: u64,
    /// Data sets skipped for want of a (live) template.
    pub missing_template: u64,
    /// Template records stored (new or refreshed).
    pub templates: u64,
}

/// Sampling and clock data learnt from options records of one domain.
#[derive(Debug, Default)]
struct DomainState {
    domain: u32,
    rate: u32,
    samplers: Vec<(u32, u32)>,
    system_init_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Domains(Vec<DomainState>);

impl Domains {
    fn get(&self, domain: u32) -> Option<&DomainState> {
        self.0.iter().find(|d| d.domain == domain)
    }

    fn get_or_insert(&mut self, domain: u32) -> Option<&mut DomainState> {
        if self.get(domain).is_none() {
            if self.0.len() >= MAX_DOMAINS_PER_EXPORTER {
                self.0.remove(0);
            }
            self.0.push(DomainState {
                domain,
                ..DomainState::default()
            });
        }
        self.0.iter_mut().find(|d| d.domain == domain)
    }

    pub(crate) fn system_init_ms(&self, domain: u32) -> Option<u64> {
        self.get(domain).and_then(|d| d.system_init_ms)
    }

    /// The rate for a data record: its sampler's if known, else the domain's.
    fn rate(&self, domain: u32, sampler: Option<u32>) -> u32 {
        let Some(d) = self.get(domain) else { return 0 };
        sampler
            .and_then(|id| d.samplers.iter().find(|(s, _)| *s == id))
            .map_or(d.rate, |(_, r)| *r)
    }

    /// Keeps what an options data record says about sampling and uptime.
    fn learn(&mut self, domain: u32, s: &Scratch) {
        let rate = s.own_sampling_rate();
        if rate.is_none() && s.system_init_ms.is_none() {
            return;
        }
        let Some(d) = self.get_or_insert(domain) else {
            return;
        };
        if let Some(init) = s.system_init_ms {
            d.system_init_ms = Some(init);
        }
        let Some(rate) = rate else { return };
        d.rate = rate;
        if let Some(id) = s.sampler_id {
            if let Some(e) = d.samplers.iter_mut().find(|(s, _)| *s == id) {
                e.1 = rate;
            } else {
                if d.samplers.len() >= MAX_SAMPLERS_PER_DOMAIN {
                    d.samplers.remove(0);
                }
                d.samplers.push((id, rate));
            }
        }
    }
}

#[derive(Debug, Default)]
struct ExporterState {
    counters: ExporterCounters,
    domains: Domains,
    last_seen_ms: u64,
}

/// Decodes NetFlow v5, NetFlow v9 and IPFIX datagrams into [`FlowRecord`]s,
/// keeping templates, sampling rates and counters per exporter.
///
/// No IO and no clock: the caller passes each datagram with the exporter's
/// address and the current time (used only to expire templates).
pub struct Decoder {
    config: DecoderConfig,
    templates: TemplateCache,
    exporters: HashMap<IpAddr, ExporterState>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DecoderConfig::default())
    }
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        Decoder {
            templates: TemplateCache::new(
                config.template_timeout_ms,
                config.max_templates_per_exporter,
            ),
            config,
            exporters: HashMap::new(),
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes one datagram (one UDP payload) from `exporter`, appending its
    /// flow records to `out`. The version is taken from the first two bytes.
    ///
    /// `Err` means the datagram was refused as a whole (short or
    /// inconsistent header, unknown version) and nothing was appended. `Ok`
    /// may still report, in [`DecodeStats::error`], a part that was skipped:
    /// complete sets before a damaged one are kept. Data sets whose template
    /// is unknown are skipped and counted, not an error.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        datagram: &[u8],
        now_ms: u64,
        out: &mut Vec<FlowRecord>,
    ) -> Result<DecodeStats, DecodeError> {
        self.make_room_for(exporter);
        let state = self.exporters.entry(exporter).or_default();
        state.last_seen_ms = now_ms;
        state.counters.datagrams += 1;
        let before = out.len();
        let mut s = Session {
            exporter,
            now_ms,
            templates: &mut self.templates,
            domains: &mut state.domains,
            out,
            stats: DecodeStats::default(),
        };
        let result = match u16_at(datagram, 0) {
            None => Err(DecodeError::truncated("version", 0, 2, datagram.len())),
            Some(5) => v5::decode(&mut s, datagram),
            Some(9) => v9::decode(&mut s, datagram),
            Some(10) => ipfix::decode(&mut s, datagram),
            Some(v) => Err(DecodeError::BadVersion(v)),
        };
        let stats = s.stats;
        let c = &mut state.counters;
        c.records += stats.records as u64;
        c.templates += stats.templates as u64;
        c.missing_template += stats.missing_template_sets as u64;
        c.malformed += (stats.templates_refused + stats.malformed_sets) as u64;
        match result {
            Ok(()) => Ok(stats),
            Err(e) => {
                c.malformed += 1;
                // Header errors come before any record; keep the promise anyway.
                out.truncate(before);
                Err(e)
            }
        }
    }

    /// Counters of one exporter, if it has been heard from (and not evicted).
    pub fn counters(&self, exporter: IpAddr) -> Option<ExporterCounters> {
        self.exporters.get(&exporter).map(|e| e.counters)
    }

    /// Every known exporter with its counters.
    pub fn exporters(&self) -> impl Iterator<Item = (IpAddr, ExporterCounters)> + '_ {
        self.exporters.iter().map(|(a, e)| (*a, e.counters))
    }

    /// The sampling rate last announced in options data for a domain of an
    /// exporter (1 in N packets).
    pub fn sampling_rate(&self, exporter: IpAddr, domain: u32) -> Option<u32> {
        let d = self.exporters.get(&exporter)?.domains.get(domain)?;
        (d.rate > 0).then_some(d.rate)
    }

    pub fn templates(&self) -> &TemplateCache {
        &self.templates
    }

    /// Drops templates not refreshed within the timeout; returns how many.
    /// Lookups drop expired templates anyway; call this now and then to free
    /// the memory of exporters that went quiet.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.templates.expire(now_ms)
    }

    fn make_room_for(&mut self, exporter: IpAddr) {
        if self.exporters.contains_key(&exporter)
            || self.exporters.len() < self.config.max_exporters.max(1)
        {
            return;
        }
        let oldest = self
            .exporters
            .iter()
            .min_by_key(|(_, e)| e.last_seen_ms)
            .map(|(a, _)| *a);
        if let Some(a) = oldest {
            self.exporters.remove(&a);
            self.templates.remove_exporter(a);
        }
    }
}

/// State for decoding one datagram.
pub(crate) struct Session<'a> {
    pub exporter: IpAddr,
    pub now_ms: u64,
    pub templates: &'a mut TemplateCache,
    pub domains: &'a mut Domains,
    pub out: &'a mut Vec<FlowRecord>,
    pub stats: DecodeStats,
}

impl Session<'_> {
    fn note(&mut self, e: DecodeError) {
        if self.stats.error.is_none() {
            self.stats.error = Some(e);
        }
    }

    pub fn refuse_template(&mut self, e: DecodeError) {
        self.stats.templates_refused += 1;
        self.note(e);
    }

    pub fn malformed(&mut self, e: DecodeError) {
        self.stats.malformed_sets += 1;
        self.note(e);
    }

    pub fn store_template(&mut self, domain: u32, t: Result<Template, DecodeError>) {
        match t {
            Ok(t) => {
                self.stats.templates += 1;
                if let Stored::Evicted(n) =
                    self.templates.insert(self.exporter, domain, t, self.now_ms)
                {
                    self.stats.templates_evicted += n;
                }
            }
            Err(e) => self.refuse_template(e),
        }
    }

    pub fn withdraw(&mut self, domain: u32, template_id: u16) {
        if self.templates.withdraw(self.exporter, domain, template_id) {
            self.stats.templates_withdrawn += 1;
        }
    }

    pub fn withdraw_all(&mut self, domain: u32, kind: TemplateKind) {
        self.stats.templates_withdrawn += self.templates.withdraw_all(self.exporter, domain, kind);
    }

    /// Decodes the records of a data set (`body` excludes the set header);
    /// trailing bytes shorter than a record are padding.
    pub fn data_set(&mut self, domain: u32, set_id: u16, body: &[u8], clock: Clock) {
        let Some(tpl) = self
            .templates
            .get(self.exporter, domain, set_id, self.now_ms)
        else {
            self.stats.missing_template_sets += 1;
            return;
        };
        let mut off = 0usize;
        while body.len().saturating_sub(off) >= tpl.min_len {
            let Some((scratch, next)) = read_record(&tpl, body, off) else {
                self.malformed(DecodeError::RecordOverrun {
                    template_id: tpl.id,
                    offset: off,
                });
                return;
            };
            if next <= off {
                return; // cannot happen (min_len >= 1); never loop in place
            }
            off = next;
            match tpl.kind {
                TemplateKind::Options => {
                    self.stats.options_records += 1;
                    self.domains.learn(domain, &scratch);
                }
                TemplateKind::Data => {
                    let rate = scratch
                        .own_sampling_rate()
                        .unwrap_or_else(|| self.domains.rate(domain, scratch.sampler_id));
                    match scratch.build(clock, self.exporter, domain, rate) {
                        Some(r) => {
                            self.out.push(r);
                            self.stats.records += 1;
                        }
                        None => self.stats.non_flow_records += 1,
                    }
                }
            }
        }
    }
}

/// Reads one record at `off`; returns its mapped values and the offset after
/// it, or `None` if it runs past the end of `body`.
fn read_record(tpl: &Template, body: &[u8], off: usize) -> Option<(Scratch, usize)> {
    let mut s = Scratch::default();
    let mut p = off;
    for f in tpl.fields.iter() {
        let len = if f.len == VARLEN {
            // RFC 7011 §7: one length byte, or 255 and a 2-byte length.
            let short = u8_at(body, p)?;
            p += 1;
            if short == 255 {
                let long = u16_at(body, p)?;
                p += 2;
                usize::from(long)
            } else {
                usize::from(short)
            }
        } else {
            usize::from(f.len)
        };
        let v = bytes(body, p, len)?;
        p += len;
        if f.ie != 0 {
            s.apply(f.ie, v);
        }
    }
    Some((s, p))
}
