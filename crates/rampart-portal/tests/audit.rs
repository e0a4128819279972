//! `rampart audit verify` on a real data dir, through the real binary:
//! actions taken with the CLI are chained; then the database file is edited
//! behind the portal's back (sqlx on the same file, as an attacker with the
//! file would) and verify must fail, naming the seq, for an edited entry, a
//! removed middle entry and a removed newest entry (caught by the anchor).
//! A rewrite of the whole tail, anchor included, is caught only against a
//! head recorded earlier (`--expect`), as the docs say.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::{portal_bin, run};
use serde_json::Value;
use sqlx::{Row, SqlitePool};

fn rampart(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run(Command::new(portal_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RAMPART_LOG", "warn"))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = rampart(dir, args);
    assert!(ok, "rampart {args:?} failed: {err}");
    out
}

/// Runs `audit verify` (with `extra`) and expects a failure naming `seq`
/// and saying `why`.
fn broken(dir: &Path, extra: &[&str], seq: u64, why: &str) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let (ok, out, err) = rampart(dir, &args);
    assert!(!ok, "verify passed on a tampered log: {out}");
    assert!(
        err.contains(&format!("seq {seq} ")) && err.contains(why),
        "expected seq {seq} ({why}) in: {err}"
    );
}

fn intact(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "audit", "verify"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(dir, &args)).unwrap()
}

/// The columns after `seq`: tenant_id, at, actor, action, target, detail,
/// prev_hash, hash.
type Cols = (
    Option<String>,
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
);

/// One stored row, to put back after a tampering step.
struct Saved {
    seq: i64,
    cols: Cols,
}

async fn save(db: &SqlitePool, seq: i64) -> Saved {
    let r = sqlx::query("SELECT * FROM audit_log WHERE seq = ?")
        .bind(seq)
        .fetch_one(db)
        .await
        .unwrap();
    Saved {
        seq,
        cols: (
            r.get("tenant_id"),
            r.get("at"),
            r.get("actor"),
            r.get("action"),
            r.get("target"),
            r.get("detail"),
            r.get("prev_hash"),
            r.get("hash"),
        ),
    }
}

async fn restore(db: &SqlitePool, s: &Saved) {
    sqlx::query("DELETE FROM audit_log WHERE seq = ?")
        .bind(s.seq)
        .execute(db)
        .await
        .unwrap();
    let c = &s.cols;
    sqlx::query(
        "INSERT INTO audit_log (seq, tenant_id, at, actor, action, target, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(s.seq)
    .bind(&c.0)
    .bind(c.1)
    .bind(&c.2)
    .bind(&c.3)
    .bind(&c.4)
    .bind(&c.5)
    .bind(&c.6)
    .bind(&c.7)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn verify_catches_an_edited_a_removed_and_a_truncated_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "tenant",
            "create",
            "--name",
            "acme",
            "--domain",
            "acme.rampart.test",
        ],
    );
    ok(d, &["admin-token", "create"]);
    ok(d, &["token", "create", "--tenant", "acme"]);
    ok(d, &["tenant", "suspend", "acme"]);
    ok(d, &["tenant", "resume", "acme"]);

    let v = intact(d, &[]);
    assert_eq!(v["entries"], 7, "{v}");
    let head = v["head"].as_str().unwrap().to_string();
    assert!(head.starts_with("7:"), "{head}");
    assert_eq!(intact(d, &["--expect", &head])["entries"], 7);
    let (_, text, _) = rampart(d, &["audit", "verify"]);
    assert!(text.starts_with("audit log intact: 7 entries"), "{text}");

    // The log as the CLI lists it: actor cli, oldest first; the operator
    // token is portal-wide, so not in acme's listing.
    let all: Vec<Value> = serde_json::from_str(&ok(d, &["--json", "audit", "list"])).unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "key.create",
            "api_token.create",
            "api_token.create",
            "enrollment_token.create",
            "tenant.suspend",
            "tenant.resume"
        ]
    );
    assert!(all.iter().all(|e| e["actor"] == "cli"));
    let acme: Vec<Value> =
        serde_json::from_str(&ok(d, &["--json", "audit", "list", "--tenant", "acme"])).unwrap();
    assert_eq!(acme.len(), 6);
    assert!(acme.iter().all(|e| e["seq"] != 4));
    assert!(ok(d, &["audit", "list", "--tenant", "acme"]).contains("tenant.suspend"));

    let db = SqlitePool::connect(&format!("sqlite://{}", d.join("rampart.db").display()))
        .await
        .unwrap();
    // The portal's own triggers refuse edits...
    let edit = "UPDATE audit_log SET detail = '{\"name\":\"evil\"}' WHERE seq = 2";
    assert!(sqlx::query(edit).execute(&db).await.is_err(), "append-only");
    assert!(sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&db)
        .await
        .is_err());
    // ...but whoever has the file can drop them.
    for t in ["audit_log_no_update", "audit_log_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER {t}"))
            .execute(&db)
            .await
            .unwrap();
    }

    // 1. An edited detail.
    let two = save(&db, 2).await;
    sqlx::query(edit).execute(&db).await.unwrap();
    broken(d, &[], 2, "edited");
    restore(&db, &two).await;
    intact(d, &[]);

    // 2. A removed middle entry.
    let four = save(&db, 4).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(&db)
        .await
        .unwrap();
    broken(d, &[], 4, "missing");
    restore(&db, &four).await;
    intact(d, &[]);

    // 3. The newest entry rewritten with a fresh hash and anchor: only a
    //    head kept elsewhere can tell.
    let seven = save(&db, 7).await;
    let mut e = rampart_store::AuditEntry {
        seq: 7,
        tenant_id: seven
            .cols
            .0
            .as_deref()
            .map(|t| rampart_store::TenantId(t.parse().unwrap())),
        at: seven.cols.1,
        actor: seven.cols.2.clone(),
        action: "tenant.create".into(),
        target: seven.cols.4.clone(),
        detail: seven.cols.5.clone(),
        prev_hash: seven.cols.6.clone(),
        hash: vec![],
    };
    e.hash = rampart_store::audit::entry_hash(&e).to_vec();
    sqlx::query("UPDATE audit_log SET action = ?, hash = ? WHERE seq = 7")
        .bind(&e.action)
        .bind(&e.hash)
        .execute(&db)
        .await
        .unwrap();
    let old_anchor: Vec<u8> =
        sqlx::query_scalar("SELECT value FROM portal_meta WHERE key = 'audit_anchor'")
            .fetch_one(&db)
            .await
            .unwrap();
    let mut anchor = 7u64.to_be_bytes().to_vec();
    anchor.extend_from_slice(&e.hash);
    let set_anchor = |v: Vec<u8>| {
        sqlx::query("UPDATE portal_meta SET value = ? WHERE key = 'audit_anchor'").bind(v)
    };
    // Without the anchor moved too, the anchor catches it.
    broken(d, &[], 7, "anchor");
    set_anchor(anchor).execute(&db).await.unwrap();
    intact(d, &[]);
    broken(d, &["--expect", &head], 7, "recorded as the head");
    restore(&db, &seven).await;
    set_anchor(old_anchor).execute(&db).await.unwrap();
    intact(d, &["--expect", &head]);

    // 4. The newest entry removed: the anchor still names it.
    sqlx::query("DELETE FROM audit_log WHERE seq = 7")
        .execute(&db)
        .await
        .unwrap();
    broken(d, &[], 7, "missing");
    // Later appends continue from the anchor, so the gap stays visible.
    ok(d, &["tenant", "suspend", "acme"]);
    let last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(last, 8);
    broken(d, &[], 7, "missing");
    // 5. The anchor removed: verification says so, and the portal refuses
    //    to start a new chain over the old one.
    sqlx::query("DELETE FROM portal_meta WHERE key = 'audit_anchor'")
        .execute(&db)
        .await
        .unwrap();
    broken(d, &[], 1, "beyond the anchor");
    let (ok_, _, err) = rampart(d, &["tenant", "resume", "acme"]);
    assert!(!ok_ && err.contains("no anchor"), "{err}");
    // A bad --expect is refused with a clear message.
    let (ok_, _, err) = rampart(d, &["audit", "verify", "--expect", "nope"]);
    assert!(!ok_ && err.contains("--expect must be SEQ:HASH"), "{err}");
    db.close().await;
}
