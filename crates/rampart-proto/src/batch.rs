//! Sealed upload batches: the only way data leaves an agent.
//!
//! A batch is serialized by its producer, zstd-compressed, then HPKE-sealed
//! (RFC 9180 base mode) to the tenant's upload key. The frame header travels
//! in the clear so the portal can deduplicate and route before opening, but it
//! is bound into the AEAD associated data together with the tenant and device
//! ids: a header edited in transit, or a batch replayed under another device's
//! identity, fails to open.
//!
//! Frame layout (all integers big-endian):
//! ```text
//! magic "RPB1" | batch_id [16] | priority u8 | created_at i64 | items u32
//! | kind_len u8 | kind [kind_len] | enc [32] | ciphertext [..]
//! ```

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{HpkeAead, HpkeKdf, HpkeKem, HpkePublicKey, HpkeSecretKey};
use crate::{ProtoError, Result};
use hpke::{Deserializable, Serializable};

const MAGIC: &[u8; 4] = b"RPB1";
const ENC_LEN: usize = 32;
const INFO: &[u8] = b"rampart upload batch v1";
const AAD_CONTEXT: &[u8] = b"rampart-batch-v1\0";

/// Largest frame the portal accepts in one request.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest plaintext a frame may decompress to (zip-bomb bound).
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024 * 1024;
/// Longest batch kind name.
pub const MAX_KIND_LEN: usize = 32;

/// Outbox priority: lower number goes first and is dropped last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Priority {
    Alarm = 0,
    Health = 1,
    Data = 2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Alarm, Priority::Health, Priority::Data];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Alarm => "alarm",
            Priority::Health => "health",
            Priority::Data => "data",
        }
    }
}

/// The clear-text (but authenticated) part of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Chosen by the agent; the portal ingests each id at most once.
    pub batch_id: Uuid,
    pub priority: Priority,
    /// Unix seconds.
    pub created_at: i64,
    /// Number of records inside, as counted by the producer.
    pub items: u32,
    /// What the plaintext holds, e.g. `health`, `events`, `flows`.
    pub kind: String,
}

impl BatchHeader {
    fn encode(&self) -> Result<Vec<u8>> {
        if self.kind.is_empty()
            || self.kind.len() > MAX_KIND_LEN
            || !self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ProtoError::malformed(
                "batch kind",
                "use 1 to 32 characters of [a-z0-9_]",
            ));
        }
        let mut h = Vec::with_capacity(4 + 16 + 1 + 8 + 4 + 1 + self.kind.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(self.batch_id.as_bytes());
        h.push(self.priority as u8);
        h.extend_from_slice(&self.created_at.to_be_bytes());
        h.extend_from_slice(&self.items.to_be_bytes());
        h.push(self.kind.len() as u8);
        h.extend_from_slice(self.kind.as_bytes());
        Ok(h)
    }
}

/// A parsed but still sealed frame.
#[derive(Debug)]
pub struct Frame<'a> {
    pub header: BatchHeader,
    header_bytes: &'a [u8],
    enc: &'a [u8],
    ciphertext: &'a [u8],
}

fn aad(tenant: Uuid, device: Uuid, header_bytes: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_CONTEXT.len() + 32 + header_bytes.len());
    a.extend_from_slice(AAD_CONTEXT);
    a.extend_from_slice(tenant.as_bytes());
    a.extend_from_slice(device.as_bytes());
    a.extend_from_slice(header_bytes);
    a
}

/// Compresses and seals `plaintext` into a frame for `tenant`'s upload key.
pub fn seal(
    header: &BatchHeader,
    plaintext: &[u8],
    upload_key: &HpkePublicKey,
    tenant: Uuid,
    device: Uuid,
) -> Result<Vec<u8>> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(ProtoError::TooLarge {
            what: "batch plaintext",
            size: plaintext.len(),
            limit: MAX_PLAINTEXT_BYTES,
        });
    }
    let header_bytes = header.encode()?;
    let compressed =
        zstd::bulk::compress(plaintext, 3).map_err(|e| ProtoError::malformed("batch", e))?;
    let (enc, ct) = hpke::single_shot_seal::<HpkeAead, HpkeKdf, HpkeKem, _>(
        &hpke::OpModeS::Base,
        &upload_key.0,
        INFO,
        &compressed,
        &aad(tenant, device, &header_bytes),
        &mut rand::rngs::OsRng,
    )
    .map_err(|e| ProtoError::malformed("batch", format!("hpke seal: {e:?}")))?;
    let mut out = header_bytes;
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    if out.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::TooLarge {
            what: "sealed batch",
            size: out.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(out)
}

/// Splits a frame into header and sealed parts without decrypting.
pub fn parse(frame: &[u8]) -> Result<Frame<'_>> {
    const FIXED: usize = 4 + 16 + 1 + 8 + 4 + 1;
    let bad = |d: &str| ProtoError::malformed("batch frame", d);
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::TooLarge {
            what: "batch frame",
            size: frame.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    if frame.len() < FIXED {
        return Err(bad("shorter than its fixed header"));
    }
    if &frame[..4] != MAGIC {
        return Err(bad("wrong magic: expected RPB1"));
    }
    let batch_id = Uuid::from_slice(&frame[4..20]).map_err(|e| bad(&e.to_string()))?;
    let priority = Priority::from_u8(frame[20]).ok_or_else(|| bad("unknown priority"))?;
    let created_at = i64::from_be_bytes(frame[21..29].try_into().map_err(|_| bad("time"))?);
    let items = u32::from_be_bytes(frame[29..33].try_into().map_err(|_| bad("items"))?);
    let kind_len = frame[33] as usize;
    if kind_len == 0 || kind_len > MAX_KIND_LEN {
        return Err(bad("kind length out of range"));
    }
    let header_end = FIXED + kind_len;
    if frame.len() < header_end + ENC_LEN + 16 {
        return Err(bad("truncated before the ciphertext"));
    }
    let kind = std::str::from_utf8(&frame[FIXED..header_end])
        .map_err(|_| bad("kind is not utf-8"))?
        .to_string();
    let header = BatchHeader {
        batch_id,
        priority,
        created_at,
        items,
        kind,
    };
    // Re-encoding validates the kind's alphabet with the same rule as sealing.
    header.encode()?;
    Ok(Frame {
        header,
        header_bytes: &frame[..header_end],
        enc: &frame[header_end..header_end + ENC_LEN],
        ciphertext: &frame[header_end + ENC_LEN..],
    })
}

impl Frame<'_> {
    /// Decrypts and decompresses; fails unless sealed for this tenant key and
    /// bound to this tenant and device.
    pub fn open(&self, key: &HpkeSecretKey, tenant: Uuid, device: Uuid) -> Result<Vec<u8>> {
        let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(self.enc)
            .map_err(|_| ProtoError::Decrypt)?;
        let compressed = hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
            &hpke::OpModeR::Base,
            key.inner(),
            &enc,
            INFO,
            self.ciphertext,
            &aad(tenant, device, self.header_bytes),
        )
        .map_err(|_| ProtoError::Decrypt)?;
        decompress_bounded(&compressed)
    }
}

fn decompress_bounded(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut dec =
        zstd::stream::read::Decoder::new(data).map_err(|e| ProtoError::malformed("batch", e))?;
    // Size the buffer from the frame's declared content size; growing it as
    // we go was the slow part of opening a batch. The header is the sender's
    // word, so bound it by the limit and by a generous ratio to the
    // compressed size: a lying header cannot make a tiny batch allocate much.
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .ok()
        .flatten()
        .unwrap_or(0);
    let cap = declared
        .min(MAX_PLAINTEXT_BYTES as u64)
        .min((data.len() as u64).saturating_mul(128) + 64 * 1024);
    let mut out = Vec::with_capacity(cap as usize);
    let n = (&mut dec)
        .take(MAX_PLAINTEXT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ProtoError::malformed("batch compression", e))?;
    if n > MAX_PLAINTEXT_BYTES {
        return Err(ProtoError::TooLarge {
            what: "decompressed batch",
            size: n,
            limit: MAX_PLAINTEXT_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BatchHeader {
        BatchHeader {
            batch_id: Uuid::new_v4(),
            priority: Priority::Data,
            created_at: 1_700_000_000,
            items: 2,
            kind: "events".into(),
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let (sk, pk) = HpkeSecretKey::generate();
        let (t, d) = (Uuid::new_v4(), Uuid::new_v4());
        let h = header();
        let frame = seal(&h, b"{\"a\":1}\n{\"a\":2}\n", &pk, t, d).unwrap();
        let parsed = parse(&frame).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.open(&sk, t, d).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
    }

    #[test]
    fn batch_bound_to_other_device_or_edited_header_fails_to_open() {
        let (sk, pk) = HpkeSecretKey::generate();
        let (t, d) = (Uuid::new_v4(), Uuid::new_v4());
        let frame = seal(&header(), b"payload", &pk, t, d).unwrap();
        let parsed = parse(&frame).unwrap();
        assert!(parsed.open(&sk, t, Uuid::new_v4()).is_err());
        assert!(parsed.open(&sk, Uuid::new_v4(), d).is_err());
        let (other_sk, _) = HpkeSecretKey::generate();
        assert!(parsed.open(&other_sk, t, d).is_err());
        // Raise the item count in the clear header: authentication must fail.
        let mut edited = frame.clone();
        edited[32] ^= 1;
        assert!(parse(&edited).unwrap().open(&sk, t, d).is_err());
    }

    #[test]
    fn plaintext_never_appears_in_the_frame() {
        let (_sk, pk) = HpkeSecretKey::generate();
        let secret = b"10.1.2.3 super-secret-hostname";
        let frame = seal(&header(), secret, &pk, Uuid::new_v4(), Uuid::new_v4()).unwrap();
        assert!(!frame.windows(10).any(|w| w == &secret[..10]));
    }

    #[test]
    fn malformed_frames_are_errors() {
        for f in [
            &b""[..],
            b"RPB1",
            b"XXXX0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse(f).is_err());
        }
        let mut bad_kind = seal(
            &header(),
            b"x",
            &HpkeSecretKey::generate().1,
            Uuid::nil(),
            Uuid::nil(),
        )
        .unwrap();
        bad_kind[33] = 200;
        assert!(parse(&bad_kind).is_err());
    }

    /// RFC 9180 Appendix A vectors, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    /// ChaCha20-Poly1305, base mode: key derivation matches, and the suite we
    /// seal with recovers every published plaintext from `enc` and `ct`.
    #[test]
    fn rfc9180_vectors_open() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/hpke_rfc9180/subset_x25519_hkdfsha256.json"
        );
        let data = std::fs::read_to_string(path).expect("shared/testdata beside the repo");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&data).unwrap();
        let h = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
        let mut checked = 0;
        for v in vectors
            .iter()
            .filter(|v| v["mode"] == 0 && v["aead_id"] == 3)
        {
            let (sk, pk) = HpkeSecretKey::derive(&h(&v["ikmR"]));
            assert_eq!(pk.to_bytes(), h(&v["pkRm"]));
            assert_eq!(&*sk.secret_bytes(), &h(&v["skRm"]));
            let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(&h(&v["enc"])).unwrap();
            let mut ctx = hpke::setup_receiver::<HpkeAead, HpkeKdf, HpkeKem>(
                &hpke::OpModeR::Base,
                sk.inner(),
                &enc,
                &h(&v["info"]),
            )
            .unwrap();
            // Encryptions are numbered by sequence: open them in order.
            for e in v["encryptions"].as_array().unwrap() {
                let pt = ctx.open(&h(&e["ct"]), &h(&e["aad"])).unwrap();
                assert_eq!(pt, h(&e["pt"]));
                checked += 1;
            }
        }
        assert_eq!(
            checked, 257,
            "every encryption of the base-mode ChaCha20-Poly1305 vector"
        );
    }
}
