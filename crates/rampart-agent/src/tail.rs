//! Tailing Zeek `conn.log` and Suricata EVE files through rotation.
//!
//! A [`Tailer`] follows one path. It reads complete lines only, hands each to
//! its [`LineParser`], and reports a [`TailPos`] (file identity and the
//! offset after the last complete line) with every chunk of flows. The
//! pipeline persists a position in `tails.json` only after the flows read
//! before it are sealed into the outbox, so:
//! - after a clean stop nothing is read twice or skipped: the tailer stops
//!   at a line boundary and the pipeline ships what it holds before the
//!   positions are saved;
//! - after a crash, lines whose batch was not yet in the outbox are read
//!   again (at-least-once), and nothing is skipped.
//!
//! Where reading starts:
//! - first run (no saved position): at the end of the file, after its
//!   header (`#` lines are fed to the parser first, since a Zeek TSV log
//!   cannot be read without its `#fields` line). A partial last line is
//!   skipped up to its newline;
//! - restart: at the saved offset if the file at the path is the same one
//!   (same device and inode, and the same first bytes, which catches inode
//!   reuse). If the path now holds another file, the old one is looked for
//!   in the same directory by inode (it was rotated while the agent was
//!   down) and read to its end first; if it is gone, reading starts at the
//!   beginning of the new file, and the loss is logged;
//! - a file that appears after the agent started is read from its start.
//!
//! Rotation is checked each time the tailer reaches the end of its file:
//! - rename (the path now names another inode): the old file is drained to
//!   its end, then the new one is read from its start with a fresh parser;
//! - copytruncate (same inode, but shorter than what was read, or its first
//!   bytes changed): reading restarts at offset 0. Lines written between
//!   the copy and the truncation are lost; that is inherent to copytruncate.
//!
//! Lines longer than the parser's limit are skipped up to their newline and
//! counted, without being buffered.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rampart_flow::FlowRecord;
use rampart_proto::alerts::IdsAlert;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::StateDir;
use crate::AgentError;

/// Bytes at the start of a file whose hash identifies it beyond its inode.
pub const HEAD_BYTES: u64 = 1024;
/// How far into a file header (`#`) lines are looked for.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Size of one read.
const READ_BYTES: usize = 64 * 1024;
/// Directory entries looked at when searching for a rotated file.
const MAX_DIR_ENTRIES: usize = 10_000;

/// Where a tailed file was read up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPos {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of complete lines consumed.
    pub offset: u64,
    /// How many leading bytes `head_hash` covers (at most [`HEAD_BYTES`]).
    pub head_len: u64,
    /// First 8 bytes of the SHA-256 of the first `head_len` bytes, hex.
    pub head_hash: String,
}

/// Turns one line into flows. The line includes its `\n`.
pub trait LineParser: Send {
    /// Appends the line's flows to `out`; an error is counted and the line
    /// skipped.
    fn line(&mut self, line: &[u8], out: &mut Vec<FlowRecord>) -> Result<(), String>;
    /// A new file starts: forget any header state.
    fn reset(&mut self);
    /// Longer lines are skipped without being read into memory.
    fn max_line(&self) -> usize;
    /// IDS alerts read since the last call (EVE only), to ship with the
    /// flows of the same lines so both are covered by one checkpoint.
    fn take_alerts(&mut self) -> Vec<IdsAlert> {
        Vec::new()
    }
}

/// The exporter address of flows read from local files: there is no
/// exporter, the sensor writes the file on this host.
pub const FILE_EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Zeek `conn.log`, TSV or JSON.
pub struct ZeekParser(rampart_flow::zeek::ZeekReader);

impl ZeekParser {
    pub fn new() -> Self {
        ZeekParser(rampart_flow::zeek::ZeekReader::new(FILE_EXPORTER))
    }
}

impl Default for ZeekParser {
    fn default() -> Self {
        Self::new()
    }
}

impl LineParser for ZeekParser {
    fn line(&mut self, line: &[u8], out: &mut Vec<FlowRecord>) -> Result<(), String> {
        self.0
            .line(line, out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        self.0.reset();
    }

    fn max_line(&self) -> usize {
        rampart_flow::zeek::MAX_LINE_LEN + 2
    }
}

/// Suricata EVE JSON: `flow` and `netflow` events become flows, `alert`
/// and `anomaly` events IDS alerts for the portal's alarms; other events are
/// passed over.
#[derive(Default)]
pub struct EveParser {
    alerts: Vec<IdsAlert>,
}

impl LineParser for EveParser {
    fn line(&mut self, line: &[u8], out: &mut Vec<FlowRecord>) -> Result<(), String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match rampart_flow::eve::parse_line(line, FILE_EXPORTER).map_err(|e| e.to_string())? {
            rampart_flow::eve::EveEvent::Alert(a) => self.alerts.push(ids_alert(&a)),
            rampart_flow::eve::EveEvent::Anomaly(a) => self.alerts.push(ids_anomaly(&a)),
            ev => {
                ev.push_flows(out);
            }
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn max_line(&self) -> usize {
        rampart_flow::eve::MAX_LINE_LEN
    }

    fn take_alerts(&mut self) -> Vec<IdsAlert> {
        std::mem::take(&mut self.alerts)
    }
}

/// The wire form of a parsed EVE alert, text fields clipped to the wire
/// limit.
pub fn ids_alert(a: &rampart_flow::eve::Alert) -> IdsAlert {
    use rampart_proto::alerts::clip;
    IdsAlert {
        event_type: "alert".into(),
        timestamp_ms: a.timestamp_ms,
        src_addr: a.src_addr,
        dst_addr: a.dst_addr,
        src_port: a.src_port,
        dst_port: a.dst_port,
        protocol: a.protocol,
        gid: a.gid,
        signature_id: a.signature_id,
        rev: a.rev,
        signature: clip(&a.signature),
        category: clip(&a.category),
        severity: a.severity,
        action: clip(&a.action),
        flow_id: a.flow_id,
        app_proto: a.app_proto.as_deref().map(clip),
        in_iface: a.in_iface.as_deref().map(clip),
        anomaly: None,
    }
}

/// The wire form of a parsed EVE anomaly. It rides in the same batches as
/// alerts, so it takes the same masking and checkpointing; it has no rule,
/// so gid, sid and rev are 0, the event name stands in for the signature
/// (for an `unknown` anomaly, which has no name, its code) and the category
/// says what it is. Severity 0 is "none given": the portal ranks anomalies
/// itself.
pub fn ids_anomaly(a: &rampart_flow::eve::Anomaly) -> IdsAlert {
    use rampart_proto::alerts::{clip, AnomalyInfo};
    let signature = match a.code {
        Some(code) if a.event.is_empty() => format!("{} anomaly code {code}", a.kind),
        _ => a.event.clone(),
    };
    IdsAlert {
        event_type: "anomaly".into(),
        timestamp_ms: a.timestamp_ms,
        src_addr: a.src_addr,
        dst_addr: a.dst_addr,
        src_port: a.src_port,
        dst_port: a.dst_port,
        protocol: a.protocol,
        gid: 0,
        signature_id: 0,
        rev: 0,
        signature: clip(&signature),
        category: "anomaly".into(),
        severity: 0,
        action: String::new(),
        flow_id: a.flow_id,
        app_proto: a.app_proto.as_deref().map(clip),
        in_iface: a.in_iface.as_deref().map(clip),
        anomaly: Some(AnomalyInfo {
            kind: clip(&a.kind),
            event: clip(&a.event),
            layer: a.layer.as_deref().map(clip),
            code: a.code,
        }),
    }
}

/// Counters of one tailed file, shown in `status.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TailStatus {
    pub path: String,
    /// Offset of the next line to read in the current file.
    pub offset: u64,
    pub lines: u64,
    pub flows: u64,
    pub parse_errors: u64,
    /// Lines over the parser's limit, skipped.
    pub long_lines: u64,
    /// Unterminated lines dropped (a partial line at the end of a rotated
    /// file, or where the first run started).
    pub partial_lines: u64,
    pub rotations: u64,
    pub truncations: u64,
    /// The last parse or IO error.
    pub last_error: Option<String>,
}

struct Open {
    file: File,
    dev: u64,
    ino: u64,
}

/// Follows one file; see the module docs.
pub struct Tailer {
    path: PathBuf,
    parser: Box<dyn LineParser>,
    max_line: usize,
    file: Option<Open>,
    /// Saved position not yet acted on.
    resume: Option<TailPos>,
    first_attempt: bool,
    /// After the last complete line.
    offset: u64,
    /// Next byte to read.
    read_pos: u64,
    /// Bytes of an incomplete line, from `offset` to `read_pos`.
    pending: Vec<u8>,
    /// Inside a line being skipped; `true` in `skip_partial` when it is the
    /// partial line where the first run started, not an overlong one.
    skipping: bool,
    skip_partial: bool,
    head_len: u64,
    head_hash: String,
    buf: Vec<u8>,
    status: TailStatus,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn head_of(file: &File, len: u64) -> io::Result<(u64, String)> {
    let n = len.min(HEAD_BYTES);
    let mut b = vec![0u8; n as usize];
    file.read_exact_at(&mut b, 0)?;
    let digest = Sha256::digest(&b);
    let hex: String = digest.iter().take(8).map(|x| format!("{x:02x}")).collect();
    Ok((n, hex))
}

impl Tailer {
    /// A tailer of `path`, resuming from `saved` if the agent read it before.
    pub fn new(path: PathBuf, parser: Box<dyn LineParser>, saved: Option<TailPos>) -> Self {
        let max_line = parser.max_line();
        Tailer {
            status: TailStatus {
                path: path.display().to_string(),
                ..TailStatus::default()
            },
            path,
            parser,
            max_line,
            file: None,
            first_attempt: saved.is_none(),
            resume: saved,
            offset: 0,
            read_pos: 0,
            pending: Vec::new(),
            skipping: false,
            skip_partial: false,
            head_len: 0,
            head_hash: String::new(),
            buf: vec![0; READ_BYTES],
        }
    }

    pub fn status(&self) -> &TailStatus {
        &self.status
    }

    /// IDS alerts of the lines read since the last call.
    pub fn take_alerts(&mut self) -> Vec<IdsAlert> {
        self.parser.take_alerts()
    }

    /// Where the last complete line ends, in the file being read.
    pub fn checkpoint(&self) -> Option<TailPos> {
        self.file.as_ref().map(|f| TailPos {
            dev: f.dev,
            ino: f.ino,
            offset: self.offset,
            head_len: self.head_len,
            head_hash: self.head_hash.clone(),
        })
    }

    fn note_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        if self.status.last_error.as_deref() != Some(&msg) {
            tracing::warn!(path = %self.path.display(), error = %msg, "tailing");
        }
        self.status.last_error = Some(msg);
    }

    /// Reads what is new, up to about `budget` bytes, appending flows to
    /// `out`. Returns whether anything changed (bytes read, a rotation).
    pub fn poll(&mut self, out: &mut Vec<FlowRecord>, budget: usize) -> bool {
        if self.file.is_none() && !self.open_initial() {
            return false;
        }
        let n = self.read_available(out, budget);
        if n >= budget {
            return true;
        }
        let mut progressed = n > 0;
        let (dev, ino) = match &self.file {
            Some(f) => (f.dev, f.ino),
            None => return progressed,
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if file_id(&m) != (dev, ino) => {
                // Renamed away: the writer may have added to it since we
                // hit its end, so drain it before moving on.
                if self.read_available(out, budget) >= budget {
                    return true;
                }
                if !self.pending.is_empty() || (self.skipping && self.skip_partial) {
                    self.status.partial_lines += 1;
                }
                match File::open(&self.path).and_then(|f| f.metadata().map(|m| (f, m))) {
                    Ok((f, m)) => {
                        self.status.rotations += 1;
                        tracing::info!(path = %self.path.display(), "log rotated: reading the new file");
                        self.use_file(f, &m, 0);
                        self.parser.reset();
                        progressed = true;
                    }
                    Err(e) => self.note_error("opening the rotated file", &e),
                }
            }
            Ok(_) => {
                if self.truncated() {
                    self.status.truncations += 1;
                    tracing::info!(path = %self.path.display(), at = self.read_pos, "log truncated: reading it from the start");
                    self.offset = 0;
                    self.read_pos = 0;
                    self.pending.clear();
                    self.skipping = false;
                    self.head_len = 0;
                    self.head_hash.clear();
                    progressed = true;
                }
                self.extend_head();
            }
            // Gone for now (between rename and create): keep the old file.
            Err(_) => {}
        }
        progressed
    }

    /// Whether the open file is now shorter than what was read, or its
    /// first bytes changed (truncated and rewritten past our position).
    fn truncated(&mut self) -> bool {
        let Some(f) = &self.file else { return false };
        let len = match f.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return false,
        };
        if len < self.read_pos {
            return true;
        }
        if self.head_len == 0 {
            return false;
        }
        match head_of(&f.file, self.head_len) {
            Ok((n, h)) => n == self.head_len && h != self.head_hash,
            Err(_) => false,
        }
    }

    /// Widens the fingerprint while the file is shorter than [`HEAD_BYTES`].
    fn extend_head(&mut self) {
        let Some(f) = &self.file else { return };
        if self.head_len >= HEAD_BYTES {
            return;
        }
        let Ok(m) = f.file.metadata() else { return };
        if m.len() > self.head_len {
            if let Ok((n, h)) = head_of(&f.file, m.len()) {
                self.head_len = n;
                self.head_hash = h;
            }
        }
    }

    fn use_file(&mut self, file: File, m: &std::fs::Metadata, offset: u64) {
        let (dev, ino) = file_id(m);
        self.file = Some(Open { file, dev, ino });
        self.offset = offset;
        self.read_pos = offset;
        self.pending.clear();
        self.skipping = false;
        self.skip_partial = false;
        self.head_len = 0;
        self.head_hash.clear();
        self.extend_head();
    }

    /// Whether `file` is the one `pos` names and still holds its offset.
    fn matches(file: &File, m: &std::fs::Metadata, pos: &TailPos) -> bool {
        file_id(m) == (pos.dev, pos.ino)
            && m.len() >= pos.offset
            && m.len() >= pos.head_len
            && (pos.head_len == 0
                || head_of(file, pos.head_len).is_ok_and(|(_, h)| h == pos.head_hash))
    }

    /// Opens the file to read first; false if there is none yet.
    fn open_initial(&mut self) -> bool {
        let first = std::mem::replace(&mut self.first_attempt, false);
        let current = File::open(&self.path)
            .and_then(|f| f.metadata().map(|m| (f, m)))
            .ok();
        if let Some(pos) = self.resume.take() {
            if let Some((f, m)) = &current {
                if Self::matches(f, m, &pos) {
                    let f = match f.try_clone() {
                        Ok(f) => f,
                        Err(e) => {
                            self.note_error("reopening", &e);
                            self.resume = Some(pos);
                            return false;
                        }
                    };
                    self.use_file(f, m, pos.offset);
                    self.prime();
                    tracing::info!(path = %self.path.display(), offset = pos.offset, "resuming");
                    return true;
                }
            }
            if let Some((old, m, name)) = self.find_rotated(&pos) {
                tracing::info!(path = %self.path.display(), rotated_to = %name.display(), offset = pos.offset, "file was rotated while stopped: reading the rest of the old one first");
                self.use_file(old, &m, pos.offset);
                self.prime();
                return true;
            }
            if current.is_some() {
                tracing::warn!(path = %self.path.display(), offset = pos.offset, "the file read before the restart is gone or was truncated: reading the current one from its start");
            }
        }
        let Some((f, m)) = current else {
            return false;
        };
        if first {
            // First run: start at the end, after the header.
            let len = m.len();
            self.use_file(f, &m, len);
            self.prime();
            let mut last = [0u8; 1];
            let ends_mid_line = len > 0
                && self.file.as_ref().is_some_and(|o| {
                    o.file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
                });
            if ends_mid_line {
                self.skipping = true;
                self.skip_partial = true;
            }
            tracing::info!(path = %self.path.display(), offset = len, "tailing from the end");
        } else {
            self.use_file(f, &m, 0);
            tracing::info!(path = %self.path.display(), "tailing a new file from its start");
        }
        true
    }

    /// Looks in the directory for the file `pos` names (rotated away).
    fn find_rotated(&self, pos: &TailPos) -> Option<(File, std::fs::Metadata, PathBuf)> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        for entry in std::fs::read_dir(dir).ok()?.take(MAX_DIR_ENTRIES) {
            let Ok(entry) = entry else { continue };
            if entry.ino() != pos.ino {
                continue;
            }
            let p = entry.path();
            let Ok(f) = File::open(&p) else { continue };
            let Ok(m) = f.metadata() else { continue };
            if Self::matches(&f, &m, pos) {
                return Some((f, m, p));
            }
        }
        None
    }

    /// Feeds the header lines (`#...`) at the start of the file to the
    /// parser, up to the first data line or the current offset.
    fn prime(&mut self) {
        let Some(f) = &self.file else { return };
        let n = self.offset.min(MAX_HEADER_BYTES) as usize;
        if n == 0 {
            return;
        }
        let mut head = vec![0u8; n];
        if let Err(e) = f.file.read_exact_at(&mut head, 0) {
            self.note_error("reading the header", &e);
            return;
        }
        let mut sink = Vec::new();
        for line in head.split_inclusive(|b| *b == b'\n') {
            if line.first() != Some(&b'#') || line.last() != Some(&b'\n') {
                break;
            }
            // Header lines make no flows; errors are counted when the data
            // lines fail.
            let _ = self.parser.line(line, &mut sink);
        }
    }

    /// Reads from `read_pos` to the end of the file or `budget` bytes.
    fn read_available(&mut self, out: &mut Vec<FlowRecord>, budget: usize) -> usize {
        let mut buf = std::mem::take(&mut self.buf);
        let mut total = 0usize;
        while total < budget {
            let Some(f) = &self.file else { break };
            let want = buf.len().min(budget - total);
            let Some(dst) = buf.get_mut(..want) else {
                break;
            };
            match f.file.read_at(dst, self.read_pos) {
                Ok(0) => break,
                Ok(n) => {
                    let start = self.read_pos;
                    self.read_pos += n as u64;
                    total += n;
                    if let Some(data) = buf.get(..n) {
                        self.consume(data, start, out);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.note_error("reading", &e);
                    break;
                }
            }
        }
        self.buf = buf;
        self.status.offset = self.offset;
        total
    }

    /// Splits `data` (read at file offset `at`) into lines.
    fn consume(&mut self, data: &[u8], at: u64, out: &mut Vec<FlowRecord>) {
        let mut rest = data;
        let mut pos = at;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl + 1);
            rest = tail;
            pos += line.len() as u64;
            if self.skipping {
                if self.skip_partial {
                    self.status.partial_lines += 1;
                } else {
                    self.status.long_lines += 1;
                }
                self.skipping = false;
                self.skip_partial = false;
            } else if self.pending.len() + line.len() > self.max_line {
                self.status.long_lines += 1;
                self.pending.clear();
            } else if self.pending.is_empty() {
                self.handle(line, out);
            } else {
                let mut full = std::mem::take(&mut self.pending);
                full.extend_from_slice(line);
                self.handle(&full, out);
                full.clear();
                self.pending = full;
            }
            self.offset = pos;
        }
        if rest.is_empty() || self.skipping {
            return;
        }
        if self.pending.len() + rest.len() > self.max_line {
            self.pending.clear();
            self.skipping = true;
            self.skip_partial = false;
        } else {
            self.pending.extend_from_slice(rest);
        }
    }

    fn handle(&mut self, line: &[u8], out: &mut Vec<FlowRecord>) {
        self.status.lines += 1;
        let before = out.len();
        match self.parser.line(line, out) {
            Ok(()) => self.status.flows += (out.len() - before) as u64,
            Err(e) => {
                out.truncate(before);
                self.status.parse_errors += 1;
                if self.status.parse_errors <= 10 || self.status.parse_errors.is_multiple_of(10_000)
                {
                    tracing::debug!(path = %self.path.display(), error = %e, count = self.status.parse_errors, "line not read");
                }
                self.status.last_error = Some(e);
            }
        }
    }
}

/// Saved tail positions (`tails.json`), by source label.
pub struct TailOffsets {
    dir: StateDir,
    map: Mutex<BTreeMap<String, TailPos>>,
}

impl TailOffsets {
    pub fn load(dir: &StateDir) -> Result<Self, AgentError> {
        Ok(TailOffsets {
            dir: dir.clone(),
            map: Mutex::new(dir.tail_offsets()?),
        })
    }

    pub fn get(&self, label: &str) -> Option<TailPos> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .cloned()
    }

    /// Records positions whose lines are now in the outbox, durably.
    pub fn commit(&self, updates: &BTreeMap<String, TailPos>) -> Result<(), AgentError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for (k, v) in updates {
            if map.get(k) != Some(v) {
                map.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        if changed {
            self.dir.save_tail_offsets(&map)?;
        }
        Ok(())
    }
}
