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
//! (exporter-src-dst), `--zstd L` (9), `--cache-mib M` query cache (256),
//! `--keep DIR` to write the store there and keep it: run again with the
//! same `--keep` (and `--flows`, `--days`) to measure queries only. Prints
//! one `name: value` line per figure, for `bench/flows` to collect.

#[path = "../tests/common/env.rs"]
mod env;
#[path = "../tests/common/gen.rs"]
mod gen;

use std::time::Instant;

use rampart_flowstore::{
    CompactStats, DataKey, Dim, FlowStore, FlowStoreConfig, Metric, RawFormat, RawSort, TopQuery,
    DAY_MS,
};
use rampart_store::{SegmentLevel, Store, TenantId};

struct Args {
    flows: u64,
    days: u64,
    hosts: usize,
    batch: usize,
    sort: RawSort,
    zstd: i32,
    cache_mib: usize,
    keep: Option<std::path::PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        flows: 1_000_000,
        days: 1,
        hosts: 3_000,
        batch: 500_000,
        sort: RawSort::ExporterSrcDstStart,
        zstd: 9,
        cache_mib: 256,
        keep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--flows" => a.flows = num(&v)?,
            "--days" => a.days = num(&v)?.max(1),
            "--hosts" => a.hosts = num(&v)?.max(1) as usize,
            "--batch" => a.batch = num(&v)?.max(1) as usize,
            "--zstd" => a.zstd = num(&v)? as i32,
            "--cache-mib" => a.cache_mib = num(&v)? as usize,
            "--keep" => a.keep = Some(v.into()),
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

/// Generates, appends and compacts the flows; prints the write figures.
async fn ingest(
    env: &env::Env,
    fs: &FlowStore,
    a: &Args,
    tenant: TenantId,
    key: &DataKey,
    start_ms: u64,
) {
    let devices: Vec<_> = env
        .meta
        .list_devices(tenant)
        .await
        .expect("devices")
        .into_iter()
        .map(|d| d.id)
        .collect();
    let span = a.days * DAY_MS as u64;
    let mut g = gen::Generator::new(1, start_ms, span, a.flows, a.hosts, &devices);
    let mut left = a.flows;
    let (mut append_secs, mut gen_secs, mut written) = (0.0, 0.0, 0u64);
    while left > 0 {
        let n = left.min(a.batch as u64) as usize;
        left -= n as u64;
        let t = Instant::now();
        let rows = g.rows(n);
        gen_secs += t.elapsed().as_secs_f64();
        let b = env.batch(tenant, devices[0]).await;
        let t = Instant::now();
        let st = fs.append(tenant, key, &[b], rows).await.expect("append");
        append_secs += t.elapsed().as_secs_f64();
        written += st.bytes;
    }
    let end_ms = (start_ms + span) as i64;
    let t = Instant::now();
    let c = compact_all(fs, tenant, key, end_ms + DAY_MS).await;
    let compact_secs = t.elapsed().as_secs_f64();
    let flows = a.flows.max(1) as f64;
    println!("generate_secs: {gen_secs:.2}");
    println!("append_secs: {append_secs:.2}");
    println!("append_flows_per_sec: {:.0}", flows / append_secs);
    println!(
        "append_written_bytes_per_flow: {:.2}",
        written as f64 / flows
    );
    println!("compact_secs: {compact_secs:.2}");
    println!("compact_flows_per_sec: {:.0}", c.rows as f64 / compact_secs);
    println!("compact_hours: {}", c.hours);
    println!("compact_days: {}", c.days);
}

/// Compacts until nothing is left to do.
async fn compact_all(fs: &FlowStore, tenant: TenantId, key: &DataKey, now_ms: i64) -> CompactStats {
    let mut c = CompactStats::default();
    loop {
        let r = fs.compact(tenant, key, now_ms).await.expect("compact");
        if r.hours == 0 && r.days == 0 {
            return c;
        }
        c.hours += r.hours;
        c.days += r.days;
        c.rows += r.rows;
    }
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
    let env = match &a.keep {
        Some(dir) => env::Env::at(dir).await,
        None => env::Env::new().await,
    };
    let cfg = FlowStoreConfig {
        raw_format: RawFormat {
            sort: a.sort,
            zstd_level: a.zstd,
        },
        cache_bytes: a.cache_mib << 20,
        ..Default::default()
    };
    let key = DataKey::from_bytes([42; 32]);
    let start_ms: u64 = 1_790_000_000_000 / 3_600_000 * 3_600_000;
    let end_ms = start_ms as i64 + a.days as i64 * DAY_MS;
    println!("flows: {}", a.flows);
    println!("span_days: {}", a.days);
    println!("sort: {:?}", a.sort);
    println!("zstd_level: {}", a.zstd);
    let tenant = match env.meta.tenant_by_name("bench").await.expect("store") {
        Some(t) => {
            // A store from an earlier run: bring its compaction up to date.
            println!("reused_store: {}", env.root.display());
            let fs = env.flow_store(cfg.clone());
            let t0 = Instant::now();
            let c = compact_all(&fs, t.id, &key, end_ms + DAY_MS).await;
            println!("catch_up_compact_secs: {:.2}", t0.elapsed().as_secs_f64());
            println!("catch_up_compact_days: {}", c.days);
            t.id
        }
        None => {
            let (tenant, _) = env.tenant("bench", 3).await;
            let fs = env.flow_store(cfg.clone());
            ingest(&env, &fs, &a, tenant, &key, start_ms).await;
            tenant
        }
    };

    let mut level_bytes = [0u64; 4];
    let mut level_files = [0usize; 4];
    for (i, level) in SegmentLevel::ALL.into_iter().enumerate() {
        for s in env
            .meta
            .list_flow_segments(tenant, level, i64::MIN, i64::MAX)
            .await
            .expect("segments")
        {
            level_bytes[i] += s.bytes;
            level_files[i] += 1;
        }
    }
    let flows = a.flows.max(1) as f64;
    println!("raw_files: {}", level_files[0]);
    println!("m1_files: {}", level_files[1]);
    println!("h1_files: {}", level_files[2]);
    println!("d1_files: {}", level_files[3]);
    println!("raw_bytes_per_flow: {:.2}", level_bytes[0] as f64 / flows);
    println!("m1_bytes_per_flow: {:.2}", level_bytes[1] as f64 / flows);
    println!("h1_bytes_per_flow: {:.2}", level_bytes[2] as f64 / flows);
    println!("d1_bytes_per_flow: {:.2}", level_bytes[3] as f64 / flows);
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
        println!("top10_{name}_approximate: {}", ans.approximate);
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
    let ans = fresh.top_n(tenant, &key, &q).await.expect("top_n raw");
    println!(
        "top10_src_raw_scan_flows_per_sec: {:.0}",
        ans.rows_scanned as f64 / t.elapsed().as_secs_f64()
    );
    println!("peak_rss_mib: {:.0}", peak_rss_mib());
}
