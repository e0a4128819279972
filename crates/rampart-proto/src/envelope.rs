//! Signed instruction envelopes: the only way a portal tells an agent to act.
//!
//! The signature covers the exact JSON bytes of the envelope (carried base64
//! encoded), so there is no canonicalisation to get wrong: the agent verifies
//! the bytes first and parses them second.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{SigningKey, VerifyingKey};
use crate::{b64, unb64, ProtoError, Result};

/// Domain separation for instruction signatures, so a signature made for an
/// instruction can never be presented as any other signed Rampart object.
const CONTEXT: &[u8] = b"rampart-instruction-v1\0";

/// Size limit on one signed instruction, encoded.
pub const MAX_INSTRUCTION_BYTES: usize = 256 * 1024;

/// Clock skew tolerated between portal and agent, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// What an instruction says, before signing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    pub tenant: Uuid,
    pub device: Uuid,
    /// Strictly increasing per device; the agent refuses anything at or below
    /// the last sequence number it applied.
    pub seq: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the agent refuses the instruction after this.
    pub expires_at: i64,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// An envelope as it travels: JSON bytes (base64) and an Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedInstruction {
    /// Base64 of the envelope's JSON bytes, exactly as signed.
    pub envelope: String,
    /// Base64 Ed25519 signature by the tenant's instruction key.
    pub signature: String,
}

/// Why an agent refused an instruction. Each is logged and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    #[error("instruction is malformed: {detail}")]
    Malformed { detail: String },
    #[error(
        "instruction signature does not verify: it was tampered with or signed by another key"
    )]
    BadSignature,
    #[error("instruction is addressed to tenant {got}, this agent belongs to {expected}")]
    WrongTenant { expected: Uuid, got: Uuid },
    #[error("instruction is addressed to device {got}, this agent is {expected}")]
    WrongDevice { expected: Uuid, got: Uuid },
    #[error("instruction {seq} expired at {expires_at}, now is {now}")]
    Expired { seq: u64, expires_at: i64, now: i64 },
    #[error(
        "instruction {seq} is issued in the future ({issued_at}, now is {now}): check the clocks"
    )]
    FromTheFuture { seq: u64, issued_at: i64, now: i64 },
    #[error("instruction {seq} is a replay: sequence {last} was already applied")]
    Replayed { seq: u64, last: u64 },
}

impl Refusal {
    /// A short machine-readable code for metrics and the portal's refusal log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed { .. } => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongTenant { .. } => "wrong_tenant",
            Refusal::WrongDevice { .. } => "wrong_device",
            Refusal::Expired { .. } => "expired",
            Refusal::FromTheFuture { .. } => "from_the_future",
            Refusal::Replayed { .. } => "replayed",
        }
    }

    /// The sequence number named by the refused instruction, when it could be read.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Refusal::Expired { seq, .. }
            | Refusal::FromTheFuture { seq, .. }
            | Refusal::Replayed { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

impl Envelope {
    pub fn sign(&self, key: &SigningKey) -> SignedInstruction {
        let bytes = serde_json::to_vec(self).expect("envelope serializes");
        SignedInstruction {
            envelope: b64(&bytes),
            signature: b64(&key.sign(&signing_input(&bytes))),
        }
    }
}

fn signing_input(envelope_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + envelope_bytes.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(envelope_bytes);
    m
}

/// What the agent expects of every instruction it accepts.
pub struct Expectation {
    pub tenant: Uuid,
    pub device: Uuid,
    /// Highest sequence number already applied (0 before the first).
    pub last_applied_seq: u64,
    /// Unix seconds.
    pub now: i64,
}

impl SignedInstruction {
    /// Checks signature, addressing, time window and sequence, in that order:
    /// nothing in the envelope is trusted until the signature verifies.
    pub fn verify(&self, key: &VerifyingKey, exp: &Expectation) -> Result<Envelope, Refusal> {
        if self.envelope.len() > MAX_INSTRUCTION_BYTES {
            return Err(Refusal::Malformed {
                detail: format!("envelope exceeds {MAX_INSTRUCTION_BYTES} bytes"),
            });
        }
        let malformed = |e: ProtoError| Refusal::Malformed {
            detail: e.to_string(),
        };
        let bytes = unb64(
            "instruction envelope",
            &self.envelope,
            MAX_INSTRUCTION_BYTES,
        )
        .map_err(malformed)?;
        let sig = unb64("instruction signature", &self.signature, 64).map_err(malformed)?;
        key.verify(&signing_input(&bytes), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| Refusal::Malformed {
            detail: e.to_string(),
        })?;
        if env.tenant != exp.tenant {
            return Err(Refusal::WrongTenant {
                expected: exp.tenant,
                got: env.tenant,
            });
        }
        if env.device != exp.device {
            return Err(Refusal::WrongDevice {
                expected: exp.device,
                got: env.device,
            });
        }
        if exp.now > env.expires_at {
            return Err(Refusal::Expired {
                seq: env.seq,
                expires_at: env.expires_at,
                now: exp.now,
            });
        }
        if env.issued_at > exp.now + MAX_CLOCK_SKEW_SECS {
            return Err(Refusal::FromTheFuture {
                seq: env.seq,
                issued_at: env.issued_at,
                now: exp.now,
            });
        }
        if env.seq <= exp.last_applied_seq {
            return Err(Refusal::Replayed {
                seq: env.seq,
                last: exp.last_applied_seq,
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, Envelope, Expectation) {
        let key = SigningKey::generate();
        let (t, d) = (Uuid::new_v4(), Uuid::new_v4());
        let env = Envelope {
            tenant: t,
            device: d,
            seq: 5,
            issued_at: 1000,
            expires_at: 2000,
            kind: "ping".into(),
            payload: serde_json::json!({"message": "hi"}),
        };
        let exp = Expectation {
            tenant: t,
            device: d,
            last_applied_seq: 4,
            now: 1500,
        };
        (key, env, exp)
    }

    #[test]
    fn valid_instruction_is_accepted() {
        let (key, env, exp) = setup();
        let signed = env.sign(&key);
        assert_eq!(signed.verify(&key.verifying_key(), &exp).unwrap(), env);
    }

    #[test]
    fn each_refusal_is_detected() {
        let (key, env, exp) = setup();
        let vk = key.verifying_key();

        // Tampered: flip one byte of the envelope (the seq) and keep the signature.
        let mut signed = env.sign(&key);
        let mut raw = unb64("t", &signed.envelope, 4096).unwrap();
        let pos = raw.windows(7).position(|w| w == b"\"seq\":5").unwrap() + 6;
        raw[pos] = b'9';
        signed.envelope = b64(&raw);
        assert_eq!(signed.verify(&vk, &exp), Err(Refusal::BadSignature));

        // Signed by another key.
        let other = env.sign(&SigningKey::generate());
        assert_eq!(other.verify(&vk, &exp), Err(Refusal::BadSignature));

        let replay = Expectation {
            last_applied_seq: 5,
            ..exp
        };
        assert!(matches!(
            env.sign(&key).verify(&vk, &replay),
            Err(Refusal::Replayed { seq: 5, last: 5 })
        ));
        let late = Expectation {
            now: 2001,
            ..replay
        };
        assert!(matches!(
            env.sign(&key).verify(&vk, &late),
            Err(Refusal::Expired { .. })
        ));
        let early = Expectation {
            now: 1000 - MAX_CLOCK_SKEW_SECS - 1,
            last_applied_seq: 0,
            ..late
        };
        assert!(matches!(
            env.sign(&key).verify(&vk, &early),
            Err(Refusal::FromTheFuture { .. })
        ));
        let other_dev = Expectation {
            device: Uuid::new_v4(),
            now: 1500,
            ..early
        };
        assert!(matches!(
            env.sign(&key).verify(&vk, &other_dev),
            Err(Refusal::WrongDevice { .. })
        ));
        let other_tenant = Expectation {
            tenant: Uuid::new_v4(),
            ..other_dev
        };
        assert!(matches!(
            env.sign(&key).verify(&vk, &other_tenant),
            Err(Refusal::WrongTenant { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let (key, _env, exp) = setup();
        let vk = key.verifying_key();
        for (e, s) in [
            ("", ""),
            ("!!", "??"),
            (&b64(b"{}") as &str, &b64(&[0u8; 64]) as &str),
        ] {
            let si = SignedInstruction {
                envelope: e.into(),
                signature: s.into(),
            };
            assert!(si.verify(&vk, &exp).is_err());
        }
    }
}
