//! Encryption at rest (issue 6 §1, §3): tenant content never reaches the
//! disk in the clear, data keys rotate without downtime, the master key
//! rotates, and destroying a tenant's keys makes a copy of the data dir
//! taken before unreadable for that tenant only.
//!
//! The portal runs on a real data dir (SQLite file with its WAL, blob dir,
//! vault); data goes in through the same service calls the routes and the
//! device API make, and the operator's key routes through the router.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use rampart_portal::audit::Actor;
use rampart_portal::config::Config;
use rampart_portal::Portal;
use rampart_proto::api::{EnrollRequest, Heartbeat};
use rampart_proto::batch::{self, BatchHeader, Priority};
use rampart_proto::keys::{HpkePublicKey, SigningKey};
use rampart_proto::token::EnrollmentToken;
use rampart_store::{AlarmUpdate, DeviceId, Tenant, TenantId};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file of `dir` (database, WAL, blobs, vault, CA) with `needle` in it.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.into_iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        // Retire old key versions as soon as nothing uses them: this test
        // is the only writer, so no other process can hold an old key.
        key_retire_grace_secs: 0,
        key_rekey_batch: 7,
        ..Config::default()
    }
}

struct Dev {
    id: DeviceId,
    upload_key: String,
}

async fn enroll(p: &Portal, tenant: &Tenant, hostname: &str, labels: Vec<String>) -> Dev {
    let (_, token) = p
        .create_enrollment_token(&Actor::Cli, tenant, 600, 1, labels, false)
        .await
        .unwrap();
    let secret = EnrollmentToken::decode(&token).unwrap().secret;
    let key = SigningKey::generate();
    let pk = key.verifying_key().to_b64();
    let proof = rampart_proto::b64(&key.sign(&EnrollRequest::proof_input(&secret, &pk)));
    let r = p
        .enroll(
            tenant,
            &EnrollRequest {
                secret,
                device_public_key: pk,
                proof,
                hostname: hostname.into(),
                agent_version: "test".into(),
            },
        )
        .await
        .unwrap();
    Dev {
        id: DeviceId(r.device_id),
        upload_key: r.upload_key,
    }
}

async fn upload(p: &Portal, tenant: TenantId, dev: &Dev, kind: &str, plain: &[u8]) {
    let header = BatchHeader {
        batch_id: Uuid::new_v4(),
        priority: Priority::Data,
        created_at: rampart_portal::service::now(),
        items: 1,
        kind: kind.into(),
    };
    let key = HpkePublicKey::from_b64(&dev.upload_key).unwrap();
    let frame = batch::seal(&header, plain, &key, tenant.0, dev.id.0).unwrap();
    p.ingest_batch(tenant, dev.id, &frame).await.unwrap();
}

/// Flows between two known addresses, `n` of them, starting `t0_ms`.
fn flows(src: &str, dst: &str, t0_ms: u64, n: u64) -> Vec<u8> {
    let recs: Vec<rampart_flow::FlowRecord> = (0..n)
        .map(|i| rampart_flow::FlowRecord {
            start_ms: t0_ms + i * 1000,
            end_ms: t0_ms + i * 1000 + 10,
            bytes: 1000 + i,
            packets: 3,
            src_addr: src.parse().unwrap(),
            dst_addr: dst.parse().unwrap(),
            exporter: "192.0.2.1".parse().unwrap(),
            in_if: 0,
            out_if: 0,
            sampling_rate: 1,
            domain_id: 0,
            src_port: 40_000,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x1b,
            direction: rampart_flow::Direction::Unknown,
            resample: 1,
            flags: 0,
            app: rampart_flow::AppLabel::default(),
        })
        .collect();
    let mut out = Vec::new();
    rampart_flow::codec::encode(&recs, &mut out);
    out
}

/// The IDS alert telegraf's suricata tests read (title "Corrupted HTTP
/// body", 10.0.0.5 → 179.60.192.3).
fn telegraf_alert() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/suricata_eve/telegraf/v2/alert.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match rampart_flow::eve::parse_line(v.to_string().as_bytes(), "0.0.0.0".parse().unwrap()) {
        Ok(rampart_flow::eve::EveEvent::Alert(a)) => {
            rampart_proto::alerts::encode(&[rampart_agent::tail::ids_alert(&a)])
        }
        other => panic!("alert.json is not an alert: {other:?}"),
    }
}

fn heartbeat(last_error: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Heartbeat {
        agent_version: "1.0".into(),
        uptime_secs: 5,
        sent_at: rampart_portal::service::now(),
        outbox_batches: 0,
        outbox_bytes: 0,
        outbox_dropped_batches: 0,
        outbox_dropped_bytes: 0,
        last_error: Some(last_error.into()),
        ..Default::default()
    })
    .unwrap();
    v.push(b'\n');
    v
}

async fn call(app: &axum::Router, method: &str, host: &str, path: &str, token: &str) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "{method} {path}: {status} {body:?}");
    serde_json::from_slice(&body).unwrap()
}

fn ms_ago(mins: u64) -> u64 {
    rampart_portal::service::now_ms() as u64 - mins * 60_000
}

/// Everything the portal stores for a tenant, each with a marker string,
/// written through the paths that store tenant content.
async fn fill(p: &Portal, tenant: &Tenant, tag: &str) -> (Dev, Vec<String>) {
    let t = tenant.id;
    let host = format!("{tag}-edge-hostname");
    let label = format!("{tag}-site-label");
    let dev = enroll(p, tenant, &host, vec![label.clone()]).await;
    let hb_error = format!("{tag}-heartbeat-error");
    upload(p, t, &dev, "health", &heartbeat(&hb_error)).await;
    upload(p, t, &dev, "ids_alerts", &telegraf_alert()).await;
    upload(
        p,
        t,
        &dev,
        "flows",
        &flows("10.77.1.9", "198.51.100.77", ms_ago(20), 5),
    )
    .await;
    rampart_portal::flows::drain(p).await.unwrap();
    rampart_portal::alarms::detect(p).await.unwrap();

    let redact = format!("{tag}-redact-pattern");
    let controls: rampart_proto::controls::DataControls = serde_json::from_value(json!({
        "version": 0,
        "redact": [{"field": "app", "pattern": redact, "replacement": "x"}],
    }))
    .unwrap();
    rampart_portal::flows::set_data_controls(p, &Actor::Cli, t, controls)
        .await
        .unwrap();
    let settings = rampart_alarms::settings::DetectorSettings {
        blocked_networks: vec!["203.0.113.77/32".into()],
        ..Default::default()
    };
    rampart_portal::alarms::set_settings(p, t, &settings)
        .await
        .unwrap();
    let hook = format!("https://{tag}-hook-host.example.net/alarms");
    rampart_portal::notify::create_webhook(
        p,
        t,
        hook.clone(),
        rampart_alarms::model::Severity::Info,
        vec![],
    )
    .await
    .unwrap();
    let mail = format!("{tag}-soc@acme.example");
    let route: rampart_portal::notify::EmailRoute =
        serde_json::from_value(json!({"recipients": [mail]})).unwrap();
    rampart_portal::notify::set_email_route(p, t, &route)
        .await
        .unwrap();
    let comment = format!("{tag}-rule-comment");
    rampart_portal::alarms::create_rule(
        p,
        t,
        &rampart_store::AlarmRuleRow {
            id: Uuid::new_v4(),
            action: "mute".into(),
            kind: Some("port_scan".into()),
            host: Some("198.51.100.23".into()),
            network: None,
            port: None,
            expires_at: None,
            comment: comment.clone(),
            created_at: 1,
        },
    )
    .await
    .unwrap();
    let ping = format!("{tag}-ping-message");
    p.queue_instruction(
        &Actor::Cli,
        t,
        dev.id,
        "ping",
        json!({"message": ping}),
        None,
    )
    .await
    .unwrap();
    let refusal = format!("{tag}-refusal-message");
    p.store
        .add_device_event(
            t,
            &rampart_store::DeviceEvent {
                device_id: dev.id,
                at: 7,
                kind: "refusal".into(),
                detail: json!({"code": "bad_signature", "message": refusal}),
            },
        )
        .await
        .unwrap();
    let alarms = p
        .store
        .list_alarms(
            t,
            &rampart_store::AlarmFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids = alarms.iter().find(|a| a.kind == "ids_alert").unwrap();
    let note = format!("{tag}-alarm-note");
    let assignee = format!("{tag}-assignee");
    p.store
        .update_alarm(t, ids.id, "tenant:t", &AlarmUpdate::Note(note.clone()), 9)
        .await
        .unwrap();
    p.store
        .update_alarm(
            t,
            ids.id,
            "tenant:t",
            &AlarmUpdate::Assign(Some(assignee.clone())),
            9,
        )
        .await
        .unwrap();
    rampart_portal::notify::notify(p).await.unwrap();
    let email = format!("{tag}-billing@acme.example");
    p.store
        .apply_billing(
            t,
            &rampart_store::BillingUpdate {
                event_id: format!("evt_{tag}"),
                event_at: 1,
                customer_id: format!("cus_{tag}"),
                email: Some(email.clone()),
                card_brand: Some("visa".into()),
                card_last4: Some("4242".into()),
                subscription: None,
                now: 1,
            },
        )
        .await
        .unwrap();
    // A tenant user, created and logged in through the service paths the
    // routes and the CLI use; one failed login for an address with no
    // account, which the audit entry keeps only sealed.
    let user_email = format!("{tag}-ana@acme.example");
    rampart_portal::users::create_user(
        p,
        &Actor::Cli,
        Some(t),
        &user_email,
        Some(rampart_portal::access::Role::Admin),
        Some(USER_PW),
    )
    .await
    .unwrap();
    // A wrong password first (audited with the account), then the login.
    let wrong = rampart_portal::users::login(
        p,
        tenant,
        "192.0.2.8".parse().unwrap(),
        &rampart_portal::users::LoginRequest {
            email: &user_email,
            password: "not the password at all",
            totp_code: None,
            recovery_code: None,
        },
    )
    .await;
    assert!(wrong.is_err(), "wrong password");
    login(p, tenant, &user_email).await;
    let stranger = format!("{tag}-nobody@acme.example");
    let miss = rampart_portal::users::login(
        p,
        tenant,
        "192.0.2.9".parse().unwrap(),
        &rampart_portal::users::LoginRequest {
            email: &stranger,
            password: USER_PW,
            totp_code: None,
            recovery_code: None,
        },
    )
    .await;
    assert!(miss.is_err(), "no such account");
    // A target list: its description and entries are tenant content.
    let list_note = format!("{tag}-list-description");
    let list_domain = format!("{tag}-target.example");
    rampart_portal::targets::put(
        p,
        t,
        &Actor::Cli,
        "threats",
        rampart_portal::targets::PutList {
            description: list_note.clone(),
            entries: vec![list_domain.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let markers = vec![
        host,
        label,
        hb_error,
        redact,
        hook,
        mail,
        comment,
        ping,
        refusal,
        note,
        assignee,
        email,
        user_email,
        stranger,
        list_note,
        list_domain,
    ];
    (dev, markers)
}

const USER_PW: &str = "correct horse battery staple";

/// Logs `email` in on the tenant's domain; the session's user.
async fn login(p: &Portal, tenant: &Tenant, email: &str) -> rampart_store::UserRow {
    rampart_portal::users::login(
        p,
        tenant,
        "192.0.2.8".parse().unwrap(),
        &rampart_portal::users::LoginRequest {
            email,
            password: USER_PW,
            totp_code: None,
            recovery_code: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("login of {email}: {e}"))
    .user
}

#[tokio::test]
async fn no_tenant_content_is_found_in_any_file_of_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let p = Portal::open(config(dir.path())).await.unwrap();
    let acme = p
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    let (dev, mut markers) = fill(&p, &acme, "kp7731").await;
    // A report (its body names the device's hostname) and its recipients.
    let report_to = "kp7731-report-rcpt@acme.example".to_string();
    let rs = rampart_portal::reports::ReportSettings {
        enabled: true,
        recipients: vec![report_to.clone()],
    };
    rampart_portal::reports::set_settings(&p, acme.id, &rs)
        .await
        .unwrap();
    let now = rampart_portal::service::now();
    let (_, report) = rampart_portal::reports::generate_now(&p, &acme, "daily", None, now)
        .await
        .unwrap();
    assert_eq!(report.devices[0].hostname, "kp7731-edge-hostname");
    markers.push(report_to);
    // An MSP operator user belongs to no tenant and stays clear on purpose.
    rampart_portal::users::create_user(
        &p,
        &Actor::Cli,
        None,
        "kp7731-noc@msp.example",
        None,
        Some(USER_PW),
    )
    .await
    .unwrap();
    // What the uploads carried: the alert's signature and addresses (in
    // alarms, evidence, history, deliveries), the flows' addresses (in
    // segments and detector state), the detector settings' network.
    markers.extend(
        [
            "Corrupted HTTP body",
            "179.60.192.3",
            "198.51.100.77",
            "10.77.1.9",
            "203.0.113.77",
            "198.51.100.23",
        ]
        .map(String::from),
    );
    // Each marker was stored: it reads back through the store.
    let d = p.store.get_device(acme.id, dev.id).await.unwrap().unwrap();
    assert_eq!(d.hostname, "kp7731-edge-hostname");
    assert_eq!(d.labels, vec!["kp7731-site-label"]);
    assert_eq!(d.health.unwrap()["last_error"], "kp7731-heartbeat-error");
    let hooks = p.store.list_webhooks(acme.id).await.unwrap();
    assert_eq!(hooks[0].url, "https://kp7731-hook-host.example.net/alarms");
    let alarms = p
        .store
        .list_alarms(
            acme.id,
            &rampart_store::AlarmFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids = alarms.iter().find(|a| a.kind == "ids_alert").unwrap();
    assert_eq!(ids.title, "Corrupted HTTP body");
    assert_eq!(ids.assignee.as_deref(), Some("kp7731-assignee"));
    let history = p.store.alarm_history(acme.id, ids.id).await.unwrap();
    assert!(history
        .iter()
        .any(|e| e.detail["text"] == "kp7731-alarm-note"));
    assert!(!p
        .store
        .list_deliveries(acme.id, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        p.store
            .get_billing(acme.id)
            .await
            .unwrap()
            .unwrap()
            .email
            .as_deref(),
        Some("kp7731-billing@acme.example")
    );
    let segs = p
        .store
        .list_flow_segments(acme.id, rampart_store::SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    assert!(!segs.is_empty(), "the flows were stored");
    // The user reads back, and its login and the failed one were audited.
    let users = p.store.list_users(Some(acme.id)).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].email, "kp7731-ana@acme.example");
    assert!(users[0]
        .password_hash
        .as_deref()
        .is_some_and(|h| h.starts_with("$argon2id$")));
    let audit = p.store.list_audit(acme.id, 0, 1000).await.unwrap();
    let login_ok = audit.iter().find(|e| e.action == "login.success").unwrap();
    assert_eq!(login_ok.actor, format!("user:{}", users[0].id));
    let target = format!("user:{}", users[0].id);
    assert!(audit
        .iter()
        .any(|e| e.action == "login.failure" && e.target == target));
    let failure = audit
        .iter()
        .find(|e| e.action == "login.failure" && e.target == "user:unknown")
        .unwrap();
    let detail: Value = serde_json::from_str(&failure.detail).unwrap();
    assert!(detail["email_sealed"].is_string(), "{failure:?}");
    drop(p);

    for m in &markers {
        let found = holding(dir.path(), m.as_bytes());
        assert!(found.is_empty(), "{m:?} found in the clear in {found:?}");
    }
    // The same scan does find what is kept clear on purpose.
    assert!(!holding(dir.path(), b"acme.rampart.test").is_empty());
    assert!(!holding(dir.path(), b"ids_alert").is_empty());
    assert!(!holding(dir.path(), b"kp7731-noc@msp.example").is_empty());
}

#[tokio::test]
async fn data_keys_rotate_new_writes_use_the_new_version_and_old_data_is_reencrypted_then_retired()
{
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(Portal::open(config(dir.path())).await.unwrap());
    let app = rampart_portal::app(p.clone());
    let op = p
        .mint_api_token(&Actor::Cli, None, "op", "operator", None)
        .await
        .unwrap()
        .secret;
    let acme = p
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    let tok = p
        .mint_api_token(&Actor::Cli, Some(acme.id), "t", "admin", None)
        .await
        .unwrap()
        .secret;
    let (dev, _) = fill(&p, &acme, "rot").await;
    let keys_path = format!("/api/v1/admin/tenants/{}/keys", acme.name);
    let before = call(&app, "GET", "localhost", &keys_path, &op).await;
    assert_eq!(before["current_version"], 1);
    let rows_v1 = before["versions"][0]["rows"].as_u64().unwrap();
    assert!(rows_v1 > 10, "{before}");
    let totals_path = format!(
        "/api/v1/flows/totals?from={}&to={}",
        ms_ago(60),
        ms_ago(0) + 60_000
    );
    let totals = call(&app, "GET", &acme.domain, &totals_path, &tok).await;

    let r = call(
        &app,
        "POST",
        "localhost",
        &format!("{keys_path}/rotate"),
        &op,
    )
    .await;
    assert_eq!(r["version"], 2);
    // New writes use version 2 at once: a setting, and a flow segment file.
    rampart_portal::alarms::set_settings(
        &p,
        acme.id,
        &rampart_alarms::settings::DetectorSettings::default(),
    )
    .await
    .unwrap();
    upload(
        &p,
        acme.id,
        &dev,
        "flows",
        &flows("10.77.1.10", "198.51.100.78", ms_ago(10), 3),
    )
    .await;
    rampart_portal::flows::drain(&p).await.unwrap();
    let mid = call(&app, "GET", "localhost", &keys_path, &op).await;
    assert_eq!(mid["current_version"], 2);
    assert_eq!(mid["versions"][1]["rows"], 1, "{mid}");
    assert!(mid["rows_on_old_versions"].as_u64().unwrap() > 0);
    let segs = p
        .store
        .list_flow_segments(acme.id, rampart_store::SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    let version_of = |blob_key: &str| {
        let b = std::fs::read(p.config.blob_dir().join(blob_key)).unwrap();
        assert_eq!(&b[..5], b"RFSG\x02", "segment format");
        u32::from_be_bytes(b[5..9].try_into().unwrap())
    };
    let mut seen: Vec<u32> = segs.iter().map(|s| version_of(&s.blob_key)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec![1, 2], "old segments on v1, the new one on v2");

    // The job works in bounded, resumable passes (key_rekey_batch = 7).
    let first = p.rekey_pass().await.unwrap();
    assert_eq!(first.rows_resealed, 7, "{first:?}");
    assert_eq!(first.versions_retired, 0);
    let rest = p.rekey_until_done(100).await.unwrap();
    assert_eq!(rest.versions_retired, 1, "{rest:?}");
    let after = call(&app, "GET", "localhost", &keys_path, &op).await;
    assert_eq!(after["rows_on_old_versions"], 0, "{after}");
    assert_eq!(after["segments_on_old_versions"], 0);
    assert_eq!(after["segments_unverified"], 0);
    assert!(after["versions"][0]["retired_at"].is_i64(), "{after}");
    assert_eq!(after["versions"][0]["rows"], 0);
    let rows_v2 = after["versions"][1]["rows"].as_u64().unwrap();
    assert!(rows_v2 >= rows_v1, "every row kept: {rows_v2} < {rows_v1}");
    let segs = p
        .store
        .list_flow_segments(acme.id, rampart_store::SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    assert!(segs.iter().all(|s| version_of(&s.blob_key) == 2));

    let metrics = p.metrics.encode();
    for line in [
        "rampart_key_rotations_total 1",
        "rampart_key_objects_resealed_total{kind=\"rows\"}",
        "rampart_key_objects_resealed_total{kind=\"segments\"}",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Everything still reads after retirement, also in a fresh process.
    drop(app);
    let p = match Arc::try_unwrap(p) {
        Ok(p) => p,
        Err(_) => panic!("portal still shared"),
    };
    drop(p);
    let p = Arc::new(Portal::open(config(dir.path())).await.unwrap());
    let app = rampart_portal::app(p.clone());
    let d = p.store.get_device(acme.id, dev.id).await.unwrap().unwrap();
    assert_eq!(d.hostname, "rot-edge-hostname");
    // The user's sealed email and password hash were re-sealed too: the
    // login still finds the account and checks the password.
    let u = login(&p, &acme, "rot-ana@acme.example").await;
    assert_eq!(u.email, "rot-ana@acme.example");
    let alarms = call(&app, "GET", &acme.domain, "/api/v1/alarms", &tok).await;
    assert!(alarms["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["title"] == "Corrupted HTTP body"));
    let again = call(&app, "GET", &acme.domain, &totals_path, &tok).await;
    assert_eq!(
        again["flows"].as_u64().unwrap(),
        totals["flows"].as_u64().unwrap() + 3,
        "the old flows and the new ones: {again} vs {totals}"
    );
    // A pass with nothing to do still says when it ran.
    assert_eq!(p.rekey_pass().await.unwrap().rows_resealed, 0);
    let metrics = p.metrics.encode();
    assert!(
        metrics.contains("rampart_key_rotation_last_run "),
        "{metrics}"
    );
    let audit = p.store.audit_chain(0, 1000).await.unwrap();
    for action in ["key.rotate", "key.retire"] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.tenant_id == Some(acme.id)),
            "{action} audited"
        );
    }
}

fn copy_dir(from: &Path, to: &Path, skip: &str) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == skip {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if src.is_dir() {
            copy_dir(&src, &dst, "");
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[tokio::test]
async fn after_shredding_a_backup_taken_before_opens_for_other_tenants_only() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let p = Portal::open(config(&live)).await.unwrap();
    let acme = p
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    let globex = p
        .create_tenant(&Actor::Cli, "globex", "globex.rampart.test", None)
        .await
        .unwrap();
    let (acme_dev, _) = fill(&p, &acme, "shred-a").await;
    let (globex_dev, _) = fill(&p, &globex, "shred-b").await;
    // A backup as `rampart backup` takes it: the data dir without the vault.
    let backup = dir.path().join("backup");
    copy_dir(&live, &backup, "vault");

    // A batch of acme's still in the spool when its keys go.
    upload(
        &p,
        acme.id,
        &acme_dev,
        "flows",
        &flows("10.77.1.11", "198.51.100.79", ms_ago(5), 2),
    )
    .await;
    let shredded = p.destroy_tenant_keys(&Actor::Cli, acme.id).await.unwrap();
    assert!(shredded.vault_entry);
    assert_eq!(shredded.data_key_versions, 1);
    let err = p
        .secrets(acme.id)
        .await
        .err()
        .expect("acme's keys are gone");
    assert!(err.to_string().contains("destroyed"), "{err}");
    assert!(p.store.get_device(acme.id, acme_dev.id).await.is_err());
    assert_eq!(
        p.store
            .get_device(globex.id, globex_dev.id)
            .await
            .unwrap()
            .unwrap()
            .hostname,
        "shred-b-edge-hostname"
    );
    let audit = p.store.audit_chain(0, 1000).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "key.destroy" && e.tenant_id == Some(acme.id)));
    // The portal-wide jobs go on for the others: acme's spooled batch, its
    // alarm history and its email route no longer stop them.
    upload(
        &p,
        globex.id,
        &globex_dev,
        "flows",
        &flows("10.78.1.1", "198.51.100.80", ms_ago(5), 4),
    )
    .await;
    let drained = rampart_portal::flows::drain(&p).await.unwrap();
    assert_eq!(drained.rows, 4, "{drained:?}");
    rampart_portal::alarms::detect(&p).await.unwrap();
    rampart_portal::notify::notify(&p).await.unwrap();
    rampart_portal::notify::digest(&p, rampart_portal::service::now())
        .await
        .unwrap();
    rampart_portal::flows::housekeeping(&p, rampart_portal::service::now_ms())
        .await
        .unwrap();
    drop(p);

    // Regression: a shredded tenant's missing keys row made loading the
    // tenant certificates fail as a whole, so the portal did not start.
    let again = Portal::open(config(&live)).await.unwrap();
    assert!(again.certs.get(&globex.domain).is_some());
    assert!(again.certs.get(&acme.domain).is_none());
    drop(again);

    // Restoring the backup needs a vault: the live one, after the shredding.
    copy_dir(&live.join("vault"), &backup.join("vault"), "");
    let r = Portal::open(config(&backup)).await.unwrap();
    let err = r.secrets(acme.id).await.err().expect("acme stays shredded");
    assert!(err.to_string().contains("no key vault entry"), "{err}");
    assert!(r.store.get_device(acme.id, acme_dev.id).await.is_err());
    assert!(r.store.list_webhooks(acme.id).await.is_err());
    let acme_segs = r
        .store
        .list_flow_segments(acme.id, rampart_store::SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    assert!(
        !acme_segs.is_empty(),
        "the backup holds acme's sealed segments"
    );
    let g = r
        .store
        .get_device(globex.id, globex_dev.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.hostname, "shred-b-edge-hostname");
    let hooks = r.store.list_webhooks(globex.id).await.unwrap();
    assert_eq!(hooks[0].url, "https://shred-b-hook-host.example.net/alarms");
    let s = r.secrets(globex.id).await.unwrap();
    let segs = r
        .store
        .list_flow_segments(globex.id, rampart_store::SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    let t = r
        .flows
        .store
        .totals(
            globex.id,
            &rampart_portal::flows::Flows::data_key(&s.data_key),
            0,
            rampart_portal::service::now_ms() + 60_000,
            None,
        )
        .await
        .unwrap();
    assert_eq!(t.data.records, 5, "globex's segments open from the backup");
    assert!(!segs.is_empty());
}

#[tokio::test]
async fn the_master_key_rotates_and_afterwards_only_the_new_key_opens_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = Portal::open(config(&data)).await.unwrap();
    let acme = p
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    let dev = enroll(&p, &acme, "mk-edge-hostname", vec![]).await;
    drop(p);
    let old = data.join("master.key");
    let new = dir.path().join("new-master.key");
    // A fresh key file, as an operator would make one.
    let (_, src) = rampart_portal::crypto::load_master_key(&new).unwrap();
    assert_eq!(src, rampart_portal::crypto::MasterKeySource::Generated);

    let rotating = Config {
        master_key_file: Some(new.clone()),
        previous_master_key_file: Some(old.clone()),
        ..config(&data)
    };
    let p = Portal::open(rotating).await.unwrap();
    let before = p.vault_status().await.unwrap();
    assert_eq!((before.entries, before.under_previous_master), (1, 1));
    // Everything opens while both keys are given.
    assert_eq!(
        p.store
            .get_device(acme.id, dev.id)
            .await
            .unwrap()
            .unwrap()
            .hostname,
        "mk-edge-hostname"
    );
    assert_eq!(p.rotate_master(&Actor::Cli).await.unwrap(), 1);
    assert_eq!(p.vault_status().await.unwrap().under_previous_master, 0);
    assert_eq!(p.rekey_pass().await.unwrap().vault_entries_rewrapped, 0);
    assert!(p
        .store
        .audit_chain(0, 1000)
        .await
        .unwrap()
        .iter()
        .any(|e| e.action == "key.rotate_master"));
    drop(p);

    let only_new = Config {
        master_key_file: Some(new),
        ..config(&data)
    };
    let p = Portal::open(only_new).await.unwrap();
    assert_eq!(
        p.store
            .get_device(acme.id, dev.id)
            .await
            .unwrap()
            .unwrap()
            .hostname,
        "mk-edge-hostname"
    );
    drop(p);
    let only_old = Config {
        master_key_file: Some(old),
        ..config(&data)
    };
    assert!(
        Portal::open(only_old).await.is_err(),
        "the old master key no longer opens the CA key or the vault"
    );
}

/// Runs the real `rampart` binary on `data` with `args`; its JSON output.
fn rampart(data: &Path, config: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(args)
        .env_remove("RAMPART_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rampart {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_keys_cli_rotates_reencrypts_retires_and_rotates_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("rampart.toml");
    std::fs::write(&cfg, "key_retire_grace_secs = 0\n").unwrap();
    rampart(
        &data,
        &cfg,
        &[
            "tenant",
            "create",
            "--name",
            "acme",
            "--domain",
            "acme.rampart.test",
        ],
    );
    let s = rampart(&data, &cfg, &["keys", "status", "--tenant", "acme"]);
    assert_eq!(s["current_version"], 1, "{s}");
    let r = rampart(&data, &cfg, &["keys", "rotate", "--tenant", "acme"]);
    assert_eq!(r["version"], 2);
    let s = rampart(&data, &cfg, &["keys", "status", "--tenant", "acme"]);
    assert_eq!(s["current_version"], 2, "{s}");
    let r = rampart(&data, &cfg, &["keys", "reencrypt"]);
    assert_eq!(r["versions_retired"], 1, "{r}");
    let s = rampart(&data, &cfg, &["keys", "status", "--tenant", "acme"]);
    assert!(s["versions"][0]["retired_at"].is_i64(), "{s}");
    assert_eq!(s["rows_on_old_versions"], 0);

    let old = data.join("master.key");
    let new = dir.path().join("master-2.key");
    rampart_portal::crypto::load_master_key(&new).unwrap();
    let (n, p) = (new.to_str().unwrap(), old.to_str().unwrap());
    let r = rampart(
        &data,
        &cfg,
        &[
            "--master-key-file",
            n,
            "--previous-master-key-file",
            p,
            "keys",
            "rotate-master",
        ],
    );
    assert_eq!(r["vault_entries_rewrapped"], 1, "{r}");
    // Only the new key is needed now.
    let s = rampart(
        &data,
        &cfg,
        &["--master-key-file", n, "keys", "status", "--tenant", "acme"],
    );
    assert_eq!(s["current_version"], 2);
    assert_eq!(s["master_key_id"], r["master_key_id"]);
}

/// WireGuard keys (issue 7): the device's and the peers' private keys and
/// the preshared keys, raw or base64, and the peer names and endpoint, are
/// in no file of the data dir.
#[tokio::test]
async fn no_vpn_private_key_or_peer_name_is_found_in_any_file_of_the_data_dir() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let p = Portal::open(config(dir.path())).await.unwrap();
    let acme = p
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    let dev = enroll(&p, &acme, "edge", vec![]).await;
    let spec = rampart_portal::vpn::InterfaceSpec {
        address: "10.61.0.1/24".into(),
        listen_port: None,
        endpoint: "kq4410-vpn-endpoint.example".into(),
        dns: vec![],
        client_allowed_ips: None,
    };
    rampart_portal::vpn::put_interface(&p, &Actor::Cli, acme.id, dev.id, spec)
        .await
        .unwrap();
    let peer = rampart_portal::vpn::create_peer(
        &p,
        &Actor::Cli,
        acme.id,
        dev.id,
        "kq4410-peer-name",
        true,
    )
    .await
    .unwrap();
    let iface = p
        .store
        .get_vpn_interface(acme.id, dev.id)
        .await
        .unwrap()
        .unwrap();
    let profile = rampart_portal::vpn::client_profile(&p, &Actor::Cli, acme.id, &iface, &peer)
        .await
        .unwrap()
        .unwrap();
    let line = |key: &str| {
        profile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap()
            .to_string()
    };
    let secrets = rampart_portal::vpn::device_secrets(&p, acme.id, dev.id)
        .await
        .unwrap()
        .unwrap();
    let mut markers: Vec<Vec<u8>> = vec![
        b"kq4410-vpn-endpoint.example".to_vec(),
        b"kq4410-peer-name".to_vec(),
    ];
    for key in [
        line("PrivateKey"),
        line("PresharedKey"),
        secrets.private_key.clone(),
    ] {
        assert_eq!(key.len(), 44, "{key}");
        markers.push(
            base64::engine::general_purpose::STANDARD
                .decode(&key)
                .unwrap(),
        );
        markers.push(key.into_bytes());
    }
    assert_eq!(secrets.peers[0].preshared_key, line("PresharedKey"));
    drop(p);
    for m in &markers {
        let found = holding(dir.path(), m);
        assert!(
            found.is_empty(),
            "{:?} found in the clear in {found:?}",
            String::from_utf8_lossy(m)
        );
    }
}
