//! Segments at rest: XChaCha20-Poly1305 under the tenant's data key.
//!
//! File layout: `b"RFSG"`, a format version byte, the data key version
//! (u32, big endian), a random 24-byte nonce, the ciphertext and its 16-byte
//! tag. The associated data binds the format version, the key version, the
//! tenant id and the blob key, so a file copied to another tenant or another
//! path (say, an old hour over a newer one) fails to open instead of
//! answering for data it does not hold. Destroying the tenant's data keys
//! makes every segment unreadable: there is no other copy of them here. A
//! random nonce per file is safe with XChaCha's 192-bit nonces.
//!
//! A [`DataKey`] is a key ring: new files are sealed under its current
//! version, and a file opens under whichever version it names, so keys
//! rotate without rewriting everything first ([`crate::FlowStore::rekey`]).

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rampart_store::TenantId;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::FlowStoreError;

const MAGIC: &[u8; 4] = b"RFSG";
pub(crate) const FORMAT_VERSION: u8 = 2;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const VERSION_LEN: usize = 4;
const HEADER_LEN: usize = MAGIC.len() + 1 + VERSION_LEN + NONCE_LEN;

/// A tenant's flow data keys: 32-byte keys by version, and the version new
/// files are sealed under. The portal unwraps them; they are zeroed when
/// dropped and never printed.
#[derive(Clone)]
pub struct DataKey {
    current: u32,
    /// (version, key), the current one among them.
    keys: Vec<(u32, [u8; 32])>,
}

impl DataKey {
    /// One key, as version 1.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey {
            current: 1,
            keys: vec![(1, bytes)],
        }
    }

    /// A ring of versions; `None` when `current` is not among them.
    pub fn ring(current: u32, keys: Vec<(u32, [u8; 32])>) -> Option<Self> {
        keys.iter()
            .any(|(v, _)| *v == current)
            .then_some(DataKey { current, keys })
    }

    /// The version new files are sealed under.
    pub fn version(&self) -> u32 {
        self.current
    }

    fn current_key(&self) -> &[u8; 32] {
        self.get(self.current).unwrap_or(&[0u8; 32])
    }

    fn get(&self, version: u32) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k)
    }

    /// A one-way name for the ring, so caches of decrypted data can be keyed
    /// by it: a caller holding other keys never hits them.
    pub(crate) fn fingerprint(&self) -> [u8; 16] {
        let mut h = Sha256::new().chain_update(b"rampart-flowstore cache key v2\0");
        for (v, k) in &self.keys {
            h.update(v.to_be_bytes());
            h.update(k);
        }
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// HMAC-SHA256 under a subkey of the current key, for the search
    /// cursors (a cursor minted before a rotation is refused after it).
    pub(crate) fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut sub = <Hmac<Sha256> as Mac>::new_from_slice(self.current_key())
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
        for (_, k) in &mut self.keys {
            k.zeroize();
        }
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn aad(tenant: TenantId, version: u32, blob_key: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(40 + blob_key.len());
    a.extend_from_slice(b"rampart-flowstore\0");
    a.push(FORMAT_VERSION);
    a.extend_from_slice(&version.to_be_bytes());
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
    let version = key.current;
    let cipher = XChaCha20Poly1305::new(key.current_key().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(HEADER_LEN..).unwrap_or_default();
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &aad(tenant, version, blob_key), body)
        .map_err(|_| FlowStoreError::Encode(format!("encrypting {blob_key}")))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The data key version a sealed file names, if it is one of ours.
pub(crate) fn sealed_version(sealed: &[u8]) -> Option<u32> {
    if sealed.len() < HEADER_LEN + TAG_LEN
        || sealed.get(..MAGIC.len()) != Some(MAGIC.as_slice())
        || sealed.get(MAGIC.len()) != Some(&FORMAT_VERSION)
    {
        return None;
    }
    let v = sealed.get(MAGIC.len() + 1..MAGIC.len() + 1 + VERSION_LEN)?;
    Some(u32::from_be_bytes(v.try_into().ok()?))
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
    let version = sealed_version(sealed).ok_or_else(fail)?;
    let k = key.get(version).ok_or_else(fail)?;
    let nonce = sealed
        .get(MAGIC.len() + 1 + VERSION_LEN..HEADER_LEN)
        .ok_or_else(fail)?;
    let (body, tag) = sealed
        .get(HEADER_LEN..)
        .ok_or_else(fail)?
        .split_at(sealed.len() - HEADER_LEN - TAG_LEN);
    let mut plain = body.to_vec();
    XChaCha20Poly1305::new(k.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad(tenant, version, blob_key),
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
        for i in [0, 4, 5, 8, 30, sealed.len() - 1] {
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
    fn a_ring_seals_under_its_current_version_and_opens_every_version_it_holds() {
        let t = TenantId(Uuid::from_u128(1));
        let v1 = DataKey::from_bytes([7; 32]);
        let old = seal(&v1, t, "k", b"old").unwrap();
        assert_eq!(sealed_version(&old), Some(1));
        let ring = DataKey::ring(2, vec![(1, [7; 32]), (2, [9; 32])]).unwrap();
        let new = seal(&ring, t, "k", b"new").unwrap();
        assert_eq!(sealed_version(&new), Some(2));
        assert_eq!(open(&ring, t, "k", &old).unwrap(), b"old");
        assert_eq!(open(&ring, t, "k", &new).unwrap(), b"new");
        // Version 1 retired: its files no longer open; version 2's do.
        let after = DataKey::ring(2, vec![(2, [9; 32])]).unwrap();
        assert!(open(&after, t, "k", &old).is_err());
        assert_eq!(open(&after, t, "k", &new).unwrap(), b"new");
        // The version is bound: relabelling a file as another version fails.
        let mut relabelled = new.clone();
        relabelled[MAGIC.len() + 4] = 1;
        assert!(open(&ring, t, "k", &relabelled).is_err());
        assert!(DataKey::ring(3, vec![(1, [7; 32])]).is_none());
        assert_ne!(ring.fingerprint(), after.fingerprint());
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
