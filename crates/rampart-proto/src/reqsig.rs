//! Device request signatures.
//!
//! Every device request after enrollment is signed with the device's Ed25519
//! key (we chose signed requests over mTLS so that one TLS listener with
//! per-tenant SNI certificates serves people and devices alike, and so that a
//! load balancer may terminate TLS in scale-out without losing device identity).
//!
//! The signature covers method, host, path and query, a timestamp, a nonce and
//! the SHA-256 of the body. The portal refuses timestamps outside a window and
//! nonces it has already seen inside it, which makes each request single-use.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::{SigningKey, VerifyingKey};
use crate::{b64, unb64, ProtoError, Result};

pub const HDR_DEVICE: &str = "x-rampart-device";
pub const HDR_TIMESTAMP: &str = "x-rampart-timestamp";
pub const HDR_NONCE: &str = "x-rampart-nonce";
pub const HDR_SIGNATURE: &str = "x-rampart-signature";

/// How far a request timestamp may be from the portal's clock, in seconds.
pub const MAX_REQUEST_SKEW_SECS: i64 = 300;

const CONTEXT: &str = "rampart-request-v1";

/// The headers that authenticate one device request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAuth {
    pub device: Uuid,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

fn canonical(
    method: &str,
    host: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "{CONTEXT}\n{}\n{}\n{}\n{ts}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        host.to_ascii_lowercase(),
        path_and_query,
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

impl DeviceAuth {
    pub fn sign(
        key: &SigningKey,
        device: Uuid,
        method: &str,
        host: &str,
        path_and_query: &str,
        now: i64,
        body: &[u8],
    ) -> Self {
        let mut n = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut n);
        let nonce = hex::encode(n);
        let sig = key.sign(&canonical(method, host, path_and_query, now, &nonce, body));
        DeviceAuth {
            device,
            timestamp: now,
            nonce,
            signature: b64(&sig),
        }
    }

    /// Reads the four headers; `get` looks a header up by name.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Self>> {
        let Some(device) = get(HDR_DEVICE) else {
            return Ok(None);
        };
        let need = |h: &'static str| {
            get(h).ok_or_else(|| {
                ProtoError::malformed("device request", format!("missing header {h}"))
            })
        };
        let device = Uuid::parse_str(device).map_err(|e| ProtoError::malformed(HDR_DEVICE, e))?;
        let timestamp = need(HDR_TIMESTAMP)?
            .parse::<i64>()
            .map_err(|e| ProtoError::malformed(HDR_TIMESTAMP, e))?;
        let nonce = need(HDR_NONCE)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ProtoError::malformed(HDR_NONCE, "expected 32 hex digits"));
        }
        Ok(Some(DeviceAuth {
            device,
            timestamp,
            nonce: nonce.to_string(),
            signature: need(HDR_SIGNATURE)?.to_string(),
        }))
    }

    /// Checks the signature and the time window. Nonce reuse is the caller's
    /// check, since only it knows which nonces it has seen.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        method: &str,
        host: &str,
        path_and_query: &str,
        now: i64,
        body: &[u8],
    ) -> Result<()> {
        // The timestamp is attacker-chosen: compare without arithmetic that
        // can overflow (i64::MIN once panicked here in debug builds).
        if now.abs_diff(self.timestamp) > MAX_REQUEST_SKEW_SECS as u64 {
            return Err(ProtoError::malformed(
                "device request",
                "timestamp is outside the allowed window: check the agent's clock",
            ));
        }
        let sig = unb64(HDR_SIGNATURE, &self.signature, 64)?;
        key.verify(
            &canonical(
                method,
                host,
                path_and_query,
                self.timestamp,
                &self.nonce,
                body,
            ),
            &sig,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_request_verifies_only_unchanged() {
        let k = SigningKey::generate();
        let vk = k.verifying_key();
        let d = Uuid::new_v4();
        let a = DeviceAuth::sign(
            &k,
            d,
            "POST",
            "acme.example",
            "/api/v1/x?y=1",
            1000,
            b"body",
        );
        a.verify(&vk, "POST", "acme.example", "/api/v1/x?y=1", 1010, b"body")
            .unwrap();
        assert!(a
            .verify(&vk, "POST", "other.example", "/api/v1/x?y=1", 1010, b"body")
            .is_err());
        assert!(a
            .verify(&vk, "POST", "acme.example", "/api/v1/x?y=2", 1010, b"body")
            .is_err());
        assert!(a
            .verify(&vk, "GET", "acme.example", "/api/v1/x?y=1", 1010, b"body")
            .is_err());
        assert!(a
            .verify(&vk, "POST", "acme.example", "/api/v1/x?y=1", 1010, b"bodY")
            .is_err());
        assert!(a
            .verify(&vk, "POST", "acme.example", "/api/v1/x?y=1", 2000, b"body")
            .is_err());
    }

    #[test]
    fn extreme_timestamps_are_refused_not_overflowed() {
        let k = SigningKey::generate();
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let mut a = DeviceAuth::sign(&k, Uuid::nil(), "GET", "h", "/", 0, b"");
            a.timestamp = ts;
            assert!(a
                .verify(&k.verifying_key(), "GET", "h", "/", 1_700_000_000, b"")
                .is_err());
        }
    }

    #[test]
    fn headers_parse() {
        let a = DeviceAuth::sign(
            &SigningKey::generate(),
            Uuid::new_v4(),
            "GET",
            "h",
            "/",
            5,
            b"",
        );
        let ts = a.timestamp.to_string();
        let dev = a.device.to_string();
        let get = |h: &str| match h {
            HDR_DEVICE => Some(dev.as_str()),
            HDR_TIMESTAMP => Some(ts.as_str()),
            HDR_NONCE => Some(a.nonce.as_str()),
            HDR_SIGNATURE => Some(a.signature.as_str()),
            _ => None,
        };
        assert_eq!(DeviceAuth::from_headers(get).unwrap(), Some(a.clone()));
        assert_eq!(DeviceAuth::from_headers(|_| None).unwrap(), None);
        assert!(
            DeviceAuth::from_headers(|h| if h == HDR_DEVICE { Some("nope") } else { None })
                .is_err()
        );
    }
}
