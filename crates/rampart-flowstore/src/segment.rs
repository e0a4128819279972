//! Raw flow segments: one Parquet file of [`FlowRow`]s (before encryption).
//!
//! Layout choices, measured with `examples/measure.rs` on the generated mix
//! (see the crate docs for the figures):
//! - addresses as `FixedSizeBinary(16)` (IPv4 mapped into IPv6) plus one
//!   `af` byte saying which of them were IPv4, so a row reads back exactly;
//!   dictionary encoding turns the few thousand distinct hosts into small
//!   integers;
//! - the end time as a duration from the start, which is small;
//! - rows sorted by [`RawSort`] inside a segment, zstd on every column.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use arrow_array::builder::FixedSizeBinaryBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use rampart_flow::{AppLabel, FlowRecord};
use uuid::Uuid;

use crate::model::{direction_code, direction_from_code, Country, FlowRow};
use crate::FlowStoreError;

/// Order of rows inside a raw segment. It changes only the size on disk:
/// search sorts its pages itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawSort {
    /// By flow start.
    Start,
    /// By source address, destination address, then start: conversations
    /// become runs, which dictionary and run-length encoding shrink.
    SrcDstStart,
    /// By exporter, then start: each exporter's rows are a time series.
    ExporterStart,
    /// By exporter (and observation domain), source, destination, then
    /// start: the exporter's own columns become a few runs, and within it
    /// conversations become runs too. The smallest of these on the
    /// generated mix.
    ExporterSrcDstStart,
}

/// How raw segments are written.
#[derive(Clone, Copy, Debug)]
pub struct RawFormat {
    pub sort: RawSort,
    /// zstd level, 1 to 22.
    pub zstd_level: i32,
}

const COLS: [(&str, DataType); 25] = [
    ("start_ms", DataType::Int64),
    ("duration_ms", DataType::Int64),
    ("src", DataType::FixedSizeBinary(16)),
    ("dst", DataType::FixedSizeBinary(16)),
    ("src_port", DataType::UInt16),
    ("dst_port", DataType::UInt16),
    ("proto", DataType::UInt8),
    ("bytes", DataType::UInt64),
    ("packets", DataType::UInt64),
    ("tcp_flags", DataType::UInt8),
    ("in_if", DataType::UInt32),
    ("out_if", DataType::UInt32),
    ("direction", DataType::UInt8),
    ("exporter", DataType::FixedSizeBinary(16)),
    ("sampling_rate", DataType::UInt32),
    ("resample", DataType::UInt32),
    ("domain_id", DataType::UInt32),
    ("flags", DataType::UInt8),
    ("af", DataType::UInt8),
    ("app", DataType::Utf8),
    ("device", DataType::FixedSizeBinary(16)),
    ("src_country", DataType::UInt16),
    ("dst_country", DataType::UInt16),
    ("src_asn", DataType::UInt32),
    ("dst_asn", DataType::UInt32),
];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLS.iter()
            .map(|(n, t)| Field::new(*n, t.clone(), false))
            .collect::<Vec<_>>(),
    ))
}

pub(crate) fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn addr_from16(b: [u8; 16], v4: bool) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match (v4, v6.to_ipv4_mapped()) {
        (true, Some(a)) => IpAddr::V4(a),
        _ => IpAddr::V6(v6),
    }
}

/// Sorts rows for writing.
pub(crate) fn sort_rows(rows: &mut [FlowRow], sort: RawSort) {
    let f = |r: &FlowRow| r.flow;
    match sort {
        RawSort::Start => rows.sort_unstable_by_key(|r| f(r).start_ms),
        RawSort::SrcDstStart => rows.sort_unstable_by_key(|r| {
            (addr16(f(r).src_addr), addr16(f(r).dst_addr), f(r).start_ms)
        }),
        RawSort::ExporterStart => {
            rows.sort_unstable_by_key(|r| (addr16(f(r).exporter), f(r).domain_id, f(r).start_ms))
        }
        RawSort::ExporterSrcDstStart => rows.sort_unstable_by_key(|r| {
            (
                addr16(f(r).exporter),
                f(r).domain_id,
                addr16(f(r).src_addr),
                addr16(f(r).dst_addr),
                f(r).start_ms,
            )
        }),
    }
}

fn fixed16(vals: impl Iterator<Item = [u8; 16]>, n: usize) -> Result<ArrayRef, FlowStoreError> {
    let mut b = FixedSizeBinaryBuilder::with_capacity(n, 16);
    for v in vals {
        b.append_value(v).map_err(enc)?;
    }
    Ok(Arc::new(b.finish()))
}

fn enc(e: impl std::fmt::Display) -> FlowStoreError {
    FlowStoreError::Encode(e.to_string())
}

/// Columns whose values are close to random: byte-stream-split puts their
/// high bytes (mostly zero) in their own streams, which zstd then all but
/// removes. Measured smaller than dictionary, plain and delta encoding.
const SPLIT_COLUMNS: [&str; 6] = [
    "duration_ms",
    "bytes",
    "packets",
    "src_port",
    "dst_port",
    "start_ms",
];

pub(crate) fn writer_props(
    zstd_level: i32,
    sorted_by_start: bool,
) -> Result<WriterProperties, FlowStoreError> {
    let level = ZstdLevel::try_new(zstd_level).map_err(enc)?;
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_data_page_size_limit(4 << 20)
        .set_dictionary_page_size_limit(4 << 20)
        .set_created_by("rampart-flowstore".into());
    for c in SPLIT_COLUMNS {
        // Sorted start times are best as deltas.
        let e = if c == "start_ms" && sorted_by_start {
            Encoding::DELTA_BINARY_PACKED
        } else {
            Encoding::BYTE_STREAM_SPLIT
        };
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), e);
    }
    Ok(b.build())
}

/// Encodes rows (already sorted) as a Parquet file.
pub(crate) fn encode_raw(rows: &[FlowRow], format: &RawFormat) -> Result<Vec<u8>, FlowStoreError> {
    let n = rows.len();
    let fl = || rows.iter().map(|r| &r.flow);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            fl().map(|f| f.start_ms as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            fl().map(|f| f.end_ms.saturating_sub(f.start_ms) as i64),
        )),
        fixed16(fl().map(|f| addr16(f.src_addr)), n)?,
        fixed16(fl().map(|f| addr16(f.dst_addr)), n)?,
        Arc::new(UInt16Array::from_iter_values(fl().map(|f| f.src_port))),
        Arc::new(UInt16Array::from_iter_values(fl().map(|f| f.dst_port))),
        Arc::new(UInt8Array::from_iter_values(fl().map(|f| f.protocol))),
        Arc::new(UInt64Array::from_iter_values(fl().map(|f| f.bytes))),
        Arc::new(UInt64Array::from_iter_values(fl().map(|f| f.packets))),
        Arc::new(UInt8Array::from_iter_values(fl().map(|f| f.tcp_flags))),
        Arc::new(UInt32Array::from_iter_values(fl().map(|f| f.in_if))),
        Arc::new(UInt32Array::from_iter_values(fl().map(|f| f.out_if))),
        Arc::new(UInt8Array::from_iter_values(
            fl().map(|f| direction_code(f.direction)),
        )),
        fixed16(fl().map(|f| addr16(f.exporter)), n)?,
        Arc::new(UInt32Array::from_iter_values(fl().map(|f| f.sampling_rate))),
        Arc::new(UInt32Array::from_iter_values(fl().map(|f| f.resample))),
        Arc::new(UInt32Array::from_iter_values(fl().map(|f| f.domain_id))),
        Arc::new(UInt8Array::from_iter_values(fl().map(|f| f.flags))),
        Arc::new(UInt8Array::from_iter_values(fl().map(|f| {
            u8::from(f.src_addr.is_ipv4())
                | u8::from(f.dst_addr.is_ipv4()) << 1
                | u8::from(f.exporter.is_ipv4()) << 2
        }))),
        Arc::new(StringArray::from_iter_values(fl().map(|f| f.app.as_str()))),
        fixed16(rows.iter().map(|r| *r.device.as_bytes()), n)?,
        Arc::new(UInt16Array::from_iter_values(
            rows.iter()
                .map(|r| u16::from_be_bytes(r.src_country.normalized().0)),
        )),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter()
                .map(|r| u16::from_be_bytes(r.dst_country.normalized().0)),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.src_asn),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.dst_asn),
        )),
    ];
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(enc)?;
    let props = writer_props(
        format.zstd_level,
        matches!(format.sort, RawSort::Start | RawSort::ExporterStart),
    )?;
    let mut out = Vec::with_capacity(n * 12 + 4096);
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(enc)?;
    w.write(&batch).map_err(enc)?;
    w.close().map_err(enc)?;
    Ok(out)
}

pub(crate) fn corrupt(key: &str, detail: impl std::fmt::Display) -> FlowStoreError {
    FlowStoreError::Corrupt {
        key: key.to_string(),
        detail: detail.to_string(),
    }
}

/// The column `i` of `batch`, checked to be named and typed as written.
pub(crate) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    i: usize,
    name: &str,
    key: &str,
) -> Result<&'a T, FlowStoreError> {
    let schema = batch.schema();
    let ok = schema.fields().get(i).is_some_and(|f| f.name() == name);
    batch
        .columns()
        .get(i)
        .filter(|_| ok)
        .filter(|c| c.null_count() == 0)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| corrupt(key, format!("column {name} is missing or of another type")))
}

/// Value `i` of a column checked to be 16 bytes wide.
fn key16(a: &FixedSizeBinaryArray, i: usize) -> [u8; 16] {
    a.value(i).try_into().unwrap_or([0; 16])
}

/// Decodes a raw segment, handing each row to `f` in the order written,
/// one Parquet batch at a time so a large segment is never held decoded.
///
/// The file has been authenticated by then, so a mismatch means a bug or a
/// format change, not an attack; it is still an error, never a panic.
pub(crate) fn for_each_raw(
    plain: Bytes,
    key: &str,
    max_rows: u64,
    mut f: impl FnMut(&FlowRow),
) -> Result<u64, FlowStoreError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(plain).map_err(|e| corrupt(key, e))?;
    let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(u64::MAX);
    if total > max_rows {
        return Err(corrupt(
            key,
            format!("{total} rows, more than a segment may hold"),
        ));
    }
    let reader = builder
        .with_batch_size(16 * 1024)
        .build()
        .map_err(|e| corrupt(key, e))?;
    for batch in reader {
        let b = batch.map_err(|e| corrupt(key, e))?;
        let start = column::<Int64Array>(&b, 0, "start_ms", key)?;
        let dur = column::<Int64Array>(&b, 1, "duration_ms", key)?;
        let src = column::<FixedSizeBinaryArray>(&b, 2, "src", key)?;
        let dst = column::<FixedSizeBinaryArray>(&b, 3, "dst", key)?;
        let sport = column::<UInt16Array>(&b, 4, "src_port", key)?;
        let dport = column::<UInt16Array>(&b, 5, "dst_port", key)?;
        let proto = column::<UInt8Array>(&b, 6, "proto", key)?;
        let bytes = column::<UInt64Array>(&b, 7, "bytes", key)?;
        let packets = column::<UInt64Array>(&b, 8, "packets", key)?;
        let tcp = column::<UInt8Array>(&b, 9, "tcp_flags", key)?;
        let in_if = column::<UInt32Array>(&b, 10, "in_if", key)?;
        let out_if = column::<UInt32Array>(&b, 11, "out_if", key)?;
        let dir = column::<UInt8Array>(&b, 12, "direction", key)?;
        let exp = column::<FixedSizeBinaryArray>(&b, 13, "exporter", key)?;
        let sampling = column::<UInt32Array>(&b, 14, "sampling_rate", key)?;
        let resample = column::<UInt32Array>(&b, 15, "resample", key)?;
        let domain = column::<UInt32Array>(&b, 16, "domain_id", key)?;
        let flags = column::<UInt8Array>(&b, 17, "flags", key)?;
        let af = column::<UInt8Array>(&b, 18, "af", key)?;
        let app = column::<StringArray>(&b, 19, "app", key)?;
        let device = column::<FixedSizeBinaryArray>(&b, 20, "device", key)?;
        let sc = column::<UInt16Array>(&b, 21, "src_country", key)?;
        let dc = column::<UInt16Array>(&b, 22, "dst_country", key)?;
        let sa = column::<UInt32Array>(&b, 23, "src_asn", key)?;
        let da = column::<UInt32Array>(&b, 24, "dst_asn", key)?;
        for a in [src, dst, exp, device] {
            if a.value_length() != 16 {
                return Err(corrupt(
                    key,
                    "an address or device column is not 16 bytes wide",
                ));
            }
        }
        for i in 0..b.num_rows() {
            let af = af.value(i);
            let start_ms =
                u64::try_from(start.value(i)).map_err(|_| corrupt(key, "negative start time"))?;
            let dur = u64::try_from(dur.value(i)).map_err(|_| corrupt(key, "negative duration"))?;
            f(&FlowRow {
                flow: FlowRecord {
                    start_ms,
                    end_ms: start_ms.saturating_add(dur),
                    bytes: bytes.value(i),
                    packets: packets.value(i),
                    src_addr: addr_from16(key16(src, i), af & 1 != 0),
                    dst_addr: addr_from16(key16(dst, i), af & 2 != 0),
                    exporter: addr_from16(key16(exp, i), af & 4 != 0),
                    in_if: in_if.value(i),
                    out_if: out_if.value(i),
                    sampling_rate: sampling.value(i),
                    domain_id: domain.value(i),
                    src_port: sport.value(i),
                    dst_port: dport.value(i),
                    protocol: proto.value(i),
                    tcp_flags: tcp.value(i),
                    direction: direction_from_code(dir.value(i)),
                    resample: resample.value(i),
                    flags: flags.value(i),
                    app: AppLabel::new(app.value(i)),
                },
                device: Uuid::from_bytes(key16(device, i)),
                src_country: Country(sc.value(i).to_be_bytes()),
                dst_country: Country(dc.value(i).to_be_bytes()),
                src_asn: sa.value(i),
                dst_asn: da.value(i),
            });
        }
    }
    Ok(total)
}

/// Decodes a whole raw segment (compaction, which rewrites it anyway).
pub(crate) fn decode_raw(
    plain: Bytes,
    key: &str,
    max_rows: u64,
) -> Result<Vec<FlowRow>, FlowStoreError> {
    let mut out = Vec::new();
    for_each_raw(plain, key, max_rows, |r| out.push(*r))?;
    Ok(out)
}
