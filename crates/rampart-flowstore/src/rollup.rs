//! Rollups: bytes, packets, flows and records per time bucket, for each
//! dimension separately and in total, stored as Parquet like the raw rows.
//!
//! A file holds one row group per dimension (and one for the totals), so a
//! query for one dimension decodes only its rows. Each (bucket, dimension)
//! keeps at most `2k` keys: the union of its top `k` by bytes and its top
//! `k` by flows, so a top-N by volume or by count finds its leaders (packets
//! follow bytes closely; a third ranking measured as mostly adding
//! single-flow keys); the rest is summed into one "other" row. An "other" row is what marks that bucket and
//! dimension as cut, and an answer that reads one is approximate. Totals are
//! never cut.

use std::collections::HashMap;
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

/// The rows of one part (a dimension, or the totals) of a rollup file.
#[derive(Debug, Default)]
pub(crate) struct RollupPart {
    pub rows: Vec<RollupRow>,
}

impl RollupPart {
    pub fn approx_bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<RollupRow>() + 64
    }
}

/// Accumulates rows into buckets of `width` ms.
pub(crate) struct RollupBuilder {
    width: i64,
    dims: Vec<HashMap<(i64, Key), Counters>>,
    total: HashMap<i64, Counters>,
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
            dims: (0..Dim::ALL.len()).map(|_| HashMap::new()).collect(),
            total: HashMap::new(),
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
        for (code, map) in self.dims.into_iter().enumerate() {
            let mut all: Vec<RollupRow> = map
                .into_iter()
                .map(|((bucket, key), c)| RollupRow {
                    bucket,
                    key,
                    other: false,
                    c,
                })
                .collect();
            all.sort_unstable_by_key(|r| (r.bucket, r.key));
            let mut out = Vec::with_capacity(all.len().min(k * 3 * 64));
            for group in all.chunk_by(|a, b| a.bucket == b.bucket) {
                if group.len() <= k {
                    out.extend_from_slice(group);
                } else {
                    cut = true;
                    keep_top(group, k, &mut out);
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

/// Appends the union of the top `k` of `group` by bytes and by flows (ties
/// broken by key, so the choice is deterministic) and one "other" row for
/// the rest.
fn keep_top(group: &[RollupRow], k: usize, out: &mut Vec<RollupRow>) {
    let mut keep = vec![false; group.len()];
    let mut idx: Vec<usize> = (0..group.len()).collect();
    for m in [Metric::Bytes, Metric::Flows] {
        // Ties (many keys with one flow) go to the larger by bytes, so the
        // two rankings mostly agree and the union stays near k.
        let by = |&a: &usize, &b: &usize| {
            let (ra, rb) = (group.get(a), group.get(b));
            let v = |r: Option<&RollupRow>| r.map_or((0, 0), |r| (r.c.metric(m), r.c.bytes));
            v(rb)
                .cmp(&v(ra))
                .then_with(|| ra.map(|r| r.key).cmp(&rb.map(|r| r.key)))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k, by);
        }
        for i in idx.iter().take(k) {
            if let Some(slot) = keep.get_mut(*i) {
                *slot = true;
            }
        }
    }
    let mut other = Counters::default();
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
    let mut rows = Vec::with_capacity(n as usize);
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
            rows.push(RollupRow {
                bucket: bucket.value(i),
                key: k,
                other: other.value(i) != 0,
                c: Counters {
                    bytes: bytes.value(i),
                    packets: packets.value(i),
                    flows: flows.value(i),
                    records: records.value(i),
                },
            });
        }
    }
    Ok(RollupPart { rows })
}
