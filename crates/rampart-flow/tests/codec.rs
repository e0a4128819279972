//! The flows batch codec: the byte layout documented in `codec.rs`, round
//! trips (including records decoded from goflow2's captures), and refusal of
//! every kind of damaged or hostile buffer without panicking or allocating
//! from the declared count.

mod common;

use std::net::IpAddr;

use common::{exporter, read, GOFLOW2, NOW_MS};
use rampart_flow::codec::{self, CodecError, FIXED_RECORD_LEN, HEADER_LEN};
use rampart_flow::{AppLabel, Decoder, Direction, FlowFlags, FlowRecord};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn record(n: u32) -> FlowRecord {
    FlowRecord {
        start_ms: 1_700_000_000_000 + u64::from(n),
        end_ms: 1_700_000_000_500 + u64::from(n),
        bytes: 1500 * u64::from(n),
        packets: u64::from(n),
        src_addr: ip("10.1.2.3"),
        dst_addr: ip("2001:db8::7"),
        exporter: ip("192.0.2.1"),
        in_if: n,
        out_if: 2,
        sampling_rate: 1000,
        domain_id: 256,
        src_port: 443,
        dst_port: 50_000,
        protocol: 6,
        tcp_flags: 0x1b,
        direction: Direction::Ingress,
        resample: 1,
        flags: 0,
        app: AppLabel::default(),
    }
}

/// Records that exercise every column's corner: both families in every
/// address slot, a v4-mapped address kept as IPv6, every direction, labels
/// of 0, 1 and 15 bytes, extreme counters and an end before the start.
fn varied() -> Vec<FlowRecord> {
    let mut v = Vec::new();
    for n in 0..40u32 {
        let mut r = record(n);
        r.direction = [Direction::Unknown, Direction::Ingress, Direction::Egress][n as usize % 3];
        r.src_addr = [
            ip("10.1.2.3"),
            ip("2001:db8::1"),
            ip("::ffff:192.0.2.9"),
            ip("::"),
        ][n as usize % 4];
        r.dst_addr = [ip("0.0.0.0"), ip("255.255.255.255"), ip("fe80::1")][n as usize % 3];
        r.exporter = if n % 5 == 0 {
            ip("2001:db8:ffff::2")
        } else {
            ip("198.51.100.7")
        };
        r.app = AppLabel::new(["", "h", "a-very-long-app-name", "dns"][n as usize % 4]);
        r.flags = (n % 16) as u8;
        r.resample = 1 << (n % 8);
        v.push(r);
    }
    let mut extreme = record(7);
    extreme.start_ms = u64::MAX;
    extreme.end_ms = 3; // end before start survives the wrapping duration
    extreme.bytes = u64::MAX;
    extreme.packets = u64::MAX;
    extreme.in_if = u32::MAX;
    extreme.sampling_rate = 0;
    extreme.domain_id = u32::MAX;
    extreme.src_port = u16::MAX;
    extreme.protocol = 255;
    extreme.tcp_flags = 255;
    extreme.flags = 255;
    extreme.resample = u32::MAX;
    v.push(extreme);
    v
}

fn encoded(records: &[FlowRecord]) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::encode(records, &mut buf);
    buf
}

#[test]
fn one_record_has_the_documented_layout() {
    let mut r = record(1);
    r.app = AppLabel::new("HTTP");
    r.flags = FlowFlags::SAMPLING_ASSUMED;
    let buf = encoded(&[r]);
    // Written from the layout table in codec.rs, field by field.
    let mut want = Vec::new();
    want.extend_from_slice(b"RFLW");
    want.extend_from_slice(&[1, 0]);
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(&1_700_000_000_001u64.to_le_bytes()); // start_ms
    want.extend_from_slice(&500u64.to_le_bytes()); // duration
    want.extend_from_slice(&1500u64.to_le_bytes()); // bytes
    want.extend_from_slice(&1u64.to_le_bytes()); // packets
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]); // src
    want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]); // dst
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]); // exporter
    want.extend_from_slice(&1u32.to_le_bytes()); // in_if
    want.extend_from_slice(&2u32.to_le_bytes()); // out_if
    want.extend_from_slice(&1000u32.to_le_bytes()); // sampling_rate
    want.extend_from_slice(&256u32.to_le_bytes()); // domain_id
    want.extend_from_slice(&1u32.to_le_bytes()); // resample
    want.extend_from_slice(&443u16.to_le_bytes());
    want.extend_from_slice(&50_000u16.to_le_bytes());
    want.extend_from_slice(&[6, 0x1b, 1, 1, 0b010, 4]); // proto, flags, dir, flags, family, app_len
    want.extend_from_slice(b"http");
    assert_eq!(buf, want);
    assert_eq!(buf.len(), HEADER_LEN + FIXED_RECORD_LEN + 4);
}

#[test]
fn empty_batch_is_just_the_header() {
    assert_eq!(encoded(&[]), b"RFLW\x01\x00\x00\x00\x00\x00");
    let mut out = Vec::new();
    codec::decode(b"RFLW\x01\x00\x00\x00\x00\x00", 0, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn varied_records_round_trip_and_append() {
    let records = varied();
    let buf = encoded(&records);
    let mut out = vec![record(99)];
    codec::decode(&buf, records.len(), &mut out).unwrap();
    assert_eq!(out[0], record(99), "decode appends, it does not replace");
    assert_eq!(&out[1..], &records[..]);
    // Canonical: re-encoding the decoded records gives the same bytes.
    assert_eq!(encoded(&out[1..]), buf);
}

#[test]
fn records_decoded_from_goflow2_captures_round_trip() {
    let mut d = Decoder::default();
    let mut flows = Vec::new();
    for name in [
        "TestDecodeNetFlowV5_data.bin",
        "TestDecodeNetFlowV9_template.bin",
        "TestDecodeNetFlowV9_data.bin",
    ] {
        d.decode(exporter(), &read(GOFLOW2, name), NOW_MS, &mut flows)
            .unwrap();
    }
    assert!(flows.len() > 6, "v5 and v9 flows: {}", flows.len());
    let mut out = Vec::new();
    codec::decode(&encoded(&flows), flows.len(), &mut out).unwrap();
    assert_eq!(out, flows);
}

#[test]
fn every_truncation_is_refused_without_output() {
    let buf = encoded(&varied());
    let mut out = vec![record(1)];
    for len in 0..buf.len() {
        let err = codec::decode(&buf[..len], 1000, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooShort { .. } | CodecError::Truncated { .. }
            ),
            "{len}: {err:?}"
        );
        assert_eq!(out, [record(1)]);
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut buf = encoded(&[record(1)]);
    buf.push(b'x');
    let err = codec::decode(&buf, 10, &mut Vec::new()).unwrap_err();
    assert_eq!(err, CodecError::TrailingBytes { extra: 1 });
}

#[test]
fn wrong_magic_version_and_reserved_byte_are_refused() {
    let good = encoded(&[record(1)]);
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(
        codec::decode(&bad, 10, &mut Vec::new()),
        Err(CodecError::BadMagic)
    );
    let mut bad = good.clone();
    bad[4] = 2;
    assert_eq!(
        codec::decode(&bad, 10, &mut Vec::new()),
        Err(CodecError::UnsupportedVersion(2))
    );
    let mut bad = good;
    bad[5] = 1;
    assert_eq!(
        codec::decode(&bad, 10, &mut Vec::new()),
        Err(CodecError::Reserved(1))
    );
}

#[test]
fn count_above_the_callers_limit_is_refused() {
    let buf = encoded(&[record(1), record(2), record(3)]);
    assert_eq!(
        codec::decode(&buf, 2, &mut Vec::new()),
        Err(CodecError::TooManyRecords { count: 3, max: 2 })
    );
}

#[test]
fn huge_declared_count_allocates_nothing() {
    // Four billion records claimed, 20 bytes present.
    let mut buf = b"RFLW\x01\x00\xff\xff\xff\xff".to_vec();
    buf.extend_from_slice(&[0; 20]);
    let mut out: Vec<FlowRecord> = Vec::new();
    let err = codec::decode(&buf, usize::MAX, &mut out).unwrap_err();
    assert_eq!(
        err,
        CodecError::Truncated {
            count: u32::MAX,
            need: u64::from(u32::MAX) * FIXED_RECORD_LEN as u64,
            have: 20
        }
    );
    assert_eq!(out.capacity(), 0);
}

/// Offset of the `column`-th single-byte column of a one-record batch.
fn byte_column(column: usize) -> usize {
    HEADER_LEN + FIXED_RECORD_LEN - 6 + column
}

#[test]
fn values_encode_never_writes_are_refused() {
    let good = encoded(&[record(1)]);
    let refused = |edit: &dyn Fn(&mut Vec<u8>), column: &str| {
        let mut bad = good.clone();
        edit(&mut bad);
        let mut out = Vec::new();
        let err = codec::decode(&bad, 1, &mut out).unwrap_err();
        assert!(
            matches!(err, CodecError::BadValue { column: c, index: 0 } if c == column),
            "{column}: {err:?}"
        );
        assert!(out.is_empty());
    };
    refused(&|b| b[byte_column(2)] = 3, "direction");
    refused(&|b| b[byte_column(4)] = 8, "address family");
    // An IPv4 source whose first 12 bytes are not ::ffff.
    refused(&|b| b[HEADER_LEN + 32] = 1, "source address");
    refused(
        &|b| b[HEADER_LEN + 32 + 16 + 16 + 10] = 0,
        "exporter address",
    );
    // Labels must be what AppLabel::new keeps: lowercase printable ASCII.
    for label in [&b"HTTP"[..], b"a b", b"\xff", b"0123456789abcdef"] {
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = label.len() as u8;
        bad.extend_from_slice(label);
        let err = codec::decode(&bad, 1, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err,
            CodecError::BadValue {
                column: "app label",
                index: 0
            },
            "{label:?}"
        );
    }
}

#[test]
fn a_bad_record_late_in_the_batch_leaves_no_partial_output() {
    let records: Vec<_> = (0..5).map(record).collect();
    let mut buf = encoded(&records);
    // Direction column of the last record.
    let direction_col = HEADER_LEN + 5 * (FIXED_RECORD_LEN - 4);
    buf[direction_col + 4] = 9;
    let mut out = vec![record(42)];
    assert_eq!(
        codec::decode(&buf, 5, &mut out),
        Err(CodecError::BadValue {
            column: "direction",
            index: 4
        })
    );
    assert_eq!(out, [record(42)]);
}

#[test]
fn errors_are_lowercase_and_say_what_to_do() {
    for e in [
        CodecError::TooShort { len: 3 },
        CodecError::BadMagic,
        CodecError::UnsupportedVersion(9),
        CodecError::TooManyRecords { count: 9, max: 1 },
        CodecError::TrailingBytes { extra: 1 },
    ] {
        let msg = e.to_string();
        assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");
        assert!(msg.contains(": "), "{msg}");
    }
}
