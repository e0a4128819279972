//! The plaintext of an "ids_alerts" batch: the IDS alerts (Suricata EVE
//! `alert` and `anomaly` events) an agent read, masked by the tenant's data
//! controls, as one JSON array.
//!
//! JSON rather than a columnar codec: alerts are few (a handful a minute on
//! a busy sensor, where flows are thousands a second) and carry text.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Batch kind of sealed IDS alerts.
pub const BATCH_KIND: &str = "ids_alerts";
/// At most this many alerts in one batch.
pub const MAX_ALERTS: usize = 10_000;
/// Longest text field kept (signature, category, ...), in bytes.
pub const MAX_TEXT: usize = 512;

/// One IDS alert as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdsAlert {
    /// `alert` or `anomaly`.
    pub event_type: String,
    /// Ms since the epoch.
    pub timestamp_ms: u64,
    pub src_addr: Option<IpAddr>,
    pub dst_addr: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    pub gid: u32,
    pub signature_id: u32,
    pub rev: u32,
    pub signature: String,
    pub category: String,
    /// Suricata's severity, 1 the most severe; 0 when absent.
    pub severity: u8,
    pub action: String,
    pub flow_id: Option<u64>,
    pub app_proto: Option<String>,
    pub in_iface: Option<String>,
    /// What an `anomaly` event reported; `None` for alerts. Left out of the
    /// JSON when `None`, so an alert encodes exactly as before anomalies
    /// existed and portals that predate them still read alert batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyInfo>,
}

/// The `anomaly` object of a Suricata EVE `anomaly` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyInfo {
    /// `anomaly.type`: `decode`, `stream`, `applayer` or `unknown`.
    pub kind: String,
    /// `anomaly.event`, such as `decoder.udp.pkt_too_small`; empty for an
    /// `unknown` anomaly, which has a `code` instead.
    pub event: String,
    /// `anomaly.layer`, for `applayer` anomalies.
    pub layer: Option<String>,
    /// `anomaly.code`, for `unknown` anomalies.
    pub code: Option<u32>,
}

/// Cuts `s` to at most [`MAX_TEXT`] bytes on a character boundary.
pub fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

pub fn encode(alerts: &[IdsAlert]) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(alerts).unwrap_or_default()
}

/// Decodes a batch plaintext, refusing more than [`MAX_ALERTS`] alerts or
/// text fields over [`MAX_TEXT`].
pub fn decode(plain: &[u8]) -> Result<Vec<IdsAlert>, ProtoError> {
    let bad = |detail: String| ProtoError::Malformed {
        what: "ids alerts batch",
        detail,
    };
    let alerts: Vec<IdsAlert> = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
    if alerts.len() > MAX_ALERTS {
        return Err(ProtoError::TooLarge {
            what: "ids alerts batch",
            size: alerts.len(),
            limit: MAX_ALERTS,
        });
    }
    for a in &alerts {
        let texts = [
            Some(&a.event_type),
            Some(&a.signature),
            Some(&a.category),
            Some(&a.action),
            a.app_proto.as_ref(),
            a.in_iface.as_ref(),
            a.anomaly.as_ref().map(|x| &x.kind),
            a.anomaly.as_ref().map(|x| &x.event),
            a.anomaly.as_ref().and_then(|x| x.layer.as_ref()),
        ];
        if texts.into_iter().flatten().any(|t| t.len() > MAX_TEXT) {
            return Err(bad(format!("a text field is over {MAX_TEXT} bytes")));
        }
    }
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> IdsAlert {
        IdsAlert {
            event_type: "alert".into(),
            timestamp_ms: 1,
            src_addr: Some("192.0.2.1".parse().unwrap()),
            dst_addr: None,
            src_port: Some(80),
            dst_port: None,
            protocol: Some(6),
            gid: 1,
            signature_id: 2,
            rev: 3,
            signature: "sig".into(),
            category: "cat".into(),
            severity: 2,
            action: "allowed".into(),
            flow_id: None,
            app_proto: None,
            in_iface: Some("eth0".into()),
            anomaly: None,
        }
    }

    fn anomaly() -> IdsAlert {
        IdsAlert {
            event_type: "anomaly".into(),
            gid: 0,
            signature_id: 0,
            rev: 0,
            signature: "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION".into(),
            category: "anomaly".into(),
            severity: 0,
            action: String::new(),
            app_proto: Some("tls".into()),
            anomaly: Some(AnomalyInfo {
                kind: "applayer".into(),
                event: "APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION".into(),
                layer: Some("proto_detect".into()),
                code: None,
            }),
            ..alert()
        }
    }

    #[test]
    fn round_trip() {
        let v = vec![alert(), alert()];
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }

    #[test]
    fn anomaly_round_trip_and_alerts_unchanged() {
        let v = vec![anomaly(), alert()];
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        // An alert has no "anomaly" key: it encodes as before anomalies
        // existed, and batches written before them still decode.
        let json = String::from_utf8(encode(&[alert()])).unwrap();
        assert!(!json.contains("anomaly"), "{json}");
        assert!(decode(br#"[{"event_type":"alert","timestamp_ms":1,"src_addr":null,"dst_addr":null,"src_port":null,"dst_port":null,"protocol":null,"gid":1,"signature_id":2,"rev":3,"signature":"s","category":"c","severity":2,"action":"allowed","flow_id":null,"app_proto":null,"in_iface":null}]"#).is_ok());
        let json = String::from_utf8(encode(&[anomaly()])).unwrap();
        assert!(
            json.ends_with(r#","anomaly":{"kind":"applayer","event":"APPLAYER_DETECT_PROTOCOL_ONLY_ONE_DIRECTION","layer":"proto_detect","code":null}}]"#),
            "{json}"
        );
        let mut unknown = anomaly();
        unknown.anomaly = Some(AnomalyInfo {
            kind: "unknown".into(),
            event: String::new(),
            layer: None,
            code: Some(u32::MAX),
        });
        assert_eq!(decode(&encode(&[unknown.clone()])).unwrap(), vec![unknown]);
    }

    #[test]
    fn bounds_and_garbage_are_refused() {
        let mut long = alert();
        long.signature = "x".repeat(MAX_TEXT + 1);
        assert!(decode(&encode(&[long])).is_err());
        assert!(decode(b"{").is_err());
        assert!(decode(br#"[{"event_type":"alert","extra":1}]"#).is_err());
        for long in [
            |i: &mut AnomalyInfo| i.kind = "k".repeat(MAX_TEXT + 1),
            |i: &mut AnomalyInfo| i.event = "e".repeat(MAX_TEXT + 1),
            |i: &mut AnomalyInfo| i.layer = Some("l".repeat(MAX_TEXT + 1)),
        ] {
            let mut a = anomaly();
            if let Some(info) = a.anomaly.as_mut() {
                long(info);
            }
            assert!(decode(&encode(&[a])).is_err());
        }
        let json = String::from_utf8(encode(&[anomaly()])).unwrap();
        for (bad, why) in [
            (r#""code":4294967296"#, "code over 32 bits"),
            (r#""code":null,"extra":1"#, "unknown anomaly key"),
        ] {
            let a = json.replace(r#""code":null"#, bad);
            assert!(decode(a.as_bytes()).is_err(), "{why}");
        }
        let many: Vec<IdsAlert> = (0..=MAX_ALERTS).map(|_| alert()).collect();
        assert!(matches!(
            decode(&encode(&many)),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let s = "é".repeat(MAX_TEXT);
        let c = clip(&s);
        assert!(c.len() <= MAX_TEXT && s.starts_with(&c));
    }
}
