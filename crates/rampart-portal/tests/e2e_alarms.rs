//! Alarms end to end with the real binaries: a Suricata EVE file tailed by
//! `rampart-agent` becomes an alarm in `rampart`, which notifies two webhook
//! receivers started here on loopback: one fails once and then accepts (a
//! retry follows the 500), one always fails (a dead letter follows). The
//! signature is checked with the documented scheme computed here with the
//! `hmac` crate, not with the portal's code. The alarm is also mailed to an
//! SMTP sink started here. A restart of the portal neither loses the alarm
//! nor notifies it again.
//!
//! The events are telegraf's `v2/alert.json` and `test3.json` (the same
//! alert again), shared/testdata/suricata_eve; the expected values are the
//! fields telegraf's suricata_test.go asserts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{eventually, Agent, PortalProc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const EVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/suricata_eve/telegraf"
);

fn one_line(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{EVE}/{name}")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    format!("{v}\n")
}

#[derive(Clone, Default)]
struct Received {
    calls: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

/// A webhook receiver on loopback that answers 500 to its first
/// `fail_first` calls and 200 after.
async fn receiver(fail_first: usize) -> (String, Received) {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let mut calls = g.calls.lock().unwrap();
                calls.push((headers, body));
                if calls.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

/// `Rampart-Signature: t=<ts>,v1=<hex>`: HMAC-SHA256 over `<ts>.<body>`.
fn signature_ok(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{t}.{body}").as_bytes());
    let want = hex::encode(m.finalize().into_bytes());
    v1.contains(&want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eve_alerts_become_one_alarm_notified_with_retries_dead_letters_and_no_repeat_after_restart(
) {
    let (smtp, mails) = common::smtp_sink().await;
    let smtp_url = format!("smtp://{smtp}");
    let mut portal = PortalProc::start_with(&[
        "--smtp-url",
        &smtp_url,
        "--alarm-webhooks-allow-private",
        "--alarm-webhook-attempts",
        "3",
        "--alarm-webhook-retry-secs",
        "1",
    ])
    .await;
    let t = portal.create_tenant("acme").await;
    let (flaky_url, flaky) = receiver(1).await;
    let (down_url, down) = receiver(usize::MAX).await;
    let mut secrets = Vec::new();
    for url in [&flaky_url, &down_url] {
        let (s, v) = portal
            .post(
                &t.domain,
                "/api/v1/webhooks",
                &t.token,
                Some(json!({"url": url, "min_severity": "low"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        secrets.push(v["secret"].as_str().unwrap().to_string());
    }

    let (s, v) = portal
        .call(
            reqwest::Method::PUT,
            &t.domain,
            "/api/v1/alarm-email",
            &t.token,
            Some(json!({"recipients": ["soc@acme.test"], "min_severity": "low"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    let (ok, out) = agent.enroll(&token, portal.addr());
    assert!(ok, "{out}");
    let eve = agent.dir.path().join("eve.json");
    std::fs::write(&eve, "").unwrap();
    agent.start_with(&["--eve", eve.to_str().unwrap()]);
    eventually(
        "the agent to tail the EVE file",
        Duration::from_secs(30),
        || {
            let st = agent.status();
            let found = st.to_string().contains("eve.json");
            async move { found.then_some(()) }
        },
    )
    .await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&eve)
        .and_then(|mut f| std::io::Write::write_all(&mut f, one_line("v2/alert.json").as_bytes()))
        .unwrap();

    let alarm = eventually(
        "the alert to become an alarm",
        Duration::from_secs(30),
        || async {
            let (s, v) = portal
                .get(&t.domain, "/api/v1/alarms?kind=ids_alert", &t.token)
                .await;
            assert_eq!(s, 200, "{v}");
            v["alarms"].as_array().and_then(|a| a.first().cloned())
        },
    )
    .await;
    assert_eq!(alarm["title"], "Corrupted HTTP body");
    assert_eq!(alarm["severity"], "low");
    assert_eq!(alarm["src"], "10.0.0.5");
    assert_eq!(alarm["dst"], "179.60.192.3");
    assert_eq!(alarm["dst_port"], 80);
    assert_eq!(alarm["device_id"], agent.device_id());

    // The flaky receiver: a 500, then the retry is accepted; both calls are
    // the same signed body.
    eventually(
        "the retry to reach the flaky receiver",
        Duration::from_secs(20),
        || {
            let n = flaky.calls.lock().unwrap().len();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    {
        let calls = flaky.calls.lock().unwrap();
        assert_eq!(calls[0].1, calls[1].1, "a retry sends the same body");
        for (headers, body) in calls.iter() {
            let sig = headers["rampart-signature"].to_str().unwrap();
            assert!(signature_ok(&secrets[0], sig, body), "signature {sig}");
            assert!(
                !signature_ok(&secrets[1], sig, body),
                "another hook's secret must not verify"
            );
        }
        let b: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert_eq!(b["type"], "alarm.created");
        assert_eq!(b["alarm"]["id"], alarm["id"]);
    }
    // The receiver that is down: three attempts, then a dead letter.
    let dead = eventually("a dead letter", Duration::from_secs(30), || async {
        let (s, v) = portal
            .get(&t.domain, "/api/v1/alarm-deliveries?status=dead", &t.token)
            .await;
        assert_eq!(s, 200, "{v}");
        v.as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["alarm_id"], alarm["id"]);
    assert!(
        dead["last_error"].as_str().unwrap().contains("500"),
        "{dead}"
    );
    assert_eq!(down.calls.lock().unwrap().len(), 3);
    let (_, delivered) = portal
        .get(
            &t.domain,
            "/api/v1/alarm-deliveries?status=delivered",
            &t.token,
        )
        .await;
    let by_channel = |c: &str| {
        delivered
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["channel"] == c)
            .cloned()
            .collect::<Vec<Value>>()
    };
    let hooks = by_channel("webhook");
    assert_eq!(hooks.len(), 1, "{delivered}");
    assert_eq!(
        hooks[0]["attempts"], 2,
        "a 500, then delivered: {delivered}"
    );
    assert_eq!(by_channel("email").len(), 1, "{delivered}");

    let mail = eventually("the alarm mail", Duration::from_secs(20), || {
        let m = mails.lock().unwrap().first().cloned();
        async move { m }
    })
    .await;
    assert_eq!(mail.rcpt, ["soc@acme.test"]);
    assert!(mail.data.contains("Corrupted HTTP body"), "{}", mail.data);
    assert!(mail.data.contains("source: 10.0.0.5"), "{}", mail.data);

    // The same alert again folds into the alarm, and is not notified.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&eve)
        .and_then(|mut f| std::io::Write::write_all(&mut f, one_line("test3.json").as_bytes()))
        .unwrap();
    eventually(
        "the repeat to bump the count",
        Duration::from_secs(30),
        || async {
            let (_, v) = portal
                .get(&t.domain, "/api/v1/alarms?kind=ids_alert", &t.token)
                .await;
            let a = v["alarms"].as_array().cloned().unwrap_or_default();
            (a.len() == 1 && a[0]["count"] == 2).then_some(())
        },
    )
    .await;

    // The CLI reads the same store, next to the running portal.
    let cli = |args: &[&str]| {
        let (ok, out, err) = common::run(
            std::process::Command::new(common::portal_bin())
                .arg("--data-dir")
                .arg(portal.dir.path())
                .arg("--json")
                .args(args),
        );
        assert!(ok, "rampart {args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let listed = cli(&["alarms", "list", "--tenant", "acme"]);
    assert_eq!(listed[0]["id"], alarm["id"], "{listed}");
    let id = alarm["id"].as_str().unwrap();
    let acked = cli(&["alarms", "ack", "--tenant", "acme", id]);
    assert_eq!(acked["state"], "acknowledged");
    cli(&["alarms", "note", "--tenant", "acme", id, "seen by the soc"]);
    let rule = cli(&[
        "alarms",
        "mute",
        "--tenant",
        "acme",
        "--kind",
        "port_scan",
        "--network",
        "10.0.0.0/8",
        "--hours",
        "2",
    ]);
    let (_, rules) = portal.get(&t.domain, "/api/v1/alarm-rules", &t.token).await;
    assert_eq!(rules[0]["id"], rule["id"], "{rules}");
    assert_eq!(rules[0]["network"], "10.0.0.0/8");
    let shown = cli(&["alarms", "show", "--tenant", "acme", id]);
    assert_eq!(shown["history"][2]["action"], "state", "{shown}");
    assert_eq!(
        shown["history"].as_array().unwrap().last().unwrap()["actor"],
        "cli"
    );

    // The acknowledgement is notified once, as a state change; the
    // receiver that is down dead-letters it too.
    eventually(
        "the state change to be notified",
        Duration::from_secs(20),
        || {
            let n = flaky.calls.lock().unwrap().len();
            async move { (n >= 3).then_some(()) }
        },
    )
    .await;
    let last: Value = serde_json::from_str(&flaky.calls.lock().unwrap()[2].1).unwrap();
    assert_eq!(last["type"], "alarm.state_changed");
    assert_eq!(last["alarm"]["state"], "acknowledged");
    eventually(
        "the second dead letter",
        Duration::from_secs(30),
        || async {
            let (_, v) = portal
                .get(&t.domain, "/api/v1/alarm-deliveries?status=dead", &t.token)
                .await;
            (v.as_array().map_or(0, Vec::len) == 2).then_some(())
        },
    )
    .await;

    // Restart: the alarm is there, nothing new is raised or sent.
    let (flaky_before, down_before) = (
        flaky.calls.lock().unwrap().len(),
        down.calls.lock().unwrap().len(),
    );
    portal.kill();
    portal.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, v) = portal.get(&t.domain, "/api/v1/alarms", &t.token).await;
    let all = v["alarms"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{v}");
    assert_eq!(all[0]["count"], 2);
    assert_eq!(
        flaky.calls.lock().unwrap().len(),
        flaky_before,
        "notified again after the restart"
    );
    assert_eq!(down.calls.lock().unwrap().len(), down_before);
    assert_eq!(mails.lock().unwrap().len(), 1, "mailed again");
}
