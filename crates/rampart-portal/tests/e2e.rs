//! End to end with the real binaries: `rampart` and `rampart-agent` run as
//! processes in temp dirs and talk HTTPS over loopback, as in production.
//!
//! `rampart-agent` is found beside `rampart` in the target dir; the test
//! command builds all binaries first (`cargo build --bins`).

mod common;

use common::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_proto::api::{AckRequest, PollResponse, RefusalReport};
use rampart_proto::envelope::{Envelope, SignedInstruction};
use rampart_proto::keys::{HpkeSecretKey, SigningKey};
use rampart_proto::token::EnrollmentToken;
use serde_json::{json, Value};
use uuid::Uuid;

async fn instruction_status(p: &PortalProc, t: &Tenant, device: &str, seq: u64) -> Option<Value> {
    let (_, v) = p
        .get(
            &t.domain,
            &format!("/api/v1/devices/{device}/instructions"),
            &t.token,
        )
        .await;
    v.as_array()?
        .iter()
        .find(|i| i["seq"] == seq && (i["status"] == "ok" || i["status"] == "failed"))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_enroll_agents_and_run_signed_instructions() {
    let portal = PortalProc::start().await;
    let acme = portal.create_tenant("acme").await;
    let bravo = portal.create_tenant("bravo").await;

    let mut agents = Vec::new();
    for t in [&acme, &bravo] {
        let token = portal
            .enrollment_token(t, json!({"ttl_secs": 600, "labels": ["site:lab"]}))
            .await;
        let mut a = Agent::new();
        let (ok, out) = a.enroll(&token, portal.addr());
        assert!(ok, "enroll: {out}");
        a.start();
        agents.push(a);
    }

    for (t, a) in [(&acme, &agents[0]), (&bravo, &agents[1])] {
        let device = a.device_id();
        let (s, v) = portal
            .post(
                &t.domain,
                &format!("/api/v1/devices/{device}/instructions"),
                &t.token,
                Some(json!({"kind": "ping", "payload": {"message": t.domain}})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let seq = v["seq"].as_u64().unwrap();
        let done = eventually("the instruction ack", Duration::from_secs(30), || {
            instruction_status(&portal, t, &device, seq)
        })
        .await;
        assert_eq!(done["status"], "ok");
        assert_eq!(
            done["result"]["pong"],
            t.domain.as_str(),
            "the agent ran this tenant's payload"
        );

        // Heartbeats arrive as sealed health batches and show on the device.
        let dev = eventually("a heartbeat", Duration::from_secs(30), || async {
            let (_, v) = portal
                .get(&t.domain, &format!("/api/v1/devices/{device}"), &t.token)
                .await;
            (v["health"]["agent_version"].is_string()).then_some(v)
        })
        .await;
        assert_eq!(dev["connectivity"], "online");
        assert_eq!(dev["labels"], json!(["site:lab"]));
    }

    // Cross-tenant: bravo's token on acme's domain, and acme's device id on bravo's domain.
    let acme_dev = agents[0].device_id();
    let (s, _) = portal
        .get(&acme.domain, "/api/v1/devices", &bravo.token)
        .await;
    assert_eq!(s, 401);
    let (s, _) = portal
        .post(
            &bravo.domain,
            &format!("/api/v1/devices/{acme_dev}/instructions"),
            &bravo.token,
            Some(json!({"kind": "ping"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = portal
        .get(&bravo.domain, "/api/v1/devices", &bravo.token)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "bravo sees only its own device"
    );

    // Acme's agent pointed at bravo's domain (with bravo's pin) is an unknown device there.
    let pin_b = {
        let tok = portal.enrollment_token(&bravo, json!({})).await;
        EnrollmentToken::decode(&tok).unwrap().pin
    };
    let mut id = agents[0].identity();
    id["portal_url"] = json!(format!("https://{}:{}", bravo.domain, portal.port));
    id["pin"] = json!(pin_b);
    let cross = Agent::new();
    let state = cross.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for f in ["device.key", "wrap.key"] {
        std::fs::copy(agents[0].dir.path().join("state").join(f), state.join(f)).unwrap();
    }
    std::fs::write(state.join("identity.json"), id.to_string()).unwrap();
    let mut cross = cross;
    cross.start();
    let err = eventually(
        "the cross-tenant agent to be refused",
        Duration::from_secs(30),
        || async {
            cross.status()["status"]["last_error"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert!(err.contains("unknown device"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_and_agent_killed_during_uploads_lose_and_duplicate_nothing() {
    let mut portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    assert!(agent.enroll(&token, portal.addr()).0);
    agent.start();
    let device = agent.device_id();

    // Queue batches through the agent's outbox while the agent and the portal
    // die and come back: agent down 5..15, portal down 10..20.
    let mut sent = Vec::new();
    for i in 0..30 {
        match i {
            5 => {
                if let Some(mut p) = agent.proc.take() {
                    p.kill();
                }
            }
            10 => portal.kill(),
            15 => agent.start(),
            20 => portal.restart().await,
            _ => {}
        }
        let file = agent.dir.path().join(format!("events-{i}.jsonl"));
        let lines: String = (0..50)
            .map(|j| format!("{{\"event\":{i},\"line\":{j}}}\n"))
            .collect();
        std::fs::write(&file, lines).unwrap();
        let (ok, out, err) = run(agent.cmd().args(["send", "--kind", "events"]).arg(&file));
        assert!(ok, "send: {err}");
        sent.push(out.trim().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let got: Vec<Value> = eventually("every batch to arrive", Duration::from_secs(60), || async {
        let (s, v) = portal
            .get(
                &t.domain,
                &format!("/api/v1/batches?device={device}&limit=10000"),
                &t.token,
            )
            .await;
        let events: Vec<Value> = v
            .as_array()?
            .iter()
            .filter(|b| b["kind"] == "events")
            .cloned()
            .collect();
        (s == 200 && events.len() >= sent.len()).then_some(events)
    })
    .await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|b| b["batch_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(ids, want, "exactly the sent batches, each once");
    assert!(got.iter().all(|b| b["items"] == 50));
    let outbox = eventually("the outbox to drain", Duration::from_secs(30), || async {
        let s = agent.status();
        (s["outbox"]["batches"] == 0).then_some(s)
    })
    .await;
    assert_eq!(outbox["outbox"]["dropped_batches"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refusals_wrong_pin_expired_used_up_and_revoked_device() {
    let portal = PortalProc::start().await;
    let t = portal.create_tenant("acme").await;

    // Wrong pin: the agent refuses the portal before sending the secret.
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut bad = EnrollmentToken::decode(&token).unwrap();
    bad.pin = "00".repeat(32);
    let (ok, out) = Agent::new().enroll(&bad.encode(), portal.addr());
    assert!(
        !ok && out.contains("certificate"),
        "wrong pin must fail on the certificate: {out}"
    );
    // The real token still works afterwards: the secret was never spent.
    let mut good = Agent::new();
    assert!(good.enroll(&token, portal.addr()).0);

    // Used up: a one-time token a second time.
    let (ok, out) = Agent::new().enroll(&token, portal.addr());
    assert!(!ok && out.contains("used up"), "{out}");

    // Expired.
    let short = portal.enrollment_token(&t, json!({"ttl_secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (ok, out) = Agent::new().enroll(&short, portal.addr());
    assert!(!ok && out.contains("expired"), "{out}");

    // Revoked token.
    let (_, list) = portal
        .get(&t.domain, "/api/v1/enrollment-tokens", &t.token)
        .await;
    let revocable = portal.enrollment_token(&t, json!({"max_uses": 5})).await;
    let (_, list2) = portal
        .get(&t.domain, "/api/v1/enrollment-tokens", &t.token)
        .await;
    let new_id = list2
        .as_array()
        .unwrap()
        .iter()
        .find(|x| !list.as_array().unwrap().iter().any(|y| y["id"] == x["id"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = portal
        .post(
            &t.domain,
            &format!("/api/v1/enrollment-tokens/{new_id}/revoke"),
            &t.token,
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (ok, out) = Agent::new().enroll(&revocable, portal.addr());
    assert!(!ok && out.contains("revoked"), "{out}");

    // Revoked device: its next request fails at once, even a held long poll.
    good.start();
    let device = good.device_id();
    eventually("the agent to check in", Duration::from_secs(30), || async {
        good.status()["status"]["last_contact"].as_i64()
    })
    .await;
    let (s, _) = portal
        .post(
            &t.domain,
            &format!("/api/v1/devices/{device}/revoke"),
            &t.token,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let err = eventually(
        "the revoked agent to be refused",
        Duration::from_secs(30),
        || async {
            good.status()["status"]["last_error"]
                .as_str()
                .filter(|e| e.contains("revoked"))
                .map(str::to_string)
        },
    )
    .await;
    assert!(err.contains("device_revoked"), "{err}");
    let (s, _) = portal
        .post(
            &t.domain,
            &format!("/api/v1/devices/{device}/instructions"),
            &t.token,
            Some(json!({"kind": "ping"})),
        )
        .await;
    assert_eq!(s, 409, "no instructions for a revoked device");
}

/// What the hostile portal saw from the agent.
#[derive(Default)]
struct Seen {
    acks: Vec<u64>,
    refusals: Vec<RefusalReport>,
    polls: usize,
}

/// The real agent binary against a portal that serves tampered, replayed,
/// expired and misaddressed instructions: it runs only the genuine ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_tampered_replayed_expired_and_misaddressed_instructions() {
    use axum::routing::{get, post};

    // A fake portal with its own certificate and instruction key.
    let domain = "evil.rampart.test";
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![domain.into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let pin = rampart_proto::pin::spki_pin(cert.der()).unwrap();
    let signer = SigningKey::generate();
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    let now = rampart_agent::client::time_now();
    let env = |seq: u64, dev: Uuid, expires_at: i64| Envelope {
        tenant,
        device: dev,
        seq,
        issued_at: now,
        expires_at,
        kind: "ping".into(),
        payload: json!({"message": seq}),
    };
    let mut tampered = env(2, device, now + 600).sign(&signer);
    tampered.envelope =
        rampart_proto::b64(&serde_json::to_vec(&env(2, device, now + 600_000)).unwrap());
    let script: Vec<Vec<SignedInstruction>> = vec![
        vec![env(1, device, now + 600).sign(&signer)],
        vec![tampered],
        vec![env(1, device, now + 600).sign(&signer)], // replay of an applied seq
        vec![env(3, device, now - 10).sign(&signer)],  // expired
        vec![env(4, Uuid::new_v4(), now + 600).sign(&signer)], // another device's
        vec![env(5, device, now + 600).sign(&SigningKey::generate())], // another key
        vec![env(6, device, now + 600).sign(&signer)],
    ];
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Arc::new(script);
    let app = axum::Router::new()
        .route(
            "/api/v1/device/poll",
            get({
                let (seen, script) = (seen.clone(), script.clone());
                move || async move {
                    let i = {
                        let mut s = seen.lock().unwrap();
                        s.polls += 1;
                        s.polls - 1
                    };
                    if i >= script.len() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    axum::Json(PollResponse {
                        instructions: script.get(i).cloned().unwrap_or_default(),
                    })
                }
            }),
        )
        .route(
            "/api/v1/device/instructions/{seq}/ack",
            post({
                let seen = seen.clone();
                move |axum::extract::Path(seq): axum::extract::Path<u64>,
                      axum::Json(_a): axum::Json<AckRequest>| async move {
                    seen.lock().unwrap().acks.push(seq);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/api/v1/device/refusals",
            post({
                let seen = seen.clone();
                move |axum::Json(r): axum::Json<RefusalReport>| async move {
                    seen.lock().unwrap().refusals.push(r);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/api/v1/device/batches",
            post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
        );
    let certs = Arc::new(rampart_portal::tls::CertStore::new(
        domain,
        rampart_portal::tls::certified_key(&cert.pem(), &kp.serialize_der()).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rampart_portal::tls::serve(
        listener,
        rampart_portal::tls::server_config(certs),
        app,
        std::future::pending(),
    ));

    // An agent state dir that trusts this portal, made with the agent library.
    let mut agent = Agent::new();
    let dir = rampart_agent::identity::StateDir::new(agent.dir.path().join("state"), None);
    dir.save_device_key(&SigningKey::generate()).unwrap();
    let (_, upload) = HpkeSecretKey::generate();
    dir.save_identity(&rampart_agent::identity::Identity {
        portal_url: format!("https://{domain}:{}", addr.port()),
        resolve: Some(addr),
        pin,
        tenant_id: tenant,
        device_id: device,
        instruction_key: signer.verifying_key().to_b64(),
        upload_key: upload.to_b64(),
        poll_wait_secs: 1,
        enrolled_at: now,
    })
    .unwrap();
    agent.start();

    eventually(
        "the agent to work through the script",
        Duration::from_secs(60),
        || async {
            let s = seen.lock().unwrap();
            (s.acks.contains(&6) && s.refusals.len() >= 5).then_some(())
        },
    )
    .await;
    let s = seen.lock().unwrap();
    let mut acks = s.acks.clone();
    acks.dedup();
    assert_eq!(acks, vec![1, 6], "only the genuine instructions ran");
    let codes: Vec<&str> = s.refusals.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(
        codes,
        vec![
            "bad_signature",
            "replayed",
            "expired",
            "wrong_device",
            "bad_signature"
        ]
    );
    assert_eq!(s.refusals[1].seq, Some(1));
    drop(s);
    // The applied seq survived on disk: a restarted agent refuses seq 1 again.
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent.dir.path().join("state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["last_applied_seq"], 6);
    let stderr = agent.proc.as_ref().unwrap().stderr();
    assert!(
        stderr.contains("refused an instruction"),
        "refusals are logged"
    );
}

/// A tenant served with the operator's own certificate: tokens pin it, and
/// agents enroll and take instructions through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_with_operator_provided_certificate() {
    let portal = PortalProc::start().await;
    let domain = "own-cert.rampart.test";
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![domain.into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let (cf, kf) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cf, cert.pem()).unwrap();
    std::fs::write(&kf, kp.serialize_pem()).unwrap();

    let (s, v) = portal
        .post(
            "localhost",
            "/api/v1/admin/tenants",
            &portal.operator,
            Some(json!({"name": "owncert", "domain": domain, "cert_file": cf, "key_file": kf})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let t = Tenant {
        domain: domain.into(),
        token: v["admin_token"].as_str().unwrap().into(),
    };
    // The tenant API is now served with the operator's certificate, which the
    // portal's CA did not issue: talk to it with the agent's pinned client.
    let token = {
        let client = rampart_agent::client::PortalClient::new(
            &format!("https://{domain}:{}", portal.port),
            &rampart_proto::pin::spki_pin(cert.der()).unwrap(),
            Some(portal.addr()),
        );
        assert!(client.is_ok());
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
            .resolve(domain, portal.addr())
            .build()
            .unwrap();
        let resp = http
            .post(format!(
                "https://{domain}:{}/api/v1/enrollment-tokens",
                portal.port
            ))
            .bearer_auth(&t.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        EnrollmentToken::decode(&token).unwrap().pin,
        rampart_proto::pin::spki_pin(cert.der()).unwrap()
    );
    let mut agent = Agent::new();
    let (ok, out) = agent.enroll(&token, portal.addr());
    assert!(ok, "{out}");
    agent.start();
    eventually("the agent to check in", Duration::from_secs(30), || async {
        agent.status()["status"]["last_contact"].as_i64()
    })
    .await;
}
