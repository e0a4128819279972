//! `SignedInstruction::verify` on the input read four ways: as the JSON body
//! the agent receives, as envelope bytes with a garbage signature (must be
//! refused), as envelope bytes correctly signed by the fixture key (reaches
//! the envelope JSON parse and the addressing/time/sequence checks), and as
//! text split into envelope and signature strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::envelope::MAX_CLOCK_SKEW_SECS;
use rampart_proto::envelope::{Envelope, Refusal, SignedInstruction};
use rampart_proto_fuzz::{expectation, fixtures, sign_instruction_bytes};

fn check(r: Result<Envelope, Refusal>) {
    let exp = expectation();
    match r {
        Ok(env) => {
            assert_eq!(env.tenant, exp.tenant);
            assert_eq!(env.device, exp.device);
            assert!(env.seq > exp.last_applied_seq);
            assert!(exp.now <= env.expires_at);
            assert!(env.issued_at <= exp.now + MAX_CLOCK_SKEW_SECS);
        }
        Err(refusal) => {
            let _ = (refusal.code(), refusal.seq(), refusal.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let exp = expectation();

    if let Ok(si) = serde_json::from_slice::<SignedInstruction>(data) {
        check(si.verify(&f.verifying, &exp));
    }

    let garbage = SignedInstruction {
        envelope: rampart_proto::b64(data),
        signature: rampart_proto::b64(&[0x42; 64]),
    };
    let r = garbage.verify(&f.verifying, &exp);
    assert!(r.is_err(), "garbage signature accepted: {r:?}");

    check(sign_instruction_bytes(&f.signing, data).verify(&f.verifying, &exp));

    let text = String::from_utf8_lossy(data);
    let (envelope, signature) = text.split_once('\n').unwrap_or((&text, ""));
    check(
        SignedInstruction {
            envelope: envelope.into(),
            signature: signature.into(),
        }
        .verify(&f.verifying, &exp),
    );
});
