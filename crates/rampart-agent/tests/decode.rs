//! `rampart-agent decode` (the real binary) on captures built from
//! third-party exporter datagrams: the logstash-codec-netflow `.dat` files
//! and the goflow2 test packets in `shared/testdata`.
//!
//! Each `.dat` file is wrapped whole as one UDP payload, exactly as the
//! logstash spec feeds it to its codec and as rampart-flow's own tests do
//! (`netflow5.dat` is several v5 datagrams glued together by netcat; the
//! spec decodes the first: 2 events). Expected counts and field values are
//! the third-party ones: `netflow_spec.rb` contexts (as listed in
//! `contexts_index.json`, used by `rampart-flow/tests/logstash.rs`) and the
//! goflow2 Go tests (`rampart-flow/tests/goflow2.rs`):
//! - "Netflow 5 valid 01" (netflow5.dat): 2 events;
//! - "Netflow5 mikrotik" (netflow5_test_microtik.dat): 30;
//! - "IPFIX OpenBSD pflow" (tpl + data): 26;
//! - "Netflow 9 valid 01" (netflow9_test_valid01.dat): 7;
//! - goflow2 NetFlow v5: 6 records (header count 6, Records[0].Input = 9);
//! - goflow2 NetFlow v9 template + data: 21 records.
//!
//! Those contexts' events are all flow records (no options records), so
//! each event is one output line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, LinuxSllPacketType, PacketBuilder, VlanId};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};
use serde_json::Value;

const LOGSTASH_DAT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/netflow_logstash/dat"
);
const GOFLOW2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/netflow_goflow2"
);

fn dat(name: &str) -> Vec<u8> {
    let p = format!("{LOGSTASH_DAT}/{name}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

fn goflow2(name: &str) -> Vec<u8> {
    let p = format!("{GOFLOW2}/{name}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

/// A UDP sender: an exporter, or anything else on the wire.
#[derive(Clone, Copy)]
struct Sender {
    mac: [u8; 6],
    ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
}

const COLLECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const COLLECTOR_IP: [u8; 4] = [198, 51, 100, 1];

/// Exporter A: the logstash captures.
const A: Sender = Sender {
    mac: [0x02, 0, 0, 0, 0, 0x0a],
    ip: [192, 0, 2, 10],
    src_port: 2055,
    dst_port: 9995,
};
/// Exporter B: the goflow2 packets.
const B: Sender = Sender {
    mac: [0x02, 0, 0, 0, 0, 0x0b],
    ip: [203, 0, 113, 77],
    src_port: 50123,
    dst_port: 4739,
};

/// An Ethernet/IPv4/UDP frame carrying `payload`.
fn udp_frame(s: Sender, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(s.mac, COLLECTOR_MAC)
        .ipv4(s.ip, COLLECTOR_IP, 64)
        .udp(s.src_port, s.dst_port);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// A TCP frame: not for the decoder.
fn tcp_frame(s: Sender) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(s.mac, COLLECTOR_MAC)
        .ipv4(s.ip, COLLECTOR_IP, 64)
        .tcp(s.src_port, 22, 1, 1024);
    let mut v = Vec::new();
    b.write(&mut v, b"SSH-2.0-x\r\n").unwrap();
    v
}

/// The first fragment of a UDP datagram (more fragments follow).
fn fragment_frame(s: Sender, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, s.ip, COLLECTOR_IP).unwrap();
    h.more_fragments = true;
    h.identification = 4242;
    let b = PacketBuilder::ethernet2(s.mac, COLLECTOR_MAC)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(s.src_port, s.dst_port);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// 2023-11-14T22:13:20Z plus a sub-millisecond part, so that timestamp
/// units matter.
const T0: Duration = Duration::new(1_700_000_000, 123_456_789);

/// Frames of one capture; frame `i` is captured at `T0 + i ms`.
#[derive(Default)]
struct Capture {
    frames: Vec<(Vec<u8>, u32)>,
}

impl Capture {
    fn push(&mut self, frame: Vec<u8>) -> &mut Self {
        let len = frame.len() as u32;
        self.frames.push((frame, len));
        self
    }

    /// A frame of which only `captured` bytes were saved (snap length).
    fn push_cut(&mut self, mut frame: Vec<u8>, captured: usize) -> &mut Self {
        let len = frame.len() as u32;
        frame.truncate(captured);
        self.frames.push((frame, len));
        self
    }

    fn ts(i: usize) -> Duration {
        T0 + Duration::from_millis(i as u64)
    }

    fn pcap_bytes(&self, endianness: Endianness, res: TsResolution, link: DataLink) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            endianness,
            ts_resolution: res,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, (data, orig_len)) in self.frames.iter().enumerate() {
            w.write_packet(&PcapPacket::new(Self::ts(i), *orig_len, data))
                .unwrap();
        }
        w.into_writer()
    }

    fn pcap(&self) -> Vec<u8> {
        self.pcap_bytes(
            Endianness::Little,
            TsResolution::MicroSecond,
            DataLink::ETHERNET,
        )
    }

    /// pcapng with nanosecond timestamps (if_tsresol 9): pcap-file writes
    /// the timestamp's nanosecond count.
    fn pcapng(&self, endianness: Endianness) -> Vec<u8> {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0xffff,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .unwrap();
        for (i, (data, orig_len)) in self.frames.iter().enumerate() {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Self::ts(i),
                original_len: *orig_len,
                data: data[..].into(),
                options: vec![],
            })
            .unwrap();
        }
        w.into_inner()
    }
}

struct Run {
    code: i32,
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("warning: frame"))
            .collect()
    }

    #[track_caller]
    fn has(&self, line: &str) {
        assert!(
            self.stderr.lines().any(|l| l == line),
            "stderr lacks {line:?}:\n{}",
            self.stderr
        );
    }
}

fn decode_path(path: &Path) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart-agent"))
        .arg("decode")
        .arg(path)
        .current_dir(dir.path())
        .env_remove("RAMPART_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    Run {
        code: out.status.code().unwrap(),
        lines,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn decode_bytes(bytes: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("capture.pcap");
    std::fs::write(&path, bytes).unwrap();
    decode_path(&path)
}

/// The fields of a line, in the order written.
const FIELDS: [&str; 14] = [
    "start",
    "end",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "bytes",
    "packets",
    "tcp_flags",
    "in_if",
    "out_if",
    "sampling_rate",
    "exporter",
];

/// Asserts a line's 5-tuple and counters, and its exporter.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn flow(
    v: &Value,
    src: &str,
    dst: &str,
    sport: u64,
    dport: u64,
    protocol: u64,
    bytes: u64,
    packets: u64,
    exporter: &str,
) {
    assert_eq!(v["src_addr"], src, "{v}");
    assert_eq!(v["dst_addr"], dst, "{v}");
    assert_eq!(v["src_port"], sport, "{v}");
    assert_eq!(v["dst_port"], dport, "{v}");
    assert_eq!(v["protocol"], protocol, "{v}");
    assert_eq!(v["bytes"], bytes, "{v}");
    assert_eq!(v["packets"], packets, "{v}");
    assert_eq!(v["exporter"], exporter, "{v}");
}

/// netflow5.dat ("Netflow 5 valid 01", json_events[0] and [1]).
#[track_caller]
fn netflow5_dat_flows(lines: &[Value], exporter: &str) {
    flow(
        &lines[0],
        "10.0.2.2",
        "10.0.2.15",
        54435,
        22,
        6,
        230,
        5,
        exporter,
    );
    assert_eq!(lines[0]["tcp_flags"], 16);
    assert_eq!(
        (lines[0]["in_if"].as_u64(), lines[0]["out_if"].as_u64()),
        (Some(0), Some(0))
    );
    flow(
        &lines[1],
        "10.0.2.15",
        "10.0.2.2",
        22,
        54435,
        6,
        304,
        4,
        exporter,
    );
    assert_eq!(lines[1]["tcp_flags"], 24);
}

#[test]
fn decodes_third_party_datagrams_of_two_exporters() {
    let mut c = Capture::default();
    c.push(udp_frame(A, &dat("netflow5.dat"))) // 1: 2 flows
        .push(udp_frame(B, &goflow2("TestDecodeNetFlowV5_data.bin"))) // 2: 6
        .push(udp_frame(A, &dat("ipfix_test_openbsd_pflow_tpl.dat"))) // 3
        .push(udp_frame(B, &goflow2("TestDecodeNetFlowV9_template.bin"))) // 4
        // 5: A's template is A's: B's copy of the data finds none.
        .push(udp_frame(B, &dat("ipfix_test_openbsd_pflow_data.dat")))
        .push(udp_frame(A, &dat("ipfix_test_openbsd_pflow_data.dat"))) // 6: 26
        .push(udp_frame(B, &goflow2("TestDecodeNetFlowV9_data.bin"))) // 7: 21
        .push(udp_frame(A, &dat("netflow5_test_microtik.dat"))) // 8: 30
        .push(udp_frame(A, &dat("netflow9_test_valid01.dat"))); // 9: 7
    let r = decode_bytes(&c.pcap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let l = &r.lines;
    assert_eq!(l.len(), 2 + 6 + 26 + 21 + 30 + 7, "{}", r.stderr);

    // Exactly the documented fields, in order, on every line.
    for v in l {
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want, "{v}");
        assert!(v["start"].as_str().unwrap().ends_with('Z'));
    }
    let (a, b) = ("192.0.2.10", "203.0.113.77");
    let count = |e: &str| l.iter().filter(|v| v["exporter"] == e).count();
    assert_eq!((count(a), count(b)), (2 + 26 + 30 + 7, 6 + 21));

    // Frame 1, "Netflow 5 valid 01".
    netflow5_dat_flows(&l[0..2], a);
    // Frame 2, goflow2 v5: Records[0].Input == 9.
    assert_eq!(l[2]["in_if"], 9);
    assert!(l[2..8].iter().all(|v| v["exporter"] == b));
    // Frame 6, "IPFIX OpenBSD pflow" decode[25] (json_events[0]).
    let v = &l[8 + 25];
    flow(v, "192.168.0.1", "192.168.0.17", 80, 64026, 6, 6425, 8, a);
    assert_eq!(
        (v["in_if"].as_u64(), v["out_if"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["start"], "2016-07-21T13:29:59.000Z");
    assert_eq!(v["end"], "2016-07-21T13:30:01.000Z");
    // Frame 7, goflow2 v9 data record 0 (DataRecord.Values in the Go test).
    let v = &l[34];
    flow(
        v,
        "198.38.120.222",
        "88.121.217.208",
        443,
        15184,
        6,
        1500,
        1,
        b,
    );
    assert_eq!(
        (v["in_if"].as_u64(), v["out_if"].as_u64()),
        (Some(354), Some(304))
    );
    assert_eq!(v["tcp_flags"], 16);
    // Frame 8, "Netflow5 mikrotik" decode[29] (json_events[0]).
    let v = &l[55 + 29];
    flow(v, "10.0.8.1", "192.168.0.1", 80, 51826, 6, 11442, 13, a);
    assert_eq!(
        (v["in_if"].as_u64(), v["out_if"].as_u64()),
        (Some(13), Some(46))
    );
    assert_eq!(v["tcp_flags"], 82);
    assert_eq!(v["start"], "2016-07-21T13:51:42.254Z");
    assert_eq!(v["end"], "2016-07-21T13:51:42.254Z");
    assert_eq!(v["sampling_rate"], 0);
    // Frame 9, "Netflow 9 valid 01" decode[0] (json_events[0]).
    flow(
        &l[85],
        "172.16.32.100",
        "172.16.32.248",
        123,
        123,
        17,
        76,
        1,
        a,
    );

    // B's data set without B's template: one warning, counted.
    let w = r.warnings();
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(
        w[0].starts_with("warning: frame 5 (2023-11-14T22:13:20.127Z) from 203.0.113.77:50123: "),
        "{}",
        w[0]
    );
    r.has("summary: data sets without a known template: 1");
    r.has("summary: 92 flows from 9 UDP datagrams of 2 exporters in 9 frames");
}

#[test]
fn reads_every_pcap_variant_and_pcapng() {
    let mut c = Capture::default();
    c.push(udp_frame(A, &dat("netflow5.dat")))
        .push(udp_frame(B, &goflow2("TestDecodeNetFlowV5_data.bin")))
        // Frame 3, a truncated one, shows how its time was read.
        .push_cut(udp_frame(A, &dat("netflow5.dat")), 100);
    let variants = [
        ("pcap LE µs", c.pcap()),
        (
            "pcap BE µs",
            c.pcap_bytes(
                Endianness::Big,
                TsResolution::MicroSecond,
                DataLink::ETHERNET,
            ),
        ),
        (
            "pcap LE ns",
            c.pcap_bytes(
                Endianness::Little,
                TsResolution::NanoSecond,
                DataLink::ETHERNET,
            ),
        ),
        (
            "pcap BE ns",
            c.pcap_bytes(
                Endianness::Big,
                TsResolution::NanoSecond,
                DataLink::ETHERNET,
            ),
        ),
        ("pcapng LE", c.pcapng(Endianness::Little)),
        ("pcapng BE", c.pcapng(Endianness::Big)),
    ];
    let mut first: Option<Vec<Value>> = None;
    for (name, bytes) in variants {
        let r = decode_bytes(&bytes);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert_eq!(r.lines.len(), 2 + 6, "{name}: {}", r.stderr);
        netflow5_dat_flows(&r.lines[0..2], "192.0.2.10");
        assert_eq!(r.lines[2]["in_if"], 9, "{name}");
        // T0 + 2 ms; the sub-millisecond part is dropped.
        let w = r.warnings();
        assert_eq!(w.len(), 1, "{name}: {}", r.stderr);
        assert!(
            w[0].starts_with("warning: frame 3 (2023-11-14T22:13:20.125Z): truncated frame"),
            "{name}: {}",
            w[0]
        );
        r.has("summary: truncated frames skipped: 1");
        match &first {
            None => first = Some(r.lines),
            Some(f) => assert_eq!(&r.lines, f, "{name}"),
        }
    }
}

#[test]
fn reads_raw_ip_linux_cooked_vlan_and_ipv6() {
    let payload = dat("netflow5.dat");
    let write = |b: PacketBuilderStep| -> Vec<u8> {
        let mut v = Vec::new();
        b.write(&mut v, &payload).unwrap();
        v
    };
    type PacketBuilderStep = etherparse::PacketBuilderStep<etherparse::UdpHeader>;

    // Raw IPv4 (LINKTYPE_RAW).
    let mut c = Capture::default();
    c.push(write(
        PacketBuilder::ipv4(A.ip, COLLECTOR_IP, 64).udp(A.src_port, A.dst_port),
    ));
    let bytes = c.pcap_bytes(Endianness::Little, TsResolution::MicroSecond, DataLink::RAW);
    let r = decode_bytes(&bytes);
    assert_eq!(r.code, 0, "{}", r.stderr);
    netflow5_dat_flows(&r.lines, "192.0.2.10");

    // Linux cooked capture (LINKTYPE_LINUX_SLL), e.g. `tcpdump -i any`.
    let mut c = Capture::default();
    c.push(write(
        PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [2, 0, 0, 0, 0, 0x0a, 0, 0])
            .ipv4(A.ip, COLLECTOR_IP, 64)
            .udp(A.src_port, A.dst_port),
    ));
    let bytes = c.pcap_bytes(
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::LINUX_SLL,
    );
    let r = decode_bytes(&bytes);
    assert_eq!(r.code, 0, "{}", r.stderr);
    netflow5_dat_flows(&r.lines, "192.0.2.10");

    // Ethernet with an 802.1Q tag, and an IPv6 exporter.
    let mut c = Capture::default();
    c.push(write(
        PacketBuilder::ethernet2(A.mac, COLLECTOR_MAC)
            .single_vlan(VlanId::try_new(42).unwrap())
            .ipv4(A.ip, COLLECTOR_IP, 64)
            .udp(A.src_port, A.dst_port),
    ))
    .push(write(
        PacketBuilder::ethernet2(B.mac, COLLECTOR_MAC)
            .ipv6(
                "2001:db8::77"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                "2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                64,
            )
            .udp(B.src_port, B.dst_port),
    ));
    let r = decode_bytes(&c.pcap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 4, "{}", r.stderr);
    netflow5_dat_flows(&r.lines[0..2], "192.0.2.10");
    netflow5_dat_flows(&r.lines[2..4], "2001:db8::77");
}

#[test]
fn bad_frames_are_counted_and_skipped() {
    let nf5 = dat("netflow5.dat");
    let whole = udp_frame(A, &goflow2("TestDecodeNetFlowV5_data.bin"));
    // The IP header claims more bytes than the (consistent) record holds.
    let short = whole[..whole.len() - 50].to_vec();
    let dns = Sender {
        src_port: 53,
        dst_port: 33333,
        ..B
    };
    let mut c = Capture::default();
    c.push(udp_frame(A, &nf5)) // 1: 2 flows
        .push_cut(whole, 100) // 2: snap length cut
        .push(short) // 3: headers longer than the frame
        .push(tcp_frame(A)) // 4: not UDP, silent
        .push(
            // 5: ICMP echo, not UDP, silent
            {
                let b = PacketBuilder::ethernet2(A.mac, COLLECTOR_MAC)
                    .ipv4(A.ip, COLLECTOR_IP, 64)
                    .icmpv4_echo_request(1, 1);
                let mut v = Vec::new();
                b.write(&mut v, b"ping").unwrap();
                v
            },
        )
        .push(fragment_frame(A, &nf5)) // 6: fragment
        // 7: "Netflow 5 invalid 01": a header claiming 55582 records.
        .push(udp_frame(B, &dat("netflow5_test_invalid01.dat")))
        // 8: a DNS answer, no flow export at all.
        .push(udp_frame(
            dns,
            &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0],
        ));
    let mut bytes = c.pcap();
    // 9: the file ends inside a record header.
    bytes.extend_from_slice(&[0x10, 0x20, 0x30, 0x40, 0, 0, 0, 0, 0xff]);

    let r = decode_bytes(&bytes);
    assert_eq!(r.code, 0, "{}", r.stderr);
    netflow5_dat_flows(&r.lines, "192.0.2.10");
    assert_eq!(r.lines.len(), 2);

    r.has("summary: non-UDP frames skipped: 2");
    r.has("summary: IP fragments skipped (not reassembled): 1");
    r.has("summary: truncated frames skipped: 2");
    r.has("summary: UDP datagrams that are not NetFlow v5/v9 or IPFIX: 1");
    r.has("summary: datagrams refused by the decoder: 1");
    r.has("summary: captures cut short: 1");
    r.has("summary: 2 flows from 3 UDP datagrams of 1 exporters in 8 frames");

    let w = r.warnings();
    let frames: Vec<&str> = w.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    // Non-UDP frames 4 and 5 are only counted.
    assert_eq!(frames, ["2", "3", "6", "7", "8"], "{}", r.stderr);
    assert!(w[0].contains("truncated frame: 100 of its"), "{}", w[0]);
    assert!(
        w[2].contains("IPv4 fragment from 192.0.2.10 (id 4242"),
        "{}",
        w[2]
    );
    assert!(
        w[3].contains("from 203.0.113.77:50123: datagram refused"),
        "{}",
        w[3]
    );
    assert!(
        w[4].contains("from 203.0.113.77:53: not flow export"),
        "{}",
        w[4]
    );
    assert!(
        r.stderr
            .contains("warning: capture unreadable after frame 8, stopped there"),
        "{}",
        r.stderr
    );
}

#[test]
fn per_frame_warnings_are_capped() {
    let frame = udp_frame(A, &dat("netflow5.dat"));
    let mut c = Capture::default();
    for _ in 0..30 {
        c.push_cut(frame.clone(), 60);
    }
    c.push(frame);
    let r = decode_bytes(&c.pcap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 2);
    assert_eq!(r.warnings().len(), 20, "{}", r.stderr);
    r.has("warning: more than 20 warnings; the rest are only counted below");
    r.has("summary: truncated frames skipped: 30");
}

#[test]
fn nothing_to_decode_exits_1_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "is empty: nothing to decode"),
        (
            "garbage",
            b"ts uid id.orig_h\n".to_vec(),
            "is not a file decode reads (first bytes 7473207569642069)",
        ),
        (
            "header only",
            Capture::default().pcap(),
            "error: no flows decoded from",
        ),
        (
            "only TCP",
            {
                let mut c = Capture::default();
                c.push(tcp_frame(A));
                c.pcap()
            },
            "error: no flows decoded from",
        ),
        (
            "only refused datagrams",
            {
                let mut c = Capture::default();
                c.push(udp_frame(A, &dat("netflow5_test_invalid02.dat")));
                c.pcap()
            },
            "error: no flows decoded from",
        ),
        (
            "802.11",
            Capture::default().pcap_bytes(
                Endianness::Little,
                TsResolution::MicroSecond,
                DataLink::IEEE802_11,
            ),
            "link type 105 is not supported",
        ),
        (
            "cut pcap header",
            Capture::default().pcap()[..10].to_vec(),
            "unreadable pcap header",
        ),
    ];
    for (name, bytes, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let r = decode_path(&path);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert!(r.lines.is_empty(), "{name}");
        assert!(r.stderr.contains(message), "{name}: {}", r.stderr);
    }

    let r = decode_path(&dir.path().join("missing.pcap"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot read"), "{}", r.stderr);

    // Over 2 GiB (sparse: no disk used): refused before reading.
    let big = dir.path().join("big.pcap");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(2 * 1024 * 1024 * 1024 + 1).unwrap();
    drop(f);
    let r = decode_path(&big);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is 2147483649 bytes, over the limit"),
        "{}",
        r.stderr
    );
}

// --- Zeek conn.log and Suricata EVE --------------------------------------
//
// Third-party logs from `shared/testdata/zeek_conn_log` and
// `shared/testdata/suricata_eve` (see their PROVENANCE.md). Zeek's btest
// baselines have `ts` canonified to `XXXXXXXXXX.XXXXXX`; the tests put back
// the first packet's time of the pcap the baseline was made from (the
// connection's `ts` by Zeek's definition). Pretty-printed JSON samples are
// written as the one-line form a log holds.

const ZEEK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/zeek_conn_log"
);
const EVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/suricata_eve"
);

fn read_text(dir: &str, rel: &str) -> String {
    let p = format!("{dir}/{rel}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
}

/// A pretty-printed JSON sample as one line.
fn json_line(dir: &str, rel: &str) -> String {
    let v: Value = serde_json::from_str(&read_text(dir, rel)).unwrap();
    v.to_string()
}

/// core.tcp-padding/conn.log with the pcap's first packet time as `ts`.
fn tcp_padding_conn_log() -> String {
    let pcap = std::fs::read(format!(
        "{ZEEK}/core.tcp-padding/tcp-http-with-padding.pcap"
    ))
    .unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(&pcap[..]).unwrap();
    let first = r.next_packet().unwrap().unwrap();
    let ts = format!(
        "{}.{:06}",
        first.timestamp.as_secs(),
        first.timestamp.subsec_micros()
    );
    assert_eq!(ts, "1690990955.944330");
    read_text(ZEEK, "core.tcp-padding/conn.log").replace("XXXXXXXXXX.XXXXXX", &ts)
}

fn decode_text(name: &str, text: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    decode_path(&path)
}

/// Asserts a whole line: every field, in the documented order.
#[track_caller]
fn exact(v: &Value, want: &str) {
    let want: Value = serde_json::from_str(want).unwrap();
    assert_eq!(v, &want);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut sorted = FIELDS.to_vec();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "{v}");
}

const PADDING_ORIG: &str = r#"{"start":"2023-08-02T15:42:35.944Z","end":"2023-08-02T15:42:46.858Z",
  "src_addr":"167.221.30.181","dst_addr":"217.207.159.63","src_port":59406,"dst_port":27272,
  "protocol":6,"bytes":704,"packets":13,"tcp_flags":19,"in_if":0,"out_if":0,
  "sampling_rate":1,"exporter":"0.0.0.0"}"#;
const PADDING_RESP: &str = r#"{"start":"2023-08-02T15:42:35.944Z","end":"2023-08-02T15:42:46.858Z",
  "src_addr":"217.207.159.63","dst_addr":"167.221.30.181","src_port":27272,"dst_port":59406,
  "protocol":6,"bytes":823,"packets":12,"tcp_flags":19,"in_if":0,"out_if":0,
  "sampling_rate":1,"exporter":"0.0.0.0"}"#;

#[test]
fn decodes_a_zeek_tsv_conn_log() {
    let r = decode_text("conn.log", &tcp_padding_conn_log());
    assert_eq!(r.code, 0, "{}", r.stderr);
    // 167.221.30.181 59406 217.207.159.63 27272 tcp http 10.914549 16 191 SF
    // F F 0 ShADadfF 13 704 12 823 - 6: one line per direction; flags from
    // the history (S, A, F and h, a, f: FIN|SYN|ACK = 19 each way).
    assert_eq!(r.lines.len(), 2);
    exact(&r.lines[0], PADDING_ORIG);
    exact(&r.lines[1], PADDING_RESP);
    r.has("summary: 2 flows from 11 lines (Zeek TSV log)");
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn decodes_zeek_json_and_eve_lines() {
    let x = "gravwell_corelight_json_tsv/extracted";
    let zeek = [
        json_line(ZEEK, &format!("{x}/conn1_in.json")),
        json_line(ZEEK, &format!("{x}/dns1_in.json")),
        json_line(ZEEK, &format!("{x}/conn2_in.json")),
    ]
    .join("\n");
    let r = decode_text("conn.json", &zeek);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 4);
    // conn1: 192.168.4.76:36844 -> 192.168.4.1:53 udp, 118/2 and 197/2;
    // ts 2020-08-16T06:26:03.553287Z + 0.0668518 s.
    flow(
        &r.lines[0],
        "192.168.4.76",
        "192.168.4.1",
        36844,
        53,
        17,
        118,
        2,
        "0.0.0.0",
    );
    flow(
        &r.lines[1],
        "192.168.4.1",
        "192.168.4.76",
        53,
        36844,
        17,
        197,
        2,
        "0.0.0.0",
    );
    assert_eq!(r.lines[0]["start"], "2020-08-16T06:26:03.553Z");
    assert_eq!(r.lines[0]["end"], "2020-08-16T06:26:03.620Z");
    // conn2: 192.168.4.76:46378 -> 31.3.245.133:80 tcp, 397/6 and 511/4.
    flow(
        &r.lines[2],
        "192.168.4.76",
        "31.3.245.133",
        46378,
        80,
        6,
        397,
        6,
        "0.0.0.0",
    );
    flow(
        &r.lines[3],
        "31.3.245.133",
        "192.168.4.76",
        80,
        46378,
        6,
        511,
        4,
        "0.0.0.0",
    );
    assert_eq!(r.lines[3]["end"], "2020-08-16T06:26:03.807Z");
    r.has("summary: log lines without flows skipped (other Zeek logs, EVE events other than flow and netflow): 1");
    r.has("summary: 4 flows from 3 lines (JSON lines: Zeek or Suricata EVE)");

    // telegraf's EVE samples: one flow event among alerts, dns, drop, http
    // and stats events.
    let eve: Vec<String> = [
        "v2/alert.json",
        "v2/dns.json",
        "v2/drop.json",
        "v2/flow.json",
        "v2/http.json",
        "v2/status.json",
        "test1.json",
        "test2.json",
    ]
    .iter()
    .map(|f| json_line(EVE, &format!("telegraf/{f}")))
    .collect();
    let r = decode_text("eve.json", &(eve.join("\n") + "\n"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 1);
    // v2/flow.json: a new flow with no counters yet, at its event time
    // 2023-04-07T00:28:22.136079+0800.
    exact(
        &r.lines[0],
        r#"{"start":"2023-04-06T16:28:22.136Z","end":"2023-04-06T16:28:22.136Z",
          "src_addr":"192.168.0.121","dst_addr":"142.251.130.3","src_port":50212,
          "dst_port":443,"protocol":6,"bytes":0,"packets":0,"tcp_flags":0,"in_if":0,
          "out_if":0,"sampling_rate":1,"exporter":"0.0.0.0"}"#,
    );
    r.has("summary: log lines without flows skipped (other Zeek logs, EVE events other than flow and netflow): 7");
    r.has("summary: 1 flows from 8 lines (JSON lines: Zeek or Suricata EVE)");
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn corrupted_logs_warn_and_still_decode() {
    let good = tcp_padding_conn_log();
    let record = good
        .lines()
        .find(|l| l.starts_with("1690990955"))
        .unwrap()
        .to_owned();
    let mut corrupt = String::new();
    for l in good.lines() {
        corrupt.push_str(l);
        corrupt.push('\n');
        if l == record {
            // Cut in the middle (a torn write), a bad address, garbage, a
            // line far over the limit, then the record again.
            corrupt.push_str(&record[..record.len() / 2]);
            corrupt.push('\n');
            corrupt.push_str(&record.replace("167.221.30.181", "167.221.30.381"));
            corrupt.push('\n');
            corrupt.push_str("\u{1}\u{2}garbage\n");
            corrupt.push_str(&"z".repeat(200_000));
            corrupt.push('\n');
            corrupt.push_str(&record);
            corrupt.push('\n');
        }
    }
    let r = decode_text("conn.log", &corrupt);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 4);
    exact(&r.lines[0], PADDING_ORIG);
    exact(&r.lines[3], PADDING_RESP);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: line"))
        .collect();
    assert_eq!(warnings.len(), 4, "{}", r.stderr);
    assert!(
        warnings[0].starts_with("warning: line 11: Zeek line skipped: line has"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("bad id.orig_h \"167.221.30.381\""),
        "{}",
        warnings[1]
    );
    assert!(
        warnings[2].starts_with("warning: line 13: Zeek line skipped: line has 1 fields"),
        "{}",
        warnings[2]
    );
    assert!(
        warnings[3].contains("line 14: 200001 bytes, over the 65536-byte line limit"),
        "{}",
        warnings[3]
    );
    r.has("summary: malformed log lines skipped: 4");
    r.has("summary: 4 flows from 16 lines (Zeek TSV log)");

    // An EVE file cut short in its last event, with a non-JSON line.
    let [a, b] = [
        json_line(EVE, "telegraf/v2/flow.json"),
        json_line(EVE, "telegraf/v2/alert.json"),
    ];
    let text = format!("{a}\nnot json\n{b}\n{}", &a[..a.len() - 20]);
    let r = decode_text("eve.json", &text);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines.len(), 1);
    assert!(
        r.stderr.contains("warning: line 2: Zeek line skipped"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("warning: line 4: EVE event skipped: not an EVE JSON object"),
        "{}",
        r.stderr
    );
    r.has("summary: malformed log lines skipped: 2");
    r.has("summary: log lines without flows skipped (other Zeek logs, EVE events other than flow and netflow): 1");
}

#[test]
fn logs_without_flows_exit_1() {
    // Only an alert, and Zeek's baseline with its canonified times.
    let r = decode_text("alerts.json", &json_line(EVE, "telegraf/v2/alert.json"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.lines.is_empty());
    assert!(
        r.stderr.contains("error: no flows decoded from"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("(1 lines)"), "{}", r.stderr);

    let r = decode_text("conn.log", &read_text(ZEEK, "core.pppoe/conn.log"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("bad ts \"XXXXXXXXXX.XXXXXX\""),
        "{}",
        r.stderr
    );
    r.has("summary: malformed log lines skipped: 7");
}
