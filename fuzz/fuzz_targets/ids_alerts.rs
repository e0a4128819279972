//! `rampart_proto::alerts::decode` on arbitrary bytes: the plaintext of an
//! "ids_alerts" batch, which any enrolled device can make say anything (the
//! portal opens it and turns each entry into an alarm candidate). Must never
//! panic, never return more than `MAX_ALERTS` alerts or a text field over
//! `MAX_TEXT`, and what decodes must re-encode to JSON that decodes to the
//! same alerts (so the portal can store and re-read what it accepted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proto::alerts::{decode, encode, MAX_ALERTS, MAX_TEXT};

fuzz_target!(|data: &[u8]| {
    let Ok(alerts) = decode(data) else {
        return;
    };
    assert!(alerts.len() <= MAX_ALERTS);
    for a in &alerts {
        let info = a.anomaly.as_ref();
        let texts = [
            Some(&a.event_type),
            Some(&a.signature),
            Some(&a.category),
            Some(&a.action),
            a.app_proto.as_ref(),
            a.in_iface.as_ref(),
            info.map(|i| &i.kind),
            info.map(|i| &i.event),
            info.and_then(|i| i.layer.as_ref()),
        ];
        assert!(texts.into_iter().flatten().all(|t| t.len() <= MAX_TEXT));
    }
    let again = decode(&encode(&alerts)).expect("re-encoded alerts decode");
    assert_eq!(again, alerts);
});
