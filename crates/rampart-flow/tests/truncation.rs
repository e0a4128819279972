//! Every capture cut at every length, and with single bytes corrupted, must
//! decode or be refused without panicking, and keep the decoder's promises.

mod common;

use common::{all_logstash_dats, exporter, read, GOFLOW2, NOW_MS};
use rampart_flow::{DecodeError, Decoder, FlowRecord};

/// Decodes and checks the invariants that hold for any input.
fn check(d: &mut Decoder, data: &[u8], out: &mut Vec<FlowRecord>) -> Result<(), DecodeError> {
    let before = out.len();
    match d.decode(exporter(), data, NOW_MS, out) {
        Ok(stats) => {
            assert_eq!(out.len() - before, stats.records);
            // A record needs at least 4 bytes of address.
            assert!(stats.records <= data.len() / 4);
            for r in &out[before..] {
                assert!(r.start_ms <= r.end_ms);
                assert_eq!(r.exporter, exporter());
            }
            Ok(())
        }
        Err(e) => {
            assert_eq!(out.len(), before, "nothing is appended on error");
            assert!(!e.to_string().is_empty());
            Err(e)
        }
    }
}

fn all_inputs() -> Vec<(String, Vec<u8>)> {
    let mut v = all_logstash_dats();
    for f in [
        "TestDecodeNetFlowV5_data.bin",
        "TestDecodeNetFlowV9_template.bin",
        "TestDecodeNetFlowV9_data.bin",
    ] {
        v.push((f.to_owned(), read(GOFLOW2, f)));
    }
    v
}

#[test]
fn every_prefix_of_every_capture() {
    let inputs = all_inputs();
    // One decoder that has seen every complete capture, so the prefixes of
    // data datagrams reach their data sets with templates in place.
    let mut primed = Decoder::default();
    let mut out = Vec::new();
    for (_, data) in &inputs {
        let _ = check(&mut primed, data, &mut out);
    }
    let mut prefixes = 0;
    for (name, data) in &inputs {
        for cut in 0..data.len() {
            out.clear();
            let r = check(&mut primed, &data[..cut], &mut out);
            if cut < 16 {
                assert!(r.is_err(), "{name} cut at {cut} is no header");
            }
            prefixes += 1;
        }
    }
    assert!(prefixes > 40_000, "{prefixes} prefixes: captures missing?");
    let c = primed.counters(exporter()).unwrap();
    assert_eq!(c.datagrams as usize, prefixes + inputs.len());
    assert!(c.malformed > 0);
}

#[test]
fn every_byte_corrupted_in_template_captures() {
    // Corrupt each byte of the template-bearing captures (set ids, lengths,
    // field counts and lengths included), then decode the data that follows.
    let pairs = [
        (
            "ipfix_test_netscaler_tpl.dat",
            "ipfix_test_netscaler_data.dat",
        ),
        (
            "netflow9_test_cisco_asa_1_tpl.dat",
            "netflow9_test_cisco_asa_1_data.dat",
        ),
        (
            "ipfix_test_yaf_tpls_option_tpl.dat",
            "ipfix_test_yaf_data53248.dat",
        ),
        (
            "netflow9_test_h3c_netstream_varstring_tpl3281.dat",
            "netflow9_test_h3c_netstream_varstring_data3281.dat",
        ),
        ("ipfix.dat", "ipfix.dat"),
    ];
    let mut out = Vec::new();
    for (tpl, data) in pairs {
        let tpl = common::logstash_dat(tpl);
        let data = common::logstash_dat(data);
        for i in 0..tpl.len() {
            let mutations: [fn(u8) -> u8; 4] = [|_| 0, |_| 0xFF, |b| b ^ 0x80, |b| b ^ 0x01];
            for m in mutations {
                let mut t = tpl.clone();
                t[i] = m(t[i]);
                let mut d = Decoder::default();
                out.clear();
                let _ = check(&mut d, &t, &mut out);
                let _ = check(&mut d, &data, &mut out);
            }
        }
    }
}
