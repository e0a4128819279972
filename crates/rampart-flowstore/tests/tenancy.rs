//! A query never crosses tenants, and a segment opens only with its
//! tenant's key, at its own path.

mod common;

use common::env::{files_under, Env};
use common::gen::Generator;
use rampart_flowstore::*;
use rampart_store::{SegmentLevel, Store};

const T0: i64 = 1_790_002_800_000;
const H: i64 = HOUR_MS;

fn top(dim: Dim) -> TopQuery {
    TopQuery {
        start_ms: T0,
        end_ms: T0 + 2 * H,
        dim,
        metric: Metric::Bytes,
        n: 100,
        filter: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_other() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (a, devs_a) = env.tenant("alpha", 1).await;
    let (b, devs_b) = env.tenant("bravo", 1).await;
    let key_a = DataKey::from_bytes([1; 32]);
    let key_b = DataKey::from_bytes([2; 32]);
    let rows_a = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (H - 240_000) as u64,
        2_000,
        100,
        &devs_a,
    )
    .rows(2_000);
    let ba = env.batch(a, devs_a[0]).await;
    fs.append(a, &key_a, &[ba], rows_a).await.unwrap();

    // B's queries over the same window see nothing of A's.
    let ans = fs.top_n(b, &key_b, &top(Dim::Src)).await.unwrap();
    assert!(ans.data.is_empty());
    assert_eq!(ans.rows_scanned, 0);
    let t = fs.totals(b, &key_b, T0, T0 + 2 * H, None).await.unwrap();
    assert_eq!(t.data, Totals::default());
    let s = fs
        .search(
            b,
            &key_b,
            &SearchQuery {
                start_ms: T0,
                end_ms: T0 + 2 * H,
                filter: None,
                limit: 100,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert!(s.data.rows.is_empty() && s.data.next.is_none());

    // A's data answers A, and A's answer is warm in the cache...
    let ok = fs.top_n(a, &key_a, &top(Dim::Src)).await.unwrap();
    assert!(!ok.data.is_empty());
    // ...yet the wrong key gets nothing from it: the cache is keyed by key.
    for dim in [Dim::Src, Dim::Proto] {
        let e = fs.top_n(a, &key_b, &top(dim)).await.unwrap_err();
        assert!(matches!(e, FlowStoreError::Decrypt(_)), "{e}");
    }
    let e = fs
        .totals(a, &key_b, T0, T0 + 2 * H, None)
        .await
        .unwrap_err();
    assert!(matches!(e, FlowStoreError::Decrypt(_)), "{e}");

    // Compaction under the wrong key fails too, and changes nothing.
    assert!(fs.compact(a, &key_b, T0 + 3 * H).await.is_err());
    assert_eq!(
        fs.top_n(a, &key_a, &top(Dim::Src)).await.unwrap().data,
        ok.data
    );
    let _ = devs_b;
}

/// Destroying a tenant's key makes its segments unreadable: no other key,
/// and no other tenant's key, opens them; and a file copied to another path
/// or tenant does not open either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_open_only_with_their_key_tenant_and_path() {
    let env = Env::new().await;
    let fs = env.flow_store(FlowStoreConfig::default());
    let (a, devs_a) = env.tenant("alpha", 1).await;
    let (b, devs_b) = env.tenant("bravo", 1).await;
    let key_a = DataKey::from_bytes([1; 32]);
    let key_b = DataKey::from_bytes([2; 32]);
    // Two hours for A, one for B.
    let rows_a = Generator::new(
        1,
        (T0 + 120_000) as u64,
        (2 * H - 240_000) as u64,
        1_000,
        50,
        &devs_a,
    )
    .rows(1_000);
    let rows_b = Generator::new(
        2,
        (T0 + 120_000) as u64,
        (H - 240_000) as u64,
        500,
        50,
        &devs_b,
    )
    .rows(500);
    let ba = env.batch(a, devs_a[0]).await;
    fs.append(a, &key_a, &[ba], rows_a).await.unwrap();
    let bb = env.batch(b, devs_b[0]).await;
    fs.append(b, &key_b, &[bb], rows_b).await.unwrap();
    let meta: &dyn Store = env.meta.as_ref();
    let seg_a: Vec<_> = meta
        .list_flow_segments(a, SegmentLevel::Raw, T0, T0 + 2 * H)
        .await
        .unwrap();
    let seg_b = meta
        .list_flow_segments(b, SegmentLevel::Raw, T0, T0 + H)
        .await
        .unwrap();
    assert_eq!(seg_a.len(), 2);
    assert_eq!(seg_b.len(), 1);
    let path = |k: &str| env.blob_dir().join(k);
    let plain_search = SearchQuery {
        start_ms: T0,
        end_ms: T0 + H,
        filter: None,
        limit: 10,
        cursor: None,
    };

    // The bytes on disk are not Parquet: nothing readable without the key.
    for s in seg_a.iter().chain(&seg_b) {
        let bytes = std::fs::read(path(&s.blob_key)).unwrap();
        assert!(
            !bytes.windows(4).any(|w| w == b"PAR1"),
            "{} is encrypted",
            s.blob_key
        );
    }

    // A's hour-1 file copied over B's file: B's key cannot open it (nor
    // would A's, at B's path), so B's query fails instead of answering
    // with A's flows.
    std::fs::copy(path(&seg_a[0].blob_key), path(&seg_b[0].blob_key)).unwrap();
    let fresh = env.flow_store(FlowStoreConfig::default());
    for k in [&key_b, &key_a] {
        let e = fresh.search(b, k, &plain_search).await.unwrap_err();
        assert!(matches!(e, FlowStoreError::Decrypt(_)), "{e}");
    }
    // A's hour-1 file copied over A's hour-2 file: the right key, the
    // right tenant, the wrong path: refused.
    std::fs::copy(path(&seg_a[0].blob_key), path(&seg_a[1].blob_key)).unwrap();
    let e = fresh
        .search(
            a,
            &key_a,
            &SearchQuery {
                start_ms: T0 + H,
                end_ms: T0 + 2 * H,
                ..plain_search.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FlowStoreError::Decrypt(_)), "{e}");
    // The untouched hour still opens with A's key, and with no other.
    assert_eq!(
        fresh
            .search(a, &key_a, &plain_search)
            .await
            .unwrap()
            .data
            .rows
            .len(),
        10
    );
    for other in [
        DataKey::from_bytes([0; 32]),
        DataKey::from_bytes([9; 32]),
        key_b,
    ] {
        let e = fresh.search(a, &other, &plain_search).await.unwrap_err();
        assert!(matches!(e, FlowStoreError::Decrypt(_)), "{e}");
    }
    // Nothing in the blob directory is outside the tenants' flow folders.
    for f in files_under(&env.blob_dir()) {
        let rel = f
            .strip_prefix(env.blob_dir())
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            rel.starts_with(&format!("flows/{a}/")) || rel.starts_with(&format!("flows/{b}/")),
            "{rel}"
        );
    }
}
