//! Search pages walk every matching row exactly once, in start order, even
//! with identical rows and with compaction rewriting the segments between
//! two pages; cursors are checked, not trusted.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::env::Env;
use common::fold;
use common::gen::Generator;
use rampart_flow::FlowRecord;
use rampart_flowstore::*;
use rampart_store::TenantId;

const T0: i64 = 1_790_002_800_000;
const H: i64 = HOUR_MS;

fn multiset(rows: impl IntoIterator<Item = FlowRow>) -> HashMap<FlowRow, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// Pages through the whole window; compacts after page `compact_after`.
#[allow(clippy::too_many_arguments)] // a test helper: each knob is one query field
async fn walk(
    fs: &FlowStore,
    tenant: TenantId,
    key: &DataKey,
    lo: i64,
    hi: i64,
    limit: usize,
    filter: Option<RowFilter>,
    compact_after: Option<usize>,
) -> Vec<FlowRow> {
    let mut out = Vec::new();
    let mut cursor = None;
    for page in 0.. {
        let a = fs
            .search(
                tenant,
                key,
                &SearchQuery {
                    start_ms: lo,
                    end_ms: hi,
                    filter: filter.clone(),
                    limit,
                    cursor: cursor.take(),
                },
            )
            .await
            .unwrap();
        assert_eq!(a.level, Level::Raw);
        assert!(a.data.rows.len() <= limit);
        out.extend(a.data.rows.iter().copied());
        if compact_after == Some(page) {
            let st = fs.compact(tenant, key, hi + 10 * 60_000).await.unwrap();
            assert!(st.hours > 0, "compaction rewrote segments mid-walk");
        }
        match a.data.next {
            // Cursors survive a round trip through their text form.
            Some(c) => cursor = Some(c.to_string().parse::<Cursor>().unwrap()),
            None => break,
        }
        assert!(page < 10_000, "search does not end");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_row_exactly_once() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (tenant, devs) = env.tenant("alpha", 2).await;
    let key = DataKey::from_bytes([5; 32]);
    let mut g = Generator::new(
        11,
        (T0 + 180_000) as u64,
        (2 * H - 360_000) as u64,
        4_000,
        200,
        &devs,
    );
    let mut rows = g.rows(4_000);
    // Identical rows, within one append and across appends: a cursor that
    // named a position by content alone would skip or repeat them.
    let dups: Vec<FlowRow> = rows.iter().step_by(37).copied().collect();
    rows.extend(dups.iter().copied());
    rows.extend(dups.iter().take(20).copied());
    for chunk in rows.chunks(1_500) {
        let b = env.batch(tenant, devs[0]).await;
        fs.append(tenant, &key, &[b], chunk.to_vec()).await.unwrap();
    }
    let (lo, hi) = (T0, T0 + 2 * H);
    let want = multiset(rows.iter().copied().filter(|r| fold::in_window(r, lo, hi)));

    // Page sizes that do and do not divide the count, one smaller than the
    // largest group of identical rows.
    for limit in [97, 1, 1_031, 10_000] {
        if limit == 1 {
            // Walking 4k pages of one is slow in debug builds: walk a slice.
            let part = walk(&fs, tenant, &key, lo, lo + 15 * 60_000, 1, None, None).await;
            let want_part = multiset(
                rows.iter()
                    .copied()
                    .filter(|r| fold::in_window(r, lo, lo + 15 * 60_000)),
            );
            assert_eq!(multiset(part), want_part, "limit 1");
            continue;
        }
        let got = walk(&fs, tenant, &key, lo, hi, limit, None, None).await;
        assert!(
            got.windows(2)
                .all(|w| w[0].flow.start_ms <= w[1].flow.start_ms),
            "limit {limit}: ordered by start"
        );
        assert_eq!(got.len(), want.values().sum::<usize>(), "limit {limit}");
        assert_eq!(
            multiset(got),
            want,
            "limit {limit}: every row exactly once, fields intact"
        );
    }

    // A filter, a window inside the data, and compaction halfway through.
    let tcp: RowFilter = Arc::new(|f: &FlowRecord| f.protocol == 6);
    let (lo2, hi2) = (T0 + 20 * 60_000 + 123, T0 + 2 * H - 7);
    let got = walk(&fs, tenant, &key, lo2, hi2, 250, Some(tcp), Some(2)).await;
    let want2 = multiset(
        rows.iter()
            .copied()
            .filter(|r| fold::in_window(r, lo2, hi2) && r.flow.protocol == 6),
    );
    assert_eq!(multiset(got), want2, "filtered walk across a compaction");

    // After compaction the whole walk is still exact.
    let got = walk(&fs, tenant, &key, lo, hi, 997, None, None).await;
    assert_eq!(multiset(got), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_foreign_cursors_are_refused() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (a, devs_a) = env.tenant("alpha", 1).await;
    let (b, _) = env.tenant("bravo", 1).await;
    let key_a = DataKey::from_bytes([5; 32]);
    let key_b = DataKey::from_bytes([6; 32]);
    let rows = Generator::new(3, (T0 + 60_000) as u64, 600_000, 300, 50, &devs_a).rows(300);
    let batch = env.batch(a, devs_a[0]).await;
    fs.append(a, &key_a, &[batch], rows).await.unwrap();
    let q = SearchQuery {
        start_ms: T0,
        end_ms: T0 + H,
        filter: None,
        limit: 10,
        cursor: None,
    };
    let first = fs.search(a, &key_a, &q).await.unwrap();
    let cursor = first.data.next.clone().unwrap();

    // Tenant B cannot continue tenant A's search, with either key.
    for (t, k) in [(b, &key_b), (b, &key_a), (a, &key_b)] {
        let e = fs
            .search(
                t,
                k,
                &SearchQuery {
                    cursor: Some(cursor.clone()),
                    ..q.clone()
                },
            )
            .await
            .unwrap_err();
        assert!(e.is_bad_request(), "{e}");
    }
    // Edited cursors are errors, never panics or other tenants' rows.
    let text = cursor.to_string();
    for i in (0..text.len()).step_by(7) {
        let mut bytes = text.clone().into_bytes();
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        let edited = String::from_utf8(bytes).unwrap();
        match edited.parse::<Cursor>() {
            Err(e) => assert!(e.is_bad_request()),
            Ok(c) => {
                let e = fs
                    .search(
                        a,
                        &key_a,
                        &SearchQuery {
                            cursor: Some(c),
                            ..q.clone()
                        },
                    )
                    .await
                    .unwrap_err();
                assert!(matches!(e, FlowStoreError::BadCursor), "edit at {i}: {e}");
            }
        }
    }
    for junk in ["", "%%%", "AAAA", &"A".repeat(5_000)] {
        assert!(junk.parse::<Cursor>().is_err(), "{junk:?}");
    }
    // The genuine cursor still works.
    let second = fs
        .search(
            a,
            &key_a,
            &SearchQuery {
                cursor: Some(cursor),
                ..q
            },
        )
        .await
        .unwrap();
    assert_eq!(second.data.rows.len(), 10);
    assert_ne!(second.data.rows, first.data.rows);
}
