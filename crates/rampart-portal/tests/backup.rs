//! `backup::create` and `backup::restore` on a real on-disk portal, for the
//! race the blob trash exists for: a blob its snapshot names deleted before
//! the backup copies it (retention deletes a segment's blob just before its
//! index row, compaction just after its commit).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rampart_portal::audit::Actor;
use rampart_portal::backup::{self, BackupError};
use rampart_portal::config::Config;
use rampart_portal::Portal;
use rampart_store::{FlowSegment, SegmentCommit, SegmentLevel};

fn segment(key: &str, bytes: u64) -> FlowSegment {
    FlowSegment {
        id: uuid::Uuid::new_v4(),
        level: SegmentLevel::Raw,
        partition_hour: 490_000,
        start_ms: 490_000 * 3_600_000,
        end_ms: 490_000 * 3_600_000 + 1,
        rows: 1,
        bytes,
        blob_key: key.into(),
        cut: false,
        compacted: false,
        created_at: 1,
    }
}

#[tokio::test]
async fn a_blob_deleted_after_the_snapshot_names_it_is_still_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let portal = Arc::new(Portal::open(config.clone()).await.unwrap());
    let t = portal
        .create_tenant(&Actor::Cli, "acme", "acme.example.test", None)
        .await
        .unwrap();
    let key = format!("flows/{}/raw/gone.seg", t.id);
    let content = b"sealed segment bytes".to_vec();
    portal.blobs.put(&key, &content).await.unwrap();
    portal
        .store
        .commit_flow_segments(
            t.id,
            &SegmentCommit {
                insert: &[segment(&key, content.len() as u64)],
                now: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Retention's window: the blob is deleted, its index row not yet.
    portal.blobs.delete(&key).await.unwrap();
    assert_eq!(portal.blobs.get(&key).await.unwrap(), None);

    let out = dir.path().join("backup");
    let s = backup::create(&portal, &out).await.unwrap();
    assert_eq!(s.blobs, 1);

    let restored = Config {
        data_dir: dir.path().join("restored"),
        master_key_file: Some(config.master_key_path()),
        ..Config::default()
    };
    let master =
        rampart_portal::crypto::load_existing_master_key(&config.master_key_path()).unwrap();
    let r = backup::restore(&restored, &master, &out, None)
        .await
        .unwrap();
    assert_eq!(r.backup_id, s.backup_id);
    assert_eq!(
        std::fs::read(restored.blob_dir().join(&key)).unwrap(),
        content
    );

    // Once the trash is purged (grace over, no lease), the blob is gone for
    // good and a backup says so, naming it, instead of leaving it out.
    let later = SystemTime::now() + Duration::from_secs(config.blob_delete_grace_secs + 1);
    assert_eq!(portal.blobs.purge_deleted(later).await.unwrap(), 1);
    let out2 = dir.path().join("backup2");
    match backup::create(&portal, &out2).await {
        Err(BackupError::BlobMissing(k)) => assert_eq!(k, key),
        other => panic!("expected a missing blob error, got {other:?}"),
    }
    assert!(
        std::fs::read_dir(&out2).unwrap().next().is_none(),
        "a failed backup left files behind"
    );
}
