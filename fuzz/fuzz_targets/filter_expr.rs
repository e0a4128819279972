//! `rampart_flow::filter::Filter::parse` on arbitrary UTF-8 (the text a
//! client sends as a flow query filter), then `matches` on fixed IPv4 and
//! IPv6 records. Must never panic, overflow the stack or report an error
//! column outside the input.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use rampart_flow::filter::Filter;
use rampart_flow::{AppLabel, Direction, FlowRecord};

fn record(src: IpAddr, dst: IpAddr) -> FlowRecord {
    FlowRecord {
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_001_500,
        bytes: 1500,
        packets: 10,
        src_addr: src,
        dst_addr: dst,
        exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        in_if: 1,
        out_if: 2,
        sampling_rate: 1,
        domain_id: 0,
        src_port: 12345,
        dst_port: 443,
        protocol: 6,
        tcp_flags: 0x12,
        direction: Direction::Ingress,
        resample: 1,
        flags: 0,
        app: AppLabel::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match Filter::parse(src) {
        Ok(f) => {
            assert_eq!(f.source(), src);
            let v4 = record(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            );
            let v6 = record(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
            );
            let a = f.matches(&v4);
            let _ = f.matches(&v6);
            if f.is_match_all() {
                assert!(a);
            }
            if !f.needs_addresses() {
                // Without address primitives the addresses cannot matter.
                let mut moved = v4;
                moved.src_addr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
                moved.dst_addr = IpAddr::V6(Ipv6Addr::LOCALHOST);
                assert_eq!(f.matches(&moved), a);
            }
        }
        Err(e) => {
            assert!(e.position >= 1);
            assert!(e.position <= src.chars().count() + 1);
            assert!(!e.message.is_empty());
        }
    }
});
