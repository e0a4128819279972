//! The audit log's hash: one definition, used by the store when it appends
//! and by the portal when it verifies.
//!
//! `hash = SHA-256(encoding)`, where the encoding of an entry is, in order
//! and with nothing between the parts:
//!
//! | part        | bytes                                                        |
//! |-------------|--------------------------------------------------------------|
//! | magic       | the 16 ASCII bytes `rampart-audit-v1`                        |
//! | `seq`       | 8, unsigned big-endian                                       |
//! | `tenant_id` | 1 byte `0x00` for none; or `0x01` then the UUID's 16 bytes   |
//! | `at`        | 8, signed (two's complement) big-endian, unix seconds        |
//! | `actor`     | 4-byte big-endian length, then its UTF-8 bytes               |
//! | `action`    | same                                                         |
//! | `target`    | same                                                         |
//! | `detail`    | same: the JSON text exactly as stored                        |
//! | `prev_hash` | same: 4-byte length (32), then the previous entry's hash     |
//!
//! Why this shape: every variable-length field is length-prefixed, so no
//! two different entries encode to the same bytes (a `target` ending in
//! what looks like the start of `detail` cannot be confused with it); the
//! magic names the format version, so a future layout cannot collide with
//! this one; `detail` is hashed as its stored text rather than re-encoded,
//! because JSON has no canonical form we could count on across serde
//! versions and features. The first entry's `prev_hash` is [`GENESIS`].

use sha2::{Digest, Sha256};

use crate::{AuditEntry, TenantId};

/// Format magic, hashed first.
pub const MAGIC: &[u8; 16] = b"rampart-audit-v1";
/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

fn put(h: &mut Sha256, bytes: &[u8]) {
    // Fields are bounded far below 4 GiB by the portal; saturating keeps
    // this total rather than panicking on an impossible input.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

/// The hash of `e` over every field but `e.hash` (see the module docs).
pub fn entry_hash(e: &AuditEntry) -> [u8; 32] {
    hash_parts(
        e.seq,
        e.tenant_id,
        e.at,
        [&e.actor, &e.action, &e.target, &e.detail],
        &e.prev_hash,
    )
}

fn hash_parts(
    seq: u64,
    tenant: Option<TenantId>,
    at: i64,
    texts: [&str; 4],
    prev_hash: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(seq.to_be_bytes());
    match tenant {
        None => h.update([0u8]),
        Some(t) => {
            h.update([1u8]);
            h.update(t.0.as_bytes());
        }
    }
    h.update(at.to_be_bytes());
    for t in texts {
        put(&mut h, t.as_bytes());
    }
    put(&mut h, prev_hash);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// The layout of the module docs, written out byte by byte.
    #[test]
    fn hash_is_the_documented_layout() {
        let tenant = Uuid::from_bytes([7; 16]);
        let e = AuditEntry {
            seq: 258,
            tenant_id: Some(TenantId(tenant)),
            at: -2,
            actor: "cli".into(),
            action: "tenant.create".into(),
            target: "tenant:acme".into(),
            detail: r#"{"domain":"acme.example"}"#.into(),
            prev_hash: vec![9; 32],
            hash: vec![],
        };
        let mut bytes = b"rampart-audit-v1".to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        bytes.push(1);
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        for s in [
            "cli",
            "tenant.create",
            "tenant:acme",
            r#"{"domain":"acme.example"}"#,
        ] {
            bytes.extend_from_slice(&(s.len() as u32).to_be_bytes());
            bytes.extend_from_slice(s.as_bytes());
        }
        bytes.extend_from_slice(&[0, 0, 0, 32]);
        bytes.extend_from_slice(&[9; 32]);
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(entry_hash(&e), want);

        // No tenant: one 0x00 byte instead of 0x01 and the UUID.
        let portal_wide = AuditEntry {
            tenant_id: None,
            ..e.clone()
        };
        let mut bytes2 = bytes[..24].to_vec();
        bytes2.push(0);
        bytes2.extend_from_slice(&bytes[24 + 17..]);
        assert_eq!(
            entry_hash(&portal_wide),
            <[u8; 32]>::from(Sha256::digest(&bytes2))
        );
        // Length prefixes: moving a byte from one field to the next changes the hash.
        let shifted = AuditEntry {
            actor: "cl".into(),
            action: "itenant.create".into(),
            ..e.clone()
        };
        assert_ne!(entry_hash(&shifted), entry_hash(&e));
    }
}
