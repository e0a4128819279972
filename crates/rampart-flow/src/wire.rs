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
