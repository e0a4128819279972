//! Webhook signing: the documented scheme, and the retry schedule.
//!
//! Every delivery carries
//!
//! ```text
//! Rampart-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```
//!
//! where `<body>` is the exact bytes of the request body. It is Stripe's
//! scheme (same layout, same signed string), so receivers can reuse
//! well-known verification code. To verify: split the header on `,`, take
//! `t` and every `v1`, refuse a `t` further than the tolerance from your
//! clock (replay protection), compute the HMAC over `t`, `.` and the raw
//! body, and accept if it equals any `v1` (compare in constant time).
//! Several `v1=` appear while a secret is being rotated: one per active
//! secret. Unknown keys (such as a future `v2`) are ignored, and so are
//! `v1` values that are not hex.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Rampart-Signature";
/// Tolerance suggested to receivers, in seconds (Stripe's default too).
pub const DEFAULT_TOLERANCE_S: i64 = 300;
/// Longest header accepted by [`verify`]: a handful of signatures.
const MAX_HEADER_LEN: usize = 4096;

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature header: the request was not signed")]
    Missing,
    #[error("signature header is malformed: expected t=<unix seconds>,v1=<hex>")]
    BadFormat,
    #[error("signature header has no v1 signature: sign with the v1 scheme")]
    NoSignature,
    #[error("signature timestamp is {age_s} s old, beyond the tolerance: refuse it as a possible replay, or check the clocks")]
    Stale { age_s: i64 },
    #[error(
        "signature timestamp is {ahead_s} s in the future, beyond the tolerance: check the clocks"
    )]
    Future { ahead_s: i64 },
    #[error("no signature matches: check the webhook secret")]
    Mismatch,
}

/// HMAC-SHA256(secret, "<t>.<body>"). `None` only if the MAC refused the
/// key, which HMAC never does (RFC 2104 hashes long keys); both callers
/// then fail closed rather than fall back to some other key.
fn tag(secret: &[u8], t: i64, body: &[u8]) -> Option<[u8; 32]> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m.finalize().into_bytes().into())
}

/// The header value for `body` signed at `t` (unix seconds).
/// (Were the key ever refused, the header would carry no `v1`, which every
/// receiver refuses.)
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    match tag(secret, t, body) {
        Some(tag) => format!("t={t},v1={}", hex::encode(tag)),
        None => format!("t={t}"),
    }
}

/// Checks a header value against `body` at `now` (unix seconds), allowing
/// `tolerance_s` of clock difference either way (negative counts as 0).
/// The comparison is constant-time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(VerifyError::Missing);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(VerifyError::BadFormat);
    }
    let mut t: Option<i64> = None;
    let mut sigs: Vec<[u8; 32]> = Vec::new();
    let mut saw_v1 = false;
    for item in header.split(',') {
        let (k, v) = item.trim().split_once('=').ok_or(VerifyError::BadFormat)?;
        match k {
            "t" => {
                if t.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VerifyError::BadFormat);
                }
                t = Some(v.parse().map_err(|_| VerifyError::BadFormat)?);
            }
            "v1" => {
                saw_v1 = true;
                // Not hex, or not 32 bytes: cannot match, ignored.
                let mut buf = [0u8; 32];
                if hex::decode_to_slice(v, &mut buf).is_ok() {
                    sigs.push(buf);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::BadFormat)?;
    if !saw_v1 {
        return Err(VerifyError::NoSignature);
    }
    let tol = tolerance_s.max(0);
    let age = now.saturating_sub(t);
    if age > tol {
        return Err(VerifyError::Stale { age_s: age });
    }
    if age < -tol {
        return Err(VerifyError::Future {
            ahead_s: age.saturating_neg(),
        });
    }
    let expected = tag(secret, t, body).ok_or(VerifyError::Mismatch)?;
    let mut ok = subtle::Choice::from(0);
    for s in &sigs {
        ok |= expected.ct_eq(s);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The retry schedule of a webhook delivery: exponential, capped, then
/// given up (the delivery goes to the dead-letter list). Deterministic:
/// the caller adds jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure, in seconds.
    pub base_s: u64,
    /// Longest delay, in seconds.
    pub max_s: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 10 s, doubling, capped at 1 h, 15 attempts: retries span about
    /// 6.4 hours (10+20+...+2560 s, then five at an hour), long enough to
    /// ride out a receiver's deploy or a night-time outage of a small
    /// team's endpoint, short enough that the dead letter is still news.
    fn default() -> Self {
        Backoff {
            base_s: 10,
            max_s: 3600,
            max_attempts: 15,
        }
    }
}

impl Backoff {
    /// Seconds to wait after `attempt` failed attempts (1 = the first
    /// delivery failed) before the next one: `base · 2^(attempt-1)`,
    /// at most `max_s`; `None` once `max_attempts` attempts have failed,
    /// meaning dead letter. `attempt` 0 (nothing failed yet) is 0 s.
    pub fn delay_after(&self, attempt: u32) -> Option<u64> {
        if attempt == 0 {
            return Some(0);
        }
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX);
        Some(self.base_s.saturating_mul(factor).min(self.max_s))
    }
}
