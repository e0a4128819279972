//! The shared store suite on the embedded backend, in memory and on disk.

use rampart_store::sqlite::SqliteStore;

#[tokio::test]
async fn suite_passes_on_sqlite_in_memory() {
    let s = SqliteStore::in_memory().await.unwrap();
    rampart_store::suite::run_all(&s).await;
}

#[tokio::test]
async fn suite_passes_on_sqlite_file_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        rampart_store::suite::run_all(&s).await;
    }
    // Reopening runs migrations again (a no-op) and keeps the data.
    let s = SqliteStore::open(&path).await.unwrap();
    use rampart_store::Store;
    assert!(s.tenant_by_name("alpha").await.unwrap().is_some());
}
