//! `EnrollmentToken::decode` on arbitrary text; a token that decodes must
//! re-encode to one that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::token::{EnrollmentToken, MAX_TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = EnrollmentToken::decode(&String::from_utf8_lossy(data)) else {
        return;
    };
    assert!(tok.portal_url.starts_with("https://"));
    assert_eq!(tok.pin.len(), 64);
    let _ = tok.secret_hash();
    let encoded = tok.encode();
    // Decode accepts non-canonical JSON (e.g. a uuid without hyphens), so the
    // canonical form can be slightly longer than the input: only compare
    // when it is still within the length limit.
    if encoded.len() <= MAX_TOKEN_LEN {
        assert_eq!(
            EnrollmentToken::decode(&encoded).expect("re-encoded token decodes"),
            tok
        );
    }
});
