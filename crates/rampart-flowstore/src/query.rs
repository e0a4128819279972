//! Query planning and execution.
//!
//! A window `[start, end)` is cut at hour boundaries. A whole hour that has
//! a 1-hour rollup is read from it, plus any 1-minute rollups that arrived
//! after its compaction. Otherwise the whole minutes of the piece are read
//! from the 1-minute rollups and the minute fractions at its edges from the
//! raw rows. A filter, which rollups cannot evaluate, sends everything to
//! the raw rows. Files are fetched a window at a time and decrypted,
//! decoded and folded on blocking threads, one per core.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rampart_store::{FlowSegment, SegmentLevel, TenantId};

use crate::cache::{Cache, CacheKey, Cached, Form};
use crate::cursor::{row_key, Cursor, RowKey};
use crate::model::*;
use crate::rollup::{self, Counters, FastMap, RollupPart, TOTAL_PART};
use crate::segment;
use crate::{
    crypt, DataKey, FlowStore, FlowStoreError, Result, DAY_MS, HOUR_MS, MAX_BUCKETS, MAX_FILE_ROWS,
    MAX_SEARCH_LIMIT, MAX_SERIES_TOP, MAX_TOP_N, MINUTE_MS,
};

/// Most files, and bytes of files, fetched before a round of decoding.
const WINDOW_FILES: usize = 256;
const WINDOW_BYTES: usize = 64 << 20;

/// One file to read, and the part of the window it answers for.
#[derive(Clone)]
struct Item {
    seg: FlowSegment,
    lo: i64,
    hi: i64,
    /// The rollup part to read, or `None` for raw rows.
    part: Option<u8>,
}

#[derive(Default)]
struct HourSegs {
    raw: Vec<FlowSegment>,
    m1: Vec<FlowSegment>,
    h1: Vec<FlowSegment>,
}

/// A tenant's segments in a window: by hour partition, and day rollups by
/// day since the epoch.
#[derive(Default)]
struct Segs {
    hours: BTreeMap<i64, HourSegs>,
    days: BTreeMap<i64, Vec<FlowSegment>>,
}

/// Which rollup levels may answer (none when a filter is given; only those
/// whose buckets divide a series' buckets).
#[derive(Clone, Copy)]
struct Allow {
    day: bool,
    hour: bool,
    minute: bool,
}

impl Allow {
    fn rollups(yes: bool) -> Allow {
        Allow {
            day: yes,
            hour: yes,
            minute: yes,
        }
    }
}

struct Plan {
    items: Vec<Item>,
    /// The finest level an item was planned at.
    level: Option<Level>,
}

fn floor_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w).saturating_mul(w)
}

fn ceil_to(t: i64, w: i64) -> i64 {
    let f = floor_to(t, w);
    if f == t {
        t
    } else {
        f.saturating_add(w)
    }
}

fn plan(segs: &Segs, tenant: TenantId, qs: i64, qe: i64, allow: Allow, parts: &[u8]) -> Plan {
    let mut p = Plan {
        items: Vec::new(),
        level: None,
    };
    let finest = |p: &mut Plan, l: Level| {
        p.level = Some(p.level.map_or(l, |o| o.min(l)));
    };
    let add_raw = |p: &mut Plan, h: &HourSegs, lo: i64, hi: i64| {
        let before = p.items.len();
        for s in h.raw.iter().filter(|s| s.start_ms < hi && s.end_ms > lo) {
            p.items.push(Item {
                seg: s.clone(),
                lo,
                hi,
                part: None,
            });
        }
        p.items.len() > before
    };
    let add_rollups =
        |p: &mut Plan, segs: &mut dyn Iterator<Item = &FlowSegment>, lo: i64, hi: i64| {
            let before = p.items.len();
            for s in segs.filter(|s| s.start_ms < hi && s.end_ms > lo) {
                for part in parts {
                    p.items.push(Item {
                        seg: s.clone(),
                        lo,
                        hi,
                        part: Some(*part),
                    });
                }
            }
            p.items.len() > before
        };
    // Whole days with a current day rollup: it, plus the 1-minute rollups
    // that arrived after their hour's compaction.
    let mut by_day: BTreeMap<i64, i64> = BTreeMap::new();
    if allow.day {
        for (day, d1) in &segs.days {
            let ds = day.saturating_mul(DAY_MS);
            let de = ds.saturating_add(DAY_MS);
            if qs > ds || qe < de {
                continue;
            }
            let first = day.saturating_mul(24);
            let hours = || {
                segs.hours
                    .range(first..first.saturating_add(24))
                    .map(|(_, h)| h)
            };
            let h1: Vec<FlowSegment> = hours().flat_map(|h| h.h1.iter().cloned()).collect();
            if h1.is_empty() {
                continue;
            }
            let id = crate::day_rollup_id(tenant, *day, &h1);
            let Some(d) = d1.iter().find(|s| s.id == id) else {
                // Stale: an hour was compacted again since. Hours answer.
                continue;
            };
            let mut segs = std::iter::once(d)
                .chain(hours().flat_map(|h| h.m1.iter().filter(|s| !s.compacted)));
            if add_rollups(&mut p, &mut segs, ds, de) {
                finest(&mut p, Level::Day);
            }
            by_day.insert(first, first.saturating_add(24));
        }
    }
    for (hour, h) in &segs.hours {
        if by_day
            .range(..=hour)
            .next_back()
            .is_some_and(|(_, end)| hour < end)
        {
            continue;
        }
        let (allow_hour, allow_minute) = (allow.hour, allow.minute);
        let hs = hour.saturating_mul(HOUR_MS);
        let he = hs.saturating_add(HOUR_MS);
        let (lo, hi) = (qs.max(hs), qe.min(he));
        if lo >= hi {
            continue;
        }
        if allow_hour && lo == hs && hi == he && !h.h1.is_empty() {
            // Uncompacted 1-minute rollups arrived after the hour's
            // compaction: the 1-hour rollup does not count them.
            let mut segs = h.h1.iter().chain(h.m1.iter().filter(|s| !s.compacted));
            if add_rollups(&mut p, &mut segs, lo, hi) {
                finest(&mut p, Level::Hour);
            }
            continue;
        }
        if allow_minute {
            let (ml, mh) = (ceil_to(lo, MINUTE_MS), floor_to(hi, MINUTE_MS));
            if ml < mh {
                if add_rollups(&mut p, &mut h.m1.iter(), ml, mh) {
                    finest(&mut p, Level::Minute);
                }
                for (a, b) in [(lo, ml), (mh, hi)] {
                    if a < b && add_raw(&mut p, h, a, b) {
                        finest(&mut p, Level::Raw);
                    }
                }
                continue;
            }
        }
        if add_raw(&mut p, h, lo, hi) {
            finest(&mut p, Level::Raw);
        }
    }
    p
}

/// Folds rows into an answer; one per blocking thread, merged at the end.
trait Sink: Send + 'static {
    fn raw(&mut self, row: &FlowRow);
    /// A rollup row: its part, bucket, key, counts, and whether it is the
    /// "other" remainder of a cut.
    fn rollup(&mut self, part: u8, bucket: i64, key: &Key, c: &Counters, other: bool);
    fn merge(&mut self, other: Self);
}

struct Scanned<S> {
    sink: S,
    rows: u64,
    /// A cut (bucket, dimension) was read.
    approximate: bool,
}

/// A file as fetched: decoded, decrypted, or still sealed.
enum Input {
    Part(Arc<RollupPart>),
    Plain(Bytes),
    Sealed(Vec<u8>),
}

/// What the blocking threads need besides the items.
struct Ctx {
    tenant: TenantId,
    key: DataKey,
    key_fp: [u8; 16],
    cache: Arc<Cache>,
    filter: Option<RowFilter>,
}

fn process<S: Sink>(ctx: &Ctx, item: &Item, input: Input, out: &mut Scanned<S>) -> Result<()> {
    let bk = item.seg.blob_key.as_str();
    // Rollup files are cached as decoded parts, which is what costs time
    // to rebuild (decrypting is cheap next to decoding), raw files as the
    // decrypted Parquet, which is ten times smaller than decoded rows.
    let plain = |input: Input| -> Result<Bytes> {
        match input {
            Input::Plain(b) => Ok(b),
            Input::Sealed(s) => {
                let p = Bytes::from(crypt::open(&ctx.key, ctx.tenant, bk, &s)?);
                if item.part.is_none() {
                    ctx.cache.put(
                        CacheKey {
                            key_fp: ctx.key_fp,
                            blob_key: bk.into(),
                            form: Form::Plain,
                        },
                        Cached::Plain(p.clone()),
                    );
                }
                Ok(p)
            }
            Input::Part(_) => Err(segment::corrupt(
                bk,
                "a rollup part where raw rows were expected",
            )),
        }
    };
    let (lo, hi) = (item.lo, item.hi);
    match item.part {
        Some(code) => {
            let part = match input {
                Input::Part(p) => p,
                other => {
                    let p = Arc::new(rollup::decode_part(plain(other)?, bk, code, MAX_FILE_ROWS)?);
                    ctx.cache.put(
                        CacheKey {
                            key_fp: ctx.key_fp,
                            blob_key: bk.into(),
                            form: Form::Part(code),
                        },
                        Cached::Part(p.clone()),
                    );
                    p
                }
            };
            part.for_each_in(lo, hi, |bucket, key, c, other| {
                out.rows += 1;
                out.approximate |= other;
                out.sink.rollup(code, bucket, key, c, other);
            });
        }
        None => {
            let filter = ctx.filter.as_deref();
            let mut n = 0u64;
            segment::for_each_raw(plain(input)?, bk, MAX_FILE_ROWS, |r| {
                let start = i64::try_from(r.flow.start_ms).unwrap_or(i64::MAX);
                if start >= lo && start < hi {
                    n += 1;
                    if filter.is_none_or(|f| f(&r.flow)) {
                        out.sink.raw(r);
                    }
                }
            })?;
            out.rows += n;
        }
    }
    Ok(())
}

/// Decrypts, decodes and folds a window of files, one lane (thread and
/// sink) per core. The lanes carry over from window to window and are
/// merged once at the end: merging per window cost as much as the folding.
fn run_window<S: Sink>(
    ctx: &Ctx,
    inputs: Vec<(Item, Input)>,
    lanes: Vec<Scanned<S>>,
) -> Result<Vec<Scanned<S>>> {
    let n = lanes.len().max(1);
    let mut work: Vec<Vec<(Item, Input)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, x) in inputs.into_iter().enumerate() {
        if let Some(w) = work.get_mut(i % n) {
            w.push(x);
        }
    }
    std::thread::scope(|sc| {
        let handles: Vec<_> = lanes
            .into_iter()
            .zip(work)
            .map(|(mut lane, items)| {
                sc.spawn(move || {
                    for (item, input) in items {
                        process(ctx, &item, input, &mut lane)?;
                    }
                    Ok(lane)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(FlowStoreError::Task("a query thread panicked".into())))
            })
            .collect()
    })
}

impl FlowStore {
    /// The tenant's segments overlapping the window, by hour partition.
    async fn segments(&self, tenant: TenantId, qs: i64, qe: i64, rollups: bool) -> Result<Segs> {
        let mut segs = Segs::default();
        let levels: &[SegmentLevel] = if rollups {
            &SegmentLevel::ALL
        } else {
            &[SegmentLevel::Raw]
        };
        for level in levels {
            for s in self.meta.list_flow_segments(tenant, *level, qs, qe).await? {
                if *level == SegmentLevel::D1 {
                    segs.days
                        .entry(s.partition_hour.div_euclid(24))
                        .or_default()
                        .push(s);
                    continue;
                }
                let h = segs.hours.entry(s.partition_hour).or_default();
                match level {
                    SegmentLevel::Raw => h.raw.push(s),
                    SegmentLevel::M1 => h.m1.push(s),
                    SegmentLevel::H1 | SegmentLevel::D1 => h.h1.push(s),
                }
            }
        }
        Ok(segs)
    }

    async fn fetch(&self, key_fp: [u8; 16], item: &Item) -> Result<Input> {
        let blob_key: Arc<str> = item.seg.blob_key.as_str().into();
        if let Some(code) = item.part {
            let ck = CacheKey {
                key_fp,
                blob_key: blob_key.clone(),
                form: Form::Part(code),
            };
            if let Some(Cached::Part(p)) = self.cache.get(&ck) {
                return Ok(Input::Part(p));
            }
        }
        let ck = CacheKey {
            key_fp,
            blob_key,
            form: Form::Plain,
        };
        if let Some(Cached::Plain(b)) = self.cache.get(&ck) {
            return Ok(Input::Plain(b));
        }
        self.blobs
            .get(&item.seg.blob_key)
            .await?
            .map(Input::Sealed)
            .ok_or_else(|| FlowStoreError::Missing(item.seg.blob_key.clone()))
    }

    async fn scan<S: Sink>(
        &self,
        tenant: TenantId,
        key: &DataKey,
        items: &[Item],
        filter: Option<RowFilter>,
        make: Arc<dyn Fn() -> S + Send + Sync>,
    ) -> Result<Scanned<S>> {
        let key_fp = key.fingerprint();
        let ctx = Arc::new(Ctx {
            tenant,
            key: key.clone(),
            key_fp,
            cache: self.cache.clone(),
            filter,
        });
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(items.len().max(1));
        let mut lanes: Vec<Scanned<S>> = (0..threads)
            .map(|_| Scanned {
                sink: make(),
                rows: 0,
                approximate: false,
            })
            .collect();
        let mut rest = items;
        while !rest.is_empty() {
            // A window: up to WINDOW_FILES files or WINDOW_BYTES fetched,
            // so a long scan never holds all its files at once.
            let mut inputs = Vec::new();
            let mut bytes = 0usize;
            while let Some((item, tail)) = rest.split_first() {
                if inputs.len() >= WINDOW_FILES || bytes >= WINDOW_BYTES {
                    break;
                }
                let input = self.fetch(key_fp, item).await?;
                bytes += match &input {
                    Input::Part(_) => 0,
                    Input::Plain(b) => b.len(),
                    Input::Sealed(v) => v.len(),
                };
                inputs.push((item.clone(), input));
                rest = tail;
            }
            let ctx = ctx.clone();
            lanes = crate::blocking(move || run_window(&ctx, inputs, lanes)).await?;
        }
        let mut total = Scanned {
            sink: make(),
            rows: 0,
            approximate: false,
        };
        for lane in lanes {
            total.sink.merge(lane.sink);
            total.rows += lane.rows;
            total.approximate |= lane.approximate;
        }
        Ok(total)
    }
}

/// Runs `f` again when a file vanished between listing and reading it
/// (compaction or retention removed it): the second listing no longer
/// names it.
macro_rules! retry_missing {
    ($e:expr) => {{
        let mut attempt = 0;
        loop {
            match $e {
                Err(FlowStoreError::Missing(k)) if attempt < 2 => {
                    attempt += 1;
                    tracing::debug!(key = %k, attempt, "flow segment vanished during a query; retrying");
                }
                r => break r,
            }
        }
    }};
}

fn empty_level(filter: bool, allow_hour: bool) -> Level {
    match (filter, allow_hour) {
        (true, _) => Level::Raw,
        (false, true) => Level::Hour,
        (false, false) => Level::Minute,
    }
}

// ---- top-N ----

struct TopSink {
    dim: Dim,
    map: FastMap<Key, Counters>,
}

impl Sink for TopSink {
    fn raw(&mut self, row: &FlowRow) {
        self.map
            .entry(self.dim.key(row))
            .or_default()
            .add(&Counters::of(row));
    }
    fn rollup(&mut self, _part: u8, _bucket: i64, key: &Key, c: &Counters, other: bool) {
        if !other {
            self.map.entry(*key).or_default().add(c);
        }
    }
    fn merge(&mut self, mut other: Self) {
        if other.map.len() > self.map.len() {
            std::mem::swap(&mut self.map, &mut other.map);
        }
        for (k, c) in other.map {
            self.map.entry(k).or_default().add(&c);
        }
    }
}

/// Keys ranked by `metric`, largest first, ties by key value.
fn rank(dim: Dim, metric: Metric, map: FastMap<Key, Counters>) -> Vec<(DimValue, Counters)> {
    let mut v: Vec<(DimValue, Counters)> =
        map.into_iter().map(|(k, c)| (dim.value(&k), c)).collect();
    v.sort_unstable_by(|a, b| {
        b.1.metric(metric)
            .cmp(&a.1.metric(metric))
            .then(a.0.cmp(&b.0))
    });
    v
}

// ---- totals ----

#[derive(Default)]
struct TotalSink(Counters);

impl Sink for TotalSink {
    fn raw(&mut self, row: &FlowRow) {
        self.0.add(&Counters::of(row));
    }
    fn rollup(&mut self, part: u8, _bucket: i64, _key: &Key, c: &Counters, _other: bool) {
        if part == TOTAL_PART {
            self.0.add(c);
        }
    }
    fn merge(&mut self, other: Self) {
        self.0.add(&other.0);
    }
}

// ---- series ----

#[derive(Clone, Copy)]
struct Buckets {
    first: i64,
    width: i64,
    count: usize,
}

impl Buckets {
    fn index(&self, t: i64) -> Option<usize> {
        let i = t.checked_sub(self.first)?.div_euclid(self.width);
        usize::try_from(i).ok().filter(|i| *i < self.count)
    }
}

/// First pass: totals per bucket and per key (to choose the stacked keys).
struct SeriesSink {
    b: Buckets,
    metric: Metric,
    dim: Option<Dim>,
    totals: Vec<u64>,
    per_key: FastMap<Key, u64>,
}

impl Sink for SeriesSink {
    fn raw(&mut self, row: &FlowRow) {
        let v = Counters::of(row).metric(self.metric);
        let t = i64::try_from(row.flow.start_ms).unwrap_or(i64::MAX);
        if let Some(slot) = self.b.index(t).and_then(|i| self.totals.get_mut(i)) {
            *slot = slot.saturating_add(v);
        }
        if let Some(d) = self.dim {
            let e = self.per_key.entry(d.key(row)).or_default();
            *e = e.saturating_add(v);
        }
    }
    fn rollup(&mut self, part: u8, bucket: i64, key: &Key, c: &Counters, other: bool) {
        let v = c.metric(self.metric);
        if part == TOTAL_PART {
            if let Some(slot) = self.b.index(bucket).and_then(|i| self.totals.get_mut(i)) {
                *slot = slot.saturating_add(v);
            }
        } else if !other {
            let e = self.per_key.entry(*key).or_default();
            *e = e.saturating_add(v);
        }
    }
    fn merge(&mut self, other: Self) {
        for (a, b) in self.totals.iter_mut().zip(other.totals) {
            *a = a.saturating_add(b);
        }
        for (k, v) in other.per_key {
            let e = self.per_key.entry(k).or_default();
            *e = e.saturating_add(v);
        }
    }
}

/// Second pass: per bucket values of the chosen keys.
struct StackSink {
    b: Buckets,
    metric: Metric,
    dim: Dim,
    keys: Arc<FastMap<Key, usize>>,
    values: Vec<Vec<u64>>,
}

impl StackSink {
    fn add(&mut self, key: &Key, t: i64, v: u64) {
        if let (Some(k), Some(i)) = (self.keys.get(key), self.b.index(t)) {
            if let Some(slot) = self.values.get_mut(*k).and_then(|s| s.get_mut(i)) {
                *slot = slot.saturating_add(v);
            }
        }
    }
}

impl Sink for StackSink {
    fn raw(&mut self, row: &FlowRow) {
        let t = i64::try_from(row.flow.start_ms).unwrap_or(i64::MAX);
        self.add(&self.dim.key(row), t, Counters::of(row).metric(self.metric));
    }
    fn rollup(&mut self, _part: u8, bucket: i64, key: &Key, c: &Counters, other: bool) {
        if !other {
            self.add(key, bucket, c.metric(self.metric));
        }
    }
    fn merge(&mut self, other: Self) {
        for (a, b) in self.values.iter_mut().zip(other.values) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.saturating_add(y);
            }
        }
    }
}

// ---- search ----

struct SearchSink {
    after: Option<RowKey>,
    need: usize,
    rows: Vec<(RowKey, FlowRow)>,
}

impl SearchSink {
    fn trim(&mut self) {
        self.rows.sort_unstable_by_key(|a| a.0);
        self.rows.truncate(self.need);
    }
}

impl Sink for SearchSink {
    fn raw(&mut self, row: &FlowRow) {
        let k = row_key(row);
        if self.after.is_some_and(|a| k < a) {
            return;
        }
        self.rows.push((k, *row));
        if self.rows.len() >= self.need.saturating_mul(2).saturating_add(1024) {
            self.trim();
        }
    }
    fn rollup(&mut self, _part: u8, _bucket: i64, _key: &Key, _c: &Counters, _other: bool) {}
    fn merge(&mut self, other: Self) {
        self.rows.extend(other.rows);
        if self.rows.len() >= self.need.saturating_mul(2).saturating_add(1024) {
            self.trim();
        }
    }
}

fn check_window(start_ms: i64, end_ms: i64) -> Result<()> {
    if start_ms > end_ms {
        return Err(FlowStoreError::BadQuery(
            "the window starts after it ends: swap start and end".into(),
        ));
    }
    Ok(())
}

impl FlowStore {
    /// The top `n` keys of a dimension by bytes, packets or flows.
    pub async fn top_n(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &TopQuery,
    ) -> Result<Answer<Vec<TopEntry>>> {
        if !(1..=MAX_TOP_N).contains(&q.n) {
            return Err(FlowStoreError::BadQuery(format!(
                "n must be between 1 and {MAX_TOP_N}"
            )));
        }
        check_window(q.start_ms, q.end_ms)?;
        retry_missing!(self.top_n_once(tenant, key, q).await)
    }

    async fn top_n_once(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &TopQuery,
    ) -> Result<Answer<Vec<TopEntry>>> {
        let rollups = q.filter.is_none();
        let segs = self.segments(tenant, q.start_ms, q.end_ms, rollups).await?;
        let p = plan(
            &segs,
            tenant,
            q.start_ms,
            q.end_ms,
            Allow::rollups(rollups),
            &[q.dim.index() as u8],
        );
        let dim = q.dim;
        let s = self
            .scan(
                tenant,
                key,
                &p.items,
                q.filter.clone(),
                Arc::new(move || TopSink {
                    dim,
                    map: FastMap::default(),
                }),
            )
            .await?;
        let data = rank(q.dim, q.metric, s.sink.map)
            .into_iter()
            .take(q.n)
            .map(|(key, c)| TopEntry {
                key,
                bytes: c.bytes,
                packets: c.packets,
                flows: c.flows,
            })
            .collect();
        Ok(Answer {
            data,
            approximate: s.approximate,
            level: p.level.unwrap_or(empty_level(!rollups, true)),
            rows_scanned: s.rows,
        })
    }

    /// Bytes, packets, flows and records over `[start_ms, end_ms)`.
    pub async fn totals(
        &self,
        tenant: TenantId,
        key: &DataKey,
        start_ms: i64,
        end_ms: i64,
        filter: Option<RowFilter>,
    ) -> Result<Answer<Totals>> {
        check_window(start_ms, end_ms)?;
        retry_missing!(
            self.totals_once(tenant, key, start_ms, end_ms, filter.clone())
                .await
        )
    }

    async fn totals_once(
        &self,
        tenant: TenantId,
        key: &DataKey,
        start_ms: i64,
        end_ms: i64,
        filter: Option<RowFilter>,
    ) -> Result<Answer<Totals>> {
        let rollups = filter.is_none();
        let segs = self.segments(tenant, start_ms, end_ms, rollups).await?;
        let p = plan(
            &segs,
            tenant,
            start_ms,
            end_ms,
            Allow::rollups(rollups),
            &[TOTAL_PART],
        );
        let s = self
            .scan(tenant, key, &p.items, filter, Arc::new(TotalSink::default))
            .await?;
        let c = s.sink.0;
        Ok(Answer {
            data: Totals {
                bytes: c.bytes,
                packets: c.packets,
                flows: c.flows,
                records: c.records,
            },
            approximate: false,
            level: p.level.unwrap_or(empty_level(!rollups, true)),
            rows_scanned: s.rows,
        })
    }

    /// A time series, total or stacked by the top keys of a dimension.
    pub async fn series(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &SeriesQuery,
    ) -> Result<Answer<Series>> {
        check_window(q.start_ms, q.end_ms)?;
        if q.bucket_ms < 1 {
            return Err(FlowStoreError::BadQuery(
                "bucket_ms must be positive".into(),
            ));
        }
        if q.dim.is_some() && !(1..=MAX_SERIES_TOP).contains(&q.top) {
            return Err(FlowStoreError::BadQuery(format!(
                "top must be between 1 and {MAX_SERIES_TOP}"
            )));
        }
        let first = floor_to(q.start_ms, q.bucket_ms);
        let span = q.end_ms.saturating_sub(first);
        let count = if q.end_ms > q.start_ms {
            span / q.bucket_ms + i64::from(span % q.bucket_ms != 0)
        } else {
            0
        };
        if count > MAX_BUCKETS {
            return Err(FlowStoreError::BadQuery(format!(
                "{count} buckets is over {MAX_BUCKETS}: widen the buckets or narrow the window"
            )));
        }
        let b = Buckets {
            first,
            width: q.bucket_ms,
            count: count as usize,
        };
        retry_missing!(self.series_once(tenant, key, q, b).await)
    }

    async fn series_once(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &SeriesQuery,
        b: Buckets,
    ) -> Result<Answer<Series>> {
        let rollups = q.filter.is_none();
        // A rollup answers only if its buckets fit in the series' buckets.
        let allow = Allow {
            day: rollups && q.bucket_ms % DAY_MS == 0,
            hour: rollups && q.bucket_ms % HOUR_MS == 0,
            minute: rollups && q.bucket_ms % MINUTE_MS == 0,
        };
        let allow_hour = allow.hour;
        let segs = self
            .segments(tenant, q.start_ms, q.end_ms, allow.minute)
            .await?;
        let mut parts = vec![TOTAL_PART];
        if let Some(d) = q.dim {
            parts.push(d.index() as u8);
        }
        let p = plan(&segs, tenant, q.start_ms, q.end_ms, allow, &parts);
        let (metric, dim) = (q.metric, q.dim);
        let s = self
            .scan(
                tenant,
                key,
                &p.items,
                q.filter.clone(),
                Arc::new(move || SeriesSink {
                    b,
                    metric,
                    dim,
                    totals: vec![0; b.count],
                    per_key: FastMap::default(),
                }),
            )
            .await?;
        let bucket_starts: Vec<i64> = (0..b.count as i64)
            .map(|i| b.first.saturating_add(i.saturating_mul(b.width)))
            .collect();
        let mut rows_scanned = s.rows;
        let SeriesSink {
            totals, per_key, ..
        } = s.sink;
        let Some(d) = q.dim else {
            return Ok(Answer {
                data: Series {
                    bucket_starts,
                    series: vec![(SeriesLabel::Total, totals)],
                },
                approximate: false,
                level: p.level.unwrap_or(empty_level(!rollups, allow_hour)),
                rows_scanned,
            });
        };
        // The stacked keys, largest first over the whole window.
        let mut ranked: Vec<(Key, DimValue, u64)> = per_key
            .into_iter()
            .map(|(k, v)| (k, d.value(&k), v))
            .collect();
        ranked.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
        ranked.truncate(q.top);
        let keys: Arc<FastMap<Key, usize>> =
            Arc::new(ranked.iter().enumerate().map(|(i, r)| (r.0, i)).collect());
        let dim_part = d.index() as u8;
        let items: Vec<Item> = p
            .items
            .iter()
            .filter(|i| i.part.is_none_or(|c| c == dim_part))
            .cloned()
            .collect();
        let n = ranked.len();
        let stack = if n == 0 {
            vec![]
        } else {
            let s2 = self
                .scan(
                    tenant,
                    key,
                    &items,
                    q.filter.clone(),
                    Arc::new(move || StackSink {
                        b,
                        metric,
                        dim: d,
                        keys: keys.clone(),
                        values: vec![vec![0; b.count]; n],
                    }),
                )
                .await?;
            rows_scanned += s2.rows;
            s2.sink.values
        };
        let mut other = totals;
        for vals in &stack {
            for (o, v) in other.iter_mut().zip(vals) {
                *o = o.saturating_sub(*v);
            }
        }
        let mut series: Vec<(SeriesLabel, Vec<u64>)> = ranked
            .iter()
            .zip(stack)
            .map(|(r, vals)| (SeriesLabel::Key(r.1), vals))
            .collect();
        series.push((SeriesLabel::Other, other));
        Ok(Answer {
            data: Series {
                bucket_starts,
                series,
            },
            approximate: s.approximate,
            level: p.level.unwrap_or(empty_level(!rollups, allow_hour)),
            rows_scanned,
        })
    }

    /// Flows in `[start_ms, end_ms)` matching the filter, in the order of
    /// their start (then of every other field), a page at a time.
    pub async fn search(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &SearchQuery,
    ) -> Result<Answer<Page>> {
        if !(1..=MAX_SEARCH_LIMIT).contains(&q.limit) {
            return Err(FlowStoreError::BadQuery(format!(
                "limit must be between 1 and {MAX_SEARCH_LIMIT}"
            )));
        }
        check_window(q.start_ms, q.end_ms)?;
        let after = q.cursor.as_ref().map(|c| c.open(key, tenant)).transpose()?;
        retry_missing!(self.search_once(tenant, key, q, after).await)
    }

    async fn search_once(
        &self,
        tenant: TenantId,
        key: &DataKey,
        q: &SearchQuery,
        after: Option<(RowKey, u32)>,
    ) -> Result<Answer<Page>> {
        let mut start = q.start_ms;
        if let Some((k, _)) = &after {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            start = start.max(i64::try_from(u64::from_be_bytes(b)).unwrap_or(i64::MAX));
        }
        let (after_key, mut skip) = match after {
            Some((k, n)) => (Some(k), n as usize),
            None => (None, 0),
        };
        let need = q.limit.saturating_add(skip);
        let mut page: Vec<(RowKey, FlowRow)> = Vec::with_capacity(q.limit);
        let mut rows_scanned = 0;
        let mut full = false;
        let all = if start < q.end_ms {
            self.segments(tenant, start, q.end_ms, false).await?
        } else {
            Segs::default()
        };
        for (hour, segs) in &all.hours {
            let one = Segs {
                hours: [(
                    *hour,
                    HourSegs {
                        raw: segs.raw.clone(),
                        ..Default::default()
                    },
                )]
                .into(),
                days: BTreeMap::new(),
            };
            let p = plan(&one, tenant, start, q.end_ms, Allow::rollups(false), &[]);
            let s = self
                .scan(
                    tenant,
                    key,
                    &p.items,
                    q.filter.clone(),
                    Arc::new(move || SearchSink {
                        after: after_key,
                        need,
                        rows: Vec::new(),
                    }),
                )
                .await?;
            rows_scanned += s.rows;
            let mut sink = s.sink;
            sink.trim();
            for (k, r) in sink.rows {
                if skip > 0 && after_key == Some(k) {
                    skip -= 1;
                    continue;
                }
                page.push((k, r));
                if page.len() == q.limit {
                    full = true;
                    break;
                }
            }
            if full {
                break;
            }
        }
        let next = match page.last() {
            Some((last, _)) if full => {
                let equal = page.iter().rev().take_while(|(k, _)| k == last).count();
                let seen = if after_key == Some(*last) {
                    // Rows equal to the old cursor that this page skipped.
                    need.saturating_sub(q.limit) + equal
                } else {
                    equal
                };
                Some(Cursor::make(
                    key,
                    tenant,
                    last,
                    u32::try_from(seen).unwrap_or(u32::MAX),
                ))
            }
            _ => None,
        };
        Ok(Answer {
            data: Page {
                rows: page.into_iter().map(|(_, r)| r).collect(),
                next,
            },
            approximate: false,
            level: Level::Raw,
            rows_scanned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(level: SegmentLevel, hour: i64, start: i64, end: i64, compacted: bool) -> FlowSegment {
        FlowSegment {
            id: uuid::Uuid::new_v4(),
            level,
            partition_hour: hour,
            start_ms: start,
            end_ms: end,
            rows: 1,
            bytes: 1,
            blob_key: "k".into(),
            cut: false,
            compacted,
            created_at: 0,
        }
    }

    #[test]
    fn plans_read_the_coarsest_table_that_answers() {
        let h = HOUR_MS;
        let mut segs = Segs::default();
        let t = TenantId(uuid::Uuid::nil());
        let hours = &mut segs.hours;
        // Hour 10: compacted, with a late 1-minute rollup. Hour 11: open.
        hours.insert(
            10,
            HourSegs {
                raw: vec![seg(SegmentLevel::Raw, 10, 10 * h, 11 * h, true)],
                m1: vec![
                    seg(SegmentLevel::M1, 10, 10 * h, 11 * h, true),
                    seg(SegmentLevel::M1, 10, 10 * h, 10 * h + MINUTE_MS, false),
                ],
                h1: vec![seg(SegmentLevel::H1, 10, 10 * h, 11 * h, true)],
            },
        );
        hours.insert(
            11,
            HourSegs {
                raw: vec![seg(SegmentLevel::Raw, 11, 11 * h, 12 * h, false)],
                m1: vec![seg(SegmentLevel::M1, 11, 11 * h, 12 * h, false)],
                h1: vec![],
            },
        );
        let levels = |p: &Plan| {
            p.items
                .iter()
                .map(|i| (i.seg.level, i.lo, i.hi))
                .collect::<Vec<_>>()
        };
        // Whole hour 10: h1 plus the late m1, nothing else.
        let on = Allow::rollups(true);
        let p = plan(&segs, t, 10 * h, 11 * h, on, &[0]);
        assert_eq!(p.level, Some(Level::Hour));
        assert_eq!(
            levels(&p),
            vec![
                (SegmentLevel::H1, 10 * h, 11 * h),
                (SegmentLevel::M1, 10 * h, 11 * h)
            ]
        );
        // Hour 11 is open: whole minutes from m1, the fraction from raw.
        let p = plan(&segs, t, 11 * h, 11 * h + 90_500, on, &[0]);
        assert_eq!(p.level, Some(Level::Raw));
        assert_eq!(
            levels(&p),
            vec![
                (SegmentLevel::M1, 11 * h, 11 * h + 60_000),
                (SegmentLevel::Raw, 11 * h + 60_000, 11 * h + 90_500)
            ]
        );
        // A filter reads raw only.
        let p = plan(&segs, t, 10 * h, 12 * h, Allow::rollups(false), &[]);
        assert_eq!(
            levels(&p),
            vec![
                (SegmentLevel::Raw, 10 * h, 11 * h),
                (SegmentLevel::Raw, 11 * h, 12 * h)
            ]
        );
        // Part of a compacted hour: minutes from its m1 files (both).
        let p = plan(&segs, t, 10 * h + 120_000, 11 * h, on, &[0]);
        assert_eq!(p.level, Some(Level::Minute));
        assert_eq!(p.items.len(), 1, "the late m1 covers only the first minute");
    }

    #[test]
    fn a_day_rollup_answers_only_while_it_matches_its_hours() {
        let (h, d) = (HOUR_MS, DAY_MS);
        let t = TenantId(uuid::Uuid::from_u128(5));
        let mut segs = Segs::default();
        for hour in 24..48 {
            segs.hours.insert(
                hour,
                HourSegs {
                    h1: vec![seg(SegmentLevel::H1, hour, hour * h, (hour + 1) * h, true)],
                    ..Default::default()
                },
            );
        }
        // A late, uncompacted 1-minute rollup in hour 30.
        if let Some(x) = segs.hours.get_mut(&30) {
            x.m1.push(seg(SegmentLevel::M1, 30, 30 * h, 30 * h + 60_000, false));
        }
        let h1: Vec<FlowSegment> = segs.hours.values().flat_map(|x| x.h1.clone()).collect();
        let mut current = seg(SegmentLevel::D1, 24, d, 2 * d, true);
        current.id = crate::day_rollup_id(t, 1, &h1);
        segs.days.insert(1, vec![current]);
        let on = Allow::rollups(true);
        let p = plan(&segs, t, d, 2 * d, on, &[0]);
        assert_eq!(p.level, Some(Level::Day));
        let levels: Vec<_> = p.items.iter().map(|i| i.seg.level).collect();
        assert_eq!(levels, vec![SegmentLevel::D1, SegmentLevel::M1]);
        // Not the whole day: hours answer.
        let p = plan(&segs, t, d, 2 * d - h, on, &[0]);
        assert_eq!(p.level, Some(Level::Hour));
        // Another tenant's id, or hours compacted again since: stale.
        let p = plan(
            &segs,
            TenantId(uuid::Uuid::from_u128(6)),
            d,
            2 * d,
            on,
            &[0],
        );
        assert_eq!(p.level, Some(Level::Hour));
        if let Some(x) = segs.hours.get_mut(&40) {
            x.h1 = vec![seg(SegmentLevel::H1, 40, 40 * h, 41 * h, true)];
        }
        let p = plan(&segs, t, d, 2 * d, on, &[0]);
        assert_eq!(p.level, Some(Level::Hour));
        assert_eq!(p.items.len(), 25, "24 hour rollups and the late minute");
        // Series whose buckets are not whole days never read it.
        let p = plan(&segs, t, d, 2 * d, Allow { day: false, ..on }, &[0]);
        assert_eq!(p.level, Some(Level::Hour));
    }

    #[test]
    fn buckets_align_to_the_epoch() {
        let b = Buckets {
            first: 600_000,
            width: 300_000,
            count: 3,
        };
        assert_eq!(b.index(600_000), Some(0));
        assert_eq!(b.index(899_999), Some(0));
        assert_eq!(b.index(900_000), Some(1));
        assert_eq!(b.index(1_499_999), Some(2));
        assert_eq!(b.index(1_500_000), None);
        assert_eq!(b.index(599_999), None);
        assert_eq!(floor_to(-1, 60), -60);
        assert_eq!(ceil_to(61, 60), 120);
        assert_eq!(ceil_to(120, 60), 120);
    }
}
