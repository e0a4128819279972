//! Key types: Ed25519 for signatures, X25519 HPKE (RFC 9180) for sealing.
//!
//! The HPKE suite is fixed: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, base mode. A fixed suite means no negotiation to get wrong.

use ed25519_dalek::{Signer, Verifier};
use hpke::{Deserializable, Kem as _, Serializable};
use zeroize::Zeroizing;

use crate::{b64, unb64, ProtoError, Result};

pub type HpkeKem = hpke::kem::X25519HkdfSha256;
pub type HpkeKdf = hpke::kdf::HkdfSha256;
pub type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// An Ed25519 signing key. The secret bytes are zeroized on drop.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_secret(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ProtoError::malformed("ed25519 secret key", "expected 32 bytes"))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&arr)))
    }

    /// The secret bytes, for wrapping. Never write these anywhere unwrapped.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ProtoError::malformed("ed25519 public key", "expected 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&arr)
            .map(VerifyingKey)
            .map_err(|e| ProtoError::malformed("ed25519 public key", e))
    }

    pub fn from_b64(s: &str) -> Result<Self> {
        Self::from_bytes(&unb64("ed25519 public key", s, 32)?)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn to_b64(&self) -> String {
        b64(&self.to_bytes())
    }

    /// Strict verification (rejects small-order and non-canonical encodings).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| ProtoError::BadSignature)?;
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| ProtoError::BadSignature)?;
        // `verify_strict` implies `verify`; keep the trait import honest.
        debug_assert!(self.0.verify(msg, &sig).is_ok());
        Ok(())
    }
}

/// An HPKE recipient private key (X25519).
pub struct HpkeSecretKey(<HpkeKem as hpke::Kem>::PrivateKey);

/// An HPKE recipient public key (X25519).
#[derive(Clone)]
pub struct HpkePublicKey(pub(crate) <HpkeKem as hpke::Kem>::PublicKey);

impl HpkeSecretKey {
    pub fn generate() -> (HpkeSecretKey, HpkePublicKey) {
        let (sk, pk) = HpkeKem::gen_keypair(&mut rand::rngs::OsRng);
        (HpkeSecretKey(sk), HpkePublicKey(pk))
    }

    /// Deterministic derivation from input keying material (RFC 9180 §7.1.3).
    pub fn derive(ikm: &[u8]) -> (HpkeSecretKey, HpkePublicKey) {
        let (sk, pk) = HpkeKem::derive_keypair(ikm);
        (HpkeSecretKey(sk), HpkePublicKey(pk))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(bytes)
            .map(HpkeSecretKey)
            .map_err(|e| ProtoError::malformed("hpke private key", format!("{e:?}")))
    }

    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    pub fn public_key(&self) -> HpkePublicKey {
        HpkePublicKey(HpkeKem::sk_to_pk(&self.0))
    }

    pub(crate) fn inner(&self) -> &<HpkeKem as hpke::Kem>::PrivateKey {
        &self.0
    }
}

impl HpkePublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        <HpkeKem as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map(HpkePublicKey)
            .map_err(|e| ProtoError::malformed("hpke public key", format!("{e:?}")))
    }

    pub fn from_b64(s: &str) -> Result<Self> {
        Self::from_bytes(&unb64("hpke public key", s, 32)?)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }

    pub fn to_b64(&self) -> String {
        b64(&self.to_bytes())
    }
}

impl std::fmt::Debug for HpkeSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpkeSecretKey(..)")
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(pub={})", self.verifying_key().to_b64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_over_other_message_is_refused() {
        let k = SigningKey::generate();
        let sig = k.sign(b"hello");
        k.verifying_key().verify(b"hello", &sig).unwrap();
        assert!(k.verifying_key().verify(b"hellO", &sig).is_err());
        assert!(k.verifying_key().verify(b"hello", &sig[..63]).is_err());
    }

    #[test]
    fn keys_round_trip_through_bytes() {
        let k = SigningKey::generate();
        let k2 = SigningKey::from_secret(&k.secret_bytes()).unwrap();
        assert_eq!(k.verifying_key(), k2.verifying_key());
        let (sk, pk) = HpkeSecretKey::generate();
        let sk2 = HpkeSecretKey::from_bytes(&sk.secret_bytes()).unwrap();
        assert_eq!(sk2.public_key().to_bytes(), pk.to_bytes());
        assert_eq!(
            HpkePublicKey::from_b64(&pk.to_b64()).unwrap().to_bytes(),
            pk.to_bytes()
        );
    }
}
