//! `rampart_flow::Decoder::decode` on arbitrary datagrams (NetFlow v5/v9,
//! IPFIX). Each input is decoded by a fresh decoder (reproducible alone) and
//! then twice by a decoder that lives across inputs, so templates learnt from
//! earlier inputs (the seeds include template captures) and from the input
//! itself apply to its data sets. The clock advances per input, so template
//! expiry and the per-exporter bounds are exercised too. Must never panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use rampart_flow::{Decoder, DecoderConfig, FlowRecord};

struct State {
    decoder: Decoder,
    now_ms: u64,
    out: Vec<FlowRecord>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State {
        decoder: Decoder::new(DecoderConfig {
            // Short enough that templates expire within a run.
            template_timeout_ms: 600_000,
            max_templates_per_exporter: 64,
            max_exporters: 4,
        }),
        now_ms: 1_700_000_000_000,
        out: Vec::new(),
    })
});

fn decode(d: &mut Decoder, exporter: IpAddr, data: &[u8], now_ms: u64, out: &mut Vec<FlowRecord>) {
    out.clear();
    match d.decode(exporter, data, now_ms, out) {
        Ok(stats) => {
            assert_eq!(out.len(), stats.records);
            // Every flow record holds at least one 4-byte address.
            assert!(stats.records <= data.len() / 4);
            for r in out.iter() {
                assert!(r.start_ms <= r.end_ms);
                assert_eq!(r.exporter, exporter);
            }
        }
        Err(_) => assert!(out.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    // One of a few exporters, so several share the decoder's bounds.
    let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, data.len() as u8 % 6));

    let mut fresh = Decoder::default();
    let mut out = Vec::new();
    decode(&mut fresh, exporter, data, 0, &mut out);

    let Ok(mut guard) = STATE.lock() else {
        return;
    };
    let s = &mut *guard;
    s.now_ms += 1_000;
    for _ in 0..2 {
        decode(&mut s.decoder, exporter, data, s.now_ms, &mut s.out);
    }
});
