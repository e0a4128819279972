//! goflow2's NetFlow v5 and v9 decoder tests (testdata/netflow_goflow2): the
//! packets are the byte literals of `netflow_v5_test.go` and
//! `netflow_v9_ipfix_test.go`; expected values are the ones those tests
//! assert.

mod common;

use std::net::IpAddr;

use common::{exporter, read, GOFLOW2, NOW_MS};
use rampart_flow::{DecodeError, Decoder, Direction, TemplateKind};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn netflow_v5() {
    let data = read(GOFLOW2, "TestDecodeNetFlowV5_data.bin");
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let stats = d.decode(exporter(), &data, NOW_MS, &mut out).unwrap();

    // assert.Equal(t, uint16(5), decNfv5.Version)
    assert_eq!(stats.version, 5);
    // assert.Equal(t, uint16(9), decNfv5.Records[0].Input)
    assert_eq!(out[0].in_if, 9);
    // PROVENANCE.md: "NetFlow v5, 6 records" (header count 0x0006).
    assert_eq!(out.len(), 6);
    assert_eq!(stats.records, 6);

    // The Go test asserts nothing more; these are read by hand from its byte
    // literal (header bytes 0-23, first record bytes 24-71).
    let r = &out[0];
    assert_eq!(r.src_addr, ip("10.128.2.121")); // 0a 80 02 79
    assert_eq!(r.dst_addr, ip("10.128.2.1")); // 0a 80 02 01
    assert_eq!(r.out_if, 2); // 00 02
    assert_eq!(r.packets, 5); // 00 00 00 05
    assert_eq!(r.bytes, 590); // 00 00 02 4e
    assert_eq!((r.src_port, r.dst_port), (8080, 47384)); // 1f 90, b9 18
    assert_eq!(r.tcp_flags, 0x1b);
    assert_eq!(r.protocol, 6);
    assert_eq!(r.direction, Direction::Unknown);
    assert_eq!(r.sampling_rate, 0); // sampling_interval 00 00
    assert_eq!(r.domain_id, 0x0808); // engine_type 08, engine_id 08
    assert_eq!(r.exporter, exporter());
    // unix_secs 0x5bcdba1b, unix_nsecs 0x05976dc7 (93 ms), sysUptime
    // 0x0082c348; First 0x00829b8c and Last 0x00829b90 are 10172 and
    // 10168 ms before the export.
    let export_ms = 0x5bcd_ba1b_u64 * 1000 + 93;
    assert_eq!(stats.export_ms, export_ms);
    assert_eq!(r.start_ms, export_ms - (0x0082_c348 - 0x0082_9b8c));
    assert_eq!(r.end_ms, export_ms - (0x0082_c348 - 0x0082_9b90));
    assert_eq!(stats.sequence, 0x643d);
}

#[test]
fn netflow_v9_template_then_data() {
    let template = read(GOFLOW2, "TestDecodeNetFlowV9_template.bin");
    let data = read(GOFLOW2, "TestDecodeNetFlowV9_data.bin");
    let mut d = Decoder::default();
    let mut out = Vec::new();

    // Version 9, Count 1, SourceId 256, one TemplateFlowSet with template
    // 260 of 23 fields.
    let stats = d.decode(exporter(), &template, NOW_MS, &mut out).unwrap();
    assert_eq!(stats.version, 9);
    assert_eq!(stats.domain_id, 256);
    assert_eq!(stats.sequence, 838_987_416);
    assert_eq!(stats.export_ms, 0x618a_a3a8 * 1000);
    assert_eq!(stats.templates, 1);
    assert_eq!(stats.error, None);
    assert!(out.is_empty());
    assert_eq!(
        d.templates().kind(exporter(), 256, 260, NOW_MS),
        Some(TemplateKind::Data)
    );
    // Keyed by exporter and source id too.
    assert!(!d.templates().contains(exporter(), 0, 260, NOW_MS));
    assert!(!d.templates().contains(ip("192.0.2.99"), 256, 260, NOW_MS));

    // The data packet: Count 21, SequenceNumber 838987420, SourceId 256,
    // one DataFlowSet (Id 260, Length 1372).
    let stats = d.decode(exporter(), &data, NOW_MS, &mut out).unwrap();
    assert_eq!(stats.sequence, 838_987_420);
    assert_eq!(stats.error, None);
    assert_eq!(out.len(), 21);
    assert_eq!(stats.records, 21);

    // The first record, as DataRecord.Values in the Go test.
    let r = &out[0];
    assert_eq!(r.packets, 1); // IN_PKTS [0 0 0 1]
    assert_eq!(r.bytes, 1500); // IN_BYTES [0 0 5 220]
    assert_eq!(r.src_addr, ip("198.38.120.222"));
    assert_eq!(r.dst_addr, ip("88.121.217.208"));
    assert_eq!(r.in_if, 354); // INPUT_SNMP [0 0 1 98]
    assert_eq!(r.out_if, 304); // OUTPUT_SNMP [0 0 1 48]
    assert_eq!(r.src_port, 443); // L4_SRC_PORT [1 187]
    assert_eq!(r.dst_port, 15184); // L4_DST_PORT [59 80]
    assert_eq!(r.protocol, 6);
    assert_eq!(r.tcp_flags, 16);
    assert_eq!(r.direction, Direction::Ingress); // DIRECTION [0]
    assert_eq!(r.domain_id, 256);
    // FLOW_SAMPLER_ID 1, but no options data said what sampler 1 does.
    assert_eq!(r.sampling_rate, 0);
    // FIRST_SWITCHED = LAST_SWITCHED = 0xb3bfe6f9 with SystemUptime
    // 3015702147 (0xb3bff683) at UnixSeconds 1636475816.
    let t = 1_636_475_816_000 - (0xb3bf_f683_u64 - 0xb3bf_e6f9);
    assert_eq!((r.start_ms, r.end_ms), (t, t));

    let c = d.counters(exporter()).unwrap();
    assert_eq!(c.datagrams, 2);
    assert_eq!(c.records, 21);
    assert_eq!(c.templates, 1);
    assert_eq!(c.malformed, 0);
    assert_eq!(c.missing_template, 0);
}

#[test]
fn netflow_v9_truncated_data_keeps_complete_records() {
    // The Go test decodes data[:89] ("truncate: we don't want to test for
    // everything") without error and gets exactly the first record.
    let template = read(GOFLOW2, "TestDecodeNetFlowV9_template.bin");
    let data = read(GOFLOW2, "TestDecodeNetFlowV9_data.bin");
    let mut d = Decoder::default();
    let mut out = Vec::new();
    d.decode(exporter(), &template, NOW_MS, &mut out).unwrap();
    let stats = d.decode(exporter(), &data[..89], NOW_MS, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes, 1500);
    assert_eq!(out[0].src_addr, ip("198.38.120.222"));
    // We do say the flowset was cut short, and count it.
    assert!(matches!(stats.error, Some(DecodeError::Truncated { .. })));
    assert_eq!(d.counters(exporter()).unwrap().malformed, 1);
}

#[test]
fn netflow_v9_data_before_template_is_counted() {
    let data = read(GOFLOW2, "TestDecodeNetFlowV9_data.bin");
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let stats = d.decode(exporter(), &data, NOW_MS, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(stats.missing_template_sets, 1);
    assert_eq!(stats.error, None);
    assert_eq!(d.counters(exporter()).unwrap().missing_template, 1);
}
