//! `rampart-agent decode FILE`: the flows in a capture of exporter traffic,
//! a Zeek `conn.log` or a Suricata EVE file, as JSON lines, for people
//! debugging exporters and sensors.
//!
//! Input formats, picked by [`detect`] from the file's first bytes:
//! - classic libpcap (either byte order, microsecond or nanosecond
//!   timestamps) and pcapng, read with `pcap-file`; frames are taken apart
//!   with `etherparse`. Link types: Ethernet (1, VLAN tags included), raw IP
//!   (101, 228, 229), Linux cooked capture (113) and BSD loopback (0, 108).
//!   Every UDP datagram, whatever its port, goes to one
//!   [`rampart_flow::Decoder`] with its source address as the exporter (so
//!   templates are kept per exporter address) and its capture time as
//!   `now_ms` (so templates expire in capture time);
//! - a Zeek log in TSV (its first line is a `#` header line) or a file of
//!   JSON lines (its first byte is `{`): Zeek conn.log records and Suricata
//!   EVE events. Each line goes to [`rampart_flow::eve::parse_line`] if it
//!   has an `"event_type"` key (every EVE event has one, no Zeek record
//!   does), else to one [`rampart_flow::zeek::ZeekReader`], which also keeps
//!   the TSV header's state. Their flows go to [`Session::flow`]. The
//!   exporter is `0.0.0.0`: the flows were observed by the sensor that
//!   wrote the log, and neither format names an exporter address. Lines of
//!   other Zeek logs and EVE events other than `flow` and `netflow` (alerts,
//!   anomalies, dns, stats, ...) are only counted; malformed lines are warned about.
//!
//! Output: one JSON object per flow on stdout, with `start` and `end`
//! (RFC 3339, milliseconds, UTC), `src_addr`, `dst_addr`, `src_port`,
//! `dst_port`, `protocol`, `bytes` and `packets` (unscaled, as exported),
//! `tcp_flags`, `in_if`, `out_if`, `sampling_rate` and `exporter`.
//!
//! Problems go to stderr: a warning per frame, datagram or line (at most
//! [`MAX_WARNING_LINES`]), then one summary line per kind of problem and a
//! total. Non-UDP frames and lines without flows are only counted. [`run`]
//! exits 0 when at least one flow was decoded, 1 otherwise.
//!
//! Bounds: files over [`MAX_FILE_BYTES`] are refused, the file is streamed
//! (`pcap-file` keeps one 8 MB buffer; a record larger than that ends the
//! read; log lines are read into one buffer of at most the readers' line
//! limit, a longer line is skipped without being kept), and the decoder
//! keeps its own per-exporter bounds.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use etherparse::err::packet::SliceError;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{PcapError, TsResolution};
use rampart_flow::eve;
use rampart_flow::zeek::{self, LineOutcome, ZeekReader};
use rampart_flow::{DecodeError, Decoder, FlowRecord};
use serde::Serialize;

/// Larger files are refused: split them first (`editcap -c`).
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Per-frame warnings printed before the rest are only counted.
pub const MAX_WARNING_LINES: usize = 20;

/// Distinct exporter addresses counted for the closing line.
const MAX_COUNTED_EXPORTERS: usize = 4096;

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// The input formats `decode` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap, either byte order, µs or ns timestamps.
    Pcap,
    /// pcapng.
    PcapNg,
    /// A Zeek log with its TSV header (`#separator ...`, or any `#` line
    /// first, as in Zeek's own test baselines).
    ZeekTsv,
    /// JSON lines: Zeek JSON logs or Suricata EVE, told apart per line.
    JsonLines,
}

impl Format {
    /// For the closing line.
    fn label(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
            Format::ZeekTsv => "Zeek TSV log",
            Format::JsonLines => "JSON lines: Zeek or Suricata EVE",
        }
    }

    fn is_lines(self) -> bool {
        matches!(self, Format::ZeekTsv | Format::JsonLines)
    }
}

/// The exporter address of flows read from Zeek and EVE logs.
pub const LOG_EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The format of a file from its first bytes (at least 4 are needed for a
/// capture, 1 for a log).
pub fn detect(head: &[u8]) -> Option<Format> {
    match head.first()? {
        b'#' => return Some(Format::ZeekTsv),
        b'{' => return Some(Format::JsonLines),
        _ => {}
    }
    match head.get(..4)? {
        [0xa1, 0xb2, 0xc3, 0xd4]
        | [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x4d, 0x3c, 0xb2, 0xa1] => Some(Format::Pcap),
        // The section header block type reads the same in both orders.
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(Format::PcapNg),
        _ => None,
    }
}

/// Why a file could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a directory: give a capture file")]
    Directory { path: PathBuf },
    #[error(
        "{path} is {size} bytes, over the limit of {MAX_FILE_BYTES} (2 GiB): \
         split it first, for example with editcap -c"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is empty: nothing to decode")]
    Empty { path: PathBuf },
    #[error(
        "{path} is not a file decode reads (first bytes {head}): give a pcap or pcapng \
         capture, a Zeek conn.log (TSV with its # header lines, or JSON) or a Suricata \
         EVE JSON file"
    )]
    UnknownFormat { path: PathBuf, head: String },
    #[error("{path}: unreadable {format} header ({reason}): the file is damaged or cut short")]
    BadHeader {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error(
        "{path}: link type {link} is not supported: decode reads Ethernet (1), raw IP \
         (101, 228, 229), Linux cooked (113) and BSD loopback (0, 108) captures"
    )]
    UnsupportedLink { path: PathBuf, link: u32 },
    #[error("writing the flows: {0}")]
    Output(#[source] io::Error),
}

/// The link layer a frame starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// An IPv4 or IPv6 header, no link header.
    RawIp,
    /// Linux cooked capture v1 (SLL).
    LinuxSll,
    /// BSD loopback: a 4-byte address family, then the IP header.
    Null,
}

impl Link {
    /// From a LINKTYPE_ value of a pcap or pcapng header.
    pub fn from_linktype(v: u32) -> Option<Link> {
        match v {
            0 | 108 => Some(Link::Null),
            1 => Some(Link::Ethernet),
            101 | 228 | 229 => Some(Link::RawIp),
            113 => Some(Link::LinuxSll),
            _ => None,
        }
    }
}

/// Kinds of problem, each counted and summed up at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not UDP over IP (ARP, TCP, ICMP, ...): only counted.
    NotUdp,
    /// IP fragments: not reassembled.
    Fragment,
    /// Captured shorter than the frame or its headers say.
    TruncatedFrame,
    /// Bad headers or record fields.
    MalformedFrame,
    /// A pcapng interface of a link type decode does not read.
    UnsupportedLink,
    /// UDP datagrams that are no NetFlow v5/v9 or IPFIX.
    NotFlowExport,
    /// Datagrams the decoder refused as a whole.
    Refused,
    /// Datagrams with a part skipped as malformed.
    Partial,
    /// Data sets whose template the exporter had not sent (yet).
    MissingTemplate,
    /// Flow times past year 9999, written as its last millisecond.
    TimeClamped,
    /// The file ended inside a record, or a record could not be read.
    CutShort,
    /// Log lines that could not be read (Zeek or EVE).
    MalformedLine,
    /// Log lines without flows: other Zeek logs, EVE events other than
    /// `flow` and `netflow` (alert, anomaly, dns, stats, ...). Only counted.
    NoFlowLine,
}

impl Problem {
    const ALL: [Problem; 13] = [
        Problem::NotUdp,
        Problem::Fragment,
        Problem::TruncatedFrame,
        Problem::MalformedFrame,
        Problem::UnsupportedLink,
        Problem::NotFlowExport,
        Problem::Refused,
        Problem::Partial,
        Problem::MissingTemplate,
        Problem::TimeClamped,
        Problem::CutShort,
        Problem::MalformedLine,
        Problem::NoFlowLine,
    ];

    /// The summary line's label, before `: COUNT`.
    pub fn label(self) -> &'static str {
        match self {
            Problem::NotUdp => "non-UDP frames skipped",
            Problem::Fragment => "IP fragments skipped (not reassembled)",
            Problem::TruncatedFrame => "truncated frames skipped",
            Problem::MalformedFrame => "malformed frames skipped",
            Problem::UnsupportedLink => "frames of unsupported link types skipped",
            Problem::NotFlowExport => "UDP datagrams that are not NetFlow v5/v9 or IPFIX",
            Problem::Refused => "datagrams refused by the decoder",
            Problem::Partial => "datagrams partly decoded",
            Problem::MissingTemplate => "data sets without a known template",
            Problem::TimeClamped => "flow times past 9999-12-31 (clamped)",
            Problem::CutShort => "captures cut short",
            Problem::MalformedLine => "malformed log lines skipped",
            Problem::NoFlowLine => {
                "log lines without flows skipped (other Zeek logs, EVE events other than flow and netflow)"
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The input's format (`None` until detected).
    pub format: Option<Format>,
    pub frames: u64,
    pub datagrams: u64,
    /// Lines of a Zeek or EVE log, header lines included.
    pub lines: u64,
    pub flows: u64,
    /// Distinct exporter addresses (counted up to 4096).
    pub exporters: usize,
    counts: [u64; Problem::ALL.len()],
}

impl Summary {
    pub fn count(&self, p: Problem) -> u64 {
        self.counts[p.index()]
    }
}

/// One output line.
#[derive(Serialize)]
struct FlowLine<'a> {
    start: &'a str,
    end: &'a str,
    src_addr: IpAddr,
    dst_addr: IpAddr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    bytes: u64,
    packets: u64,
    tcp_flags: u8,
    in_if: u32,
    out_if: u32,
    sampling_rate: u32,
    exporter: IpAddr,
}

/// `ms` since the Unix epoch as RFC 3339 with milliseconds in UTC, and
/// whether it had to be clamped to year 9999.
pub fn rfc3339_ms(ms: u64) -> (String, bool) {
    let clamped = ms > MAX_RFC3339_MS;
    let ms = ms.min(MAX_RFC3339_MS);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let text = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        // Unreachable within the clamp; a placeholder beats a panic.
        .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned());
    (text, clamped)
}

/// Where a warning happened.
struct At {
    frame: u64,
    ts_ms: u64,
    from: Option<(IpAddr, u16)>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {} ({})", self.frame, rfc3339_ms(self.ts_ms).0)?;
        match self.from {
            Some((IpAddr::V6(a), port)) => write!(f, " from [{a}]:{port}"),
            Some((a, port)) => write!(f, " from {a}:{port}"),
            None => Ok(()),
        }
    }
}

/// Turns frames and log lines into output lines and warnings.
pub struct Session<'a> {
    decoder: Decoder,
    zeek: ZeekReader,
    records: Vec<FlowRecord>,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    warnings: usize,
    exporters: HashSet<IpAddr>,
    summary: Summary,
}

impl<'a> Session<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Session {
            decoder: Decoder::default(),
            zeek: ZeekReader::new(LOG_EXPORTER),
            records: Vec::new(),
            out,
            err,
            warnings: 0,
            exporters: HashSet::new(),
            summary: Summary::default(),
        }
    }

    /// Counts a problem and, unless it is only counted, warns about it.
    fn problem(&mut self, p: Problem, at: Option<&At>, detail: fmt::Arguments<'_>) {
        self.summary.counts[p.index()] += 1;
        if matches!(p, Problem::NotUdp | Problem::NoFlowLine) {
            return;
        }
        self.warnings += 1;
        // stderr is best effort: a closed stderr must not stop the output.
        if self.warnings <= MAX_WARNING_LINES {
            let _ = match at {
                Some(at) => writeln!(self.err, "warning: {at}: {detail}"),
                None => writeln!(self.err, "warning: {detail}"),
            };
        } else if self.warnings == MAX_WARNING_LINES + 1 {
            let _ = writeln!(
                self.err,
                "warning: more than {MAX_WARNING_LINES} warnings; the rest are only counted below"
            );
        }
    }

    /// The file could not be read further: warn and let the reader stop.
    fn cut_short(&mut self, after_frames: u64, why: &dyn fmt::Display) {
        self.problem(
            Problem::CutShort,
            None,
            format_args!("capture unreadable after frame {after_frames}, stopped there: {why}"),
        );
    }

    /// One captured frame: `data` as captured, `orig_len` as on the wire.
    pub fn frame(&mut self, link: Link, ts_ms: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        self.summary.frames += 1;
        let at = At {
            frame: self.summary.frames,
            ts_ms,
            from: None,
        };
        if (data.len() as u64) < u64::from(orig_len) {
            self.problem(
                Problem::TruncatedFrame,
                Some(&at),
                format_args!(
                    "truncated frame: {} of its {orig_len} bytes captured (raise the snap length)",
                    data.len()
                ),
            );
            return Ok(());
        }
        let sliced = match link {
            Link::Ethernet => SlicedPacket::from_ethernet(data),
            Link::LinuxSll => SlicedPacket::from_linux_sll(data),
            Link::RawIp => SlicedPacket::from_ip(data),
            Link::Null => {
                let Some((family, rest)) = data.split_first_chunk::<4>() else {
                    self.problem(
                        Problem::TruncatedFrame,
                        Some(&at),
                        format_args!("truncated frame: loopback header cut short"),
                    );
                    return Ok(());
                };
                // The family is in the capturing host's byte order: 2 is
                // AF_INET everywhere, 24, 28 and 30 are AF_INET6 on the BSDs
                // and macOS.
                let ip = [u32::from_le_bytes(*family), u32::from_be_bytes(*family)]
                    .iter()
                    .any(|f| matches!(f, 2 | 24 | 28 | 30));
                if !ip {
                    self.problem(Problem::NotUdp, None, format_args!(""));
                    return Ok(());
                }
                SlicedPacket::from_ip(rest)
            }
        };
        let sliced = match sliced {
            Ok(s) => s,
            Err(SliceError::Len(e)) => {
                self.problem(
                    Problem::TruncatedFrame,
                    Some(&at),
                    format_args!("truncated frame: {e}"),
                );
                return Ok(());
            }
            Err(e) => {
                self.problem(
                    Problem::MalformedFrame,
                    Some(&at),
                    format_args!("malformed frame: {e}"),
                );
                return Ok(());
            }
        };
        let src = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => IpAddr::V4(v4.header().source_addr()),
            Some(NetSlice::Ipv6(v6)) => IpAddr::V6(v6.header().source_addr()),
            _ => {
                self.problem(Problem::NotUdp, None, format_args!(""));
                return Ok(());
            }
        };
        if sliced.is_ip_payload_fragmented() {
            let detail = match &sliced.net {
                Some(NetSlice::Ipv4(v4)) => {
                    let h = v4.header();
                    format!(
                        "IPv4 fragment from {src} (id {}, offset {} bytes{}) skipped: \
                         fragments are not reassembled",
                        h.identification(),
                        u32::from(h.fragments_offset().value()) * 8,
                        if h.more_fragments() {
                            ", more follow"
                        } else {
                            ""
                        }
                    )
                }
                _ => format!("IPv6 fragment from {src} skipped: fragments are not reassembled"),
            };
            self.problem(Problem::Fragment, Some(&at), format_args!("{detail}"));
            return Ok(());
        }
        let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
            self.problem(Problem::NotUdp, None, format_args!(""));
            return Ok(());
        };
        let at = At {
            from: Some((src, udp.source_port())),
            ..at
        };
        self.datagram(&at, src, udp.payload())
    }

    /// One UDP payload from `exporter`.
    fn datagram(&mut self, at: &At, exporter: IpAddr, payload: &[u8]) -> io::Result<()> {
        self.summary.datagrams += 1;
        self.records.clear();
        match self
            .decoder
            .decode(exporter, payload, at.ts_ms, &mut self.records)
        {
            Err(e @ DecodeError::BadVersion(_)) => {
                self.problem(
                    Problem::NotFlowExport,
                    Some(at),
                    format_args!("not flow export, skipped: {e}"),
                );
            }
            Err(e) => {
                self.problem(
                    Problem::Refused,
                    Some(at),
                    format_args!("datagram refused ({} bytes): {e}", payload.len()),
                );
            }
            Ok(stats) => {
                if self.exporters.len() < MAX_COUNTED_EXPORTERS {
                    self.exporters.insert(exporter);
                }
                if let Some(e) = &stats.error {
                    self.problem(
                        Problem::Partial,
                        Some(at),
                        format_args!(
                            "datagram partly decoded ({} flows kept): {e}",
                            stats.records
                        ),
                    );
                }
                for _ in 0..stats.missing_template_sets {
                    self.problem(
                        Problem::MissingTemplate,
                        Some(at),
                        format_args!(
                            "data set of observation domain {} without a known template \
                             (templates are kept per exporter address; this one may come later)",
                            stats.domain_id
                        ),
                    );
                }
            }
        }
        let records = std::mem::take(&mut self.records);
        let written = records
            .iter()
            .try_for_each(|r| self.write_flow(r, Some(at)));
        self.records = records;
        written
    }

    /// Writes one flow line (for readers of formats that carry flows).
    pub fn flow(&mut self, r: &FlowRecord) -> io::Result<()> {
        self.write_flow(r, None)
    }

    /// One line of a Zeek log or an EVE file (its line end may be kept).
    pub fn log_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.summary.lines += 1;
        let n = self.summary.lines;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.records.clear();
        if is_eve(line) {
            match eve::parse_line(line, LOG_EXPORTER) {
                Ok(event) => {
                    if event.push_flows(&mut self.records) == 0 {
                        self.problem(Problem::NoFlowLine, None, format_args!(""));
                    }
                }
                Err(e) => self.problem(
                    Problem::MalformedLine,
                    None,
                    format_args!("line {n}: EVE event skipped: {e}"),
                ),
            }
        } else {
            match self.zeek.line(line, &mut self.records) {
                Ok(LineOutcome::Skipped) => {
                    self.problem(Problem::NoFlowLine, None, format_args!(""))
                }
                Ok(LineOutcome::Header | LineOutcome::Flows(_)) => {}
                Err(e) => self.problem(
                    Problem::MalformedLine,
                    None,
                    format_args!("line {n}: Zeek line skipped: {e}"),
                ),
            }
        }
        let records = std::mem::take(&mut self.records);
        let written = records.iter().try_for_each(|r| self.write_flow(r, None));
        self.records = records;
        written
    }

    /// A log line longer than `limit` bytes, skipped without being read.
    fn long_line(&mut self, len: u64, limit: usize) {
        self.summary.lines += 1;
        let n = self.summary.lines;
        self.problem(
            Problem::MalformedLine,
            None,
            format_args!("line {n}: {len} bytes, over the {limit}-byte line limit, skipped"),
        );
    }

    fn write_flow(&mut self, r: &FlowRecord, at: Option<&At>) -> io::Result<()> {
        let (start, c1) = rfc3339_ms(r.start_ms);
        let (end, c2) = rfc3339_ms(r.end_ms);
        if c1 || c2 {
            self.problem(
                Problem::TimeClamped,
                at,
                format_args!(
                    "flow time past year 9999 (start {} ms, end {} ms): written as {end}",
                    r.start_ms, r.end_ms
                ),
            );
        }
        let line = FlowLine {
            start: &start,
            end: &end,
            src_addr: r.src_addr,
            dst_addr: r.dst_addr,
            src_port: r.src_port,
            dst_port: r.dst_port,
            protocol: r.protocol,
            bytes: r.bytes,
            packets: r.packets,
            tcp_flags: r.tcp_flags,
            in_if: r.in_if,
            out_if: r.out_if,
            sampling_rate: r.sampling_rate,
            exporter: r.exporter,
        };
        serde_json::to_writer(&mut *self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.summary.flows += 1;
        Ok(())
    }

    /// Writes the summary lines to stderr and returns the summary.
    pub fn finish(mut self) -> Summary {
        self.summary.exporters = self.exporters.len();
        let s = self.summary;
        for p in Problem::ALL {
            let n = s.count(p);
            if n > 0 {
                let _ = writeln!(self.err, "summary: {}: {n}", p.label());
            }
        }
        let more = if s.exporters >= MAX_COUNTED_EXPORTERS {
            "+"
        } else {
            ""
        };
        let _ = match s.format {
            Some(f) if f.is_lines() => writeln!(
                self.err,
                "summary: {} flows from {} lines ({})",
                s.flows,
                s.lines,
                f.label()
            ),
            _ => writeln!(
                self.err,
                "summary: {} flows from {} UDP datagrams of {}{more} exporters in {} frames",
                s.flows, s.datagrams, s.exporters, s.frames
            ),
        };
        s
    }
}

/// Why a capture could not be read further, in words.
fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the file ends inside a header or record (or a record is over 8 MB)".to_owned()
        }
        PcapError::IoError(io) => format!("read error: {io}"),
        other => other.to_string(),
    }
}

/// What a pcapng interface says about its packets.
struct Interface {
    linktype: u32,
    link: Option<Link>,
    /// if_tsresol: 10^-n s, or 2^-n s with the high bit set; default 6.
    tsresol: u8,
    /// if_tsoffset, seconds.
    tsoffset: u64,
}

impl Interface {
    fn new(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let linktype = u32::from(idb.linktype);
        let mut i = Interface {
            linktype,
            link: Link::from_linktype(linktype),
            tsresol: 6,
            tsoffset: 0,
        };
        for o in &idb.options {
            match o {
                InterfaceDescriptionOption::IfTsResol(r) => i.tsresol = *r,
                InterfaceDescriptionOption::IfTsOffset(s) => i.tsoffset = *s,
                _ => {}
            }
        }
        i
    }

    /// A packet's timestamp (in this interface's units) in ms.
    fn ms(&self, units: u64) -> u64 {
        ts_units_to_ms(units, self.tsresol, self.tsoffset)
    }
}

/// pcapng timestamp units to ms since the epoch (saturating).
fn ts_units_to_ms(units: u64, tsresol: u8, tsoffset: u64) -> u64 {
    let n = u32::from(tsresol & 0x7f);
    let per_second = if tsresol & 0x80 == 0 {
        10u128.checked_pow(n)
    } else {
        2u128.checked_pow(n)
    };
    let ms = per_second.map_or(0, |p| u128::from(units) * 1000 / p);
    u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .saturating_add(tsoffset.saturating_mul(1000))
}

fn read_pcap(path: &Path, input: impl Read, s: &mut Session<'_>) -> Result<(), DecodeFileError> {
    let mut reader = PcapReader::new(input).map_err(|e| DecodeFileError::BadHeader {
        path: path.to_owned(),
        format: "pcap",
        reason: describe(&e),
    })?;
    let header = reader.header();
    let linktype = u32::from(header.datalink);
    let link = Link::from_linktype(linktype).ok_or_else(|| DecodeFileError::UnsupportedLink {
        path: path.to_owned(),
        link: linktype,
    })?;
    let (frac_per_second, frac_per_ms) = match header.ts_resolution {
        TsResolution::MicroSecond => (1_000_000, 1_000),
        TsResolution::NanoSecond => (1_000_000_000, 1_000_000),
    };
    // Raw records: pcap-file's checked ones refuse records longer than the
    // header's snap length, which real captures contain.
    while let Some(next) = reader.next_raw_packet() {
        let p = match next {
            Ok(p) => p,
            Err(e) => {
                let frames = s.summary.frames;
                s.cut_short(frames, &describe(&e));
                break;
            }
        };
        if p.ts_frac >= frac_per_second {
            s.summary.frames += 1;
            let frame = s.summary.frames;
            s.problem(
                Problem::MalformedFrame,
                None,
                format_args!(
                    "frame {frame}: timestamp fraction {} out of range, skipped",
                    p.ts_frac
                ),
            );
            continue;
        }
        let ts_ms = u64::from(p.ts_sec) * 1000 + u64::from(p.ts_frac / frac_per_ms);
        s.frame(link, ts_ms, &p.data, p.orig_len)
            .map_err(DecodeFileError::Output)?;
    }
    Ok(())
}

fn read_pcapng(path: &Path, input: impl Read, s: &mut Session<'_>) -> Result<(), DecodeFileError> {
    let mut reader = PcapNgReader::new(input).map_err(|e| DecodeFileError::BadHeader {
        path: path.to_owned(),
        format: "pcapng",
        reason: describe(&e),
    })?;
    let mut interfaces: Vec<Interface> = Vec::new();
    // Simple packet blocks carry no time: they take the previous packet's.
    let mut last_ms = 0;
    while let Some(next) = reader.next_block() {
        let block = match next {
            Ok(b) => b,
            Err(e) => {
                let frames = s.summary.frames;
                s.cut_short(frames, &describe(&e));
                break;
            }
        };
        let (interface_id, units, orig_len, data) = match &block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(Interface::new(idb));
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id,
                // pcap-file stores the raw 64-bit count as nanoseconds
                // whatever the interface's resolution; take the count back.
                Some(u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX)),
                epb.original_len,
                &epb.data[..],
            ),
            Block::Packet(pb) => (
                u32::from(pb.interface_id),
                Some(pb.timestamp),
                pb.original_len,
                &pb.data[..],
            ),
            Block::SimplePacket(spb) => {
                // The block body is padded to 4 bytes.
                let len = spb.data.len().min(spb.original_len as usize);
                (0, None, spb.original_len, &spb.data[..len])
            }
            _ => continue,
        };
        let Some(iface) = interfaces.get(interface_id as usize) else {
            s.summary.frames += 1;
            let frame = s.summary.frames;
            s.problem(
                Problem::MalformedFrame,
                None,
                format_args!(
                    "frame {frame}: no interface {interface_id} described before it, skipped"
                ),
            );
            continue;
        };
        let ts_ms = units.map_or(last_ms, |u| iface.ms(u));
        last_ms = ts_ms;
        let Some(link) = iface.link else {
            s.summary.frames += 1;
            let at = At {
                frame: s.summary.frames,
                ts_ms,
                from: None,
            };
            let linktype = iface.linktype;
            s.problem(
                Problem::UnsupportedLink,
                Some(&at),
                format_args!("link type {linktype} is not supported, skipped"),
            );
            continue;
        };
        s.frame(link, ts_ms, data, orig_len)
            .map_err(DecodeFileError::Output)?;
    }
    Ok(())
}

/// An EVE event rather than a Zeek record: a JSON object with an
/// `"event_type"` key (the exact quoted key: an escaped `\"event_type\"`
/// inside a string value does not match).
fn is_eve(line: &[u8]) -> bool {
    let starts_object = line
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    starts_object && line.windows(12).any(|w| w == b"\"event_type\"")
}

/// Reads a log line by line into the session. Lines over `max` bytes (line
/// end included) are counted as malformed and skipped without being kept,
/// so the buffer never grows past `max`.
fn read_lines(input: impl Read, max: usize, s: &mut Session<'_>) -> Result<(), DecodeFileError> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut line: Vec<u8> = Vec::new();
    // Bytes of the current line so far, once it is over `max`.
    let mut over: Option<u64> = None;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let lines = s.summary.lines;
                s.problem(
                    Problem::CutShort,
                    None,
                    format_args!("log unreadable after line {lines}, stopped there: {e}"),
                );
                break;
            }
        };
        let end = buf.iter().position(|b| *b == b'\n');
        let chunk = match end {
            Some(i) => buf.get(..=i).unwrap_or(buf),
            None => buf,
        };
        let used = chunk.len();
        if used == 0 {
            // End of file: a last line without a line end.
            match over {
                Some(n) => s.long_line(n, max),
                None if !line.is_empty() => s.log_line(&line).map_err(DecodeFileError::Output)?,
                None => {}
            }
            break;
        }
        match over {
            Some(n) => over = Some(n + used as u64),
            None if line.len() + used > max => {
                over = Some((line.len() + used) as u64);
                line = Vec::new();
            }
            None => line.extend_from_slice(chunk),
        }
        reader.consume(used);
        if end.is_some() {
            match over.take() {
                Some(n) => s.long_line(n, max),
                None => s.log_line(&line).map_err(DecodeFileError::Output)?,
            }
            line.clear();
        }
    }
    Ok(())
}

/// Decodes `path`, writing flows to `out` and warnings to `err`.
pub fn decode_file(
    path: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, DecodeFileError> {
    let read_err = |source| DecodeFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(DecodeFileError::Directory {
            path: path.to_owned(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DecodeFileError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    // Never read past the limit, even if the file grows meanwhile.
    let mut head = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let input = io::Cursor::new(head.clone()).chain(file.take(MAX_FILE_BYTES - 8));
    let format = detect(&head).ok_or_else(|| {
        if head.is_empty() {
            DecodeFileError::Empty {
                path: path.to_owned(),
            }
        } else {
            DecodeFileError::UnknownFormat {
                path: path.to_owned(),
                head: head.iter().map(|b| format!("{b:02x}")).collect(),
            }
        }
    })?;
    let mut session = Session::new(out, err);
    session.summary.format = Some(format);
    match format {
        Format::Pcap => read_pcap(path, input, &mut session)?,
        Format::PcapNg => read_pcapng(path, input, &mut session)?,
        Format::ZeekTsv => read_lines(input, zeek::MAX_LINE_LEN, &mut session)?,
        Format::JsonLines => read_lines(input, eve::MAX_LINE_LEN, &mut session)?,
    }
    session.out.flush().map_err(DecodeFileError::Output)?;
    Ok(session.finish())
}

/// The `decode` command: returns the process exit code (0 when at least
/// one flow was decoded, 1 otherwise, with the reason on stderr).
pub fn run(path: &Path) -> i32 {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    let result = decode_file(path, &mut out, &mut err);
    let flushed = out.flush();
    match (result, flushed) {
        // The reader of our output went away (`| head`): flows were
        // written, since only flows are.
        (Err(DecodeFileError::Output(e)), _) | (Ok(_), Err(e))
            if e.kind() == io::ErrorKind::BrokenPipe =>
        {
            0
        }
        (Err(e), _) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
        (Ok(_), Err(e)) => {
            let _ = writeln!(err, "error: writing the flows: {e}");
            1
        }
        (Ok(s), Ok(())) if s.flows == 0 => {
            let _ = match s.format {
                Some(f) if f.is_lines() => writeln!(
                    err,
                    "error: no flows decoded from {} ({} lines): see the warnings and summary above",
                    path.display(),
                    s.lines
                ),
                _ => writeln!(
                    err,
                    "error: no flows decoded from {} ({} frames, {} UDP datagrams): see the warnings above",
                    path.display(),
                    s.frames,
                    s.datagrams
                ),
            };
            1
        }
        (Ok(_), Ok(())) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_pcap_magics() {
        for m in [
            [0xa1, 0xb2, 0xc3, 0xd4],
            [0xd4, 0xc3, 0xb2, 0xa1],
            [0xa1, 0xb2, 0x3c, 0x4d],
            [0x4d, 0x3c, 0xb2, 0xa1],
        ] {
            assert_eq!(detect(&m), Some(Format::Pcap));
        }
        assert_eq!(
            detect(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]),
            Some(Format::PcapNg)
        );
        assert_eq!(detect(b"#separator \\x09"), Some(Format::ZeekTsv));
        assert_eq!(detect(b"### BTest"), Some(Format::ZeekTsv));
        assert_eq!(detect(b"{\"timestamp\""), Some(Format::JsonLines));
        assert_eq!(detect(b"{"), Some(Format::JsonLines));
        assert_eq!(detect(b"ts\tuid"), None);
        assert_eq!(detect(&[0xa1, 0xb2, 0xc3]), None);
        assert_eq!(detect(&[]), None);
    }

    #[test]
    fn formats_times_with_milliseconds() {
        assert_eq!(rfc3339_ms(0).0, "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms(1_469_109_102_254),
            ("2016-07-21T13:51:42.254Z".to_owned(), false)
        );
        assert_eq!(
            rfc3339_ms(MAX_RFC3339_MS),
            ("9999-12-31T23:59:59.999Z".to_owned(), false)
        );
        assert_eq!(
            rfc3339_ms(u64::MAX),
            ("9999-12-31T23:59:59.999Z".to_owned(), true)
        );
    }

    #[test]
    fn pcapng_resolutions() {
        // Default microseconds, nanoseconds, 2^-10 s, and an offset.
        assert_eq!(
            ts_units_to_ms(1_700_000_000_123_456, 6, 0),
            1_700_000_000_123
        );
        assert_eq!(
            ts_units_to_ms(1_700_000_000_123_456_789, 9, 0),
            1_700_000_000_123
        );
        assert_eq!(ts_units_to_ms(3 * 1024 + 512, 0x80 | 10, 0), 3_500);
        assert_eq!(ts_units_to_ms(1_500, 3, 10), 11_500);
        // Absurd resolutions do not overflow.
        assert_eq!(ts_units_to_ms(u64::MAX, 127, 0), 0);
        assert_eq!(ts_units_to_ms(u64::MAX, 0, u64::MAX), u64::MAX);
    }

    #[test]
    fn problems_index_their_counters() {
        for (i, p) in Problem::ALL.iter().enumerate() {
            assert_eq!(p.index(), i, "{p:?}");
        }
    }

    #[test]
    fn link_types() {
        assert_eq!(Link::from_linktype(1), Some(Link::Ethernet));
        assert_eq!(Link::from_linktype(101), Some(Link::RawIp));
        assert_eq!(Link::from_linktype(113), Some(Link::LinuxSll));
        assert_eq!(Link::from_linktype(0), Some(Link::Null));
        assert_eq!(Link::from_linktype(105), None); // 802.11
    }

    #[test]
    fn loopback_frames_reach_the_decoder() {
        let datagram = [
            0u8, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut ip = Vec::new();
        etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .udp(40000, 2055)
            .write(&mut ip, &datagram)
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut s = Session::new(&mut out, &mut err);
        for family in [2u32.to_le_bytes(), 2u32.to_be_bytes(), 17u32.to_le_bytes()] {
            let frame = [&family[..], &ip].concat();
            s.frame(Link::Null, 0, &frame, frame.len() as u32).unwrap();
        }
        let sum = s.finish();
        // A v5 header with no records: two datagrams, no flows, no warning.
        assert_eq!((sum.frames, sum.datagrams, sum.flows), (3, 2, 0));
        assert_eq!(sum.count(Problem::NotUdp), 1);
        assert_eq!(sum.exporters, 1);
    }
}
