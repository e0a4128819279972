//! Suricata EVE JSON lines: `flow` and `netflow` events into
//! [`FlowRecord`]s, `alert` events into [`Alert`]s, `anomaly` events into
//! [`Anomaly`]s, every other event type recognised and passed over.
//!
//! One reader for every EVE consumer: the flow collectors take the flows,
//! the alarms take the alerts and anomalies, and both agree on what a
//! malformed line is.
//!
//! ```
//! use rampart_flow::eve::{parse_line, EveEvent};
//!
//! let line = br#"{"timestamp":"2017-06-08T15:45:58.525601+0000","event_type":"flow",
//!   "src_ip":"10.16.1.11","src_port":60922,"dest_ip":"10.16.1.1","dest_port":53,
//!   "proto":"UDP","app_proto":"dns","flow":{"pkts_toserver":1,"pkts_toclient":1,
//!   "bytes_toserver":100,"bytes_toclient":116,"start":"2017-06-08T15:45:58.520996+0000",
//!   "end":"2017-06-08T15:45:58.525601+0000"}}"#;
//! let exporter = "0.0.0.0".parse().unwrap();
//! match parse_line(line, exporter).unwrap() {
//!     EveEvent::Flow { toserver, toclient } => {
//!         assert_eq!((toserver.bytes, toserver.packets, toserver.protocol), (100, 1, 17));
//!         assert_eq!(toclient.map(|r| r.bytes), Some(116));
//!     }
//!     other => panic!("not a flow: {other:?}"),
//! }
//! ```
//!
//! Mapping (field names as in Suricata's EVE output):
//! - `flow` events are bidirectional: one record `src_ip:src_port` →
//!   `dest_ip:dest_port` with `flow.pkts_toserver`/`bytes_toserver` and
//!   `tcp.tcp_flags_ts`, and, when `flow.pkts_toclient > 0`, the reverse one
//!   with the `toclient` counters and `tcp.tcp_flags_tc` (the same rule as
//!   Suricata's own `netflow` output uses for its response record);
//! - `netflow` events are already one direction: `netflow.pkts`, `bytes`,
//!   `start`, `end` and `tcp.tcp_flags` (that direction's flags);
//! - times come from `flow.start`/`flow.end` (`netflow.start`/`end`), else the
//!   event's `timestamp`; a missing end is the start;
//! - `proto` is a protocol name as in `/etc/protocols` (`TCP`, `UDP`, `ICMP`,
//!   `IPv6-ICMP`, any case) or a decimal number, which Suricata writes for
//!   protocols it has no name for; a missing `proto` is 0, never a dropped
//!   flow;
//! - ICMP flows have no ports in EVE; as NetFlow exporters do, the
//!   destination port carries `icmp_type << 8 | icmp_code` (for the reverse
//!   record `response_icmp_type`/`response_icmp_code`) and the source port 0;
//! - `app_proto` becomes [`FlowRecord::app`], except Suricata's `failed`
//!   (detection gave up), which is no application;
//! - byte counts are Suricata's (whole packets as captured) and pass
//!   through unchanged; `sampling_rate` is 1, since Suricata inspects every
//!   packet it is given; interfaces are unknown (0).
//!
//! Bounds: lines over [`MAX_LINE_LEN`] are refused before parsing; strings
//! are borrowed from the line where they need no unescaping; serde_json
//! limits nesting depth; duplicate keys are accepted and the last one wins,
//! as Go's and Python's JSON readers do (telegraf's test data has one).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{Deserialize, Deserializer, Visitor};

use crate::record::{AppLabel, Direction, FlowRecord};

/// Longest EVE line read, in bytes. Flow and alert events are well under
/// 4 KiB; `stats` events grow with the number of threads, and alerts with
/// `payload`/`packet` logging carry base64 packets, so the bound is loose.
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// Longest `event_type` kept in [`EveEvent::Other`].
const MAX_EVENT_TYPE_LEN: usize = 64;

/// Why an EVE line was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EveError {
    #[error(
        "line of {len} bytes is over the {limit}-byte limit: not an EVE log, or a damaged one"
    )]
    LineTooLong { len: usize, limit: usize },
    #[error("not an EVE JSON object ({0}): EVE files hold one JSON object per line")]
    Json(String),
    #[error("{event_type} event has no {field}: the line is incomplete")]
    MissingField {
        event_type: &'static str,
        field: &'static str,
    },
    #[error("bad {field} {value:?}: expected {expected}")]
    BadField {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// One EVE line, by event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EveEvent {
    /// A `flow` event: the client-to-server record, and the server-to-client
    /// one when the server sent packets.
    Flow {
        toserver: FlowRecord,
        toclient: Option<FlowRecord>,
    },
    /// A `netflow` event: one direction of a flow.
    Netflow(FlowRecord),
    /// An `alert` event.
    Alert(Alert),
    /// An `anomaly` event: a packet or stream Suricata found malformed or
    /// unexpected. Carries no flow.
    Anomaly(Anomaly),
    /// Any other event type (`dns`, `http`, `stats`, `drop`, ...), named at
    /// most 64 bytes long.
    Other { event_type: String },
}

impl EveEvent {
    /// The flow records this event carries (none, one or two), in order.
    pub fn flows(&self) -> impl Iterator<Item = &FlowRecord> {
        let (a, b) = match self {
            EveEvent::Flow { toserver, toclient } => (Some(toserver), toclient.as_ref()),
            EveEvent::Netflow(r) => (Some(r), None),
            EveEvent::Alert(_) | EveEvent::Anomaly(_) | EveEvent::Other { .. } => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// Appends this event's flow records to `out`; returns how many.
    pub fn push_flows(&self, out: &mut Vec<FlowRecord>) -> usize {
        let before = out.len();
        out.extend(self.flows().copied());
        out.len() - before
    }
}

/// An `alert` event: the fields the alarms need, typed and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The event's `timestamp`, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Absent for alerts on packets without an IP layer.
    pub src_addr: Option<IpAddr>,
    pub dst_addr: Option<IpAddr>,
    /// Absent for protocols without ports (ICMP, ...).
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// IANA protocol number, from `proto`.
    pub protocol: Option<u8>,
    /// `alert.gid`: the generator (1 for rules; others for decoder and
    /// stream events); 1 when absent, as in Suricata.
    pub gid: u32,
    pub signature_id: u32,
    pub rev: u32,
    pub signature: String,
    pub category: String,
    /// `alert.severity` (1 is the most severe); 0 when absent.
    pub severity: u8,
    /// `allowed` or `blocked`.
    pub action: String,
    pub flow_id: Option<u64>,
    pub app_proto: Option<String>,
    pub in_iface: Option<String>,
}

/// An `anomaly` event: the fields the alarms need, typed and owned.
///
/// Read as Suricata's user guide documents it ("Eve JSON Format", section
/// "Event type: Anomaly", <https://docs.suricata.io/en/latest/output/eve/eve-json-format.html>;
/// source `doc/userguide/output/eve/eve-json-format.rst` in OISF/suricata):
/// the common section (`timestamp`, `flow_id`, the tuple, `proto`,
/// `app_proto`, `in_iface`) plus an `anomaly` object with `type` (`decode`,
/// `stream` or `applayer`, rarely `unknown`), `event` (the event's name,
/// `decoder.`/`stream.` prefixed for those types), `layer` (only for
/// `applayer`: `proto_parser`, `proto_detect` or `parser`) and `code` (only
/// for `unknown`, the event code Suricata has no name for). Decode anomalies
/// can be on packets without ports or without an IP layer, so the tuple is
/// optional, as for [`Alert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The event's `timestamp`, ms since the Unix epoch.
    pub timestamp_ms: u64,
    pub src_addr: Option<IpAddr>,
    pub dst_addr: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// IANA protocol number, from `proto`.
    pub protocol: Option<u8>,
    /// `anomaly.type`: `decode`, `stream`, `applayer` or `unknown`; kept as
    /// written, so a type added by a later Suricata still reads.
    pub kind: String,
    /// `anomaly.event`, such as `decoder.udp.pkt_too_small`. Empty only
    /// when the event has a `code` and no name (an `unknown` anomaly).
    pub event: String,
    /// `anomaly.layer` (`applayer` anomalies only).
    pub layer: Option<String>,
    /// `anomaly.code` (`unknown` anomalies only).
    pub code: Option<u32>,
    pub app_proto: Option<String>,
    pub in_iface: Option<String>,
    pub flow_id: Option<u64>,
}

/// Reads one EVE line (a trailing `\n` or `\r\n` is allowed). `exporter`
/// becomes [`FlowRecord::exporter`] of the flows.
pub fn parse_line(line: &[u8], exporter: IpAddr) -> Result<EveEvent, EveError> {
    if line.len() > MAX_LINE_LEN {
        return Err(EveError::LineTooLong {
            len: line.len(),
            limit: MAX_LINE_LEN,
        });
    }
    let raw: RawEvent<'_> =
        serde_json::from_slice(line).map_err(|e| EveError::Json(e.to_string()))?;
    let Some(event_type) = &raw.event_type else {
        return Err(EveError::MissingField {
            event_type: "EVE",
            field: "event_type",
        });
    };
    match &*event_type.0 {
        "flow" => flow_event(&raw, exporter),
        "netflow" => netflow_event(&raw, exporter),
        "alert" => alert_event(&raw).map(EveEvent::Alert),
        "anomaly" => anomaly_event(&raw).map(EveEvent::Anomaly),
        other => Ok(EveEvent::Other {
            event_type: cut(other, MAX_EVENT_TYPE_LEN).to_owned(),
        }),
    }
}

fn flow_event(raw: &RawEvent<'_>, exporter: IpAddr) -> Result<EveEvent, EveError> {
    const ET: &str = "flow";
    let t = Tuple::of(raw, ET)?;
    let c = raw.flow.as_ref().ok_or(EveError::MissingField {
        event_type: ET,
        field: "flow",
    })?;
    let (start_ms, end_ms) = times(raw, c, ET, "flow.start", "flow.end")?;
    let tcp = raw.tcp.as_ref();
    let flags_ts = tcp_flags(
        tcp.and_then(|t| t.tcp_flags_ts.as_ref()),
        "tcp.tcp_flags_ts",
    )?;
    let flags_tc = tcp_flags(
        tcp.and_then(|t| t.tcp_flags_tc.as_ref()),
        "tcp.tcp_flags_tc",
    )?;
    let app = app_label(raw);
    let (sport, dport) = t.ports(raw.icmp_type, raw.icmp_code, "icmp_type", "icmp_code")?;
    let toserver = record(
        &t,
        t.src,
        t.dst,
        sport,
        dport,
        start_ms,
        end_ms,
        c.bytes_toserver.unwrap_or(0),
        c.pkts_toserver.unwrap_or(0),
        flags_ts,
        app,
        exporter,
    );
    let pkts_tc = c.pkts_toclient.unwrap_or(0);
    let toclient = if pkts_tc > 0 {
        let (rsport, rdport) = if t.is_icmp() {
            t.ports(
                raw.response_icmp_type,
                raw.response_icmp_code,
                "response_icmp_type",
                "response_icmp_code",
            )?
        } else {
            (dport, sport)
        };
        Some(record(
            &t,
            t.dst,
            t.src,
            rsport,
            rdport,
            start_ms,
            end_ms,
            c.bytes_toclient.unwrap_or(0),
            pkts_tc,
            flags_tc,
            app,
            exporter,
        ))
    } else {
        None
    };
    Ok(EveEvent::Flow { toserver, toclient })
}

fn netflow_event(raw: &RawEvent<'_>, exporter: IpAddr) -> Result<EveEvent, EveError> {
    const ET: &str = "netflow";
    let t = Tuple::of(raw, ET)?;
    let c = raw.netflow.as_ref().ok_or(EveError::MissingField {
        event_type: ET,
        field: "netflow",
    })?;
    let (start_ms, end_ms) = times(raw, c, ET, "netflow.start", "netflow.end")?;
    let flags = tcp_flags(
        raw.tcp.as_ref().and_then(|t| t.tcp_flags.as_ref()),
        "tcp.tcp_flags",
    )?;
    let (sport, dport) = t.ports(raw.icmp_type, raw.icmp_code, "icmp_type", "icmp_code")?;
    Ok(EveEvent::Netflow(record(
        &t,
        t.src,
        t.dst,
        sport,
        dport,
        start_ms,
        end_ms,
        c.bytes.unwrap_or(0),
        c.pkts.unwrap_or(0),
        flags,
        app_label(raw),
        exporter,
    )))
}

fn anomaly_event(raw: &RawEvent<'_>) -> Result<Anomaly, EveError> {
    const ET: &str = "anomaly";
    let missing = |field| EveError::MissingField {
        event_type: ET,
        field,
    };
    let ts = raw.timestamp.as_ref().ok_or(missing("timestamp"))?;
    let timestamp_ms = time_ms(&ts.0, "timestamp")?;
    let a = raw.anomaly.as_ref().ok_or(missing("anomaly"))?;
    let text = |s: &Option<Str<'_>>| s.as_ref().map(|s| s.0.clone().into_owned());
    let kind = text(&a.kind).ok_or(missing("anomaly.type"))?;
    let code = a
        .code
        .map(|c| narrow(c, "anomaly.code", "a 32-bit event code"))
        .transpose()?;
    // Suricata writes `code` instead of `event` for events it has no name
    // for; an anomaly with neither says nothing.
    let event = match (text(&a.event), code) {
        (Some(e), _) => e,
        (None, Some(_)) => String::new(),
        (None, None) => return Err(missing("anomaly.event")),
    };
    Ok(Anomaly {
        timestamp_ms,
        src_addr: raw.src_ip.as_ref().map(|s| addr(s, "src_ip")).transpose()?,
        dst_addr: raw
            .dest_ip
            .as_ref()
            .map(|s| addr(s, "dest_ip"))
            .transpose()?,
        src_port: raw.src_port.map(|p| port(p, "src_port")).transpose()?,
        dst_port: raw.dest_port.map(|p| port(p, "dest_port")).transpose()?,
        protocol: raw.proto.as_ref().map(protocol).transpose()?,
        kind,
        event,
        layer: text(&a.layer),
        code,
        app_proto: text(&raw.app_proto),
        in_iface: text(&raw.in_iface),
        flow_id: raw.flow_id,
    })
}

fn alert_event(raw: &RawEvent<'_>) -> Result<Alert, EveError> {
    const ET: &str = "alert";
    let missing = |field| EveError::MissingField {
        event_type: ET,
        field,
    };
    let ts = raw.timestamp.as_ref().ok_or(missing("timestamp"))?;
    let timestamp_ms = time_ms(&ts.0, "timestamp")?;
    let a = raw.alert.as_ref().ok_or(missing("alert"))?;
    let signature_id = a.signature_id.ok_or(missing("alert.signature_id"))?;
    let text = |s: &Option<Str<'_>>| s.as_ref().map(|s| s.0.clone().into_owned());
    Ok(Alert {
        timestamp_ms,
        src_addr: raw.src_ip.as_ref().map(|s| addr(s, "src_ip")).transpose()?,
        dst_addr: raw
            .dest_ip
            .as_ref()
            .map(|s| addr(s, "dest_ip"))
            .transpose()?,
        src_port: raw.src_port.map(|p| port(p, "src_port")).transpose()?,
        dst_port: raw.dest_port.map(|p| port(p, "dest_port")).transpose()?,
        protocol: raw.proto.as_ref().map(protocol).transpose()?,
        gid: narrow(a.gid.unwrap_or(1), "alert.gid", "a 32-bit generator id")?,
        signature_id: narrow(signature_id, "alert.signature_id", "a 32-bit rule id")?,
        rev: narrow(a.rev.unwrap_or(0), "alert.rev", "a 32-bit revision")?,
        signature: text(&a.signature).unwrap_or_default(),
        category: text(&a.category).unwrap_or_default(),
        severity: narrow(
            a.severity.unwrap_or(0),
            "alert.severity",
            "a severity of 1 to 255",
        )?,
        action: text(&a.action).unwrap_or_default(),
        flow_id: raw.flow_id,
        app_proto: text(&raw.app_proto),
        in_iface: text(&raw.in_iface),
    })
}

/// The addresses, ports and protocol every flow event has.
struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
}

impl Tuple {
    fn of(raw: &RawEvent<'_>, event_type: &'static str) -> Result<Self, EveError> {
        let missing = |field| EveError::MissingField { event_type, field };
        let src = raw.src_ip.as_ref().ok_or(missing("src_ip"))?;
        let dst = raw.dest_ip.as_ref().ok_or(missing("dest_ip"))?;
        Ok(Tuple {
            src: addr(src, "src_ip")?,
            dst: addr(dst, "dest_ip")?,
            src_port: raw.src_port.map_or(Ok(0), |p| port(p, "src_port"))?,
            dst_port: raw.dest_port.map_or(Ok(0), |p| port(p, "dest_port"))?,
            protocol: raw.proto.as_ref().map_or(Ok(0), protocol)?,
        })
    }

    fn is_icmp(&self) -> bool {
        matches!(self.protocol, 1 | 58)
    }

    /// The forward ports: as logged, or the ICMP type and code encoded the
    /// NetFlow way when this is ICMP without ports.
    fn ports(
        &self,
        icmp_type: Option<u64>,
        icmp_code: Option<u64>,
        type_field: &'static str,
        code_field: &'static str,
    ) -> Result<(u16, u16), EveError> {
        if !self.is_icmp() || self.src_port != 0 || self.dst_port != 0 {
            return Ok((self.src_port, self.dst_port));
        }
        let t: u8 = narrow(
            icmp_type.unwrap_or(0),
            type_field,
            "an ICMP type (0 to 255)",
        )?;
        let c: u8 = narrow(
            icmp_code.unwrap_or(0),
            code_field,
            "an ICMP code (0 to 255)",
        )?;
        Ok((0, u16::from(t) << 8 | u16::from(c)))
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    t: &Tuple,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    start_ms: u64,
    end_ms: u64,
    bytes: u64,
    packets: u64,
    tcp_flags: u8,
    app: AppLabel,
    exporter: IpAddr,
) -> FlowRecord {
    FlowRecord {
        start_ms,
        end_ms,
        bytes,
        packets,
        src_addr: src,
        dst_addr: dst,
        exporter,
        in_if: 0,
        out_if: 0,
        sampling_rate: 1,
        domain_id: 0,
        src_port,
        dst_port,
        protocol: t.protocol,
        tcp_flags,
        direction: Direction::Unknown,
        resample: 1,
        flags: 0,
        app,
    }
}

/// Start and end in ms, `start <= end`.
fn times(
    raw: &RawEvent<'_>,
    c: &RawCounters<'_>,
    event_type: &'static str,
    start_field: &'static str,
    end_field: &'static str,
) -> Result<(u64, u64), EveError> {
    let start_ms = match (&c.start, &raw.timestamp) {
        (Some(s), _) => time_ms(&s.0, start_field)?,
        (None, Some(ts)) => time_ms(&ts.0, "timestamp")?,
        (None, None) => {
            return Err(EveError::MissingField {
                event_type,
                field: start_field,
            })
        }
    };
    let end_ms = match &c.end {
        Some(e) => time_ms(&e.0, end_field)?,
        None => start_ms,
    };
    Ok((start_ms.min(end_ms), end_ms))
}

fn time_ms(s: &str, field: &'static str) -> Result<u64, EveError> {
    parse_iso8601_us(s).map(|us| us / 1000).ok_or_else(|| {
        bad(
            field,
            s,
            "an ISO 8601 time such as 2016-09-13T04:05:06.123456+0000",
        )
    })
}

fn addr(s: &Str<'_>, field: &'static str) -> Result<IpAddr, EveError> {
    s.0.parse()
        .map_err(|_| bad(field, &s.0, "an IPv4 or IPv6 address"))
}

fn port(p: u64, field: &'static str) -> Result<u16, EveError> {
    narrow(p, field, "a port (0 to 65535)")
}

fn narrow<T: TryFrom<u64>>(
    v: u64,
    field: &'static str,
    expected: &'static str,
) -> Result<T, EveError> {
    T::try_from(v).map_err(|_| bad(field, &v.to_string(), expected))
}

fn protocol(p: &Scalar<'_>) -> Result<u8, EveError> {
    const EXPECTED: &str = "a protocol name (TCP, UDP, ICMP, ...) or number (0 to 255)";
    match p {
        Scalar::U(n) => narrow(*n, "proto", EXPECTED),
        Scalar::S(s) => protocol_number(s).ok_or_else(|| bad("proto", s, EXPECTED)),
        Scalar::I(n) => Err(bad("proto", &n.to_string(), EXPECTED)),
        Scalar::F(f) => Err(bad("proto", &f.to_string(), EXPECTED)),
    }
}

/// Suricata's `"%02x"` TCP flags.
fn tcp_flags(s: Option<&Str<'_>>, field: &'static str) -> Result<u8, EveError> {
    match s {
        None => Ok(0),
        Some(s) if !s.0.is_empty() && s.0.len() <= 2 => {
            u8::from_str_radix(&s.0, 16).map_err(|_| bad(field, &s.0, "two hex digits such as 1b"))
        }
        Some(s) => Err(bad(field, &s.0, "two hex digits such as 1b")),
    }
}

fn app_label(raw: &RawEvent<'_>) -> AppLabel {
    match raw.app_proto.as_ref().map(|s| &*s.0) {
        None | Some("failed") => AppLabel::default(),
        Some(a) => AppLabel::new(a),
    }
}

fn bad(field: &'static str, value: &str, expected: &'static str) -> EveError {
    EveError::BadField {
        field,
        value: cut(value, 64).to_owned(),
        expected,
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// An ISO 8601 / RFC 3339 time in µs since the Unix epoch:
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction (1 to 9 digits), then `Z`,
/// `±HH`, `±HHMM`, `±HH:MM` (Suricata writes `+0000`, without the colon) or
/// nothing, which is read as UTC (Suricata's documentation shows such
/// times). `None` for anything else or a time before 1970.
pub(crate) fn parse_iso8601_us(s: &str) -> Option<u64> {
    // The offset starts after the seconds ("YYYY-MM-DDTHH:MM:SS" is 19
    // bytes), at the first sign or Z.
    let split = s
        .bytes()
        .enumerate()
        .skip(19)
        .find(|(_, c)| matches!(c, b'+' | b'-' | b'Z' | b'z'))
        .map_or(s.len(), |(i, _)| i);
    let (datetime, offset) = s.split_at_checked(split)?;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let t = time::PrimitiveDateTime::parse(datetime, &format).ok()?;
    let offset_s = match offset.as_bytes() {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => ([*h1, *h2], [b'0', b'0']),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => ([*h1, *h2], [*m1, *m2]),
                _ => return None,
            };
            let h = two_digits(h).filter(|h| *h < 24)?;
            let m = two_digits(m).filter(|m| *m < 60)?;
            let secs = i128::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let ns = t.assume_utc().unix_timestamp_nanos() - offset_s * 1_000_000_000;
    u64::try_from(ns / 1000).ok().filter(|_| ns >= 0)
}

fn two_digits(d: [u8; 2]) -> Option<u32> {
    let [a, b] = d;
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// IANA protocol keywords (as in `/etc/protocols`, which is where Suricata's
/// names come from), matched without regard to case.
const PROTOCOLS: &[(&str, u8)] = &[
    ("hopopt", 0),
    ("ip", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ipv4", 4),
    ("ip-encap", 4),
    ("st", 5),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("pup", 12),
    ("udp", 17),
    ("hmp", 20),
    ("xns-idp", 22),
    ("rdp", 27),
    ("iso-tp4", 29),
    ("dccp", 33),
    ("xtp", 36),
    ("ddp", 37),
    ("idpr-cmtp", 38),
    ("ipv6", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("idrp", 45),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ipsec-esp", 50),
    ("ah", 51),
    ("ipsec-ah", 51),
    ("skip", 57),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("rspf", 73),
    ("vmtp", 81),
    ("eigrp", 88),
    ("ospfigp", 89),
    ("ospf", 89),
    ("ax.25", 93),
    ("ipip", 94),
    ("etherip", 97),
    ("encap", 98),
    ("pim", 103),
    ("ipcomp", 108),
    ("vrrp", 112),
    ("l2tp", 115),
    ("isis", 124),
    ("sctp", 132),
    ("fc", 133),
    ("mobility-header", 135),
    ("udplite", 136),
    ("mpls-in-ip", 137),
    ("hip", 139),
    ("shim6", 140),
    ("wesp", 141),
    ("rohc", 142),
    ("ethernet", 143),
];

/// A protocol name or decimal number (Suricata writes `"%03u"` in older
/// versions, so leading zeros are fine) to its IANA number.
pub(crate) fn protocol_number(s: &str) -> Option<u8> {
    if !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    PROTOCOLS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, n)| *n)
}

// ---------------------------------------------------------------------------
// Deserialization: typed, borrowing, ignoring unknown keys, last key wins.

/// A JSON string, borrowed from the line unless it had escapes.
#[derive(Debug, Default)]
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON number or string, for fields written either way.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    U(u64),
    I(i64),
    F(f64),
    S(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::U(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map_or(Scalar::I(v), Scalar::U))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::F(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::S(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::S(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::S(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Implements `Deserialize` for a struct of `Option` fields read from a
/// JSON object: listed keys fill their field (`null` is `None`, a repeated
/// key overwrites), other keys are skipped without being kept.
macro_rules! json_object {
    ($name:ident { $($field:ident : $key:literal),* $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $name<'de> {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $name<'de>;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut v = $name::default();
                        while let Some(k) = m.next_key::<$crate::eve::Str<'de>>()? {
                            match &*k.0 {
                                $($key => v.$field = m.next_value()?,)*
                                _ => {
                                    m.next_value::<::serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(v)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}
pub(crate) use json_object;

#[derive(Default)]
struct RawEvent<'a> {
    timestamp: Option<Str<'a>>,
    event_type: Option<Str<'a>>,
    src_ip: Option<Str<'a>>,
    dest_ip: Option<Str<'a>>,
    src_port: Option<u64>,
    dest_port: Option<u64>,
    proto: Option<Scalar<'a>>,
    app_proto: Option<Str<'a>>,
    flow_id: Option<u64>,
    in_iface: Option<Str<'a>>,
    icmp_type: Option<u64>,
    icmp_code: Option<u64>,
    response_icmp_type: Option<u64>,
    response_icmp_code: Option<u64>,
    flow: Option<RawCounters<'a>>,
    netflow: Option<RawCounters<'a>>,
    tcp: Option<RawTcp<'a>>,
    alert: Option<RawAlert<'a>>,
    anomaly: Option<RawAnomaly<'a>>,
}

json_object!(RawEvent {
    timestamp: "timestamp",
    event_type: "event_type",
    src_ip: "src_ip",
    dest_ip: "dest_ip",
    src_port: "src_port",
    dest_port: "dest_port",
    proto: "proto",
    app_proto: "app_proto",
    flow_id: "flow_id",
    in_iface: "in_iface",
    icmp_type: "icmp_type",
    icmp_code: "icmp_code",
    response_icmp_type: "response_icmp_type",
    response_icmp_code: "response_icmp_code",
    flow: "flow",
    netflow: "netflow",
    tcp: "tcp",
    alert: "alert",
    anomaly: "anomaly",
});

/// `flow` (bidirectional counters) or `netflow` (one direction) object.
#[derive(Default)]
struct RawCounters<'a> {
    pkts_toserver: Option<u64>,
    pkts_toclient: Option<u64>,
    bytes_toserver: Option<u64>,
    bytes_toclient: Option<u64>,
    pkts: Option<u64>,
    bytes: Option<u64>,
    start: Option<Str<'a>>,
    end: Option<Str<'a>>,
}

json_object!(RawCounters {
    pkts_toserver: "pkts_toserver",
    pkts_toclient: "pkts_toclient",
    bytes_toserver: "bytes_toserver",
    bytes_toclient: "bytes_toclient",
    pkts: "pkts",
    bytes: "bytes",
    start: "start",
    end: "end",
});

#[derive(Default)]
struct RawTcp<'a> {
    tcp_flags: Option<Str<'a>>,
    tcp_flags_ts: Option<Str<'a>>,
    tcp_flags_tc: Option<Str<'a>>,
}

json_object!(RawTcp {
    tcp_flags: "tcp_flags",
    tcp_flags_ts: "tcp_flags_ts",
    tcp_flags_tc: "tcp_flags_tc",
});

#[derive(Default)]
struct RawAlert<'a> {
    action: Option<Str<'a>>,
    gid: Option<u64>,
    signature_id: Option<u64>,
    rev: Option<u64>,
    signature: Option<Str<'a>>,
    category: Option<Str<'a>>,
    severity: Option<u64>,
}

json_object!(RawAlert {
    action: "action",
    gid: "gid",
    signature_id: "signature_id",
    rev: "rev",
    signature: "signature",
    category: "category",
    severity: "severity",
});

/// The `anomaly` object.
#[derive(Default)]
struct RawAnomaly<'a> {
    kind: Option<Str<'a>>,
    event: Option<Str<'a>>,
    layer: Option<Str<'a>>,
    code: Option<u64>,
}

json_object!(RawAnomaly {
    kind: "type",
    event: "event",
    layer: "layer",
    code: "code",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_forms() {
        // 2016-09-13T04:05:06Z is 1473739506 s (date -u -d ... +%s).
        let base = 1_473_739_506_000_000;
        assert_eq!(
            parse_iso8601_us("2016-09-13T04:05:06.123456+0000"),
            Some(base + 123_456)
        );
        assert_eq!(
            parse_iso8601_us("2016-09-13T04:05:06.123456Z"),
            Some(base + 123_456)
        );
        assert_eq!(parse_iso8601_us("2016-09-13T04:05:06Z"), Some(base));
        assert_eq!(
            parse_iso8601_us("2016-09-13T04:05:06.5"),
            Some(base + 500_000)
        );
        assert_eq!(
            parse_iso8601_us("2016-09-13T06:05:06.000001+0200"),
            Some(base + 1)
        );
        assert_eq!(parse_iso8601_us("2016-09-13T06:05:06+02:00"), Some(base));
        assert_eq!(parse_iso8601_us("2016-09-13T01:05:06-03"), Some(base));
        assert_eq!(
            parse_iso8601_us("2016-09-13T04:05:06.123456789Z"),
            Some(base + 123_456)
        );
        for bad in [
            "",
            "2016-09-13",
            "2016-09-13T04:05:06+0",
            "2016-09-13T04:05:06+2400",
            "2016-09-13T04:05:06+01:60",
            "2016-13-13T04:05:06Z",
            "2016-09-13T04:05:06.Z",
            "2016-09-13T04:05:06Zjunk",
            "1969-12-31T23:59:59Z",
            "2016-09-13T04:05:06\u{e9}",
        ] {
            assert_eq!(parse_iso8601_us(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn protocol_names_and_numbers() {
        assert_eq!(protocol_number("TCP"), Some(6));
        assert_eq!(protocol_number("udp"), Some(17));
        assert_eq!(protocol_number("IPv6-ICMP"), Some(58));
        assert_eq!(protocol_number("IPV6-ICMP"), Some(58));
        assert_eq!(protocol_number("SCTP"), Some(132));
        assert_eq!(protocol_number("047"), Some(47));
        assert_eq!(protocol_number("254"), Some(254));
        assert_eq!(protocol_number("256"), None);
        assert_eq!(protocol_number("0047"), None);
        assert_eq!(protocol_number("QUIC"), None);
        assert_eq!(protocol_number(""), None);
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("a\u{e9}", 2), "a");
        assert_eq!(cut("a\u{e9}", 3), "a\u{e9}");
    }
}
