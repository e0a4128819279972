//! Key wrapping: XChaCha20-Poly1305 under a 256-bit key-encryption key.
//!
//! Used for every private key Rampart keeps at rest: the portal wraps tenant
//! keys under a per-tenant KEK, and KEKs under the master key; the agent wraps
//! its device key under its local wrapping key. The associated data names what
//! is wrapped and for whom, so a wrapped blob cannot be swapped into another
//! slot (another tenant, another purpose) without failing to unwrap.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::{ProtoError, Result};

const MAGIC: &[u8; 3] = b"RW1";
const NONCE_LEN: usize = 24;

/// A 256-bit symmetric key, zeroized on drop.
#[derive(Clone)]
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        Kek(Zeroizing::new(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ProtoError::malformed("key", "expected 32 bytes"))?;
        Ok(Kek(Zeroizing::new(arr)))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts `plaintext`, binding `aad`. Output: `RW1 || nonce || ciphertext`.
    pub fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("xchacha20poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Reverses [`Kek::wrap`]; fails if the blob, key or `aad` differ.
    pub fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if blob.len() < MAGIC.len() + NONCE_LEN + 16 || &blob[..3] != MAGIC {
            return Err(ProtoError::malformed("wrapped key", "bad header or length"));
        }
        let nonce = XNonce::from_slice(&blob[3..3 + NONCE_LEN]);
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &blob[3 + NONCE_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| ProtoError::Decrypt)
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrap_with_other_aad_or_key_fails() {
        let k = Kek::generate();
        let blob = k.wrap(b"secret", b"tenant-a/signing");
        assert_eq!(&*k.unwrap(&blob, b"tenant-a/signing").unwrap(), b"secret");
        assert!(k.unwrap(&blob, b"tenant-b/signing").is_err());
        assert!(Kek::generate().unwrap(&blob, b"tenant-a/signing").is_err());
        assert!(k.unwrap(&blob[..10], b"tenant-a/signing").is_err());
        assert!(!blob.windows(6).any(|w| w == b"secret"));
    }
}
