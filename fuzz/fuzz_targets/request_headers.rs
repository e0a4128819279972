//! `DeviceAuth::from_headers` with the four header values carved from the
//! input (lines 1-4; an empty or absent line is a missing header, the rest is
//! the body), then `verify` against the fixture request on success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::reqsig::{DeviceAuth, HDR_DEVICE, HDR_NONCE, HDR_SIGNATURE, HDR_TIMESTAMP};
use rampart_proto_fuzz::{fixtures, HOST, METHOD, NOW, PATH};

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(5, '\n');
    let mut next = || lines.next().filter(|s| !s.is_empty());
    let (device, timestamp, nonce, signature) = (next(), next(), next(), next());
    let body = lines.next().unwrap_or("");
    let get = |h: &str| match h {
        HDR_DEVICE => device,
        HDR_TIMESTAMP => timestamp,
        HDR_NONCE => nonce,
        HDR_SIGNATURE => signature,
        _ => None,
    };
    match DeviceAuth::from_headers(get) {
        Ok(Some(auth)) => {
            assert_eq!(auth.nonce.len(), 32);
            let _ = auth.verify(&f.verifying, METHOD, HOST, PATH, NOW, body.as_bytes());
        }
        Ok(None) => assert!(device.is_none()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
