//! The nfdump-style filter language (`rampart_flow::filter`).
//!
//! Where the expected outcomes come from: every good expression in
//! `NFDUMP_TABLE` was run by nfdump 1.7.1 (Debian bookworm package
//! `nfdump 1.7.1-2+deb12u1`) over the twelve records of `records()`, sent to
//! `nfcapd` as NetFlow v9 (IPv4 and IPv6 templates, two exporters
//! 127.0.0.1/127.0.0.2) and listed with `nfdump -r <file> -q -N -o
//! 'fmt:%byt' '<filter>'`; each record has a distinct byte count, which is
//! how the listed flows were mapped back to indices. The comment above each
//! group quotes the nfdump(1) 1.7.1 man page ("filter" section) text that
//! defines it. Error columns come from counting characters in the input;
//! where nfdump 1.7.1 also refuses an expression (`nfdump -Z`, exit 254) the
//! table says so.

use std::net::IpAddr;

use rampart_flow::filter::{
    FieldSet, Filter, FilterError, MAX_DEPTH, MAX_FILTER_LEN, MAX_LIST_LEN,
};
use rampart_flow::{AppLabel, Direction, FlowRecord};

const T0: u64 = 1_700_000_000_000;

#[allow(clippy::too_many_arguments)]
fn rec(
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    proto: u8,
    flags: u8,
    bytes: u64,
    packets: u64,
    in_if: u32,
    out_if: u32,
    egress: bool,
    dur_ms: u64,
    exporter: &str,
) -> FlowRecord {
    FlowRecord {
        start_ms: T0,
        end_ms: T0 + dur_ms,
        bytes,
        packets,
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        exporter: exporter.parse().unwrap(),
        in_if,
        out_if,
        sampling_rate: 1,
        domain_id: 1,
        src_port: sp,
        dst_port: dp,
        protocol: proto,
        tcp_flags: flags,
        direction: if egress {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        resample: 1,
        flags: 0,
        app: AppLabel::default(),
    }
}

/// The records nfdump was run over (tcp flags: F=0x01 S=0x02 R=0x04 P=0x08
/// A=0x10 U=0x20).
fn records() -> Vec<FlowRecord> {
    let e1 = "127.0.0.1";
    let e2 = "127.0.0.2";
    vec![
        // 0: a client's SYN+ACK-flagged https flow
        rec(
            "10.0.0.1",
            "192.0.2.10",
            12345,
            443,
            6,
            0x12,
            1500,
            10,
            1,
            2,
            false,
            1000,
            e1,
        ),
        // 1: the reply, FIN SYN PSH ACK
        rec(
            "192.0.2.10",
            "10.0.0.1",
            443,
            12345,
            6,
            0x1b,
            1000,
            3,
            2,
            1,
            true,
            999,
            e1,
        ),
        // 2: dns
        rec(
            "10.1.2.3",
            "10.0.0.53",
            53,
            53,
            17,
            0,
            1001,
            1,
            3,
            4,
            false,
            0,
            e1,
        ),
        // 3: icmp
        rec(
            "172.16.5.4",
            "8.8.8.8",
            0,
            0,
            1,
            0,
            84,
            1,
            0,
            5,
            false,
            5,
            e2,
        ),
        // 4: a lone SYN
        rec(
            "172.31.255.255",
            "172.16.0.1",
            5000,
            80,
            6,
            0x02,
            60,
            1,
            6,
            6,
            false,
            0,
            e2,
        ),
        // 5: all six flags, same address both ends
        rec(
            "10.0.0.1", "10.0.0.1", 80, 80, 6, 0x3f, 1_000_000, 1000, 1, 1, true, 60_000, e1,
        ),
        // 6: IPv6 tcp, PSH ACK
        rec(
            "2001:db8::1",
            "2001:db8:1::2",
            40000,
            443,
            6,
            0x18,
            999,
            2,
            9,
            10,
            false,
            1001,
            e1,
        ),
        // 7: icmp6
        rec(
            "2001:db8:ffff::1",
            "fe80::1",
            0,
            0,
            58,
            0,
            1_000_000_000,
            1_000_000,
            10,
            9,
            true,
            2000,
            e2,
        ),
        // 8: gre
        rec(
            "192.168.1.1",
            "192.168.2.1",
            1024,
            1023,
            47,
            0,
            2_000_000_000,
            1_000_001,
            8,
            0,
            false,
            10,
            e2,
        ),
        // 9: extremes
        rec(
            "10.255.255.255",
            "11.0.0.0",
            65535,
            0,
            17,
            0,
            1,
            1,
            0,
            0,
            false,
            0,
            e1,
        ),
        // 10: a reset
        rec(
            "203.0.113.7",
            "10.0.0.2",
            22,
            51000,
            6,
            0x04,
            40,
            1,
            7,
            0,
            true,
            1,
            e1,
        ),
        // 11: FIN ACK, largest ifIndex
        rec(
            "100.64.0.1",
            "198.51.100.1",
            8080,
            8443,
            6,
            0x11,
            999_999,
            999,
            u32::MAX,
            3,
            false,
            1000,
            e2,
        ),
    ]
}

const ALL: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const V4: &[usize] = &[0, 1, 2, 3, 4, 5, 8, 9, 10, 11];

/// Filter → indices of the records nfdump 1.7.1 listed for it.
const NFDUMP_TABLE: &[(&str, &[usize])] = &[
    // "All keywords are case insensitive." `any` matches every record.
    ("any", ALL),
    ("ANY", ALL),
    // "ip ipaddr / src ip ipaddr / dst ip ipaddr: True if the respective IP
    // field of the record matches ipaddr ... If ip is not specified with src
    // or dst the source or destination IP may match." "host is just a
    // synonym for ip." nfdump 1.6 nfdump(1): "They can also be used in
    // combination with and and or, such as src and dst ip .."
    ("src host 10.0.0.1", &[0, 5]),
    ("dst host 10.0.0.1", &[1, 5]),
    ("host 10.0.0.1", &[0, 1, 5]),
    ("src and dst host 10.0.0.1", &[5]),
    ("src or dst host 10.0.0.1", &[0, 1, 5]),
    ("ip 10.0.0.1", &[0, 1, 5]),
    ("Src Ip 192.0.2.10", &[1]),
    ("host 2001:db8::1", &[6]),
    ("dst host fe80::1", &[7]),
    ("host 2001:db8::2", &[]),
    // "net network netmask / net network/netbits: True if the respective IP
    // field of the record matches the network if the corresponding netmask
    // or netbits are applied to the IP address." nfdump 1.6 nfdump(1):
    // "Networks may be abreviated such as 172.16/16 if they are unambiguous."
    ("net 10.0.0.0/8", &[0, 1, 2, 5, 9, 10]),
    ("src net 10.0.0.0/8", &[0, 2, 5, 9]),
    ("dst net 10.0.0.0/8", &[1, 2, 5, 10]),
    ("src and dst net 10.0.0.0/8", &[2, 5]),
    ("net 10.0.0.0 255.0.0.0", &[0, 1, 2, 5, 9, 10]),
    ("net 10.0.0.0 0.0.0.255", &[9]),
    ("dst net 10.0.0.0 255.255.255.0", &[1, 2, 5, 10]),
    ("net 172.16/12", &[3, 4]),
    ("net 172.16/16", &[3, 4]),
    ("net 10.0.0.1/8", &[0, 1, 2, 5, 9, 10]),
    ("net 0.0.0.0/0", V4),
    ("net 2001:db8::/32", &[6, 7]),
    ("src net 2001:db8::/48", &[6]),
    ("net 2001:db8:1::/48", &[6]),
    ("dst net fe80::/10", &[7]),
    ("net 11.0.0.0/32", &[9]),
    ("net 10.0.0.0/8 and not net 10.0.0.0/24", &[9]),
    // "ip in [ iplist ]: True if the respective IP field of the record is in
    // iplist. iplist is a space or ',' separated list of IP addresses or
    // networks in CIDR notation."
    ("host in [ 10.0.0.1 8.8.8.8 ]", &[0, 1, 3, 5]),
    ("host in [10.0.0.2,2001:db8::1]", &[6, 10]),
    ("src host in [ 192.0.2.10 ]", &[1]),
    ("dst ip in [ 10.0.0.0/8 ]", &[1, 2, 5, 10]),
    ("ip in [ 172.16.0.0/12 fe80::/64 ]", &[3, 4, 7]),
    ("host in [ 10.0.0.0/24, 192.0.2.10 ]", &[0, 1, 2, 5, 10]),
    ("not host in [ 10.0.0.1 ]", &[2, 3, 4, 6, 7, 8, 9, 10, 11]),
    // "port comp num / src port comp num / dst port comp num: True if the
    // comparison of the respective port field matches num ... If port is not
    // specified with src or dst the source or destination port may match."
    // comp: "=, ==, >, <, >=, <= ... alternative comparators are available:
    // EQ, LT, GT, LE, GE. If comp is omitted, '==' is assumed."
    ("port 443", &[0, 1, 6]),
    ("src port 443", &[1]),
    ("dst port 443", &[0, 6]),
    ("port = 80", &[4, 5]),
    ("port == 80", &[4, 5]),
    ("port eq 80", &[4, 5]),
    ("port > 1023", &[0, 1, 4, 6, 8, 9, 10, 11]),
    ("port gt 1023", &[0, 1, 4, 6, 8, 9, 10, 11]),
    ("port < 1024", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("port lt 1024", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("port >= 1024", &[0, 1, 4, 6, 8, 9, 10, 11]),
    ("port ge 1024", &[0, 1, 4, 6, 8, 9, 10, 11]),
    ("port <= 1023", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("port le 1023", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("src port > 1023 and dst port < 1024", &[0, 4, 6, 8, 9]),
    ("src and dst port 80", &[5]),
    ("src or dst port 53", &[2]),
    ("port 0", &[3, 7, 9]),
    ("port 65535", &[9]),
    ("port >= 1024 and port <= 8080", &[0, 1, 4, 6, 8, 9, 10, 11]),
    ("src port gt 8000 or dst port lt 23", &[0, 3, 6, 7, 9, 11]),
    // "port in [ portlist ]: True if the respective port field of the record
    // is in portlist. portlist is a space or ',' separated list of port
    // numbers."
    ("port in [ 80 443 ]", &[0, 1, 4, 5, 6]),
    ("port in [22,53]", &[2, 10]),
    ("src port in [ 0 ]", &[3, 7]),
    ("dst port in [ 443 8443 ]", &[0, 6, 11]),
    ("src and dst port in [ 80 53 ]", &[2, 5]),
    ("not port in [ 80 443 ]", &[2, 3, 7, 8, 9, 10, 11]),
    // "proto protocol: True if the record protocol field matches protocol.
    // protocol can be a symbolic name such as tcp, udp, icmp, ah, esp, ipip,
    // and many more or a protocol number, such as 6, 17"
    ("proto tcp", &[0, 1, 4, 5, 6, 10, 11]),
    ("proto TCP", &[0, 1, 4, 5, 6, 10, 11]),
    ("proto udp", &[2, 9]),
    ("proto icmp", &[3]),
    ("proto icmp6", &[7]),
    ("proto gre", &[8]),
    ("proto esp", &[]),
    ("proto 47", &[8]),
    ("proto 6", &[0, 1, 4, 5, 6, 10, 11]),
    ("proto 58", &[7]),
    // "inet / ipv4: True if source and destination IP of a record are IPv4
    // IPs. inet6 / ipv6: True if source and destination IP of a record are
    // IPv6 IPs."
    ("inet", V4),
    ("ipv4", V4),
    ("inet6", &[6, 7]),
    ("ipv6", &[6, 7]),
    (
        "inet and not net 10.0.0.0/8 and not net 172.16.0.0/12 and not net 192.168.0.0/16",
        &[11],
    ),
    // "bytes comp num: True if the comparison of the byte counter in the flow
    // record matches num. num may contain any valid scaling factor such as k,
    // m, g. Example: bytes > 1k" and nfdump 1.6 nfdump(1): "scale scaling
    // factor. Maybe k m g. Factor is 1000". "packets comp num" likewise; "For
    // a single flow packets and in packets is equivalent".
    ("bytes 1000", &[1]),
    ("bytes > 1000", &[0, 2, 5, 7, 8, 11]),
    ("bytes < 1000", &[3, 4, 6, 9, 10]),
    ("bytes >= 1000", &[0, 1, 2, 5, 7, 8, 11]),
    ("bytes <= 1000", &[1, 3, 4, 6, 9, 10]),
    ("bytes > 1k", &[0, 2, 5, 7, 8, 11]),
    ("bytes > 1K", &[0, 2, 5, 7, 8, 11]),
    ("bytes >= 1m", &[5, 7, 8]),
    ("bytes > 1m", &[7, 8]),
    ("bytes >= 1g", &[7, 8]),
    ("bytes > 1g", &[8]),
    ("bytes < 100", &[3, 4, 9, 10]),
    ("bytes = 0x3e8", &[1]),
    ("packets 1", &[2, 3, 4, 9, 10]),
    ("packets > 1k", &[7, 8]),
    ("packets >= 1M", &[7, 8]),
    ("packets > 1m", &[8]),
    ("packets < 2", &[2, 3, 4, 9, 10]),
    ("packets >= 1000 and packets < 1m", &[5]),
    ("in packets 3", &[1]),
    ("in bytes 40", &[10]),
    // "flags tcpflags ... A ACK. S SYN. F FIN. R Reset. P Push. U Urgent.
    // X All flags on. The order of the flags within tcpflags is not
    // relevant. Flags not mentioned are treated as don't care. In order to
    // get those flows with only the SYN flag set, use the syntax flags S and
    // not flags AFRPU". nfdump tests all listed flags, only on TCP flows,
    // and reads a negated flags test as "none of them" (records 5 and 0 vs.
    // `not flags AF` below); a number compares the whole flags byte.
    ("flags S", &[0, 1, 4, 5]),
    ("flags A", &[0, 1, 5, 6, 11]),
    ("flags SA", &[0, 1, 5]),
    ("flags AS", &[0, 1, 5]),
    ("flags F", &[1, 5, 11]),
    ("flags R", &[5, 10]),
    ("flags X", &[5]),
    ("flags SAX", &[5]),
    ("flags AFRPUS", &[5]),
    ("flags S and not flags AFRPU", &[4]),
    ("flags 18", &[0]),
    ("flags 2", &[4]),
    ("not flags S", &[2, 3, 6, 7, 8, 9, 10, 11]),
    ("not flags AF", &[2, 3, 4, 7, 8, 9, 10]),
    ("not flags X", &[2, 3, 7, 8, 9]),
    ("not flags 18", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
    (
        "not (flags AF and port 443)",
        &[2, 3, 4, 5, 7, 8, 9, 10, 11],
    ),
    ("not (flags AF or port 53)", &[3, 4, 7, 8, 9, 10]),
    (
        "not (flags S and not flags AFRPU)",
        &[2, 3, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        "not (port 443 and not flags F)",
        &[1, 2, 3, 4, 5, 7, 8, 9, 10, 11],
    ),
    // "if num / in if num / out if num: True if the respective interface
    // fields of the record matches num ... If if is not specified with in or
    // out the input or output interface may match."
    ("in if 1", &[0, 5]),
    ("out if 1", &[1, 5]),
    ("if 1", &[0, 1, 5]),
    ("in if 4294967295", &[11]),
    ("out if 0", &[8, 9, 10]),
    ("if 9", &[6, 7]),
    // "router ip ipaddr: True if the ip address of the sending router
    // matches ipaddr"
    ("router ip 127.0.0.2", &[3, 4, 7, 8, 11]),
    ("router ip 127.0.0.1", &[0, 1, 2, 5, 6, 9, 10]),
    // "flowdir direction: True, if the flow direction field in the flow
    // record matches direction. direction may be ingress, egress, 0 for
    // ingress, or 1 for egress"
    ("flowdir ingress", &[0, 2, 3, 4, 6, 8, 9, 11]),
    ("flowdir egress", &[1, 5, 7, 10]),
    ("flowdir 0", &[0, 2, 3, 4, 6, 8, 9, 11]),
    ("flowdir 1", &[1, 5, 7, 10]),
    // "duration comp time: True if the calculated duration of a flow (tend -
    // tstart) compares to time. The duration is specified in msec"
    ("duration > 1000", &[5, 6, 7]),
    ("duration >= 1000", &[0, 5, 6, 7, 11]),
    ("duration < 1", &[2, 4, 9]),
    ("duration 0", &[2, 4, 9]),
    ("duration le 999", &[1, 2, 3, 4, 8, 9, 10]),
    // "A filter consists of one or more primitives, which are linked
    // together: expr and expr, expr or expr, not expr and (expr)"; "Anything
    // after a '#' is treated as a comment and ignored to the end of the
    // line." `not` binds tighter than `and`, `and` tighter than `or`.
    ("not port 80", &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11]),
    ("!port 80", &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11]),
    ("not not port 80", &[4, 5]),
    ("not (not (not port 80))", &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11]),
    ("(((port 80)))", &[4, 5]),
    ("port 80 and not port 81 or port 82", &[4, 5]),
    ("proto tcp and port 443 or proto udp", &[0, 1, 2, 6, 9]),
    ("proto udp or proto tcp and port 443", &[0, 1, 2, 6, 9]),
    ("(proto udp or proto tcp) and port 443", &[0, 1, 6]),
    ("not proto tcp and bytes > 100", &[2, 7, 8]),
    ("not (proto tcp and bytes > 100)", &[2, 3, 4, 7, 8, 9, 10]),
    ("port 80 && proto tcp", &[4, 5]),
    ("port 53 || proto icmp", &[2, 3]),
    ("port 80 # comment", &[4, 5]),
    ("port 80 # \u{fc}\nand port 1", &[]),
    // The and the man page's examples.
    ("src host 10.0.0.1 and dst port 443 and proto tcp", &[0]),
    (
        "inet6 and proto tcp and ( src port > 1024 and dst port 443 )",
        &[6],
    ),
];

fn matching(f: &Filter, recs: &[FlowRecord]) -> Vec<usize> {
    recs.iter()
        .enumerate()
        .filter(|(_, r)| f.matches(r))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn matches_what_nfdump_selects() {
    let recs = records();
    let mut wrong = Vec::new();
    for (src, want) in NFDUMP_TABLE {
        let f = Filter::parse(src).unwrap_or_else(|e| panic!("{src:?} failed to parse: {e}"));
        let got = matching(&f, &recs);
        if got != *want {
            wrong.push(format!("{src:?}: got {got:?}, nfdump {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Negation is the plain complement for every primitive except letter
/// flags (nfdump's special case, covered by the table above).
#[test]
fn not_is_the_complement_outside_letter_flags() {
    let recs = records();
    for (src, _) in NFDUMP_TABLE {
        if src.contains("flags") && !src.contains("flags 18") && !src.contains("flags 2") {
            continue;
        }
        let f = Filter::parse(src).unwrap();
        let neg = Filter::parse(&format!("not ({src}\n)")).unwrap();
        for (i, r) in recs.iter().enumerate() {
            assert_ne!(f.matches(r), neg.matches(r), "{src:?} on record {i}");
        }
    }
}

/// Where rampart deliberately differs from what nfdump 1.7.1 does; each is
/// listed in docs/filter.md ("Differences from nfdump").
#[test]
fn documented_differences_from_nfdump() {
    let recs = records();
    let m = |src: &str| matching(&Filter::parse(src).unwrap(), &recs);
    // ::/0 holds every IPv6 address (RFC 4291 section 2.3); nfdump 1.7.1
    // listed the IPv4 flows for it instead. Families never mix: an IPv4
    // filter address does not match an IPv6 flow address, nor the reverse
    // (nfdump matched `host ::10.0.0.1` against 10.0.0.1).
    assert_eq!(m("net ::/0"), vec![6, 7]);
    assert_eq!(m("host ::10.0.0.1"), Vec::<usize>::new());
    assert_eq!(m("host ::ffff:10.0.0.1"), Vec::<usize>::new());
    // Flag letters are accepted in lower case (nfdump: "Too many flags").
    assert_eq!(m("flags sa"), m("flags SA"));

    // An unknown direction is neither ingress nor egress (nfdump stores a
    // missing direction as 0, which reads as ingress).
    let mut r = recs[0];
    r.direction = Direction::Unknown;
    for src in [
        "flowdir ingress",
        "flowdir egress",
        "flowdir 0",
        "flowdir 1",
    ] {
        assert!(!Filter::parse(src).unwrap().matches(&r), "{src}");
    }
}

#[test]
fn leading_zeros_are_decimal_as_in_nfdump() {
    // nfdump 1.7.1 lists records 0, 1 and 5 for `host 010.0.0.1` and reads
    // `port 010` as port 10 (`nfdump -X`).
    let recs = records();
    assert_eq!(
        matching(&Filter::parse("host 010.0.0.1").unwrap(), &recs),
        vec![0, 1, 5]
    );
    assert_eq!(
        matching(&Filter::parse("port 0443").unwrap(), &recs),
        vec![0, 1, 6]
    );
}

/// (filter, expected column, fragment of the message). Columns count
/// characters from 1; "end" errors point one past the last character.
const BAD: &[(&str, usize, &str)] = &[
    ("dst port https", 10, "expected a port number after 'port', found 'https'"),
    // nfdump: "Port outside of range 0..65535"
    ("port 70000", 6, "port 70000 is out of range: use 0 to 65535"),
    ("port in [ 65536 ]", 11, "port 65536 is out of range"),
    // nfdump has no != or ne (both refused by `nfdump -Z`).
    ("port != 80", 6, "'!=' is not an nfdump comparator"),
    ("port ne 80", 6, "'ne' is not an nfdump comparator"),
    ("port => 80", 7, "expected a port number after 'port', found '>'"),
    ("port eq80", 6, "expected a port number after 'port', found 'eq80'"),
    ("host 10.0.0.1 or", 17, "expected a filter primitive such as 'host', 'net', 'port' or 'proto', found end of filter"),
    ("((port 80)", 11, "expected 'and', 'or' or ')' to close the '(' at column 1, found end of filter"),
    ("()", 2, "found ')'"),
    ("port 80)", 8, "expected 'and', 'or' or end of filter, found ')'"),
    ("and port 80", 1, "expected a filter primitive such as 'host', 'net', 'port' or 'proto', found 'and'"),
    ("not", 4, "found end of filter"),
    // No implicit `and` (nfdump: syntax error at 'dst').
    ("src host 10.0.0.1 dst host 10.0.0.2", 19, "expected 'and', 'or' or end of filter, found 'dst'"),
    ("src and port 80", 5, "expected 'ip', 'host', 'net' or 'port' after 'src', found 'and'"),
    ("src if 3", 5, "expected 'ip', 'host', 'net' or 'port' after 'src', found 'if'"),
    ("src 10.0.0.1", 5, "after 'src', found '10.0.0.1'"),
    // nfdump: "Too many netbits for this IP address"
    ("net 10.0.0.0/33", 14, "prefix length 33 is too long for an ipv4 network: at most 32"),
    ("net 2001:db8::/200", 16, "prefix length 200 is too long for an ipv6 network: at most 128"),
    ("net 10.0.0.0/", 14, "expected a prefix length after '/', found ''"),
    ("net 10.0.0.0/x", 14, "expected a prefix length after '/', found 'x'"),
    ("net 10.0.0.300/8", 5, "expected an ipv4 network such as 10.0.0.0/8 before '/', found '10.0.0.300'"),
    ("net 2001:db8::g/32", 5, "expected an ipv6 network before '/'"),
    // nfdump: "IP netmask syntax valid only for IPv4"
    ("net 2001:db8:: ffff::", 5, "expected a prefix length after the ipv6 network '2001:db8::'"),
    ("net 10.0.0.0 and port 80", 14, "expected a netmask such as 255.0.0.0 after the network '10.0.0.0', found 'and'"),
    ("net 10.0.0.0 255.255.255.256", 14, "expected a netmask"),
    // nfdump: syntax error (no shortcut without /bits)
    ("net 10.0.0", 5, "expected a network such as 10.0.0.0/8 after 'net', found '10.0.0'"),
    ("net", 4, "expected a network such as 10.0.0.0/8 after 'net', found end of filter"),
    // nfdump: "incomplete IP address"
    ("host 1.2.3", 6, "expected an ip address after 'host', found '1.2.3'"),
    ("host 1.2.3.4.5", 6, "expected an ip address after 'host'"),
    ("host www.example.com", 6, "hostnames are not resolved"),
    ("host 10.0.0.1/32", 6, "for a network write 'net' instead"),
    ("ip", 3, "expected an ip address after 'ip', found end of filter"),
    // nfdump: "Protocol number > 255" / "Unknown protocol"
    ("proto 300", 7, "protocol number 300 is out of range: use 0 to 255"),
    ("proto ipv6-icmp", 7, "expected a protocol name (tcp, udp, icmp, icmp6, gre, esp, ...) or number after 'proto', found 'ipv6-icmp'"),
    // nfdump: "Too many flags"
    ("flags SAQ", 9, "unknown tcp flag 'Q' in 'SAQ'"),
    ("flags", 6, "expected tcp flags"),
    ("flags 256", 7, "tcp flags value 256 is out of range"),
    // nfdump: "Input interface number must 0..2^32"
    ("in if 4294967296", 7, "interface number 4294967296 is out of range: use 0 to 4294967295"),
    ("in if > 3", 7, "expected an interface number after 'if', found '>'"),
    ("in 3", 4, "expected 'if', 'bytes' or 'packets' after 'in', found '3'"),
    ("out bytes > 10", 5, "'out bytes' counts the reverse side of a bidirectional flow"),
    ("router ip 10.0.0.0/8", 11, "expected an ip address after 'router ip', found '10.0.0.0/8'"),
    ("router net 10.0.0.0/8", 8, "expected 'ip' after 'router', found 'net'"),
    ("exporter 10.0.0.1", 1, "expected a filter primitive such as 'host', 'net', 'port' or 'proto', found 'exporter'"),
    ("as 65000", 1, "'as' is an nfdump filter primitive that rampart does not support"),
    ("proto tcp and TOS 4", 15, "'tos' is an nfdump filter primitive that rampart does not support"),
    ("in mac 00:11:22:33:44:55", 4, "'mac' is an nfdump filter primitive"),
    // Lists: nfdump refuses all of these with a syntax error.
    ("port in [80 443", 16, "expected a port number or ']' to close the list opened at column 9, found end of filter"),
    ("port in [ ]", 11, "expected a port number in the list, found ']'"),
    ("port in 80", 9, "expected '[' after 'in', found '80'"),
    ("host in [ 10.0.0.1, ]", 21, "expected an ip address or network in the list, found ']'"),
    ("port in [ 80,,443 ]", 14, "expected a port number in the list, found ','"),
    ("port in [ 80-90 ]", 11, "expected a port number in the list, found '80-90'"),
    ("ip in [ 10.0.0.1 bad ]", 18, "expected an ip address or network in the list, found 'bad'"),
    ("ip in [ 10.0.0.1 10.0.0.0/40 ]", 27, "prefix length 40 is too long"),
    // Numbers (nfdump: syntax error for each).
    ("bytes > 1.5k", 9, "expected a number such as 1500 or 10k after 'bytes', found '1.5k'"),
    ("bytes > 1 k", 11, "expected 'and', 'or' or end of filter, found 'k'"),
    ("bytes > 1kb", 9, "found '1kb'"),
    ("bytes > -1", 9, "found '-1'"),
    ("bytes > 1e3", 9, "found '1e3'"),
    ("packets > 18446744073709551616", 11, "number '18446744073709551616' is too large"),
    ("bytes > 20000000000g", 9, "is too large"),
    ("duration > 1s", 12, "expected a duration in milliseconds after 'duration', found '1s'"),
    ("flowdir sideways", 9, "expected 'ingress', 'egress', 0 or 1 after 'flowdir', found 'sideways'"),
    // Operators.
    ("port 80 & proto tcp", 9, "unexpected '&': write 'and' or '&&'"),
    ("port 80 | proto tcp", 9, "unexpected '|': write 'or' or '||'"),
    // Columns count characters, not bytes, including inside comments.
    ("port 80 and \u{fc}nknown", 13, "found '\u{fc}nknown'"),
    ("port 80 # \u{fc}\nand p\u{f6}rt 1", 17, "found 'p\u{f6}rt'"),
    ("host \u{e9}", 6, "expected an ip address after 'host', found '\u{e9}'"),
];

#[test]
fn bad_expressions_name_the_column() {
    let mut wrong = Vec::new();
    for (src, col, fragment) in BAD {
        match Filter::parse(src) {
            Ok(_) => wrong.push(format!("{src:?}: parsed, expected an error")),
            Err(e) => {
                if e.position != *col || !e.message.contains(fragment) {
                    wrong.push(format!(
                        "{src:?}: got column {} {:?}, want column {col} containing {fragment:?}",
                        e.position, e.message
                    ));
                }
                if e.message != e.message.to_lowercase() && !src.contains("SAQ") && src.is_ascii() {
                    wrong.push(format!("{src:?}: message not lowercase: {}", e.message));
                }
                if e.message.ends_with('.') {
                    wrong.push(format!("{src:?}: message ends with a period"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn error_displays_column_then_message() {
    let e: FilterError = "dst port https".parse::<Filter>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "column 10: expected a port number after 'port', found 'https'"
    );
    // A long offending token is cut in the message.
    let long = format!("host {}", "x".repeat(500));
    let e = Filter::parse(&long).unwrap_err();
    assert_eq!(e.position, 6);
    assert!(e.message.len() < 200, "{}", e.message);
}

#[test]
fn length_limit_is_enforced_in_bytes_and_reported_in_characters() {
    let ok = format!("port 80{}", " ".repeat(MAX_FILTER_LEN - 7));
    assert_eq!(ok.len(), MAX_FILTER_LEN);
    assert!(Filter::parse(&ok).is_ok());

    let too_long = format!("any{}", " ".repeat(MAX_FILTER_LEN - 2));
    let e = Filter::parse(&too_long).unwrap_err();
    assert_eq!(e.position, MAX_FILTER_LEN + 1);
    assert!(
        e.message.contains("longer than the limit of 4096"),
        "{}",
        e.message
    );

    // Two bytes per character: the 2049th character starts at byte 4096.
    let wide = "\u{e9}".repeat(2049);
    assert_eq!(Filter::parse(&wide).unwrap_err().position, 2049);
}

#[test]
fn nesting_limit_is_an_error_not_a_stack_overflow() {
    let nest = |n: usize| format!("{}port 80{}", "(".repeat(n), ")".repeat(n));
    let recs = records();
    let f = Filter::parse(&nest(MAX_DEPTH)).unwrap();
    assert_eq!(matching(&f, &recs), vec![4, 5]);

    let e = Filter::parse(&nest(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(e.position, MAX_DEPTH + 1);
    assert!(e.message.contains("deeper than 64"), "{}", e.message);

    // Mixed with negations, still within 64 parentheses.
    let deep_not = format!(
        "{}port 80{}",
        "not (".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert_eq!(
        matching(&Filter::parse(&deep_not).unwrap(), &recs),
        vec![4, 5]
    );

    // Unclosed parentheses up to the byte limit.
    let e = Filter::parse(&"(".repeat(MAX_FILTER_LEN)).unwrap_err();
    assert_eq!(e.position, MAX_DEPTH + 1);
}

#[test]
fn long_runs_of_not_and_or_do_not_recurse() {
    let recs = records();
    // 1000 `not`s (even: same as `port 80`), 4000 `!`s.
    let nots = format!("{}port 80", "not ".repeat(1000));
    assert_eq!(matching(&Filter::parse(&nots).unwrap(), &recs), vec![4, 5]);
    let bangs = format!("{}port 80", "!".repeat(4001));
    assert_eq!(
        matching(&Filter::parse(&bangs).unwrap(), &recs),
        vec![0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    );
    // A 300-term `or` chain.
    let chain: Vec<String> = (0..300).map(|p| format!("port {p}")).collect();
    let chain = chain.join(" or ");
    assert!(chain.len() <= MAX_FILTER_LEN);
    assert_eq!(
        matching(&Filter::parse(&chain).unwrap(), &recs),
        vec![2, 3, 4, 5, 7, 9, 10]
    );
}

#[test]
fn list_limit_is_enforced() {
    let list = |n: u32| {
        let items: Vec<String> = (0..n).map(|p| p.to_string()).collect();
        format!("port in [ {} ]", items.join(" "))
    };
    let recs = records();
    let ok = list(MAX_LIST_LEN as u32);
    assert!(ok.len() <= MAX_FILTER_LEN);
    // Ports 0..1023: every record has one except 11 (8080/8443).
    assert_eq!(
        matching(&Filter::parse(&ok).unwrap(), &recs),
        (0..11).collect::<Vec<_>>()
    );

    let too_many = list(MAX_LIST_LEN as u32 + 1);
    let e = Filter::parse(&too_many).unwrap_err();
    // The 1025th entry is "1024".
    assert_eq!(e.position, too_many.find(" 1024 ").unwrap() + 2);
    assert!(
        e.message.contains("more than 1024 entries"),
        "{}",
        e.message
    );

    // An address list of 300 hosts and a network: 10.0.0.2, 10.0.0.5, ...
    // holds the destinations of records 2 (10.0.0.53) and 10 (10.0.0.2) but
    // not 10.0.0.1 (records 1 and 5); 8.8.0.0/16 holds record 3's.
    let hosts: Vec<String> = (0..300u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0002 + i * 3).to_string())
        .collect();
    let src = format!("dst ip in [ {} 8.8.0.0/16 ]", hosts.join(","));
    assert!(src.len() <= MAX_FILTER_LEN);
    let f = Filter::parse(&src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(matching(&f, &recs), vec![2, 3, 10]);
}

#[test]
fn empty_and_any_filters_match_all() {
    let recs = records();
    for src in [
        "",
        "   ",
        "# nothing but a comment",
        "any",
        "ANY",
        "(any)",
        "any or port 80",
        "not not any",
    ] {
        let f = Filter::parse(src).unwrap();
        assert!(f.is_match_all(), "{src:?}");
        assert_eq!(matching(&f, &recs), ALL, "{src:?}");
    }
    for src in ["port 80", "not any", "any and port 80"] {
        assert!(!Filter::parse(src).unwrap().is_match_all(), "{src:?}");
    }
    assert!(matching(&Filter::parse("not any").unwrap(), &recs).is_empty());
}

#[test]
fn source_and_from_str() {
    let src = "src host 10.0.0.1 and dst port 443 and proto tcp";
    let f: Filter = src.parse().unwrap();
    assert_eq!(f.source(), src);
    assert_eq!(f.to_string(), src);
}

#[test]
fn referenced_fields_name_what_the_filter_reads() {
    let fields = |s: &str| Filter::parse(s).unwrap().referenced_fields();
    assert_eq!(fields("any"), FieldSet::EMPTY);
    assert_eq!(
        fields("src port 80 and proto tcp"),
        FieldSet::SRC_PORT | FieldSet::PROTOCOL
    );
    assert_eq!(fields("port 80"), FieldSet::SRC_PORT | FieldSet::DST_PORT);
    assert_eq!(fields("dst net 10.0.0.0/8"), FieldSet::DST_ADDR);
    assert_eq!(fields("inet6"), FieldSet::SRC_ADDR | FieldSet::DST_ADDR);
    // A flags test also reads the protocol (it only holds for TCP).
    assert_eq!(
        fields("not flags S"),
        FieldSet::TCP_FLAGS | FieldSet::PROTOCOL
    );
    assert_eq!(
        fields("in if 3 or out if 4"),
        FieldSet::IN_IF | FieldSet::OUT_IF
    );
    assert_eq!(
        fields("bytes > 1k or packets > 1"),
        FieldSet::BYTES | FieldSet::PACKETS
    );
    assert_eq!(fields("duration > 1"), FieldSet::TIMES);
    assert_eq!(fields("flowdir egress"), FieldSet::DIRECTION);
    assert_eq!(fields("router ip 10.0.0.1"), FieldSet::EXPORTER);
    // Folded away: `any or ...` reads nothing.
    assert_eq!(fields("any or host 10.0.0.1"), FieldSet::EMPTY);

    // A rollup by (src, dst, port, proto, direction) can answer these...
    let rollup = FieldSet::SRC_ADDR
        | FieldSet::DST_ADDR
        | FieldSet::SRC_PORT
        | FieldSet::DST_PORT
        | FieldSet::PROTOCOL
        | FieldSet::DIRECTION;
    assert!(fields("net 10.0.0.0/8 and not proto udp").is_subset_of(rollup));
    // ...but not these.
    assert!(!fields("flags S").is_subset_of(rollup));
    assert!(!fields("bytes > 1m").is_subset_of(rollup));
}

#[test]
fn needs_addresses_only_for_flow_addresses() {
    let needs = |s: &str| Filter::parse(s).unwrap().needs_addresses();
    assert!(needs("host 10.0.0.1"));
    assert!(needs("not src net 10.0.0.0/8"));
    assert!(needs("dst ip in [ 10.0.0.1 ]"));
    assert!(needs("inet"));
    assert!(!needs("port 80 and proto tcp"));
    assert!(!needs("router ip 10.0.0.1"));
    assert!(!needs(""));
}

#[test]
fn filter_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Filter>();
    let f = std::sync::Arc::new(Filter::parse("proto tcp").unwrap());
    let recs = records();
    let handle = {
        let f = f.clone();
        let recs = recs.clone();
        std::thread::spawn(move || matching(&f, &recs))
    };
    assert_eq!(handle.join().unwrap(), vec![0, 1, 4, 5, 6, 10, 11]);
}

#[test]
fn address_families_of_the_records_are_as_built() {
    // Guards the table: records 6 and 7 are the only IPv6 ones.
    let v6: Vec<usize> = records()
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.src_addr, IpAddr::V6(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(v6, vec![6, 7]);
}
