//! Config management end to end with the real `rampart` and
//! `rampart-agent` binaries: layered documents become signed instructions,
//! agents apply them (UDP listeners bound, as `status` shows), ack, and the
//! portal shows drift; a rollback is one call; a configuration whose health
//! check fails is undone on the agent and shown failed; an agent that was
//! offline gets only the newest; a canary rollout stops at a failed canary.
//!
//! Expected merges are written out by hand from RFC 7396's rules (the
//! more specific layer wins key by key), not read back from the portal.

mod common;

use common::*;

use std::time::Duration;

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A portal whose config job runs every second.
async fn portal() -> (PortalProc, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("rampart.toml");
    std::fs::write(&file, "config_reconcile_secs = 1\n").unwrap();
    let portal = PortalProc::start_with(&["--config", file.to_str().unwrap()]).await;
    (portal, config)
}

async fn agent(portal: &PortalProc, t: &Tenant) -> Agent {
    let token = portal.enrollment_token(t, json!({})).await;
    let mut a = Agent::new();
    let (ok, out) = a.enroll(&token, portal.addr());
    assert!(ok, "enroll: {out}");
    a.start();
    a
}

async fn put(portal: &PortalProc, t: &Tenant, path: &str, body: Value) -> (u16, Value) {
    portal
        .call(reqwest::Method::PUT, &t.domain, path, &t.token, Some(body))
        .await
}

/// Saves a document on top of its newest version.
async fn save(portal: &PortalProc, t: &Tenant, doc: &str, config: Value, extra: Value) -> Value {
    let path = format!("/api/v1/config/docs/{doc}");
    let (_, cur) = portal.get(&t.domain, &path, &t.token).await;
    let mut body = json!({"config": config, "base_version": cur["version"], "comment": "test"});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let (s, v) = put(portal, t, &path, body).await;
    if s != 200 {
        let log = portal.proc.as_ref().map(|p| p.stderr()).unwrap_or_default();
        panic!("save {doc}: {s} {v}\nportal log:\n{log}");
    }
    v
}

async fn device_config(portal: &PortalProc, t: &Tenant, device: &str) -> Value {
    let (s, v) = portal
        .get(
            &t.domain,
            &format!("/api/v1/config/devices/{device}"),
            &t.token,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the portal shows the device running what it should, and
/// returns its view.
async fn in_sync(portal: &PortalProc, t: &Tenant, device: &str) -> Value {
    eventually("the device to apply its configuration", WAIT, || async {
        let v = device_config(portal, t, device).await;
        (v["in_sync"] == true && v["status"] == "applied").then_some(v)
    })
    .await
}

/// The agent's bound flow listeners, from `rampart-agent status`.
fn listening(a: &Agent) -> Vec<String> {
    let mut l: Vec<String> = a.status()["status"]["flows"]["listening"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    l.sort();
    l
}

async fn agent_listens(a: &Agent, want: &[String]) {
    let mut want = want.to_vec();
    want.sort();
    let start = std::time::Instant::now();
    while listening(a) != want {
        if start.elapsed() > WAIT {
            let log = a.proc.as_ref().map(|p| p.stderr()).unwrap_or_default();
            panic!(
                "the agent listens on {:?}, not {want:?}\nstatus: {}\nagent log:\n{log}",
                listening(a),
                a.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn udp_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_documents_roll_out_show_drift_and_roll_back() {
    let (portal, _cfg) = portal().await;
    let t = portal.create_tenant("layers").await;
    let a = agent(&portal, &t).await;
    let b = agent(&portal, &t).await;
    let (da, db) = (a.device_id(), b.device_id());

    let (s, schema) = portal
        .get(&t.domain, "/api/v1/config/schema", &t.token)
        .await;
    assert_eq!(s, 200);
    assert!(schema["properties"]["rules"].is_object(), "{schema}");

    let (p_tenant, p_a, p_a2) = (udp_addr(), udp_addr(), udp_addr());
    // Both agents share this host: A's own listener is set before the
    // tenant's, so A never holds B's port.
    let (s, v) = portal
        .post(
            &t.domain,
            "/api/v1/config/groups",
            &t.token,
            Some(json!({"name": "edge"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = put(
        &portal,
        &t,
        &format!("/api/v1/config/devices/{da}/group"),
        json!({"group": "edge"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    save(
        &portal,
        &t,
        &format!("device/{da}"),
        json!({"collectors": {"netflow_listen": [p_a]}}),
        json!({}),
    )
    .await;
    save(
        &portal,
        &t,
        "group/edge",
        json!({"log_level": "debug"}),
        json!({}),
    )
    .await;
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"log_level": "info", "upload": {"batch_max_records": 1000}, "collectors": {"netflow_listen": [p_tenant]}}),
        json!({}),
    )
    .await;

    // A: tenant < group (log level) < device (listener); B: the tenant's.
    let va = in_sync(&portal, &t, &da).await;
    assert_eq!(
        va["desired"]["config"],
        json!({"log_level": "debug", "upload": {"batch_max_records": 1000}, "collectors": {"netflow_listen": [p_a]}})
    );
    assert_eq!(va["group"], "edge");
    let vb = in_sync(&portal, &t, &db).await;
    assert_eq!(
        vb["desired"]["config"],
        json!({"log_level": "info", "upload": {"batch_max_records": 1000}, "collectors": {"netflow_listen": [p_tenant]}})
    );
    agent_listens(&a, std::slice::from_ref(&p_a)).await;
    agent_listens(&b, std::slice::from_ref(&p_tenant)).await;
    eventually("the agent to report the revision", WAIT, || {
        let ok = a.status()["status"]["config_revision"] == va["applied_revision"];
        async move { ok.then_some(()) }
    })
    .await;

    // Drift: the list shows desired and applied per device.
    let (_, drift) = portal
        .get(&t.domain, "/api/v1/config/devices", &t.token)
        .await;
    let rows = drift.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["in_sync"] == true && r["desired_revision"] == r["applied_revision"]),
        "{drift}"
    );

    // A change to A's document moves A only.
    let rev_b = vb["applied_revision"].clone();
    save(
        &portal,
        &t,
        &format!("device/{da}"),
        json!({"collectors": {"netflow_listen": [p_a2]}}),
        json!({}),
    )
    .await;
    agent_listens(&a, std::slice::from_ref(&p_a2)).await;
    in_sync(&portal, &t, &da).await;
    assert_eq!(
        device_config(&portal, &t, &db).await["applied_revision"],
        rev_b
    );

    // The two versions differ in one place.
    let (_, d) = portal
        .get(
            &t.domain,
            &format!("/api/v1/config/docs/device/{da}/diff?from=1&to=2"),
            &t.token,
        )
        .await;
    assert_eq!(
        d["changes"],
        json!([{"path": "$.collectors.netflow_listen[0]", "op": "changed", "from": p_a, "to": p_a2}])
    );

    // A stale save is refused, never silently applied.
    let (s, v) = put(
        &portal,
        &t,
        &format!("/api/v1/config/docs/device/{da}"),
        json!({"config": {"log_level": "trace"}, "base_version": 1}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    // An invalid document is refused with its path and reaches no device.
    let before = device_config(&portal, &t, &da).await["desired_revision"].clone();
    let (s, v) = put(
        &portal,
        &t,
        &format!("/api/v1/config/docs/device/{da}"),
        json!({"config": {"rules": [{"action": "drop", "ip": "192.0.2.1"}]}, "base_version": 2}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_config")),
        "{v}"
    );
    assert_eq!(v["error"]["path"], "$.rules[0].action");
    assert_eq!(
        device_config(&portal, &t, &da).await["desired_revision"],
        before
    );

    // Rollback is one call: version 3 is version 1's content.
    let (s, v) = portal
        .post(
            &t.domain,
            &format!("/api/v1/config/docs/device/{da}/rollback"),
            &t.token,
            Some(json!({"to_version": 1})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 3);
    agent_listens(&a, std::slice::from_ref(&p_a)).await;
    let va = in_sync(&portal, &t, &da).await;
    assert_eq!(
        va["desired"]["config"]["collectors"]["netflow_listen"],
        json!([p_a])
    );
    let (_, versions) = portal
        .get(
            &t.domain,
            &format!("/api/v1/config/docs/device/{da}/versions"),
            &t.token,
        )
        .await;
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0]["comment"], "rollback to version 1");
    // The history shows each revision queued and applied.
    let applied = va["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "applied")
        .count();
    assert!(applied >= 3, "{}", va["history"]);

    // The same from the CLI beside the running portal: the drift it
    // prints, and a rollback (version 4 = version 2's content) the agent
    // applies at its next poll.
    let cli = |args: &[&str]| {
        let (ok, out, err) = run(std::process::Command::new(portal_bin())
            .arg("--data-dir")
            .arg(portal.dir.path())
            .arg("--json")
            .args(args));
        assert!(ok, "rampart {args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let drift = cli(&["fleet", "drift", "--tenant", "layers"]);
    let row = drift
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device_id"] == da.as_str())
        .unwrap();
    assert_eq!(row["applied_revision"], va["applied_revision"]);
    let doc = format!("device:{da}");
    let out = cli(&[
        "fleet", "rollback", "--tenant", "layers", "--doc", &doc, "--to", "2",
    ]);
    assert_eq!(out["version"], 4);
    agent_listens(&a, std::slice::from_ref(&p_a2)).await;
    in_sync(&portal, &t, &da).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_failing_its_health_check_is_rolled_back_and_shown_failed() {
    let (portal, _cfg) = portal().await;
    let t = portal.create_tenant("health").await;
    let a = agent(&portal, &t).await;
    let d = a.device_id();
    let good = udp_addr();
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"collectors": {"netflow_listen": [good]}}),
        json!({}),
    )
    .await;
    let v = in_sync(&portal, &t, &d).await;
    let good_rev = v["applied_revision"].clone();
    agent_listens(&a, std::slice::from_ref(&good)).await;

    // A closed TCP port as the health target: applied, checked, undone.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let other = udp_addr();
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"collectors": {"netflow_listen": [other]}, "health": {"tcp": [closed], "timeout_ms": 500}}),
        json!({}),
    )
    .await;
    let v = eventually("the failure to show", WAIT, || async {
        let v = device_config(&portal, &t, &d).await;
        (v["status"] == "failed").then_some(v)
    })
    .await;
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("health check") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(v["applied_revision"], good_rev, "{v}");
    assert_eq!(v["in_sync"], false);
    assert!(
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "rolled_back"),
        "{v}"
    );
    // The agent runs its last good configuration again.
    agent_listens(&a, std::slice::from_ref(&good)).await;
    eventually("the agent to report its good revision", WAIT, || {
        let ok = a.status()["status"]["config_revision"] == good_rev;
        async move { ok.then_some(()) }
    })
    .await;

    // A configuration the agent cannot apply (its port is taken) keeps the
    // last good one too, and says why.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"collectors": {"netflow_listen": [taken_addr]}}),
        json!({}),
    )
    .await;
    let v = eventually("the second failure to show", WAIT, || async {
        let v = device_config(&portal, &t, &d).await;
        (v["status"] == "failed"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("collectors did not start")))
        .then_some(v)
    })
    .await;
    assert_eq!(v["applied_revision"], good_rev, "{v}");
    agent_listens(&a, std::slice::from_ref(&good)).await;
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_agent_catches_up_to_the_newest_configuration_only() {
    let (portal, _cfg) = portal().await;
    let t = portal.create_tenant("offline").await;
    let mut a = agent(&portal, &t).await;
    let d = a.device_id();
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"log_level": "info"}),
        json!({}),
    )
    .await;
    in_sync(&portal, &t, &d).await;
    a.proc.take().unwrap().kill();

    let last = udp_addr();
    for level in ["warn", "error"] {
        save(
            &portal,
            &t,
            "tenant/-",
            json!({"log_level": level}),
            json!({}),
        )
        .await;
    }
    save(
        &portal,
        &t,
        "tenant/-",
        json!({"log_level": "debug", "collectors": {"netflow_listen": [last]}}),
        json!({}),
    )
    .await;
    let newest = device_config(&portal, &t, &d).await["desired_revision"].clone();
    a.start();
    let v = in_sync(&portal, &t, &d).await;
    assert_eq!(v["applied_revision"], newest);
    agent_listens(&a, std::slice::from_ref(&last)).await;

    // The two saved while it was away were superseded before delivery;
    // only the newest ran.
    let (_, ins) = portal
        .get(
            &t.domain,
            &format!("/api/v1/devices/{d}/instructions"),
            &t.token,
        )
        .await;
    let status_of = |level: &str| -> Vec<String> {
        ins.as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "apply_config" && i["payload"]["config"]["log_level"] == level)
            .map(|i| i["status"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(status_of("warn"), ["superseded"], "{ins}");
    assert_eq!(status_of("error"), ["superseded"], "{ins}");
    assert_eq!(status_of("debug"), ["ok"], "{ins}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rollout_stops_when_the_canary_fails_and_completes_when_healthy() {
    let (portal, _cfg) = portal().await;
    let t = portal.create_tenant("canary").await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(agent(&portal, &t).await);
    }
    let ids: Vec<String> = agents.iter().map(Agent::device_id).collect();
    let (s, _) = portal
        .post(
            &t.domain,
            "/api/v1/config/groups",
            &t.token,
            Some(json!({"name": "web"})),
        )
        .await;
    assert_eq!(s, 201);
    for id in &ids {
        let (s, v) = put(
            &portal,
            &t,
            &format!("/api/v1/config/devices/{id}/group"),
            json!({"group": "web"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    save(
        &portal,
        &t,
        "group/web",
        json!({"log_level": "info"}),
        json!({}),
    )
    .await;
    let mut first = Vec::new();
    for id in &ids {
        first.push(in_sync(&portal, &t, id).await["applied_revision"].clone());
    }

    // 30% of 3 is one canary; its health check fails.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = save(
        &portal,
        &t,
        "group/web",
        json!({"log_level": "debug", "health": {"tcp": [closed], "timeout_ms": 300}}),
        json!({"rollout": {"canary_percent": 30, "bake_secs": 1}}),
    )
    .await;
    assert_eq!(out["queued"], 1, "{out}");
    let rollout = out["rollout"].as_str().unwrap().to_string();
    let r = eventually("the rollout to stop", WAIT, || async {
        let (_, rs) = portal
            .get(&t.domain, "/api/v1/config/rollouts", &t.token)
            .await;
        rs.as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == rollout.as_str()).cloned())
            .filter(|r| r["state"] == "failed")
    })
    .await;
    let canary = r["canaries"][0].as_str().unwrap().to_string();
    assert!(r["reason"].as_str().unwrap().contains(&canary), "{r}");
    // The others were never sent it.
    for (id, rev) in ids.iter().zip(&first) {
        if *id == canary {
            continue;
        }
        let v = device_config(&portal, &t, id).await;
        assert_eq!(v["desired_revision"], *rev, "{v}");
        assert_eq!(v["in_sync"], true);
    }
    // The group document was reverted (version 3 = version 1's content),
    // and the canary runs it again.
    let (_, doc) = portal
        .get(&t.domain, "/api/v1/config/docs/group/web", &t.token)
        .await;
    assert_eq!(
        (doc["version"].as_u64(), &doc["config"]),
        (Some(3), &json!({"log_level": "info"}))
    );
    let v = in_sync(&portal, &t, &canary).await;
    assert_eq!(v["desired"]["config"], json!({"log_level": "info"}));

    // A healthy rollout, paused after its canary: the rest wait until it
    // is resumed, then everyone runs it.
    let out = save(
        &portal,
        &t,
        "group/web",
        json!({"log_level": "debug"}),
        json!({"rollout": {"canary_percent": 30, "bake_secs": 1}}),
    )
    .await;
    let rollout = out["rollout"].as_str().unwrap().to_string();
    let (s, v) = portal
        .post(
            &t.domain,
            &format!("/api/v1/config/rollouts/{rollout}/pause"),
            &t.token,
            None,
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");
    let canary = v["canaries"][0].as_str().unwrap().to_string();
    in_sync(&portal, &t, &canary).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ids.iter().filter(|i| **i != canary) {
        let v = device_config(&portal, &t, id).await;
        assert_eq!(
            v["desired"]["config"],
            json!({"log_level": "info"}),
            "paused rollout moved on"
        );
    }
    let (s, _) = portal
        .post(
            &t.domain,
            &format!("/api/v1/config/rollouts/{rollout}/resume"),
            &t.token,
            None,
        )
        .await;
    assert_eq!(s, 200);
    for id in &ids {
        let v = eventually("every device to run the rollout", WAIT, || async {
            let v = device_config(&portal, &t, id).await;
            (v["in_sync"] == true && v["desired"]["config"] == json!({"log_level": "debug"}))
                .then_some(v)
        })
        .await;
        assert_eq!(v["status"], "applied");
    }
    let (_, rs) = portal
        .get(&t.domain, "/api/v1/config/rollouts", &t.token)
        .await;
    assert_eq!(rs[0]["state"], "done", "{rs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_lists_and_vpn_peers_roll_out_as_configuration() {
    let (portal, _cfg) = portal().await;
    let t = portal.create_tenant("lists").await;
    let a = agent(&portal, &t).await;
    let d = a.device_id();

    // A rule naming a list that does not exist is refused with its path.
    let rule =
        json!({"rules": [{"action": "block", "list": "bad-hosts", "direction": "outbound"}]});
    let (s, v) = put(
        &portal,
        &t,
        "/api/v1/config/docs/tenant/-",
        json!({"config": rule, "base_version": 0}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["path"].as_str()),
        (400, Some("$.rules")),
        "{v}"
    );

    let (s, v) = put(
        &portal,
        &t,
        "/api/v1/target-lists/bad-hosts",
        json!({"entries": ["198.51.100.0/24", "evil.example"]}),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    save(&portal, &t, "tenant/-", rule.clone(), json!({})).await;
    let v = in_sync(&portal, &t, &d).await;
    assert_eq!(
        v["desired"]["lists"],
        json!({"bad-hosts": ["198.51.100.0/24", "evil.example"]})
    );
    let first = v["applied_revision"].clone();

    // Editing the list sends the device its new entries.
    let (s, v) = put(
        &portal,
        &t,
        "/api/v1/target-lists/bad-hosts",
        json!({"entries": ["198.51.100.0/24", "203.0.113.7"], "expected_version": 1}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let v = eventually("the list change to be applied", WAIT, || async {
        let v = device_config(&portal, &t, &d).await;
        (v["in_sync"] == true && v["applied_revision"] != first).then_some(v)
    })
    .await;
    assert_eq!(
        v["desired"]["lists"]["bad-hosts"],
        json!(["198.51.100.0/24", "203.0.113.7"])
    );
    // A list a document names is not deleted.
    let (s, v) = portal
        .call(
            reqwest::Method::DELETE,
            &t.domain,
            "/api/v1/target-lists/bad-hosts",
            &t.token,
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant configuration document"),
        "{v}"
    );

    // A VPN interface and two peers reach the device's configuration
    // (public keys only); revoking one removes it there.
    let (s, v) = put(
        &portal,
        &t,
        &format!("/api/v1/devices/{d}/vpn"),
        json!({"address": "10.8.0.1/24", "endpoint": "vpn.lists.example"}),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    let mut peers = Vec::new();
    for name in ["laptop", "phone"] {
        let (s, v) = portal
            .post(
                &t.domain,
                &format!("/api/v1/devices/{d}/vpn/peers"),
                &t.token,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        peers.push(v);
    }
    let key = |p: &Value| p["public_key"].as_str().unwrap().to_string();
    let v = eventually("both peers in the device's configuration", WAIT, || async {
        let v = device_config(&portal, &t, &d).await;
        let n = v["desired"]["vpn"]["peers"].as_array().map(Vec::len);
        (v["in_sync"] == true && n == Some(2)).then_some(v)
    })
    .await;
    let desired = v["desired"].to_string();
    assert!(
        !desired.contains("private"),
        "no private key in a configuration: {desired}"
    );
    let (s, v) = portal
        .post(
            &t.domain,
            &format!(
                "/api/v1/devices/{d}/vpn/peers/{}/revoke",
                peers[0]["id"].as_str().unwrap()
            ),
            &t.token,
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{v}");
    let v = eventually(
        "the revoked peer to leave the configuration",
        WAIT,
        || async {
            let v = device_config(&portal, &t, &d).await;
            let keys: Option<Vec<String>> = v["desired"]["vpn"]["peers"].as_array().map(|p| {
                p.iter()
                    .map(|p| p["public_key"].as_str().unwrap_or_default().to_string())
                    .collect()
            });
            (v["in_sync"] == true && keys == Some(vec![key(&peers[1])])).then_some(v)
        },
    )
    .await;
    assert_eq!(v["status"], "applied");
}
