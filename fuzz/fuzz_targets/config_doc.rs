//! `EffectiveConfig` and `ConfigDoc::parse` on arbitrary JSON: what an
//! agent reads from an `apply_config` instruction and the portal from a
//! saved document. Must never panic; an accepted document re-parses to the
//! same value (validation is a function of the value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::config::{merge_patch, ConfigDoc, EffectiveConfig, Layer};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(e) = serde_json::from_value::<EffectiveConfig>(v.clone()) {
        let _ = e.check();
    }
    for layer in [Layer::Tenant, Layer::Group, Layer::Device] {
        if let Ok(doc) = ConfigDoc::parse(&v, layer) {
            let again = serde_json::to_value(&doc).expect("a parsed document serializes");
            assert!(ConfigDoc::parse(&again, layer).is_ok(), "{again}");
        }
    }
    // Merging a document onto itself is idempotent (RFC 7396).
    let mut once = v.clone();
    merge_patch(&mut once, &v);
    let mut twice = once.clone();
    merge_patch(&mut twice, &v);
    assert_eq!(once, twice);
});
