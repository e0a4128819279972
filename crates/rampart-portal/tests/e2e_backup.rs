//! `rampart backup` and `rampart restore` through the real binaries: a
//! backup taken while an agent ships flows to a running portal, restored
//! into a new data dir, served by a new portal that holds every batch the
//! first one had acknowledged before the backup began, with its flows.
//! Also: a tampered or truncated backup is refused naming the file, and
//! another master key opens nothing.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One NetFlow v5 datagram (Cisco's export format: a 24-byte header and
/// 48-byte records) of `n` flows numbered from `first`, each with its own
/// source address, so every flow the portal holds can be told apart.
fn v5_datagram(seq: u32, first: u32, n: u16, unix_secs: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(24 + 48 * n as usize);
    d.extend_from_slice(&5u16.to_be_bytes()); // version
    d.extend_from_slice(&n.to_be_bytes()); // count
    d.extend_from_slice(&10_000u32.to_be_bytes()); // sys_uptime (ms)
    d.extend_from_slice(&unix_secs.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes()); // unix_nsecs
    d.extend_from_slice(&seq.to_be_bytes()); // flow_sequence
    d.extend_from_slice(&[0, 0]); // engine type, id
    d.extend_from_slice(&0u16.to_be_bytes()); // sampling interval
    for i in 0..u32::from(n) {
        let k = first + i;
        d.extend_from_slice(&[10, (k >> 16) as u8, (k >> 8) as u8, k as u8]); // src
        d.extend_from_slice(&[192, 0, 2, 1]); // dst
        d.extend_from_slice(&[0, 0, 0, 0]); // next hop
        d.extend_from_slice(&1u16.to_be_bytes()); // input
        d.extend_from_slice(&2u16.to_be_bytes()); // output
        d.extend_from_slice(&1u32.to_be_bytes()); // packets
        d.extend_from_slice(&(100 + k % 1000).to_be_bytes()); // bytes
        d.extend_from_slice(&9_000u32.to_be_bytes()); // first (uptime ms)
        d.extend_from_slice(&9_500u32.to_be_bytes()); // last
        d.extend_from_slice(&(1024 + (k % 60_000) as u16).to_be_bytes()); // src port
        d.extend_from_slice(&443u16.to_be_bytes()); // dst port
        d.extend_from_slice(&[0, 0x10, 6, 0]); // pad, tcp flags, proto, tos
        d.extend_from_slice(&[0, 0, 0, 0]); // src and dst AS
        d.extend_from_slice(&[24, 24, 0, 0]); // masks, pad
    }
    d
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free udp port")
}

/// Sends datagrams of 30 flows every 20 ms until told to stop, for at
/// most two minutes; returns how many flows it sent.
fn start_exporter(to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the exporter");
        let start = Instant::now();
        let (mut seq, mut sent) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as u32;
            sock.send_to(&v5_datagram(seq, sent, 30, now), to)
                .expect("send a datagram");
            seq += 1;
            sent += 30;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

/// The tenant's "flows" batches: id -> items.
async fn flow_batches(p: &PortalProc, t: &Tenant) -> HashMap<String, u64> {
    let (s, v) = p
        .get(&t.domain, "/api/v1/batches?limit=10000", &t.token)
        .await;
    assert_eq!(s, 200, "batches: {v}");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "flows")
        .map(|b| {
            (
                b["batch_id"].as_str().unwrap().to_string(),
                b["items"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn rampart(data_dir: &Path) -> Command {
    let mut c = Command::new(portal_bin());
    c.arg("--data-dir").arg(data_dir).arg("--json");
    c
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn audit_actions(data_dir: &Path, master_key: &Path) -> Vec<String> {
    let (ok, out, err) = run(rampart(data_dir)
        .arg("--master-key-file")
        .arg(master_key)
        .args(["audit", "list", "--limit", "10000"]));
    assert!(ok, "audit list: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_ingest_restores_every_batch_acked_before_it() {
    let mut portal = PortalProc::start().await;
    let t = portal.create_tenant("backup").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    let (ok, out) = agent.enroll(&token, portal.addr());
    assert!(ok, "enroll: {out}");
    let agent_port = free_udp_port();
    agent.start_with(&["--netflow-listen", &format!("127.0.0.1:{agent_port}")]);
    eventually("the agent's collector", Duration::from_secs(30), || async {
        agent
            .status()
            .to_string()
            .contains(&agent_port.to_string())
            .then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let exporter = start_exporter(SocketAddr::from(([127, 0, 0, 1], agent_port)), stop.clone());
    // Ingest is under way: several flow batches acknowledged already.
    eventually(
        "flow batches to arrive",
        Duration::from_secs(60),
        || async { (flow_batches(&portal, &t).await.len() >= 3).then_some(()) },
    )
    .await;

    // Every batch listed here was acknowledged (the portal records a batch
    // before it acks it) before the backup starts.
    let acked_before = flow_batches(&portal, &t).await;
    let data_dir = portal.dir.path().to_path_buf();
    let master_key = data_dir.join("master.key");
    let backups = tempfile::tempdir().unwrap();
    let backup_dir = backups.path().join("b1");
    let (ok, out, err) = {
        let (d, b) = (data_dir.clone(), backup_dir.clone());
        tokio::task::spawn_blocking(move || run(rampart(&d).arg("backup").arg("--out").arg(&b)))
            .await
            .unwrap()
    };
    assert!(ok, "backup failed: {err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert!(
        summary["blobs"].as_u64().unwrap() >= acked_before.len() as u64,
        "{summary}"
    );
    // Ingest goes on after the backup, then stops.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = exporter.join().unwrap();
    let after = flow_batches(&portal, &t).await;
    assert!(
        after.len() > acked_before.len(),
        "ingest did not go on during the backup"
    );

    // Nothing of the backup is readable as it was: no SQLite file, no
    // tenant name, no spooled frame header in the clear.
    for f in files_under(&backup_dir) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [
            &b"SQLite format 3"[..],
            b"backup.rampart.test",
            b"tenant_keys",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in the clear",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(audit_actions(&data_dir, &master_key)
        .await
        .contains(&"backup.create".to_string()));

    // The backup holds no key vault: without one, the restored tenant's
    // keys cannot open.
    assert!(!files_under(&backup_dir)
        .iter()
        .any(|p| p.to_string_lossy().contains("vault")));
    // Restore into a new data dir with the portal's vault (kept apart, like
    // the master key) and serve it with the same master key.
    let restored = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(rampart(restored.path())
        .arg("--master-key-file")
        .arg(&master_key)
        .arg("restore")
        .arg("--from")
        .arg(&backup_dir)
        .arg("--vault")
        .arg(data_dir.join("vault")));
    assert!(ok, "restore failed: {err}");
    let rs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rs["vault_copied"], true, "{rs}");
    assert_eq!(rs["backup_id"], summary["backup_id"]);
    assert!(audit_actions(restored.path(), &master_key)
        .await
        .contains(&"backup.restore".to_string()));
    portal.kill();
    let mut second = PortalProc {
        dir: restored,
        port: free_port(),
        proc: None,
        operator: portal.operator.clone(),
        extra: vec!["--master-key-file".into(), master_key.display().to_string()],
    };
    second.restart().await;
    let got = flow_batches(&second, &t).await;
    for (id, items) in &acked_before {
        assert_eq!(
            got.get(id),
            Some(items),
            "batch {id} acknowledged before the backup is not in the restore"
        );
    }
    // The restore holds a prefix of what the first portal received, never
    // a batch it did not have.
    for (id, items) in &got {
        assert_eq!(after.get(id), Some(items), "batch {id} came from nowhere");
    }
    // And every flow of those batches queries on the restored portal (those
    // still spooled at the snapshot are processed from restored blobs).
    let want: u64 = got.values().sum();
    let before_sum: u64 = acked_before.values().sum();
    assert!(
        want >= before_sum && want <= u64::from(sent),
        "{want} {before_sum} {sent}"
    );
    let window = "from=0&to=4102444800000";
    let mut totals = Value::Null;
    for _ in 0..600 {
        let (s, v) = second
            .get(
                &t.domain,
                &format!("/api/v1/flows/totals?{window}"),
                &t.token,
            )
            .await;
        totals = v;
        if s == 200 && totals["records"].as_u64() == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        totals["records"].as_u64(),
        Some(want),
        "the restored portal does not query every restored flow: {totals}"
    );
    second.kill();

    // A tampered backup is refused, naming the file, and writes nothing.
    let refuse = |from: &Path, key: &Path| {
        let target = tempfile::tempdir().unwrap();
        let (ok, _, err) = run(rampart(target.path())
            .arg("--master-key-file")
            .arg(key)
            .arg("restore")
            .arg("--from")
            .arg(from));
        assert!(!ok, "a bad backup was restored");
        assert!(
            std::fs::read_dir(target.path()).unwrap().next().is_none(),
            "a refused restore wrote into the target"
        );
        err
    };
    let flipped = backups.path().join("flipped");
    copy_tree(&backup_dir, &flipped);
    let victim = flipped.join("files/000001");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let err = refuse(&flipped, &master_key);
    assert!(err.contains("files/000001"), "{err}");

    let truncated = backups.path().join("truncated");
    copy_tree(&backup_dir, &truncated);
    let db = truncated.join("files/000000");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = refuse(&truncated, &master_key);
    assert!(err.contains("files/000000"), "{err}");

    let unnamed = backups.path().join("unnamed");
    copy_tree(&backup_dir, &unnamed);
    std::fs::write(unnamed.join("files/999999"), b"extra").unwrap();
    let err = refuse(&unnamed, &master_key);
    assert!(err.contains("files/999999"), "{err}");

    // Another master key opens nothing.
    let other_key = backups.path().join("other.key");
    {
        use base64::Engine;
        let k: [u8; 32] = rand::random();
        std::fs::write(
            &other_key,
            base64::engine::general_purpose::STANDARD.encode(k),
        )
        .unwrap();
    }
    let err = refuse(&backup_dir, &other_key);
    assert!(
        err.contains("does not unwrap with this master key"),
        "{err}"
    );

    // A non-empty target is refused.
    let (ok, _, err) = run(rampart(&data_dir)
        .arg("restore")
        .arg("--from")
        .arg(&backup_dir));
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
}
