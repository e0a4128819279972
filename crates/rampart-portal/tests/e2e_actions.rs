//! Remote actions end to end, with the real `rampart` and `rampart-agent`
//! binaries over HTTPS on loopback: connectivity test, diagnostics bundle,
//! device key rotation and restart, and the 400s for bad actions.

mod common;

use common::*;

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use rampart_agent::identity::StateDir;
use serde_json::{json, Value};

/// Posts an action and waits for its outcome (ok or failed).
async fn act(p: &PortalProc, t: &Tenant, device: &str, body: Value) -> Value {
    let (s, v) = p
        .post(
            &t.domain,
            &format!("/api/v1/devices/{device}/actions"),
            &t.token,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{body}: {v}");
    let seq = v["seq"].as_u64().unwrap();
    eventually("the action's outcome", Duration::from_secs(60), || async {
        let (s, v) = p
            .get(
                &t.domain,
                &format!("/api/v1/devices/{device}/actions/{seq}"),
                &t.token,
            )
            .await;
        (s == 200 && (v["status"] == "ok" || v["status"] == "failed")).then_some(v)
    })
    .await
}

/// The `started_at` of the device's last heartbeat, once it is not `not`.
async fn started_at_other_than(p: &PortalProc, t: &Tenant, device: &str, not: i64) -> i64 {
    eventually(
        "a heartbeat with started_at",
        Duration::from_secs(60),
        || async {
            let (_, v) = p
                .get(&t.domain, &format!("/api/v1/devices/{device}"), &t.token)
                .await;
            v["health"]["started_at"]
                .as_i64()
                .filter(|s| *s != 0 && *s != not)
        },
    )
    .await
}

fn contains_any(hay: &str, needles: &[(&str, String)]) -> Option<String> {
    needles
        .iter()
        .find(|(_, n)| !n.is_empty() && hay.contains(n.as_str()))
        .map(|(what, _)| what.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_actions_connectivity_diagnostics_key_rotation_and_restart() {
    let portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    let (ok, out) = agent.enroll(&token, portal.addr());
    assert!(ok, "enroll: {out}");
    agent.start();
    let device = agent.device_id();
    let state = agent.dir.path().join("state");
    let first_start = started_at_other_than(&portal, &t, &device, 0).await;

    // --- connectivity test: a listener this test opens, and a closed port.
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    open.set_nonblocking(true).unwrap();
    let open_addr = open.local_addr().unwrap();
    let closed_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = act(
        &portal,
        &t,
        &device,
        json!({"action": "connectivity_test", "params": {"targets": [
            {"target": open_addr.to_string()},
            {"target": closed_addr.to_string(), "timeout_ms": 2000},
        ]}}),
    )
    .await;
    assert_eq!(r["status"], "ok", "{r}");
    let results = r["result"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "the portal and two targets: {r}");
    assert_eq!(results[0]["ok"], true, "the portal answers: {r}");
    assert_eq!(
        results[0]["connected"],
        portal.addr().to_string(),
        "the portal through the agent's address override"
    );
    assert_eq!(results[1]["target"], open_addr.to_string());
    assert_eq!(results[1]["ok"], true, "{r}");
    assert_eq!(results[1]["addresses"], json!(["127.0.0.1"]));
    assert!(results[1]["connect_ms"].is_u64());
    assert_eq!(results[2]["ok"], false, "{r}");
    assert_eq!(results[2]["error"], "connection refused");
    // The listener itself saw the agent's connection.
    assert!(
        open.accept().is_ok(),
        "the open listener has the agent's connection queued"
    );

    // --- diagnostics: uploaded sealed, listed, opened, with no secrets.
    let r = act(&portal, &t, &device, json!({"action": "diagnostics"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let batch_id = r["result"]["batch_id"].as_str().unwrap().to_string();
    eventually(
        "the bundle to be listed",
        Duration::from_secs(30),
        || async {
            let (_, v) = portal
                .get(
                    &t.domain,
                    &format!("/api/v1/devices/{device}/diagnostics"),
                    &t.token,
                )
                .await;
            v.as_array()?
                .iter()
                .any(|b| b["batch_id"] == batch_id.as_str())
                .then_some(())
        },
    )
    .await;
    let (s, bundle) = portal
        .get(
            &t.domain,
            &format!("/api/v1/devices/{device}/diagnostics/{batch_id}"),
            &t.token,
        )
        .await;
    assert_eq!(s, 200, "{bundle}");
    assert_eq!(bundle["status"]["device_id"], device.as_str());
    assert_eq!(bundle["status"]["started_at"], first_start);
    assert_eq!(
        bundle["options"]["heartbeat_secs"], 1,
        "the options in force"
    );
    assert!(bundle["controls"].is_object(), "the data controls in force");
    assert!(bundle["outbox"]["max_bytes"].is_u64());
    let logs = bundle["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("agent running"))),
        "recent log lines: {logs:?}"
    );
    // No key, wrapping key or token in any encoding.
    let text = bundle.to_string();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let wrap_file = std::fs::read_to_string(state.join("wrap.key")).unwrap();
    let wrap = base64::engine::general_purpose::STANDARD
        .decode(wrap_file.trim())
        .unwrap();
    let dev_secret = StateDir::new(&state, None)
        .device_key()
        .unwrap()
        .secret_bytes();
    let wrapped_key = std::fs::read(state.join("device.key")).unwrap();
    let secrets = [
        ("wrap key (base64)", wrap_file.trim().to_string()),
        ("wrap key (hex)", hex_of(&wrap)),
        ("device key (base64)", b64(&dev_secret)),
        ("device key (hex)", hex_of(&dev_secret)),
        ("wrapped device key (base64)", b64(&wrapped_key)),
        ("tenant token", t.token.clone()),
        ("enrollment token", token.clone()),
    ];
    assert_eq!(contains_any(&text, &secrets), None, "bundle leaks a secret");

    // --- key rotation: keep the old state to show the old key is refused.
    let old_copy = tempfile::tempdir().unwrap();
    let old_state = old_copy.path().join("state");
    std::fs::create_dir_all(&old_state).unwrap();
    for f in ["device.key", "wrap.key", "identity.json"] {
        std::fs::copy(state.join(f), old_state.join(f)).unwrap();
    }
    let old_key_file = std::fs::read(state.join("device.key")).unwrap();
    let r = act(&portal, &t, &device, json!({"action": "rotate_key"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let new_pk = r["result"]["public_key"].as_str().unwrap();
    assert_ne!(
        std::fs::read(state.join("device.key")).unwrap(),
        old_key_file
    );
    assert!(!state.join("device.key.next").exists());
    let on_disk = StateDir::new(&state, None).device_key().unwrap();
    assert_eq!(on_disk.verifying_key().to_b64(), new_pk);
    assert_ne!(
        StateDir::new(&old_state, None)
            .device_key()
            .unwrap()
            .verifying_key()
            .to_b64(),
        new_pk
    );
    let (_, audit) = portal.get(&t.domain, "/api/v1/audit", &t.token).await;
    assert!(
        audit.to_string().contains("device.key_rotate"),
        "the rotation is audited: {audit}"
    );
    // The old key is refused: an agent on the old state gets 401.
    let mut old_agent = Agent {
        dir: old_copy,
        proc: None,
    };
    old_agent.start();
    let err = eventually(
        "the old key to be refused",
        Duration::from_secs(30),
        || async {
            let (ok, out, _) = run(old_agent.cmd().args(["status", "--json"]));
            let v: Value = serde_json::from_str(&out).ok()?;
            ok.then(|| v["status"]["last_error"].as_str().map(str::to_string))?
        },
    )
    .await;
    assert!(
        err.contains("401") && err.contains("device signature refused"),
        "{err}"
    );
    if let Some(mut p) = old_agent.proc.take() {
        p.kill();
    }
    // The agent goes on with the new key.
    let r = act(
        &portal,
        &t,
        &device,
        json!({"action": "connectivity_test", "params": {"portal": true}}),
    )
    .await;
    assert_eq!(r["status"], "ok", "acked with the new key: {r}");

    // --- restart: the same process re-executes and reports a new start.
    let pid = agent.proc.as_ref().unwrap().child.id();
    // started_at has 1 s resolution: let the clock pass the first start.
    eventually("the clock to move on", Duration::from_secs(5), || async {
        (rampart_portal::service::now() > first_start).then_some(())
    })
    .await;
    let r = act(&portal, &t, &device, json!({"action": "restart"})).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["result"]["previous_started_at"], first_start);
    let second_start = started_at_other_than(&portal, &t, &device, first_start).await;
    assert!(second_start > first_start);
    let child = &mut agent.proc.as_mut().unwrap().child;
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the agent is still running"
    );
    assert_eq!(child.id(), pid, "re-executed in place");
    let status = eventually(
        "status.json of the new start",
        Duration::from_secs(30),
        || async {
            let s = agent.status();
            (s["status"]["started_at"] == second_start).then_some(s)
        },
    )
    .await;
    assert_eq!(status["status"]["pid"], pid);
    // After the restart the agent loaded the rotated key from disk.
    let r = act(
        &portal,
        &t,
        &device,
        json!({"action": "connectivity_test", "params": {"portal": true}}),
    )
    .await;
    assert_eq!(
        r["status"], "ok",
        "the restarted agent signs with the new key: {r}"
    );
    let mut log = String::new();
    std::fs::File::open(agent.dir.path().join("agent.err"))
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("re-executing the agent"), "{log}");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_actions_are_refused_with_400_and_a_message() {
    let portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let agent = Agent::new();
    assert!(agent.enroll(&token, portal.addr()).0);
    let device = agent.device_id();
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"target": format!("h{i}.example.net:443")}))
        .collect();
    // (body, a phrase the message must hold)
    let cases = [
        (json!({"action": "self_destruct"}), "unknown action"),
        (
            json!({"action": "connectivity_test", "params": {"targets": many}}),
            "limit is 16",
        ),
        (
            json!({"action": "connectivity_test", "params": {"targets": [{"target": "no-port.example.net"}]}}),
            "is not host:port",
        ),
        (
            json!({"action": "connectivity_test", "params": {"targets": [{"target": "[::1:22"}]}}),
            "is not host:port",
        ),
        (
            json!({"action": "connectivity_test", "params": {"targets": [{"target": "a.example:1", "timeout_ms": 60000}]}}),
            "timeout_ms",
        ),
        (
            json!({"action": "connectivity_test", "params": {"portal": false}}),
            "at least one target",
        ),
        (
            json!({"action": "restart", "params": {"now": true}}),
            "takes no params",
        ),
    ];
    for (body, phrase) in cases {
        let (s, v) = portal
            .post(
                &t.domain,
                &format!("/api/v1/devices/{device}/actions"),
                &t.token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(phrase), "{body}: {msg}");
        assert_eq!(msg, msg.to_lowercase(), "lowercase: {msg}");
        assert!(!msg.ends_with('.'), "no trailing period: {msg}");
    }
    // Nothing was queued.
    let (_, v) = portal
        .get(
            &t.domain,
            &format!("/api/v1/devices/{device}/instructions"),
            &t.token,
        )
        .await;
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "set_data_controls"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_needs_a_pending_instruction_and_a_proof_by_the_new_key() {
    use rampart_agent::client::{ClientError, PortalClient};
    use rampart_proto::actions::KeyRotateRequest;
    use rampart_proto::keys::SigningKey;

    let portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let agent = Agent::new();
    assert!(agent.enroll(&token, portal.addr()).0);
    let state = StateDir::new(agent.dir.path().join("state"), None);
    let id = state.identity().unwrap();
    let old = state.device_key().unwrap();
    // The key it holds is not used: each request names its signer.
    let client = PortalClient::new(&id.portal_url, &id.pin, id.resolve)
        .unwrap()
        .with_device(
            id.device_id,
            std::sync::Arc::new(state.device_key().unwrap()),
        );
    let request = |new: &SigningKey, prover: &SigningKey, seq: u64, proof_seq: u64| {
        let pk = new.verifying_key().to_b64();
        let proof = prover.sign(&KeyRotateRequest::proof_input(
            id.tenant_id,
            id.device_id,
            &pk,
            proof_seq,
        ));
        KeyRotateRequest {
            seq,
            new_public_key: pk,
            proof: rampart_proto::b64(&proof),
        }
    };
    let refused = |r: Result<_, ClientError>| match r {
        Err(ClientError::Refused {
            status, message, ..
        }) => (status, message),
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => panic!("{e}"),
    };
    let new = SigningKey::generate();

    // No rotation was asked for.
    let (s, m) = refused(client.rotate_key_as(&old, &request(&new, &new, 1, 1)).await);
    assert_eq!(s, 409, "{m}");
    assert!(m.contains("not a pending rotate_device_key"), "{m}");

    let (s, v) = portal
        .post(
            &t.domain,
            &format!("/api/v1/devices/{}/actions", id.device_id),
            &t.token,
            Some(json!({"action": "rotate_key"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    // A proof for another seq, or by another key than the one offered.
    for bad in [
        request(&new, &new, seq, seq + 1),
        request(&new, &SigningKey::generate(), seq, seq),
    ] {
        let (s, m) = refused(client.rotate_key_as(&old, &bad).await);
        assert_eq!(s, 400, "{m}");
        assert!(m.contains("proof does not verify"), "{m}");
    }
    // Signed by a key the portal does not hold.
    let (s, m) = refused(
        client
            .rotate_key_as(&SigningKey::generate(), &request(&new, &new, seq, seq))
            .await,
    );
    assert_eq!(s, 401, "{m}");

    let view = client
        .rotate_key_as(&old, &request(&new, &new, seq, seq))
        .await
        .unwrap();
    assert_eq!(view.public_key, new.verifying_key().to_b64());
    let (s, _) = refused(client.device_key_as(&old).await);
    assert_eq!(s, 401, "the old key is refused");
    assert_eq!(
        client.device_key_as(&new).await.unwrap().public_key,
        view.public_key
    );
    // The old key cannot rotate again either.
    let (s, _) = refused(
        client
            .rotate_key_as(&old, &request(&SigningKey::generate(), &old, seq, seq))
            .await,
    );
    assert_eq!(s, 401);
}

/// A crash during a rotation leaves `device.key.next`: at start the agent
/// keeps whichever key the portal holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_is_settled_at_start_with_the_key_the_portal_holds() {
    use rampart_agent::client::PortalClient;
    use rampart_proto::actions::KeyRotateRequest;
    use rampart_proto::keys::SigningKey;

    let portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    assert!(agent.enroll(&token, portal.addr()).0);
    let device = agent.device_id();
    let state_path = agent.dir.path().join("state");
    let state = StateDir::new(&state_path, None);
    let id = state.identity().unwrap();

    // Crashed before the portal heard of the new key: it is discarded.
    let old_file = std::fs::read(state_path.join("device.key")).unwrap();
    state.save_next_device_key(&SigningKey::generate()).unwrap();
    agent.start();
    let r = act(
        &portal,
        &t,
        &device,
        json!({"action": "connectivity_test", "params": {"portal": true}}),
    )
    .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert!(!state_path.join("device.key.next").exists());
    assert_eq!(
        std::fs::read(state_path.join("device.key")).unwrap(),
        old_file
    );
    agent.proc.take().unwrap().kill();

    // Crashed after the portal took the new key, before device.key was
    // replaced: the agent must switch to it or be locked out.
    let (s, v) = portal
        .post(
            &t.domain,
            &format!("/api/v1/devices/{device}/actions"),
            &t.token,
            Some(json!({"action": "rotate_key"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    let old = state.device_key().unwrap();
    let new = SigningKey::generate();
    state.save_next_device_key(&new).unwrap();
    let pk = new.verifying_key().to_b64();
    let proof = new.sign(&KeyRotateRequest::proof_input(
        id.tenant_id,
        id.device_id,
        &pk,
        seq,
    ));
    let client = PortalClient::new(&id.portal_url, &id.pin, id.resolve)
        .unwrap()
        .with_device(
            id.device_id,
            std::sync::Arc::new(state.device_key().unwrap()),
        );
    client
        .rotate_key_as(
            &old,
            &KeyRotateRequest {
                seq,
                new_public_key: pk.clone(),
                proof: rampart_proto::b64(&proof),
            },
        )
        .await
        .unwrap();
    agent.start();
    // The agent can only fetch and run the pending rotation once it signs
    // with the key the portal now holds.
    let done = eventually(
        "the pending rotation to run",
        Duration::from_secs(60),
        || async {
            let (_, v) = portal
                .get(
                    &t.domain,
                    &format!("/api/v1/devices/{device}/actions/{seq}"),
                    &t.token,
                )
                .await;
            (v["status"] == "ok" || v["status"] == "failed").then_some(v)
        },
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["result"]["previous_public_key"], pk.as_str());
    assert!(!state_path.join("device.key.next").exists());
    assert!(
        agent
            .proc
            .as_ref()
            .unwrap()
            .stderr()
            .contains("the portal holds the new device key"),
        "{}",
        agent.proc.as_ref().unwrap().stderr()
    );
}
