//! Bounds-checked big-endian reads. Every read returns `None` instead of
//! panicking when the input is too short, so no decoder indexes a slice.

/// `n` bytes at `at`, if they are all there.
#[inline]
pub(crate) fn bytes(b: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(n)?)
}

/// Everything from `at` on (empty when `at` is past the end).
#[inline]
pub(crate) fn tail(b: &[u8], at: usize) -> &[u8] {
    b.get(at..).unwrap_or(&[])
}

#[inline]
pub(crate) fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

#[inline]
pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let a: [u8; 2] = bytes(b, at, 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(a))
}

#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let a: [u8; 4] = bytes(b, at, 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

/// An unsigned big-endian integer of 1 to 8 bytes (IPFIX reduced-size
/// encoding, RFC 7011 §6.2). Longer input keeps only the low 8 bytes, but
/// templates never map a longer field to an integer (see `fields::accepts`).
#[inline]
pub(crate) fn uint(v: &[u8]) -> u64 {
    v.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// True when every byte is zero (used to recognise trailing padding).
#[inline]
pub(crate) fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Names used in errors about the sets of one protocol.
pub(crate) struct SetNames {
    pub header: &'static str,
    pub length: &'static str,
    pub set: &'static str,
}

/// One step of [`walk_sets`].
pub(crate) enum SetItem<'a> {
    Set { id: u16, body: &'a [u8] },
    Malformed(crate::error::DecodeError),
}

/// Walks the sets of a message from `start`: NetFlow v9 FlowSets and IPFIX
/// Sets share the layout `id u16 | length u16 | body`. Trailing zero bytes
/// are padding. A short or undersized header ends the walk with a
/// `Malformed`; a set longer than what is left yields its partial body, then
/// a `Malformed`, then ends.
pub(crate) fn walk_sets<'a>(
    msg: &'a [u8],
    start: usize,
    names: &SetNames,
    mut each: impl FnMut(SetItem<'a>),
) {
    use crate::error::DecodeError;
    let mut off = start;
    while off < msg.len() {
        let rest = tail(msg, off);
        let (Some(id), Some(len)) = (u16_at(rest, 0), u16_at(rest, 2)) else {
            if !all_zero(rest) {
                each(SetItem::Malformed(DecodeError::truncated(
                    names.header,
                    off,
                    4,
                    rest.len(),
                )));
            }
            return;
        };
        let len = usize::from(len);
        if len < 4 {
            if !all_zero(rest) {
                each(SetItem::Malformed(DecodeError::BadLength {
                    what: names.length,
                    value: len,
                    reason: "less than its own 4-byte header",
                }));
            }
            return;
        }
        let body = rest.get(4..len.min(rest.len())).unwrap_or(&[]);
        each(SetItem::Set { id, body });
        if len > rest.len() {
            each(SetItem::Malformed(DecodeError::truncated(
                names.set,
                off,
                len,
                rest.len(),
            )));
            return;
        }
        off += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 1), Some(0x0203));
        assert_eq!(u16_at(&b, 2), None);
        assert_eq!(u32_at(&b, 0), None);
        assert_eq!(bytes(&b, usize::MAX, 2), None);
        assert_eq!(tail(&b, 10), &[] as &[u8]);
        assert_eq!(uint(&[0x01, 0x00]), 256);
        assert_eq!(uint(&[]), 0);
        assert!(all_zero(&[0, 0]));
        assert!(!all_zero(&[0, 1]));
    }
}
