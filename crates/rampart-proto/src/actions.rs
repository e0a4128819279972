//! Remote actions: one-shot signed instructions an admin sends to one
//! device, whose outcome comes back as the instruction's result.
//!
//! - [`RESTART_AGENT`]: the agent acks, shuts down cleanly and starts again
//!   (the binary re-executes itself); its next heartbeat carries a new
//!   `started_at`.
//! - [`ROTATE_DEVICE_KEY`]: the agent makes a new Ed25519 key and proves
//!   it with [`KeyRotateRequest`] (signed with the old key like every
//!   device request, carrying a signature by the new key over
//!   [`KeyRotateRequest::proof_input`]); the old key is refused afterwards.
//! - [`COLLECT_DIAGNOSTICS`]: the agent uploads a bounded bundle without
//!   secrets as a sealed batch of kind [`DIAGNOSTICS_BATCH_KIND`].
//! - [`CONNECTIVITY_TEST`]: DNS resolution and TCP connects to at most
//!   [`MAX_TARGETS`] targets, each with its own timeout.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const RESTART_AGENT: &str = "restart_agent";
pub const ROTATE_DEVICE_KEY: &str = "rotate_device_key";
pub const COLLECT_DIAGNOSTICS: &str = "collect_diagnostics";
pub const CONNECTIVITY_TEST: &str = "connectivity_test";

/// The action names of the tenant API and the instruction kind of each.
pub const ACTIONS: &[(&str, &str)] = &[
    ("restart", RESTART_AGENT),
    ("rotate_key", ROTATE_DEVICE_KEY),
    ("diagnostics", COLLECT_DIAGNOSTICS),
    ("connectivity_test", CONNECTIVITY_TEST),
];

/// The batch kind a diagnostics bundle is uploaded as.
pub const DIAGNOSTICS_BATCH_KIND: &str = "diagnostics";
/// Largest diagnostics bundle (serialized JSON) an agent sends.
pub const MAX_DIAGNOSTICS_BYTES: usize = 4 * 1024 * 1024;

/// Targets per connectivity test.
pub const MAX_TARGETS: usize = 16;
/// Longest timeout of one target, resolution and connect together.
pub const MAX_TIMEOUT_MS: u32 = 10_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 3_000;

/// Domain separation for the new key's proof of possession.
pub const KEY_ROTATE_CONTEXT: &[u8] = b"rampart-key-rotate-v1\0";

/// Why an action's parameters were refused. Messages say what to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("unknown action {0:?}: use restart, rotate_key, diagnostics or connectivity_test")]
    UnknownAction(String),
    #[error("params are not valid for {action}: {detail}")]
    Params {
        action: &'static str,
        detail: String,
    },
    #[error("connectivity_test has {0} targets, the limit is {MAX_TARGETS}: split the test")]
    TooManyTargets(usize),
    #[error("connectivity_test needs at least one target, or portal: true")]
    NoTargets,
    #[error("target {0:?} is not host:port: use a dns name, an ipv4 address or [ipv6], and a port 1 to 65535")]
    BadTarget(String),
    #[error("target {target:?} timeout_ms is {ms}: use 1 to {MAX_TIMEOUT_MS}")]
    BadTimeout { target: String, ms: u32 },
}

/// The instruction kind of an API action name.
pub fn kind_of_action(action: &str) -> Result<&'static str, ActionError> {
    ACTIONS
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, k)| *k)
        .ok_or_else(|| ActionError::UnknownAction(action.chars().take(64).collect()))
}

/// Parameters of [`CONNECTIVITY_TEST`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectivityTest {
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Also test the portal the agent talks to (its address override, if
    /// enrolled with one). Default true.
    #[serde(default = "yes")]
    pub portal: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Target {
    /// `host:port`: a DNS name, an IPv4 address or `[IPv6]`, and a port.
    pub target: String,
    /// Resolution and connect together, 1 to 10000 (default 3000).
    pub timeout_ms: Option<u32>,
}

impl Target {
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }
}

impl ConnectivityTest {
    /// Parses an instruction payload (or API params) and validates it.
    pub fn from_payload(payload: &serde_json::Value) -> Result<Self, ActionError> {
        let payload = if payload.is_null() {
            &serde_json::Value::Object(Default::default())
        } else {
            payload
        };
        let t: ConnectivityTest =
            serde::Deserialize::deserialize(payload).map_err(|e| ActionError::Params {
                action: "connectivity_test",
                detail: e.to_string(),
            })?;
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<(), ActionError> {
        if self.targets.len() > MAX_TARGETS {
            return Err(ActionError::TooManyTargets(self.targets.len()));
        }
        if self.targets.is_empty() && !self.portal {
            return Err(ActionError::NoTargets);
        }
        for t in &self.targets {
            parse_target(&t.target)?;
            let ms = t.timeout_ms();
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(ActionError::BadTimeout {
                    target: t.target.chars().take(300).collect(),
                    ms,
                });
            }
        }
        Ok(())
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) and checks both halves: the
/// host is an IP address or a DNS name of RFC 1123 labels.
pub fn parse_target(s: &str) -> Result<(String, u16), ActionError> {
    let bad = || ActionError::BadTarget(s.chars().take(300).collect());
    if s.len() > 300 {
        return Err(bad());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| bad())?;
        return Ok((ip.to_string(), port));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok((host.to_string(), port));
    }
    let dns_ok = (1..=253).contains(&host.len())
        && host.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !dns_ok {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// One target's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetResult {
    pub target: String,
    pub ok: bool,
    /// What the name resolved to (the address itself for an IP).
    pub addresses: Vec<String>,
    /// The address a connection was made to.
    pub connected: Option<String>,
    pub resolve_ms: Option<u64>,
    pub connect_ms: Option<u64>,
    /// e.g. `connection refused`, `timed out`, `name does not resolve: ...`.
    pub error: Option<String>,
}

/// The result of [`CONNECTIVITY_TEST`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectivityResult {
    pub results: Vec<TargetResult>,
}

/// `POST /api/v1/device/key`: replace this device's key. Signed with the
/// current (old) key like every device request; `proof` shows the agent
/// holds the new one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRotateRequest {
    /// The seq of the pending `rotate_device_key` instruction.
    pub seq: u64,
    /// Base64 Ed25519 public key.
    pub new_public_key: String,
    /// Base64 signature by the new key over [`KeyRotateRequest::proof_input`].
    pub proof: String,
}

impl KeyRotateRequest {
    /// `KEY_ROTATE_CONTEXT || tenant || 0 || device || 0 || new key || 0 || seq`:
    /// binds the proof to this tenant, device and instruction, so it cannot
    /// be replayed for another.
    pub fn proof_input(tenant: Uuid, device: Uuid, new_public_key: &str, seq: u64) -> Vec<u8> {
        [
            KEY_ROTATE_CONTEXT,
            tenant.to_string().as_bytes(),
            b"\0",
            device.to_string().as_bytes(),
            b"\0",
            new_public_key.as_bytes(),
            b"\0",
            seq.to_string().as_bytes(),
        ]
        .concat()
    }
}

/// `GET /api/v1/device/key` (and the answer to a rotation): the key the
/// portal verifies this device's requests with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceKeyView {
    /// Base64 Ed25519 public key.
    pub public_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_per_rfc_1123_and_rfc_3986_host_syntax() {
        // (input, expected host and port or None)
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("example.net:443", Some(("example.net", 443))),
            ("EXAMPLE.net:80", Some(("example.net", 80))),
            ("127.0.0.1:9", Some(("127.0.0.1", 9))),
            ("[::1]:22", Some(("::1", 22))),
            ("[2001:db8::1]:65535", Some(("2001:db8::1", 65535))),
            ("localhost:1", Some(("localhost", 1))),
            ("example.net", None),
            ("example.net:", None),
            ("example.net:0", None),
            ("example.net:65536", None),
            ("example.net:+80", None),
            ("::1:22", None),
            ("[::1]", None),
            ("[not-v6]:22", None),
            ("-bad.example:80", None),
            ("bad..example:80", None),
            ("under_score.example:80", None),
            (":80", None),
            ("http://example.net:80", None),
        ];
        for (input, want) in cases {
            let got = parse_target(input).ok();
            assert_eq!(
                got,
                want.map(|(h, p)| (h.to_string(), p)),
                "parse_target({input:?})"
            );
        }
    }

    #[test]
    fn connectivity_params_are_bounded() {
        let many: Vec<_> = (0..=MAX_TARGETS)
            .map(|i| serde_json::json!({"target": format!("h{i}.example:80")}))
            .collect();
        assert_eq!(
            ConnectivityTest::from_payload(&serde_json::json!({ "targets": many })),
            Err(ActionError::TooManyTargets(MAX_TARGETS + 1))
        );
        let slow =
            serde_json::json!({"targets": [{"target": "a.example:1", "timeout_ms": 10_001}]});
        assert!(matches!(
            ConnectivityTest::from_payload(&slow),
            Err(ActionError::BadTimeout { ms: 10_001, .. })
        ));
        let none = serde_json::json!({"portal": false});
        assert_eq!(
            ConnectivityTest::from_payload(&none),
            Err(ActionError::NoTargets)
        );
        let extra = serde_json::json!({"targets": [], "bogus": 1});
        assert!(matches!(
            ConnectivityTest::from_payload(&extra),
            Err(ActionError::Params { .. })
        ));
        let ok = ConnectivityTest::from_payload(&serde_json::Value::Null).unwrap();
        assert!(ok.portal && ok.targets.is_empty());
    }

    #[test]
    fn rotation_proof_binds_tenant_device_key_and_seq() {
        let (t, d) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let base = KeyRotateRequest::proof_input(t, d, "k", 7);
        for other in [
            KeyRotateRequest::proof_input(d, d, "k", 7),
            KeyRotateRequest::proof_input(t, t, "k", 7),
            KeyRotateRequest::proof_input(t, d, "j", 7),
            KeyRotateRequest::proof_input(t, d, "k", 8),
        ] {
            assert_ne!(base, other);
        }
        assert!(base.starts_with(KEY_ROTATE_CONTEXT));
    }
}
