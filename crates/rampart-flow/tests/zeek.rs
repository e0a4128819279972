//! Zeek conn.log reading, against `shared/testdata/zeek_conn_log`.
//!
//! - `core.*/conn.log` are Zeek's own btest baselines (TSV, with the
//!   header), made by Zeek from the pcap beside each. btest canonifies `ts`
//!   to `XXXXXXXXXX.XXXXXX`; every other column is Zeek's. The tests put back
//!   a real time: the first packet's time in that pcap, which for
//!   core.tcp-padding (one connection) is the connection's `ts` by
//!   definition ("the time of the first packet").
//! - `gravwell_corelight_json_tsv/extracted/*_in.json` are Corelight JSON
//!   records (pretty-printed; written here as the one-line form a log holds)
//!   and `conn{1,2}_out.tsv` gravwell's TSV rows of the same two connections,
//!   in Zeek's default conn column order plus `vlan` (gravwell's
//!   `tagHeaders["conn"]`); the rows have no header, so the tests give them
//!   Zeek's.

use std::net::IpAddr;

use rampart_flow::zeek::{LineOutcome, ZeekError, ZeekReader};
use rampart_flow::FlowRecord;

const ZEEK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/zeek_conn_log"
);

/// btest's canonified `ts`.
const CANONIFIED_TS: &str = "XXXXXXXXXX.XXXXXX";

fn exporter() -> IpAddr {
    "0.0.0.0".parse().unwrap()
}

fn read(rel: &str) -> String {
    let p = format!("{ZEEK}/{rel}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

/// The first record's timestamp of a classic little-endian µs pcap, as
/// `SECONDS.MICROS`, and the last one's in ms.
fn pcap_first_ts_and_last_ms(rel: &str) -> (String, u64) {
    let p = format!("{ZEEK}/{rel}");
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
    assert_eq!(
        &b[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "{rel}: not a LE µs pcap"
    );
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let first = format!("{}.{:06}", u32_at(24), u32_at(28));
    let (mut off, mut last_ms) = (24, 0);
    while off + 16 <= b.len() {
        last_ms = u64::from(u32_at(off)) * 1000 + u64::from(u32_at(off + 4)) / 1000;
        off += 16 + u32_at(off + 8) as usize;
    }
    (first, last_ms)
}

#[derive(Debug, Default, PartialEq)]
struct Tally {
    headers: usize,
    flow_lines: usize,
    skipped: usize,
    errors: Vec<(usize, ZeekError)>,
}

/// Feeds every line of `text` to one reader.
fn feed(text: &str) -> (Vec<FlowRecord>, Tally) {
    let mut r = ZeekReader::new(exporter());
    let mut out = Vec::new();
    let mut t = Tally::default();
    // Lines keep their `\n` (and any `\r`): the reader trims them.
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match r.line(line.as_bytes(), &mut out) {
            Ok(LineOutcome::Header) => t.headers += 1,
            Ok(LineOutcome::Flows(n)) => {
                assert!(n == 1 || n == 2);
                t.flow_lines += 1;
            }
            Ok(LineOutcome::Skipped) => t.skipped += 1,
            Err(e) => t.errors.push((i + 1, e)),
        }
    }
    (out, t)
}

#[track_caller]
#[allow(clippy::too_many_arguments)]
fn flow(
    r: &FlowRecord,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    protocol: u8,
    bytes: u64,
    packets: u64,
) {
    let got = (
        r.src_addr, r.src_port, r.dst_addr, r.dst_port, r.protocol, r.bytes, r.packets,
    );
    let want = (
        src.parse().unwrap(),
        sport,
        dst.parse().unwrap(),
        dport,
        protocol,
        bytes,
        packets,
    );
    assert_eq!(got, want, "{r:?}");
    assert_eq!(r.sampling_rate, 1);
    assert_eq!(r.resample, 1);
    assert_eq!((r.in_if, r.out_if), (0, 0));
    assert_eq!(r.exporter, exporter());
}

#[test]
fn tcp_padding_baseline_with_its_pcap_time() {
    let (ts, last_ms) = pcap_first_ts_and_last_ms("core.tcp-padding/tcp-http-with-padding.pcap");
    assert_eq!(ts, "1690990955.944330");
    let log = read("core.tcp-padding/conn.log").replace(CANONIFIED_TS, &ts);
    let (out, t) = feed(&log);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    // "### BTest ...", 8 header lines before the record, #close after.
    assert_eq!((t.headers, t.flow_lines, t.skipped), (10, 1, 0));
    assert_eq!(out.len(), 2);
    // 167.221.30.181 59406 217.207.159.63 27272 tcp http 10.914549 16 191 SF
    // F F 0 ShADadfF 13 704 12 823 - 6
    flow(
        &out[0],
        "167.221.30.181",
        59406,
        "217.207.159.63",
        27272,
        6,
        704,
        13,
    );
    flow(
        &out[1],
        "217.207.159.63",
        27272,
        "167.221.30.181",
        59406,
        6,
        823,
        12,
    );
    for r in &out {
        assert_eq!(r.start_ms, 1_690_990_955_944);
        // ts + duration = 1690990966.858879.
        assert_eq!(r.end_ms, 1_690_990_966_858);
        assert_eq!(r.app.as_str(), "http");
    }
    // Zeek's duration stops at the last packet carrying the connection
    // forward; here that is the pcap's last packet, to the ms.
    assert_eq!(out[0].end_ms, last_ms);
    // Originator S, A, F; responder h (SYN+ACK), a, f.
    assert_eq!(out[0].tcp_flags, 0x02 | 0x10 | 0x01);
    assert_eq!(out[1].tcp_flags, 0x02 | 0x10 | 0x01);
    // Every packet of the capture is in one direction or the other.
    assert_eq!(out[0].packets + out[1].packets, 25);
}

#[test]
fn pppoe_baseline_ipv6_icmp_and_unset_fields() {
    let (ts, _) = pcap_first_ts_and_last_ms("core.pppoe/pppoe.pcap");
    let log = read("core.pppoe/conn.log").replace(CANONIFIED_TS, &ts);
    let (out, t) = feed(&log);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.flow_lines, 7);
    // Only the first connection (5 + 5 packets) has responder packets.
    assert_eq!(out.len(), 8);
    // fc00:0:2:100::1:1 128 fc00::1 129 icmp - 0.156000 260 260 OTH T T 0 -
    // 5 500 5 500 - 58
    flow(
        &out[0],
        "fc00:0:2:100::1:1",
        128,
        "fc00::1",
        129,
        58,
        500,
        5,
    );
    flow(
        &out[1],
        "fc00::1",
        129,
        "fc00:0:2:100::1:1",
        128,
        58,
        500,
        5,
    );
    assert_eq!(out[0].end_ms - out[0].start_ms, 156);
    // fe80::c801:eff:fe88:8 134 fe80::ce05:eff:fe88:0 133 icmp - - - - OTH
    // T T 0 - 1 64 0 0 - 58: unset duration and byte counts keep the flow.
    flow(
        &out[2],
        "fe80::c801:eff:fe88:8",
        134,
        "fe80::ce05:eff:fe88:0",
        133,
        58,
        64,
        1,
    );
    assert_eq!(out[2].start_ms, out[2].end_ms);
    // fe80::c801:eff:fe88:8 547 fe80::ce05:eff:fe88:0 546 udp - 0.096000 192
    // 0 S0 T T 0 D 2 288 0 0 - 17
    flow(
        &out[3],
        "fe80::c801:eff:fe88:8",
        547,
        "fe80::ce05:eff:fe88:0",
        546,
        17,
        288,
        2,
    );
    assert_eq!(out[3].tcp_flags, 0, "history letters are TCP's only");
    flow(
        &out[4],
        "fe80::c801:eff:fe88:8",
        136,
        "ff02::1",
        135,
        58,
        64,
        1,
    );
    flow(
        &out[5],
        "fe80::c801:eff:fe88:8",
        143,
        "ff02::16",
        0,
        58,
        608,
        8,
    );
    flow(
        &out[6],
        "fe80::ce05:eff:fe88:0",
        133,
        "ff02::2",
        134,
        58,
        48,
        1,
    );
    flow(
        &out[7],
        "fe80::ce05:eff:fe88:0",
        546,
        "ff02::1:2",
        547,
        17,
        210,
        2,
    );
    assert!(out.iter().all(|r| r.app.is_empty()));
}

#[test]
fn q_in_q_baseline() {
    let (ts, _) = pcap_first_ts_and_last_ms("core.q-in-q/q-in-q.pcap");
    let log = read("core.q-in-q/conn.log").replace(CANONIFIED_TS, &ts);
    let (out, t) = feed(&log);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(out.len(), 2);
    flow(
        &out[0],
        "172.19.51.37",
        47808,
        "172.19.51.63",
        47808,
        17,
        92,
        2,
    );
    flow(
        &out[1],
        "193.1.186.60",
        9875,
        "224.2.127.254",
        9875,
        17,
        608,
        2,
    );
}

#[test]
fn canonified_ts_is_an_error_not_epoch_zero() {
    let (out, t) = feed(&read("core.pppoe/conn.log"));
    assert!(out.is_empty());
    assert_eq!(t.flow_lines, 0);
    assert_eq!(t.errors.len(), 7);
    for (_, e) in &t.errors {
        assert!(
            matches!(e, ZeekError::BadField { field: "ts", value, .. } if value == CANONIFIED_TS),
            "{e:?}"
        );
    }
}

/// A pretty-printed JSON record as the one line a JSON log holds.
fn one_line(rel: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&read(rel)).unwrap();
    v.to_string()
}

/// Zeek's default conn columns, plus gravwell's trailing `vlan`.
const GRAVWELL_HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n\
#unset_field\t-\n#path\tconn\n\
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t\
orig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\t\
orig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\tvlan\n";

const EXTRACTED: &str = "gravwell_corelight_json_tsv/extracted";

#[test]
fn corelight_json_and_gravwell_tsv_agree() {
    let json = format!(
        "{}\n{}\n",
        one_line(&format!("{EXTRACTED}/conn1_in.json")),
        one_line(&format!("{EXTRACTED}/conn2_in.json"))
    );
    let (from_json, t) = feed(&json);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.flow_lines, 2);

    let tsv = format!(
        "{GRAVWELL_HEADER}{}\n{}\n",
        read(&format!("{EXTRACTED}/conn1_out.tsv")).trim_end(),
        read(&format!("{EXTRACTED}/conn2_out.tsv")).trim_end()
    );
    let (from_tsv, t) = feed(&tsv);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.flow_lines, 2);

    // gravwell rounds durations to 5 decimals; both land on the same ms.
    assert_eq!(from_json, from_tsv);
    assert_eq!(from_json.len(), 4);

    // conn1: 192.168.4.76:36844 -> 192.168.4.1:53 udp dns, ts
    // 2020-08-16T06:26:03.553287Z (1597559163.553287), duration 0.0668518...
    flow(
        &from_json[0],
        "192.168.4.76",
        36844,
        "192.168.4.1",
        53,
        17,
        118,
        2,
    );
    flow(
        &from_json[1],
        "192.168.4.1",
        53,
        "192.168.4.76",
        36844,
        17,
        197,
        2,
    );
    for r in &from_json[..2] {
        assert_eq!(
            (r.start_ms, r.end_ms),
            (1_597_559_163_553, 1_597_559_163_620)
        );
        assert_eq!(r.app.as_str(), "dns");
        assert_eq!(r.tcp_flags, 0);
    }
    // conn2: 192.168.4.76:46378 -> 31.3.245.133:80 tcp http, history
    // ShADadFf, duration 0.2541151...
    flow(
        &from_json[2],
        "192.168.4.76",
        46378,
        "31.3.245.133",
        80,
        6,
        397,
        6,
    );
    flow(
        &from_json[3],
        "31.3.245.133",
        80,
        "192.168.4.76",
        46378,
        6,
        511,
        4,
    );
    for r in &from_json[2..] {
        assert_eq!(
            (r.start_ms, r.end_ms),
            (1_597_559_163_553, 1_597_559_163_807)
        );
        assert_eq!(r.app.as_str(), "http");
        assert_eq!(r.tcp_flags, 0x13);
    }
}

#[test]
fn other_logs_json_records_are_skipped() {
    let mut names: Vec<String> = std::fs::read_dir(format!("{ZEEK}/{EXTRACTED}"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("_in.json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 34);
    let mut lines = String::new();
    let mut without_path = String::new();
    for n in &names {
        let line = one_line(&format!("{EXTRACTED}/{n}"));
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v.as_object_mut().unwrap().remove("_path");
        lines.push_str(&line);
        lines.push('\n');
        without_path.push_str(&v.to_string());
        without_path.push('\n');
    }
    let (out, t) = feed(&lines);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    // conn1 and conn2 are the only `"_path": "conn"` records.
    assert_eq!((t.flow_lines, t.skipped), (2, 32));
    assert_eq!(out.len(), 4);

    // Zeek's own JSON writer logs no _path: conn-only keys (missed_bytes,
    // conn_state, ...) tell conn records apart, so dns, ssh and the other
    // logs with a 4-tuple are still skipped.
    let (out2, t) = feed(&without_path);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!((t.flow_lines, t.skipped), (2, 32));
    assert_eq!(out2, out);
}

#[test]
fn zeek_json_numbers_iso_and_millisecond_times_agree() {
    // conn1's fields in the forms Zeek's JSON writer can give `ts`:
    // epoch seconds (default), ISO 8601 (Corelight), integer ms (TS_MILLIS).
    let rest = r#""id.orig_h":"192.168.4.76","id.orig_p":36844,"id.resp_h":"192.168.4.1","id.resp_p":53,"proto":"udp","duration":0.06685185432434082,"missed_bytes":0,"orig_pkts":2,"orig_ip_bytes":118,"resp_pkts":2,"resp_ip_bytes":197"#;
    let mut got = Vec::new();
    for ts in [
        "1597559163.553287",
        "\"2020-08-16T06:26:03.553287Z\"",
        "1597559163553",
    ] {
        let (out, t) = feed(&format!("{{\"ts\":{ts},{rest}}}"));
        assert!(t.errors.is_empty(), "{ts}: {:?}", t.errors);
        assert_eq!(out.len(), 2);
        got.push((out[0].start_ms, out[0].end_ms));
    }
    assert_eq!(got[0], (1_597_559_163_553, 1_597_559_163_620));
    assert_eq!(got[1], got[0]);
    // ms precision only: 553 + 66.85 = 619.85.
    assert_eq!(got[2], (1_597_559_163_553, 1_597_559_163_619));
}

#[test]
fn broken_lines_are_errors_and_reading_goes_on() {
    let (ts, _) = pcap_first_ts_and_last_ms("core.q-in-q/q-in-q.pcap");
    let log = read("core.q-in-q/conn.log").replace(CANONIFIED_TS, &ts);
    let good: Vec<&str> = log.lines().collect();
    let record = good.iter().find(|l| l.starts_with(&ts)).unwrap();
    let fields: Vec<&str> = record.split('\t').collect();
    let with = |i: usize, v: &str| {
        let mut f = fields.clone();
        f[i] = v;
        f.join("\t")
    };
    let cases: Vec<(String, &str)> = vec![
        (fields[..10].join("\t"), "FieldCount"),
        (format!("{record}\textra"), "FieldCount"),
        (with(2, "172.19.51.999"), "id.orig_h"),
        (with(3, "70000"), "id.orig_p"),
        (with(6, "sctp"), "proto"),
        (with(21, "300"), "ip_proto"),
        (with(8, "0.1.2"), "duration"),
        (with(17, "lots"), "orig_ip_bytes"),
        (with(0, "-"), "missing ts"),
        (with(4, "-"), "missing id.resp_h"),
        ("{\"ts\":1,".to_owned(), "Json"),
        ("[1,2]".to_owned(), "FieldCount"),
        ("x".repeat(70_000), "LineTooLong"),
        (vec!["a"; 300].join("\t"), "TooManyFields"),
    ];
    let mut r = ZeekReader::new(exporter());
    let mut out = Vec::new();
    for l in &good[..good.len() - 3] {
        r.line(l.as_bytes(), &mut out).unwrap();
    }
    assert!(out.is_empty());
    for (line, what) in &cases {
        let e = r.line(line.as_bytes(), &mut out).expect_err(what);
        let text = format!("{e:?}");
        let ok = match *what {
            "missing ts" => e == ZeekError::MissingField { field: "ts" },
            "missing id.resp_h" => e == ZeekError::MissingField { field: "id.resp_h" },
            w => text.contains(w),
        };
        assert!(ok, "{what}: {e:?}");
        assert!(out.is_empty(), "{what}");
        // Messages are lowercase sentences without a final period.
        let msg = e.to_string();
        assert!(!msg.ends_with('.'), "{msg}");
    }
    // The reader still reads the good records after all that.
    for l in &good[good.len() - 3..] {
        r.line(l.as_bytes(), &mut out).unwrap();
    }
    assert_eq!(out.len(), 2);
}

#[test]
fn header_state_rotation_and_other_paths() {
    let (ts, _) = pcap_first_ts_and_last_ms("core.q-in-q/q-in-q.pcap");
    let conn = read("core.q-in-q/conn.log").replace(CANONIFIED_TS, &ts);
    // An http.log (same directory's baseline) then conn.log, as a tailer
    // sees files concatenated: the new #separator resets the header.
    let http = read("core.tcp-padding/http.log");
    let (out, t) = feed(&format!("{http}{conn}"));
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.skipped, 1, "the http record");
    assert_eq!(out.len(), 2);

    // Data before any header is refused; reset() forgets the header.
    let mut r = ZeekReader::new(exporter());
    let mut out = Vec::new();
    let record = conn.lines().find(|l| l.starts_with(&ts)).unwrap();
    assert_eq!(
        r.line(record.as_bytes(), &mut out),
        Err(ZeekError::NoHeader)
    );
    for l in conn.lines() {
        r.line(l.as_bytes(), &mut out).unwrap();
    }
    assert_eq!(out.len(), 2);
    assert_eq!(
        r.line(record.as_bytes(), &mut out),
        Ok(LineOutcome::Flows(1))
    );
    r.reset();
    assert_eq!(
        r.line(record.as_bytes(), &mut out),
        Err(ZeekError::NoHeader)
    );

    // A conn header without a required column is reported at the header
    // and at every record.
    let mut r = ZeekReader::new(exporter());
    let broken = conn.replace("\tid.resp_h\t", "\tid.resp_host\t");
    let mut errors = 0;
    for l in broken.lines() {
        if let Err(e) = r.line(l.as_bytes(), &mut out) {
            assert_eq!(e, ZeekError::MissingColumn { field: "id.resp_h" });
            errors += 1;
        }
    }
    assert_eq!(errors, 3);

    // CRLF line ends and blank lines.
    let (out, t) = feed(&format!("\r\n{}", conn.replace('\n', "\r\n")));
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(out.len(), 2);
}

#[test]
fn other_separator_and_unset_marker() {
    let (ts, _) = pcap_first_ts_and_last_ms("core.q-in-q/q-in-q.pcap");
    let conn = read("core.q-in-q/conn.log").replace(CANONIFIED_TS, &ts);
    let comma = conn
        .replace("#separator \\x09", "#separator \\x2c")
        .replace("#set_separator\t,", "#set_separator,;")
        .replace("#unset_field\t-", "#unset_field\tNONE")
        .replace('\t', ",")
        .replace(",-\n", ",NONE\n");
    // Adjacent unset fields share a comma: replace until none is left.
    let mut comma = comma;
    while comma.contains(",-,") {
        comma = comma.replace(",-,", ",NONE,");
    }
    let (out, t) = feed(&comma);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let (want, _) = feed(&conn);
    assert_eq!(out, want);
}
