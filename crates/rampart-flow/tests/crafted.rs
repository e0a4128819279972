//! Hand-built datagrams for what the captures do not cover: refused
//! templates, withdrawal, enterprise and variable-length fields, sampling,
//! bounds and header errors.

mod common;

use std::net::IpAddr;

use common::{exporter, NOW_MS};
use rampart_flow::{
    DecodeError, DecodeStats, Decoder, DecoderConfig, Direction, FlowRecord, TemplateKind,
    MAX_TEMPLATE_FIELDS,
};

// ---- builders --------------------------------------------------------------

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn sets(sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (id, body) in sets {
        put16(&mut v, *id);
        put16(&mut v, u16::try_from(body.len() + 4).unwrap());
        v.extend_from_slice(body);
    }
    v
}

const EXPORT_S: u32 = 1_600_000_000;

/// IPFIX message of observation domain `domain`.
fn ipfix(domain: u32, s: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let body = sets(s);
    let mut v = Vec::new();
    put16(&mut v, 10);
    put16(&mut v, u16::try_from(16 + body.len()).unwrap());
    put32(&mut v, EXPORT_S);
    put32(&mut v, 1);
    put32(&mut v, domain);
    v.extend(body);
    v
}

/// NetFlow v9 packet of source id `source`, sysUptime 100 000 ms.
fn v9(source: u32, s: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    put16(&mut v, 9);
    put16(&mut v, u16::try_from(s.len()).unwrap());
    put32(&mut v, 100_000);
    put32(&mut v, EXPORT_S);
    put32(&mut v, 7);
    put32(&mut v, source);
    v.extend(sets(s));
    v
}

/// A template record: id, count, (type, length)...
fn tpl(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    put16(&mut v, id);
    put16(&mut v, u16::try_from(fields.len()).unwrap());
    for &(t, l) in fields {
        put16(&mut v, t);
        put16(&mut v, l);
    }
    v
}

fn decode(d: &mut Decoder, data: &[u8]) -> (DecodeStats, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let stats = d.decode(exporter(), data, NOW_MS, &mut out).unwrap();
    (stats, out)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Fields of a minimal IPv4 flow template: src, dst, octets.
const BASIC: &[(u16, u16)] = &[(8, 4), (12, 4), (1, 4)];

fn basic_record(src: [u8; 4], dst: [u8; 4], octets: u32) -> Vec<u8> {
    let mut v = src.to_vec();
    v.extend_from_slice(&dst);
    put32(&mut v, octets);
    v
}

// ---- refused templates -----------------------------------------------------

#[test]
fn absurd_field_length_is_refused_and_counted() {
    let mut d = Decoder::default();
    let mut body = tpl(300, &[(8, 4), (1, 65_000), (2, 1_000)]);
    body.extend(tpl(301, BASIC));
    let (s, _) = decode(&mut d, &v9(1, &[(0, body)]));
    assert!(matches!(
        s.error,
        Some(DecodeError::AbsurdFieldLength {
            template_id: 300,
            ..
        })
    ));
    assert_eq!((s.templates_refused, s.templates), (1, 1));
    assert!(!d.templates().contains(exporter(), 1, 300, NOW_MS));
    // The next record of the flowset was still found and stored.
    assert!(d.templates().contains(exporter(), 1, 301, NOW_MS));
    assert_eq!(d.counters(exporter()).unwrap().malformed, 1);
    // Data for the refused template is "missing template", not a crash.
    let (s, out) = decode(&mut d, &v9(1, &[(300, vec![0; 40])]));
    assert_eq!((s.missing_template_sets, out.len()), (1, 0));
}

#[test]
fn zero_length_templates_are_refused() {
    let mut d = Decoder::default();
    // No fields at all, and fields that are all zero bytes long: a record of
    // such a template would never advance (the "template loop").
    let mut body = tpl(302, &[]);
    body.extend(tpl(303, &[(8, 0), (12, 0), (1, 0)]));
    let (s, _) = decode(&mut d, &v9(1, &[(0, body)]));
    assert_eq!(s.templates_refused, 2);
    assert_eq!(
        s.error,
        Some(DecodeError::ZeroLengthTemplate { template_id: 302 })
    );
    let (s, out) = decode(&mut d, &v9(1, &[(303, vec![0; 64])]));
    assert_eq!((s.missing_template_sets, out.len()), (1, 0));

    // IPFIX: field count 0 is a withdrawal, but all-empty fields are refused.
    let (s, _) = decode(&mut d, &ipfix(1, &[(2, tpl(304, &[(8, 0)]))]));
    assert_eq!(
        s.error,
        Some(DecodeError::ZeroLengthTemplate { template_id: 304 })
    );
}

#[test]
fn huge_field_counts_are_refused() {
    let mut d = Decoder::default();
    // Claims 65 535 fields and carries two: refused as truncated, nothing
    // is sized from the count.
    let mut body = Vec::new();
    put16(&mut body, 305);
    put16(&mut body, u16::MAX);
    body.extend_from_slice(&[0, 8, 0, 4, 0, 12, 0, 4]);
    let (s, _) = decode(&mut d, &v9(1, &[(0, body)]));
    assert_eq!(s.templates_refused, 1);
    assert!(matches!(s.error, Some(DecodeError::Truncated { .. })));

    // IPFIX: more fields than the limit, all present, then a good template.
    let many: Vec<(u16, u16)> = (0..=MAX_TEMPLATE_FIELDS as u16)
        .map(|i| (1000 + i, 1))
        .collect();
    let mut body = tpl(306, &many);
    body.extend(tpl(307, BASIC));
    let (s, _) = decode(&mut d, &ipfix(1, &[(2, body)]));
    assert_eq!(
        s.error,
        Some(DecodeError::TooManyFields {
            template_id: 306,
            count: MAX_TEMPLATE_FIELDS + 1,
            limit: MAX_TEMPLATE_FIELDS
        })
    );
    assert!(d.templates().contains(exporter(), 1, 307, NOW_MS));
    assert!(!d.templates().contains(exporter(), 1, 306, NOW_MS));
    assert_eq!(d.counters(exporter()).unwrap().malformed, 2);
}

#[test]
fn reserved_ids_and_bad_scopes_are_refused() {
    let mut d = Decoder::default();
    let (s, _) = decode(&mut d, &v9(1, &[(0, tpl(5, BASIC))]));
    assert_eq!(s.error, Some(DecodeError::BadTemplateId { template_id: 5 }));
    let (s, _) = decode(&mut d, &ipfix(1, &[(2, tpl(255, BASIC))]));
    assert_eq!(
        s.error,
        Some(DecodeError::BadTemplateId { template_id: 255 })
    );

    // Options template: 3 scope fields of 2.
    let mut body = Vec::new();
    put16(&mut body, 400);
    put16(&mut body, 2);
    put16(&mut body, 3);
    body.extend_from_slice(&[0, 149, 0, 4, 0, 34, 0, 4]);
    let (s, _) = decode(&mut d, &ipfix(1, &[(3, body)]));
    assert!(matches!(
        s.error,
        Some(DecodeError::BadScope {
            template_id: 400,
            ..
        })
    ));

    // v9 options template whose option length is not a multiple of 4.
    let mut body = Vec::new();
    put16(&mut body, 401);
    put16(&mut body, 4);
    put16(&mut body, 6);
    body.extend_from_slice(&[0, 1, 0, 4, 0, 34, 0, 4, 0, 0]);
    let (s, _) = decode(&mut d, &v9(1, &[(1, body)]));
    assert!(matches!(s.error, Some(DecodeError::BadLength { .. })));
    assert_eq!(d.templates().len(), 0);
    assert_eq!(d.counters(exporter()).unwrap().malformed, 4);
}

// ---- header and set errors -------------------------------------------------

#[test]
fn bad_headers_refuse_the_datagram() {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let mut e = |data: &[u8]| d.decode(exporter(), data, NOW_MS, &mut out).unwrap_err();
    assert!(matches!(e(&[]), DecodeError::Truncated { .. }));
    assert_eq!(e(&[0, 7, 0, 0]), DecodeError::BadVersion(7));
    assert!(matches!(
        e(&[0, 9, 0, 1, 0, 0]),
        DecodeError::Truncated { .. }
    ));
    let mut short = ipfix(1, &[]);
    short[3] = 8; // message length 8 < 16
    assert!(matches!(e(&short), DecodeError::BadLength { .. }));
    // v5 claiming 2 records and carrying 1.
    let mut v5 = vec![0, 5, 0, 2];
    v5.resize(24 + 48, 0);
    assert!(matches!(e(&v5), DecodeError::Truncated { .. }));
    assert!(e(&[0, 42])
        .to_string()
        .starts_with("unsupported flow export version 42"));
    assert!(out.is_empty());
    let c = d.counters(exporter()).unwrap();
    assert_eq!((c.datagrams, c.malformed), (6, 6));
}

#[test]
fn damaged_set_keeps_the_sets_before_it() {
    let mut d = Decoder::default();
    let mut data = basic_record([10, 0, 0, 1], [10, 0, 0, 2], 100);
    data.extend(basic_record([10, 0, 0, 3], [10, 0, 0, 4], 200));
    let mut pkt = v9(1, &[(0, tpl(256, BASIC)), (256, data)]);
    pkt.extend_from_slice(&[1, 0, 0, 2, 9, 9]); // set length 2 < 4
    let (s, out) = decode(&mut d, &pkt);
    assert_eq!(out.len(), 2);
    assert!(matches!(
        s.error,
        Some(DecodeError::BadLength { value: 2, .. })
    ));
    assert_eq!(d.counters(exporter()).unwrap().malformed, 1);

    // Zero padding after the last set is not an error.
    let mut pkt = v9(1, &[(256, basic_record([10, 0, 0, 1], [10, 0, 0, 2], 1))]);
    pkt.extend_from_slice(&[0; 9]);
    let (s, out) = decode(&mut d, &pkt);
    assert_eq!((out.len(), s.error), (1, None));

    // An IPFIX message longer than the datagram: the complete set is kept.
    let mut msg = ipfix(
        1,
        &[(2, tpl(256, BASIC)), (256, basic_record([1; 4], [2; 4], 3))],
    );
    msg.truncate(msg.len() - 2);
    let (s, out) = decode(&mut d, &msg);
    assert_eq!(out.len(), 0); // the data set was the cut one
    assert_eq!(s.templates, 1);
    assert!(matches!(s.error, Some(DecodeError::Truncated { .. })));
}

// ---- IPFIX features --------------------------------------------------------

#[test]
fn enterprise_and_variable_length_fields_are_skipped() {
    let mut t = Vec::new();
    put16(&mut t, 500);
    put16(&mut t, 9);
    for (ty, len, pen) in [
        (8u16, 4u16, None),
        (0x8000 | 1, 4, Some(9u32)), // enterprise, fixed
        (82, 0xFFFF, None),          // interfaceName, variable
        (0x8000 | 2, 0xFFFF, Some(9)),
        (12, 4, None),
        (7, 2, None),
        (11, 2, None),
        (1, 8, None),
        (4, 1, None),
    ] {
        put16(&mut t, ty);
        put16(&mut t, len);
        if let Some(p) = pen {
            put32(&mut t, p);
        }
    }
    let record = |src: u8, name: &[u8], long: usize, octets: u64| {
        let mut r = vec![10, 0, 0, src];
        r.extend_from_slice(&[0xAA; 4]);
        r.push(name.len() as u8);
        r.extend_from_slice(name);
        // The 255 escape: a 2-byte length follows (RFC 7011 §7).
        r.push(255);
        put16(&mut r, long as u16);
        r.extend(std::iter::repeat_n(b'x', long));
        r.extend_from_slice(&[10, 0, 1, src]);
        put16(&mut r, 1000 + u16::from(src));
        put16(&mut r, 443);
        r.extend_from_slice(&octets.to_be_bytes());
        r.push(6);
        r
    };
    let mut data = record(1, b"eth0", 300, 1234);
    data.extend(record(2, b"", 0, 99));
    data.extend_from_slice(&[0, 0, 0]); // padding
    let mut d = Decoder::default();
    let (s, out) = decode(&mut d, &ipfix(3, &[(2, t), (500, data)]));
    assert_eq!(s.error, None);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].src_addr, out[0].dst_addr),
        (ip("10.0.0.1"), ip("10.0.1.1"))
    );
    assert_eq!(
        (out[0].src_port, out[0].dst_port, out[0].protocol),
        (1001, 443, 6)
    );
    assert_eq!(out[0].bytes, 1234);
    assert_eq!((out[1].src_addr, out[1].bytes), (ip("10.0.0.2"), 99));
    assert_eq!(out[1].domain_id, 3);
    // No time fields: both ends are the export time.
    assert_eq!(out[0].start_ms, u64::from(EXPORT_S) * 1000);

    // A variable-length field running past the set: malformed, counted.
    let mut bad = record(3, b"eth0", 10, 1);
    bad.truncate(30); // longer than the 27-byte minimum record
    bad[8] = 200; // the name claims 200 bytes
    let (s, out) = decode(&mut d, &ipfix(3, &[(500, bad)]));
    assert_eq!(out.len(), 0);
    assert_eq!(s.malformed_sets, 1);
    assert!(matches!(
        s.error,
        Some(DecodeError::RecordOverrun {
            template_id: 500,
            ..
        })
    ));
}

#[test]
fn ipfix_template_withdrawal() {
    let mut d = Decoder::default();
    let mut opt = Vec::new();
    put16(&mut opt, 257);
    put16(&mut opt, 2);
    put16(&mut opt, 1);
    opt.extend_from_slice(&[0, 149, 0, 4, 0, 34, 0, 4]);
    let mut both = tpl(256, BASIC);
    both.extend(tpl(258, BASIC));
    decode(&mut d, &ipfix(1, &[(2, both.clone()), (3, opt.clone())]));
    assert_eq!(d.templates().len_for(exporter()), 3);
    assert_eq!(
        d.templates().kind(exporter(), 1, 257, NOW_MS),
        Some(TemplateKind::Options)
    );

    // Withdraw 256 (field count 0), then its data is missing.
    let (s, _) = decode(&mut d, &ipfix(1, &[(2, vec![1, 0, 0, 0])]));
    assert_eq!(s.templates_withdrawn, 1);
    let (s, out) = decode(&mut d, &ipfix(1, &[(256, basic_record([1; 4], [2; 4], 3))]));
    assert_eq!((s.missing_template_sets, out.len()), (1, 0));

    // Template id 2 in a template set withdraws every data template of the
    // domain; options templates and other domains stay.
    decode(&mut d, &ipfix(1, &[(2, both.clone())]));
    decode(&mut d, &ipfix(9, &[(2, both)]));
    let (s, _) = decode(&mut d, &ipfix(1, &[(2, vec![0, 2, 0, 0])]));
    assert_eq!(s.templates_withdrawn, 2);
    assert!(d.templates().contains(exporter(), 1, 257, NOW_MS));
    assert!(d.templates().contains(exporter(), 9, 256, NOW_MS));
    // Id 3 in an options template set withdraws the options templates.
    let (s, _) = decode(&mut d, &ipfix(1, &[(3, vec![0, 3, 0, 0])]));
    assert_eq!(s.templates_withdrawn, 1);
    assert_eq!(d.templates().len_for(exporter()), 2);
}

#[test]
fn ipv6_and_absolute_times() {
    let mut d = Decoder::default();
    // src6, dst6, flowStartSeconds, flowDurationMilliseconds, flowDirection,
    // packetDeltaCount (reduced to 2 bytes).
    let t = tpl(
        600,
        &[(27, 16), (28, 16), (150, 4), (161, 4), (61, 1), (2, 2)],
    );
    let mut r = Vec::new();
    r.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    r.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    put32(&mut r, 1_500_000_000);
    put32(&mut r, 2_500);
    r.push(1);
    put16(&mut r, 7);
    let (_, out) = decode(&mut d, &ipfix(1, &[(2, t), (600, r)]));
    let f = &out[0];
    assert_eq!(
        (f.src_addr, f.dst_addr),
        (ip("2001:db8::1"), ip("2001:db8::2"))
    );
    assert_eq!(
        (f.start_ms, f.end_ms),
        (1_500_000_000_000, 1_500_000_002_500)
    );
    assert_eq!(f.direction, Direction::Egress);
    assert_eq!(f.packets, 7);
}

// ---- sampling --------------------------------------------------------------

#[test]
fn v9_sampler_options_apply_to_later_records() {
    let mut d = Decoder::default();
    // Options template 260: scope System (4 bytes); FLOW_SAMPLER_ID (1),
    // FLOW_SAMPLER_MODE (1), FLOW_SAMPLER_RANDOM_INTERVAL (4).
    let mut ot = Vec::new();
    put16(&mut ot, 260);
    put16(&mut ot, 4);
    put16(&mut ot, 12);
    ot.extend_from_slice(&[0, 1, 0, 4, 0, 48, 0, 1, 0, 49, 0, 1, 0, 50, 0, 4]);
    ot.extend_from_slice(&[0, 0]); // padding
    let mut od = Vec::new();
    for (id, rate) in [(3u8, 512u32), (4, 100)] {
        put32(&mut od, 0);
        od.push(id);
        od.push(2);
        put32(&mut od, rate);
    }
    // Data template 261: src, dst, FLOW_SAMPLER_ID.
    let dt = tpl(261, &[(8, 4), (12, 4), (48, 1)]);
    let mut data = Vec::new();
    for id in [3u8, 4, 9] {
        data.extend_from_slice(&[10, 0, 0, id, 10, 0, 0, 1, id]);
    }
    let (s, out) = decode(&mut d, &v9(5, &[(1, ot), (260, od), (0, dt), (261, data)]));
    assert_eq!(s.options_records, 2);
    let rates: Vec<u32> = out.iter().map(|r| r.sampling_rate).collect();
    // Sampler 3, sampler 4, and an unknown sampler (the domain's last rate).
    assert_eq!(rates, [512, 100, 100]);
    assert_eq!(d.sampling_rate(exporter(), 5), Some(100));
    assert_eq!(d.sampling_rate(exporter(), 6), None);
}

#[test]
fn ipfix_selector_options_and_own_interval() {
    let mut d = Decoder::default();
    // Options template 270: scope selectorId (302); samplingPacketInterval
    // (305), samplingPacketSpace (306).
    let mut ot = Vec::new();
    put16(&mut ot, 270);
    put16(&mut ot, 3);
    put16(&mut ot, 1);
    ot.extend_from_slice(&[0x01, 0x2E, 0, 4, 0x01, 0x31, 0, 4, 0x01, 0x32, 0, 4]);
    let mut od = Vec::new();
    put32(&mut od, 7);
    put32(&mut od, 1);
    put32(&mut od, 9);
    // Data template 271: src, dst, selectorId; 272 also samplingInterval.
    let mut dt = tpl(271, &[(8, 4), (12, 4), (302, 4)]);
    dt.extend(tpl(272, &[(8, 4), (12, 4), (34, 4)]));
    let mut d1 = vec![10, 0, 0, 1, 10, 0, 0, 2];
    put32(&mut d1, 7);
    let mut d2 = vec![10, 0, 0, 1, 10, 0, 0, 2];
    put32(&mut d2, 64);
    let (_, out) = decode(
        &mut d,
        &ipfix(2, &[(3, ot), (270, od), (2, dt), (271, d1), (272, d2)]),
    );
    assert_eq!(out[0].sampling_rate, 10); // (1 + 9) / 1
    assert_eq!(out[1].sampling_rate, 64); // the record's own interval
    assert_eq!(d.sampling_rate(exporter(), 2), Some(10));
}

#[test]
fn v5_sampling_interval() {
    let mut pkt = vec![0, 5, 0, 1];
    pkt.resize(22, 0);
    put16(&mut pkt, 0x4000 | 100); // mode 1 (deterministic), 1 in 100
    let mut rec = vec![0u8; 48];
    rec[..4].copy_from_slice(&[10, 0, 0, 1]);
    pkt.extend(rec);
    let mut d = Decoder::default();
    let (_, out) = decode(&mut d, &pkt);
    assert_eq!(out[0].sampling_rate, 100);
}

// ---- bounds ----------------------------------------------------------------

#[test]
fn templates_per_exporter_are_bounded() {
    let mut d = Decoder::new(DecoderConfig {
        max_templates_per_exporter: 4,
        ..Default::default()
    });
    let mut body = Vec::new();
    for id in 256..266 {
        body.extend(tpl(id, BASIC));
    }
    let (s, _) = decode(&mut d, &v9(1, &[(0, body)]));
    assert_eq!((s.templates, s.templates_evicted), (10, 6));
    assert_eq!(d.templates().len_for(exporter()), 4);
    // The most recent ones are kept.
    assert!(d.templates().contains(exporter(), 1, 265, NOW_MS));
}

#[test]
fn exporters_are_bounded() {
    let mut d = Decoder::new(DecoderConfig {
        max_exporters: 2,
        ..Default::default()
    });
    let pkt = v9(1, &[(0, tpl(256, BASIC))]);
    let mut out = Vec::new();
    for (i, last) in [1u8, 2, 3].into_iter().enumerate() {
        let a = IpAddr::from([192, 0, 2, last]);
        d.decode(a, &pkt, NOW_MS + i as u64, &mut out).unwrap();
    }
    assert_eq!(d.exporters().count(), 2);
    // The least recently heard exporter went, templates and all.
    assert!(d.counters(IpAddr::from([192, 0, 2, 1])).is_none());
    assert_eq!(d.templates().len(), 2);
}

#[test]
fn a_datagram_full_of_templates_stays_bounded() {
    // 8 000 one-field templates in one 64 KB flowset, bound 512: eviction
    // works in batches, so this is cheap, and the bound holds.
    let mut body = Vec::new();
    for id in 0..8_000u16 {
        body.extend(tpl(256 + id, &[(8, 4)]));
    }
    let mut d = Decoder::default();
    let started = std::time::Instant::now();
    let (s, _) = decode(&mut d, &v9(1, &[(0, body)]));
    let took = started.elapsed();
    assert_eq!(s.templates, 8_000);
    // Every template was stored; those not held any more were evicted.
    assert_eq!(
        s.templates_evicted,
        8_000 - d.templates().len_for(exporter())
    );
    assert!(d.templates().len_for(exporter()) <= 512);
    assert!(d.templates().contains(exporter(), 1, 256 + 7_999, NOW_MS));
    assert!(took.as_secs() < 5, "{took:?}");
}
