//! A tenant's cancellation end to end with the real binaries: its running
//! agent stops being served at once and keeps what it collects, a
//! reactivation delivers all of it, and at the end of the window the
//! lifecycle job destroys the tenant's keys and data and records it.

mod common;

use common::*;

use std::time::Duration;

use serde_json::{json, Value};

/// Batch ids the portal holds for `device`, or `None` while the tenant
/// API refuses.
async fn batch_ids(portal: &PortalProc, t: &Tenant, device: &str) -> Option<Vec<String>> {
    let (s, v) = portal
        .get(
            &t.domain,
            &format!("/api/v1/batches?device={device}&limit=1000"),
            &t.token,
        )
        .await;
    if s != 200 {
        return None;
    }
    let mut ids: Vec<String> = v
        .as_array()?
        .iter()
        .filter(|b| b["kind"] == "events")
        .filter_map(|b| b["batch_id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    Some(ids)
}

fn send(agent: &Agent, name: &str) -> String {
    let file = agent.dir.path().join(format!("{name}.jsonl"));
    std::fs::write(&file, format!("{{\"event\":\"{name}\"}}\n")).unwrap();
    let (ok, out, err) = run(agent.cmd().args(["send", "--kind", "events"]).arg(&file));
    assert!(ok, "send: {err}");
    out.trim().to_string()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tenants_agents_pause_keep_their_data_and_its_deletion_destroys_keys_and_data()
{
    let config = tempfile::tempdir().unwrap();
    let config_file = config.path().join("rampart.toml");
    // A short window, so the test sees the deletion; checked each second.
    std::fs::write(
        &config_file,
        "tenant_delete_after_secs = 25\nlifecycle_interval_secs = 1\n",
    )
    .unwrap();
    let cfg = config_file.to_str().unwrap();
    let mut portal = PortalProc::start_with(&["--config", cfg]).await;
    let t = portal.create_tenant("acme").await;
    let other = portal.create_tenant("bravo").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    assert!(agent.enroll(&token, portal.addr()).0);
    agent.start();
    let device = agent.device_id();
    let (_, info) = portal.get(&t.domain, "/api/v1/tenant", &t.token).await;
    let tenant_id = info["id"].as_str().unwrap().to_string();

    let first = send(&agent, "before");
    eventually("the first batch", Duration::from_secs(30), || async {
        batch_ids(&portal, &t, &device)
            .await
            .filter(|ids| ids.contains(&first))
    })
    .await;

    let admin = |path: String| {
        let (p, op) = (&portal, portal.operator.clone());
        async move { p.post("localhost", &path, &op, None).await }
    };
    let (s, v) = admin("/api/v1/admin/tenants/acme/cancel".to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["lifecycle"], "cancelled");

    // The tenant API and the agent are refused from now on; what the agent
    // collects waits in its outbox.
    let (s, v) = portal.get(&t.domain, "/api/v1/tenant", &t.token).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("tenant_cancelled")),
        "{v}"
    );
    let during = send(&agent, "during");
    eventually(
        "the agent to be refused and keep its batch",
        Duration::from_secs(30),
        || async {
            let st = agent.status()["status"].clone();
            let err = st["last_error"].as_str().unwrap_or("").to_string();
            (err.contains("tenant_cancelled") && st["outbox_batches"].as_u64() >= Some(1))
                .then_some(())
        },
    )
    .await;
    // Another tenant is served as before.
    let (s, _) = portal
        .get(&other.domain, "/api/v1/tenant", &other.token)
        .await;
    assert_eq!(s, 200);

    let (s, v) = admin("/api/v1/admin/tenants/acme/reactivate".to_string()).await;
    assert_eq!(s, 200, "{v}");
    let ids = eventually(
        "the batch kept during the cancellation",
        Duration::from_secs(90),
        || async {
            batch_ids(&portal, &t, &device)
                .await
                .filter(|ids| ids.contains(&during))
        },
    )
    .await;
    assert_eq!(ids.len(), 2, "each batch once: {ids:?}");

    // Cancelled again and left: the window passes and the tenant is deleted.
    let spool = portal.dir.path().join("blobs/spool").join(&tenant_id);
    assert!(
        !files_under(&spool).is_empty(),
        "the tenant has spooled frames"
    );
    let (s, v) = admin("/api/v1/admin/tenants/acme/cancel".to_string()).await;
    assert_eq!(s, 200, "{v}");
    let op = portal.operator.clone();
    let v: Value = eventually("the deletion", Duration::from_secs(60), || async {
        let (_, v) = portal
            .get(
                "localhost",
                &format!("/api/v1/admin/tenants/{tenant_id}"),
                &op,
            )
            .await;
        (v["lifecycle"] == "deleted").then_some(v)
    })
    .await;
    assert!(v["deleted_at"].is_string(), "{v}");
    assert!(files_under(&spool).is_empty(), "spooled frames deleted");
    // Its name is free again (its domain is no longer served: no
    // certificate is offered for it).
    let (s, v) = portal
        .get("localhost", "/api/v1/admin/tenants/acme", &op)
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = portal
        .get(&other.domain, "/api/v1/tenant", &other.token)
        .await;
    assert_eq!(s, 200, "the other tenant is untouched");

    // The deletion is on the record and the chain still verifies.
    let (_, audit) = portal
        .get(
            "localhost",
            &format!("/api/v1/admin/audit?tenant={tenant_id}&limit=1000"),
            &op,
        )
        .await;
    let entries = audit["entries"].as_array().expect("audit entries");
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e["target"] == format!("tenant:{tenant_id}"))
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["tenant.cancel", "tenant.reactivate", "tenant.delete"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let del = entries
        .iter()
        .find(|e| e["action"] == "tenant.delete")
        .unwrap();
    assert_eq!(del["detail"]["removed"]["devices"], 1, "{del}");
    assert_eq!(del["detail"]["keys"], "destroyed");
    portal.kill();
    let (ok, out, err) = run(std::process::Command::new(portal_bin())
        .arg("--data-dir")
        .arg(portal.dir.path())
        .args(["audit", "verify"]));
    assert!(ok, "audit verify: {out}{err}");
    if let Some(mut p) = agent.proc.take() {
        p.kill();
    }
}
