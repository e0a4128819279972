//! Segments at rest: XChaCha20-Poly1305 under the tenant's data key.
//!
//! File layout: `b"RFSG"`, a format version byte, a random 24-byte nonce,
//! the ciphertext and its 16-byte tag. The associated data binds the format
//! version, the tenant id and the blob key, so a file copied to another
//! tenant or another path (say, an old hour over a newer one) fails to open
//! instead of answering for data it does not hold. Destroying the tenant's
//! data key makes every segment unreadable: there is no other copy of it
//! here. A random nonce per file is safe with XChaCha's 192-bit nonces.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rampart_store::TenantId;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::FlowStoreError;

const MAGIC: &[u8; 4] = b"RFSG";
pub(crate) const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;

/// A tenant's 32-byte flow data key. The portal derives or unwraps it; it
/// is zeroed when dropped and never printed.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }

    /// A one-way name for the key, so caches of decrypted data can be keyed
    /// by it: a caller holding another key never hits them.
    pub(crate) fn fingerprint(&self) -> [u8; 16] {
        let d = Sha256::new()
            .chain_update(b"rampart-flowstore cache key v1\0")
            .chain_update(self.0)
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// HMAC-SHA256 under a subkey of this key, for the search cursors.
    pub(crate) fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut sub = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .map(|m| m.chain_update(label).finalize().into_bytes())
            .unwrap_or_default();
        let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(&sub) {
            Ok(m) => m,
            // HMAC takes keys of any length; this arm is unreachable.
            Err(_) => return [0u8; 32],
        };
        sub.as_mut_slice().zeroize();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn aad(tenant: TenantId, blob_key: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + blob_key.len());
    a.extend_from_slice(b"rampart-flowstore\0");
    a.push(FORMAT_VERSION);
    a.extend_from_slice(tenant.0.as_bytes());
    a.extend_from_slice(blob_key.as_bytes());
    a
}

/// Encrypts a segment file for `tenant` at `blob_key`.
pub(crate) fn seal(
    key: &DataKey,
    tenant: TenantId,
    blob_key: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, FlowStoreError> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(HEADER_LEN..).unwrap_or_default();
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &aad(tenant, blob_key), body)
        .map_err(|_| FlowStoreError::Encode(format!("encrypting {blob_key}")))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts a segment file; any mismatch (key, tenant, path, version or a
/// flipped bit) is the same error, which names the file.
pub(crate) fn open(
    key: &DataKey,
    tenant: TenantId,
    blob_key: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, FlowStoreError> {
    let fail = || FlowStoreError::Decrypt(blob_key.to_string());
    if sealed.len() < HEADER_LEN + TAG_LEN
        || sealed.get(..MAGIC.len()) != Some(MAGIC.as_slice())
        || sealed.get(MAGIC.len()) != Some(&FORMAT_VERSION)
    {
        return Err(fail());
    }
    let nonce = sealed.get(MAGIC.len() + 1..HEADER_LEN).ok_or_else(fail)?;
    let (body, tag) = sealed
        .get(HEADER_LEN..)
        .ok_or_else(fail)?
        .split_at(sealed.len() - HEADER_LEN - TAG_LEN);
    let mut plain = body.to_vec();
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad(tenant, blob_key),
            &mut plain,
            Tag::from_slice(tag),
        )
        .map_err(|_| fail())?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_segment_opens_only_with_its_key_tenant_and_path() {
        let k = DataKey::from_bytes([7; 32]);
        let t = TenantId(Uuid::from_u128(1));
        let sealed = seal(&k, t, "flows/a/raw/1/x.seg", b"parquet bytes").unwrap();
        assert_eq!(
            open(&k, t, "flows/a/raw/1/x.seg", &sealed).unwrap(),
            b"parquet bytes"
        );
        assert!(open(
            &DataKey::from_bytes([8; 32]),
            t,
            "flows/a/raw/1/x.seg",
            &sealed
        )
        .is_err());
        assert!(open(
            &k,
            TenantId(Uuid::from_u128(2)),
            "flows/a/raw/1/x.seg",
            &sealed
        )
        .is_err());
        assert!(open(&k, t, "flows/a/raw/2/x.seg", &sealed).is_err());
        for i in [0, 4, 5, 30, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                open(&k, t, "flows/a/raw/1/x.seg", &bad).is_err(),
                "flip at {i}"
            );
        }
        for n in [0, 10, HEADER_LEN + TAG_LEN - 1] {
            assert!(open(&k, t, "flows/a/raw/1/x.seg", &sealed[..n]).is_err());
        }
    }

    #[test]
    fn nonces_differ_per_file() {
        let k = DataKey::from_bytes([7; 32]);
        let t = TenantId(Uuid::from_u128(1));
        let a = seal(&k, t, "k", b"same").unwrap();
        let b = seal(&k, t, "k", b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(k.fingerprint(), DataKey::from_bytes([8; 32]).fingerprint());
        assert_eq!(format!("{k:?}"), "DataKey(..)");
    }
}
