//! Top-N, totals and series over generated rows equal a HashMap fold over
//! the same rows, at every level the planner can choose: raw rows, 1-minute
//! rollups, 1-hour rollups after compaction, and mixes of them.

mod common;

use std::sync::Arc;

use common::env::Env;
use common::fold;
use common::gen::Generator;
use rampart_flow::FlowRecord;
use rampart_flowstore::*;
use rampart_store::TenantId;

const T0: i64 = 1_790_002_800_000; // an hour boundary
const H: i64 = HOUR_MS;

/// Rollups big enough never to be cut, so every answer must be exact.
fn exact() -> FlowStoreConfig {
    FlowStoreConfig {
        m1_top_k: 1_000_000,
        h1_top_k: 1_000_000,
        d1_top_k: 1_000_000,
        ..Default::default()
    }
}

struct Case<'a> {
    fs: &'a FlowStore,
    tenant: TenantId,
    key: &'a DataKey,
    rows: &'a [FlowRow],
}

impl Case<'_> {
    /// Checks every query over `[lo, hi)` and the level they were read at.
    async fn check(&self, lo: i64, hi: i64, filter: Option<RowFilter>, level: Level, what: &str) {
        let pred_filter = filter.clone();
        let pred = move |f: &FlowRecord| pred_filter.as_ref().is_none_or(|p| p(f));
        for dim in Dim::ALL {
            for metric in [Metric::Bytes, Metric::Packets, Metric::Flows] {
                let q = TopQuery {
                    start_ms: lo,
                    end_ms: hi,
                    dim,
                    metric,
                    n: 5_000,
                    filter: filter.clone(),
                };
                let a = self.fs.top_n(self.tenant, self.key, &q).await.unwrap();
                let what = format!("{what}: top {dim:?} by {metric:?}");
                assert_eq!(a.level, level, "{what}");
                assert!(!a.approximate, "{what}");
                let expect = fold::top(self.rows, dim, lo, hi, &pred);
                fold::check_top(&a.data, &expect, metric, 5_000, &what);
                // A short top-N is the head of the long one.
                let short = self
                    .fs
                    .top_n(self.tenant, self.key, &TopQuery { n: 3, ..q })
                    .await
                    .unwrap();
                fold::check_top(&short.data, &expect, metric, 3, &what);
            }
        }
        let t = self
            .fs
            .totals(self.tenant, self.key, lo, hi, filter.clone())
            .await
            .unwrap();
        let want = fold::totals(self.rows, lo, hi, &pred);
        assert_eq!(
            [t.data.bytes, t.data.packets, t.data.flows, t.data.records],
            want,
            "{what}: totals"
        );
        assert!(want[3] > 0, "{what}: the window holds rows");
        assert_eq!(t.level, level, "{what}: totals level");
    }

    /// Checks a total series and a stacked one.
    async fn check_series(
        &self,
        lo: i64,
        hi: i64,
        width: i64,
        filter: Option<RowFilter>,
        level: Level,
        what: &str,
    ) {
        let pf = filter.clone();
        let keep = move |r: &FlowRow| pf.as_ref().is_none_or(|p| p(&r.flow));
        for metric in [Metric::Bytes, Metric::Flows] {
            let q = SeriesQuery {
                start_ms: lo,
                end_ms: hi,
                bucket_ms: width,
                metric,
                dim: None,
                top: 3,
                filter: filter.clone(),
            };
            let a = self.fs.series(self.tenant, self.key, &q).await.unwrap();
            let (starts, total) = fold::series(self.rows, lo, hi, width, metric, &keep);
            assert_eq!(a.data.bucket_starts, starts, "{what}: buckets");
            assert_eq!(
                a.data.series,
                vec![(SeriesLabel::Total, total.clone())],
                "{what}: total series"
            );
            assert_eq!(a.level, level, "{what}: series level");

            for dim in [Dim::Src, Dim::DstPort, Dim::Proto] {
                let a = self
                    .fs
                    .series(
                        self.tenant,
                        self.key,
                        &SeriesQuery {
                            dim: Some(dim),
                            ..q.clone()
                        },
                    )
                    .await
                    .unwrap();
                assert!(!a.approximate);
                // The stacked keys are the fold's top 3 over the window.
                let pf = filter.clone();
                let pred = move |f: &FlowRecord| pf.as_ref().is_none_or(|p| p(f));
                let per_key = fold::top(self.rows, dim, lo, hi, &pred);
                let mi = fold::metric_index(metric);
                let mut ranked: Vec<(DimValue, u64)> =
                    per_key.iter().map(|(k, v)| (*k, v[mi])).collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                ranked.truncate(3);
                assert_eq!(
                    a.data.series.len(),
                    ranked.len() + 1,
                    "{what}: {dim:?} stack size"
                );
                let mut other = total.clone();
                for ((label, vals), (k, _)) in a.data.series.iter().zip(&ranked) {
                    assert_eq!(*label, SeriesLabel::Key(*k), "{what}: {dim:?} stacked key");
                    let k = *k;
                    let keep2 = keep.clone();
                    let (_, want) =
                        fold::series(self.rows, lo, hi, width, metric, &move |r: &FlowRow| {
                            keep2(r) && fold::natural(dim, r) == k
                        });
                    assert_eq!(vals, &want, "{what}: {dim:?} values of {k:?}");
                    for (o, v) in other.iter_mut().zip(&want) {
                        *o -= v;
                    }
                }
                assert_eq!(
                    a.data.series.last(),
                    Some(&(SeriesLabel::Other, other)),
                    "{what}: {dim:?} other"
                );
            }
        }
    }
}

async fn append_all(
    env: &Env,
    fs: &FlowStore,
    tenant: TenantId,
    key: &DataKey,
    devs: &[rampart_store::DeviceId],
    rows: &[FlowRow],
    chunks: usize,
) {
    for (i, chunk) in rows.chunks(rows.len().div_ceil(chunks)).enumerate() {
        let b = env.batch(tenant, devs[i % devs.len()]).await;
        let st = fs.append(tenant, key, &[b], chunk.to_vec()).await.unwrap();
        assert_eq!(st.rows, chunk.len() as u64);
        assert!(!st.duplicate);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_an_independent_fold_at_every_level() {
    let env = Env::new().await;
    let fs = env.flow_store(exact());
    let (tenant, devs) = env.tenant("alpha", 3).await;
    let key = DataKey::from_bytes([1; 32]);
    // Three hours of flows (ends from T0 + 3 min, durations up to 2 min).
    let mut g = Generator::new(
        7,
        (T0 + 3 * 60_000) as u64,
        (3 * H - 6 * 60_000) as u64,
        12_000,
        300,
        &devs,
    );
    let mut rows = g.rows(12_000);
    append_all(&env, &fs, tenant, &key, &devs, &rows, 3).await;
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    let dport443: RowFilter = Arc::new(|f: &FlowRecord| f.dst_port == 443 || f.protocol == 17);
    let everything: RowFilter = Arc::new(|_: &FlowRecord| true);

    // Before compaction: whole hours come from the 1-minute rollups.
    c.check(T0, T0 + 3 * H, None, Level::Minute, "open hours")
        .await;
    c.check(
        T0 + 30_500,
        T0 + 2 * H + 90_250,
        None,
        Level::Raw,
        "minute fractions",
    )
    .await;
    c.check(
        T0,
        T0 + 3 * H,
        Some(dport443.clone()),
        Level::Raw,
        "filtered",
    )
    .await;
    c.check(
        T0,
        T0 + 3 * H,
        Some(everything.clone()),
        Level::Raw,
        "filter keeping all",
    )
    .await;
    c.check_series(
        T0,
        T0 + 3 * H,
        300_000,
        None,
        Level::Minute,
        "5-minute series",
    )
    .await;
    c.check_series(
        T0 + 7_000,
        T0 + 2 * H,
        90_000,
        None,
        Level::Raw,
        "90-second series",
    )
    .await;

    // Compaction closes the three hours (not the one still in its grace).
    let st = fs
        .compact(tenant, &key, T0 + 3 * H + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!(st.hours, 3, "{st:?}");
    assert_eq!(st.rows, rows.len() as u64);
    let again = fs
        .compact(tenant, &key, T0 + 3 * H + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!(again.hours, 0, "nothing left to compact");
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    c.check(T0, T0 + 3 * H, None, Level::Hour, "compacted hours")
        .await;
    c.check(
        T0 + 10 * 60_000,
        T0 + 2 * H,
        None,
        Level::Minute,
        "partial compacted hour",
    )
    .await;
    c.check(
        T0 + 30_500,
        T0 + 2 * H + 90_250,
        None,
        Level::Raw,
        "compacted, minute fractions",
    )
    .await;
    c.check(
        T0,
        T0 + 3 * H,
        Some(dport443.clone()),
        Level::Raw,
        "compacted, filtered",
    )
    .await;
    c.check_series(T0, T0 + 3 * H, H, None, Level::Hour, "hourly series")
        .await;
    c.check_series(
        T0,
        T0 + 3 * H,
        300_000,
        None,
        Level::Minute,
        "compacted 5-minute series",
    )
    .await;
    c.check_series(
        T0,
        T0 + 3 * H,
        300_000,
        Some(dport443.clone()),
        Level::Raw,
        "filtered series",
    )
    .await;

    // Late rows for a compacted hour (an agent back from a day offline):
    // the whole-hour answer counts them through their 1-minute rollup.
    let mut late = Generator::new(
        8,
        (T0 + H + 180_000) as u64,
        (H - 360_000) as u64,
        700,
        50,
        &devs,
    )
    .rows(700);
    append_all(&env, &fs, tenant, &key, &devs, &late, 1).await;
    rows.append(&mut late);
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    c.check(
        T0,
        T0 + 3 * H,
        None,
        Level::Hour,
        "compacted hours with late rows",
    )
    .await;
    let st = fs
        .compact(tenant, &key, T0 + 3 * H + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!(st.hours, 1, "only the hour with late rows: {st:?}");
    c.check(T0, T0 + 3 * H, None, Level::Hour, "recompacted")
        .await;
    c.check(
        T0 + 10 * 60_000,
        T0 + 2 * H,
        None,
        Level::Minute,
        "recompacted, partial",
    )
    .await;

    // Files stay bounded: one raw, one m1 and one h1 per compacted hour.
    let meta: &dyn rampart_store::Store = env.meta.as_ref();
    use rampart_store::SegmentLevel::{Raw, H1, M1};
    for level in [Raw, M1, H1] {
        let segs = meta
            .list_flow_segments(tenant, level, T0, T0 + 3 * H)
            .await
            .unwrap();
        assert_eq!(segs.len(), 3, "{level:?}");
        assert!(segs.iter().all(|s| s.compacted && !s.cut));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_invalid_queries() {
    let env = Env::new().await;
    let fs = env.flow_store(exact());
    let (tenant, _) = env.tenant("quiet", 1).await;
    let key = DataKey::from_bytes([1; 32]);
    let q = TopQuery {
        start_ms: T0,
        end_ms: T0 + H,
        dim: Dim::Src,
        metric: Metric::Bytes,
        n: 10,
        filter: None,
    };
    let a = fs.top_n(tenant, &key, &q).await.unwrap();
    assert!(a.data.is_empty());
    assert_eq!(a.rows_scanned, 0);
    let t = fs.totals(tenant, &key, T0, T0, None).await.unwrap();
    assert_eq!(t.data, Totals::default());
    for bad in [0, MAX_TOP_N + 1] {
        let e = fs
            .top_n(
                tenant,
                &key,
                &TopQuery {
                    n: bad,
                    ..q.clone()
                },
            )
            .await
            .unwrap_err();
        assert!(e.is_bad_request(), "{e}");
    }
    let e = fs
        .top_n(
            tenant,
            &key,
            &TopQuery {
                start_ms: T0 + 1,
                end_ms: T0,
                ..q.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_bad_request());
    let sq = SeriesQuery {
        start_ms: 0,
        end_ms: T0,
        bucket_ms: 60_000,
        metric: Metric::Bytes,
        dim: None,
        top: 5,
        filter: None,
    };
    let e = fs.series(tenant, &key, &sq).await.unwrap_err();
    assert!(
        e.is_bad_request() && e.to_string().contains("buckets"),
        "{e}"
    );
    let e = fs
        .series(
            tenant,
            &key,
            &SeriesQuery {
                bucket_ms: 0,
                ..sq.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_bad_request());
    let e = fs
        .series(
            tenant,
            &key,
            &SeriesQuery {
                start_ms: T0 - H,
                dim: Some(Dim::Src),
                top: 0,
                ..sq
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_bad_request());
    let e = fs
        .search(
            tenant,
            &key,
            &SearchQuery {
                start_ms: T0,
                end_ms: T0 + H,
                filter: None,
                limit: MAX_SEARCH_LIMIT + 1,
                cursor: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_bad_request());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_hour_keeps_few_files_and_exact_answers() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig {
        open_merge_files: 4,
        ..exact()
    });
    let (tenant, devs) = env.tenant("alpha", 2).await;
    let key = DataKey::from_bytes([1; 32]);
    // Twelve small appends into one hour, as a busy spool processor does.
    let rows = Generator::new(
        3,
        (T0 + 180_000) as u64,
        (H - 360_000) as u64,
        3_000,
        200,
        &devs,
    )
    .rows(3_000);
    append_all(&env, &fs, tenant, &key, &devs, &rows, 12).await;
    let meta: &dyn rampart_store::Store = env.meta.as_ref();
    let count = |level| async move {
        meta.list_flow_segments(tenant, level, T0, T0 + H)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count(rampart_store::SegmentLevel::M1).await, 12);
    // The hour is still open at T0 + 50 min.
    let st = fs.compact(tenant, &key, T0 + 50 * 60_000).await.unwrap();
    assert_eq!((st.hours, st.open_merges), (0, 1), "{st:?}");
    assert_eq!(count(rampart_store::SegmentLevel::M1).await, 1);
    assert_eq!(count(rampart_store::SegmentLevel::Raw).await, 1);
    assert_eq!(count(rampart_store::SegmentLevel::H1).await, 0);
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    c.check(T0, T0 + H, None, Level::Minute, "merged open hour")
        .await;
    c.check(
        T0 + 600_500,
        T0 + 2_400_250,
        None,
        Level::Raw,
        "merged open hour, fractions",
    )
    .await;
    // More appends, then the hour closes: one file of each level.
    let more = Generator::new(
        4,
        (T0 + 180_000) as u64,
        (H - 360_000) as u64,
        500,
        50,
        &devs,
    )
    .rows(500);
    append_all(&env, &fs, tenant, &key, &devs, &more, 2).await;
    let mut all = rows.clone();
    all.extend(more);
    let st = fs
        .compact(tenant, &key, T0 + H + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!(st.hours, 1);
    use rampart_store::SegmentLevel::{Raw, H1, M1};
    for level in [Raw, M1, H1] {
        assert_eq!(count(level).await, 1, "{level:?}");
    }
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &all,
    };
    c.check(T0, T0 + H, None, Level::Hour, "closed after merges")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_days_come_from_day_rollups() {
    const D0: i64 = 20_718 * DAY_MS;
    let env = Env::new().await;
    let fs = env.flow_store(exact());
    let (tenant, devs) = env.tenant("alpha", 2).await;
    let key = DataKey::from_bytes([1; 32]);
    let mut rows = Generator::new(
        5,
        (D0 + 180_000) as u64,
        (2 * DAY_MS - 360_000) as u64,
        4_800,
        200,
        &devs,
    )
    .rows(4_800);
    append_all(&env, &fs, tenant, &key, &devs, &rows, 4).await;
    let st = fs
        .compact(tenant, &key, D0 + 2 * DAY_MS + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!((st.hours, st.days), (48, 2), "{st:?}");
    let again = fs
        .compact(tenant, &key, D0 + 2 * DAY_MS + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!((again.hours, again.days), (0, 0), "day rollups are current");
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    c.check(D0, D0 + 2 * DAY_MS, None, Level::Day, "two whole days")
        .await;
    c.check(
        D0,
        D0 + DAY_MS + 5 * H,
        None,
        Level::Hour,
        "a day and five hours",
    )
    .await;
    c.check_series(
        D0,
        D0 + 2 * DAY_MS,
        DAY_MS,
        None,
        Level::Day,
        "daily series",
    )
    .await;
    c.check_series(
        D0,
        D0 + 2 * DAY_MS,
        6 * H,
        None,
        Level::Hour,
        "6-hour series",
    )
    .await;

    // Late rows in a compacted day count through their minute rollups...
    let mut late = Generator::new(
        6,
        (D0 + 5 * H + 180_000) as u64,
        (H - 360_000) as u64,
        300,
        30,
        &devs,
    )
    .rows(300);
    append_all(&env, &fs, tenant, &key, &devs, &late, 1).await;
    rows.append(&mut late);
    let c = Case {
        fs: &fs,
        tenant,
        key: &key,
        rows: &rows,
    };
    c.check(D0, D0 + 2 * DAY_MS, None, Level::Day, "with late rows")
        .await;
    // ...and compaction folds them into the hour, then the day.
    let st = fs
        .compact(tenant, &key, D0 + 2 * DAY_MS + 10 * 60_000)
        .await
        .unwrap();
    assert_eq!((st.hours, st.days), (1, 1), "{st:?}");
    c.check(D0, D0 + 2 * DAY_MS, None, Level::Day, "day recompacted")
        .await;
    let meta: &dyn rampart_store::Store = env.meta.as_ref();
    let d1 = meta
        .list_flow_segments(tenant, rampart_store::SegmentLevel::D1, D0, D0 + 2 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(d1.len(), 2);
    // Retention removes a day rollup with its day.
    let st = fs
        .enforce_retention(tenant, D0 + 2 * DAY_MS + DAY_MS / 2, 1)
        .await
        .unwrap();
    assert!(st.segments > 0);
    let d1 = meta
        .list_flow_segments(tenant, rampart_store::SegmentLevel::D1, D0, D0 + 2 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(d1.len(), 1, "the first day is gone");
}
