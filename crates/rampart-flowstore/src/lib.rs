//! The portal's per-tenant flow store (issue 4 §4–5).
//!
//! Flows arrive from the ingest spool as [`FlowRow`]s and are written as
//! encrypted Apache Parquet segments, one hour partition each, under
//! `flows/<tenant>/<raw|m1|h1|d1>/<YYYYMMDDHH>/<id>.seg` in the blob store,
//! with an index row per segment in the metadata store. Each append also
//! writes the 1-minute rollup of its rows; [`FlowStore::compact`] merges the
//! small files of the open hour, and once an hour closes merges its raw
//! segments into one (or a few, for huge hours), rebuilds its 1-minute
//! rollup from them and writes its 1-hour rollup; once a day closes it
//! merges the day's 1-hour rollups into a 1-day rollup. Files per hour stay
//! bounded, and a month is 30 day files.
//!
//! Queries read the coarsest table that can answer: 1-day rollups for whole
//! compacted days, 1-hour rollups for whole compacted hours, 1-minute
//! rollups for the rest of whole minutes, raw rows for minute fractions,
//! filtered queries and search. Every answer says which, and whether a
//! rollup that had been cut to its top keys was used
//! ([`Answer::approximate`]). Flows count in the bucket of their start.
//!
//! Crash safety: blobs are written first (deterministic keys, so a retry
//! overwrites rather than duplicates), then one store transaction records
//! the index rows and marks the batches processed; compaction swaps index
//! rows in one transaction and deletes the old blobs only after it.
//!
//! Tenancy: every call takes the tenant first, lists only that tenant's
//! index rows and decrypts with the key the caller passes; the tenant id and
//! the blob key are bound into each file's AEAD, so a file moved to another
//! tenant or path does not open, and decrypted data is cached under a
//! fingerprint of the key that opened it.
//!
//! Measured with `examples/measure.rs` (generated mix, 2-core machine) at
//! 100M flows over 30 days: raw segments 12.2 bytes per flow, all rollups
//! together about 10.6 more; a 30-day top-N answers in about 0.1 s cold.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cache;
mod crypt;
mod cursor;
pub mod geo;
mod model;
mod query;
mod rollup;
mod segment;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rampart_store::blob::BlobStore;
use rampart_store::{
    BatchState, DeviceId, FlowSegment, SegmentCommit, SegmentLevel, Store, StoreError, TenantId,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use cache::{Cache, CacheKey, Cached, Form};
pub use crypt::DataKey;
pub use cursor::Cursor;
pub use model::*;
use rollup::RollupBuilder;
pub use segment::{RawFormat, RawSort};

pub const HOUR_MS: i64 = 3_600_000;
pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;
/// Largest `n` of a top-N query.
pub const MAX_TOP_N: usize = 10_000;
/// Largest page of a search.
pub const MAX_SEARCH_LIMIT: usize = 10_000;
/// Most buckets a series may have.
pub const MAX_BUCKETS: i64 = 10_000;
/// Most keys a series may stack.
pub const MAX_SERIES_TOP: usize = 1_000;
/// Most batches one append may mark processed.
pub const MAX_APPEND_BATCHES: usize = 100_000;
/// Flow starts at or after this (year 10000) are not stored: no calendar
/// formats them and they cannot be real.
const MAX_START_MS: u64 = 253_402_300_800_000;
/// Sanity bound on the rows of a file read back.
const MAX_FILE_ROWS: u64 = 1 << 28;

#[derive(Debug, thiserror::Error)]
pub enum FlowStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid query: {0}")]
    BadQuery(String),
    #[error("invalid search cursor: start the search again without it")]
    BadCursor,
    #[error("append of {rows} rows and {batches} batches is over the limit ({max_rows} rows, {max_batches} batches): split it")]
    TooLarge {
        rows: usize,
        batches: usize,
        max_rows: usize,
        max_batches: usize,
    },
    #[error("batch {batch} of device {device} is not recorded for this tenant: record the batch before appending its rows")]
    UnknownBatch { device: DeviceId, batch: Uuid },
    #[error(
        "{0} of the batches were already processed and others not: append only unprocessed batches"
    )]
    PartlyProcessed(usize),
    #[error("flow segment {0} cannot be opened with this tenant's data key: the key is wrong or destroyed, or the file was moved or altered")]
    Decrypt(String),
    #[error(
        "flow segment {0} is missing from the blob store: retry, it may have just been compacted"
    )]
    Missing(String),
    #[error("flow segment {key} is unreadable ({detail}): restore it from backup or remove its index row")]
    Corrupt { key: String, detail: String },
    #[error("could not encode a flow segment: {0}")]
    Encode(String),
    #[error("background task failed: {0}; retry")]
    Task(String),
}

impl FlowStoreError {
    /// The caller asked for something invalid (answer 400), rather than the
    /// store failing.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            FlowStoreError::BadQuery(_) | FlowStoreError::BadCursor
        )
    }
}

pub type Result<T, E = FlowStoreError> = std::result::Result<T, E>;

/// Tuning of the flow store. The defaults suit one portal on a small
/// machine; see `examples/measure.rs` for what they cost.
#[derive(Clone, Debug)]
pub struct FlowStoreConfig {
    /// Bound of the cache of decrypted files and decoded rollups.
    pub cache_bytes: usize,
    /// Keys kept per (minute, dimension) in 1-minute rollups.
    pub m1_top_k: usize,
    /// Keys kept per (hour, dimension) in 1-hour rollups.
    pub h1_top_k: usize,
    /// Keys kept per (day, dimension) in 1-day rollups: more than an hour
    /// keeps, since a day sees more distinct keys and a month of day files
    /// is still read in a blink.
    pub d1_top_k: usize,
    /// Compaction writes raw segments of at most this many rows (an hour
    /// with more gets several); it holds one such segment decoded in memory.
    pub max_segment_rows: usize,
    /// Most rows one append takes.
    pub max_append_rows: usize,
    /// An hour is compacted once it ended this long ago, so late batches of
    /// the agents' last upload round are in.
    pub compact_grace_ms: i64,
    /// Hours compacted per call, oldest first, so one call stays short.
    pub compact_max_hours: usize,
    /// An hour still open whose appends left more than this many 1-minute
    /// rollups (or raw segments under a quarter of `max_segment_rows`)
    /// has them merged by the next compaction call.
    pub open_merge_files: usize,
    /// How compaction writes raw segments, which are kept until retention.
    pub raw_format: RawFormat,
    /// zstd level of the raw segments an append writes: they live only
    /// until their hour is compacted, so speed matters more than size.
    pub append_zstd_level: i32,
    pub rollup_zstd_level: i32,
}

impl Default for FlowStoreConfig {
    fn default() -> Self {
        FlowStoreConfig {
            cache_bytes: 256 << 20,
            m1_top_k: 1_000,
            h1_top_k: 10_000,
            d1_top_k: 50_000,
            max_segment_rows: 1_000_000,
            max_append_rows: 2_000_000,
            compact_grace_ms: 5 * MINUTE_MS,
            compact_max_hours: 48,
            open_merge_files: 8,
            raw_format: RawFormat {
                sort: RawSort::ExporterSrcDstStart,
                zstd_level: 9,
            },
            append_zstd_level: 3,
            rollup_zstd_level: 3,
        }
    }
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Rows stored.
    pub rows: u64,
    /// Rows refused (a start time past year 9999).
    pub skipped: u64,
    /// Segment files written (raw and 1-minute).
    pub segments: usize,
    /// Bytes written to the blob store.
    pub bytes: u64,
    /// Every batch had been processed before: nothing was written.
    pub duplicate: bool,
}

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub hours: usize,
    pub segments_in: usize,
    pub segments_out: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Days whose 1-day rollup was written or rewritten.
    pub days: usize,
    /// Open hours whose small files were merged.
    pub open_merges: usize,
    /// Hours another compactor got to first.
    pub raced: usize,
}

/// What one retention pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub segments: usize,
    pub bytes: u64,
}

/// The flow store of all tenants of one portal.
pub struct FlowStore {
    meta: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    cfg: FlowStoreConfig,
    cache: Arc<Cache>,
    compacting: tokio::sync::Mutex<()>,
}

/// The id a day's rollup has when it merged exactly these hour rollups.
pub(crate) fn day_rollup_id(tenant: TenantId, day: i64, h1: &[FlowSegment]) -> Uuid {
    let mut parts: Vec<[u8; 32]> = h1
        .iter()
        .map(|s| {
            let mut p = [0u8; 32];
            p[..16].copy_from_slice(s.id.as_bytes());
            p
        })
        .collect();
    parts.sort_unstable();
    derived_id(tenant, SegmentLevel::D1, day.saturating_mul(24), 0, &parts)
}

/// `YYYYMMDDHH` of an hour since the epoch, for blob keys people can read.
fn hour_label(hour: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(hour.saturating_mul(3600))
        .map(|t| {
            format!(
                "{:04}{:02}{:02}{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            )
        })
        .unwrap_or_else(|_| format!("h{hour}"))
}

pub(crate) fn blob_key(tenant: TenantId, level: SegmentLevel, hour: i64, id: Uuid) -> String {
    format!(
        "flows/{tenant}/{}/{}/{}.seg",
        level.as_str(),
        hour_label(hour),
        id.simple()
    )
}

/// A segment id derived from what the segment is made of (and which of
/// several outputs it is), so that redoing the same work after a crash
/// writes the same blob keys.
fn derived_id(
    tenant: TenantId,
    level: SegmentLevel,
    hour: i64,
    output: u64,
    parts: &[[u8; 32]],
) -> Uuid {
    let mut h = Sha256::new()
        .chain_update(b"rampart-flowstore segment id v1\0")
        .chain_update(tenant.0.as_bytes())
        .chain_update(level.as_str())
        .chain_update(hour.to_be_bytes())
        .chain_update(output.to_be_bytes());
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FlowStoreError::Task(e.to_string()))?
}

/// A file ready to be put, and its index row.
struct Written {
    seg: FlowSegment,
    data: Vec<u8>,
}

impl FlowStore {
    pub fn new(meta: Arc<dyn Store>, blobs: Arc<dyn BlobStore>, cfg: FlowStoreConfig) -> Self {
        FlowStore {
            meta,
            blobs,
            cache: Arc::new(Cache::new(cfg.cache_bytes)),
            cfg,
            compacting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &FlowStoreConfig {
        &self.cfg
    }

    /// Re-seals one segment's file under `key`'s current version when it
    /// is sealed under another, then records the version in the index (the
    /// key rotation job's step; the ring must still hold the old version).
    /// Returns whether the file was rewritten. A segment removed meanwhile
    /// (compaction, retention) is skipped, and a file rewritten for it is
    /// removed again. Holds the compaction lock, so it never interleaves
    /// with this process's compaction of the same hour.
    pub async fn rekey(&self, tenant: TenantId, key: &DataKey, seg: &FlowSegment) -> Result<bool> {
        let _one = self.compacting.lock().await;
        let Some(sealed) = self.blobs.get(&seg.blob_key).await? else {
            return Ok(false);
        };
        let current = key.version();
        let rewrite = crypt::sealed_version(&sealed) != Some(current);
        if rewrite {
            let (k, bk) = (key.clone(), seg.blob_key.clone());
            let data = blocking(move || {
                let plain = crypt::open(&k, tenant, &bk, &sealed)?;
                crypt::seal(&k, tenant, &bk, &plain)
            })
            .await?;
            self.blobs.put(&seg.blob_key, &data).await?;
        }
        if !self
            .meta
            .set_segment_key_version(tenant, seg.id, current)
            .await?
        {
            if rewrite {
                self.blobs.delete(&seg.blob_key).await?;
            }
            return Ok(false);
        }
        Ok(rewrite)
    }

    /// Drops everything cached that was decrypted with `key` (call it when
    /// a tenant's data key is destroyed or replaced).
    pub fn forget_key(&self, key: &DataKey) {
        self.cache.evict_key(&key.fingerprint());
    }

    /// Writes the rows as segments (split by hour partition) plus their
    /// 1-minute rollups, then in one store transaction records the segment
    /// index rows and marks `batches` processed: a crash anywhere leaves
    /// the batches unprocessed (processed again later, to the same blob
    /// keys) or fully done. Appending batches that were all processed
    /// already writes nothing and says so.
    ///
    /// With no batches the rows are written under fresh ids: nothing makes
    /// such an append idempotent.
    pub async fn append(
        &self,
        tenant: TenantId,
        key: &DataKey,
        batches: &[(DeviceId, Uuid)],
        rows: Vec<FlowRow>,
    ) -> Result<AppendStats> {
        if rows.len() > self.cfg.max_append_rows || batches.len() > MAX_APPEND_BATCHES {
            return Err(FlowStoreError::TooLarge {
                rows: rows.len(),
                batches: batches.len(),
                max_rows: self.cfg.max_append_rows,
                max_batches: MAX_APPEND_BATCHES,
            });
        }
        if !batches.is_empty() {
            let states = self.meta.batch_states(tenant, batches).await?;
            let mut processed = 0;
            for ((device, batch), st) in batches.iter().zip(&states) {
                match st {
                    BatchState::Unknown => {
                        return Err(FlowStoreError::UnknownBatch {
                            device: *device,
                            batch: *batch,
                        })
                    }
                    BatchState::Processed => processed += 1,
                    BatchState::Pending => {}
                }
            }
            if processed == batches.len() {
                return Ok(AppendStats {
                    duplicate: true,
                    ..Default::default()
                });
            }
            if processed > 0 {
                return Err(FlowStoreError::PartlyProcessed(processed));
            }
        }
        let mut parts: Vec<[u8; 32]> = batches
            .iter()
            .map(|(d, b)| {
                let mut p = [0u8; 32];
                p[..16].copy_from_slice(d.0.as_bytes());
                p[16..].copy_from_slice(b.as_bytes());
                p
            })
            .collect();
        parts.sort_unstable();
        let fresh = parts.is_empty();
        let cfg = self.cfg.clone();
        let k = key.clone();
        let (written, stats) = blocking(move || {
            let mut stats = AppendStats::default();
            let mut by_hour: BTreeMap<i64, Vec<FlowRow>> = BTreeMap::new();
            for mut r in rows {
                if r.flow.start_ms >= MAX_START_MS {
                    stats.skipped += 1;
                    continue;
                }
                r.flow.end_ms = r.flow.end_ms.max(r.flow.start_ms);
                r.src_country = r.src_country.normalized();
                r.dst_country = r.dst_country.normalized();
                let hour = (r.flow.start_ms / HOUR_MS as u64) as i64;
                by_hour.entry(hour).or_default().push(r);
            }
            let now = now_secs();
            let mut out = Vec::new();
            for (hour, mut rows) in by_hour {
                let id = |level| {
                    if fresh {
                        Uuid::new_v4()
                    } else {
                        derived_id(tenant, level, hour, 0, &parts)
                    }
                };
                stats.rows += rows.len() as u64;
                segment::sort_rows(&mut rows, cfg.raw_format.sort);
                let fast = FlowStoreConfig {
                    raw_format: RawFormat {
                        zstd_level: cfg.append_zstd_level,
                        ..cfg.raw_format
                    },
                    ..cfg.clone()
                };
                let (raw_id, m1_id) = (id(SegmentLevel::Raw), id(SegmentLevel::M1));
                // The rollup and the raw file are independent: one core each.
                let (raw, m1) = std::thread::scope(|sc| {
                    let m1 = sc.spawn(|| {
                        let mut b = RollupBuilder::new(MINUTE_MS);
                        for r in &rows {
                            b.add(r);
                        }
                        seal_rollup(
                            tenant,
                            &k,
                            hour,
                            m1_id,
                            SegmentLevel::M1,
                            b,
                            &cfg,
                            now,
                            false,
                        )
                    });
                    let raw = seal_raw(tenant, &k, hour, raw_id, &rows, &fast, now, false);
                    (raw, m1.join())
                });
                out.push(raw?);
                out.push(m1.map_err(|_| FlowStoreError::Task("rollup thread panicked".into()))??);
            }
            Ok((out, stats))
        })
        .await?;
        let mut stats = stats;
        for w in &written {
            self.blobs.put(&w.seg.blob_key, &w.data).await?;
            stats.bytes += w.data.len() as u64;
        }
        stats.segments = written.len();
        let segs: Vec<FlowSegment> = written.into_iter().map(|w| w.seg).collect();
        self.meta
            .commit_flow_segments(
                tenant,
                &SegmentCommit {
                    insert: &segs,
                    processed: batches,
                    now: now_secs(),
                    ..Default::default()
                },
            )
            .await?;
        tracing::debug!(tenant = %tenant, rows = stats.rows, segments = stats.segments, bytes = stats.bytes, "flows appended");
        Ok(stats)
    }

    /// Compacts closed hours (ended at least `compact_grace_ms` before
    /// `now_ms`) that have uncompacted segments: their raw segments are
    /// merged, their 1-minute rollup rebuilt from the merged rows and their
    /// 1-hour rollup written, and the index rows are swapped in one
    /// transaction. Hours whose data arrived after their compaction are
    /// compacted again, with the late rows. Hours still open get their many
    /// small files merged (see [`FlowStoreConfig::open_merge_files`]). Old
    /// blobs are deleted after the swap; a query that had listed them
    /// retries.
    pub async fn compact(
        &self,
        tenant: TenantId,
        key: &DataKey,
        now_ms: i64,
    ) -> Result<CompactStats> {
        let _guard = self.compacting.lock().await;
        let closed = now_ms
            .saturating_sub(self.cfg.compact_grace_ms)
            .div_euclid(HOUR_MS)
            .saturating_mul(HOUR_MS);
        let mut hours: BTreeMap<i64, [Vec<FlowSegment>; 3]> = BTreeMap::new();
        let hourly = [SegmentLevel::Raw, SegmentLevel::M1, SegmentLevel::H1];
        for (i, level) in hourly.into_iter().enumerate() {
            for s in self
                .meta
                .list_flow_segments(tenant, level, i64::MIN, closed)
                .await?
            {
                // Only whole hours before `closed`.
                if s.partition_hour.saturating_add(1).saturating_mul(HOUR_MS) <= closed {
                    if let Some(slot) = hours.entry(s.partition_hour).or_default().get_mut(i) {
                        slot.push(s);
                    }
                }
            }
        }
        let mut stats = CompactStats::default();
        for (hour, [raw, m1, h1]) in hours {
            if stats.hours >= self.cfg.compact_max_hours {
                break;
            }
            let needed = raw.iter().any(|s| !s.compacted)
                || m1.iter().any(|s| !s.compacted)
                || (h1.is_empty() && !raw.is_empty())
                || h1.len() > 1;
            if !needed || raw.is_empty() {
                continue;
            }
            match self
                .compact_hour(tenant, key, hour, raw, m1, h1, &mut stats)
                .await
            {
                Ok(()) => stats.hours += 1,
                Err(FlowStoreError::Store(StoreError::Raced(what))) => {
                    tracing::info!(tenant = %tenant, hour, what, "flow compaction raced another compactor; skipped");
                    stats.raced += 1;
                }
                Err(e) => return Err(e),
            }
        }
        // Open hours: merge the small files appends leave, so queries of
        // the current hour do not open one file per append.
        let mut open: BTreeMap<i64, [Vec<FlowSegment>; 2]> = BTreeMap::new();
        for (i, level) in [SegmentLevel::Raw, SegmentLevel::M1]
            .into_iter()
            .enumerate()
        {
            for s in self
                .meta
                .list_flow_segments(tenant, level, closed, i64::MAX)
                .await?
            {
                if s.partition_hour.saturating_mul(HOUR_MS) >= closed && !s.compacted {
                    if let Some(slot) = open.entry(s.partition_hour).or_default().get_mut(i) {
                        slot.push(s);
                    }
                }
            }
        }
        let small = (self.cfg.max_segment_rows / 4) as u64;
        for (hour, [raw, m1]) in open {
            let raw: Vec<FlowSegment> = raw.into_iter().filter(|s| s.rows < small).collect();
            let raw = if raw.len() > self.cfg.open_merge_files {
                raw
            } else {
                Vec::new()
            };
            let m1 = if m1.len() > self.cfg.open_merge_files {
                m1
            } else {
                Vec::new()
            };
            if raw.is_empty() && m1.is_empty() {
                continue;
            }
            match self
                .merge_open_hour(tenant, key, hour, raw, m1, &mut stats)
                .await
            {
                Ok(()) => stats.open_merges += 1,
                Err(FlowStoreError::Store(StoreError::Raced(what))) => {
                    tracing::info!(tenant = %tenant, hour, what, "open-hour merge raced another compactor; skipped");
                    stats.raced += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.compact_days(tenant, key, closed, &mut stats).await?;
        if stats.hours > 0 || stats.open_merges > 0 || stats.days > 0 {
            tracing::debug!(tenant = %tenant, hours = stats.hours, days = stats.days, open_merges = stats.open_merges, segments_in = stats.segments_in, segments_out = stats.segments_out, bytes_in = stats.bytes_in, bytes_out = stats.bytes_out, "flows compacted");
        }
        Ok(stats)
    }

    /// Writes the 1-day rollup of each closed day whose hours are all
    /// compacted, from their 1-hour rollups, and rewrites it when an hour
    /// of the day was compacted again (late rows). A day rollup's id is
    /// derived from the ids of the hour rollups it merged, so a query can
    /// tell a current one from a stale one without any other bookkeeping.
    async fn compact_days(
        &self,
        tenant: TenantId,
        key: &DataKey,
        closed: i64,
        stats: &mut CompactStats,
    ) -> Result<()> {
        let closed_day = closed.div_euclid(DAY_MS).saturating_mul(DAY_MS);
        let day_of = |s: &FlowSegment| s.partition_hour.div_euclid(24);
        // [hour rollups, day rollups, hours not yet compacted]
        let mut days: BTreeMap<i64, (Vec<FlowSegment>, Vec<FlowSegment>, bool)> = BTreeMap::new();
        for level in SegmentLevel::ALL {
            for s in self
                .meta
                .list_flow_segments(tenant, level, i64::MIN, closed_day)
                .await?
            {
                if day_of(&s).saturating_add(1).saturating_mul(DAY_MS) > closed_day {
                    continue;
                }
                let d = days.entry(day_of(&s)).or_default();
                match level {
                    SegmentLevel::H1 => d.0.push(s),
                    SegmentLevel::D1 => d.1.push(s),
                    SegmentLevel::Raw | SegmentLevel::M1 => d.2 |= !s.compacted,
                }
            }
        }
        for (day, (h1, d1, unsettled)) in days {
            if stats.days >= self.cfg.compact_max_hours {
                break;
            }
            if h1.is_empty() || unsettled {
                continue;
            }
            let id = day_rollup_id(tenant, day, &h1);
            if d1.iter().any(|d| d.id == id) {
                // Current; any other day rollup of the day is left over.
                let extra: Vec<&FlowSegment> = d1.iter().filter(|d| d.id != id).collect();
                if !extra.is_empty() {
                    let ids: Vec<Uuid> = extra.iter().map(|d| d.id).collect();
                    self.meta.delete_flow_segments(tenant, &ids).await?;
                    self.drop_blobs(tenant, &extra).await;
                }
                continue;
            }
            let mut b = RollupBuilder::new(DAY_MS);
            for s in &h1 {
                let plain = self.plaintext(tenant, key, s).await?;
                let k = s.blob_key.clone();
                b = blocking(move || {
                    for code in 0..=rollup::TOTAL_PART {
                        let part = rollup::decode_part(plain.clone(), &k, code, MAX_FILE_ROWS)?;
                        part.for_each_in(i64::MIN, i64::MAX, |bucket, key, c, other| {
                            b.add_rollup(code, bucket, key, c, other)
                        });
                    }
                    Ok(b)
                })
                .await?;
            }
            let (cfg, k, now) = (self.cfg.clone(), key.clone(), now_secs());
            let first_hour = day.saturating_mul(24);
            let w = blocking(move || {
                seal_rollup(
                    tenant,
                    &k,
                    first_hour,
                    id,
                    SegmentLevel::D1,
                    b,
                    &cfg,
                    now,
                    true,
                )
            })
            .await?;
            self.blobs.put(&w.seg.blob_key, &w.data).await?;
            let delete: Vec<Uuid> = d1.iter().map(|s| s.id).collect();
            let r = self
                .meta
                .commit_flow_segments(
                    tenant,
                    &SegmentCommit {
                        insert: std::slice::from_ref(&w.seg),
                        delete: &delete,
                        now,
                        ..Default::default()
                    },
                )
                .await;
            match r {
                Ok(()) => {
                    stats.days += 1;
                    stats.segments_in += d1.len();
                    stats.segments_out += 1;
                    stats.bytes_out += w.seg.bytes;
                    let old: Vec<&FlowSegment> = d1.iter().collect();
                    self.drop_blobs(tenant, &old).await;
                }
                Err(StoreError::Raced(what)) => {
                    tracing::info!(tenant = %tenant, day, what, "day rollup raced another compactor; skipped");
                    stats.raced += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Merges small raw segments, and 1-minute rollups, of an hour still
    /// open. The outputs stay uncompacted: the hour's compaction, once it
    /// closes, still rewrites everything and writes its 1-hour rollup.
    async fn merge_open_hour(
        &self,
        tenant: TenantId,
        key: &DataKey,
        hour: i64,
        raw: Vec<FlowSegment>,
        m1: Vec<FlowSegment>,
        stats: &mut CompactStats,
    ) -> Result<()> {
        let now = now_secs();
        let ids = |segs: &[FlowSegment]| {
            let mut p: Vec<[u8; 32]> = segs
                .iter()
                .map(|s| {
                    let mut p = [0u8; 32];
                    p[..16].copy_from_slice(s.id.as_bytes());
                    p
                })
                .collect();
            p.sort_unstable();
            p
        };
        let mut written = Vec::new();
        if !raw.is_empty() {
            let mut rows = Vec::with_capacity(raw.iter().map(|s| s.rows as usize).sum());
            for s in &raw {
                let plain = self.plaintext(tenant, key, s).await?;
                let k = s.blob_key.clone();
                let mut got =
                    blocking(move || segment::decode_raw(plain, &k, MAX_FILE_ROWS)).await?;
                rows.append(&mut got);
            }
            let id = derived_id(tenant, SegmentLevel::Raw, hour, 1, &ids(&raw));
            let cfg = FlowStoreConfig {
                raw_format: RawFormat {
                    zstd_level: self.cfg.append_zstd_level,
                    ..self.cfg.raw_format
                },
                ..self.cfg.clone()
            };
            let k = key.clone();
            written.push(
                blocking(move || {
                    segment::sort_rows(&mut rows, cfg.raw_format.sort);
                    seal_raw(tenant, &k, hour, id, &rows, &cfg, now, false)
                })
                .await?,
            );
        }
        if !m1.is_empty() {
            let mut b = RollupBuilder::new(MINUTE_MS);
            for s in &m1 {
                let plain = self.plaintext(tenant, key, s).await?;
                let k = s.blob_key.clone();
                b = blocking(move || {
                    for code in 0..=rollup::TOTAL_PART {
                        let part = rollup::decode_part(plain.clone(), &k, code, MAX_FILE_ROWS)?;
                        part.for_each_in(i64::MIN, i64::MAX, |bucket, key, c, other| {
                            b.add_rollup(code, bucket, key, c, other)
                        });
                    }
                    Ok(b)
                })
                .await?;
            }
            let id = derived_id(tenant, SegmentLevel::M1, hour, 1, &ids(&m1));
            let cfg = self.cfg.clone();
            let k = key.clone();
            written.push(
                blocking(move || {
                    seal_rollup(tenant, &k, hour, id, SegmentLevel::M1, b, &cfg, now, false)
                })
                .await?,
            );
        }
        let sources: Vec<&FlowSegment> = raw.iter().chain(&m1).collect();
        self.swap(tenant, written, &sources, now, stats).await
    }

    /// Deletes the blobs of segments no index row names any more; a failure
    /// leaves an orphan file, not a wrong answer.
    async fn drop_blobs(&self, tenant: TenantId, segs: &[&FlowSegment]) {
        for s in segs {
            self.cache.evict_blob(&s.blob_key);
            if let Err(e) = self.blobs.delete(&s.blob_key).await {
                tracing::warn!(tenant = %tenant, key = %s.blob_key, error = %e, "could not delete a replaced flow segment");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn compact_hour(
        &self,
        tenant: TenantId,
        key: &DataKey,
        hour: i64,
        mut raw: Vec<FlowSegment>,
        m1: Vec<FlowSegment>,
        h1: Vec<FlowSegment>,
        stats: &mut CompactStats,
    ) -> Result<()> {
        raw.sort_by_key(|s| (s.start_ms, s.id));
        let mut sources: Vec<&FlowSegment> = raw.iter().chain(&m1).chain(&h1).collect();
        sources.sort_by_key(|s| s.id);
        let parts: Vec<[u8; 32]> = sources
            .iter()
            .map(|s| {
                let mut p = [0u8; 32];
                p[..16].copy_from_slice(s.id.as_bytes());
                p
            })
            .collect();
        // Group raw sources into outputs of at most max_segment_rows rows.
        let mut groups: Vec<Vec<&FlowSegment>> = Vec::new();
        let mut rows_in_group = 0u64;
        for s in &raw {
            let start_new = match groups.last() {
                None => true,
                Some(_) => rows_in_group + s.rows > self.cfg.max_segment_rows as u64,
            };
            if start_new {
                groups.push(Vec::new());
                rows_in_group = 0;
            }
            rows_in_group += s.rows;
            if let Some(g) = groups.last_mut() {
                g.push(s);
            }
        }
        let now = now_secs();
        let mut m1b = RollupBuilder::new(MINUTE_MS);
        let mut h1b = RollupBuilder::new(HOUR_MS);
        let mut written = Vec::new();
        for (gi, group) in groups.iter().enumerate() {
            let mut rows = Vec::with_capacity(group.iter().map(|s| s.rows as usize).sum());
            for s in group {
                let plain = self.plaintext(tenant, key, s).await?;
                let k = s.blob_key.clone();
                let mut got =
                    blocking(move || segment::decode_raw(plain, &k, MAX_FILE_ROWS)).await?;
                rows.append(&mut got);
            }
            stats.rows += rows.len() as u64;
            let id = derived_id(tenant, SegmentLevel::Raw, hour, gi as u64, &parts);
            let cfg = self.cfg.clone();
            let k = key.clone();
            let (w, m1b2, h1b2) = blocking(move || {
                segment::sort_rows(&mut rows, cfg.raw_format.sort);
                let (w, builders) = std::thread::scope(|sc| {
                    let b = sc.spawn(|| {
                        for r in &rows {
                            m1b.add(r);
                            h1b.add(r);
                        }
                        (m1b, h1b)
                    });
                    let w = seal_raw(tenant, &k, hour, id, &rows, &cfg, now, true);
                    (w, b.join())
                });
                let (m1b, h1b) =
                    builders.map_err(|_| FlowStoreError::Task("rollup thread panicked".into()))?;
                Ok((w?, m1b, h1b))
            })
            .await?;
            m1b = m1b2;
            h1b = h1b2;
            written.push(w);
        }
        let cfg = self.cfg.clone();
        let k = key.clone();
        let m1_id = derived_id(tenant, SegmentLevel::M1, hour, 0, &parts);
        let h1_id = derived_id(tenant, SegmentLevel::H1, hour, 0, &parts);
        let mut rollups = blocking(move || {
            Ok(vec![
                seal_rollup(
                    tenant,
                    &k,
                    hour,
                    m1_id,
                    SegmentLevel::M1,
                    m1b,
                    &cfg,
                    now,
                    true,
                )?,
                seal_rollup(
                    tenant,
                    &k,
                    hour,
                    h1_id,
                    SegmentLevel::H1,
                    h1b,
                    &cfg,
                    now,
                    true,
                )?,
            ])
        })
        .await?;
        written.append(&mut rollups);
        self.swap(tenant, written, &sources, now, stats).await
    }

    /// Writes the new files, replaces `sources` by them in the index in one
    /// commit, counts both sides and deletes the old blobs.
    async fn swap(
        &self,
        tenant: TenantId,
        written: Vec<Written>,
        sources: &[&FlowSegment],
        now: i64,
        stats: &mut CompactStats,
    ) -> Result<()> {
        for w in &written {
            self.blobs.put(&w.seg.blob_key, &w.data).await?;
        }
        let segs: Vec<FlowSegment> = written.into_iter().map(|w| w.seg).collect();
        let delete: Vec<Uuid> = sources.iter().map(|s| s.id).collect();
        self.meta
            .commit_flow_segments(
                tenant,
                &SegmentCommit {
                    insert: &segs,
                    delete: &delete,
                    now,
                    ..Default::default()
                },
            )
            .await?;
        stats.segments_in += sources.len();
        stats.segments_out += segs.len();
        stats.bytes_in += sources.iter().map(|s| s.bytes).sum::<u64>();
        stats.bytes_out += segs.iter().map(|s| s.bytes).sum::<u64>();
        self.drop_blobs(tenant, sources).await;
        Ok(())
    }

    /// Deletes the segments and rollups that lie entirely before the stored
    /// window (`now_ms - stored_days`), blob first, then index row, so an
    /// interrupted pass leaves at worst an index row without its blob, which
    /// the next pass removes. Granularity is the hour partition: an hour is
    /// removed once its last millisecond is out of the window.
    pub async fn enforce_retention(
        &self,
        tenant: TenantId,
        now_ms: i64,
        stored_days: u32,
    ) -> Result<RetentionStats> {
        let cutoff = now_ms.saturating_sub(i64::from(stored_days).saturating_mul(DAY_MS));
        let mut stats = RetentionStats::default();
        for level in SegmentLevel::ALL {
            let old: Vec<FlowSegment> = self
                .meta
                .list_flow_segments(tenant, level, i64::MIN, cutoff)
                .await?
                .into_iter()
                .filter(|s| s.end_ms <= cutoff)
                .collect();
            for chunk in old.chunks(256) {
                for s in chunk {
                    self.cache.evict_blob(&s.blob_key);
                    self.blobs.delete(&s.blob_key).await?;
                }
                let ids: Vec<Uuid> = chunk.iter().map(|s| s.id).collect();
                self.meta.delete_flow_segments(tenant, &ids).await?;
                stats.segments += chunk.len();
                stats.bytes += chunk.iter().map(|s| s.bytes).sum::<u64>();
            }
        }
        if stats.segments > 0 {
            tracing::info!(tenant = %tenant, segments = stats.segments, bytes = stats.bytes, stored_days, "expired flow segments removed");
        }
        Ok(stats)
    }

    /// The decrypted file of `seg`, from the cache or the blob store, for
    /// compaction, which is about to replace it: it is not cached.
    pub(crate) async fn plaintext(
        &self,
        tenant: TenantId,
        key: &DataKey,
        seg: &FlowSegment,
    ) -> Result<Bytes> {
        let ck = CacheKey {
            key_fp: key.fingerprint(),
            blob_key: seg.blob_key.as_str().into(),
            form: Form::Plain,
        };
        if let Some(Cached::Plain(b)) = self.cache.get(&ck) {
            return Ok(b);
        }
        let sealed = self
            .blobs
            .get(&seg.blob_key)
            .await?
            .ok_or_else(|| FlowStoreError::Missing(seg.blob_key.clone()))?;
        let k = key.clone();
        let bk = seg.blob_key.clone();
        let plain = blocking(move || crypt::open(&k, tenant, &bk, &sealed)).await?;
        Ok(Bytes::from(plain))
    }
}

#[allow(clippy::too_many_arguments)]
fn seal_raw(
    tenant: TenantId,
    key: &DataKey,
    hour: i64,
    id: Uuid,
    rows: &[FlowRow],
    cfg: &FlowStoreConfig,
    now: i64,
    compacted: bool,
) -> Result<Written> {
    let plain = segment::encode_raw(rows, &cfg.raw_format)?;
    let bk = blob_key(tenant, SegmentLevel::Raw, hour, id);
    let data = crypt::seal(key, tenant, &bk, &plain)?;
    let start = rows.iter().map(|r| r.flow.start_ms).min().unwrap_or(0) as i64;
    let end = rows.iter().map(|r| r.flow.start_ms).max().unwrap_or(0) as i64 + 1;
    Ok(Written {
        seg: FlowSegment {
            id,
            level: SegmentLevel::Raw,
            partition_hour: hour,
            start_ms: start,
            end_ms: end,
            rows: rows.len() as u64,
            bytes: data.len() as u64,
            blob_key: bk,
            cut: false,
            compacted,
            created_at: now,
        },
        data,
    })
}

#[allow(clippy::too_many_arguments)]
fn seal_rollup(
    tenant: TenantId,
    key: &DataKey,
    hour: i64,
    id: Uuid,
    level: SegmentLevel,
    b: RollupBuilder,
    cfg: &FlowStoreConfig,
    now: i64,
    compacted: bool,
) -> Result<Written> {
    let k = match level {
        SegmentLevel::M1 | SegmentLevel::Raw => cfg.m1_top_k,
        SegmentLevel::H1 => cfg.h1_top_k,
        SegmentLevel::D1 => cfg.d1_top_k,
    };
    let t = b.finish(k);
    let plain = rollup::encode_rollup(&t, cfg.rollup_zstd_level)?;
    let bk = blob_key(tenant, level, hour, id);
    let data = crypt::seal(key, tenant, &bk, &plain)?;
    Ok(Written {
        seg: FlowSegment {
            id,
            level,
            partition_hour: hour,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            rows: t.rows,
            bytes: data.len() as u64,
            blob_key: bk,
            cut: t.cut,
            compacted,
            created_at: now,
        },
        data,
    })
}
