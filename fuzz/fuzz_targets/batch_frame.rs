//! `batch::parse` on arbitrary frames, then `Frame::open` with the fixture
//! key for the fixture tenant and device. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::batch;
use rampart_proto_fuzz::{fixtures, DEVICE, TENANT};

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let Ok(frame) = batch::parse(data) else {
        return;
    };
    let kind = &frame.header.kind;
    assert!(!kind.is_empty() && kind.len() <= batch::MAX_KIND_LEN);
    if let Ok(plain) = frame.open(&f.hpke_sk, TENANT, DEVICE) {
        assert!(plain.len() <= batch::MAX_PLAINTEXT_BYTES);
    }
});
