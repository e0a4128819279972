//! `rampart user` through the real binary beside a real portal over HTTPS:
//! accounts made by the CLI log in on their tenant's domain (the cookie's
//! attributes as a browser receives them), an MSP user gets nothing
//! without a grant, and `rampart user offboard` run beside the serving
//! portal ends the user's session and the token it minted at once.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{portal_bin, run, PortalProc};
use serde_json::{json, Value};

const PW: &str = "a long enough passphrase";

fn rampart(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run(Command::new(portal_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RAMPART_LOG", "warn"))
}

/// Runs `rampart` with `stdin` piped in.
fn rampart_stdin(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(portal_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RAMPART_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rampart runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Https {
    client: reqwest::Client,
    base: String,
}

impl Https {
    fn new(p: &PortalProc, domain: &str) -> Https {
        let ca = std::fs::read(p.dir.path().join("ca.pem")).unwrap();
        Https {
            client: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .resolve(domain, p.addr())
                .build()
                .unwrap(),
            base: format!("https://{domain}:{}", p.port),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("portal reachable");
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = resp.text().await.unwrap();
        (
            status,
            cookie,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn cli_users_log_in_over_https_and_offboarding_ends_their_access_at_once() {
    let p = PortalProc::start().await;
    let dir = p.dir.path();
    // Created through the serving portal, so its certificate is served at once.
    let owner_token = p.create_tenant("acme").await.token;
    let create = [
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "ana@acme.example",
        "--role",
        "admin",
        "--password-stdin",
    ];
    let (ok, _, err) = rampart_stdin(dir, &create, &format!("{PW}\n"));
    assert!(ok, "user create: {err}");
    let (ok, out, err) = rampart(
        dir,
        &[
            "--json",
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "ivy@acme.example",
            "--role",
            "read_only",
        ],
    );
    assert!(ok, "user invite: {err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap()["setup_token"].is_string());
    let (ok, _, err) = rampart_stdin(
        dir,
        &[
            "user",
            "create",
            "--msp",
            "--email",
            "noc@msp.example",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    );
    assert!(ok, "msp user create: {err}");
    // Bad input is refused with a message saying what to do.
    let (ok, _, err) = rampart(
        dir,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "x@acme.example",
            "--role",
            "root",
        ],
    );
    assert!(
        !ok && err.contains("owner, admin, analyst or read_only"),
        "{err}"
    );
    let (ok, _, err) = rampart_stdin(dir, &create, "short\n");
    assert!(!ok && err.contains("at least 12 characters"), "{err}");

    let acme = Https::new(&p, "acme.rampart.test");
    let (status, cookie, v) = acme
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            &[],
            Some(json!({"email": "ana@acme.example", "password": PW})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let set = cookie.expect("a session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} missing: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    let (status, _, me) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/auth/me",
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "{me}");
    let (status, _, t) = acme
        .send(
            reqwest::Method::POST,
            "/api/v1/tokens",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            Some(json!({"name": "ana-ci", "role": "analyst"})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let ana_token = format!("Bearer {}", t["token"].as_str().unwrap());
    let (status, _, _) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/alarms",
            &[("authorization", &ana_token)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    // The MSP user has no grant here.
    let (status, _, v) = acme
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            &[],
            Some(json!({"email": "noc@msp.example", "password": PW})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );

    // Offboarded by the CLI beside the running portal: the next request fails.
    let (ok, out, err) = rampart(
        dir,
        &[
            "--json",
            "user",
            "offboard",
            "--tenant",
            "acme",
            "--email",
            "ana@acme.example",
        ],
    );
    assert!(ok, "offboard: {err}");
    let n: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (n["sessions_revoked"].as_u64(), n["tokens_revoked"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, _, _) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/auth/me",
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(status, 401, "session after offboarding");
    let (status, _, _) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/alarms",
            &[("authorization", &ana_token)],
            None,
        )
        .await;
    assert_eq!(status, 401, "token after offboarding");
    let (ok, out, _) = rampart(dir, &["--json", "user", "list", "--tenant", "acme"]);
    assert!(ok);
    let emails: Vec<String> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(emails, ["ivy@acme.example"]);
    // The CLI's owner token still works.
    let owner = format!("Bearer {owner_token}");
    let (status, _, users) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/users",
            &[("authorization", &owner)],
            None,
        )
        .await;
    assert_eq!(status, 200, "{users}");
}
