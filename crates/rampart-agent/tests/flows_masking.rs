//! Edge data controls through the real pipeline, up to the sealed frame in
//! the outbox: masked values must not appear in the bytes that would be
//! uploaded, nor in the plaintext the portal gets when it opens them, while
//! the fields left alone survive intact.
//!
//! Byte patterns searched in the sealed (random-looking) frame are at least
//! 4 bytes long and few, so a chance match is below one in 10^4 runs.

mod flowkit;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use flowkit::{contains, Env};
use hmac::{Hmac, Mac};
use rampart_agent::masking::Controls;
use rampart_agent::pipeline::Chunk;
use rampart_flow::{AppLabel, Direction, FlowFlags, FlowRecord};
use rampart_proto::controls::{
    DataControls, FlowField, PseudonymKey, Redaction, TextField, Truncate,
};
use sha2::Sha256;

const V4: [&str; 4] = ["10.77.1.2", "10.77.3.4", "172.31.250.9", "192.168.44.201"];
const V6: [&str; 2] = ["2001:db8:77::1234", "2001:db8:5eed::abcd"];
/// Distinctive interface numbers (the dropped field).
const IN_IF: [u32; 2] = [0xA5C3_0F17, 0x5EC2_E7A1];
const KEY: [u8; 32] = [0x42; 32];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records() -> Vec<FlowRecord> {
    (0..200u32)
        .map(|n| {
            let i = n as usize;
            let (src, dst) = if n % 5 == 0 {
                (ip(V6[i % 2]), ip(V6[(i + 1) % 2]))
            } else {
                (ip(V4[i % 4]), ip(V4[(i + 1) % 4]))
            };
            FlowRecord {
                start_ms: 1_700_000_000_000 + u64::from(n),
                end_ms: 1_700_000_001_000 + u64::from(n),
                bytes: 1_000_000 + u64::from(n),
                packets: 700 + u64::from(n),
                src_addr: src,
                dst_addr: dst,
                exporter: ip("198.51.100.1"),
                in_if: IN_IF[i % 2],
                out_if: 3,
                sampling_rate: 1,
                domain_id: 0,
                src_port: 50_000 + n as u16,
                dst_port: 8443,
                protocol: 6,
                tcp_flags: 0x1b,
                direction: Direction::Ingress,
                resample: 1,
                flags: 0,
                app: AppLabel::new(if n % 2 == 0 { "secretsauce" } else { "dns" }),
            }
        })
        .collect()
}

/// Runs `records()` through the pipeline under `controls` (and the key, if
/// given) and returns the one batch it shipped.
fn ship(controls: DataControls, key: Option<&PseudonymKey>) -> flowkit::Shipped {
    let env = Env::new();
    let c = Arc::new(Controls::load(&env.sd));
    c.set(controls).unwrap();
    if let Some(k) = key {
        c.set_key(k).unwrap();
    }
    let flows = env.start_with(Env::options(), c);
    assert!(flows.submit(Chunk {
        file: None,
        received_ms: 1_700_000_000_000,
        records: records(),
        alerts: Vec::new(),
        checkpoint: None,
    }));
    flows.stop();
    let mut batches = env.drain();
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

/// Asserts that no original address appears in `bytes`, in any form the
/// pipeline could have written: raw octets, v4-mapped, or text.
fn assert_no_addresses(bytes: &[u8], what: &str) {
    for a in V4 {
        let v4: std::net::Ipv4Addr = a.parse().unwrap();
        assert!(!contains(bytes, &v4.octets()), "{a} octets in the {what}");
        assert!(!contains(bytes, a.as_bytes()), "{a} text in the {what}");
    }
    for a in V6 {
        let v6: Ipv6Addr = a.parse().unwrap();
        assert!(!contains(bytes, &v6.octets()), "{a} octets in the {what}");
        assert!(!contains(bytes, a.as_bytes()), "{a} text in the {what}");
    }
}

fn expected_pseudonym(addr: IpAddr) -> IpAddr {
    // Computed here from the documented construction (masking.rs), with the
    // hmac crate directly: fd72:616d::/32 + 96 bits of
    // HMAC-SHA256(key, "rampart-pseudonym-v1" || family || octets).
    let mut m = Hmac::<Sha256>::new_from_slice(&KEY).unwrap();
    m.update(b"rampart-pseudonym-v1");
    match addr {
        IpAddr::V4(a) => {
            m.update(&[4]);
            m.update(&a.octets());
        }
        IpAddr::V6(a) => {
            m.update(&[6]);
            m.update(&a.octets());
        }
    }
    let tag = m.finalize().into_bytes();
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&[0xfd, 0x72, 0x61, 0x6d]);
    o[4..].copy_from_slice(&tag[..12]);
    IpAddr::V6(Ipv6Addr::from(o))
}

#[test]
fn masked_values_never_reach_the_sealed_bytes_or_the_plaintext() {
    let key = PseudonymKey {
        key_id: "tenant-key-1".into(),
        key_b64: rampart_proto::b64(&KEY),
    };
    let controls = DataControls {
        version: 3,
        drop_fields: vec![FlowField::InIf, FlowField::SrcPort],
        pseudonymize_addresses: true,
        redact: vec![Redaction {
            field: TextField::App,
            pattern: "secret[a-z]*".into(),
            replacement: "redacted".into(),
        }],
        ..DataControls::default()
    };
    let b = ship(controls, Some(&key));

    for (bytes, what) in [(&b.frame, "sealed frame"), (&b.plaintext, "plaintext")] {
        assert_no_addresses(bytes, what);
        for v in IN_IF {
            assert!(
                !contains(bytes, &v.to_le_bytes()),
                "in_if {v:#x} in the {what}"
            );
            assert!(
                !contains(bytes, &v.to_be_bytes()),
                "in_if {v:#x} in the {what}"
            );
        }
        assert!(!contains(bytes, b"secret"), "redacted text in the {what}");
    }
    // The key itself never travels either.
    assert!(!contains(&b.plaintext, &KEY[..8]));

    let originals = records();
    assert_eq!(b.records.len(), originals.len());
    for (got, orig) in b.records.iter().zip(&originals) {
        // Masked.
        assert_eq!((got.in_if, got.src_port), (0, 0));
        assert_eq!(got.src_addr, expected_pseudonym(orig.src_addr));
        assert_eq!(got.dst_addr, expected_pseudonym(orig.dst_addr));
        assert_eq!(got.flags, FlowFlags::ADDR_PSEUDONYM);
        let want_app = if orig.app.as_str() == "dns" {
            "dns"
        } else {
            "redacted"
        };
        assert_eq!(got.app.as_str(), want_app);
        // Untouched.
        assert_eq!(
            (got.start_ms, got.end_ms, got.bytes, got.packets),
            (orig.start_ms, orig.end_ms, orig.bytes, orig.packets)
        );
        assert_eq!((got.dst_port, got.out_if, got.protocol), (8443, 3, 6));
        assert_eq!((got.tcp_flags, got.direction), (0x1b, Direction::Ingress));
        assert_eq!(got.exporter, orig.exporter);
    }
    // Stable: the same host always gets the same pseudonym.
    assert_eq!(b.records[1].src_addr, b.records[21].src_addr);
}

#[test]
fn pseudonymize_without_the_key_ships_no_address_at_all() {
    let b = ship(
        DataControls {
            version: 1,
            pseudonymize_addresses: true,
            ..DataControls::default()
        },
        None,
    );
    assert_no_addresses(&b.frame, "sealed frame");
    assert_no_addresses(&b.plaintext, "plaintext");
    for r in &b.records {
        assert!(r.src_addr.is_unspecified() && r.dst_addr.is_unspecified());
        assert_eq!(r.flags, FlowFlags::ADDR_DROPPED);
    }
}

#[test]
fn no_ip_collection_drops_every_address_including_the_exporter() {
    let b = ship(
        DataControls {
            version: 2,
            collect_addresses: false,
            ..DataControls::default()
        },
        None,
    );
    assert_no_addresses(&b.plaintext, "plaintext");
    assert!(!contains(&b.plaintext, &[198, 51, 100, 1]));
    for r in &b.records {
        assert!(r.src_addr.is_unspecified() && r.exporter.is_unspecified());
        assert_eq!(r.flags, FlowFlags::ADDR_DROPPED);
    }
}

#[test]
fn truncation_ships_only_the_prefixes() {
    let b = ship(
        DataControls {
            version: 4,
            truncate: Some(Truncate {
                v4_prefix: 16,
                v6_prefix: 32,
            }),
            ..DataControls::default()
        },
        None,
    );
    assert_no_addresses(&b.frame, "sealed frame");
    assert_no_addresses(&b.plaintext, "plaintext");
    let r = &b.records[1];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.77.0.0"), ip("172.31.0.0"))
    );
    assert_eq!(b.records[0].src_addr, ip("2001:db8::"));
    assert!(b
        .records
        .iter()
        .all(|r| r.flags == FlowFlags::ADDR_TRUNCATED));
}
