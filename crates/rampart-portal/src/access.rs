//! The pieces of users and access that do no IO: tenant roles and the
//! role markers the extractors take, the password policy and hashing
//! (argon2id), TOTP (RFC 6238), recovery codes and the per-IP login limiter.
//!
//! TOTP is written here over the `hmac` and `sha1` crates: it is the RFC
//! 4226 dynamic truncation of one HMAC (a dozen lines), checked against the
//! RFC's own vectors, and a crate for it would bring URL, QR and clock
//! features we do not want in the portal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant role. Ordered: each role can do what the ones below it can.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything operational: devices, flows, alarms, audit.
    ReadOnly,
    /// Also works alarms (ack, resolve, notes, assign) and exports.
    Analyst,
    /// Also manages devices, tokens, rules, webhooks, settings and users
    /// below owner.
    Admin,
    /// Also manages owners, MSP grants and destructive actions.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::ReadOnly, Role::Analyst, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role a stored token or user has. Unknown strings (tokens minted
    /// before roles were enforced said `admin`; anything else) get the
    /// least: a typo never widens access.
    pub fn from_stored(s: &str) -> Role {
        Role::parse(s).unwrap_or(Role::ReadOnly)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The least role a route needs, as a type: a handler names it in its
/// extractor (`TenantCaller<role::Analyst>`), so it cannot forget it.
pub trait MinRole: Send + Sync + 'static {
    const ROLE: Role;
}

/// The role markers.
pub mod role {
    use super::{MinRole, Role};

    pub struct ReadOnly;
    pub struct Analyst;
    pub struct Admin;
    pub struct Owner;

    impl MinRole for ReadOnly {
        const ROLE: Role = Role::ReadOnly;
    }
    impl MinRole for Analyst {
        const ROLE: Role = Role::Analyst;
    }
    impl MinRole for Admin {
        const ROLE: Role = Role::Admin;
    }
    impl MinRole for Owner {
        const ROLE: Role = Role::Owner;
    }
}

// ------------------------------------------------------------- passwords

/// Shorter passwords are refused.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer passwords are refused before hashing, so a huge body cannot make
/// the portal hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 128;

/// The password policy, checked before hashing.
pub fn check_password_policy(pw: &str) -> Result<(), String> {
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes: choose a shorter one"
        ));
    }
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters: a passphrase of a few words is fine"
        ));
    }
    Ok(())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: the OWASP
/// recommendation), as a PHC string with its own random salt. CPU-heavy:
/// call it from `spawn_blocking`.
pub fn hash_password(pw: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// Checks `pw` against a PHC string (constant time inside the crate). A
/// password over the length bound is never hashed.
pub fn verify_password(phc: &str, pw: &str) -> bool {
    if pw.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(pw.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the email is
/// unknown, so a login for a missing account costs as much as a wrong
/// password and its timing does not tell them apart.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw = random_token(16);
        hash_password(&pw).unwrap_or_default()
    })
}

// ------------------------------------------------------------- TOTP

/// RFC 6238 parameters used for accounts: SHA-1, 30 s steps, 6 digits,
/// one step of clock skew either way.
pub const TOTP_STEP_SECS: i64 = 30;
pub const TOTP_DIGITS: u32 = 6;
pub const TOTP_SKEW_STEPS: i64 = 1;
/// 160-bit secrets, the HMAC-SHA1 block the RFC's examples use.
pub const TOTP_SECRET_BYTES: usize = 20;

/// HOTP (RFC 4226 §5.3) with HMAC-SHA1.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return 0,
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(digits)
}

/// TOTP (RFC 6238 §4) at unix time `t`, T0 = 0.
pub fn totp(secret: &[u8], t: i64, digits: u32) -> u32 {
    hotp(secret, (t.max(0) / TOTP_STEP_SECS) as u64, digits)
}

/// The time step a 6-digit `code` is valid for at `now` (±1 step), or
/// `None`. Every candidate is compared in constant time; the caller must
/// still accept each step only once.
pub fn check_totp(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != TOTP_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now.max(0) / TOTP_STEP_SECS;
    let mut found = None;
    for s in (step - TOTP_SKEW_STEPS)..=(step + TOTP_SKEW_STEPS) {
        if s < 0 {
            continue;
        }
        let want = format!("{:06}", hotp(secret, s as u64, TOTP_DIGITS));
        if rampart_proto::ct_eq(want.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(s);
        }
    }
    found
}

/// Base32 (RFC 4648, no padding) as authenticator apps take it.
pub fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

// ------------------------------------------------------------- tokens and codes

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    let mut raw = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Recovery codes per user.
pub const RECOVERY_CODES: usize = 10;

/// A recovery code: 80 random bits as 16 base32 characters in groups of
/// four. High-entropy, so SHA-256 is enough to store it.
pub fn new_recovery_code() -> String {
    let mut raw = [0u8; 10];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let s = data_encoding::BASE32_NOPAD
        .encode(&raw)
        .to_ascii_lowercase();
    s.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The hash a recovery code is stored and looked up as: dashes and spaces
/// dropped, case folded, so it can be typed loosely.
pub fn recovery_code_hash(code: &str) -> Option<String> {
    let norm: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if norm.len() != 16 || !norm.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(rampart_proto::sha256_hex(norm.as_bytes()))
}

// ------------------------------------------------------------- login limiter

/// Per-client-IP token bucket for login attempts. In memory: right for the
/// embedded store's single process; a scale-out deployment replaces this
/// one type with a shared (Redis) one.
pub struct LoginLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept at most; when full, the ones refilled to the brim (idle
/// clients) are dropped first, then the table is cleared (letting some
/// attempts through rather than growing without bound).
const MAX_BUCKETS: usize = 100_000;

impl LoginLimiter {
    /// `burst` attempts at once, refilled at `per_min` a minute.
    pub fn new(burst: u32, per_min: u32) -> Self {
        LoginLimiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_min.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `ip`; `Err(secs)` says when the next is allowed.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&ip) {
            let (burst, rate) = (self.burst, self.per_sec);
            map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_BUCKETS {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(entry.1).as_secs_f64() * self.per_sec;
        let tokens = (entry.0 + refill).min(self.burst);
        entry.1 = now;
        if tokens >= 1.0 {
            entry.0 = tokens - 1.0;
            Ok(())
        } else {
            entry.0 = tokens;
            Err(((1.0 - tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// RFC 6238 Appendix B (SHA-1 rows), from the third-party extraction in
    /// ../shared/testdata/totp_rfc6238 (see its PROVENANCE.md).
    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/totp_rfc6238/rfc6238_vectors_extracted.json"
        );
        let text = std::fs::read_to_string(path).expect("shared/testdata beside the repo");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["period"], 30);
        let digits = v["digits"].as_u64().unwrap() as u32;
        let secret = v["secrets_ascii"]["SHA1"].as_str().unwrap().as_bytes();
        let mut checked = 0;
        for row in v["vectors"].as_array().unwrap() {
            if row["algorithm"] != "SHA1" {
                continue;
            }
            let t = row["unix_time"].as_i64().unwrap();
            let want = row["totp"].as_str().unwrap();
            let got = format!(
                "{:0width$}",
                totp(secret, t, digits),
                width = digits as usize
            );
            assert_eq!(got, want, "t = {t}");
            checked += 1;
        }
        assert_eq!(checked, 6);
    }

    /// RFC 4226 Appendix D, as pquerna/otp's hotp_test.go lists them.
    #[test]
    fn hotp_matches_rfc4226_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/totp_rfc6238/pquerna_otp_hotp_test.go"
        );
        let text = std::fs::read_to_string(path).expect("shared/testdata beside the repo");
        // Rows look like: {0, "755224", otp.AlgorithmSHA1, secSha1},
        let mut checked = 0;
        for line in text.lines() {
            let l = line.trim();
            if !(l.starts_with('{') && l.contains("otp.AlgorithmSHA1, secSha1}")) {
                continue;
            }
            let inner = &l[1..l.find('}').unwrap()];
            let mut parts = inner.split(',').map(str::trim);
            let counter: u64 = parts.next().unwrap().parse().unwrap();
            let want = parts.next().unwrap().trim_matches('"');
            let got = format!("{:06}", hotp(b"12345678901234567890", counter, 6));
            assert_eq!(got, want, "counter {counter}");
            checked += 1;
        }
        assert!(checked >= 10, "read only {checked} rfc 4226 rows");
    }

    #[test]
    fn totp_window_is_one_step_either_way() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_109;
        let step = now / 30;
        let code = |s: i64| format!("{:06}", hotp(secret, s as u64, 6));
        assert_eq!(check_totp(secret, &code(step), now), Some(step));
        assert_eq!(check_totp(secret, &code(step - 1), now), Some(step - 1));
        assert_eq!(check_totp(secret, &code(step + 1), now), Some(step + 1));
        assert_eq!(check_totp(secret, &code(step - 2), now), None);
        assert_eq!(check_totp(secret, &code(step + 2), now), None);
        assert_eq!(check_totp(secret, "12345", now), None);
        assert_eq!(check_totp(secret, "abcdef", now), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_password(&phc, "correct horse battery"));
        assert!(!verify_password(&phc, "correct horse batterz"));
        assert!(!verify_password(
            "not a phc string",
            "correct horse battery"
        ));
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_password_policy("twelve chars").is_ok());
    }

    #[test]
    fn recovery_codes_normalise_and_are_distinct() {
        let c = new_recovery_code();
        assert_eq!(c.len(), 19);
        let h = recovery_code_hash(&c).unwrap();
        assert_eq!(
            recovery_code_hash(&c.to_ascii_uppercase().replace('-', " ")),
            Some(h)
        );
        assert_ne!(new_recovery_code(), c);
        assert_eq!(recovery_code_hash("too-short"), None);
    }

    #[test]
    fn roles_are_ordered_and_unknown_ones_get_the_least() {
        assert!(Role::ReadOnly < Role::Analyst && Role::Analyst < Role::Admin);
        assert!(Role::Admin < Role::Owner);
        assert_eq!(Role::from_stored("operator"), Role::ReadOnly);
        assert_eq!(Role::from_stored("owner"), Role::Owner);
    }

    #[test]
    fn limiter_refills_at_its_rate() {
        let l = LoginLimiter::new(2, 60);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.check(ip, t0).is_ok());
        assert!(l.check(ip, t0).is_ok());
        assert_eq!(l.check(ip, t0), Err(1));
        assert!(l.check("192.0.2.2".parse().unwrap(), t0).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_err());
    }
}
