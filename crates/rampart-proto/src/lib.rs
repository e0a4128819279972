//! Wire formats and cryptography shared by the Rampart portal and agent.
//!
//! Everything that crosses the network between an agent and its tenant's portal
//! is defined here, so that both sides agree byte for byte: signed instruction
//! envelopes, HPKE-sealed upload batches, enrollment tokens, device request
//! signatures, the SPKI pin check and the JSON bodies of the device API.
//!
//! Invariants:
//! - no IO, no clocks: callers pass `now`, so every check is testable;
//! - no knowledge of storage, HTTP frameworks or tenancy policy;
//! - every decoder bounds its input before it allocates.

pub mod actions;
pub mod alerts;
pub mod api;
pub mod batch;
pub mod config;
pub mod controls;
pub mod envelope;
pub mod keys;
pub mod pin;
pub mod reqsig;
pub mod token;
pub mod wg;
pub mod wrap;

/// Errors from decoding or verifying protocol data.
///
/// Messages are lowercase and say what to do, because they end up in API
/// error bodies and in agent logs.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("signature does not verify: the data was altered or signed by another key")]
    BadSignature,
    #[error("decryption failed: the batch was altered, sealed to another key or bound to another device")]
    Decrypt,
    #[error("{0}")]
    Refused(#[from] envelope::Refusal),
}

impl ProtoError {
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        ProtoError::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

/// Base64 (standard alphabet, padded) used for binary fields inside JSON.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes [`b64`] output, refusing anything larger than `limit` decoded bytes.
pub fn unb64(what: &'static str, s: &str, limit: usize) -> Result<Vec<u8>> {
    use base64::Engine;
    if s.len() > limit.saturating_mul(4) / 3 + 4 {
        return Err(ProtoError::TooLarge {
            what,
            size: s.len() * 3 / 4,
            limit,
        });
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| ProtoError::malformed(what, e))
}

/// SHA-256 of `data`, hex encoded. Used for high-entropy secrets at rest
/// (enrollment and API tokens), where a slow hash would add nothing.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Compares two secrets without leaking where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
