//! Search cursors and the order search pages follow.
//!
//! Search returns rows in the order of [`row_key`]: flow start first, then
//! every other field, so the order is total up to rows that are identical in
//! every field, and such rows are interchangeable. A cursor is the key of
//! the last row returned and how many rows equal to it were returned: the
//! next page starts right after them. Because it names content, not a file
//! position, a cursor survives compaction rewriting the segments between two
//! pages.
//!
//! A cursor is authenticated with an HMAC under a subkey of the tenant's
//! data key over the tenant id and its content, so one that was edited, or
//! minted for another tenant, is refused rather than trusted. It is not
//! bound to the query window, because the portal's default window moves
//! with the clock between pages.

use std::net::IpAddr;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rampart_store::TenantId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle_eq::ct_eq;

use crate::crypt::DataKey;
use crate::model::{direction_code, FlowRow};
use crate::segment::addr16;
use crate::FlowStoreError;

/// Length of [`row_key`].
pub(crate) const ROW_KEY_LEN: usize = 154;
pub(crate) type RowKey = [u8; ROW_KEY_LEN];

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const RAW_LEN: usize = 1 + 4 + ROW_KEY_LEN + MAC_LEN;
/// Longest cursor text accepted (base64 of [`RAW_LEN`] bytes is 234).
const MAX_TEXT: usize = 256;

struct KeyWriter {
    buf: RowKey,
    at: usize,
}

impl KeyWriter {
    fn put(&mut self, b: &[u8]) {
        for (slot, v) in self.buf.iter_mut().skip(self.at).zip(b) {
            *slot = *v;
        }
        self.at += b.len();
    }

    fn addr(&mut self, a: IpAddr) {
        self.put(&[if a.is_ipv4() { 4 } else { 6 }]);
        self.put(&addr16(a));
    }
}

/// The total order of search results, as bytes (big-endian fields, start
/// time first), so comparing keys compares rows.
pub(crate) fn row_key(r: &FlowRow) -> RowKey {
    let f = &r.flow;
    let mut w = KeyWriter {
        buf: [0; ROW_KEY_LEN],
        at: 0,
    };
    w.put(&f.start_ms.to_be_bytes());
    w.put(&f.end_ms.to_be_bytes());
    w.addr(f.src_addr);
    w.addr(f.dst_addr);
    w.put(&f.src_port.to_be_bytes());
    w.put(&f.dst_port.to_be_bytes());
    w.put(&[f.protocol]);
    w.put(r.device.as_bytes());
    w.put(&f.bytes.to_be_bytes());
    w.put(&f.packets.to_be_bytes());
    w.put(&[f.tcp_flags]);
    w.put(&f.in_if.to_be_bytes());
    w.put(&f.out_if.to_be_bytes());
    w.put(&[direction_code(f.direction)]);
    w.addr(f.exporter);
    w.put(&f.sampling_rate.to_be_bytes());
    w.put(&f.resample.to_be_bytes());
    w.put(&f.domain_id.to_be_bytes());
    w.put(&[f.flags]);
    // Labels are printable ASCII, so zero padding sorts like the string.
    let mut app = [0u8; 15];
    for (slot, b) in app.iter_mut().zip(f.app.as_str().bytes()) {
        *slot = b;
    }
    w.put(&app);
    w.put(&r.src_country.normalized().0);
    w.put(&r.dst_country.normalized().0);
    w.put(&r.src_asn.to_be_bytes());
    w.put(&r.dst_asn.to_be_bytes());
    debug_assert_eq!(w.at, ROW_KEY_LEN);
    w.buf
}

/// Where the next page of a search starts. Opaque; serializes to a
/// URL-safe string.
#[derive(Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn mac(key: &DataKey, tenant: TenantId, body: &[u8]) -> [u8; MAC_LEN] {
        let full = key.mac(
            b"rampart-flowstore search cursor v1",
            &[tenant.0.as_bytes(), body],
        );
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    pub(crate) fn make(key: &DataKey, tenant: TenantId, last: &RowKey, equal_seen: u32) -> Cursor {
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&equal_seen.to_be_bytes());
        raw.extend_from_slice(last);
        let mac = Self::mac(key, tenant, &raw);
        raw.extend_from_slice(&mac);
        Cursor(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The position this cursor names, if it was made under this key for
    /// this tenant.
    pub(crate) fn open(
        &self,
        key: &DataKey,
        tenant: TenantId,
    ) -> Result<(RowKey, u32), FlowStoreError> {
        let raw = decode(&self.0)?;
        let (body, mac) = raw.split_at(RAW_LEN - MAC_LEN);
        if !ct_eq(&Self::mac(key, tenant, body), mac) {
            return Err(FlowStoreError::BadCursor);
        }
        let mut seen = [0u8; 4];
        seen.copy_from_slice(body.get(1..5).ok_or(FlowStoreError::BadCursor)?);
        let mut last = [0u8; ROW_KEY_LEN];
        last.copy_from_slice(body.get(5..).ok_or(FlowStoreError::BadCursor)?);
        Ok((last, u32::from_be_bytes(seen)))
    }
}

fn decode(s: &str) -> Result<Vec<u8>, FlowStoreError> {
    if s.len() > MAX_TEXT {
        return Err(FlowStoreError::BadCursor);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| FlowStoreError::BadCursor)?;
    if raw.len() != RAW_LEN || raw.first() != Some(&VERSION) {
        return Err(FlowStoreError::BadCursor);
    }
    Ok(raw)
}

mod subtle_eq {
    /// Compares MACs without an early exit, so timing does not reveal how
    /// much of a forged one was right.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Checks the form only; the authenticity check needs the tenant's key and
/// happens in the search.
impl FromStr for Cursor {
    type Err = FlowStoreError;
    fn from_str(s: &str) -> Result<Self, FlowStoreError> {
        decode(s)?;
        Ok(Cursor(s.to_string()))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn tampered_or_foreign_cursors_are_errors() {
        let k = DataKey::from_bytes([3; 32]);
        let t = TenantId(Uuid::from_u128(1));
        let c = Cursor::make(&k, t, &[9; ROW_KEY_LEN], 2);
        assert!(c.as_str().len() <= MAX_TEXT);
        assert!(c
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let parsed: Cursor = c.to_string().parse().unwrap();
        assert_eq!(parsed.open(&k, t).unwrap(), ([9; ROW_KEY_LEN], 2));
        assert!(c.open(&DataKey::from_bytes([4; 32]), t).is_err());
        assert!(c.open(&k, TenantId(Uuid::from_u128(2))).is_err());
        // Every single-character edit is refused, by form or by MAC.
        let s = c.to_string();
        for i in 0..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(b).unwrap();
            let ok = edited
                .parse::<Cursor>()
                .is_ok_and(|c| c.open(&k, t).is_ok());
            assert!(!ok, "edit at {i} accepted");
        }
        for junk in ["", "!!!", "AAAA", &"A".repeat(10_000)] {
            assert!(junk.parse::<Cursor>().is_err());
        }
    }
}
