#[path = "../tests/common/gen.rs"]
mod gen;
use std::sync::Arc;
use arrow_array::*;
use arrow_schema::*;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::*;
use parquet::schema::types::ColumnPath;
use rampart_flowstore::*;

fn size(name: &str, arr: ArrayRef, enc: Option<Encoding>, dict: bool, z: i32) -> f64 {
    let n = arr.len();
    let schema = Arc::new(Schema::new(vec![Field::new(name, arr.data_type().clone(), false)]));
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(z).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_data_page_size_limit(4 << 20)
        .set_dictionary_page_size_limit(4 << 20)
        .set_dictionary_enabled(dict);
    if let Some(e) = enc { b = b.set_column_encoding(ColumnPath::from(name), e); }
    let batch = RecordBatch::try_new(schema.clone(), vec![arr]).unwrap();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(b.build())).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out.len() as f64 / n as f64
}

fn try_all(name: &str, arr: ArrayRef) {
    let mut res = vec![];
    res.push(("dict", size(name, arr.clone(), None, true, 9)));
    res.push(("plain", size(name, arr.clone(), Some(Encoding::PLAIN), false, 9)));
    res.push(("delta", size(name, arr.clone(), Some(Encoding::DELTA_BINARY_PACKED), false, 9)));
    res.push(("bss", size(name, arr.clone(), Some(Encoding::BYTE_STREAM_SPLIT), false, 9)));
    let s: Vec<String> = res.iter().map(|(k, v)| format!("{k}={v:.2}")).collect();
    println!("  {name:12} {}", s.join(" "));
}

fn main() {
    let n: u64 = std::env::args().nth(1).map(|v| v.parse().unwrap()).unwrap_or(100_000);
    let devs = [rampart_store::DeviceId(uuid::Uuid::from_u128(1)), rampart_store::DeviceId(uuid::Uuid::from_u128(2)), rampart_store::DeviceId(uuid::Uuid::from_u128(3))];
    let mut g = gen::Generator::new(1, 1_790_000_000_000, 3_600_000, n, 3000, &devs);
    let rows = g.rows(n as usize);
    for (w, k) in [(60_000i64, 1000usize), (3_600_000, 10_000)] {
        let (out, nrows) = scratch_bench::rollup(&rows, w, k, 3);
        println!("width {w}: {:.2} B/flow, {} rows ({:.2} rows/flow, {:.2} B/row)", out.len() as f64 / n as f64, nrows, nrows as f64 / n as f64, out.len() as f64 / nrows as f64);
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let rd = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        let md = rd.metadata();
        let mut cols: Vec<(String, i64)> = Vec::new();
        for rg in md.row_groups() { for c in rg.columns() {
            if let Some(e) = cols.iter_mut().find(|x| x.0 == c.column_path().string()) { e.1 += c.compressed_size(); } else { cols.push((c.column_path().string(), c.compressed_size())); } } }
        let s: Vec<String> = cols.iter().map(|(nm, b)| format!("{nm}={:.2}", *b as f64 / nrows as f64)).collect();
        println!("   per row: {}", s.join(" "));
        for (i, rg) in md.row_groups().iter().enumerate() { print!(" rg{i}:{}r/{}B", rg.num_rows(), rg.compressed_size()); }
        println!();
    }
}
