//! Appends are idempotent per batch, retention removes expired segments
//! from disk, and the approximate flag is set exactly when a cut rollup
//! answered.

mod common;

use std::sync::Arc;

use common::env::{files_under, Env};
use common::fold;
use common::gen::Generator;
use rampart_flow::FlowRecord;
use rampart_flowstore::*;
use rampart_store::{BatchState, SegmentLevel, Store};

const T0: i64 = 1_790_002_800_000;
const H: i64 = HOUR_MS;

async fn totals(
    fs: &FlowStore,
    t: rampart_store::TenantId,
    k: &DataKey,
    lo: i64,
    hi: i64,
) -> [u64; 4] {
    let a = fs.totals(t, k, lo, hi, None).await.unwrap().data;
    [a.bytes, a.packets, a.flows, a.records]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_the_same_batches_twice_counts_once() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (t, devs) = env.tenant("alpha", 2).await;
    let key = DataKey::from_bytes([1; 32]);
    let rows = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (2 * H - 240_000) as u64,
        3_000,
        100,
        &devs,
    )
    .rows(3_000);
    let b1 = env.batch(t, devs[0]).await;
    let b2 = env.batch(t, devs[1]).await;
    let first = fs.append(t, &key, &[b1, b2], rows.clone()).await.unwrap();
    assert_eq!(first.rows, 3_000);
    assert_eq!(first.segments, 4, "raw and m1 for each of two hours");
    let want = fold::totals(&rows, T0, T0 + 2 * H, &|_| true);
    assert_eq!(totals(&fs, t, &key, T0, T0 + 2 * H).await, want);

    // The spool processor retrying the same batches: nothing is written.
    let again = fs.append(t, &key, &[b2, b1], rows.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.segments, 0);
    assert_eq!(totals(&fs, t, &key, T0, T0 + 2 * H).await, want);

    // Mixing processed and unprocessed batches is refused; nothing changes.
    let b3 = env.batch(t, devs[0]).await;
    let e = fs
        .append(t, &key, &[b1, b3], rows[..10].to_vec())
        .await
        .unwrap_err();
    assert!(matches!(e, FlowStoreError::PartlyProcessed(1)), "{e}");
    let meta: &dyn Store = env.meta.as_ref();
    assert_eq!(
        meta.batch_states(t, &[b3]).await.unwrap(),
        vec![BatchState::Pending]
    );
    // So is a batch that was never recorded.
    let e = fs
        .append(
            t,
            &key,
            &[(devs[0], uuid::Uuid::new_v4())],
            rows[..10].to_vec(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FlowStoreError::UnknownBatch { .. }), "{e}");
    // A batch with no rows (rejected by the processor) is marked processed.
    let st = fs.append(t, &key, &[b3], Vec::new()).await.unwrap();
    assert_eq!(st.segments, 0);
    assert_eq!(
        meta.batch_states(t, &[b3]).await.unwrap(),
        vec![BatchState::Processed]
    );
    assert_eq!(totals(&fs, t, &key, T0, T0 + 2 * H).await, want);

    // Two processors on the same batch (or one redoing it after a crash
    // between its blob writes and its commit) write the same blob keys, and
    // only one commit lands: the rows count once and no file is duplicated.
    let b4 = env.batch(t, devs[0]).await;
    let more = Generator::new(2, (T0 + 120_000) as u64, 600_000, 200, 20, &devs).rows(200);
    let before = files_under(&env.blob_dir()).len();
    let ids = [b4];
    let (r1, r2) = tokio::join!(
        fs.append(t, &key, &ids, more.clone()),
        fs.append(t, &key, &ids, more.clone())
    );
    let outcomes = [r1, r2];
    let landed = outcomes
        .iter()
        .filter(|r| matches!(r, Ok(s) if !s.duplicate))
        .count();
    assert_eq!(landed, 1, "{outcomes:?}");
    for r in &outcomes {
        match r {
            Ok(_) => {}
            Err(FlowStoreError::Store(rampart_store::StoreError::Raced(_))) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        files_under(&env.blob_dir()).len(),
        before + 2,
        "one raw and one m1 file"
    );
    let mut all = rows.clone();
    all.extend(more);
    assert_eq!(
        totals(&fs, t, &key, T0, T0 + 2 * H).await,
        fold::totals(&all, T0, T0 + 2 * H, &|_| true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_expired_segments_from_disk() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (t, devs) = env.tenant("alpha", 1).await;
    let key = DataKey::from_bytes([1; 32]);
    let now = T0 + 40 * DAY_MS;
    let old = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (H - 240_000) as u64,
        500,
        50,
        &devs,
    )
    .rows(500);
    let recent_start = now - DAY_MS;
    let recent = Generator::new(
        2,
        (recent_start + 120_000) as u64,
        (H - 240_000) as u64,
        500,
        50,
        &devs,
    )
    .rows(500);
    for rows in [&old, &recent] {
        let b = env.batch(t, devs[0]).await;
        fs.append(t, &key, &[b], rows.clone()).await.unwrap();
    }
    fs.compact(t, &key, now).await.unwrap();
    let meta: &dyn Store = env.meta.as_ref();
    let old_segs: Vec<_> = {
        let mut v = Vec::new();
        for level in SegmentLevel::ALL {
            v.extend(meta.list_flow_segments(t, level, T0, T0 + H).await.unwrap());
        }
        v
    };
    let levels: Vec<SegmentLevel> = old_segs.iter().map(|s| s.level).collect();
    assert_eq!(
        levels,
        SegmentLevel::ALL,
        "raw, m1, h1 and d1 of the old hour"
    );
    for s in &old_segs {
        assert!(env.blob_dir().join(&s.blob_key).exists());
    }
    let files_before = files_under(&env.blob_dir()).len();

    let st = fs.enforce_retention(t, now, 32).await.unwrap();
    assert_eq!(st.segments, 4);
    assert_eq!(st.bytes, old_segs.iter().map(|s| s.bytes).sum::<u64>());
    for s in &old_segs {
        assert!(
            !env.blob_dir().join(&s.blob_key).exists(),
            "{} gone from disk",
            s.blob_key
        );
    }
    assert_eq!(files_under(&env.blob_dir()).len(), files_before - 4);
    for level in SegmentLevel::ALL {
        assert!(meta
            .list_flow_segments(t, level, T0, T0 + H)
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(totals(&fs, t, &key, T0, T0 + H).await, [0; 4]);
    // The recent hour is untouched.
    assert_eq!(
        totals(&fs, t, &key, recent_start, recent_start + H).await,
        fold::totals(&recent, recent_start, recent_start + H, &|_| true)
    );
    // Idempotent: a second pass finds nothing more.
    assert_eq!(
        fs.enforce_retention(t, now, 32).await.unwrap(),
        RetentionStats::default()
    );
    // A blob already deleted by an interrupted pass does not stop the next.
    let seg = meta
        .list_flow_segments(t, SegmentLevel::Raw, recent_start, recent_start + H)
        .await
        .unwrap();
    std::fs::remove_file(env.blob_dir().join(&seg[0].blob_key)).unwrap();
    let st = fs
        .enforce_retention(t, now + 40 * DAY_MS, 32)
        .await
        .unwrap();
    assert_eq!(st.segments, 4, "raw, m1, h1 and d1 of the recent hour");
    assert!(files_under(&env.blob_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_exactly_when_a_cut_rollup_answers() {
    let env = Env::new().await;
    // Three keys per bucket and dimension: many sources are cut, the two
    // directions and three protocols never are.
    let fs = env.flow_store(FlowStoreConfig {
        m1_top_k: 3,
        h1_top_k: 3,
        d1_top_k: 3,
        ..Default::default()
    });
    let (t, devs) = env.tenant("alpha", 1).await;
    let key = DataKey::from_bytes([1; 32]);
    let rows = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (2 * H - 240_000) as u64,
        3_000,
        200,
        &devs,
    )
    .rows(3_000);
    let b = env.batch(t, devs[0]).await;
    fs.append(t, &key, &[b], rows.clone()).await.unwrap();
    let meta: &dyn Store = env.meta.as_ref();
    assert!(meta
        .list_flow_segments(t, SegmentLevel::M1, T0, T0 + 2 * H)
        .await
        .unwrap()
        .iter()
        .all(|s| s.cut));

    let q = |dim| TopQuery {
        start_ms: T0,
        end_ms: T0 + 2 * H,
        dim,
        metric: Metric::Bytes,
        n: 10,
        filter: None,
    };
    let check = |level: Level| {
        let fs = &fs;
        let key = &key;
        let rows = &rows;
        async move {
            let src = fs.top_n(t, key, &q(Dim::Src)).await.unwrap();
            assert_eq!(src.level, level);
            assert!(src.approximate, "sources were cut ({level:?})");
            for dim in [Dim::Proto, Dim::Direction] {
                let a = fs.top_n(t, key, &q(dim)).await.unwrap();
                assert_eq!(a.level, level);
                assert!(!a.approximate, "{dim:?} was not cut ({level:?})");
                fold::check_top(
                    &a.data,
                    &fold::top(rows, dim, T0, T0 + 2 * H, &|_| true),
                    Metric::Bytes,
                    10,
                    "uncut",
                );
            }
            // Totals come from the uncut totals rows.
            let tot = fs.totals(t, key, T0, T0 + 2 * H, None).await.unwrap();
            assert!(!tot.approximate);
            assert_eq!(
                [
                    tot.data.bytes,
                    tot.data.packets,
                    tot.data.flows,
                    tot.data.records
                ],
                fold::totals(rows, T0, T0 + 2 * H, &|_| true)
            );
            // A stack over a cut dimension is approximate, yet sums to the
            // exact total in every bucket.
            let sq = SeriesQuery {
                start_ms: T0,
                end_ms: T0 + 2 * H,
                bucket_ms: H,
                metric: Metric::Bytes,
                dim: Some(Dim::Src),
                top: 3,
                filter: None,
            };
            let s = fs.series(t, key, &sq).await.unwrap();
            assert!(s.approximate);
            let total = fs
                .series(
                    t,
                    key,
                    &SeriesQuery {
                        dim: None,
                        ..sq.clone()
                    },
                )
                .await
                .unwrap();
            assert!(!total.approximate);
            for (i, tv) in total.data.series[0].1.iter().enumerate() {
                let sum: u64 = s.data.series.iter().map(|(_, v)| v[i]).sum();
                assert_eq!(sum, *tv);
            }
            let p = fs
                .series(
                    t,
                    key,
                    &SeriesQuery {
                        dim: Some(Dim::Proto),
                        ..sq
                    },
                )
                .await
                .unwrap();
            assert!(!p.approximate);
            // Raw rows are never approximate, and exact.
            let all: RowFilter = Arc::new(|_: &FlowRecord| true);
            let raw = fs
                .top_n(
                    t,
                    key,
                    &TopQuery {
                        filter: Some(all),
                        ..q(Dim::Src)
                    },
                )
                .await
                .unwrap();
            assert_eq!(raw.level, Level::Raw);
            assert!(!raw.approximate);
            fold::check_top(
                &raw.data,
                &fold::top(rows, Dim::Src, T0, T0 + 2 * H, &|_| true),
                Metric::Bytes,
                10,
                "raw",
            );
        }
    };
    check(Level::Minute).await;
    fs.compact(t, &key, T0 + 3 * H).await.unwrap();
    assert!(meta
        .list_flow_segments(t, SegmentLevel::H1, T0, T0 + 2 * H)
        .await
        .unwrap()
        .iter()
        .all(|s| s.cut));
    check(Level::Hour).await;

    // With rollups that keep every key, the same queries are exact.
    let env2 = Env::new().await;
    let fs2 = env2.flow_store(FlowStoreConfig::default());
    let (t2, d2) = env2.tenant("bravo", 1).await;
    let rows2 = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (2 * H - 240_000) as u64,
        3_000,
        200,
        &d2,
    )
    .rows(3_000);
    let b2 = env2.batch(t2, d2[0]).await;
    fs2.append(t2, &key, &[b2], rows2.clone()).await.unwrap();
    let a = fs2.top_n(t2, &key, &q(Dim::Src)).await.unwrap();
    assert!(!a.approximate);
    fold::check_top(
        &a.data,
        &fold::top(&rows2, Dim::Src, T0, T0 + 2 * H, &|_| true),
        Metric::Bytes,
        10,
        "uncut sources",
    );
}

/// Merging the cut 1-minute rollups of an open hour keeps them marked cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_cut_rollups_stay_approximate() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig {
        m1_top_k: 3,
        open_merge_files: 2,
        ..Default::default()
    });
    let (t, devs) = env.tenant("alpha", 1).await;
    let key = DataKey::from_bytes([1; 32]);
    let rows = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (H - 240_000) as u64,
        2_000,
        200,
        &devs,
    )
    .rows(2_000);
    for chunk in rows.chunks(500) {
        let b = env.batch(t, devs[0]).await;
        fs.append(t, &key, &[b], chunk.to_vec()).await.unwrap();
    }
    let st = fs.compact(t, &key, T0 + 30 * 60_000).await.unwrap();
    assert_eq!(st.open_merges, 1);
    let q = |dim| TopQuery {
        start_ms: T0,
        end_ms: T0 + H,
        dim,
        metric: Metric::Bytes,
        n: 10,
        filter: None,
    };
    let src = fs.top_n(t, &key, &q(Dim::Src)).await.unwrap();
    assert_eq!(src.level, Level::Minute);
    assert!(src.approximate);
    let proto = fs.top_n(t, &key, &q(Dim::Proto)).await.unwrap();
    assert!(!proto.approximate);
    fold::check_top(
        &proto.data,
        &fold::top(&rows, Dim::Proto, T0, T0 + H, &|_| true),
        Metric::Bytes,
        10,
        "proto",
    );
    let tot = fs.totals(t, &key, T0, T0 + H, None).await.unwrap();
    assert_eq!(
        [
            tot.data.bytes,
            tot.data.packets,
            tot.data.flows,
            tot.data.records
        ],
        fold::totals(&rows, T0, T0 + H, &|_| true)
    );
}
