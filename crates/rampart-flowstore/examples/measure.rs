//! Measures the flow store on generated flows: bytes per flow on disk,
//! append and compaction rates, and top-N latency.
//!
//! ```text
//! cargo run --release -p rampart-flowstore --example measure -- --flows 1000000
//! ```
//!
//! Options: `--flows N` (1000000), `--days D` the span the flows cover (1),
//! `--hosts H` internal hosts (3000), `--batch N` rows per append (500000),
//! `--sort start|src-dst|exporter-start|exporter-src-dst` raw row order
//! (exporter-src-dst), `--zstd L`
//! (9), `--keep DIR` to write there instead of a temp dir. Prints one
//! `name: value` line per figure, for `bench/flows` to collect.

#[path = "../tests/common/env.rs"]
mod env;
#[path = "../tests/common/gen.rs"]
mod gen;

use std::time::Instant;

use rampart_flowstore::{Dim, FlowStoreConfig, Metric, RawSort, TopQuery, DAY_MS};
use rampart_store::{SegmentLevel, Store};

struct Args {
    flows: u64,
    days: u64,
    hosts: usize,
    batch: usize,
    sort: RawSort,
    zstd: i32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        flows: 1_000_000,
        days: 1,
        hosts: 3_000,
        batch: 500_000,
        sort: RawSort::ExporterSrcDstStart,
        zstd: 9,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--flows" => a.flows = num(&v)?,
            "--days" => a.days = num(&v)?.max(1),
            "--hosts" => a.hosts = num(&v)? as usize,
            "--batch" => a.batch = num(&v)?.max(1) as usize,
            "--zstd" => a.zstd = num(&v)? as i32,
            "--sort" => {
                a.sort = match v.as_str() {
                    "start" => RawSort::Start,
                    "src-dst" => RawSort::SrcDstStart,
                    "exporter-start" => RawSort::ExporterStart,
                    "exporter-src-dst" => RawSort::ExporterSrcDstStart,
                    _ => {
                        return Err(
                            "--sort is start, src-dst, exporter-start or exporter-src-dst".into(),
                        )
                    }
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("measure: {e}");
            std::process::exit(2);
        }
    };
    let env = env::Env::new().await;
    let cfg = FlowStoreConfig {
        raw_format: rampart_flowstore::RawFormat {
            sort: a.sort,
            zstd_level: a.zstd,
        },
        ..Default::default()
    };
    let fs = env.flow_store(cfg.clone());
    let (tenant, devices) = env.tenant("bench", 3).await;
    let key = rampart_flowstore::DataKey::from_bytes([42; 32]);
    let start_ms: u64 = 1_790_000_000_000 / 3_600_000 * 3_600_000;
    let span = a.days * DAY_MS as u64;
    let mut g = gen::Generator::new(1, start_ms, span, a.flows, a.hosts, &devices);

    let mut left = a.flows;
    let mut append_secs = 0.0;
    let mut gen_secs = 0.0;
    let mut appended_bytes = 0u64;
    while left > 0 {
        let n = left.min(a.batch as u64) as usize;
        left -= n as u64;
        let t = Instant::now();
        let rows = g.rows(n);
        gen_secs += t.elapsed().as_secs_f64();
        let b = env.batch(tenant, devices[0]).await;
        let t = Instant::now();
        let st = fs.append(tenant, &key, &[b], rows).await.expect("append");
        append_secs += t.elapsed().as_secs_f64();
        appended_bytes += st.bytes;
    }
    let end_ms = (start_ms + span) as i64;
    let t = Instant::now();
    let mut compact = rampart_flowstore::CompactStats::default();
    loop {
        let c = fs
            .compact(tenant, &key, end_ms + DAY_MS)
            .await
            .expect("compact");
        if c.hours == 0 {
            break;
        }
        compact.hours += c.hours;
        compact.segments_in += c.segments_in;
        compact.segments_out += c.segments_out;
    }
    let compact_secs = t.elapsed().as_secs_f64();

    let mut level_bytes = [0u64; 3];
    let mut level_files = [0usize; 3];
    for (i, level) in SegmentLevel::ALL.into_iter().enumerate() {
        for s in env
            .meta
            .list_flow_segments(tenant, level, i64::MIN, i64::MAX)
            .await
            .unwrap()
        {
            level_bytes[i] += s.bytes;
            level_files[i] += 1;
        }
    }
    let flows = a.flows.max(1) as f64;
    println!("flows: {}", a.flows);
    println!("span_days: {}", a.days);
    println!("sort: {:?}", a.sort);
    println!("zstd_level: {}", a.zstd);
    println!("generate_secs: {gen_secs:.2}");
    println!("append_secs: {append_secs:.2}");
    println!("append_flows_per_sec: {:.0}", flows / append_secs);
    println!(
        "append_written_bytes_per_flow: {:.2}",
        appended_bytes as f64 / flows
    );
    println!("compact_secs: {compact_secs:.2}");
    println!("compact_hours: {}", compact.hours);
    println!("raw_files: {}", level_files[0]);
    println!("m1_files: {}", level_files[1]);
    println!("h1_files: {}", level_files[2]);
    println!("raw_bytes_per_flow: {:.2}", level_bytes[0] as f64 / flows);
    println!("m1_bytes_per_flow: {:.2}", level_bytes[1] as f64 / flows);
    println!("h1_bytes_per_flow: {:.2}", level_bytes[2] as f64 / flows);
    println!(
        "total_bytes_per_flow: {:.2}",
        level_bytes.iter().sum::<u64>() as f64 / flows
    );

    // Top-N over the whole span, cold (a fresh store, nothing cached) and
    // warm (repeated, as a dashboard does).
    for (name, dim) in [("src", Dim::Src), ("dst_port", Dim::DstPort)] {
        let fresh = env.flow_store(cfg.clone());
        let q = TopQuery {
            start_ms: start_ms as i64,
            end_ms,
            dim,
            metric: Metric::Bytes,
            n: 10,
            filter: None,
        };
        let t = Instant::now();
        let ans = fresh.top_n(tenant, &key, &q).await.expect("top_n");
        let cold = t.elapsed().as_secs_f64() * 1000.0;
        let mut warm = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            fresh.top_n(tenant, &key, &q).await.expect("top_n");
            warm.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        warm.sort_by(|x, y| x.total_cmp(y));
        println!("top10_{name}_level: {}", ans.level.as_str());
        println!("top10_{name}_rows_scanned: {}", ans.rows_scanned);
        println!("top10_{name}_cold_ms: {cold:.1}");
        println!("top10_{name}_warm_ms: {:.1}", warm[2]);
    }
    // The same top-N through raw rows (a filter that keeps everything).
    let q = TopQuery {
        start_ms: start_ms as i64,
        end_ms,
        dim: Dim::Src,
        metric: Metric::Bytes,
        n: 10,
        filter: Some(std::sync::Arc::new(|_: &rampart_flow::FlowRecord| true)),
    };
    let fresh = env.flow_store(cfg.clone());
    let t = Instant::now();
    fresh.top_n(tenant, &key, &q).await.expect("top_n raw");
    println!(
        "top10_src_raw_scan_flows_per_sec: {:.0}",
        flows / t.elapsed().as_secs_f64()
    );
    println!("peak_rss_mib: {:.0}", peak_rss_mib());
}
