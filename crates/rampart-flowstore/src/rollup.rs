//! Rollups: bytes, packets, flows and records per time bucket, for each
//! dimension separately and in total, stored as Parquet like the raw rows.
//!
//! A file holds one row group per dimension (and one for the totals), so a
//! query for one dimension decodes only its rows. Each (bucket, dimension)
//! keeps at most `k` keys, taken alternately from its ranking by bytes and
//! its ranking by flows, so a top-N by volume or by count finds its leaders
//! (packets follow bytes closely); the rest is summed into one "other" row.
//! An "other" row is what marks that bucket and dimension as cut, and an
//! answer that reads one is approximate. Totals are never cut.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt64Array, UInt8Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;

use crate::model::{Dim, FlowRow, Key, Metric};
use crate::segment::{column, corrupt, writer_props};
use crate::FlowStoreError;

/// Hash maps keyed by flow data: foldhash is several times faster than
/// SipHash on these 16-byte keys (it dominated query profiles) and is
/// seeded per process, so crafted keys cannot be made to collide.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Code of the totals part; dimensions use their index.
pub(crate) const TOTAL_PART: u8 = 11;
const PARTS_KEY: &str = "rampart.rollup.parts";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    /// Flow records, unscaled.
    pub records: u64,
}

impl Counters {
    pub fn of(row: &FlowRow) -> Counters {
        Counters {
            bytes: row.flow.scaled_bytes(),
            packets: row.flow.scaled_packets(),
            flows: row.flow.scaled_flows(),
            records: 1,
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.packets = self.packets.saturating_add(o.packets);
        self.flows = self.flows.saturating_add(o.flows);
        self.records = self.records.saturating_add(o.records);
    }

    pub fn metric(&self, m: Metric) -> u64 {
        match m {
            Metric::Bytes => self.bytes,
            Metric::Packets => self.packets,
            Metric::Flows => self.flows,
        }
    }
}

/// One decoded rollup row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RollupRow {
    pub bucket: i64,
    pub key: Key,
    /// The remainder of a cut (bucket, dimension); `key` is zero.
    pub other: bool,
    pub c: Counters,
}

/// The rows of one part (a dimension, or the totals) of a rollup file, as
/// kept in the query cache: 40 bytes a row, so a month of hourly rollups of
/// a busy tenant fits.
#[derive(Debug, Default)]
pub(crate) struct RollupPart {
    /// Runs of one bucket: `(bucket, end)`, rows up to `end` (exclusive).
    runs: Vec<(i64, u32)>,
    keys: Vec<Key>,
    /// Bytes, packets and flows.
    vals: Vec<[u64; 3]>,
    /// Records, in the totals part only.
    records: Vec<u64>,
    /// Bit set of the "other" rows.
    other: Vec<u64>,
}

impl RollupPart {
    pub fn approx_bytes(&self) -> usize {
        self.keys.len() * 40 + self.records.len() * 8 + self.runs.len() * 16 + 64
    }

    /// Calls `f(bucket, key, counters, other)` for the rows whose bucket
    /// is in `[lo, hi)`.
    pub fn for_each_in(&self, lo: i64, hi: i64, mut f: impl FnMut(i64, &Key, &Counters, bool)) {
        let mut start = 0usize;
        for &(bucket, end) in &self.runs {
            let end = end as usize;
            if bucket >= lo && bucket < hi {
                let rows = self.keys.get(start..end).unwrap_or_default();
                let vals = self.vals.get(start..end).unwrap_or_default();
                for (i, (k, v)) in rows.iter().zip(vals).enumerate() {
                    let at = start + i;
                    let c = Counters {
                        bytes: v[0],
                        packets: v[1],
                        flows: v[2],
                        records: self.records.get(at).copied().unwrap_or(0),
                    };
                    let other = self
                        .other
                        .get(at / 64)
                        .is_some_and(|w| w >> (at % 64) & 1 == 1);
                    f(bucket, k, &c, other);
                }
            }
            start = end;
        }
    }

    fn push(&mut self, bucket: i64, key: Key, c: Counters, other: bool, with_records: bool) {
        let at = self.keys.len();
        match self.runs.last_mut() {
            Some((b, end)) if *b == bucket => *end = at as u32 + 1,
            _ => self.runs.push((bucket, at as u32 + 1)),
        }
        self.keys.push(key);
        self.vals.push([c.bytes, c.packets, c.flows]);
        if with_records {
            self.records.push(c.records);
        }
        if at / 64 >= self.other.len() {
            self.other.push(0);
        }
        if other {
            if let Some(w) = self.other.get_mut(at / 64) {
                *w |= 1 << (at % 64);
            }
        }
    }
}

/// Accumulates rows into buckets of `width` ms.
pub(crate) struct RollupBuilder {
    width: i64,
    dims: Vec<FastMap<(i64, Key), Counters>>,
    /// "Other" remainders carried over from merged rollups, per dimension.
    others: Vec<FastMap<i64, Counters>>,
    total: FastMap<i64, Counters>,
}

/// A finished rollup, ready to encode.
pub(crate) struct RollupTable {
    /// (part code, rows sorted by bucket, other last, key).
    pub parts: Vec<(u8, Vec<RollupRow>)>,
    pub cut: bool,
    pub rows: u64,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl RollupBuilder {
    pub fn new(width: i64) -> Self {
        RollupBuilder {
            width: width.max(1),
            dims: (0..Dim::ALL.len()).map(|_| FastMap::default()).collect(),
            others: (0..Dim::ALL.len()).map(|_| FastMap::default()).collect(),
            total: FastMap::default(),
        }
    }

    /// Adds a row of another rollup of this width or a finer one that
    /// divides it (merging an hour's files, or a day's hours). A merged
    /// "other" row keeps its bucket and dimension cut.
    pub fn add_rollup(&mut self, code: u8, bucket: i64, key: &Key, c: &Counters, other: bool) {
        let i = usize::from(code);
        let bucket = bucket.div_euclid(self.width).saturating_mul(self.width);
        if code == TOTAL_PART {
            self.total.entry(bucket).or_default().add(c);
        } else if other {
            if let Some(m) = self.others.get_mut(i) {
                m.entry(bucket).or_default().add(c);
            }
        } else if let Some(m) = self.dims.get_mut(i) {
            m.entry((bucket, *key)).or_default().add(c);
        }
    }

    /// Counts `row` in the bucket of its start.
    pub fn add(&mut self, row: &FlowRow) {
        let start = i64::try_from(row.flow.start_ms).unwrap_or(i64::MAX);
        let bucket = start.div_euclid(self.width) * self.width;
        let c = Counters::of(row);
        for (d, map) in Dim::ALL.iter().zip(self.dims.iter_mut()) {
            map.entry((bucket, d.key(row))).or_default().add(&c);
        }
        self.total.entry(bucket).or_default().add(&c);
    }

    /// Sorts, cuts each (bucket, dimension) to its top `k` keys and returns
    /// the table.
    pub fn finish(self, k: usize) -> RollupTable {
        let k = k.max(1);
        let width = self.width;
        let mut parts = Vec::with_capacity(Dim::ALL.len() + 1);
        let mut cut = false;
        let mut rows = 0u64;
        for (code, (map, others)) in self.dims.into_iter().zip(self.others).enumerate() {
            let mut all: Vec<RollupRow> = map
                .into_iter()
                .map(|((bucket, key), c)| RollupRow {
                    bucket,
                    key,
                    other: false,
                    c,
                })
                .collect();
            // Buckets that only have a carried-over remainder.
            let with_keys: std::collections::HashSet<i64> = all.iter().map(|r| r.bucket).collect();
            for (bucket, c) in &others {
                if !with_keys.contains(bucket) {
                    all.push(RollupRow {
                        bucket: *bucket,
                        key: [0; 16],
                        other: true,
                        c: *c,
                    });
                }
            }
            all.sort_unstable_by_key(|r| (r.bucket, r.other, r.key));
            let mut out = Vec::with_capacity(all.len().min(k.saturating_mul(64)));
            for group in all.chunk_by(|a, b| a.bucket == b.bucket) {
                let carried = group
                    .first()
                    .filter(|r| !r.other)
                    .and_then(|r| others.get(&r.bucket));
                if group.len() <= k && carried.is_none() {
                    out.extend_from_slice(group);
                } else {
                    cut = true;
                    keep_top(group, k, carried, &mut out);
                }
            }
            rows += out.len() as u64;
            parts.push((code as u8, out));
        }
        let mut totals: Vec<RollupRow> = self
            .total
            .into_iter()
            .map(|(bucket, c)| RollupRow {
                bucket,
                key: [0; 16],
                other: false,
                c,
            })
            .collect();
        totals.sort_unstable_by_key(|r| r.bucket);
        let start_ms = totals.first().map_or(0, |r| r.bucket);
        let end_ms = totals.last().map_or(0, |r| r.bucket.saturating_add(width));
        rows += totals.len() as u64;
        parts.push((TOTAL_PART, totals));
        RollupTable {
            parts,
            cut,
            rows,
            start_ms,
            end_ms,
        }
    }
}

/// Appends at most `k` rows of `group`, taken alternately from its ranking
/// by bytes and its ranking by flows (ties go to the larger by bytes, then
/// the smaller key, so the choice is deterministic), in key order, and one
/// "other" row for the rest.
fn keep_top(group: &[RollupRow], k: usize, carried: Option<&Counters>, out: &mut Vec<RollupRow>) {
    let ranking = |m: Metric| {
        let mut idx: Vec<usize> = (0..group.len()).collect();
        let score = |i: usize| {
            group.get(i).map_or((0, 0, [0u8; 16]), |r| {
                (r.c.metric(m), r.c.bytes, r.key.map(|b| !b))
            })
        };
        let by = |a: &usize, b: &usize| score(*b).cmp(&score(*a));
        if k < idx.len() {
            idx.select_nth_unstable_by(k, by);
            idx.truncate(k);
        }
        idx.sort_unstable_by(by);
        idx
    };
    let (by_bytes, by_flows) = (ranking(Metric::Bytes), ranking(Metric::Flows));
    let mut keep = vec![false; group.len()];
    let mut kept = 0;
    'pick: for (a, b) in by_bytes.iter().zip(&by_flows) {
        for i in [a, b] {
            if let Some(slot) = keep.get_mut(*i) {
                if !*slot {
                    *slot = true;
                    kept += 1;
                    if kept == k {
                        break 'pick;
                    }
                }
            }
        }
    }
    let mut other = carried.copied().unwrap_or_default();
    let mut bucket = 0;
    for (r, kept) in group.iter().zip(&keep) {
        bucket = r.bucket;
        if *kept {
            out.push(*r);
        } else {
            other.add(&r.c);
        }
    }
    out.push(RollupRow {
        bucket,
        key: [0; 16],
        other: true,
        c: other,
    });
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("bucket", DataType::Int64, false),
        Field::new("key_hi", DataType::UInt64, false),
        Field::new("key_lo", DataType::UInt64, false),
        Field::new("other", DataType::UInt8, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("packets", DataType::UInt64, false),
        Field::new("flows", DataType::UInt64, false),
        Field::new("records", DataType::UInt64, false),
    ]))
}

fn enc(e: impl std::fmt::Display) -> FlowStoreError {
    FlowStoreError::Encode(e.to_string())
}

fn key_halves(k: &Key) -> (u64, u64) {
    let v = u128::from_be_bytes(*k);
    ((v >> 64) as u64, v as u64)
}

/// Encodes a table, one row group per non-empty part.
///
/// Rows ascend by bucket, then key, inside a part, so the bucket and the
/// low half of the key (all of a port, protocol, ASN or IPv4 address) are
/// small deltas; the high half is mostly zero and run-length encodes;
/// byte and packet counts are close to random and are byte-stream split.
pub(crate) fn encode_rollup(t: &RollupTable, zstd_level: i32) -> Result<Vec<u8>, FlowStoreError> {
    use parquet::basic::Encoding;
    let schema = schema();
    let mut p = writer_props(zstd_level, true)?.into_builder();
    for (c, e) in [
        ("bucket", Encoding::DELTA_BINARY_PACKED),
        ("key_lo", Encoding::DELTA_BINARY_PACKED),
        ("bytes", Encoding::BYTE_STREAM_SPLIT),
        ("packets", Encoding::BYTE_STREAM_SPLIT),
    ] {
        p = p
            .set_column_dictionary_enabled(c.into(), false)
            .set_column_encoding(c.into(), e);
    }
    let props = p.build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).map_err(enc)?;
    let mut codes = Vec::new();
    for (code, rows) in &t.parts {
        if rows.is_empty() {
            continue;
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.bucket))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| key_halves(&r.key).0),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| key_halves(&r.key).1),
            )),
            Arc::new(UInt8Array::from_iter_values(
                rows.iter().map(|r| u8::from(r.other)),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.c.bytes),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.c.packets),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.c.flows),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.c.records),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(enc)?;
        w.write(&batch).map_err(enc)?;
        w.flush().map_err(enc)?;
        codes.push(code.to_string());
    }
    w.append_key_value_metadata(KeyValue::new(PARTS_KEY.to_string(), codes.join(",")));
    w.close().map_err(enc)?;
    Ok(out)
}

/// Decodes one part of a rollup file; a part the file does not hold is
/// empty.
pub(crate) fn decode_part(
    plain: Bytes,
    key: &str,
    code: u8,
    max_rows: u64,
) -> Result<RollupPart, FlowStoreError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(plain).map_err(|e| corrupt(key, e))?;
    let md = builder.metadata().clone();
    let parts = md
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == PARTS_KEY))
        .and_then(|e| e.value.clone())
        .ok_or_else(|| corrupt(key, "rollup file without its part list"))?;
    let want = code.to_string();
    let Some(group) = parts.split(',').position(|c| c == want) else {
        return Ok(RollupPart::default());
    };
    let rg = md
        .row_groups()
        .get(group)
        .ok_or_else(|| corrupt(key, "part list names a missing row group"))?;
    let n = u64::try_from(rg.num_rows()).unwrap_or(u64::MAX);
    if n > max_rows {
        return Err(corrupt(
            key,
            format!("{n} rollup rows, more than a file may hold"),
        ));
    }
    let reader = builder
        .with_row_groups(vec![group])
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| corrupt(key, e))?;
    let mut part = RollupPart::default();
    part.keys.reserve(n as usize);
    part.vals.reserve(n as usize);
    let with_records = code == TOTAL_PART;
    for batch in reader {
        let b = batch.map_err(|e| corrupt(key, e))?;
        let bucket = column::<Int64Array>(&b, 0, "bucket", key)?;
        let hi = column::<UInt64Array>(&b, 1, "key_hi", key)?;
        let lo = column::<UInt64Array>(&b, 2, "key_lo", key)?;
        let other = column::<UInt8Array>(&b, 3, "other", key)?;
        let bytes = column::<UInt64Array>(&b, 4, "bytes", key)?;
        let packets = column::<UInt64Array>(&b, 5, "packets", key)?;
        let flows = column::<UInt64Array>(&b, 6, "flows", key)?;
        let records = column::<UInt64Array>(&b, 7, "records", key)?;
        for i in 0..b.num_rows() {
            let k = ((u128::from(hi.value(i)) << 64) | u128::from(lo.value(i))).to_be_bytes();
            part.push(
                bucket.value(i),
                k,
                Counters {
                    bytes: bytes.value(i),
                    packets: packets.value(i),
                    flows: flows.value(i),
                    records: records.value(i),
                },
                other.value(i) != 0,
                with_records,
            );
        }
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: u8, bytes: u64, flows: u64) -> RollupRow {
        let mut k = [0u8; 16];
        k[15] = key;
        RollupRow {
            bucket: 60_000,
            key: k,
            other: false,
            c: Counters {
                bytes,
                packets: bytes / 100,
                flows,
                records: flows,
            },
        }
    }

    #[test]
    fn a_cut_keeps_the_leaders_by_bytes_and_by_flows_and_sums_the_rest() {
        // Key 1 leads by bytes, key 2 by flows; keys 3 and 4 are second.
        let group = [
            row(1, 9_000, 1),
            row(2, 10, 50),
            row(3, 5_000, 2),
            row(4, 20, 40),
            row(5, 100, 3),
            row(6, 15, 1),
        ];
        let mut out = Vec::new();
        keep_top(&group, 4, None, &mut out);
        let keys: Vec<u8> = out.iter().filter(|r| !r.other).map(|r| r.key[15]).collect();
        assert_eq!(keys, vec![1, 2, 3, 4], "key order, alternate rankings");
        let other = out.last().unwrap();
        assert!(other.other);
        assert_eq!(other.c.bytes, 115);
        assert_eq!(other.c.flows, 4);
        assert_eq!(other.c.records, 4);
        // An odd k takes one more from the bytes ranking.
        let mut out = Vec::new();
        keep_top(&group, 3, None, &mut out);
        let keys: Vec<u8> = out.iter().filter(|r| !r.other).map(|r| r.key[15]).collect();
        assert_eq!(keys, vec![1, 2, 3]);
    }

    #[test]
    fn rollups_round_trip_through_parquet_part_by_part() {
        let mut b = RollupBuilder::new(60_000);
        let mut rows = Vec::new();
        for i in 0..50u16 {
            let mut r = crate::model::tests::sample_row();
            r.flow.start_ms = 1_790_000_000_000 + u64::from(i) * 7_000;
            r.flow.src_port = 40_000 + i % 7;
            r.flow.bytes = 100 + u64::from(i);
            r.flow.sampling_rate = 10;
            rows.push(r);
            b.add(rows.last().unwrap());
        }
        let t = b.finish(3);
        assert!(t.cut, "seven source ports, three kept");
        let file = encode_rollup(&t, 3).unwrap();
        for (code, want) in &t.parts {
            let part = decode_part(Bytes::from(file.clone()), "k", *code, 1_000).unwrap();
            let mut got = Vec::new();
            part.for_each_in(i64::MIN, i64::MAX, |bucket, key, c, other| {
                let mut c = *c;
                if *code != TOTAL_PART {
                    c.records = 0;
                }
                got.push((bucket, *key, c, other));
            });
            let want: Vec<_> = want
                .iter()
                .map(|r| {
                    let mut c = r.c;
                    if *code != TOTAL_PART {
                        c.records = 0;
                    }
                    (r.bucket, r.key, c, r.other)
                })
                .collect();
            assert_eq!(got, want, "part {code}");
        }
        let totals = decode_part(Bytes::from(file), "k", TOTAL_PART, 1_000).unwrap();
        let mut bytes = 0;
        let mut records = 0;
        totals.for_each_in(i64::MIN, i64::MAX, |_, _, c, _| {
            bytes += c.bytes;
            records += c.records;
        });
        assert_eq!(bytes, rows.iter().map(|r| r.flow.bytes * 10).sum::<u64>());
        assert_eq!(records, 50);
        // A part limit below the rows is refused rather than allocated.
        assert!(decode_part(Bytes::from(encode_rollup(&t, 3).unwrap()), "k", 2, 2).is_err());
    }
}
