//! HTTP API tests: the real router (`rampart_portal::app`) driven with
//! `oneshot` over an in-memory store. No sockets and no TLS: the tenant is
//! chosen by the `Host` header, as it is when SNI is absent.
//!
//! The route walks read `rampart_portal::openapi()`, so a route added to the
//! route table is covered by the auth and cross-tenant checks without editing
//! this file. A new route that needs a particular body or id gets a line in
//! `sample_body` or `Fx::fill`; a new tenant route also gets its least role
//! in `POLICY` (the walk fails without it, then checks that role with a
//! token and a session of every role).

use std::sync::Arc;

#[path = "common/mod.rs"]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rampart_portal::audit::Actor;
use rampart_portal::config::Config;
use rampart_portal::Portal;
use rampart_proto::api::EnrollRequest;
use rampart_proto::batch::{self, BatchHeader, Priority};
use rampart_proto::keys::{HpkePublicKey, SigningKey};
use rampart_proto::reqsig::{DeviceAuth, HDR_DEVICE, HDR_NONCE, HDR_SIGNATURE, HDR_TIMESTAMP};
use rampart_proto::token::EnrollmentToken;
use rampart_store::blob::LocalBlobStore;
use rampart_store::sqlite::SqliteStore;
use rampart_store::{DeviceId, EnrollmentTokenRow, Tenant};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

/// The admin domain of `Config::default()`.
const ADMIN: &str = "localhost";

/// The only operations that may answer without credentials. Enrollment
/// authenticates by the token secret in its body, the Stripe webhook by
/// its `Stripe-Signature`.
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/v1/enroll"),
    ("POST", "/api/v1/billing/stripe"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/setup"),
];

/// The least role of every tenant route (tags tenant, alarms, flows).
/// A route missing here fails `every_route_has_an_auth_policy`: adding a
/// tenant route means choosing its role, here and in its extractor.
const POLICY: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/tenant", "read_only"),
    ("GET", "/api/v1/plan", "read_only"),
    ("GET", "/api/v1/config/schema", "read_only"),
    ("GET", "/api/v1/config/docs/{layer}/{scope}", "read_only"),
    ("PUT", "/api/v1/config/docs/{layer}/{scope}", "admin"),
    (
        "GET",
        "/api/v1/config/docs/{layer}/{scope}/versions",
        "read_only",
    ),
    (
        "GET",
        "/api/v1/config/docs/{layer}/{scope}/versions/{version}",
        "read_only",
    ),
    (
        "GET",
        "/api/v1/config/docs/{layer}/{scope}/diff",
        "read_only",
    ),
    (
        "POST",
        "/api/v1/config/docs/{layer}/{scope}/rollback",
        "admin",
    ),
    ("GET", "/api/v1/config/groups", "read_only"),
    ("POST", "/api/v1/config/groups", "admin"),
    ("DELETE", "/api/v1/config/groups/{group}", "admin"),
    ("PUT", "/api/v1/config/devices/{id}/group", "admin"),
    ("GET", "/api/v1/config/devices", "read_only"),
    ("GET", "/api/v1/config/devices/{id}", "read_only"),
    ("GET", "/api/v1/config/rollouts", "read_only"),
    ("POST", "/api/v1/config/rollouts/{id}/{action}", "admin"),
    ("GET", "/api/v1/enrollment-tokens", "admin"),
    ("POST", "/api/v1/enrollment-tokens", "admin"),
    ("POST", "/api/v1/enrollment-tokens/{id}/revoke", "admin"),
    ("GET", "/api/v1/devices", "read_only"),
    ("GET", "/api/v1/devices/{id}", "read_only"),
    ("POST", "/api/v1/devices/{id}/approve", "admin"),
    ("POST", "/api/v1/devices/{id}/revoke", "admin"),
    ("GET", "/api/v1/devices/{id}/instructions", "read_only"),
    ("POST", "/api/v1/devices/{id}/instructions", "admin"),
    ("POST", "/api/v1/instructions", "admin"),
    ("GET", "/api/v1/devices/{id}/events", "read_only"),
    ("GET", "/api/v1/batches", "read_only"),
    ("GET", "/api/v1/audit", "admin"),
    ("GET", "/api/v1/alarms", "read_only"),
    ("GET", "/api/v1/alarms/counts", "read_only"),
    ("GET", "/api/v1/alarms/{id}", "read_only"),
    ("POST", "/api/v1/alarms/{id}/ack", "analyst"),
    ("POST", "/api/v1/alarms/{id}/resolve", "analyst"),
    ("POST", "/api/v1/alarms/{id}/archive", "analyst"),
    ("POST", "/api/v1/alarms/{id}/assign", "analyst"),
    ("POST", "/api/v1/alarms/{id}/notes", "analyst"),
    ("GET", "/api/v1/alarms/timeline", "analyst"),
    ("GET", "/api/v1/alarm-rules", "read_only"),
    ("POST", "/api/v1/alarm-rules", "admin"),
    ("DELETE", "/api/v1/alarm-rules/{id}", "admin"),
    ("GET", "/api/v1/alarm-settings", "read_only"),
    ("PUT", "/api/v1/alarm-settings", "admin"),
    ("GET", "/api/v1/alarm-email", "read_only"),
    ("PUT", "/api/v1/alarm-email", "admin"),
    ("GET", "/api/v1/webhooks", "admin"),
    ("POST", "/api/v1/webhooks", "admin"),
    ("DELETE", "/api/v1/webhooks/{id}", "admin"),
    ("GET", "/api/v1/alarm-deliveries", "read_only"),
    ("GET", "/api/v1/flows/top", "read_only"),
    ("GET", "/api/v1/flows/series", "read_only"),
    ("GET", "/api/v1/flows/search", "read_only"),
    ("GET", "/api/v1/flows/totals", "read_only"),
    ("GET", "/api/v1/data-controls", "read_only"),
    ("PUT", "/api/v1/data-controls", "admin"),
    ("POST", "/api/v1/auth/logout", "read_only"),
    ("GET", "/api/v1/auth/me", "read_only"),
    ("POST", "/api/v1/auth/totp", "read_only"),
    ("POST", "/api/v1/auth/totp/confirm", "read_only"),
    ("GET", "/api/v1/users", "admin"),
    ("POST", "/api/v1/users", "admin"),
    ("PUT", "/api/v1/users/{id}/role", "admin"),
    ("POST", "/api/v1/users/{id}/offboard", "admin"),
    ("GET", "/api/v1/tokens", "admin"),
    ("POST", "/api/v1/tokens", "admin"),
    ("POST", "/api/v1/tokens/{id}/revoke", "admin"),
    ("GET", "/api/v1/msp-grants", "owner"),
    ("POST", "/api/v1/msp-grants", "owner"),
    ("POST", "/api/v1/msp-grants/{id}/revoke", "owner"),
    ("GET", "/api/v1/target-lists", "read_only"),
    ("GET", "/api/v1/target-list-sources", "read_only"),
    ("GET", "/api/v1/target-lists/{name}", "read_only"),
    ("PUT", "/api/v1/target-lists/{name}", "admin"),
    ("DELETE", "/api/v1/target-lists/{name}", "admin"),
    ("POST", "/api/v1/target-lists/{name}/import", "admin"),
    ("GET", "/api/v1/devices/{id}/vpn", "read_only"),
    ("PUT", "/api/v1/devices/{id}/vpn", "admin"),
    ("GET", "/api/v1/devices/{id}/vpn/peers", "read_only"),
    ("POST", "/api/v1/devices/{id}/vpn/peers", "admin"),
    (
        "POST",
        "/api/v1/devices/{id}/vpn/peers/{peer}/revoke",
        "admin",
    ),
    (
        "GET",
        "/api/v1/devices/{id}/vpn/peers/{peer}/profile.conf",
        "admin",
    ),
    (
        "GET",
        "/api/v1/devices/{id}/vpn/peers/{peer}/profile.png",
        "admin",
    ),
    ("POST", "/api/v1/devices/{id}/actions", "admin"),
    ("GET", "/api/v1/devices/{id}/actions/{seq}", "read_only"),
    ("GET", "/api/v1/devices/{id}/diagnostics", "admin"),
    (
        "GET",
        "/api/v1/devices/{id}/diagnostics/{batch_id}",
        "admin",
    ),
    ("GET", "/api/v1/reports", "read_only"),
    ("GET", "/api/v1/reports/{id}", "read_only"),
    ("GET", "/api/v1/reports/{id}/html", "read_only"),
    ("GET", "/api/v1/reports/{id}/pdf", "read_only"),
    ("POST", "/api/v1/reports/generate", "admin"),
    ("GET", "/api/v1/reports/settings", "read_only"),
    ("PUT", "/api/v1/reports/settings", "admin"),
];

/// The tenant roles, least first.
const ROLES: [&str; 4] = ["read_only", "analyst", "admin", "owner"];

/// Routes only a logged-in person may use (a token passes the role check
/// and is then refused with 403 `session_required`).
const SESSION_ONLY: &[&str] = &[
    "/api/v1/auth/logout",
    "/api/v1/auth/totp",
    "/api/v1/auth/totp/confirm",
];

const POLL_NOW: &str = "/api/v1/device/poll?after_seq=0&wait_secs=0";

fn now() -> i64 {
    rampart_portal::service::now()
}

fn doc() -> Value {
    serde_json::to_value(rampart_portal::openapi()).expect("openapi serializes")
}

// ---------------------------------------------------------------- requests

/// A request body with its content type.
type Payload = Option<(String, Vec<u8>)>;

fn json_body(v: &Value) -> Payload {
    Some(("application/json".into(), serde_json::to_vec(v).unwrap()))
}

fn raw_body(content_type: &str, bytes: impl AsRef<[u8]>) -> Payload {
    Some((content_type.into(), bytes.as_ref().to_vec()))
}

fn build(
    method: &str,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    body: Payload,
    device: Option<&DeviceAuth>,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(a) = device {
        b = b
            .header(HDR_DEVICE, a.device.to_string())
            .header(HDR_TIMESTAMP, a.timestamp.to_string())
            .header(HDR_NONCE, &a.nonce)
            .header(HDR_SIGNATURE, &a.signature);
    }
    let body = match body {
        Some((ct, bytes)) => {
            b = b.header("content-type", ct);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    b.body(body).unwrap()
}

/// One response, read whole.
struct Reply {
    status: StatusCode,
    request_id: Option<String>,
    content_type: Option<String>,
    set_cookie: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the one error shape, `{"error": {code, message, request_id}}`
    /// with the request id of the `x-request-id` header, and returns the code.
    fn error_code(&self, ctx: &str) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(
            v.as_object().is_some_and(|o| o.len() == 1)
                && e.as_object().is_some_and(|o| o.len() == 3),
            "{ctx}: {} is not the error shape: {}",
            self.status,
            self.text()
        );
        for k in ["code", "message", "request_id"] {
            assert!(
                e[k].as_str().is_some_and(|s| !s.is_empty()),
                "{ctx}: error.{k} is empty: {}",
                self.text()
            );
        }
        assert_eq!(
            e["request_id"].as_str(),
            self.request_id.as_deref(),
            "{ctx}: body and header request ids differ"
        );
        e["code"].as_str().unwrap().to_string()
    }

    /// Asserts an error status and, when given, its code.
    fn expect(&self, status: u16, code: Option<&str>, ctx: &str) {
        assert_eq!(self.status, status, "{ctx}: {}", self.text());
        let got = self.error_code(ctx);
        if let Some(code) = code {
            assert_eq!(got, code, "{ctx}: {}", self.text());
        }
    }

    /// Asserts a 2xx and returns the JSON body.
    fn ok(&self, ctx: &str) -> Value {
        assert!(
            self.status.is_success(),
            "{ctx}: expected 2xx, got {}: {}",
            self.status,
            self.text()
        );
        self.json()
    }
}

// ------------------------------------------------------------- the OpenAPI walk

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Uuid,
    Integer,
    Other,
}

struct Param {
    name: String,
    in_path: bool,
    kind: Kind,
}

/// One operation (path and method) of the OpenAPI document.
/// Whether a tag's routes are called with a tenant's credentials: every
/// audience but the operator's, the agents', billing providers' and meta.
fn tenant_tag(tag: &str) -> bool {
    !matches!(tag, "admin" | "device" | "billing" | "meta")
}

struct Op {
    method: String,
    path: String,
    tag: String,
    params: Vec<Param>,
    body_type: Option<String>,
}

fn has_type(schema: &Value, t: &str) -> bool {
    schema["type"] == t
        || schema["type"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == t))
}

fn operations(doc: &Value) -> Vec<Op> {
    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("document has paths") {
        for (method, op) in item.as_object().expect("path item is an object") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let s = &p["schema"];
                    let kind = if s["format"] == "uuid" {
                        Kind::Uuid
                    } else if has_type(s, "integer") {
                        Kind::Integer
                    } else {
                        Kind::Other
                    };
                    Param {
                        name: p["name"].as_str().expect("parameter name").into(),
                        in_path: p["in"] == "path",
                        kind,
                    }
                })
                .collect();
            ops.push(Op {
                method: method.to_uppercase(),
                path: path.clone(),
                tag: op["tags"][0].as_str().unwrap_or_default().into(),
                params,
                body_type: op["requestBody"]["content"]
                    .as_object()
                    .and_then(|c| c.keys().next().cloned()),
            });
        }
    }
    ops
}

impl Op {
    /// The path with its parameters filled by `fill`; query parameters for
    /// which `fill` answers `None` are left out.
    fn url(&self, fill: impl Fn(&Param) -> Option<String>) -> String {
        let mut path = self.path.clone();
        let mut query = Vec::new();
        for p in &self.params {
            match (p.in_path, fill(p)) {
                (true, Some(v)) => path = path.replace(&format!("{{{}}}", p.name), &v),
                (true, None) => panic!("no value for path parameter {} of {}", p.name, self.path),
                (false, Some(v)) => query.push(format!("{}={v}", p.name)),
                (false, None) => {}
            }
        }
        assert!(!path.contains('{'), "unfilled path parameter in {path}");
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    fn is_public(&self) -> bool {
        PUBLIC
            .iter()
            .any(|(m, p)| *m == self.method && *p == self.path)
    }

    fn has_path_params(&self) -> bool {
        self.params.iter().any(|p| p.in_path)
    }

    /// `body` encoded as the operation expects, if it takes a body.
    fn body(&self, body: &Value) -> Payload {
        self.body_type
            .as_ref()
            .map(|ct| (ct.clone(), serde_json::to_vec(body).unwrap()))
    }
}

/// Random ids and seq 1: any route, nobody's resources.
fn placeholder(p: &Param) -> Option<String> {
    p.in_path.then(|| {
        if p.kind == Kind::Integer {
            "1".into()
        } else {
            Uuid::new_v4().to_string()
        }
    })
}

/// A body the operation accepts, so that a refusal is about who asks, not
/// about what is sent.
fn sample_body(op: &Op) -> Value {
    match op.path.as_str() {
        // An empty target list: a valid request that queues nothing.
        "/api/v1/instructions" => json!({"kind": "ping", "payload": {}, "devices": []}),
        p if p.ends_with("/instructions") => json!({"kind": "ping", "payload": {}}),
        p if p.ends_with("/ack") => json!({"status": "ok", "result": {}}),
        p if p.ends_with("/actions") => {
            json!({"action": "connectivity_test", "params": {"portal": true}})
        }
        "/api/v1/device/refusals" => json!({"code": "bad_signature", "message": "test"}),
        p if p.ends_with("/assign") => json!({"assignee": "ana"}),
        p if p.ends_with("/notes") => json!({"text": "looked at it"}),
        "/api/v1/alarm-rules" => json!({"action": "mute", "kind": "port_scan", "comment": "test"}),
        "/api/v1/webhooks" => json!({"url": "https://hooks.example.net/rampart"}),
        "/api/v1/alarm-email" => json!({"recipients": ["soc@acme.example"]}),
        "/api/v1/users" => json!({"email": "walk@acme.example", "role": "read_only"}),
        p if p.ends_with("/role") => json!({"role": "read_only"}),
        "/api/v1/tokens" => json!({"name": "walk", "role": "read_only"}),
        "/api/v1/msp-grants" => json!({"email": MSP_EMAIL, "role": "analyst"}),
        "/api/v1/auth/totp/confirm" => json!({"code": "000000"}),
        p if p.ends_with("/vpn") => {
            json!({"address": "10.8.0.1/24", "endpoint": "vpn.example.test"})
        }
        p if p.ends_with("/vpn/peers") => json!({"name": "walk"}),
        // An update of an existing list: naming another tenant's list (or
        // none) is refused with 409, never a new list.
        "/api/v1/target-lists/{name}" => json!({"entries": ["192.0.2.1"], "expected_version": 1}),
        "/api/v1/config/docs/{layer}/{scope}" => {
            json!({"config": {"log_level": "warn"}, "base_version": 1})
        }
        p if p.ends_with("/rollback") => json!({"to_version": 1}),
        "/api/v1/config/groups" => json!({"name": "walk"}),
        p if p.ends_with("/group") => json!({"group": "grp"}),
        "/api/v1/reports/generate" => json!({"kind": "daily"}),
        "/api/v1/reports/settings" => json!({"recipients": ["soc@acme.example"]}),
        _ => json!({}),
    }
}

// ---------------------------------------------------------------- fixtures

/// An enrolled device and its key.
struct Dev {
    id: Uuid,
    tenant: Uuid,
    host: String,
    key: SigningKey,
    upload_key: String,
    status: String,
}

impl Dev {
    fn sign(&self, method: &str, host: &str, path: &str, body: &[u8], ts: i64) -> DeviceAuth {
        DeviceAuth::sign(&self.key, self.id, method, host, path, ts, body)
    }
}

/// A sealed batch frame for `upload_key`, bound to `tenant` and `device`.
fn seal(upload_key: &str, tenant: Uuid, device: Uuid) -> Vec<u8> {
    seal_with(
        Uuid::new_v4(),
        b"{\"event\":\"test\"}\n",
        upload_key,
        tenant,
        device,
    )
}

fn seal_with(
    batch_id: Uuid,
    plaintext: &[u8],
    upload_key: &str,
    tenant: Uuid,
    device: Uuid,
) -> Vec<u8> {
    seal_kind("events", batch_id, plaintext, upload_key, tenant, device)
}

fn seal_kind(
    kind: &str,
    batch_id: Uuid,
    plaintext: &[u8],
    upload_key: &str,
    tenant: Uuid,
    device: Uuid,
) -> Vec<u8> {
    let header = BatchHeader {
        batch_id,
        priority: Priority::Data,
        created_at: now(),
        items: 1,
        kind: kind.into(),
    };
    let key = HpkePublicKey::from_b64(upload_key).unwrap();
    batch::seal(&header, plaintext, &key, tenant, device).unwrap()
}

/// A tenant with an admin token, a 5-use enrollment token and one enrolled device.
struct Fx {
    tenant: Tenant,
    token: String,
    enroll_token_id: Uuid,
    enroll_secret: String,
    device: Dev,
    /// An alarm, a mute rule and a webhook of this tenant.
    alarm_id: Uuid,
    rule_id: Uuid,
    webhook_id: Uuid,
    /// A user whose role can change, one to offboard, an API token to
    /// revoke and a grant to the harness's MSP user.
    user_id: Uuid,
    offboard_user_id: Uuid,
    api_token_id: Uuid,
    grant_id: Uuid,
    /// A canary rollout of group `grp`, which holds the device.
    rollout_id: Uuid,
    /// A remote action queued for the device and a diagnostics bundle it
    /// uploaded, once [`Harness::add_action_fixtures`] made them.
    action_seq: u64,
    diagnostics_id: Uuid,
    /// Yesterday's daily report.
    report_id: Uuid,
    /// A VPN peer of the device once [`Harness::vpn`] made one (else
    /// nobody's id).
    vpn_peer_id: Uuid,
}

impl Fx {
    fn host(&self) -> &str {
        &self.tenant.domain
    }

    /// This tenant's resource for a parameter: its enrollment token on
    /// enrollment-token routes, else its device; seq 1; no long-poll wait.
    /// The fixture's target lists, named per tenant: one the walk reads
    /// and replaces, one it deletes (operations run in any order), one it
    /// imports.
    fn list_name(&self, op: &str) -> String {
        format!("{op}-{}", self.tenant.name)
    }

    fn fill(&self, op: &Op, p: &Param) -> Option<String> {
        match (p.in_path, p.kind) {
            (true, Kind::Integer) if op.path.contains("/actions/") => {
                Some(self.action_seq.to_string())
            }
            (true, _) if p.name == "batch_id" => Some(self.diagnostics_id.to_string()),
            (true, Kind::Integer) => Some("1".into()),
            (true, _) if op.path.starts_with("/api/v1/enrollment-tokens/") => {
                Some(self.enroll_token_id.to_string())
            }
            (true, _) if op.path.starts_with("/api/v1/alarms/") => Some(self.alarm_id.to_string()),
            (true, _) if op.path.starts_with("/api/v1/alarm-rules/") => {
                Some(self.rule_id.to_string())
            }
            (true, _) if op.path.starts_with("/api/v1/webhooks/") => {
                Some(self.webhook_id.to_string())
            }
            (true, _) if op.path.ends_with("/offboard") => Some(self.offboard_user_id.to_string()),
            (true, _) if op.path.starts_with("/api/v1/users/") => Some(self.user_id.to_string()),
            (true, _) if op.path.starts_with("/api/v1/tokens/") => {
                Some(self.api_token_id.to_string())
            }
            (true, _) if op.path.starts_with("/api/v1/msp-grants/") => {
                Some(self.grant_id.to_string())
            }
            (true, _) if p.name == "layer" => Some("device".into()),
            (true, _) if p.name == "group" => Some("grp".into()),
            (true, _) if p.name == "action" => Some("pause".into()),
            (true, _) if op.path.starts_with("/api/v1/config/rollouts/") => {
                Some(self.rollout_id.to_string())
            }
            (false, _) if op.path.ends_with("/diff") && (p.name == "from" || p.name == "to") => {
                Some("1".into())
            }
            (true, _) if op.path.starts_with("/api/v1/reports/") => {
                Some(self.report_id.to_string())
            }
            (true, _) if op.path.starts_with("/api/v1/target-lists/") => {
                let kind = match op.method.as_str() {
                    _ if op.path.ends_with("/import") => "imp",
                    "DELETE" => "del",
                    _ => "list",
                };
                Some(self.list_name(kind))
            }
            (true, _) if p.name == "peer" => Some(self.vpn_peer_id.to_string()),
            (true, _) => Some(self.device.id.to_string()),
            (false, Kind::Uuid) => Some(self.device.id.to_string()),
            (false, _) if p.name == "wait_secs" => Some("0".into()),
            (false, _) => None,
        }
    }
}

fn secret_of(token: &str) -> String {
    EnrollmentToken::decode(token)
        .expect("portal tokens decode")
        .secret
}

fn enroll_body(secret: &str, key: &SigningKey) -> Value {
    let pk = key.verifying_key().to_b64();
    let proof = rampart_proto::b64(&key.sign(&EnrollRequest::proof_input(secret, &pk)));
    serde_json::to_value(EnrollRequest {
        secret: secret.into(),
        device_public_key: pk,
        proof,
        hostname: "host-1".into(),
        agent_version: "test".into(),
    })
    .unwrap()
}

struct Harness {
    portal: Arc<Portal>,
    app: axum::Router,
    operator: String,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        Self::with_config(Config::default()).await
    }

    /// A harness whose portal runs with `config` (its data dir replaced).
    async fn with_config(config: Config) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..config
        };
        let (master, _) =
            rampart_portal::crypto::load_master_key(&dir.path().join("master.key")).unwrap();
        let portal = Portal::with_backends(
            config,
            Arc::new(SqliteStore::in_memory().await.unwrap()),
            Arc::new(LocalBlobStore::new(dir.path().join("blobs"))),
            Arc::new(master),
        )
        .await
        .unwrap();
        let portal = Arc::new(portal);
        let operator = portal
            .mint_api_token(&Actor::Cli, None, "op", "admin", None)
            .await
            .unwrap()
            .secret;
        Harness {
            app: rampart_portal::app(portal.clone()),
            portal,
            operator,
            dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (request_id, content_type) = (header("x-request-id"), header("content-type"));
        let (set_cookie, retry_after) = (header("set-cookie"), header("retry-after"));
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            request_id,
            content_type,
            set_cookie,
            retry_after,
            body,
        }
    }

    async fn call(
        &self,
        method: &str,
        host: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send(build(
            method,
            host,
            path,
            bearer,
            body.as_ref().and_then(json_body),
            None,
        ))
        .await
    }

    /// Sends `op` to `url` on `host` with `body` (if it takes a body).
    async fn op(
        &self,
        op: &Op,
        host: &str,
        url: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Reply {
        self.send(build(&op.method, host, url, bearer, op.body(body), None))
            .await
    }

    /// `op` as its rightful caller sends it: the operator on the admin host
    /// (about a tenant that does not exist), `fx`'s token or device on
    /// `fx`'s host with `fx`'s ids, nobody on public routes.
    async fn as_owner(&self, op: &Op, fx: &Fx) -> Reply {
        let url = op.url(|p| {
            if op.tag == "admin" {
                placeholder(p)
            } else {
                fx.fill(op, p)
            }
        });
        let body = sample_body(op);
        match op.tag.as_str() {
            "admin" => self.op(op, ADMIN, &url, Some(&self.operator), &body).await,
            t if tenant_tag(t) && !op.is_public() => {
                self.op(op, fx.host(), &url, Some(&fx.token), &body).await
            }
            _ if op.is_public() => self.op(op, fx.host(), &url, None, &body).await,
            _ => {
                self.signed(&fx.device, &op.method, fx.host(), &url, op.body(&body))
                    .await
            }
        }
    }

    /// A request signed now by `dev`, sent to `host`.
    async fn signed(
        &self,
        dev: &Dev,
        method: &str,
        host: &str,
        path: &str,
        body: Payload,
    ) -> Reply {
        let bytes = body.as_ref().map(|b| b.1.clone()).unwrap_or_default();
        let auth = dev.sign(method, host, path, &bytes, now());
        self.send(build(method, host, path, None, body, Some(&auth)))
            .await
    }

    async fn upload(&self, dev: &Dev, frame: Vec<u8>) -> Reply {
        self.signed(
            dev,
            "POST",
            &dev.host,
            "/api/v1/device/batches",
            raw_body("application/octet-stream", frame),
        )
        .await
    }

    async fn enroll(&self, host: &str, body: Value) -> Reply {
        self.call("POST", host, "/api/v1/enroll", None, Some(body))
            .await
    }

    async fn enroll_ok(&self, host: &str, secret: &str) -> Dev {
        let key = SigningKey::generate();
        let v = self
            .enroll(host, enroll_body(secret, &key))
            .await
            .ok("enroll");
        let uuid = |k: &str| Uuid::parse_str(v[k].as_str().unwrap()).unwrap();
        Dev {
            id: uuid("device_id"),
            tenant: uuid("tenant_id"),
            host: host.into(),
            key,
            upload_key: v["upload_key"].as_str().unwrap().into(),
            status: v["status"].as_str().unwrap().into(),
        }
    }

    /// An enrollment token of `fx`'s tenant: its id and secret.
    async fn enrollment_token(
        &self,
        fx: &Fx,
        max_uses: u32,
        needs_approval: bool,
    ) -> (Uuid, String) {
        let (row, token) = self
            .portal
            .create_enrollment_token(
                &Actor::Cli,
                &fx.tenant,
                3600,
                max_uses,
                vec![],
                needs_approval,
            )
            .await
            .unwrap();
        (row.id, secret_of(&token))
    }

    async fn tenant(&self, name: &str) -> Fx {
        let tenant = self
            .portal
            .create_tenant(&Actor::Cli, name, &format!("{name}.example.test"), None)
            .await
            .unwrap();
        let token = self
            .portal
            .mint_api_token(&Actor::Cli, Some(tenant.id), "t", "owner", None)
            .await
            .unwrap()
            .secret;
        let (row, enroll_token) = self
            .portal
            .create_enrollment_token(&Actor::Cli, &tenant, 3600, 5, vec![], false)
            .await
            .unwrap();
        let enroll_secret = secret_of(&enroll_token);
        let device = self.enroll_ok(&tenant.domain, &enroll_secret).await;
        let raised = rampart_portal::alarms::raise(
            &self.portal,
            tenant.id,
            vec![rampart_alarms::source::instruction_refused(
                device.id,
                7,
                "bad_signature",
                1_000,
            )],
        )
        .await
        .unwrap();
        let alarm_id = match raised[..] {
            [rampart_store::AlarmOutcome::Created(id)] => id,
            ref other => panic!("expected one new alarm, got {other:?}"),
        };
        let rule_id = Uuid::new_v4();
        self.portal
            .store
            .create_alarm_rule(
                tenant.id,
                &rampart_store::AlarmRuleRow {
                    id: rule_id,
                    action: "mute".into(),
                    kind: Some("port_scan".into()),
                    host: None,
                    network: None,
                    port: None,
                    expires_at: None,
                    comment: String::new(),
                    created_at: 1,
                },
            )
            .await
            .unwrap();
        let (hook, _) = rampart_portal::notify::create_webhook(
            &self.portal,
            tenant.id,
            "https://hooks.example.net/fixture".into(),
            rampart_alarms::model::Severity::Info,
            vec![],
        )
        .await
        .unwrap();
        let user_id = self.fixture_user(&tenant, "fx-user").await;
        let offboard_user_id = self.fixture_user(&tenant, "fx-leaver").await;
        let api_token_id = self
            .portal
            .mint_api_token(&Actor::Cli, Some(tenant.id), "fx", "read_only", None)
            .await
            .unwrap()
            .row
            .id;
        let grant_id = self.fixture_grant(&tenant).await;
        let rollout_id = self.fixture_config(&tenant, device.id).await;
        let (report, _) =
            rampart_portal::reports::generate_now(&self.portal, &tenant, "daily", None, now())
                .await
                .unwrap();
        let fx = Fx {
            tenant,
            token,
            enroll_token_id: row.id,
            enroll_secret,
            device,
            alarm_id,
            rule_id,
            webhook_id: hook.id,
            user_id,
            offboard_user_id,
            api_token_id,
            grant_id,
            rollout_id,
            action_seq: 0,
            diagnostics_id: Uuid::nil(),
            report_id: report.id,
            vpn_peer_id: Uuid::new_v4(),
        };
        // Target lists for the walk (see `Fx::list_name`); the imported one
        // is kept by hand, so importing it is refused with 409.
        for name in ["list", "del", "imp"].map(|k| fx.list_name(k)) {
            let list = rampart_store::TargetListRow {
                name,
                description: String::new(),
                entries: vec!["192.0.2.1".into()],
                source: rampart_store::SOURCE_MANUAL.into(),
                version: 0,
                updated_at: now(),
                last_import: None,
            };
            self.portal
                .store
                .put_target_list(fx.tenant.id, &list, 0)
                .await
                .unwrap();
        }
        fx
    }

    /// A group with the device in it, a device document (version 1) and a
    /// canary rollout of the group's first document, for the config routes.
    async fn fixture_config(&self, tenant: &Tenant, device: Uuid) -> Uuid {
        use rampart_portal::devconf::{self, DocRef, Staged};
        let (p, t) = (&self.portal, tenant.id);
        devconf::create_group(p, &Actor::Cli, t, "grp")
            .await
            .unwrap();
        devconf::set_group(p, &Actor::Cli, t, DeviceId(device), Some("grp"))
            .await
            .unwrap();
        let doc = DocRef::parse("device", &device.to_string()).unwrap();
        devconf::save(
            p,
            &Actor::Cli,
            t,
            &doc,
            json!({"log_level": "info"}),
            0,
            "fixture",
            None,
        )
        .await
        .unwrap();
        let grp = DocRef::parse("group", "grp").unwrap();
        let staged = Staged {
            canary_percent: 50,
            bake_secs: 60,
        };
        devconf::save(
            p,
            &Actor::Cli,
            t,
            &grp,
            json!({"upload": {"batch_max_records": 100}}),
            0,
            "fixture",
            Some(staged),
        )
        .await
        .unwrap()
        .rollout
        .unwrap()
    }

    /// Gives `fx`'s device a remote action and a diagnostics bundle (left
    /// out of [`Harness::tenant`]: other checks count instructions and
    /// batches from none).
    async fn add_action_fixtures(&self, fx: &mut Fx) {
        let device = rampart_store::DeviceId(fx.device.id);
        fx.action_seq = self
            .portal
            .queue_action(
                &Actor::Cli,
                fx.tenant.id,
                device,
                "diagnostics",
                Value::Null,
                None,
            )
            .await
            .unwrap()
            .seq;
        fx.diagnostics_id = Uuid::new_v4();
        let frame = seal_kind(
            "diagnostics",
            fx.diagnostics_id,
            b"{\"format\":\"rampart-diagnostics/1\"}",
            &fx.device.upload_key,
            fx.tenant.id.0,
            fx.device.id,
        );
        self.portal
            .ingest_batch(fx.tenant.id, device, &frame)
            .await
            .unwrap();
    }

    /// A VPN interface on `fx`'s device with one peer, which `fx.fill`
    /// then names.
    async fn vpn(&self, fx: &mut Fx) {
        let dev = DeviceId(fx.device.id);
        let spec = rampart_portal::vpn::InterfaceSpec {
            address: "10.8.0.1/24".into(),
            listen_port: None,
            endpoint: format!("vpn.{}", fx.host()),
            dns: vec![],
            client_allowed_ips: None,
        };
        rampart_portal::vpn::put_interface(&self.portal, &Actor::Cli, fx.tenant.id, dev, spec)
            .await
            .unwrap();
        fx.vpn_peer_id = rampart_portal::vpn::create_peer(
            &self.portal,
            &Actor::Cli,
            fx.tenant.id,
            dev,
            "fx-peer",
            true,
        )
        .await
        .unwrap()
        .id;
    }

    /// Queues a `ping` for `device` through the tenant API.
    async fn instruct(&self, fx: &Fx, device: Uuid) -> Value {
        let path = format!("/api/v1/devices/{device}/instructions");
        self.call(
            "POST",
            fx.host(),
            &path,
            Some(&fx.token),
            Some(json!({"kind": "ping"})),
        )
        .await
        .ok("queue instruction")
    }

    /// Every signed device operation by `dev` is refused with 403 `code`.
    async fn refused_on_every_route(&self, ops: &[&Op], dev: &Dev, code: &str) {
        for op in ops {
            let url = op.url(placeholder);
            let r = self
                .signed(dev, &op.method, &dev.host, &url, op.body(&sample_body(op)))
                .await;
            r.expect(
                403,
                Some(code),
                &format!("{} {url} by a device that is not active", op.method),
            );
        }
    }

    /// Everything the store holds for `fx`'s tenant, to compare before and after.
    async fn snapshot(&self, fx: &Fx) -> String {
        let (s, t, d) = (&self.portal.store, fx.tenant.id, DeviceId(fx.device.id));
        format!(
            "{:?}",
            (
                s.get_tenant(t).await.unwrap(),
                s.list_devices(t).await.unwrap(),
                s.list_enrollment_tokens(t).await.unwrap(),
                s.list_instructions(t, d).await.unwrap(),
                s.list_device_events(t, d).await.unwrap(),
                s.list_batches(t, None, 10_000).await.unwrap(),
                s.get_alarm(t, fx.alarm_id).await.unwrap(),
                s.alarm_history(t, fx.alarm_id).await.unwrap(),
                s.list_alarm_rules(t).await.unwrap(),
                s.list_webhooks(t).await.unwrap(),
                s.list_audit(t, 0, 10_000).await.unwrap(),
                (
                    s.list_users(Some(t)).await.unwrap(),
                    s.list_api_tokens(t).await.unwrap(),
                    s.list_msp_grants(t).await.unwrap(),
                ),
            )
        )
    }
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn every_route_has_an_auth_policy() {
    let h = Harness::new().await;
    let mut a = h.tenant("acme").await;
    h.vpn(&mut a).await;
    let doc = doc();
    let ops = operations(&doc);
    assert!(ops.len() > 15, "walked only {} operations", ops.len());
    for (m, p) in PUBLIC {
        assert!(
            ops.iter().any(|o| o.method == *m && o.path == *p),
            "public {m} {p} is not in the document"
        );
    }
    for op in &ops {
        for host in [ADMIN, a.host()] {
            let url = op.url(placeholder);
            let r = h.op(op, host, &url, None, &json!({})).await;
            let ctx = format!("{} {url} on {host} without credentials", op.method);
            if op.is_public() {
                assert!(
                    !r.status.is_server_error(),
                    "{ctx}: {} {}",
                    r.status,
                    r.text()
                );
                continue;
            }
            assert!(
                matches!(r.status.as_u16(), 401 | 403 | 404),
                "{ctx}: expected 401, 403 or 404, got {}: {}",
                r.status,
                r.text()
            );
            assert_ne!(
                r.error_code(&ctx),
                "no_route",
                "{ctx}: documented but not routed"
            );
        }
    }
    role_walk(&h, &a, &ops).await;
    // The document itself is served outside the document, to anyone.
    assert!(doc["paths"].get("/api/v1/openapi.json").is_none());
    for host in [ADMIN, a.host()] {
        let r = h
            .call("GET", host, "/api/v1/openapi.json", None, None)
            .await;
        assert_eq!(r.status, 200, "openapi.json on {host}");
    }
}

#[tokio::test]
async fn cross_tenant_access_is_refused_on_every_route() {
    let h = Harness::new().await;
    let (mut a, mut b) = (h.tenant("acme").await, h.tenant("beta").await);
    h.vpn(&mut a).await;
    h.vpn(&mut b).await;
    // B gets data of every kind a leak could show. A's device has no
    // instruction at all, so seq 1 is B's only.
    h.instruct(&b, b.device.id).await;
    h.add_action_fixtures(&mut b).await;
    h.upload(
        &b.device,
        seal(&b.device.upload_key, b.device.tenant, b.device.id),
    )
    .await
    .ok("B uploads");
    let before = h.snapshot(&b).await;
    let b_ids = [
        b.tenant.id.to_string(),
        b.device.id.to_string(),
        b.enroll_token_id.to_string(),
        b.tenant.domain.clone(),
        b.alarm_id.to_string(),
        b.rule_id.to_string(),
        b.webhook_id.to_string(),
        b.user_id.to_string(),
        b.offboard_user_id.to_string(),
        b.api_token_id.to_string(),
        b.grant_id.to_string(),
        b.report_id.to_string(),
        b.vpn_peer_id.to_string(),
    ];
    let ops = operations(&doc());

    let tenant_ops: Vec<&Op> = ops
        .iter()
        // Flow routes need queries this walk does not build; their
        // isolation is tested with data in rampart-flowstore and e2e_flows.
        .filter(|o| tenant_tag(&o.tag) && o.tag != "flows" && !o.is_public())
        .collect();
    assert!(
        tenant_ops.len() >= 10,
        "only {} tenant operations",
        tenant_ops.len()
    );
    let alarm_ops = tenant_ops.iter().filter(|o| o.tag == "alarms").count();
    assert!(alarm_ops >= 20, "only {alarm_ops} alarm operations");
    for op in &tenant_ops {
        let body = sample_body(op);
        let (a_url, b_url) = (op.url(|p| a.fill(op, p)), op.url(|p| b.fill(op, p)));
        for (host, bearer, url, who) in [
            (b.host(), &a.token, &b_url, "A's token on B's host"),
            (b.host(), &a.token, &a_url, "A's token on B's host, A's ids"),
            (a.host(), &b.token, &b_url, "B's token on A's host"),
            (a.host(), &b.token, &a_url, "B's token on A's host, A's ids"),
            (
                b.host(),
                &h.operator,
                &b_url,
                "the operator token on B's host",
            ),
        ] {
            let r = h.op(op, host, url, Some(bearer), &body).await;
            r.expect(
                401,
                Some("unauthorized"),
                &format!("{} {url} with {who}", op.method),
            );
        }
        // A's own token on A's host, naming B's resources.
        let r = h.op(op, a.host(), &b_url, Some(&a.token), &body).await;
        let ctx = format!("{} {b_url} with A's token on A's host", op.method);
        if op.has_path_params() {
            assert!(
                r.status.is_client_error(),
                "{ctx}: expected a refusal, got {}: {}",
                r.status,
                r.text()
            );
            r.error_code(&ctx);
        } else if r.status.is_success() {
            for id in &b_ids {
                assert!(
                    !r.text().contains(id.as_str()),
                    "{ctx}: the answer shows B's {id}: {}",
                    r.text()
                );
            }
        }
    }

    for op in ops.iter().filter(|o| o.tag == "admin") {
        let url = op.url(|p| p.in_path.then(|| b.tenant.name.clone()));
        let body = sample_body(op);
        let r = h.op(op, ADMIN, &url, Some(&a.token), &body).await;
        r.expect(
            401,
            Some("unauthorized"),
            &format!("{} {url} with A's token on the admin host", op.method),
        );
        let r = h.op(op, a.host(), &url, Some(&h.operator), &body).await;
        r.expect(
            404,
            Some("wrong_domain"),
            &format!("{} {url} with the operator token on A's host", op.method),
        );
    }

    let device_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.tag == "device" && !o.is_public())
        .collect();
    assert!(
        device_ops.len() >= 4,
        "only {} device operations",
        device_ops.len()
    );
    for op in &device_ops {
        let url = op.url(|p| b.fill(op, p));
        let r = h
            .signed(
                &a.device,
                &op.method,
                b.host(),
                &url,
                op.body(&sample_body(op)),
            )
            .await;
        r.expect(
            401,
            Some("unauthorized"),
            &format!("{} {url} signed by A's device, sent to B's host", op.method),
        );
    }
    // The walk above may have queued instructions for A's device (data
    // controls): B gets a seq above every one of A's, which A then acks.
    let a_max = h
        .portal
        .store
        .list_instructions(a.tenant.id, DeviceId(a.device.id))
        .await
        .unwrap()
        .iter()
        .map(|i| i.seq)
        .max()
        .unwrap_or(0);
    assert_eq!(h.snapshot(&b).await, before, "B's data changed");
    let mut b_seq = 1;
    while b_seq <= a_max {
        b_seq = h.instruct(&b, b.device.id).await["seq"].as_u64().unwrap();
    }
    let ack = json_body(&json!({"status": "ok", "result": {"stolen": true}}));
    let r = h
        .signed(
            &a.device,
            "POST",
            a.host(),
            &format!("/api/v1/device/instructions/{b_seq}/ack"),
            ack,
        )
        .await;
    r.expect(
        404,
        Some("not_found"),
        "A's device acks B's seq on A's host",
    );
    let before = h.snapshot(&b).await;
    let r = h
        .enroll(
            b.host(),
            enroll_body(&a.enroll_secret, &SigningKey::generate()),
        )
        .await;
    r.expect(
        403,
        Some("token_unknown"),
        "A's enrollment secret on B's host",
    );

    // Control: the same requests with A's own token and ids get through, so
    // the refusals above were about the tenant, not about the request
    // (the routes only a logged-in person may use refuse any token).
    h.add_action_fixtures(&mut a).await;
    for op in tenant_ops
        .iter()
        .filter(|o| !SESSION_ONLY.contains(&o.path.as_str()))
    {
        let r = h.as_owner(op, &a).await;
        assert!(
            r.status.is_success() || r.status == StatusCode::CONFLICT,
            "control {} {} with A's own token: {} {}",
            op.method,
            op.path,
            r.status,
            r.text()
        );
    }
    assert_eq!(h.snapshot(&b).await, before, "B's data changed");
}

#[tokio::test]
async fn malformed_oversized_and_misrouted_requests_get_clear_errors() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let (host, token) = (a.host(), Some(a.token.as_str()));
    let big = serde_json::to_vec(&json!({"labels": ["x".repeat(300 * 1024)]})).unwrap();
    let json_raw = |b: &[u8]| raw_body("application/json", b);
    let tokens =
        |body: Payload| build("POST", host, "/api/v1/enrollment-tokens", token, body, None);
    let cases = [
        (
            "malformed json",
            tokens(json_raw(b"{\"ttl_secs\": ")),
            400,
            Some("invalid_json"),
        ),
        (
            "wrong content type",
            tokens(raw_body("text/plain", "{}")),
            415,
            Some("unsupported_media_type"),
        ),
        (
            "no content type",
            tokens(None),
            415,
            Some("unsupported_media_type"),
        ),
        ("json over 256 KiB", tokens(json_raw(&big)), 413, None),
        (
            "json over 256 KiB to enroll",
            build("POST", host, "/api/v1/enroll", None, json_raw(&big), None),
            413,
            None,
        ),
        (
            "unknown route",
            build("GET", host, "/api/v1/nope", token, None, None),
            404,
            Some("no_route"),
        ),
        (
            "unknown route, admin host",
            build("GET", ADMIN, "/api/v1/nope", None, None, None),
            404,
            Some("no_route"),
        ),
        (
            "wrong method",
            build("DELETE", host, "/api/v1/devices", token, None, None),
            405,
            Some("method_not_allowed"),
        ),
    ];
    for (label, req, status, code) in cases {
        h.send(req).await.expect(status, code, label);
    }

    // Signed device requests with bad bodies.
    let dev = &a.device;
    let frame = seal(&dev.upload_key, dev.tenant, dev.id);
    let mut flipped = frame.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let batch = |b: &[u8]| {
        (
            "/api/v1/device/batches",
            raw_body("application/octet-stream", b),
        )
    };
    let refusal = |b: &[u8]| ("/api/v1/device/refusals", json_raw(b));
    let cases = [
        ("garbage batch", batch(b"garbage"), 400, None),
        ("empty batch", batch(b""), 400, None),
        (
            "truncated batch",
            batch(&frame[..frame.len() / 2]),
            400,
            None,
        ),
        (
            "batch with a flipped ciphertext bit",
            batch(&flipped),
            400,
            None,
        ),
        ("device json over 256 KiB", refusal(&big), 413, None),
        (
            "malformed device json",
            refusal(b"{\"code\""),
            400,
            Some("invalid_json"),
        ),
    ];
    for (label, (path, body), status, code) in cases {
        h.signed(dev, "POST", host, path, body)
            .await
            .expect(status, code, label);
    }

    // Device signatures that must not verify.
    let good = || dev.sign("GET", host, POLL_NOW, b"", now());
    let mut flipped_sig = good();
    let mut sig = rampart_proto::unb64("sig", &flipped_sig.signature, 64).unwrap();
    sig[0] ^= 1;
    flipped_sig.signature = rampart_proto::b64(&sig);
    let other_key = DeviceAuth::sign(
        &SigningKey::generate(),
        dev.id,
        "GET",
        host,
        POLL_NOW,
        now(),
        b"",
    );
    let poll = |auth: DeviceAuth| build("GET", host, POLL_NOW, None, None, Some(&auth));
    let refusal = r#"{"code":"expired","message":"m"}"#;
    let cases = [
        ("flipped signature bit", poll(flipped_sig)),
        ("signed by another key", poll(other_key)),
        (
            "signed for another host",
            poll(dev.sign("GET", "beta.example.test", POLL_NOW, b"", now())),
        ),
        (
            "signed for another method",
            poll(dev.sign("POST", host, POLL_NOW, b"", now())),
        ),
        (
            "timestamp changed after signing",
            poll(DeviceAuth {
                timestamp: now() - 1,
                ..good()
            }),
        ),
        (
            "timestamp 10 minutes old",
            poll(dev.sign("GET", host, POLL_NOW, b"", now() - 600)),
        ),
        (
            "timestamp 10 minutes ahead",
            poll(dev.sign("GET", host, POLL_NOW, b"", now() + 600)),
        ),
        (
            "signed for another query",
            build(
                "GET",
                host,
                "/api/v1/device/poll?after_seq=5&wait_secs=0",
                None,
                None,
                Some(&good()),
            ),
        ),
        (
            "body changed after signing",
            build(
                "POST",
                host,
                "/api/v1/device/refusals",
                None,
                json_raw(refusal.as_bytes()),
                Some(&dev.sign("POST", host, "/api/v1/device/refusals", b"{}", now())),
            ),
        ),
    ];
    for (label, req) in cases {
        h.send(req).await.expect(401, Some("unauthorized"), label);
    }

    // A replayed request: the same signature and nonce twice.
    let auth = good();
    h.send(poll(auth.clone())).await.ok("first use of a nonce");
    h.send(poll(auth))
        .await
        .expect(401, Some("unauthorized"), "replay");
}

#[tokio::test]
async fn enrollment_refusals_have_clear_codes() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let host = a.host();
    // Expired: a row already past its expiry, written to the store directly.
    let expired = format!("expired-{}", Uuid::new_v4());
    let row = EnrollmentTokenRow {
        id: Uuid::new_v4(),
        tenant_id: a.tenant.id,
        secret_hash: rampart_proto::sha256_hex(expired.as_bytes()),
        created_at: now() - 7200,
        expires_at: now() - 60,
        max_uses: 5,
        uses: 0,
        labels: vec![],
        needs_approval: false,
        revoked_at: None,
    };
    h.portal
        .store
        .create_enrollment_token(a.tenant.id, &row)
        .await
        .unwrap();
    let (_, used_up) = h.enrollment_token(&a, 1, false).await;
    h.enroll_ok(host, &used_up).await;
    let (revoked_id, revoked) = h.enrollment_token(&a, 5, false).await;
    let path = format!("/api/v1/enrollment-tokens/{revoked_id}/revoke");
    assert_eq!(
        h.call("POST", host, &path, Some(&a.token), None)
            .await
            .status,
        204
    );
    let (_, fresh) = h.enrollment_token(&a, 1, false).await;

    let key = SigningKey::generate();
    let with_proof = |proof: Value| {
        let mut v = enroll_body(&fresh, &key);
        v["proof"] = proof;
        v
    };
    let cases = [
        (
            "unknown token",
            enroll_body("no-such-secret", &key),
            403,
            "token_unknown",
        ),
        (
            "expired token",
            enroll_body(&expired, &key),
            403,
            "token_expired",
        ),
        (
            "used-up one-time token",
            enroll_body(&used_up, &key),
            403,
            "token_used_up",
        ),
        (
            "revoked token",
            enroll_body(&revoked, &key),
            403,
            "token_revoked",
        ),
        (
            "proof by another key",
            with_proof(enroll_body(&fresh, &SigningKey::generate())["proof"].clone()),
            400,
            "invalid",
        ),
        (
            "proof over another secret",
            with_proof(enroll_body(&used_up, &key)["proof"].clone()),
            400,
            "invalid",
        ),
        (
            "proof not base64",
            with_proof(json!("not base64!")),
            400,
            "invalid",
        ),
    ];
    for (label, body, status, code) in cases {
        h.enroll(host, body).await.expect(status, Some(code), label);
    }
    // The refused proofs did not spend the one-time token.
    assert_eq!(h.enroll_ok(host, &fresh).await.status, "active");
}

#[tokio::test]
async fn revoked_and_pending_devices_are_refused_until_approved() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let ops = operations(&doc());
    let device_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.tag == "device" && !o.is_public())
        .collect();
    assert!(
        device_ops.len() >= 4,
        "only {} device operations",
        device_ops.len()
    );
    let path = format!("/api/v1/devices/{}/revoke", a.device.id);
    let v = h
        .call("POST", a.host(), &path, Some(&a.token), None)
        .await
        .ok("revoke");
    assert_eq!(v["status"], "revoked");
    h.refused_on_every_route(&device_ops, &a.device, "device_revoked")
        .await;

    let (_, secret) = h.enrollment_token(&a, 1, true).await;
    let dev = h.enroll_ok(a.host(), &secret).await;
    assert_eq!(dev.status, "pending");
    h.refused_on_every_route(&device_ops, &dev, "device_pending")
        .await;

    let approve = |id: Uuid| format!("/api/v1/devices/{id}/approve");
    let v = h
        .call("POST", a.host(), &approve(dev.id), Some(&a.token), None)
        .await
        .ok("approve");
    assert_eq!(v["status"], "active");
    let queued = h.instruct(&a, dev.id).await;
    let v = h
        .signed(&dev, "GET", a.host(), POLL_NOW, None)
        .await
        .ok("poll after approval");
    assert_eq!(v["instructions"].as_array().map(Vec::len), Some(1), "{v}");
    let ack = format!("/api/v1/device/instructions/{}/ack", queued["seq"]);
    let r = h
        .signed(
            &dev,
            "POST",
            a.host(),
            &ack,
            json_body(&json!({"status": "ok", "result": {}})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());

    for (id, label) in [
        (dev.id, "an active device"),
        (a.device.id, "a revoked device"),
    ] {
        let r = h
            .call("POST", a.host(), &approve(id), Some(&a.token), None)
            .await;
        r.expect(409, Some("conflict"), &format!("approving {label}"));
    }
}

#[tokio::test]
async fn sealed_batches_are_stored_once_and_only_from_the_device_they_are_bound_to() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    let (x, y) = (&a.device, h.enroll_ok(a.host(), &a.enroll_secret).await);
    let frame = seal(&x.upload_key, x.tenant, x.id);
    let batch_id = batch::parse(&frame).unwrap().header.batch_id.to_string();
    for (attempt, stored) in [("first", true), ("second", false)] {
        let v = h
            .upload(x, frame.clone())
            .await
            .ok(&format!("{attempt} upload"));
        assert_eq!(
            (v["batch_id"].as_str(), v["stored"].as_bool()),
            (Some(batch_id.as_str()), Some(stored)),
            "{attempt} upload"
        );
    }

    let cases = [
        (
            "sealed for device X, uploaded by device Y",
            seal(&x.upload_key, x.tenant, x.id),
            &y,
        ),
        (
            "sealed to another tenant's upload key",
            seal(&b.device.upload_key, x.tenant, x.id),
            x,
        ),
        (
            "bound to another tenant",
            seal(&x.upload_key, b.device.tenant, x.id),
            x,
        ),
    ];
    for (label, frame, uploader) in cases {
        h.upload(uploader, frame).await.expect(400, None, label);
    }

    let list = h
        .call("GET", a.host(), "/api/v1/batches", Some(&a.token), None)
        .await
        .ok("list batches");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["batch_id"].as_str())
        .collect();
    assert_eq!(ids, [batch_id.as_str()], "{list}");
    assert_eq!(list[0]["device_id"], x.id.to_string());
}

#[tokio::test]
async fn openapi_document_is_served_and_every_documented_route_is_routed() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let r = h
        .call("GET", ADMIN, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.content_type
    );
    let served = r.json();
    assert_eq!(served, doc(), "the served document differs from openapi()");
    let ops = operations(&served);
    assert!(ops.len() > 15, "walked only {} operations", ops.len());
    // Each operation as its rightful caller would send it: it must reach a
    // handler (any answer but no_route, 405 or a server error).
    for op in &ops {
        let r = h.as_owner(op, &a).await;
        let ctx = format!("{} {} ({})", op.method, op.path, op.tag);
        assert!(
            r.status != 405 && !r.status.is_server_error(),
            "{ctx}: {} {}",
            r.status,
            r.text()
        );
        if !r.status.is_success() {
            assert_ne!(
                r.error_code(&ctx),
                "no_route",
                "{ctx}: documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn a_repeated_batch_id_never_replaces_the_stored_frame() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let d = &a.device;
    let id = Uuid::new_v4();
    let first = seal_with(
        id,
        b"{\"alarm\":\"intrusion\"}\n",
        &d.upload_key,
        d.tenant,
        d.id,
    );
    let second = seal_with(
        id,
        b"{\"alarm\":\"nothing to see\"}\n",
        &d.upload_key,
        d.tenant,
        d.id,
    );
    assert_eq!(
        h.upload(d, first.clone()).await.ok("first upload")["stored"],
        true
    );
    assert_eq!(
        h.upload(d, second).await.ok("same batch id, other content")["stored"],
        false
    );
    let rows = h
        .portal
        .store
        .list_batches(a.tenant.id, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let kept = h.portal.blobs.get(&rows[0].blob_key).await.unwrap();
    assert!(
        kept.as_deref() == Some(&first[..]),
        "the answer said stored: false, yet the frame ingested first was replaced by the second upload"
    );
}

#[tokio::test]
async fn extreme_device_timestamps_are_refused_without_a_panic() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    for ts in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
        let auth = a.device.sign("GET", a.host(), POLL_NOW, b"", ts);
        let r = h
            .send(build("GET", a.host(), POLL_NOW, None, None, Some(&auth)))
            .await;
        r.expect(401, Some("unauthorized"), &format!("timestamp {ts}"));
    }
}

#[tokio::test]
async fn suspended_tenants_are_refused_on_every_route() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let ops = operations(&doc());
    let scoped: Vec<&Op> = ops
        .iter()
        .filter(|o| tenant_tag(&o.tag) || o.tag == "device")
        .collect();
    let suspend = format!("/api/v1/admin/tenants/{}/suspend", a.tenant.name);
    let v = h
        .call("POST", ADMIN, &suspend, Some(&h.operator), None)
        .await
        .ok("suspend");
    assert_eq!(v["status"], "suspended");
    for op in &scoped {
        let r = h.as_owner(op, &a).await;
        r.expect(
            403,
            Some("tenant_suspended"),
            &format!("{} {} on a suspended tenant", op.method, op.path),
        );
    }
    let resume = format!("/api/v1/admin/tenants/{}/resume", a.tenant.id);
    h.call("POST", ADMIN, &resume, Some(&h.operator), None)
        .await
        .ok("resume");
    h.call("GET", a.host(), "/api/v1/tenant", Some(&a.token), None)
        .await
        .ok("tenant api after resume");
    h.signed(&a.device, "GET", a.host(), POLL_NOW, None)
        .await
        .ok("poll after resume");
}

#[tokio::test]
async fn admin_api_creates_tenants_and_refuses_bad_input_with_client_errors() {
    let h = Harness::new().await;
    let op = Some(h.operator.as_str());
    let v = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(json!({"name": "acme", "domain": "Acme.Example.Test"})),
        )
        .await
        .ok("create tenant");
    assert_eq!(v["tenant"]["domain"], "acme.example.test");
    let info = h
        .call(
            "GET",
            "acme.example.test",
            "/api/v1/tenant",
            v["admin_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(
        info.ok("the new admin token on the new domain")["id"],
        v["tenant"]["id"]
    );

    let missing = h.dir.path().join("missing.pem").display().to_string();
    let tenant = |name: &str, domain: &str| json!({"name": name, "domain": domain});
    let cases = [
        (
            "invalid name",
            tenant("Bad_Name", "bad.example.test"),
            400,
            "invalid",
        ),
        (
            "invalid domain",
            tenant("bad", "not a domain"),
            400,
            "invalid",
        ),
        ("the admin domain", tenant("bad", ADMIN), 400, "invalid"),
        (
            "a taken name",
            tenant("acme", "other.example.test"),
            409,
            "conflict",
        ),
        (
            "a taken domain",
            tenant("other", "acme.example.test"),
            409,
            "conflict",
        ),
        (
            "an unknown field",
            json!({"name": "x", "domain": "x.example.test", "plan": "gold"}),
            400,
            "invalid_body",
        ),
        (
            "a cert file without its key",
            json!({"name": "x", "domain": "x.example.test", "cert_file": missing}),
            400,
            "invalid",
        ),
        (
            "unreadable certificate files",
            json!({"name": "x", "domain": "x.example.test", "cert_file": missing, "key_file": missing}),
            400,
            "invalid",
        ),
    ];
    let mut wrong = Vec::new();
    for (label, body, status, code) in cases {
        let r = h
            .call("POST", ADMIN, "/api/v1/admin/tenants", op, Some(body))
            .await;
        let got = r.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if r.status != status || got != code {
            wrong.push(format!(
                "{label}: expected {status} {code}, got {} {}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "POST /api/v1/admin/tenants:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_tenant_name_never_hides_another_tenants_domain() {
    let h = Harness::new().await;
    let op = Some(h.operator.as_str());
    // Single-label domains are valid, and so is a tenant named like one.
    let b = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(json!({"name": "bravo", "domain": "intranet"})),
        )
        .await
        .ok("create bravo at intranet");
    let r = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(json!({"name": "intranet", "domain": "one.example.test"})),
        )
        .await;
    if r.status.is_client_error() {
        return; // refusing the clash is a fine answer
    }
    r.ok("create a tenant named intranet");
    let info = h
        .call(
            "GET",
            "intranet",
            "/api/v1/tenant",
            b["admin_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(
        info.ok("bravo's own api on its domain")["id"],
        b["tenant"]["id"]
    );
}

#[tokio::test]
async fn broadcast_reaches_only_this_tenants_devices() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    let before = h.snapshot(&b).await;
    // B's device named in A's broadcast: refused, nothing queued anywhere.
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/instructions",
            Some(&a.token),
            Some(json!({"kind": "ping", "devices": [b.device.id]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // "all" on A's domain reaches A's device only.
    let v = h
        .call(
            "POST",
            a.host(),
            "/api/v1/instructions",
            Some(&a.token),
            Some(json!({"kind": "ping", "all": true})),
        )
        .await
        .ok("broadcast to all");
    assert_eq!(v["queued"], 1);
    assert_eq!(v["instructions"][0]["device_id"], a.device.id.to_string());
    assert_eq!(h.snapshot(&b).await, before, "B is untouched");
}

// ------------------------------------------------------------------ alarms

/// telegraf's `v2/alert.json` (shared/testdata/suricata_eve) as the agent
/// ships it: parsed by the EVE reader, in the wire form.
fn telegraf_alert() -> rampart_proto::alerts::IdsAlert {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/suricata_eve/telegraf/v2/alert.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match rampart_flow::eve::parse_line(v.to_string().as_bytes(), "0.0.0.0".parse().unwrap()) {
        Ok(rampart_flow::eve::EveEvent::Alert(a)) => rampart_agent::tail::ids_alert(&a),
        other => panic!("alert.json is not an alert: {other:?}"),
    }
}

async fn alarms_of(h: &Harness, fx: &Fx, query: &str) -> Vec<Value> {
    let v = h
        .call(
            "GET",
            fx.host(),
            &format!("/api/v1/alarms{query}"),
            Some(&fx.token),
            None,
        )
        .await
        .ok("list alarms");
    v["alarms"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_ids_alert_uploaded_twice_raises_one_alarm_with_its_fields() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let plain = rampart_proto::alerts::encode(&[telegraf_alert()]);
    let id = Uuid::new_v4();
    let frame = |id| {
        seal_kind(
            "ids_alerts",
            id,
            &plain,
            &a.device.upload_key,
            a.device.tenant,
            a.device.id,
        )
    };
    for _ in 0..2 {
        h.upload(&a.device, frame(id)).await.ok("upload alerts");
    }
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let ids = alarms_of(&h, &a, "?kind=ids_alert").await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let al = &ids[0];
    // The values telegraf's suricata_test.go reads from alert.json; its
    // severity 3 is Suricata's third level, "low" here.
    assert_eq!(al["title"], "Corrupted HTTP body");
    assert_eq!(al["severity"], "low");
    assert_eq!(
        (al["src"].as_str(), al["dst"].as_str()),
        (Some("10.0.0.5"), Some("179.60.192.3"))
    );
    assert_eq!(
        (al["dst_port"].as_u64(), al["protocol"].as_u64()),
        (Some(80), Some(6))
    );
    assert_eq!(al["count"], 1, "the repeated upload was not detected again");
    assert_eq!(al["device_id"], a.device.id.to_string());
    assert_eq!(al["evidence"][0]["sid"], 6);
    let link = al["flows_link"].as_str().unwrap();
    assert!(link.starts_with("/api/v1/flows/search?filter="), "{link}");
    h.call("GET", a.host(), link, Some(&a.token), None)
        .await
        .ok("the flows link is a valid search");

    // A new batch with the same alert folds into the open alarm.
    h.upload(&a.device, frame(Uuid::new_v4()))
        .await
        .ok("upload again");
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let ids = alarms_of(&h, &a, "?kind=ids_alert").await;
    assert_eq!((ids.len(), ids[0]["count"].as_u64()), (1, Some(2)));
}

#[tokio::test]
async fn alarms_are_acknowledged_assigned_noted_resolved_and_archived_with_history() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let path = |verb: &str| format!("/api/v1/alarms/{}/{verb}", a.alarm_id);
    for (verb, body) in [
        ("ack", None),
        ("assign", Some(json!({"assignee": "ana"}))),
        ("notes", Some(json!({"text": "a scanner of ours"}))),
        ("resolve", None),
    ] {
        h.call("POST", a.host(), &path(verb), Some(&a.token), body)
            .await
            .ok(verb);
    }
    let d = h
        .call(
            "GET",
            a.host(),
            &format!("/api/v1/alarms/{}", a.alarm_id),
            Some(&a.token),
            None,
        )
        .await
        .ok("show");
    assert_eq!(d["alarm"]["state"], "resolved");
    assert_eq!(d["alarm"]["assignee"], "ana");
    let actions: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "state", "assigned", "note", "state"]);
    assert_eq!(d["history"][1]["actor"], "token:t");
    assert_eq!(alarms_of(&h, &a, "?state=resolved").await.len(), 1);
    h.call("POST", a.host(), &path("archive"), Some(&a.token), None)
        .await
        .ok("archive");
    assert!(
        alarms_of(&h, &a, "").await.is_empty(),
        "archived alarms leave the default list"
    );

    let counts = h
        .call(
            "GET",
            a.host(),
            "/api/v1/alarms/counts",
            Some(&a.token),
            None,
        )
        .await
        .ok("counts");
    assert_eq!(counts, json!([]), "archived alarms are not counted");
    let csv = h
        .call(
            "GET",
            a.host(),
            "/api/v1/alarms/timeline?format=csv&from=0",
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(csv.status, 200);
    let lines: Vec<String> = csv.text().lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0],
        "at,alarm_id,kind,severity,title,actor,action,detail"
    );
    assert_eq!(lines.len(), 1 + 6, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.contains(",note,") && l.contains("a scanner of ours")));

    for (verb, body, code) in [
        ("assign", json!({"assignee": ""}), "invalid"),
        ("notes", json!({"text": ""}), "invalid"),
        ("notes", json!({"text": "x", "extra": 1}), "invalid_body"),
    ] {
        let r = h
            .call("POST", a.host(), &path(verb), Some(&a.token), Some(body))
            .await;
        r.expect(400, Some(code), verb);
    }
    for q in [
        "?state=open",
        "?kind=nope",
        "?severity=huge",
        "?limit=0",
        "?cursor=zz",
        "?from=yesterday",
    ] {
        let r = h
            .call(
                "GET",
                a.host(),
                &format!("/api/v1/alarms{q}"),
                Some(&a.token),
                None,
            )
            .await;
        r.expect(400, Some("invalid_query"), q);
    }
}

#[tokio::test]
async fn allow_rules_drop_candidates_and_mute_rules_keep_them_unnotified() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let (dev, host) = (a.device.id, a.host().to_string());
    let rule = |action: &str, reason: &str| json!({"action": action, "kind": "instruction_refused", "comment": reason});
    for (action, why) in [("allow", "lab box"), ("mute", "known")] {
        let r = h
            .call(
                "POST",
                &host,
                "/api/v1/alarm-rules",
                Some(&a.token),
                Some(rule(action, why)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Allow wins over mute: nothing is recorded.
    let raised = rampart_portal::alarms::raise(
        &h.portal,
        a.tenant.id,
        vec![rampart_alarms::source::instruction_refused(
            dev, 9, "replayed", 2_000,
        )],
    )
    .await
    .unwrap();
    assert!(raised.is_empty(), "{raised:?}");
    let rules = h
        .call("GET", &host, "/api/v1/alarm-rules", Some(&a.token), None)
        .await
        .ok("rules");
    let allow = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "allow")
        .unwrap();
    let r = h
        .call(
            "DELETE",
            &host,
            &format!("/api/v1/alarm-rules/{}", allow["id"].as_str().unwrap()),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    // Muted: recorded, and its history says so (the notifier skips it).
    let raised = rampart_portal::alarms::raise(
        &h.portal,
        a.tenant.id,
        vec![rampart_alarms::source::instruction_refused(
            dev, 9, "replayed", 2_000,
        )],
    )
    .await
    .unwrap();
    let [rampart_store::AlarmOutcome::Created(id)] = raised[..] else {
        panic!("{raised:?}");
    };
    let d = h
        .call(
            "GET",
            &host,
            &format!("/api/v1/alarms/{id}"),
            Some(&a.token),
            None,
        )
        .await
        .ok("show");
    assert_eq!(d["history"][0]["detail"]["muted"], true);

    for (body, what) in [
        (json!({"action": "mute"}), "a rule with no criteria"),
        (
            json!({"action": "ignore", "kind": "port_scan"}),
            "an unknown action",
        ),
        (json!({"action": "mute", "kind": "nope"}), "an unknown kind"),
        (
            json!({"action": "mute", "network": "10.0.0.0/33"}),
            "a bad network",
        ),
        (json!({"action": "mute", "host": "not-an-ip"}), "a bad host"),
    ] {
        let r = h
            .call(
                "POST",
                &host,
                "/api/v1/alarm-rules",
                Some(&a.token),
                Some(body),
            )
            .await;
        r.expect(400, Some("invalid"), what);
    }
}

#[tokio::test]
async fn a_port_scan_in_uploaded_flows_raises_one_port_scan_alarm() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    // One outside source probing 40 ports of one internal host with single
    // SYN packets, then a benign conversation.
    let t0 = 1_800_000_000_000u64;
    let flow = |src: &str,
                dst: &str,
                dport: u16,
                start: u64,
                dur: u64,
                bytes: u64,
                packets: u64,
                flags: u8| {
        rampart_flow::FlowRecord {
            start_ms: start,
            end_ms: start + dur,
            bytes,
            packets,
            src_addr: src.parse().unwrap(),
            dst_addr: dst.parse().unwrap(),
            exporter: "192.0.2.1".parse().unwrap(),
            in_if: 0,
            out_if: 0,
            sampling_rate: 1,
            domain_id: 0,
            src_port: 40_000,
            dst_port: dport,
            protocol: 6,
            tcp_flags: flags,
            direction: rampart_flow::Direction::Unknown,
            resample: 1,
            flags: 0,
            app: rampart_flow::AppLabel::default(),
        }
    };
    let mut flows: Vec<rampart_flow::FlowRecord> = (0..40u16)
        .map(|i| {
            flow(
                "203.0.113.66",
                "10.1.2.3",
                1000 + i,
                t0 + u64::from(i) * 100,
                0,
                60,
                1,
                0x02,
            )
        })
        .collect();
    flows.push(flow(
        "10.1.2.4",
        "198.51.100.10",
        443,
        t0,
        5_000,
        50_000,
        60,
        0x1b,
    ));
    let mut plain = Vec::new();
    rampart_flow::codec::encode(&flows, &mut plain);
    let frame = seal_kind(
        "flows",
        Uuid::new_v4(),
        &plain,
        &a.device.upload_key,
        a.device.tenant,
        a.device.id,
    );
    h.upload(&a.device, frame).await.ok("upload flows");
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let scans = alarms_of(&h, &a, "?kind=port_scan").await;
    assert_eq!(scans.len(), 1, "{scans:?}");
    assert_eq!(scans[0]["src"], "203.0.113.66");
    assert_eq!(scans[0]["dst"], "10.1.2.3");
    let others: Vec<Value> = alarms_of(&h, &a, "")
        .await
        .into_iter()
        .filter(|x| x["kind"] != "port_scan" && x["kind"] != "instruction_refused")
        .collect();
    assert!(others.is_empty(), "the benign flow raised {others:?}");
    assert!(
        h.portal
            .store
            .detector_state(a.tenant.id)
            .await
            .unwrap()
            .is_some(),
        "state saved with the alarms"
    );
}

#[tokio::test]
async fn noisy_kinds_are_mailed_as_one_digest_and_others_at_once() {
    let (smtp, mails) = common::smtp_sink().await;
    let h = Harness::with_config(Config {
        smtp_url: Some(format!("smtp://{smtp}")),
        smtp_from: "rampart@portal.example".into(),
        ..Config::default()
    })
    .await;
    let a = h.tenant("acme").await;
    // The fixture's alarm was created before the route: the notifier's
    // cursor starts past it.
    rampart_portal::notify::notify(&h.portal).await.unwrap();
    let route = json!({
        "recipients": ["soc@acme.example", "oncall@acme.example"],
        "min_severity": "low",
        "digest_kinds": ["instruction_refused"],
        "digest_secs": 60,
    });
    let r = h
        .call(
            "PUT",
            a.host(),
            "/api/v1/alarm-email",
            Some(&a.token),
            Some(route),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let now = now();
    let refused: Vec<_> = ["replayed", "expired", "bad_signature"]
        .iter()
        .map(|why| rampart_alarms::source::instruction_refused(a.device.id, 3, why, now * 1000))
        .collect();
    rampart_portal::alarms::raise(&h.portal, a.tenant.id, refused)
        .await
        .unwrap();
    let offline = rampart_alarms::source::agent_offline(a.device.id, "edge-1", 0, now * 1000);
    rampart_portal::alarms::raise(&h.portal, a.tenant.id, vec![offline])
        .await
        .unwrap();

    rampart_portal::notify::notify(&h.portal).await.unwrap();
    rampart_portal::notify::deliver(&h.portal).await.unwrap();
    {
        let got = mails.lock().unwrap();
        assert_eq!(
            got.len(),
            1,
            "only the agent_offline alarm is mailed at once: {got:?}"
        );
        assert_eq!(got[0].rcpt, ["soc@acme.example", "oncall@acme.example"]);
        assert!(
            got[0].data.contains("agent edge-1 offline"),
            "{}",
            got[0].data
        );
        assert!(
            got[0].data.contains("From: rampart@portal.example"),
            "{}",
            got[0].data
        );
    }
    // The period passes: one digest with the three.
    assert_eq!(
        rampart_portal::notify::digest(&h.portal, now + 120)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rampart_portal::notify::digest(&h.portal, now + 125)
            .await
            .unwrap(),
        0,
        "once per period"
    );
    rampart_portal::notify::deliver(&h.portal).await.unwrap();
    let got = mails.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[1].data.contains("digest: 3 alarm(s)"),
        "{}",
        got[1].data
    );
    for why in ["replayed", "expired", "bad_signature"] {
        assert!(
            got[1].data.contains(why),
            "{why} missing from the digest: {}",
            got[1].data
        );
    }
    let delivered = h
        .call(
            "GET",
            a.host(),
            "/api/v1/alarm-deliveries?status=delivered",
            Some(&a.token),
            None,
        )
        .await
        .ok("deliveries");
    assert!(delivered
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["channel"] == "email"));
    assert_eq!(delivered.as_array().unwrap().len(), 2);

    for (body, what) in [
        (json!({"recipients": ["not an address"]}), "a bad recipient"),
        (
            json!({"recipients": [], "digest_kinds": ["nope"]}),
            "an unknown kind",
        ),
        (
            json!({"recipients": [], "digest_secs": 5}),
            "a too short period",
        ),
    ] {
        let r = h
            .call(
                "PUT",
                a.host(),
                "/api/v1/alarm-email",
                Some(&a.token),
                Some(body),
            )
            .await;
        r.expect(400, Some("invalid"), what);
    }
}

#[tokio::test]
async fn an_ids_anomaly_becomes_an_anomaly_alarm() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    // The applayer example of Suricata's user guide ("Eve JSON Format",
    // event type anomaly), as the agent reads and ships it.
    let line = r#"{"timestamp":"2016-01-11T05:10:54.612110-0800","flow_id":412547343494194,"pcap_cnt":1391293,"event_type":"anomaly","src_ip":"192.168.122.149","src_port":49324,"dest_ip":"69.195.71.174","dest_port":443,"proto":"TCP","app_proto":"tls","anomaly":{"type":"applayer","event":"APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION","layer":"proto_detect"}}"#;
    let anomaly = match rampart_flow::eve::parse_line(line.as_bytes(), "0.0.0.0".parse().unwrap()) {
        Ok(rampart_flow::eve::EveEvent::Anomaly(x)) => rampart_agent::tail::ids_anomaly(&x),
        other => panic!("not an anomaly: {other:?}"),
    };
    let plain = rampart_proto::alerts::encode(&[anomaly, telegraf_alert()]);
    let frame = seal_kind(
        "ids_alerts",
        Uuid::new_v4(),
        &plain,
        &a.device.upload_key,
        a.device.tenant,
        a.device.id,
    );
    h.upload(&a.device, frame).await.ok("upload");
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let got = alarms_of(&h, &a, "?kind=ids_anomaly").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["title"],
        "suricata applayer anomaly: APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION"
    );
    assert_eq!(
        (got[0]["src"].as_str(), got[0]["dst"].as_str()),
        (Some("192.168.122.149"), Some("69.195.71.174"))
    );
    assert_eq!(
        alarms_of(&h, &a, "?kind=ids_alert").await.len(),
        1,
        "the alert beside it"
    );
}

// ------------------------------------------------------------------- audit

/// Every page of an audit listing, following `next`.
async fn audit_pages(h: &Harness, host: &str, path: &str, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let v = h
            .call(
                "GET",
                host,
                &format!("{path}{sep}after={after}&limit=3"),
                Some(token),
                None,
            )
            .await
            .ok(path);
        let entries = v["entries"].as_array().unwrap().clone();
        assert!(entries.len() <= 3);
        all.extend(entries);
        match v["next"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    all
}

#[tokio::test]
async fn admin_actions_exports_and_key_operations_are_audited_per_tenant() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    let op = Some(h.operator.as_str());
    let (host, tok) = (a.host(), Some(a.token.as_str()));
    for path in ["suspend", "resume"] {
        let p = format!("/api/v1/admin/tenants/acme/{path}");
        h.call("POST", ADMIN, &p, op, None).await.ok(path);
    }
    let plan = json!({"visible_days": 7, "stored_days": 9});
    h.call(
        "PUT",
        ADMIN,
        "/api/v1/admin/tenants/acme/flow-plan",
        op,
        Some(plan),
    )
    .await
    .ok("flow plan");
    let v = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants/acme/tokens",
            op,
            Some(json!({"name": "ci"})),
        )
        .await
        .ok("tenant token");
    let ci = v["token"].as_str().unwrap().to_string();
    let v = h
        .call(
            "POST",
            host,
            "/api/v1/enrollment-tokens",
            Some(&ci),
            Some(json!({})),
        )
        .await
        .ok("enrollment token");
    let revoke = format!(
        "/api/v1/enrollment-tokens/{}/revoke",
        v["id"].as_str().unwrap()
    );
    assert_eq!(h.call("POST", host, &revoke, tok, None).await.status, 204);
    h.instruct(&a, a.device.id).await;
    h.call(
        "PUT",
        host,
        "/api/v1/data-controls",
        tok,
        Some(json!({"version": 0})),
    )
    .await
    .ok("data controls");
    let dev = format!("/api/v1/devices/{}/revoke", a.device.id);
    h.call("POST", host, &dev, tok, None)
        .await
        .ok("revoke device");
    for export in [
        "/api/v1/flows/search?format=csv",
        "/api/v1/alarms/timeline?format=csv",
    ] {
        let r = h.call("GET", host, export, tok, None).await;
        assert_eq!(r.status, 200, "{export}: {}", r.text());
    }
    // A query is not an export.
    h.call("GET", host, "/api/v1/flows/search", tok, None)
        .await
        .ok("json search");

    let mine = audit_pages(&h, host, "/api/v1/audit", &a.token).await;
    let line = |e: &Value| {
        format!(
            "{} {}",
            e["actor"].as_str().unwrap(),
            e["action"].as_str().unwrap()
        )
    };
    let lines: Vec<String> = mine.iter().map(line).collect();
    let want = [
        "cli tenant.create",
        "cli key.create",
        "cli api_token.create",
        "cli enrollment_token.create",
        &format!("device:{} device.enroll", a.device.id),
        "cli user.create",
        "cli user.create",
        "cli api_token.create",
        "cli config.group_create",
        "cli config.group",
        "cli config.save",
        "cli instruction.queue",
        "cli config.save",
        "cli config.rollout_start",
        "cli instruction.queue",
        "operator:op tenant.suspend",
        "operator:op tenant.resume",
        "operator:op flow_plan.set",
        "operator:op api_token.create",
        "tenant:ci enrollment_token.create",
        "tenant:t enrollment_token.revoke",
        "tenant:t instruction.queue",
        "tenant:t instruction.queue",
        "tenant:t data_controls.set",
        "tenant:t device.revoke",
        "tenant:t export.flows",
        "tenant:t export.alarm_timeline",
    ];
    assert_eq!(lines, want, "{mine:#?}");
    let seqs: Vec<u64> = mine.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let text = serde_json::to_string(&mine).unwrap();
    for id in [
        b.tenant.id.to_string(),
        b.device.id.to_string(),
        b.tenant.domain.clone(),
    ] {
        assert!(!text.contains(&id), "A's audit log shows B's {id}");
    }
    // Never a secret, its hash, or who else is in the chain.
    assert!(!text.contains(&ci) && !text.contains(&rampart_proto::sha256_hex(ci.as_bytes())));
    assert!(mine
        .iter()
        .all(|e| e.get("prev_hash").is_none() && e.get("tenant_id").is_none()));
    let key = &mine[1]["detail"];
    assert_eq!(key["keys"], json!(["kek", "signing", "upload", "tls"]));

    // B's listing is B's; the operator sees everything and links.
    let theirs = audit_pages(&h, b.host(), "/api/v1/audit", &b.token).await;
    // Tenant creation, its keys, tokens, device and fixture users (5 + 3),
    // and the config fixtures (7).
    assert_eq!(theirs.len(), 15, "{theirs:#?}");
    let all = audit_pages(&h, ADMIN, "/api/v1/admin/audit", &h.operator).await;
    assert_eq!(
        all.len(),
        2 + mine.len() + theirs.len(),
        "the operator token, the fixtures' MSP user, A, B"
    );
    assert_eq!(all[0]["action"], "api_token.create");
    assert!(
        all[0].get("tenant_id").is_none(),
        "the operator token is portal-wide"
    );
    assert!(all.windows(2).all(|w| w[1]["prev_hash"] == w[0]["hash"]));
    let only_b = audit_pages(&h, ADMIN, "/api/v1/admin/audit?tenant=beta", &h.operator).await;
    assert_eq!(only_b.len(), theirs.len());
    assert!(only_b
        .iter()
        .all(|e| e["tenant_id"] == b.tenant.id.to_string()));
    let v = rampart_portal::audit::verify(h.portal.store.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(v.entries, all.len() as u64);

    let v = h
        .call(
            "GET",
            host,
            "/api/v1/audit?after=18446744073709551615",
            tok,
            None,
        )
        .await
        .ok("a cursor beyond every seq");
    assert_eq!(v["entries"], json!([]));
    for bad in [
        "limit=0",
        "limit=1001",
        "after=-1",
        "after=x",
        "after=18446744073709551616",
    ] {
        let r = h
            .call("GET", host, &format!("/api/v1/audit?{bad}"), tok, None)
            .await;
        r.expect(400, None, bad);
    }
    let r = h
        .call("GET", ADMIN, "/api/v1/admin/audit?tenant=nope", op, None)
        .await;
    r.expect(404, Some("not_found"), "unknown tenant");
}

// ---------------------------------------------------------------- plans and lifecycle

/// A POST on the admin API with the operator token and no body.
async fn operator_post(h: &Harness, path: &str) -> Reply {
    h.call("POST", ADMIN, path, Some(&h.operator), None).await
}

/// Puts `fx`'s tenant on a new plan through the admin API.
async fn put_on_plan(h: &Harness, fx: &Fx, name: &str, plan: Value) {
    let op = Some(h.operator.as_str());
    h.call(
        "PUT",
        ADMIN,
        &format!("/api/v1/admin/plans/{name}"),
        op,
        Some(plan),
    )
    .await
    .ok("put plan");
    let path = format!("/api/v1/admin/tenants/{}/plan", fx.tenant.name);
    h.call("PUT", ADMIN, &path, op, Some(json!({"plan": name})))
        .await
        .ok("put tenant plan");
}

#[tokio::test]
async fn cancelled_tenants_are_refused_everywhere_until_reactivated_then_deleted_with_a_record() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let b = h.tenant("bravo").await;
    let op = Some(h.operator.as_str());
    let v = operator_post(
        &h,
        &format!("/api/v1/admin/tenants/{}/cancel", a.tenant.name),
    )
    .await
    .ok("cancel");
    assert_eq!(v["lifecycle"], "cancelled");
    assert!(v["delete_after"].is_string(), "{v}");
    operator_post(&h, &format!("/api/v1/admin/tenants/{}/cancel", a.tenant.id))
        .await
        .expect(409, Some("conflict"), "cancelling twice");

    // Every tenant, alarm and device route, and enrollment, is refused.
    let ops = operations(&doc());
    for o in ops
        .iter()
        .filter(|o| tenant_tag(&o.tag) || o.tag == "device")
    {
        h.as_owner(o, &a).await.expect(
            403,
            Some("tenant_cancelled"),
            &format!("{} {} on a cancelled tenant", o.method, o.path),
        );
    }
    h.enroll(
        a.host(),
        enroll_body(&a.enroll_secret, &SigningKey::generate()),
    )
    .await
    .expect(403, Some("tenant_cancelled"), "enrollment");
    // Another tenant is not touched.
    h.call("GET", b.host(), "/api/v1/tenant", Some(&b.token), None)
        .await
        .ok("other tenant");

    let reactivate = format!("/api/v1/admin/tenants/{}/reactivate", a.tenant.name);
    let v = operator_post(&h, &reactivate).await.ok("reactivate");
    assert_eq!(v["lifecycle"], "live");
    h.call("GET", a.host(), "/api/v1/tenant", Some(&a.token), None)
        .await
        .ok("tenant api after reactivation");
    h.signed(&a.device, "GET", a.host(), POLL_NOW, None)
        .await
        .ok("poll after reactivation");
    operator_post(&h, &reactivate).await.expect(
        409,
        Some("conflict"),
        "reactivating a live tenant",
    );

    // Cancelled again; the window passes; the lifecycle job deletes it.
    let spooled = h
        .upload(
            &a.device,
            seal(&a.device.upload_key, a.tenant.id.0, a.device.id),
        )
        .await;
    assert_eq!(spooled.status, 200, "{}", spooled.text());
    operator_post(
        &h,
        &format!("/api/v1/admin/tenants/{}/cancel", a.tenant.name),
    )
    .await
    .ok("cancel again");
    let blob_keys = h.portal.store.tenant_blob_keys(a.tenant.id).await.unwrap();
    assert_eq!(blob_keys.len(), 1);
    let later = now() + h.portal.config.tenant_delete_after_secs as i64 + 1;
    let report = rampart_portal::lifecycle::run_once(&h.portal, later)
        .await
        .unwrap();
    assert_eq!(report.tenants_deleted, 1);
    let blob = h.dir.path().join("blobs").join(&blob_keys[0]);
    assert!(!blob.exists(), "spooled frame deleted");
    assert!(
        h.portal.store.tenant_keys(a.tenant.id).await.is_err(),
        "keys destroyed"
    );
    let v = h
        .call(
            "GET",
            ADMIN,
            &format!("/api/v1/admin/tenants/{}", a.tenant.id),
            op,
            None,
        )
        .await
        .ok("deleted tenant");
    assert_eq!(v["lifecycle"], "deleted");
    h.call("GET", a.host(), "/api/v1/tenant", Some(&a.token), None)
        .await
        .expect(404, Some("unknown_domain"), "a deleted tenant's domain");
    operator_post(
        &h,
        &format!("/api/v1/admin/tenants/{}/reactivate", a.tenant.id),
    )
    .await
    .expect(409, Some("conflict"), "reactivating a deleted tenant");
    // The deletion is in the audit log, saying what went.
    let entries = audit_pages(&h, ADMIN, "/api/v1/admin/audit", &h.operator).await;
    let del = entries
        .iter()
        .find(|e| e["action"] == "tenant.delete")
        .expect("tenant.delete audited");
    assert_eq!(del["target"], format!("tenant:{}", a.tenant.id));
    assert_eq!(del["detail"]["name"], "acme");
    assert_eq!(del["detail"]["removed"]["devices"], 1);
    assert_eq!(del["detail"]["removed"]["batches"], 1);
    assert_eq!(del["detail"]["removed"]["blobs"], 1);
    assert_eq!(del["detail"]["keys"], "destroyed");
    assert_eq!(del["detail"]["vault_entry"], true);
    // The name is free again, and the other tenant still works.
    h.portal
        .create_tenant(&Actor::Cli, "acme", "acme2.example.test", None)
        .await
        .unwrap();
    h.call("GET", b.host(), "/api/v1/alarms", Some(&b.token), None)
        .await
        .ok("other tenant after the deletion");
}

#[tokio::test]
async fn a_plans_device_limit_refuses_enrollment_with_a_clear_message() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    put_on_plan(
        &h,
        &a,
        "one-box",
        json!({"visible_days": 7, "stored_days": 9, "max_devices": 1, "features": ["flows"]}),
    )
    .await;
    let v = h
        .call("GET", a.host(), "/api/v1/plan", Some(&a.token), None)
        .await
        .ok("own plan");
    assert_eq!(
        (
            v["plan"].as_str(),
            v["max_devices"].as_u64(),
            v["devices"].as_u64()
        ),
        (Some("one-box"), Some(1), Some(1))
    );
    let r = h
        .enroll(
            a.host(),
            enroll_body(&a.enroll_secret, &SigningKey::generate()),
        )
        .await;
    r.expect(
        403,
        Some("device_limit"),
        "second device on a one-device plan",
    );
    assert!(r.text().contains("allows 1 devices"), "{}", r.text());
    // An override lifts the limit for this tenant only.
    let path = format!("/api/v1/admin/tenants/{}/plan", a.tenant.name);
    let v = h
        .call(
            "PUT",
            ADMIN,
            &path,
            Some(&h.operator),
            Some(json!({"plan": "one-box", "max_devices": 2})),
        )
        .await
        .ok("override");
    assert_eq!(v["max_devices"], 2);
    assert_eq!(v["visible_days"], 7, "the rest is the plan's");
    h.enroll_ok(a.host(), &a.enroll_secret).await;
    // Bad plans are refused with the reason.
    for (body, why) in [
        (
            json!({"visible_days": 10, "stored_days": 5, "features": []}),
            "stored_days must be at least",
        ),
        (
            json!({"visible_days": 0, "stored_days": 5, "features": []}),
            "visible_days must be",
        ),
        (
            json!({"visible_days": 1, "stored_days": 5, "features": ["telepathy"]}),
            "unknown feature",
        ),
    ] {
        let r = h
            .call(
                "PUT",
                ADMIN,
                "/api/v1/admin/plans/bad",
                Some(&h.operator),
                Some(body),
            )
            .await;
        r.expect(400, Some("invalid"), why);
        assert!(r.text().contains(why), "{}", r.text());
    }
    h.call(
        "PUT",
        ADMIN,
        &path,
        Some(&h.operator),
        Some(json!({"plan": "no-such-plan"})),
    )
    .await
    .expect(404, None, "unknown plan");
    h.call(
        "DELETE",
        ADMIN,
        "/api/v1/admin/plans/one-box",
        Some(&h.operator),
        None,
    )
    .await
    .expect(409, Some("conflict"), "deleting a plan in use");
}

#[tokio::test]
async fn features_outside_the_plan_are_refused_on_their_routes_and_uploads() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    put_on_plan(
        &h,
        &a,
        "flows-only",
        json!({"visible_days": 30, "stored_days": 32, "features": ["flows"]}),
    )
    .await;
    h.call("GET", a.host(), "/api/v1/alarms", Some(&a.token), None)
        .await
        .expect(
            403,
            Some("feature_not_in_plan"),
            "alarms on a flows-only plan",
        );
    h.call("GET", a.host(), "/api/v1/webhooks", Some(&a.token), None)
        .await
        .expect(
            403,
            Some("feature_not_in_plan"),
            "webhooks on a flows-only plan",
        );
    h.call(
        "GET",
        a.host(),
        "/api/v1/flows/totals",
        Some(&a.token),
        None,
    )
    .await
    .ok("flows are in the plan");
    let plain = rampart_proto::alerts::encode(&[telegraf_alert()]);
    let frame = seal_kind(
        "ids_alerts",
        Uuid::new_v4(),
        &plain,
        &a.device.upload_key,
        a.tenant.id.0,
        a.device.id,
    );
    h.upload(&a.device, frame).await.expect(
        403,
        Some("feature_not_in_plan"),
        "an ids_alerts batch on a flows-only plan",
    );
}

#[tokio::test]
async fn retention_removes_what_is_past_the_plans_stored_days_and_says_so_in_metrics() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let b = h.tenant("bravo").await;
    put_on_plan(
        &h,
        &a,
        "week",
        json!({"visible_days": 5, "stored_days": 7, "features": ["flows", "alarms"]}),
    )
    .await;
    for fx in [&a, &b] {
        let r = h
            .upload(
                &fx.device,
                seal(&fx.device.upload_key, fx.tenant.id.0, fx.device.id),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        h.portal
            .store
            .add_device_event(
                fx.tenant.id,
                &rampart_store::DeviceEvent {
                    device_id: rampart_store::DeviceId(fx.device.id),
                    at: now(),
                    kind: "refusal".into(),
                    detail: json!({}),
                },
            )
            .await
            .unwrap();
    }
    // Six days on: inside both windows, nothing goes.
    let r = rampart_portal::lifecycle::run_once(&h.portal, now() + 6 * 86_400)
        .await
        .unwrap();
    assert_eq!((r.rows, r.spool_frames), (0, 0), "{r:?}");
    // Eight days on: past acme's 7 days, inside bravo's default 32.
    let r = rampart_portal::lifecycle::run_once(&h.portal, now() + 8 * 86_400)
        .await
        .unwrap();
    assert_eq!(r.spool_frames, 1, "{r:?}");
    // The fixture's alarm, its history, the event and the batch record.
    assert!(r.rows >= 4, "{r:?}");
    let events = h
        .portal
        .store
        .list_device_events(a.tenant.id, rampart_store::DeviceId(a.device.id))
        .await
        .unwrap();
    assert!(events.is_empty(), "acme's events are past its window");
    let alarms = h
        .call("GET", a.host(), "/api/v1/alarms", Some(&a.token), None)
        .await
        .ok("alarms");
    assert_eq!(
        alarms["alarms"].as_array().map(Vec::len),
        Some(0),
        "{alarms}"
    );
    let batches = h
        .call("GET", a.host(), "/api/v1/batches", Some(&a.token), None)
        .await
        .ok("batches");
    assert_eq!(batches.as_array().map(Vec::len), Some(0), "{batches}");
    let events = h
        .portal
        .store
        .list_device_events(b.tenant.id, rampart_store::DeviceId(b.device.id))
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "bravo keeps its event");
    let alarms = h
        .call("GET", b.host(), "/api/v1/alarms", Some(&b.token), None)
        .await
        .ok("alarms");
    assert_eq!(
        alarms["alarms"].as_array().map(Vec::len),
        Some(1),
        "{alarms}"
    );
    let metrics = h.portal.metrics.encode();
    let last = metrics
        .lines()
        .find(|l| l.starts_with("rampart_lifecycle_last_run_timestamp_seconds "))
        .expect("last-run metric");
    let at: i64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(at > now() + 7 * 86_400, "{last}");
    assert!(
        metrics.contains("rampart_lifecycle_removed_total{kind=\"spool_frames\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rampart_lifecycle_removed_total{kind=\"alarms\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tenant_of_another_region_is_refused_with_that_deployments_address() {
    let mut config = Config {
        region: "us".into(),
        ..Config::default()
    };
    config
        .regions
        .insert("eu".into(), "https://admin.eu.example.net".into());
    let h = Harness::with_config(config).await;
    let op = Some(h.operator.as_str());
    let create = |name: &str, region: Option<&str>| {
        let mut b = json!({"name": name, "domain": format!("{name}.example.test")});
        if let Some(r) = region {
            b["region"] = json!(r);
        }
        b
    };

    let r = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(create("euco", Some("eu"))),
        )
        .await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    assert_eq!(r.error_code("another region"), "wrong_region");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://admin.eu.example.net"),
        "{}",
        r.text()
    );
    let r = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(create("apco", Some("ap"))),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("unknown region ap"), "{}", r.text());
    let r = h
        .call(
            "POST",
            ADMIN,
            "/api/v1/admin/tenants",
            op,
            Some(create("bad", Some("E U"))),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // A refused tenant leaves nothing in this region's store: no tenant, no
    // keys, no audit entry.
    let store = h.portal.store.clone();
    assert!(store.tenant_by_name("euco").await.unwrap().is_none());
    assert!(store
        .tenant_by_domain("euco.example.test")
        .await
        .unwrap()
        .is_none());
    let chain = store.audit_chain(0, 1000).await.unwrap();
    assert!(chain
        .iter()
        .all(|e| !e.target.contains("euco") && !e.detail.contains("euco")));

    // This region's own, named or not, is created here and says so.
    for (name, region) in [("usco", Some("us")), ("plain", None)] {
        let v = h
            .call(
                "POST",
                ADMIN,
                "/api/v1/admin/tenants",
                op,
                Some(create(name, region)),
            )
            .await
            .ok("create a tenant of this region");
        assert_eq!(v["tenant"]["region"], "us", "{v}");
        let t = store.tenant_by_name(name).await.unwrap().unwrap();
        assert_eq!(t.region, "us");
    }
    let listed = h
        .call("GET", ADMIN, "/api/v1/admin/tenants", op, None)
        .await
        .ok("list tenants");
    let regions: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["us", "us"]);
}

// ------------------------------------------------------------ users and access

const PW: &str = "correct horse battery staple";
/// The MSP operator user every harness has.
const MSP_EMAIL: &str = "msp@msp.example";

/// A logged-in session: the cookie value and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    let (name, value) = first.split_once('=').unwrap();
    assert_eq!(name, "rampart_session");
    value.to_string()
}

impl Harness {
    async fn fixture_user(&self, tenant: &Tenant, name: &str) -> Uuid {
        rampart_portal::users::create_user(
            &self.portal,
            &Actor::Cli,
            Some(tenant.id),
            &format!("{name}@{}", tenant.domain),
            Some(rampart_portal::access::Role::ReadOnly),
            Some(PW),
        )
        .await
        .unwrap()
        .user
        .id
        .0
    }

    /// A grant of `tenant` to the MSP user [`MSP_EMAIL`] (created on first use).
    async fn fixture_grant(&self, tenant: &Tenant) -> Uuid {
        let store = &self.portal.store;
        let msp = match store.user_by_email(None, MSP_EMAIL).await.unwrap() {
            Some(u) => u,
            None => {
                rampart_portal::users::create_user(
                    &self.portal,
                    &Actor::Cli,
                    None,
                    MSP_EMAIL,
                    None,
                    Some(PW),
                )
                .await
                .unwrap()
                .user
            }
        };
        let grant = rampart_store::MspGrantRow {
            id: Uuid::new_v4(),
            tenant_id: tenant.id,
            user_id: msp.id,
            role: "read_only".into(),
            created_by: "cli".into(),
            created_at: now(),
            expires_at: None,
            revoked_at: None,
        };
        store.create_msp_grant(tenant.id, &grant).await.unwrap();
        grant.id
    }

    /// A user of `fx`'s tenant with `role` and password [`PW`].
    async fn user(&self, fx: &Fx, email: &str, role: &str) -> Uuid {
        rampart_portal::users::create_user(
            &self.portal,
            &Actor::Cli,
            Some(fx.tenant.id),
            email,
            rampart_portal::access::Role::parse(role),
            Some(PW),
        )
        .await
        .unwrap()
        .user
        .id
        .0
    }

    /// A tenant API token with `role`, minted as the CLI mints them.
    async fn token_with_role(&self, fx: &Fx, role: &str) -> String {
        self.portal
            .mint_api_token(&Actor::Cli, Some(fx.tenant.id), role, role, None)
            .await
            .unwrap()
            .secret
    }

    async fn login(&self, host: &str, body: Value) -> Reply {
        self.call("POST", host, "/api/v1/auth/login", None, Some(body))
            .await
    }

    async fn login_from(&self, host: &str, ip: [u8; 4], body: Value) -> Reply {
        let mut req = build(
            "POST",
            host,
            "/api/v1/auth/login",
            None,
            json_body(&body),
            None,
        );
        req.extensions_mut().insert(rampart_portal::tls::ConnInfo {
            sni: None,
            peer: std::net::SocketAddr::from((ip, 40_000)),
        });
        self.send(req).await
    }

    async fn login_ok(&self, host: &str, email: &str, password: &str) -> Session {
        let r = self
            .login(host, json!({"email": email, "password": password}))
            .await;
        let v = r.ok(&format!("login of {email}"));
        Session {
            cookie: cookie_value(r.set_cookie.as_deref().expect("login sets a cookie")),
            csrf: v["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    /// A request with the session cookie and, when given, a CSRF header.
    async fn with_cookie(
        &self,
        method: &str,
        host: &str,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Payload,
    ) -> Reply {
        let mut req = build(method, host, path, None, body, None);
        let h = req.headers_mut();
        h.insert(
            "cookie",
            format!("theme=dark; rampart_session={cookie}")
                .parse()
                .unwrap(),
        );
        if let Some(c) = csrf {
            h.insert("x-csrf-token", c.parse().unwrap());
        }
        self.send(req).await
    }

    async fn session_call(
        &self,
        method: &str,
        host: &str,
        path: &str,
        s: &Session,
        body: Option<Value>,
    ) -> Reply {
        self.with_cookie(
            method,
            host,
            path,
            &s.cookie,
            Some(&s.csrf),
            body.as_ref().and_then(json_body),
        )
        .await
    }
}

/// Whether a reply passed the auth and role checks (whatever it then said).
fn passed_auth(r: &Reply, ctx: &str) {
    assert!(
        !r.status.is_server_error(),
        "{ctx}: {} {}",
        r.status,
        r.text()
    );
    assert_ne!(r.status, 401, "{ctx}: {}", r.text());
    if r.status == 403 {
        let code = r.error_code(ctx);
        assert!(
            code != "insufficient_role" && code != "csrf_failed",
            "{ctx}: refused with {code}: {}",
            r.text()
        );
    }
}

/// For every tenant route: its least role comes from [`POLICY`]; a token
/// and a session one role below get 403 `insufficient_role`, the role
/// itself and those above pass the role check.
async fn role_walk(h: &Harness, a: &Fx, ops: &[Op]) {
    let tenant_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| tenant_tag(&o.tag) && !o.is_public())
        .collect();
    for op in &tenant_ops {
        assert!(
            POLICY
                .iter()
                .any(|(m, p, _)| *m == op.method && *p == op.path),
            "{} {} has no role in POLICY: choose its least role there and in its extractor",
            op.method,
            op.path
        );
    }
    for (m, p, r) in POLICY {
        assert!(
            tenant_ops.iter().any(|o| o.method == *m && o.path == *p),
            "POLICY names {m} {p}, which is not a tenant route of the document"
        );
        assert!(ROLES.contains(r), "POLICY role {r} of {m} {p}");
    }
    let mut tokens = Vec::new();
    let mut sessions = Vec::new();
    for r in ROLES {
        tokens.push(h.token_with_role(a, r).await);
        let email = format!("walk-{r}@acme.example");
        h.user(a, &email, r).await;
        sessions.push((email.clone(), h.login_ok(a.host(), &email, PW).await));
    }
    for op in &tenant_ops {
        let need = POLICY
            .iter()
            .find(|(m, p, _)| *m == op.method && *p == op.path)
            .map(|(_, _, r)| ROLES.iter().position(|x| x == r).unwrap())
            .unwrap();
        let url = op.url(|p| a.fill(op, p));
        let body = sample_body(op);
        for (i, role) in ROLES.iter().enumerate() {
            let ctx = format!("{} {url} with a {role} token", op.method);
            let r = h.op(op, a.host(), &url, Some(&tokens[i]), &body).await;
            if i < need {
                r.expect(403, Some("insufficient_role"), &ctx);
            } else if SESSION_ONLY.contains(&op.path.as_str()) {
                r.expect(403, Some("session_required"), &ctx);
            } else {
                passed_auth(&r, &ctx);
            }
            // Logging out ends the session: that route gets a fresh one.
            let fresh;
            let s = if op.path == "/api/v1/auth/logout" {
                fresh = h.login_ok(a.host(), &sessions[i].0, PW).await;
                &fresh
            } else {
                &sessions[i].1
            };
            let ctx = format!("{} {url} with a {role} session", op.method);
            let mut req = build(&op.method, a.host(), &url, None, op.body(&body), None);
            req.headers_mut().insert(
                "cookie",
                format!("rampart_session={}", s.cookie).parse().unwrap(),
            );
            req.headers_mut()
                .insert("x-csrf-token", s.csrf.parse().unwrap());
            let r = h.send(req).await;
            if i < need {
                r.expect(403, Some("insufficient_role"), &ctx);
            } else {
                passed_auth(&r, &ctx);
            }
        }
    }
    // A CSV download on a read route is an export: analysts and above.
    for path in [
        "/api/v1/flows/search?format=csv",
        "/api/v1/flows/top?dim=src&format=csv",
    ] {
        let r = h.call("GET", a.host(), path, Some(&tokens[0]), None).await;
        r.expect(403, Some("insufficient_role"), &format!("{path} read_only"));
        let r = h.call("GET", a.host(), path, Some(&tokens[1]), None).await;
        passed_auth(&r, &format!("{path} analyst"));
    }
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie_bound_to_its_tenant_domain() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    h.user(&a, "ana@acme.example", "analyst").await;
    let r = h
        .login(
            a.host(),
            json!({"email": "Ana@Acme.example", "password": PW}),
        )
        .await;
    let v = r.ok("login");
    assert_eq!(v["role"], "analyst");
    let set = r.set_cookie.clone().unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|x| x == attr), "{attr} missing: {set}");
    }
    assert!(
        !set.contains("Domain="),
        "the cookie must be host-only: {set}"
    );
    let cookie = cookie_value(&set);
    // 32 random bytes, base64url.
    assert_eq!(cookie.len(), 43);
    let s = Session {
        cookie,
        csrf: v["csrf_token"].as_str().unwrap().into(),
    };
    let me = h
        .session_call("GET", a.host(), "/api/v1/auth/me", &s, None)
        .await
        .ok("me");
    assert_eq!(
        (me["via"].as_str(), me["role"].as_str()),
        (Some("session"), Some("analyst"))
    );
    // The cookie is only the tenant's it was issued on.
    let r = h
        .session_call("GET", b.host(), "/api/v1/auth/me", &s, None)
        .await;
    r.expect(401, Some("unauthorized"), "A's cookie on B");
    // The user's email does not log in on another tenant.
    let r = h
        .login(
            b.host(),
            json!({"email": "ana@acme.example", "password": PW}),
        )
        .await;
    r.expect(401, Some("invalid_credentials"), "A's user on B");
    // Logout ends it at once.
    h.session_call("POST", a.host(), "/api/v1/auth/logout", &s, None)
        .await;
    let r = h
        .session_call("GET", a.host(), "/api/v1/auth/me", &s, None)
        .await;
    r.expect(401, Some("unauthorized"), "after logout");
    // Junk login bodies are 4xx.
    for body in [
        json!({}),
        json!({"email": "x", "password": 1}),
        json!({"email": "a@b.c", "password": "p", "extra": true}),
        json!({"email": "a".repeat(10_000), "password": PW}),
        json!({"email": "ana@acme.example", "password": "x".repeat(10_000)}),
    ] {
        let r = h.login(a.host(), body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.status);
        r.error_code("junk login");
    }
}

#[tokio::test]
async fn brute_force_locks_the_account_and_is_audited() {
    let h = Harness::with_config(Config {
        login_max_failures: 5,
        login_lockout_secs: 900,
        ..Config::default()
    })
    .await;
    let a = h.tenant("acme").await;
    let uid = h.user(&a, "ana@acme.example", "admin").await;
    let wrong = json!({"email": "ana@acme.example", "password": "not the password at all"});
    for i in 1..5 {
        let r = h.login(a.host(), wrong.clone()).await;
        r.expect(401, Some("invalid_credentials"), &format!("failure {i}"));
    }
    let r = h.login(a.host(), wrong.clone()).await;
    r.expect(429, Some("account_locked"), "fifth failure");
    assert_eq!(r.retry_after.as_deref(), Some("900"));
    // Locked: even the right password is refused, without being checked.
    let r = h
        .login(
            a.host(),
            json!({"email": "ana@acme.example", "password": PW}),
        )
        .await;
    r.expect(429, Some("account_locked"), "right password while locked");
    let secs: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!((1..=900).contains(&secs));
    let entries = h
        .portal
        .store
        .list_audit(a.tenant.id, 0, 1000)
        .await
        .unwrap();
    let target = format!("user:{uid}");
    let count = |action: &str| {
        entries
            .iter()
            .filter(|e| e.action == action && e.target == target)
            .count()
    };
    assert_eq!(count("login.failure"), 6);
    assert_eq!(count("login.lockout"), 1);
    assert_eq!(count("login.success"), 0);
}

#[tokio::test]
async fn login_attempts_are_limited_per_client_address() {
    let h = Harness::with_config(Config {
        login_ip_burst: 3,
        login_ip_per_min: 1,
        ..Config::default()
    })
    .await;
    let a = h.tenant("acme").await;
    let body = json!({"email": "nobody@acme.example", "password": PW});
    for _ in 0..3 {
        let r = h.login_from(a.host(), [192, 0, 2, 1], body.clone()).await;
        r.expect(401, Some("invalid_credentials"), "within the burst");
    }
    let r = h.login_from(a.host(), [192, 0, 2, 1], body.clone()).await;
    r.expect(429, Some("rate_limited"), "over the burst");
    assert!(r
        .retry_after
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    let r = h.login_from(a.host(), [192, 0, 2, 2], body).await;
    r.expect(401, Some("invalid_credentials"), "another address");
}

#[tokio::test]
async fn expired_revoked_and_wrong_scope_tokens_are_refused() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    // Minted through the API: scoped, shown once, listed without the secret.
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/tokens",
            Some(&a.token),
            Some(json!({"name": "ci", "role": "analyst", "ttl_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let (id, secret) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(v["role"], "analyst");
    let list = h
        .call("GET", a.host(), "/api/v1/tokens", Some(&a.token), None)
        .await
        .ok("list tokens");
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id.as_str()));
    assert!(!list.to_string().contains(&secret));
    let ack = format!("/api/v1/alarms/{}/ack", a.alarm_id);
    h.call("POST", a.host(), &ack, Some(&secret), Some(json!({})))
        .await
        .ok("analyst token acks");
    // Lower role: refused with the role named.
    let r = h
        .call("GET", a.host(), "/api/v1/webhooks", Some(&secret), None)
        .await;
    r.expect(
        403,
        Some("insufficient_role"),
        "analyst token on an admin route",
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin"));
    // Other tenant: as if it did not exist.
    let r = h
        .call("GET", b.host(), "/api/v1/alarms", Some(&secret), None)
        .await;
    r.expect(401, Some("unauthorized"), "A's token on B");
    // A token cannot be minted above its minter's role.
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/tokens",
            Some(&h.token_with_role(&a, "admin").await),
            Some(json!({"name": "up", "role": "owner"})),
        )
        .await;
    r.expect(403, Some("insufficient_role"), "admin mints an owner token");
    for bad in [
        json!({"name": "x", "role": "read_only", "ttl_secs": 0}),
        json!({"name": "x", "role": "root"}),
    ] {
        let r = h
            .call(
                "POST",
                a.host(),
                "/api/v1/tokens",
                Some(&a.token),
                Some(bad),
            )
            .await;
        r.expect(400, None, "bad token request");
    }
    // Revoked: refused at once.
    let r = h
        .call(
            "POST",
            a.host(),
            &format!("/api/v1/tokens/{id}/revoke"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = h
        .call("GET", a.host(), "/api/v1/alarms", Some(&secret), None)
        .await;
    r.expect(401, Some("unauthorized"), "revoked token");
    // B cannot revoke A's token by id.
    let other = h
        .portal
        .mint_api_token(&Actor::Cli, Some(a.tenant.id), "x", "read_only", None)
        .await
        .unwrap();
    let r = h
        .call(
            "POST",
            b.host(),
            &format!("/api/v1/tokens/{}/revoke", other.row.id),
            Some(&b.token),
            None,
        )
        .await;
    r.expect(404, Some("not_found"), "B revokes A's token");
    // Expired: refused.
    let expired = h
        .portal
        .mint_api_token(&Actor::Cli, Some(a.tenant.id), "old", "owner", Some(-1))
        .await
        .unwrap()
        .secret;
    let r = h
        .call("GET", a.host(), "/api/v1/alarms", Some(&expired), None)
        .await;
    r.expect(401, Some("unauthorized"), "expired token");
}

#[tokio::test]
async fn csrf_is_required_for_cookie_writes_and_not_for_bearer_tokens() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    h.user(&a, "ana@acme.example", "analyst").await;
    let s = h.login_ok(a.host(), "ana@acme.example", PW).await;
    let ack = format!("/api/v1/alarms/{}/ack", a.alarm_id);
    let body = || json_body(&json!({}));
    let r = h
        .with_cookie("POST", a.host(), &ack, &s.cookie, None, body())
        .await;
    r.expect(403, Some("csrf_failed"), "cookie write without csrf");
    let r = h
        .with_cookie(
            "POST",
            a.host(),
            &ack,
            &s.cookie,
            Some("wrong-token"),
            body(),
        )
        .await;
    r.expect(403, Some("csrf_failed"), "cookie write with a wrong csrf");
    // Another session's token is wrong too.
    let s2 = h.login_ok(a.host(), "ana@acme.example", PW).await;
    let r = h
        .with_cookie("POST", a.host(), &ack, &s.cookie, Some(&s2.csrf), body())
        .await;
    r.expect(
        403,
        Some("csrf_failed"),
        "cookie write with another session's csrf",
    );
    let alarm = h.get_alarm_view(&a).await;
    assert_eq!(alarm["alarm"]["state"], "active", "nothing changed yet");
    let r = h
        .with_cookie("POST", a.host(), &ack, &s.cookie, Some(&s.csrf), body())
        .await;
    assert_eq!(r.json()["state"], "acknowledged", "{}", r.text());
    // Reads need no csrf token; bearer writes need none either.
    let r = h
        .with_cookie("GET", a.host(), "/api/v1/alarms", &s.cookie, None, None)
        .await;
    r.ok("cookie read");
    let resolve = format!("/api/v1/alarms/{}/resolve", a.alarm_id);
    h.call("POST", a.host(), &resolve, Some(&a.token), Some(json!({})))
        .await
        .ok("bearer write");
}

#[tokio::test]
async fn offboarding_revokes_sessions_and_tokens_at_once() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let uid = h.user(&a, "bob@acme.example", "admin").await;
    let s = h.login_ok(a.host(), "bob@acme.example", PW).await;
    let second = h.login_ok(a.host(), "bob@acme.example", PW).await;
    // Bob mints a token with his session.
    let v = h
        .session_call(
            "POST",
            a.host(),
            "/api/v1/tokens",
            &s,
            Some(json!({"name": "bob-ci", "role": "admin"})),
        )
        .await
        .ok("bob mints");
    let bob_token = v["token"].as_str().unwrap().to_string();
    h.call("GET", a.host(), "/api/v1/devices", Some(&bob_token), None)
        .await
        .ok("bob's token works");
    let r = h
        .call(
            "POST",
            a.host(),
            &format!("/api/v1/users/{uid}/offboard"),
            Some(&a.token),
            None,
        )
        .await;
    let n = r.ok("offboard");
    assert_eq!(
        (n["sessions_revoked"].as_u64(), n["tokens_revoked"].as_u64()),
        (Some(2), Some(1))
    );
    for sess in [&s, &second] {
        let r = h
            .session_call("GET", a.host(), "/api/v1/devices", sess, None)
            .await;
        r.expect(401, Some("unauthorized"), "offboarded session");
    }
    let r = h
        .call("GET", a.host(), "/api/v1/devices", Some(&bob_token), None)
        .await;
    r.expect(401, Some("unauthorized"), "offboarded user's token");
    let r = h
        .login(
            a.host(),
            json!({"email": "bob@acme.example", "password": PW}),
        )
        .await;
    r.expect(401, Some("invalid_credentials"), "offboarded user logs in");
    // The CLI's own owner token is not the user's and keeps working.
    h.call("GET", a.host(), "/api/v1/users", Some(&a.token), None)
        .await
        .ok("owner token");
    // Admins cannot offboard owners, nor make one.
    let owner = h.user(&a, "olga@acme.example", "owner").await;
    let admin = h.token_with_role(&a, "admin").await;
    let r = h
        .call(
            "POST",
            a.host(),
            &format!("/api/v1/users/{owner}/offboard"),
            Some(&admin),
            None,
        )
        .await;
    r.expect(403, Some("insufficient_role"), "admin offboards an owner");
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/users",
            Some(&admin),
            Some(json!({"email": "new@acme.example", "role": "owner", "password": PW})),
        )
        .await;
    r.expect(403, Some("insufficient_role"), "admin creates an owner");
}

#[tokio::test]
async fn invited_users_set_their_password_once_with_the_setup_token() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let v = h
        .call(
            "POST",
            a.host(),
            "/api/v1/users",
            Some(&a.token),
            Some(json!({"email": "ivy@acme.example", "role": "read_only"})),
        )
        .await;
    assert_eq!(v.status, 201, "{}", v.text());
    let token = v.json()["setup_token"].as_str().unwrap().to_string();
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/auth/setup",
            None,
            Some(json!({"token": token, "password": "short"})),
        )
        .await;
    r.expect(400, Some("invalid"), "policy");
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/auth/setup",
            None,
            Some(json!({"token": token, "password": PW})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/auth/setup",
            None,
            Some(json!({"token": token, "password": PW})),
        )
        .await;
    r.expect(400, Some("invalid"), "setup token reused");
    let s = h.login_ok(a.host(), "ivy@acme.example", PW).await;
    let me = h
        .session_call("GET", a.host(), "/api/v1/auth/me", &s, None)
        .await
        .ok("me");
    assert_eq!(me["role"], "read_only");
}

impl Harness {
    async fn get_alarm_view(&self, fx: &Fx) -> Value {
        self.call(
            "GET",
            fx.host(),
            &format!("/api/v1/alarms/{}", fx.alarm_id),
            Some(&fx.token),
            None,
        )
        .await
        .ok("get alarm")
    }
}

fn totp_now(secret_b32: &str, offset_steps: i64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret_b32.as_bytes())
        .unwrap();
    let t = now() + offset_steps * 30;
    format!("{:06}", rampart_portal::access::totp(&secret, t, 6))
}

#[tokio::test]
async fn totp_is_required_once_on_and_recovery_codes_work_once() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let uid = h.user(&a, "tia@acme.example", "analyst").await;
    let s = h.login_ok(a.host(), "tia@acme.example", PW).await;
    let setup = h
        .session_call("POST", a.host(), "/api/v1/auth/totp", &s, None)
        .await
        .ok("totp begin");
    let secret = setup["secret"].as_str().unwrap().to_string();
    assert!(setup["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    // Stored only wrapped: the raw secret is not in the row.
    let row = h
        .portal
        .store
        .get_user(Some(a.tenant.id), rampart_store::UserId(uid))
        .await
        .unwrap()
        .unwrap();
    let raw = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let wrapped = row.totp_secret_wrapped.unwrap();
    assert!(!wrapped.windows(raw.len()).any(|w| w == raw.as_slice()));
    let r = h
        .session_call(
            "POST",
            a.host(),
            "/api/v1/auth/totp/confirm",
            &s,
            Some(json!({"code": "000000x"})),
        )
        .await;
    r.expect(400, Some("invalid"), "bad code");
    let codes = h
        .session_call(
            "POST",
            a.host(),
            "/api/v1/auth/totp/confirm",
            &s,
            Some(json!({"code": totp_now(&secret, 0)})),
        )
        .await
        .ok("totp confirm");
    let codes: Vec<String> = codes["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    let login = |extra: Value| {
        let mut body = json!({"email": "tia@acme.example", "password": PW});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let r = h.login(a.host(), login(json!({}))).await;
    r.expect(401, Some("second_factor_required"), "no code");
    let r = h
        .login(a.host(), login(json!({"totp_code": "123456x"})))
        .await;
    r.expect(401, Some("invalid_credentials"), "junk code");
    // The step used to confirm cannot be replayed; the next one works once.
    let next = totp_now(&secret, 1);
    h.login(a.host(), login(json!({"totp_code": next})))
        .await
        .ok("next step");
    let r = h.login(a.host(), login(json!({"totp_code": next}))).await;
    r.expect(401, Some("invalid_credentials"), "replayed code");
    // A recovery code works once, typed loosely.
    let loose = codes[0].to_uppercase().replace('-', " ");
    h.login(a.host(), login(json!({"recovery_code": loose})))
        .await
        .ok("recovery code");
    let r = h
        .login(a.host(), login(json!({"recovery_code": codes[0]})))
        .await;
    r.expect(401, Some("invalid_credentials"), "recovery code reused");
    h.login(a.host(), login(json!({"recovery_code": codes[1]})))
        .await
        .ok("another recovery code");
    // A token cannot set up TOTP.
    let r = h
        .call("POST", a.host(), "/api/v1/auth/totp", Some(&a.token), None)
        .await;
    r.expect(403, Some("session_required"), "token");
}

#[tokio::test]
async fn msp_operator_works_only_where_granted_and_stops_when_revoked() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    rampart_portal::users::create_user(
        &h.portal,
        &Actor::Cli,
        None,
        "mo@msp.example",
        None,
        Some(PW),
    )
    .await
    .unwrap();
    let creds = json!({"email": "mo@msp.example", "password": PW});
    h.login(a.host(), creds.clone())
        .await
        .expect(401, Some("invalid_credentials"), "no grant yet");
    // Only an owner grants.
    let admin = h.token_with_role(&a, "admin").await;
    let grant = json!({"email": "mo@msp.example", "role": "analyst"});
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/msp-grants",
            Some(&admin),
            Some(grant.clone()),
        )
        .await;
    r.expect(403, Some("insufficient_role"), "admin grants");
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/msp-grants",
            Some(&a.token),
            Some(json!({"email": "mo@msp.example", "role": "owner"})),
        )
        .await;
    r.expect(400, Some("invalid"), "owner role to an msp");
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/msp-grants",
            Some(&a.token),
            Some(grant),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gid = r.json()["id"].as_str().unwrap().to_string();
    let r = h.login(a.host(), creds.clone()).await;
    let v = r.ok("msp login on A");
    assert_eq!(
        (v["role"].as_str(), v["msp"].as_bool()),
        (Some("analyst"), Some(true))
    );
    let s = Session {
        cookie: cookie_value(&r.set_cookie.unwrap()),
        csrf: v["csrf_token"].as_str().unwrap().into(),
    };
    let ack = format!("/api/v1/alarms/{}/ack", a.alarm_id);
    let r = h
        .session_call("POST", a.host(), &ack, &s, Some(json!({})))
        .await;
    assert_eq!(r.json()["state"], "acknowledged", "{}", r.text());
    let r = h
        .session_call("GET", a.host(), "/api/v1/webhooks", &s, None)
        .await;
    r.expect(
        403,
        Some("insufficient_role"),
        "msp analyst on an admin route",
    );
    // Nothing on B, which granted nothing.
    h.login(b.host(), creds.clone())
        .await
        .expect(401, Some("invalid_credentials"), "msp on B");
    h.session_call("GET", b.host(), "/api/v1/alarms", &s, None)
        .await
        .expect(401, Some("unauthorized"), "A's msp cookie on B");
    // B cannot revoke A's grant.
    let r = h
        .call(
            "POST",
            b.host(),
            &format!("/api/v1/msp-grants/{gid}/revoke"),
            Some(&b.token),
            None,
        )
        .await;
    r.expect(404, Some("not_found"), "B revokes A's grant");
    let r = h
        .call(
            "POST",
            a.host(),
            &format!("/api/v1/msp-grants/{gid}/revoke"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    h.session_call("GET", a.host(), "/api/v1/alarms", &s, None)
        .await
        .expect(401, Some("unauthorized"), "after revocation");
    h.login(a.host(), creds).await.expect(
        401,
        Some("invalid_credentials"),
        "login after revocation",
    );
    let actions: Vec<String> = h
        .portal
        .store
        .list_audit(a.tenant.id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for want in ["msp_grant.create", "msp_grant.revoke", "login.success"] {
        assert!(
            actions.iter().any(|x| x == want),
            "{want} not audited: {actions:?}"
        );
    }
}

// ----------------------------------------------------------------- reports

/// A flow of `bytes` from `src` to `dst`:`dport` starting at `start_ms`.
fn report_flow(
    src: &str,
    dst: &str,
    dport: u16,
    start_ms: u64,
    bytes: u64,
) -> rampart_flow::FlowRecord {
    rampart_flow::FlowRecord {
        start_ms,
        end_ms: start_ms + 1_000,
        bytes,
        packets: bytes / 100 + 1,
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        exporter: "192.0.2.1".parse().unwrap(),
        in_if: 0,
        out_if: 0,
        sampling_rate: 1,
        domain_id: 0,
        src_port: 40_000,
        dst_port: dport,
        protocol: 6,
        tcp_flags: 0x1b,
        direction: rampart_flow::Direction::Unknown,
        resample: 1,
        flags: 0,
        app: rampart_flow::AppLabel::default(),
    }
}

/// The top `n` keys by bytes of `flows`, computed here from the input.
fn expected_top(
    flows: &[rampart_flow::FlowRecord],
    key: impl Fn(&rampart_flow::FlowRecord) -> String,
    n: usize,
) -> Vec<(String, u64)> {
    let mut sums: std::collections::HashMap<String, u64> = Default::default();
    for f in flows {
        *sums.entry(key(f)).or_default() += f.bytes;
    }
    let mut v: Vec<(String, u64)> = sums.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn key_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn top_pairs(rows: &Value) -> Vec<(String, u64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (key_str(&r["key"]), r["bytes"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_daily_report_of_uploaded_flows_and_alarms_agrees_with_the_query_api() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let (host, tok) = (a.host().to_string(), Some(a.token.as_str()));
    // The day before yesterday (the fixture made yesterday's report).
    let day = (now().div_euclid(86_400) - 2) * 86_400;
    let day_ms = day as u64 * 1000;
    let date = rampart_portal::routes::rfc3339(day)[..10].to_string();

    // 12 sources (so the top 10 cuts two), 6 destination ports, distinct
    // sums; plus a flow just before and one just after the day.
    let mut inside = Vec::new();
    for i in 0..12u64 {
        let src = format!("10.0.{}.{}", i / 5, i + 1);
        let port = [443, 53, 22, 80, 8080, 3389][i as usize % 6];
        inside.push(report_flow(
            &src,
            "198.51.100.7",
            port,
            day_ms + 3_600_000 * (i + 1),
            10_000 * (i + 1),
        ));
        inside.push(report_flow(
            &src,
            "198.51.100.8",
            port,
            day_ms + 3_600_000 * (i + 1) + 60_000,
            137 * (i + 1),
        ));
    }
    let mut flows = inside.clone();
    flows.push(report_flow(
        "10.9.9.9",
        "198.51.100.7",
        25,
        day_ms - 60_000,
        9_999_999,
    ));
    flows.push(report_flow(
        "10.9.9.9",
        "198.51.100.7",
        25,
        day_ms + 86_400_000 + 60_000,
        9_999_999,
    ));
    let mut plain = Vec::new();
    rampart_flow::codec::encode(&flows, &mut plain);
    let frame = seal_kind(
        "flows",
        Uuid::new_v4(),
        &plain,
        &a.device.upload_key,
        a.device.tenant,
        a.device.id,
    );
    h.upload(&a.device, frame).await.ok("upload flows");
    let done = rampart_portal::flows::drain(&h.portal).await.unwrap();
    assert_eq!(done.rows, flows.len(), "{done:?}");

    // Alarms: two kinds raised inside the day, one before it.
    let at = |hours: i64| day * 1000 + hours * 3_600_000;
    let dev = a.device.id;
    let cands = vec![
        rampart_alarms::source::instruction_refused(dev, 11, "replayed", at(2)),
        rampart_alarms::source::instruction_refused(dev, 12, "expired", at(5)),
        rampart_alarms::source::agent_offline(dev, "host-1", at(1), at(7)),
        rampart_alarms::source::instruction_refused(dev, 13, "stale", at(-3)),
    ];
    rampart_portal::alarms::raise(&h.portal, a.tenant.id, cands)
        .await
        .unwrap();
    // A heartbeat with an outbox backlog: the device health section.
    let mut hb = serde_json::to_vec(&rampart_proto::api::Heartbeat {
        agent_version: "9.8.7".into(),
        uptime_secs: 60,
        sent_at: now(),
        outbox_batches: 17,
        outbox_bytes: 123_456,
        outbox_dropped_batches: 3,
        outbox_dropped_bytes: 999,
        last_error: None,
        started_at: 0,
    })
    .unwrap();
    hb.push(b'\n');
    let frame = seal_kind(
        "health",
        Uuid::new_v4(),
        &hb,
        &a.device.upload_key,
        a.device.tenant,
        a.device.id,
    );
    h.upload(&a.device, frame).await.ok("upload a heartbeat");

    let r = h
        .call(
            "POST",
            &host,
            "/api/v1/reports/generate",
            tok,
            Some(json!({"kind": "daily", "period_start": date})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["kind"], "daily");
    assert_eq!(made["period_start"], rampart_portal::routes::rfc3339(day));
    assert_eq!(
        made["period_end"],
        rampart_portal::routes::rfc3339(day + 86_400)
    );
    let rep = &made["report"];
    let f = &rep["flows"];

    // Against the input, computed here.
    let want_talkers = expected_top(&inside, |f| f.src_addr.to_string(), 10);
    let want_ports = expected_top(&inside, |f| f.dst_port.to_string(), 10);
    assert_eq!(want_talkers.len(), 10);
    assert_eq!(want_ports.len(), 6);
    assert_eq!(top_pairs(&f["top_talkers"]), want_talkers);
    assert_eq!(top_pairs(&f["top_dst_ports"]), want_ports);
    let want_bytes: u64 = inside.iter().map(|f| f.bytes).sum();
    let want_packets: u64 = inside.iter().map(|f| f.packets).sum();
    assert_eq!(f["bytes"], want_bytes);
    assert_eq!(f["packets"], want_packets);
    assert_eq!(f["records"], inside.len() as u64);
    let al = &rep["alarms"];
    assert_eq!(al["total"], 3);
    assert_eq!(
        al["by_kind"],
        json!([{"kind": "instruction_refused", "count": 2}, {"kind": "agent_offline", "count": 1}])
    );
    let devs = rep["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0]["hostname"], "host-1");
    assert_eq!(devs[0]["id"], a.device.id.to_string());
    assert_eq!(devs[0]["agent_version"], "9.8.7");
    assert_eq!(devs[0]["outbox_batches"], 17);
    assert_eq!(devs[0]["outbox_bytes"], 123_456);
    assert_eq!(devs[0]["outbox_dropped_batches"], 3);
    assert_eq!(devs[0]["connectivity"], "online");
    let api_dev = h
        .call(
            "GET",
            &host,
            &format!("/api/v1/devices/{}", a.device.id),
            tok,
            None,
        )
        .await
        .ok("device");
    for (k, v) in [
        ("status", "status"),
        ("connectivity", "connectivity"),
        ("last_seen", "last_seen"),
    ] {
        assert_eq!(devs[0][k], api_dev[v], "{k}");
    }
    assert_eq!(
        devs[0]["outbox_batches"],
        api_dev["health"]["outbox_batches"]
    );

    // Against the query API, for the same window.
    let (from, to) = (
        made["period_start"].as_str().unwrap(),
        made["period_end"].as_str().unwrap(),
    );
    let q = |path: &str| {
        format!(
            "{path}{}from={from}&to={to}",
            if path.contains('?') { "&" } else { "?" }
        )
    };
    for (dim, field) in [("src", "top_talkers"), ("dst_port", "top_dst_ports")] {
        let api = h
            .call(
                "GET",
                &host,
                &q(&format!("/api/v1/flows/top?dim={dim}&n=10")),
                tok,
                None,
            )
            .await
            .ok("flows top");
        assert_eq!(api["entries"], f[field], "{dim}");
    }
    let totals = h
        .call("GET", &host, &q("/api/v1/flows/totals"), tok, None)
        .await
        .ok("totals");
    for k in ["bytes", "packets", "flows", "records"] {
        assert_eq!(totals[k], f[k], "{k}");
    }
    let counts = h
        .call("GET", &host, &q("/api/v1/alarms/counts"), tok, None)
        .await
        .ok("counts");
    let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    for c in counts.as_array().unwrap() {
        *by_kind
            .entry(c["kind"].as_str().unwrap().into())
            .or_default() += c["count"].as_u64().unwrap();
    }
    for k in al["by_kind"].as_array().unwrap() {
        assert_eq!(
            by_kind.remove(k["kind"].as_str().unwrap()),
            k["count"].as_u64(),
            "{k}"
        );
    }
    assert!(
        by_kind.is_empty(),
        "the API counts kinds the report left out: {by_kind:?}"
    );

    // Stored as made; listed.
    let got = h
        .call("GET", &host, &format!("/api/v1/reports/{id}"), tok, None)
        .await
        .ok("get report");
    assert_eq!(got, made);
    let list = h
        .call("GET", &host, "/api/v1/reports?kind=daily", tok, None)
        .await
        .ok("list");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );

    // HTML: the numbers, the charts, nothing external.
    let r = h
        .call(
            "GET",
            &host,
            &format!("/api/v1/reports/{id}/html"),
            tok,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.content_type
    );
    let page = r.text();
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "talkers, ports and alarms charts"
    );
    assert!(
        page.contains(&format!(">{}<", want_talkers[0].0)),
        "top talker missing"
    );
    assert!(
        page.contains(&format!(">{}<", want_talkers[0].1)),
        "its bytes missing"
    );
    assert!(
        page.contains(&format!(">{want_bytes}<")),
        "total bytes missing"
    );
    assert!(page.contains(">instruction_refused<") && page.contains(">agent_offline<"));
    assert!(
        page.contains("<td class=\"n\">123456</td>"),
        "outbox bytes missing"
    );
    assert_eq!(
        page.matches("http://").count(),
        3,
        "only the svg namespaces"
    );
    assert!(!page.contains("<script") && !page.contains("src="));

    // PDF: valid, and its text extracts with the top talker and totals.
    let r = h
        .call(
            "GET",
            &host,
            &format!("/api/v1/reports/{id}/pdf"),
            tok,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/pdf"));
    assert!(r.body.starts_with(b"%PDF-"), "not a pdf");
    let file = h.dir.path().join("report.pdf");
    std::fs::write(&file, &r.body).unwrap();
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext runs (poppler-utils, installed by scripts/test)");
    assert!(
        out.status.success(),
        "pdftotext: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&want_talkers[0].0), "{text}");
    assert!(
        text.contains(&format!("{} bytes", want_talkers[0].1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("Total bytes: {want_bytes}")),
        "{text}"
    );
    assert!(text.contains("Alarms raised: 3"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("host-1"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells.len(),
        6,
        "hostname, status, connectivity, last seen, outbox, dropped: {row}"
    );
    assert_eq!(
        (cells[4], cells[5]),
        ("17", "3"),
        "the outbox backlog: {row}"
    );

    // One report per period.
    h.call(
        "POST",
        &host,
        "/api/v1/reports/generate",
        tok,
        Some(json!({"kind": "daily", "period_start": date})),
    )
    .await
    .expect(409, Some("conflict"), "a second report of the period");
}

#[tokio::test]
async fn the_report_job_makes_each_period_once_and_mails_it() {
    let (smtp, mails) = common::smtp_sink().await;
    let h = Harness::with_config(Config {
        smtp_url: Some(format!("smtp://{smtp}")),
        smtp_from: "rampart@portal.example".into(),
        ..Config::default()
    })
    .await;
    let (a, b, c) = (
        h.tenant("acme").await,
        h.tenant("beta").await,
        h.tenant("gamma").await,
    );
    h.call(
        "PUT",
        a.host(),
        "/api/v1/reports/settings",
        Some(&a.token),
        Some(json!({"recipients": ["soc@acme.example"]})),
    )
    .await
    .ok("a's recipients");
    h.call(
        "PUT",
        c.host(),
        "/api/v1/reports/settings",
        Some(&c.token),
        Some(json!({"enabled": false})),
    )
    .await
    .ok("c turns reports off");
    // An hour into the next Monday: the job's day is the Sunday before, its
    // week the one ending that Monday; both end after the tenants were made.
    let today = now().div_euclid(86_400);
    let monday = (today + 7 - (today + 3).rem_euclid(7)) * 86_400;
    let at = monday + 3_600;
    let pass = rampart_portal::reports::run_once(&h.portal, at)
        .await
        .unwrap();
    assert_eq!(
        pass,
        rampart_portal::reports::Pass {
            generated: 4,
            emailed: 2
        }
    );
    let want = [("daily", monday - 86_400), ("weekly", monday - 7 * 86_400)];
    for (fx, mailed) in [(&a, true), (&b, false)] {
        let list = h
            .call("GET", fx.host(), "/api/v1/reports", Some(&fx.token), None)
            .await
            .ok("list");
        for (kind, start) in want {
            let made: Vec<&Value> = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| {
                    x["kind"] == kind && x["period_start"] == rampart_portal::routes::rfc3339(start)
                })
                .collect();
            assert_eq!(made.len(), 1, "{} {kind}: {list}", fx.tenant.name);
            assert_eq!(made[0]["emailed_at"].is_string(), mailed, "{}", made[0]);
        }
    }
    let list = h
        .call("GET", c.host(), "/api/v1/reports", Some(&c.token), None)
        .await
        .ok("c's list");
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the fixture's report: {list}"
    );

    // Later passes make and mail nothing more.
    for later in [at, at + 600] {
        let pass = rampart_portal::reports::run_once(&h.portal, later)
            .await
            .unwrap();
        assert_eq!(pass, rampart_portal::reports::Pass::default(), "at {later}");
    }
    let got = mails.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let metrics = h.portal.metrics.encode();
    // The fixture made one report per tenant, the job four.
    assert!(
        metrics.contains("rampart_reports_generated_total 7\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rampart_report_mail_failures_total 0\n"),
        "{metrics}"
    );
    for (kind, start) in want {
        let date = &rampart_portal::routes::rfc3339(start)[..10];
        let m = got
            .iter()
            .find(|m| {
                m.data
                    .contains(&format!("Subject: Rampart {kind} report for acme: {date}"))
            })
            .unwrap_or_else(|| panic!("no {kind} mail: {got:?}"));
        assert_eq!(m.rcpt, ["soc@acme.example"]);
        assert!(
            m.data.contains("From: rampart@portal.example"),
            "{}",
            m.data
        );
        assert!(
            m.data.contains("Content-Type: application/pdf"),
            "{}",
            m.data
        );
        assert!(
            m.data.contains(&format!("rampart-acme-{kind}-{date}.pdf")),
            "{}",
            m.data
        );
        assert!(m.data.contains("Content-Type: text/html"), "{}", m.data);
        assert!(m.data.contains("Devices: 1 (0 online)"), "{}", m.data);
    }
}

#[tokio::test]
async fn bad_report_input_is_refused_with_a_message() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    let (host, tok) = (a.host(), Some(a.token.as_str()));
    let tomorrow = rampart_portal::routes::rfc3339(now() + 86_400)[..10].to_string();
    let tuesday = "2026-12-01";
    let generate = [
        (json!({"kind": "hourly"}), "kind must be daily or weekly"),
        (
            json!({"kind": "daily", "period_start": "yesterday"}),
            "period_start must be a date",
        ),
        (
            json!({"kind": "daily", "period_start": "2026-02-30"}),
            "period_start must be a date",
        ),
        (
            json!({"kind": "weekly", "period_start": tuesday}),
            "choose a monday",
        ),
        (
            json!({"kind": "daily", "period_start": tomorrow}),
            "has not ended yet",
        ),
        (
            json!({"kind": "daily", "period_start": "1999-12-31"}),
            "2000-01-01 or later",
        ),
        (json!({"kind": "daily", "extra": 1}), "unknown field"),
        (json!({"period_start": "2026-11-30"}), "kind"),
    ];
    for (body, says) in generate {
        let r = h
            .call(
                "POST",
                host,
                "/api/v1/reports/generate",
                tok,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let many: Vec<String> = (0..21).map(|i| format!("soc{i}@acme.example")).collect();
    let settings = [
        (json!({"recipients": many}), "at most 20 recipients"),
        (
            json!({"recipients": ["not-an-address"]}),
            "not an email address",
        ),
        (
            json!({"recipients": [format!("{}@x.example", "a".repeat(260))]}),
            "longer than 254",
        ),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"emails": []}), "unknown field"),
    ];
    for (body, says) in settings {
        let r = h
            .call(
                "PUT",
                host,
                "/api/v1/reports/settings",
                tok,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let s = h
        .call("GET", host, "/api/v1/reports/settings", tok, None)
        .await
        .ok("settings");
    assert_eq!(
        s,
        json!({"enabled": true, "recipients": []}),
        "nothing was stored"
    );
    for (path, status) in [
        ("/api/v1/reports?limit=0", 400),
        ("/api/v1/reports?limit=1001", 400),
        ("/api/v1/reports?kind=monthly", 400),
        ("/api/v1/reports/not-a-uuid", 400),
        ("/api/v1/alarms/counts?from=2026-11-30T00:00:00Z", 400),
        (
            "/api/v1/alarms/counts?from=2026-11-30T00:00:00Z&to=2026-11-29T00:00:00Z",
            400,
        ),
    ] {
        let r = h.call("GET", host, path, tok, None).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    for suffix in ["", "/html", "/pdf"] {
        let path = format!("/api/v1/reports/{}{suffix}", Uuid::new_v4());
        h.call("GET", host, &path, tok, None)
            .await
            .expect(404, Some("not_found"), &path);
    }
}

// ---------------------------------------------------------------- target lists

impl Harness {
    /// PUT of a target list with an optional `If-Match`.
    async fn put_list(&self, fx: &Fx, name: &str, body: Value, if_match: Option<&str>) -> Reply {
        let mut req = build(
            "PUT",
            fx.host(),
            &format!("/api/v1/target-lists/{name}"),
            Some(&fx.token),
            json_body(&body),
            None,
        );
        if let Some(v) = if_match {
            req.headers_mut()
                .insert("if-match", axum::http::HeaderValue::from_str(v).unwrap());
        }
        self.send(req).await
    }
}

#[tokio::test]
async fn target_lists_are_normalized_versioned_and_never_overwritten_when_stale() {
    let h = Harness::new().await;
    let (a, b) = (h.tenant("acme").await, h.tenant("beta").await);
    let r = h
        .put_list(
            &a,
            "bad-hosts",
            json!({"description": "seen in incidents",
                   "entries": ["Evil.Example.", "192.0.2.7/32", "::ffff:198.51.100.1", "203.0.113.0/24", "evil.example"]}),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let etag = |r: &Reply| r.json()["version"].as_u64().unwrap();
    assert_eq!(etag(&r), 1);
    let got = h
        .call(
            "GET",
            a.host(),
            "/api/v1/target-lists/bad-hosts",
            Some(&a.token),
            None,
        )
        .await
        .ok("get list");
    assert_eq!(
        got["entries"],
        json!([
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.0/24",
            "evil.example"
        ])
    );
    assert_eq!(
        (got["entry_count"].as_u64(), got["source"].as_str()),
        (Some(4), Some("manual"))
    );
    // No precondition on an existing list, or a stale one: 409, unchanged.
    let replace = json!({"entries": ["192.0.2.99"]});
    h.put_list(&a, "bad-hosts", replace.clone(), None)
        .await
        .expect(409, Some("conflict"), "no precondition");
    let mut stale = replace.clone();
    stale["expected_version"] = json!(7);
    let r = h.put_list(&a, "bad-hosts", stale, None).await;
    r.expect(409, Some("conflict"), "stale version");
    assert!(r.text().contains("version 1"), "{}", r.text());
    // If-Match carries the version too; then the stale one is refused.
    let r = h
        .put_list(&a, "bad-hosts", replace.clone(), Some("\"1\""))
        .await;
    assert_eq!((r.status.as_u16(), etag(&r)), (200, 2), "{}", r.text());
    h.put_list(&a, "bad-hosts", replace.clone(), Some("\"1\""))
        .await
        .expect(409, Some("conflict"), "if-match stale");
    let mut huge = replace.clone();
    huge["expected_version"] = json!(u64::MAX);
    h.put_list(&a, "bad-hosts", huge, None).await.expect(
        409,
        Some("conflict"),
        "a version no list has",
    );
    let mut both = replace.clone();
    both["expected_version"] = json!(2);
    h.put_list(&a, "bad-hosts", both, Some("3")).await.expect(
        400,
        Some("invalid"),
        "body and header disagree",
    );
    // Bad input: the entry is named by its index; names and sources are checked.
    let r = h
        .put_list(
            &a,
            "other",
            json!({"entries": ["192.0.2.1", "10.0.0.1/8"]}),
            None,
        )
        .await;
    r.expect(400, Some("invalid"), "host bits");
    assert!(r.text().contains("entries[1]"), "{}", r.text());
    h.put_list(&a, "Bad%20Name", json!({}), None)
        .await
        .expect(400, Some("invalid"), "bad name");
    let r = h
        .put_list(
            &a,
            "other",
            json!({"source": "url:https://evil.example/list"}),
            None,
        )
        .await;
    r.expect(400, Some("invalid"), "a free url");
    assert!(r.text().contains("no import sources"), "{}", r.text());
    h.call(
        "POST",
        a.host(),
        "/api/v1/target-lists/bad-hosts/import",
        Some(&a.token),
        None,
    )
    .await
    .expect(409, Some("conflict"), "import of a manual list");
    // Listings leave the entries out; tenants see only their own lists.
    let all = h
        .call(
            "GET",
            a.host(),
            "/api/v1/target-lists",
            Some(&a.token),
            None,
        )
        .await
        .ok("list lists");
    // The fixture's three lists and this one.
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert!(all[0].get("entries").is_none(), "{all}");
    h.call(
        "GET",
        b.host(),
        "/api/v1/target-lists/bad-hosts",
        Some(&b.token),
        None,
    )
    .await
    .expect(404, None, "other tenant");
    // What the config rollout gets, and its refusal of an unknown list.
    let names: std::collections::BTreeSet<&str> = ["bad-hosts"].into();
    let lists = rampart_portal::targets::resolve(&h.portal, a.tenant.id, &names)
        .await
        .unwrap();
    assert_eq!(lists["bad-hosts"], vec!["192.0.2.99".to_string()]);
    let names: std::collections::BTreeSet<&str> = ["nope"].into();
    let e = rampart_portal::targets::resolve(&h.portal, a.tenant.id, &names)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("target list nope does not exist"),
        "{e}"
    );
    // The detectors may name only existing lists, and a list they name
    // cannot be deleted.
    h.call(
        "PUT",
        a.host(),
        "/api/v1/alarm-settings",
        Some(&a.token),
        Some(json!({"blocked_lists": ["nope"]})),
    )
    .await
    .expect(400, Some("invalid"), "unknown list in settings");
    h.call(
        "PUT",
        a.host(),
        "/api/v1/alarm-settings",
        Some(&a.token),
        Some(json!({"blocked_lists": ["bad-hosts"]})),
    )
    .await
    .ok("settings naming the list");
    let r = h
        .call(
            "DELETE",
            a.host(),
            "/api/v1/target-lists/bad-hosts",
            Some(&a.token),
            None,
        )
        .await;
    r.expect(409, Some("conflict"), "list in use");
    assert!(r.text().contains("blocked_lists"), "{}", r.text());
    h.call(
        "PUT",
        a.host(),
        "/api/v1/alarm-settings",
        Some(&a.token),
        Some(json!({})),
    )
    .await
    .ok("settings without it");
    let r = h
        .call(
            "DELETE",
            a.host(),
            "/api/v1/target-lists/bad-hosts",
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    h.call(
        "DELETE",
        a.host(),
        "/api/v1/target-lists/bad-hosts",
        Some(&a.token),
        None,
    )
    .await
    .expect(404, None, "deleted twice");
}

/// A loopback HTTPS server with `chain_pem`/`key_der` answering every
/// GET with the current `body` for `/list.txt` and 404 otherwise; counts
/// requests.
async fn list_server(
    chain_pem: &str,
    key_der: Vec<u8>,
    body: Arc<std::sync::Mutex<String>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, body, hits) = (acceptor.clone(), body.clone(), hits.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = req.starts_with(b"GET /list.txt ");
                let text = if ok {
                    body.lock().unwrap().clone()
                } else {
                    String::new()
                };
                let head = if ok { "200 OK" } else { "404 Not Found" };
                let resp = format!(
                    "HTTP/1.1 {head}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn lists_import_only_from_operator_sources_over_verified_tls() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    let body = Arc::new(std::sync::Mutex::new(String::from(
        "; Spamhaus DROP List\n192.0.2.0/24 ; SBL1\n198.51.100.0/24 ; SBL2\nnot-an-entry!\n",
    )));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The trusted server's certificate comes from a CA written to the
    // bundle below; the untrusted one is self-signed.
    let ca_portal = Harness::new().await;
    let leaf = ca_portal.portal.ca.issue(&["127.0.0.1"]).unwrap();
    std::fs::write(&ca_file, ca_portal.portal.ca.cert_pem()).unwrap();
    let good = list_server(
        &leaf.chain_pem,
        leaf.key_der.to_vec(),
        body.clone(),
        hits.clone(),
    )
    .await;
    let rogue = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let rogue_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bad = list_server(
        &rogue.cert.pem(),
        rogue.key_pair.serialize_der(),
        body.clone(),
        rogue_hits.clone(),
    )
    .await;
    let source = |name: &str, addr: std::net::SocketAddr, path: &str| {
        rampart_portal::targets::TargetListSource {
            name: name.into(),
            url: format!("https://127.0.0.1:{}/{path}", addr.port()),
            refresh_secs: 3600,
        }
    };
    let h = Harness::with_config(Config {
        target_list_ca_file: Some(ca_file.clone()),
        target_list_sources: vec![
            source("drop", good, "list.txt"),
            source("gone", good, "missing.txt"),
            source("rogue", bad, "list.txt"),
        ],
        ..Config::default()
    })
    .await;
    let a = h.tenant("acme").await;
    let sources = h
        .call(
            "GET",
            a.host(),
            "/api/v1/target-list-sources",
            Some(&a.token),
            None,
        )
        .await
        .ok("sources");
    assert_eq!(sources.as_array().unwrap().len(), 3);
    assert!(
        !sources.to_string().contains("127.0.0.1"),
        "urls stay with the operator: {sources}"
    );
    // A list bound to a source takes no entries of its own.
    h.put_list(
        &a,
        "drop",
        json!({"source": "url:drop", "entries": ["192.0.2.1"]}),
        None,
    )
    .await
    .expect(400, Some("invalid"), "entries with a source");
    let r = h
        .put_list(&a, "drop", json!({"source": "url:drop"}), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["entry_count"], 0);
    let r = h
        .call(
            "POST",
            a.host(),
            "/api/v1/target-lists/drop/import",
            Some(&a.token),
            None,
        )
        .await;
    let v = r.ok("import now");
    assert_eq!(v["entries"], json!(["192.0.2.0/24", "198.51.100.0/24"]));
    assert_eq!(v["version"], 2);
    assert_eq!(
        (
            v["last_import"]["accepted"].as_u64(),
            v["last_import"]["skipped"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(v["last_import"].get("error").is_none(), "{v}");
    // Just imported: the job has nothing due.
    assert_eq!(
        rampart_portal::targets::refresh_due(&h.portal)
            .await
            .unwrap(),
        0
    );
    // The source changes; a new list bound to it is due at once, and the
    // job updates it from one fetch.
    *body.lock().unwrap() = "0.0.0.0 ads.example.com\n203.0.113.0/24\n".into();
    h.put_list(&a, "drop-2", json!({"source": "url:drop"}), None)
        .await
        .ok("second list");
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        rampart_portal::targets::refresh_due(&h.portal)
            .await
            .unwrap(),
        1
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before + 1);
    let l2 = h
        .call(
            "GET",
            a.host(),
            "/api/v1/target-lists/drop-2",
            Some(&a.token),
            None,
        )
        .await
        .ok("get drop-2");
    assert_eq!(l2["entries"], json!(["203.0.113.0/24", "ads.example.com"]));
    // A failing source keeps the entries and says why; so does a server
    // whose certificate the bundle does not vouch for.
    h.put_list(&a, "gone", json!({"source": "url:gone"}), None)
        .await
        .ok("gone");
    let v = h
        .call(
            "POST",
            a.host(),
            "/api/v1/target-lists/gone/import",
            Some(&a.token),
            None,
        )
        .await
        .ok("import gone");
    assert!(
        v["last_import"]["error"].as_str().unwrap().contains("404"),
        "{v}"
    );
    assert_eq!(v["version"], 1);
    h.put_list(&a, "rogue", json!({"source": "url:rogue"}), None)
        .await
        .ok("rogue");
    let v = h
        .call(
            "POST",
            a.host(),
            "/api/v1/target-lists/rogue/import",
            Some(&a.token),
            None,
        )
        .await
        .ok("import rogue");
    let err = v["last_import"]["error"].as_str().unwrap();
    assert!(err.contains("fetching source rogue failed"), "{v}");
    assert!(!err.contains("127.0.0.1"), "the url is not shown: {err}");
    assert_eq!(v["entry_count"], 0);
    assert_eq!(
        rogue_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request passed the handshake"
    );
    // Moving a list back to manual takes entries again.
    h.put_list(
        &a,
        "drop",
        json!({"entries": ["192.0.2.1"], "expected_version": 2}),
        None,
    )
    .await
    .ok("back to manual");
}

/// A flow to an address in a list named by `blocked_lists` raises the
/// blocked alarm; after the list changes, detection follows it.
#[tokio::test]
async fn flows_to_addresses_of_a_blocked_list_alarm_and_follow_list_changes() {
    let h = Harness::new().await;
    let a = h.tenant("acme").await;
    h.put_list(&a, "bad", json!({"entries": ["203.0.113.0/24"]}), None)
        .await
        .ok("list");
    h.call(
        "PUT",
        a.host(),
        "/api/v1/alarm-settings",
        Some(&a.token),
        Some(json!({"blocked_lists": ["bad"]})),
    )
    .await
    .ok("settings");
    let t0 = 1_800_000_000_000u64;
    let flow = |src: &str, dst: &str, start: u64| rampart_flow::FlowRecord {
        start_ms: start,
        end_ms: start + 1_000,
        bytes: 5_000,
        packets: 10,
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
    };
    let upload = |flows: Vec<rampart_flow::FlowRecord>| {
        let mut plain = Vec::new();
        rampart_flow::codec::encode(&flows, &mut plain);
        seal_kind(
            "flows",
            Uuid::new_v4(),
            &plain,
            &a.device.upload_key,
            a.device.tenant,
            a.device.id,
        )
    };
    h.upload(
        &a.device,
        upload(vec![
            flow("10.1.2.3", "203.0.113.9", t0),
            flow("10.1.2.4", "198.51.100.7", t0),
        ]),
    )
    .await
    .ok("upload");
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let blocked = alarms_of(&h, &a, "?kind=blocked_traffic").await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (blocked[0]["src"].as_str(), blocked[0]["dst"].as_str()),
        (Some("10.1.2.3"), Some("203.0.113.9"))
    );
    // The list now holds the other network instead.
    h.put_list(
        &a,
        "bad",
        json!({"entries": ["198.51.100.0/24"], "expected_version": 1}),
        None,
    )
    .await
    .ok("list changed");
    h.upload(
        &a.device,
        upload(vec![
            flow("10.1.2.5", "203.0.113.9", t0 + 60_000),
            flow("10.1.2.6", "198.51.100.7", t0 + 60_000),
        ]),
    )
    .await
    .ok("upload 2");
    rampart_portal::alarms::detect(&h.portal).await.unwrap();
    let blocked = alarms_of(&h, &a, "?kind=blocked_traffic").await;
    let srcs: std::collections::BTreeSet<&str> =
        blocked.iter().filter_map(|x| x["src"].as_str()).collect();
    assert_eq!(srcs, ["10.1.2.3", "10.1.2.6"].into(), "{blocked:?}");
}

// ------------------------------------------------------------------- vpn

/// `key = value` lines of one `[section]` of a wg-quick profile.
fn profile_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
        } else if inside && !line.is_empty() {
            let (k, v) = line.split_once(" = ").expect("key = value");
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn profile_value<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// WireGuard's own tools, when the machine has them (scripts/test installs
/// Debian's wireguard-tools): a third party to check keys and profiles.
fn wg_tools() -> bool {
    std::process::Command::new("wg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `wg pubkey` of a private key: WireGuard's own X25519 derivation.
fn wg_pubkey(private_b64: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private_b64.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wg pubkey failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The QR code of a PNG, read by an independent decoder (png + rqrr).
fn decode_qr_png(bytes: &[u8]) -> String {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn vpn_peers_get_conf_and_qr_profiles_and_revoking_one_removes_it_everywhere() {
    let h = Harness::new().await;
    let fx = h.tenant("acme").await;
    let reader = h.token_with_role(&fx, "read_only").await;
    let (host, tok) = (fx.host(), Some(fx.token.as_str()));
    let dev = fx.device.id;
    let base = format!("/api/v1/devices/{dev}/vpn");
    h.call("GET", host, &base, tok, None)
        .await
        .expect(404, Some("not_found"), "no interface yet");
    let body =
        json!({"address": "10.8.0.1/24", "endpoint": "VPN.acme.example", "dns": ["10.8.0.1"]});
    let r = h.call("PUT", host, &base, tok, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let iface = r.json();
    assert_eq!(iface["network"], "10.8.0.0/24");
    assert_eq!(iface["listen_port"], 51820);
    assert_eq!(iface["endpoint"], "vpn.acme.example");
    let device_pk = iface["public_key"].as_str().unwrap().to_string();
    rampart_proto::wg::parse_key("public key", &device_pk).unwrap();
    // Changing settings keeps the key pair.
    let body = json!({"address": "10.8.0.1/24", "endpoint": "vpn.acme.example", "dns": ["10.8.0.1"], "listen_port": 51900});
    let again = h
        .call("PUT", host, &base, tok, Some(body))
        .await
        .ok("update");
    assert_eq!(again["public_key"], device_pk.as_str());
    assert_eq!(again["listen_port"], 51900);

    let peers = format!("{base}/peers");
    let alice = h
        .call(
            "POST",
            host,
            &peers,
            tok,
            Some(json!({"name": "alice-laptop"})),
        )
        .await
        .ok("alice");
    let bob = h
        .call(
            "POST",
            host,
            &peers,
            tok,
            Some(json!({"name": "bob-phone", "preshared_key": false})),
        )
        .await
        .ok("bob");
    // The interface holds .1: peers get the lowest free host addresses.
    assert_eq!(alice["address"], "10.8.0.2/32");
    assert_eq!(bob["address"], "10.8.0.3/32");
    assert_eq!(
        (
            alice["preshared_key"].as_bool(),
            bob["preshared_key"].as_bool()
        ),
        (Some(true), Some(false))
    );
    h.call(
        "POST",
        host,
        &peers,
        tok,
        Some(json!({"name": "alice-laptop"})),
    )
    .await
    .expect(409, Some("conflict"), "a live peer has the name");
    let listed = h
        .call("GET", host, &peers, Some(&reader), None)
        .await
        .ok("list as reader");
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let (alice_id, bob_id) = (alice["id"].as_str().unwrap(), bob["id"].as_str().unwrap());

    // The wg-quick profile.
    let conf_path = format!("{peers}/{alice_id}/profile.conf");
    let r = h.call("GET", host, &conf_path, tok, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    let conf = r.text();
    let (ifc, peer) = (
        profile_section(&conf, "Interface"),
        profile_section(&conf, "Peer"),
    );
    let alice_sk = profile_value(&ifc, "PrivateKey").unwrap().to_string();
    assert_eq!(profile_value(&ifc, "Address"), Some("10.8.0.2/32"));
    assert_eq!(profile_value(&ifc, "DNS"), Some("10.8.0.1"));
    assert_eq!(profile_value(&peer, "PublicKey"), Some(device_pk.as_str()));
    assert_eq!(
        profile_value(&peer, "Endpoint"),
        Some("vpn.acme.example:51900")
    );
    assert_eq!(profile_value(&peer, "AllowedIPs"), Some("10.8.0.0/24"));
    assert_eq!(profile_value(&peer, "PersistentKeepalive"), Some("25"));
    let alice_psk = profile_value(&peer, "PresharedKey").unwrap().to_string();
    rampart_proto::wg::parse_key("psk", &alice_psk).unwrap();
    let bob_conf = h
        .call(
            "GET",
            host,
            &format!("{peers}/{bob_id}/profile.conf"),
            tok,
            None,
        )
        .await;
    assert_eq!(bob_conf.status, 200);
    assert!(profile_value(&profile_section(&bob_conf.text(), "Peer"), "PresharedKey").is_none());
    // The QR code holds exactly the same text.
    let r = h
        .call(
            "GET",
            host,
            &format!("{peers}/{alice_id}/profile.png"),
            tok,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type.as_deref(), Some("image/png"));
    assert_eq!(decode_qr_png(&r.body), conf);
    // Profiles hold private keys: never cached.
    let resp = h
        .app
        .clone()
        .oneshot(build("GET", host, &conf_path, tok, None, None))
        .await
        .unwrap();
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");

    // The device fetches its own secrets, signed.
    let keys = h
        .signed(&fx.device, "GET", host, "/api/v1/device/vpn-keys", None)
        .await
        .ok("vpn keys");
    let device_sk = keys["private_key"].as_str().unwrap().to_string();
    assert_eq!(keys["public_key"], device_pk.as_str());
    assert_eq!(
        keys["peers"],
        json!([{"public_key": alice["public_key"], "preshared_key": alice_psk}])
    );
    if wg_tools() {
        // WireGuard's own derivation agrees with the keys the API reports.
        assert_eq!(wg_pubkey(&alice_sk), alice["public_key"].as_str().unwrap());
        assert_eq!(wg_pubkey(&device_sk), device_pk);
        // And wg-quick parses the profile (strip prints it in wg's format).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alice.conf");
        std::fs::write(&file, &conf).unwrap();
        let out = std::process::Command::new("wg-quick")
            .arg("strip")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wg-quick strip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stripped = String::from_utf8(out.stdout).unwrap();
        assert!(
            stripped.contains(&format!("PrivateKey = {alice_sk}")),
            "{stripped}"
        );
        assert!(
            !stripped.contains("Address"),
            "wg-quick keeps Address for itself: {stripped}"
        );
    } else {
        println!("wg (wireguard-tools) is not installed: keys checked by the RFC 7748 vectors in rampart-proto only");
    }

    // What the configuration carries: public keys and addresses, no secret.
    let (t, d) = (fx.tenant.id, DeviceId(dev));
    let wgi = rampart_portal::vpn::device_interface(&h.portal, t, d)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wgi.public_key, device_pk);
    assert_eq!(wgi.address, vec!["10.8.0.1/24"]);
    assert_eq!(wgi.listen_port, Some(51900));
    let got: Vec<_> = wgi
        .peers
        .iter()
        .map(|p| {
            (
                p.public_key.as_str(),
                p.allowed_ips.clone(),
                p.preshared_key,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                alice["public_key"].as_str().unwrap(),
                vec!["10.8.0.2/32".to_string()],
                true
            ),
            (
                bob["public_key"].as_str().unwrap(),
                vec!["10.8.0.3/32".to_string()],
                false
            ),
        ]
    );
    let shown = serde_json::to_string(&wgi).unwrap();
    for secret in [&alice_sk, &alice_psk, &device_sk] {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret in the configuration: {shown}"
        );
    }

    // Revoking alice: her profile is gone, and so is she from the config.
    let revoked = h
        .call(
            "POST",
            host,
            &format!("{peers}/{alice_id}/revoke"),
            tok,
            None,
        )
        .await
        .ok("revoke");
    assert!(revoked["revoked_at"].is_string());
    for ext in ["conf", "png"] {
        h.call(
            "GET",
            host,
            &format!("{peers}/{alice_id}/profile.{ext}"),
            tok,
            None,
        )
        .await
        .expect(410, Some("peer_revoked"), ext);
    }
    h.call(
        "POST",
        host,
        &format!("{peers}/{alice_id}/revoke"),
        tok,
        None,
    )
    .await
    .expect(409, Some("conflict"), "revoked once");
    let wgi = rampart_portal::vpn::device_interface(&h.portal, t, d)
        .await
        .unwrap()
        .unwrap();
    let keys_now: Vec<_> = wgi.peers.iter().map(|p| p.public_key.as_str()).collect();
    assert_eq!(keys_now, vec![bob["public_key"].as_str().unwrap()]);
    let keys = h
        .signed(&fx.device, "GET", host, "/api/v1/device/vpn-keys", None)
        .await
        .ok("vpn keys after revoke");
    assert_eq!(keys["peers"], json!([]));
    // Her name and address are free again, with a new key pair.
    let alice2 = h
        .call(
            "POST",
            host,
            &peers,
            tok,
            Some(json!({"name": "alice-laptop"})),
        )
        .await
        .ok("alice again");
    assert_eq!(alice2["address"], "10.8.0.2/32");
    assert_ne!(alice2["public_key"], alice["public_key"]);
    let listed = h
        .call("GET", host, &peers, Some(&reader), None)
        .await
        .ok("list");
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "the revoked peer stays listed"
    );
    let audit = audit_pages(&h, host, "/api/v1/audit", &fx.token).await;
    let actions: Vec<&str> = audit
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("vpn."))
        .collect();
    for want in [
        "vpn.interface.put",
        "vpn.peer.create",
        "vpn.profile.download",
        "vpn.peer.revoke",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
}

#[tokio::test]
async fn vpn_bad_input_gets_clear_client_errors() {
    let h = Harness::new().await;
    let fx = h.tenant("acme").await;
    let (host, tok) = (fx.host(), Some(fx.token.as_str()));
    let base = format!("/api/v1/devices/{}/vpn", fx.device.id);
    let peers = format!("{base}/peers");
    h.call("POST", host, &peers, tok, Some(json!({"name": "early"})))
        .await
        .expect(404, Some("not_found"), "a peer before the interface");
    let good = json!({"address": "10.9.0.1/30", "endpoint": "vpn.acme.example"});
    for (change, ctx) in [
        (
            json!({"address": "10.9.0.0/30"}),
            "the network's own address",
        ),
        (json!({"address": "10.9.0.3/30"}), "the broadcast address"),
        (json!({"address": "10.9.0.1/31"}), "no room for peers"),
        (json!({"address": "10.9.0.1/33"}), "a prefix past 32"),
        (json!({"address": "fd00::1/64"}), "IPv6"),
        (json!({"address": "10.9.0.1"}), "no prefix"),
        (json!({"address": "x".repeat(5000)}), "a long address"),
        (
            json!({"endpoint": "vpn.acme.example:51820"}),
            "a port in the endpoint",
        ),
        (json!({"endpoint": ""}), "no endpoint"),
        (json!({"dns": ["resolver"]}), "a dns name"),
        (
            json!({"dns": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9"]}),
            "five dns servers",
        ),
        (json!({"listen_port": 0}), "port 0"),
        (json!({"listen_port": 70000}), "port past 65535"),
        (
            json!({"client_allowed_ips": ["10.0.0.0/40"]}),
            "a bad route",
        ),
        (json!({"client_allowed_ips": []}), "no route"),
        (json!({"private_key": "AAAA"}), "a private key given"),
    ] {
        let mut body = good.clone();
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let r = h.call("PUT", host, &base, tok, Some(body)).await;
        r.expect(400, None, ctx);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            !msg.ends_with('.') && msg.chars().next().is_some_and(|c| !c.is_uppercase()),
            "{ctx}: {msg}"
        );
    }
    h.call("PUT", host, &base, tok, Some(good.clone()))
        .await
        .ok("a /30");
    for name in [
        "",
        "a/b",
        ".hidden",
        "two words",
        &"n".repeat(65),
        "ünïcode",
    ] {
        h.call("POST", host, &peers, tok, Some(json!({"name": name})))
            .await
            .expect(400, Some("invalid"), &format!("name {name:?}"));
    }
    // A /30 has two host addresses, and the interface holds one.
    let only = h
        .call("POST", host, &peers, tok, Some(json!({"name": "only"})))
        .await
        .ok("the one free address");
    assert_eq!(only["address"], "10.9.0.2/32");
    let r = h
        .call("POST", host, &peers, tok, Some(json!({"name": "second"})))
        .await;
    r.expect(409, Some("conflict"), "a full network");
    assert!(r.text().contains("no free address"), "{}", r.text());
    // Moving to another network strands live peers: refused.
    let moved = json!({"address": "10.10.0.1/24", "endpoint": "vpn.acme.example"});
    h.call("PUT", host, &base, tok, Some(moved.clone()))
        .await
        .expect(409, Some("conflict"), "live peers in the old network");
    let unknown = format!("{peers}/{}/profile.conf", Uuid::new_v4());
    h.call("GET", host, &unknown, tok, None).await.expect(
        404,
        Some("not_found"),
        "an unknown peer",
    );
    h.call(
        "GET",
        host,
        &format!("{peers}/not-a-uuid/profile.conf"),
        tok,
        None,
    )
    .await
    .expect(400, None, "a bad peer id");
    // The peer limit: fill a large network to the limit through the store,
    // then one more through the API.
    h.call(
        "POST",
        host,
        &format!("{peers}/{}/revoke", only["id"].as_str().unwrap()),
        tok,
        None,
    )
    .await
    .ok("revoke");
    let wide = json!({"address": "10.10.0.1/16", "endpoint": "vpn.acme.example"});
    h.call("PUT", host, &base, tok, Some(wide))
        .await
        .ok("a /16");
    let (t, d) = (fx.tenant.id, DeviceId(fx.device.id));
    for i in 0..rampart_proto::wg::MAX_PEERS as u32 {
        let sk = rampart_proto::wg::generate_private_key();
        h.portal
            .store
            .create_vpn_peer(
                t,
                &rampart_store::VpnPeerRow {
                    id: Uuid::new_v4(),
                    device_id: d,
                    name: format!("bulk-{i}"),
                    slot: i + 2,
                    address: format!("10.10.{}.{}/32", (i + 2) / 256, (i + 2) % 256),
                    public_key: rampart_proto::wg::key_b64(&rampart_proto::wg::public_key(&sk)),
                    private_key_wrapped: None,
                    preshared_key_wrapped: None,
                    created_at: now(),
                    revoked_at: None,
                },
            )
            .await
            .unwrap();
    }
    let r = h
        .call(
            "POST",
            host,
            &peers,
            tok,
            Some(json!({"name": "one-too-many"})),
        )
        .await;
    r.expect(400, Some("invalid"), "past the peer limit");
    assert!(r.text().contains("1000 live vpn peers"), "{}", r.text());
    let wgi = rampart_portal::vpn::device_interface(&h.portal, t, d)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wgi.peers.len(), rampart_proto::wg::MAX_PEERS);
    assert_eq!(wgi.validate(), Ok(()));
    // A plan without the vpn feature closes its routes and the device fetch.
    put_on_plan(
        &h,
        &fx,
        "no-vpn",
        json!({"visible_days": 30, "stored_days": 32, "features": ["flows"]}),
    )
    .await;
    h.call("GET", host, &base, tok, None).await.expect(
        403,
        Some("feature_not_in_plan"),
        "vpn outside the plan",
    );
    h.signed(&fx.device, "GET", host, "/api/v1/device/vpn-keys", None)
        .await
        .expect(
            403,
            Some("feature_not_in_plan"),
            "vpn keys outside the plan",
        );
}
