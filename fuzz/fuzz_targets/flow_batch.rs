//! `rampart_flow::codec::decode` on arbitrary bytes: the plaintext of a
//! `flows` batch, which any enrolled device can make say anything. Must never
//! panic, never return more records than the limit or than the bytes can
//! hold, and leave the output untouched on error. The encoding is
//! canonical, so whatever decodes must re-encode to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_flow::codec::{self, FIXED_RECORD_LEN, HEADER_LEN};
use rampart_flow::FlowRecord;

/// Small, so the count check is exercised by short inputs too.
const MAX_RECORDS: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let mut out: Vec<FlowRecord> = Vec::new();
    match codec::decode(data, MAX_RECORDS, &mut out) {
        Ok(()) => {
            assert!(out.len() <= MAX_RECORDS);
            assert!(HEADER_LEN + out.len() * FIXED_RECORD_LEN <= data.len());
            let mut again = Vec::with_capacity(data.len());
            codec::encode(&out, &mut again);
            assert_eq!(again, data, "decoded records re-encode to other bytes");
        }
        Err(_) => assert!(out.is_empty()),
    }
});
