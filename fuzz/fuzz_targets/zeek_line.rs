//! `rampart_flow::zeek::ZeekReader::line` on arbitrary input. The input is
//! split at `\n` into lines fed, in order, to a fresh reader (reproducible
//! alone) and then to a reader that lives across inputs, so a header learnt
//! from one input (the seeds are whole conn.logs, TSV and JSON) applies to
//! the records of later ones. Must never panic; a line yields at most two
//! flows, none on error, and every flow is well formed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use rampart_flow::zeek::{LineOutcome, ZeekReader};
use rampart_flow::FlowRecord;

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

static READER: LazyLock<Mutex<ZeekReader>> =
    LazyLock::new(|| Mutex::new(ZeekReader::new(EXPORTER)));

fn feed(reader: &mut ZeekReader, data: &[u8], out: &mut Vec<FlowRecord>) {
    for line in data.split(|b| *b == b'\n') {
        out.clear();
        match reader.line(line, out) {
            Ok(LineOutcome::Flows(n)) => {
                assert!(n == 1 || n == 2);
                assert_eq!(out.len(), n);
                for r in out.iter() {
                    assert!(r.start_ms <= r.end_ms);
                    assert_eq!(r.exporter, EXPORTER);
                    assert_eq!(r.sampling_rate, 1);
                }
                if let [a, b] = &out[..] {
                    assert_eq!((a.src_addr, a.dst_addr), (b.dst_addr, b.src_addr));
                }
            }
            Ok(LineOutcome::Header | LineOutcome::Skipped) | Err(_) => assert!(out.is_empty()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    feed(&mut ZeekReader::new(EXPORTER), data, &mut out);
    let Ok(mut reader) = READER.lock() else {
        return;
    };
    feed(&mut reader, data, &mut out);
});
