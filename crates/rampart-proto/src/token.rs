//! Enrollment tokens.
//!
//! A token is everything an agent needs to enroll: the portal URL, the tenant,
//! the pin of the tenant certificate and a one-time secret. It is printed once
//! by the portal; only the SHA-256 of its secret is stored.
//!
//! Format: `rmp1_` followed by base64url (no padding) of a small JSON object.

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ProtoError, Result};

const PREFIX: &str = "rmp1_";
/// Tokens are pasted into shells and config files: keep them bounded.
pub const MAX_TOKEN_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Base URL of the tenant's portal, e.g. `https://acme.example.net:8443`.
    #[serde(rename = "u")]
    pub portal_url: String,
    #[serde(rename = "t")]
    pub tenant: Uuid,
    /// Hex SHA-256 of the tenant certificate's SubjectPublicKeyInfo.
    #[serde(rename = "p")]
    pub pin: String,
    /// Base64url random secret; the portal keeps only its SHA-256.
    #[serde(rename = "s")]
    pub secret: String,
}

impl EnrollmentToken {
    /// Makes a token with a fresh 256-bit secret.
    pub fn new(portal_url: String, tenant: Uuid, pin: String) -> Self {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        EnrollmentToken {
            portal_url,
            tenant,
            pin,
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        }
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("token serializes");
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    pub fn decode(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() > MAX_TOKEN_LEN {
            return Err(ProtoError::TooLarge {
                what: "enrollment token",
                size: s.len(),
                limit: MAX_TOKEN_LEN,
            });
        }
        let body = s.strip_prefix(PREFIX).ok_or_else(|| {
            ProtoError::malformed(
                "enrollment token",
                "it must start with rmp1_: copy the whole token the portal printed",
            )
        })?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| ProtoError::malformed("enrollment token", e))?;
        let tok: EnrollmentToken = serde_json::from_slice(&json)
            .map_err(|e| ProtoError::malformed("enrollment token", e))?;
        if tok.pin.len() != 64 || hex::decode(&tok.pin).is_err() {
            return Err(ProtoError::malformed(
                "enrollment token",
                "pin is not a hex sha-256",
            ));
        }
        if !(tok.portal_url.starts_with("https://")) {
            return Err(ProtoError::malformed(
                "enrollment token",
                "portal url must use https",
            ));
        }
        Ok(tok)
    }

    /// What the portal stores and looks the token up by.
    pub fn secret_hash(&self) -> String {
        crate::sha256_hex(self.secret.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = EnrollmentToken::new(
            "https://a.example:8443".into(),
            Uuid::new_v4(),
            "ab".repeat(32),
        );
        let s = t.encode();
        assert!(s.starts_with("rmp1_"));
        assert_eq!(EnrollmentToken::decode(&s).unwrap(), t);
        assert!(EnrollmentToken::decode("rmp1_!!!").is_err());
        assert!(EnrollmentToken::decode(&s[5..]).is_err());
        assert!(EnrollmentToken::decode(&"x".repeat(5000)).is_err());
        let http = EnrollmentToken {
            portal_url: "http://a".into(),
            ..t
        };
        assert!(EnrollmentToken::decode(&http.encode()).is_err());
    }
}
