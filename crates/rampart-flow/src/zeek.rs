//! Zeek `conn.log` lines, TSV or JSON, into [`FlowRecord`]s.
//!
//! A [`ZeekReader`] reads one file from its first line: TSV logs begin with
//! `#separator`, `#set_separator`, `#empty_field`, `#unset_field`, `#path`,
//! `#open`, `#fields` and `#types` header lines, and `#fields` gives the
//! column order, so the reader keeps that state. JSON logs hold one object
//! per line with keys such as `ts`, `id.orig_h` and `orig_ip_bytes`. Each
//! line is classified on its own (a line starting with `{` is JSON), so a
//! file may switch format at a rotation without the reader being told;
//! call [`ZeekReader::reset`] when the tailer opens a new file anyway.
//!
//! ```
//! use rampart_flow::zeek::{LineOutcome, ZeekReader};
//!
//! let mut reader = ZeekReader::new("0.0.0.0".parse().unwrap());
//! let mut out = Vec::new();
//! let line = br#"{"ts":1597559163.553287,"id.orig_h":"192.168.4.76","id.orig_p":36844,
//!   "id.resp_h":"192.168.4.1","id.resp_p":53,"proto":"udp","service":"dns",
//!   "duration":0.066851,"conn_state":"SF","orig_pkts":2,"orig_ip_bytes":118,
//!   "resp_pkts":2,"resp_ip_bytes":197}"#;
//! assert_eq!(reader.line(line, &mut out), Ok(LineOutcome::Flows(2)));
//! assert_eq!((out[0].bytes, out[1].bytes), (118, 197));
//! ```
//!
//! Mapping (a Zeek connection is bidirectional, a flow record is not):
//! - one record originator → responder with `orig_ip_bytes` and `orig_pkts`
//!   (IP-level bytes, like NetFlow's octets, not the payload `orig_bytes`),
//!   and, when `resp_pkts > 0`, one record responder → originator with
//!   `resp_ip_bytes` and `resp_pkts`;
//! - start is `ts` (the first packet), end is `ts + duration` (unset
//!   duration: 0); `ts` is epoch seconds with a fraction (TSV; JSON as a
//!   number), an ISO 8601 string (JSON writers set to ISO 8601, e.g.
//!   Corelight), or integer milliseconds (`JSON::TS_MILLIS`; an integer
//!   `ts` of 10^11 or more is read as ms, since 10^11 s is the year 5138);
//! - the protocol is `ip_proto` (the IP header's protocol, logged by recent
//!   Zeek) when set, else from `proto`: `tcp` 6, `udp` 17, `icmp` 1, or 58
//!   for an IPv6 connection, `unknown_transport` 0; the flow is kept either
//!   way, since missing metadata never drops a flow;
//! - ports are as logged; for ICMP Zeek logs the message type as the
//!   originator's port and the counterpart (or code) as the responder's;
//! - `service` (a comma-separated list of confirmed protocols) gives the
//!   first confirmed one as [`FlowRecord::app`];
//! - `tcp_flags` (TCP only) from the `history` letters, upper case for the
//!   originator's packets and lower case for the responder's, using only
//!   letters whose definition in Zeek's `Conn::Info` names the flag bits:
//!   `S` (a SYN without ACK) → SYN, `H` (a SYN+ACK) → SYN|ACK, `A` (a pure
//!   ACK) → ACK, `F` → FIN, `R` → RST, `Q` (SYN+FIN or SYN+RST) → SYN.
//!   `D` (payload) says nothing certain about PSH or ACK, and `I`
//!   (inconsistent) names no fixed set, so they add nothing;
//! - `sampling_rate` is 1 (Zeek sees every packet), interfaces 0, and unset
//!   (`-`) or absent counters are 0: the connection is never dropped for
//!   them. A conn record needs `ts`, `id.orig_h` and `id.resp_h`.
//!
//! Lines of other logs (a `#path` other than `conn`, a JSON `_path` other
//! than `conn`, or, with no path, no conn-only column such as
//! `missed_bytes` or `conn_state`) are [`LineOutcome::Skipped`], as are
//! blank lines. `conn_long` and `conn_red` records, which repeat or
//! summarise connections, are skipped too, so nothing is counted twice.
//!
//! Bounds: lines over [`MAX_LINE_LEN`] and lines or headers with more than
//! [`MAX_FIELDS`] fields are refused before anything is kept; the reader
//! holds one small column map, whatever it is fed.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::de::IgnoredAny;

use crate::eve::{cut, json_object, parse_iso8601_us, Scalar, Str};
use crate::record::{AppLabel, Direction, FlowRecord};

/// Longest line read, in bytes (a conn record is a few hundred).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Most fields in a line or a `#fields` header (Zeek's conn.log has 22
/// columns, plus a few per loaded package).
pub const MAX_FIELDS: usize = 256;

/// Longest `#separator`, `#unset_field` or `#empty_field` value kept.
const MAX_MARKER_LEN: usize = 32;

/// Integer JSON `ts` values from here on are milliseconds.
const MS_THRESHOLD: u64 = 100_000_000_000;

/// What one line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// A `#` header line, read into the reader's state.
    Header,
    /// A conn record: this many flow records (1 or 2) were appended.
    Flows(usize),
    /// A well-formed line that carries no conn record: another log's
    /// record, or a blank line.
    Skipped,
}

/// Why a line was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZeekError {
    #[error(
        "line of {len} bytes is over the {limit}-byte limit: not a zeek log, or a damaged one"
    )]
    LineTooLong { len: usize, limit: usize },
    #[error("line has more than {limit} fields: check the #separator header")]
    TooManyFields { limit: usize },
    #[error("data line before any #fields header: read the log from its first line")]
    NoHeader,
    #[error(
        "the #fields header has no {field} column: a conn.log needs ts, id.orig_h and id.resp_h"
    )]
    MissingColumn { field: &'static str },
    #[error("line has {got} fields where #fields names {want}: the line is cut short or the header is stale")]
    FieldCount { got: usize, want: usize },
    #[error("bad header line: {reason}")]
    BadHeader { reason: &'static str },
    #[error("conn record has no {field}: a conn record needs ts, id.orig_h and id.resp_h")]
    MissingField { field: &'static str },
    #[error("bad {field} {value:?}: expected {expected}")]
    BadField {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("not a zeek json record ({0}): json logs hold one object per line")]
    Json(String),
}

/// The columns a conn record is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Ts,
    OrigH,
    OrigP,
    RespH,
    RespP,
    Proto,
    Service,
    Duration,
    OrigPkts,
    OrigIpBytes,
    RespPkts,
    RespIpBytes,
    History,
    IpProto,
}

const COLS: [(&str, Col); 14] = [
    ("ts", Col::Ts),
    ("id.orig_h", Col::OrigH),
    ("id.orig_p", Col::OrigP),
    ("id.resp_h", Col::RespH),
    ("id.resp_p", Col::RespP),
    ("proto", Col::Proto),
    ("service", Col::Service),
    ("duration", Col::Duration),
    ("orig_pkts", Col::OrigPkts),
    ("orig_ip_bytes", Col::OrigIpBytes),
    ("resp_pkts", Col::RespPkts),
    ("resp_ip_bytes", Col::RespIpBytes),
    ("history", Col::History),
    ("ip_proto", Col::IpProto),
];

/// Columns (and JSON keys) only conn.log has; with no `#path`, one of them
/// tells a conn.log from another log with the same 4-tuple columns.
const CONN_ONLY: [&str; 4] = ["missed_bytes", "conn_state", "orig_ip_bytes", "orig_pkts"];

/// What the last `#fields` header said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// No `#fields` header yet.
    None,
    /// Column `i` feeds `slots[i]`, if any.
    Columns {
        slots: Vec<Option<Col>>,
        conn_only: bool,
    },
    /// A conn log whose header lacks a required column.
    Broken { missing: &'static str },
}

/// Reads the lines of one Zeek log file; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ZeekReader {
    exporter: IpAddr,
    separator: Vec<u8>,
    unset: Vec<u8>,
    empty: Vec<u8>,
    /// `#path` is `conn`: `Some(true)`; another log: `Some(false)`.
    path_is_conn: Option<bool>,
    layout: Layout,
}

/// One conn record, whichever format it came in.
struct Conn<'a> {
    ts_us: u64,
    duration_us: u64,
    orig_h: IpAddr,
    resp_h: IpAddr,
    orig_p: u16,
    resp_p: u16,
    protocol: u8,
    service: Option<Cow<'a, str>>,
    orig_pkts: u64,
    orig_ip_bytes: u64,
    resp_pkts: u64,
    resp_ip_bytes: u64,
    history: Option<Cow<'a, str>>,
}

impl ZeekReader {
    /// A reader whose flows carry `exporter` as [`FlowRecord::exporter`].
    pub fn new(exporter: IpAddr) -> Self {
        ZeekReader {
            exporter,
            separator: b"\t".to_vec(),
            unset: b"-".to_vec(),
            empty: b"(empty)".to_vec(),
            path_is_conn: None,
            layout: Layout::None,
        }
    }

    /// Forgets the header: the next lines start a new file (after a
    /// rotation). A `#separator` line does the same by itself.
    pub fn reset(&mut self) {
        *self = ZeekReader::new(self.exporter);
    }

    /// Reads one line (a trailing `\n` or `\r\n` is allowed), appending its
    /// flows to `out`. On error nothing is appended and the reader's state
    /// is unchanged, except that a bad `#fields` header makes the following
    /// data lines errors too.
    pub fn line(
        &mut self,
        line: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<LineOutcome, ZeekError> {
        if line.len() > MAX_LINE_LEN {
            return Err(ZeekError::LineTooLong {
                len: line.len(),
                limit: MAX_LINE_LEN,
            });
        }
        let line = trim_newline(line);
        match line.first() {
            None => Ok(LineOutcome::Skipped),
            Some(b'#') => self.header(line),
            Some(b'{') => self.json(line, out),
            Some(_) if line.iter().all(u8::is_ascii_whitespace) => Ok(LineOutcome::Skipped),
            Some(_) => self.tsv(line, out),
        }
    }

    fn header(&mut self, line: &[u8]) -> Result<LineOutcome, ZeekError> {
        // `#separator` is the one directive separated by a space, since the
        // separator is not known before it.
        if let Some(value) = line.strip_prefix(b"#separator ") {
            let sep = unescape(value).ok_or(ZeekError::BadHeader {
                reason: "#separator is not a valid escaped string",
            })?;
            if sep.is_empty() || sep.len() > MAX_MARKER_LEN {
                return Err(ZeekError::BadHeader {
                    reason: "#separator must be 1 to 32 bytes",
                });
            }
            self.reset();
            self.separator = sep;
            return Ok(LineOutcome::Header);
        }
        let (name, value) = split_once(line, &self.separator);
        match name {
            b"#unset_field" | b"#empty_field" => {
                let value = value.unwrap_or_default();
                if value.len() > MAX_MARKER_LEN {
                    return Err(ZeekError::BadHeader {
                        reason: "#unset_field and #empty_field must be at most 32 bytes",
                    });
                }
                if name == b"#unset_field" {
                    self.unset = value.to_vec();
                } else {
                    self.empty = value.to_vec();
                }
            }
            b"#path" => self.path_is_conn = Some(value == Some(b"conn")),
            b"#fields" => {
                self.layout = match self.fields(value.unwrap_or_default()) {
                    Ok(layout) => layout,
                    Err(e) => {
                        self.layout = Layout::None;
                        return Err(e);
                    }
                };
                if let Layout::Broken { missing } = self.layout {
                    if self.is_conn() {
                        return Err(ZeekError::MissingColumn { field: missing });
                    }
                }
            }
            // #set_separator (no set column is read), #types, #open,
            // #close, comments.
            _ => {}
        }
        Ok(LineOutcome::Header)
    }

    fn fields(&self, names: &[u8]) -> Result<Layout, ZeekError> {
        let mut slots = Vec::new();
        let mut conn_only = false;
        for name in Split::new(names, &self.separator) {
            if slots.len() == MAX_FIELDS {
                return Err(ZeekError::TooManyFields { limit: MAX_FIELDS });
            }
            let col = COLS
                .iter()
                .find(|(n, _)| n.as_bytes() == name)
                .map(|(_, c)| *c);
            // A repeated name feeds its column once.
            let col = col.filter(|c| !slots.contains(&Some(*c)));
            slots.push(col);
            conn_only |= CONN_ONLY.iter().any(|n| n.as_bytes() == name);
        }
        for (name, col) in [
            ("ts", Col::Ts),
            ("id.orig_h", Col::OrigH),
            ("id.resp_h", Col::RespH),
        ] {
            if !slots.contains(&Some(col)) {
                return Ok(Layout::Broken { missing: name });
            }
        }
        Ok(Layout::Columns { slots, conn_only })
    }

    fn is_conn(&self) -> bool {
        match (self.path_is_conn, &self.layout) {
            (Some(p), _) => p,
            (None, Layout::Columns { conn_only, .. }) => *conn_only,
            // With no #path, a header missing ts/id columns is no conn log.
            (None, Layout::Broken { .. } | Layout::None) => false,
        }
    }

    fn tsv(&self, line: &[u8], out: &mut Vec<FlowRecord>) -> Result<LineOutcome, ZeekError> {
        let slots = match &self.layout {
            Layout::None if self.path_is_conn == Some(false) => return Ok(LineOutcome::Skipped),
            Layout::None => return Err(ZeekError::NoHeader),
            _ if !self.is_conn() => return Ok(LineOutcome::Skipped),
            Layout::Broken { missing } => return Err(ZeekError::MissingColumn { field: missing }),
            Layout::Columns { slots, .. } => slots,
        };
        let mut values: [Option<&[u8]>; COLS.len()] = [None; COLS.len()];
        let mut count = 0;
        for field in Split::new(line, &self.separator) {
            if count == MAX_FIELDS {
                return Err(ZeekError::TooManyFields { limit: MAX_FIELDS });
            }
            if let Some(Some(col)) = slots.get(count) {
                if let Some(v) = values.get_mut(*col as usize) {
                    *v = (field != self.unset.as_slice() && field != self.empty.as_slice())
                        .then_some(field);
                }
            }
            count += 1;
        }
        if count != slots.len() {
            return Err(ZeekError::FieldCount {
                got: count,
                want: slots.len(),
            });
        }
        let get = |c: Col| values.get(c as usize).copied().flatten();
        let text = |c: Col, field: &'static str| -> Result<Option<&str>, ZeekError> {
            get(c)
                .map(|v| std::str::from_utf8(v).map_err(|_| bad_bytes(field, v, "utf-8 text")))
                .transpose()
        };
        let required =
            |c: Col, field: &'static str| text(c, field)?.ok_or(ZeekError::MissingField { field });
        let count_of = |c: Col, field: &'static str| -> Result<u64, ZeekError> {
            text(c, field)?.map_or(Ok(0), |s| s.parse().map_err(|_| bad(field, s, "a count")))
        };
        let ts = required(Col::Ts, "ts")?;
        let ts_us = parse_decimal_us(ts)
            .or_else(|| parse_iso8601_us(ts))
            .ok_or_else(|| bad("ts", ts, "epoch seconds such as 1597559163.553287"))?;
        let duration_us = text(Col::Duration, "duration")?.map_or(Ok(0), |d| {
            parse_decimal_us(d).ok_or_else(|| bad("duration", d, "seconds such as 0.066851"))
        })?;
        let orig_h = addr(required(Col::OrigH, "id.orig_h")?, "id.orig_h")?;
        let resp_h = addr(required(Col::RespH, "id.resp_h")?, "id.resp_h")?;
        let ip_proto = text(Col::IpProto, "ip_proto")?
            .map(|p| {
                p.parse::<u8>()
                    .map_err(|_| bad("ip_proto", p, "a protocol number (0 to 255)"))
            })
            .transpose()?;
        let conn = Conn {
            ts_us,
            duration_us,
            orig_h,
            resp_h,
            orig_p: port(text(Col::OrigP, "id.orig_p")?, "id.orig_p")?,
            resp_p: port(text(Col::RespP, "id.resp_p")?, "id.resp_p")?,
            protocol: protocol(ip_proto, text(Col::Proto, "proto")?, orig_h)?,
            service: text(Col::Service, "service")?.map(Cow::Borrowed),
            orig_pkts: count_of(Col::OrigPkts, "orig_pkts")?,
            orig_ip_bytes: count_of(Col::OrigIpBytes, "orig_ip_bytes")?,
            resp_pkts: count_of(Col::RespPkts, "resp_pkts")?,
            resp_ip_bytes: count_of(Col::RespIpBytes, "resp_ip_bytes")?,
            history: text(Col::History, "history")?.map(Cow::Borrowed),
        };
        Ok(LineOutcome::Flows(self.emit(&conn, out)))
    }

    fn json(&self, line: &[u8], out: &mut Vec<FlowRecord>) -> Result<LineOutcome, ZeekError> {
        let raw: RawConn<'_> =
            serde_json::from_slice(line).map_err(|e| ZeekError::Json(e.to_string()))?;
        let is_conn = match &raw.path {
            Some(p) => p.0 == "conn",
            None => {
                raw.missed_bytes.is_some()
                    || raw.conn_state.is_some()
                    || raw.orig_ip_bytes.is_some()
                    || raw.orig_pkts.is_some()
            }
        };
        if !is_conn {
            return Ok(LineOutcome::Skipped);
        }
        let missing = |field| ZeekError::MissingField { field };
        let ts_us = json_ts(raw.ts.as_ref().ok_or(missing("ts"))?)?;
        let duration_us = raw.duration.as_ref().map_or(Ok(0), json_duration)?;
        let orig_h = addr(
            &raw.orig_h.as_ref().ok_or(missing("id.orig_h"))?.0,
            "id.orig_h",
        )?;
        let resp_h = addr(
            &raw.resp_h.as_ref().ok_or(missing("id.resp_h"))?.0,
            "id.resp_h",
        )?;
        let ip_proto = raw
            .ip_proto
            .map(|p| {
                u8::try_from(p)
                    .map_err(|_| bad("ip_proto", &p.to_string(), "a protocol number (0 to 255)"))
            })
            .transpose()?;
        let json_port = |p: Option<u64>, field| {
            p.map_or(Ok(0), |p| {
                u16::try_from(p).map_err(|_| bad(field, &p.to_string(), "a port (0 to 65535)"))
            })
        };
        let conn = Conn {
            ts_us,
            duration_us,
            orig_h,
            resp_h,
            orig_p: json_port(raw.orig_p, "id.orig_p")?,
            resp_p: json_port(raw.resp_p, "id.resp_p")?,
            protocol: protocol(ip_proto, raw.proto.as_ref().map(|p| &*p.0), orig_h)?,
            service: raw.service.map(|s| s.0),
            orig_pkts: raw.orig_pkts.unwrap_or(0),
            orig_ip_bytes: raw.orig_ip_bytes.unwrap_or(0),
            resp_pkts: raw.resp_pkts.unwrap_or(0),
            resp_ip_bytes: raw.resp_ip_bytes.unwrap_or(0),
            history: raw.history.map(|s| s.0),
        };
        Ok(LineOutcome::Flows(self.emit(&conn, out)))
    }

    fn emit(&self, c: &Conn<'_>, out: &mut Vec<FlowRecord>) -> usize {
        let start_ms = c.ts_us / 1000;
        let end_ms = c.ts_us.saturating_add(c.duration_us) / 1000;
        let app = c
            .service
            .as_deref()
            .and_then(|s| {
                s.split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty() && !s.starts_with('-'))
            })
            .map_or_else(AppLabel::default, AppLabel::new);
        let history = if c.protocol == 6 {
            c.history.as_deref().unwrap_or("")
        } else {
            ""
        };
        let orig = FlowRecord {
            start_ms,
            end_ms,
            bytes: c.orig_ip_bytes,
            packets: c.orig_pkts,
            src_addr: c.orig_h,
            dst_addr: c.resp_h,
            exporter: self.exporter,
            in_if: 0,
            out_if: 0,
            sampling_rate: 1,
            domain_id: 0,
            src_port: c.orig_p,
            dst_port: c.resp_p,
            protocol: c.protocol,
            tcp_flags: history_flags(history, true),
            direction: Direction::Unknown,
            resample: 1,
            flags: 0,
            app,
        };
        out.push(orig);
        if c.resp_pkts == 0 {
            return 1;
        }
        out.push(FlowRecord {
            bytes: c.resp_ip_bytes,
            packets: c.resp_pkts,
            src_addr: c.resp_h,
            dst_addr: c.orig_h,
            src_port: c.resp_p,
            dst_port: c.orig_p,
            tcp_flags: history_flags(history, false),
            ..orig
        });
        2
    }
}

/// TCP flags of one side from Zeek's `history` (upper case: originator).
fn history_flags(history: &str, originator: bool) -> u8 {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    history
        .bytes()
        .filter(|c| c.is_ascii_alphabetic() && c.is_ascii_uppercase() == originator)
        .fold(0, |flags, c| {
            flags
                | match c.to_ascii_uppercase() {
                    b'S' | b'Q' => SYN,
                    b'H' => SYN | ACK,
                    b'A' => ACK,
                    b'F' => FIN,
                    b'R' => RST,
                    _ => 0,
                }
        })
}

/// The protocol number: `ip_proto` if logged, else from `proto`.
/// `proto` is checked even when `ip_proto` is set: a value outside Zeek's
/// `transport_proto` enum means the line is damaged.
fn protocol(ip_proto: Option<u8>, proto: Option<&str>, orig_h: IpAddr) -> Result<u8, ZeekError> {
    let from_name = match proto {
        None | Some("unknown_transport") => 0,
        Some("tcp") => 6,
        Some("udp") => 17,
        Some("icmp") if orig_h.is_ipv6() => 58,
        Some("icmp") => 1,
        Some(other) => return Err(bad("proto", other, "tcp, udp, icmp or unknown_transport")),
    };
    Ok(ip_proto.unwrap_or(from_name))
}

fn json_ts(ts: &Scalar<'_>) -> Result<u64, ZeekError> {
    const EXPECTED: &str = "epoch seconds, epoch milliseconds or an ISO 8601 time";
    match ts {
        Scalar::U(n) if *n >= MS_THRESHOLD => n.checked_mul(1000),
        Scalar::U(n) => n.checked_mul(1_000_000),
        Scalar::F(f) => seconds_f64_us(*f),
        Scalar::S(s) => parse_iso8601_us(s).or_else(|| parse_decimal_us(s)),
        Scalar::I(_) => None,
    }
    .ok_or_else(|| bad("ts", &scalar_text(ts), EXPECTED))
}

fn json_duration(d: &Scalar<'_>) -> Result<u64, ZeekError> {
    match d {
        Scalar::U(n) => n.checked_mul(1_000_000),
        Scalar::F(f) => seconds_f64_us(*f),
        Scalar::S(s) => parse_decimal_us(s),
        Scalar::I(_) => None,
    }
    .ok_or_else(|| bad("duration", &scalar_text(d), "seconds such as 0.066851"))
}

fn scalar_text(s: &Scalar<'_>) -> String {
    match s {
        Scalar::U(n) => n.to_string(),
        Scalar::I(n) => n.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::S(s) => s.to_string(),
    }
}

/// Seconds as a JSON number to µs. Zeek writes 6 decimals; rounding to the
/// µs undoes the binary representation's error (at 1.6e9 s, an f64 is
/// exact to about 0.24 µs).
fn seconds_f64_us(f: f64) -> Option<u64> {
    // 10^11 s (year 5138) keeps the product well inside u64 and f64's
    // exact integers.
    if !f.is_finite() || !(0.0..1e11).contains(&f) {
        return None;
    }
    let us = (f * 1e6).round();
    // In range by the check above; `as` saturates anyway.
    Some(us as u64)
}

/// `SECONDS[.FRACTION]` (ASCII digits only, at most 11 integer digits) to
/// µs; fraction digits past the sixth are dropped.
fn parse_decimal_us(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || int.len() > 11 || frac.len() > 18 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    let mut us = 0u64;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        us = us * 10 + d;
    }
    secs.checked_mul(1_000_000)?.checked_add(us)
}

fn addr(s: &str, field: &'static str) -> Result<IpAddr, ZeekError> {
    s.parse()
        .map_err(|_| bad(field, s, "an IPv4 or IPv6 address"))
}

fn port(s: Option<&str>, field: &'static str) -> Result<u16, ZeekError> {
    s.map_or(Ok(0), |s| {
        s.parse().map_err(|_| bad(field, s, "a port (0 to 65535)"))
    })
}

fn bad(field: &'static str, value: &str, expected: &'static str) -> ZeekError {
    ZeekError::BadField {
        field,
        value: cut(value, 64).to_owned(),
        expected,
    }
}

fn bad_bytes(field: &'static str, value: &[u8], expected: &'static str) -> ZeekError {
    let lossy = String::from_utf8_lossy(value.get(..64).unwrap_or(value));
    bad(field, &lossy, expected)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `line` split at the first `sep`: (before, after).
fn split_once<'a>(line: &'a [u8], sep: &[u8]) -> (&'a [u8], Option<&'a [u8]>) {
    let mut it = Split::new(line, sep);
    let first = it.next().unwrap_or_default();
    (first, it.rest())
}

/// Zeek's header escapes: `\xHH` (and `\\`); other bytes as they are.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len().min(MAX_MARKER_LEN + 1));
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if out.len() > MAX_MARKER_LEN {
            break;
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match s.get(i + 1) {
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Splits a byte string at every occurrence of a (non-empty) separator.
struct Split<'a, 's> {
    rest: Option<&'a [u8]>,
    sep: &'s [u8],
}

impl<'a, 's> Split<'a, 's> {
    fn new(s: &'a [u8], sep: &'s [u8]) -> Self {
        Split { rest: Some(s), sep }
    }

    /// What follows the last field returned.
    fn rest(self) -> Option<&'a [u8]> {
        self.rest
    }
}

impl<'a> Iterator for Split<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        let found = if self.sep.is_empty() {
            None
        } else {
            s.windows(self.sep.len()).position(|w| w == self.sep)
        };
        match found {
            Some(i) => {
                self.rest = s.get(i + self.sep.len()..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// The keys of a JSON conn record that are read; all others are skipped.
#[derive(Default)]
struct RawConn<'a> {
    path: Option<Str<'a>>,
    ts: Option<Scalar<'a>>,
    orig_h: Option<Str<'a>>,
    orig_p: Option<u64>,
    resp_h: Option<Str<'a>>,
    resp_p: Option<u64>,
    proto: Option<Str<'a>>,
    service: Option<Str<'a>>,
    duration: Option<Scalar<'a>>,
    orig_pkts: Option<u64>,
    orig_ip_bytes: Option<u64>,
    resp_pkts: Option<u64>,
    resp_ip_bytes: Option<u64>,
    history: Option<Str<'a>>,
    ip_proto: Option<u64>,
    conn_state: Option<IgnoredAny>,
    missed_bytes: Option<IgnoredAny>,
}

json_object!(RawConn {
    path: "_path",
    ts: "ts",
    orig_h: "id.orig_h",
    orig_p: "id.orig_p",
    resp_h: "id.resp_h",
    resp_p: "id.resp_p",
    proto: "proto",
    service: "service",
    duration: "duration",
    orig_pkts: "orig_pkts",
    orig_ip_bytes: "orig_ip_bytes",
    resp_pkts: "resp_pkts",
    resp_ip_bytes: "resp_ip_bytes",
    history: "history",
    ip_proto: "ip_proto",
    conn_state: "conn_state",
    missed_bytes: "missed_bytes",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_seconds() {
        assert_eq!(
            parse_decimal_us("1597559163.553287"),
            Some(1_597_559_163_553_287)
        );
        assert_eq!(parse_decimal_us("0.06685"), Some(66_850));
        assert_eq!(parse_decimal_us("10"), Some(10_000_000));
        assert_eq!(parse_decimal_us("1.1234569"), Some(1_123_456));
        for bad in [
            "",
            ".5",
            "1.",
            "-1",
            "1e3",
            "XXXXXXXXXX.XXXXXX",
            "1.2.3",
            "123456789012",
        ] {
            assert_eq!(parse_decimal_us(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn float_seconds_round_to_the_microsecond() {
        assert_eq!(
            seconds_f64_us(1597559163.553287),
            Some(1_597_559_163_553_287)
        );
        assert_eq!(seconds_f64_us(0.06685185432434082), Some(66_852));
        assert_eq!(seconds_f64_us(-1.0), None);
        assert_eq!(seconds_f64_us(f64::NAN), None);
        assert_eq!(seconds_f64_us(1e300), None);
    }

    #[test]
    fn history_letters_per_side() {
        // Zeek's Conn::Info: S SYN w/o ACK, H SYN+ACK, A pure ACK, D data,
        // F FIN, R RST; upper case originator, lower case responder.
        assert_eq!(history_flags("ShADadfF", true), 0x13);
        assert_eq!(history_flags("ShADadfF", false), 0x13);
        assert_eq!(history_flags("S", true), 0x02);
        assert_eq!(history_flags("S", false), 0);
        assert_eq!(history_flags("Sr", false), 0x04);
        assert_eq!(history_flags("^hADad", true), 0x10);
        assert_eq!(history_flags("Dd", true), 0);
        assert_eq!(history_flags("QI", true), 0x02);
        assert_eq!(history_flags("", true), 0);
    }

    #[test]
    fn separators_and_escapes() {
        assert_eq!(unescape(br"\x09"), Some(vec![9]));
        assert_eq!(unescape(br"\x2c\\"), Some(b",\\".to_vec()));
        assert_eq!(unescape(br"\x0"), None);
        assert_eq!(unescape(br"\q"), None);
        let v: Vec<&[u8]> = Split::new(b"a::b::::c", b"::").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
        let v: Vec<&[u8]> = Split::new(b"", b"\t").collect();
        assert_eq!(v, [&b""[..]]);
        assert_eq!(
            split_once(b"#path\tconn", b"\t"),
            (&b"#path"[..], Some(&b"conn"[..]))
        );
        assert_eq!(split_once(b"#close", b"\t"), (&b"#close"[..], None));
    }
}
