//! The decompressor behind the AEAD: any enrolled device can seal whatever
//! bytes it likes to its tenant's public upload key, so the input is sealed
//! verbatim as the "compressed" payload of a valid frame, then parsed and
//! opened. Must never panic and must respect the plaintext bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::batch;
use rampart_proto_fuzz::{fixtures, seal_compressed, DEVICE, TENANT};

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let frame = seal_compressed(data);
    let parsed = batch::parse(&frame).expect("a frame with the fixture header parses");
    assert_eq!(parsed.header, f.header);
    match parsed.open(&f.hpke_sk, TENANT, DEVICE) {
        Ok(plain) => assert!(plain.len() <= batch::MAX_PLAINTEXT_BYTES),
        Err(rampart_proto::ProtoError::Decrypt) => {
            panic!("a correctly sealed frame failed to decrypt")
        }
        Err(_) => {}
    }
});
