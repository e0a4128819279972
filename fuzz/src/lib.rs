//! Fixed keys, ids and helpers shared by the fuzz targets and the seed
//! generator (`cargo run --example seeds`), so that the seeds are valid for
//! exactly the keys and expectations the targets use.
//!
//! Two helpers rebuild protocol steps that rampart-proto keeps private
//! (signing arbitrary instruction bytes, sealing arbitrary "compressed"
//! bytes), so the fuzzer can reach the JSON and zstd decoders behind the
//! signature and the AEAD. [`fixtures`] checks both against the real
//! `Envelope::sign` and `batch::open` once, so if the protocol constants ever
//! drift the targets fail loudly at start-up instead of silently fuzzing only
//! the signature check.

use std::sync::LazyLock;

use hpke::{Deserializable, Kem, Serializable};
use rampart_proto::batch::{self, BatchHeader, Priority};
use rampart_proto::envelope::{Envelope, Expectation, SignedInstruction};
use rampart_proto::keys::{HpkePublicKey, HpkeSecretKey, SigningKey, VerifyingKey};
use rand::SeedableRng;
use uuid::Uuid;

pub const TENANT: Uuid = Uuid::from_u128(0x7e9a_47c0_0000_4000_8000_0000_0000_0001);
pub const DEVICE: Uuid = Uuid::from_u128(0xde71_ce00_0000_4000_8000_0000_0000_0002);
/// The "current time" every target verifies at (unix seconds).
pub const NOW: i64 = 1_700_000_000;
pub const LAST_APPLIED_SEQ: u64 = 5;

/// The request every `request_headers` input claims to authenticate.
pub const METHOD: &str = "POST";
pub const HOST: &str = "acme.example.net";
pub const PATH: &str = "/api/v1/batches?priority=data";

// Copies of private constants in rampart-proto (checked in `fixtures`).
const INSTRUCTION_CONTEXT: &[u8] = b"rampart-instruction-v1\0";
const BATCH_INFO: &[u8] = b"rampart upload batch v1";
const BATCH_AAD_CONTEXT: &[u8] = b"rampart-batch-v1\0";

type HKem = rampart_proto::keys::HpkeKem;

pub struct Fixtures {
    pub hpke_sk: HpkeSecretKey,
    pub hpke_pk: HpkePublicKey,
    pub signing: SigningKey,
    pub verifying: VerifyingKey,
    /// The clear header of a valid frame, used by [`seal_compressed`].
    pub header: BatchHeader,
    pub header_bytes: Vec<u8>,
}

pub fn expectation() -> Expectation {
    Expectation {
        tenant: TENANT,
        device: DEVICE,
        last_applied_seq: LAST_APPLIED_SEQ,
        now: NOW,
    }
}

pub fn header() -> BatchHeader {
    BatchHeader {
        batch_id: Uuid::from_u128(0xba7c_0000_0000_4000_8000_0000_0000_0003),
        priority: Priority::Data,
        created_at: NOW,
        items: 2,
        kind: "events".into(),
    }
}

pub fn fixtures() -> &'static Fixtures {
    static F: LazyLock<Fixtures> = LazyLock::new(|| {
        let (hpke_sk, hpke_pk) = HpkeSecretKey::derive(&[7u8; 32]);
        let signing = SigningKey::from_secret(&[9u8; 32]).expect("32-byte ed25519 seed");
        let verifying = signing.verifying_key();
        let header = header();
        let frame = batch::seal(&header, b"", &hpke_pk, TENANT, DEVICE).expect("seal");
        let header_bytes = frame[..4 + 16 + 1 + 8 + 4 + 1 + header.kind.len()].to_vec();
        let f = Fixtures {
            hpke_sk,
            hpke_pk,
            signing,
            verifying,
            header,
            header_bytes,
        };
        self_check(&f);
        f
    });
    &F
}

fn self_check(f: &Fixtures) {
    let env = valid_envelope();
    let real = env.sign(&f.signing);
    let bytes = serde_json::to_vec(&env).unwrap();
    assert_eq!(
        sign_instruction_bytes(&f.signing, &bytes),
        real,
        "fuzz fixture drifted from Envelope::sign: update INSTRUCTION_CONTEXT"
    );
    let compressed = zstd::bulk::compress(b"self-check", 1).unwrap();
    let frame = seal_compressed_with(f, &compressed);
    let opened = batch::parse(&frame)
        .expect("fixture frame parses")
        .open(&f.hpke_sk, TENANT, DEVICE)
        .expect("fuzz fixture drifted from batch::seal: update BATCH_INFO / BATCH_AAD_CONTEXT");
    assert_eq!(opened, b"self-check");
}

/// An envelope that verifies against [`expectation`].
pub fn valid_envelope() -> Envelope {
    Envelope {
        tenant: TENANT,
        device: DEVICE,
        seq: LAST_APPLIED_SEQ + 1,
        issued_at: NOW - 10,
        expires_at: NOW + 3600,
        kind: "ping".into(),
        payload: serde_json::json!({"message": "hi", "n": [1, 2.5, null, true]}),
    }
}

/// Signs arbitrary bytes as an instruction envelope, as `Envelope::sign` does
/// for the JSON it serializes.
pub fn sign_instruction_bytes(key: &SigningKey, envelope_bytes: &[u8]) -> SignedInstruction {
    let msg = [INSTRUCTION_CONTEXT, envelope_bytes].concat();
    SignedInstruction {
        envelope: rampart_proto::b64(envelope_bytes),
        signature: rampart_proto::b64(&key.sign(&msg)),
    }
}

/// A frame with the fixture header whose sealed payload is `compressed`
/// verbatim (no zstd step), bound to [`TENANT`] and [`DEVICE`].
pub fn seal_compressed(compressed: &[u8]) -> Vec<u8> {
    seal_compressed_with(fixtures(), compressed)
}

fn seal_compressed_with(f: &Fixtures, compressed: &[u8]) -> Vec<u8> {
    let pk = <HKem as Kem>::PublicKey::from_bytes(&f.hpke_pk.to_bytes()).expect("public key");
    let aad = [
        BATCH_AAD_CONTEXT,
        TENANT.as_bytes(),
        DEVICE.as_bytes(),
        &f.header_bytes,
    ]
    .concat();
    // A fixed ephemeral key keeps runs reproducible; fine for a fuzzer.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (enc, ct) = hpke::single_shot_seal::<
        rampart_proto::keys::HpkeAead,
        rampart_proto::keys::HpkeKdf,
        HKem,
        _,
    >(
        &hpke::OpModeS::Base,
        &pk,
        BATCH_INFO,
        compressed,
        &aad,
        &mut rng,
    )
    .expect("hpke seal");
    let mut out = f.header_bytes.clone();
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    out
}
