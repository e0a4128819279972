//! The flow pipeline: collectors → defaults → rate limit → data controls →
//! batcher → codec → sealed batch in the outbox.
//!
//! Threads, none of them on the async runtime (decoding, masking, encoding
//! and sealing are CPU work, and the outbox fsyncs):
//! - one per `--netflow-listen` socket ([`crate::netflow`]) and one per
//!   tailed file ([`crate::tail`]), each sending [`Chunk`]s over one bounded
//!   queue. UDP collectors drop (and count) a chunk when the queue is full;
//!   tailers wait, since their data waits safely in the file;
//! - the pipeline: fills in the default sampling rate, applies the
//!   per-exporter rate limit ([`crate::ratelimit`]), and cuts batches of up
//!   to `batch_max_records` flows or `batch_max_age`, whichever comes
//!   first. It masks each batch under one [`Masker`] (one version of the
//!   data controls) and encodes it with `rampart_flow::codec`;
//! - the shipper: seals each batch and pushes it to the outbox with
//!   [`Priority::Data`] (the outbox's own policy evicts the oldest data
//!   batches when full), then saves the tail positions the batch covered.
//!
//! [`FlowCollectors::stop`] stops the collectors, and the pipeline ships
//! what it holds before it exits, so a clean stop loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rampart_flow::{codec, FlowFlags, FlowRecord};
use rampart_proto::alerts::IdsAlert;
use rampart_proto::batch::Priority;
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, StateDir};
use crate::masking::Controls;
use crate::outbox::Outbox;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::tail::{EveParser, LineParser, TailOffsets, TailPos, TailStatus, Tailer, ZeekParser};
use crate::AgentError;

/// The batch kind of flow uploads.
pub const BATCH_KIND: &str = "flows";
/// Exporters (and files) tracked for rate limits and counters.
pub const MAX_EXPORTERS: usize = 4096;
/// Chunks queued between the collectors and the pipeline.
const QUEUE_CHUNKS: usize = 64;
/// Batches queued between the pipeline and the shipper.
const SHIP_QUEUE: usize = 2;
/// Bytes a tailer reads per poll before it hands over a chunk.
const TAIL_BUDGET: usize = 1024 * 1024;

/// What to collect and how; from `rampart-agent run`'s flags.
#[derive(Clone, Debug)]
pub struct FlowOptions {
    pub netflow_listen: Vec<SocketAddr>,
    pub zeek_conn: Vec<PathBuf>,
    pub eve: Vec<PathBuf>,
    /// Given to flows whose exporter announced no sampling rate (recorded
    /// with [`FlowFlags::SAMPLING_ASSUMED`]).
    pub default_sampling_rate: u32,
    /// Flows per second per exporter before resampling; 0 = no limit.
    pub max_flows_per_exporter: u32,
    pub batch_max_records: usize,
    pub batch_max_age: Duration,
    /// How often tailers look for new lines when idle.
    pub tail_poll: Duration,
    /// `SO_RCVBUF` asked for each UDP socket.
    pub rcvbuf_bytes: usize,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            netflow_listen: Vec::new(),
            zeek_conn: Vec::new(),
            eve: Vec::new(),
            default_sampling_rate: 1,
            max_flows_per_exporter: 100_000,
            batch_max_records: 10_000,
            batch_max_age: Duration::from_secs(1),
            tail_poll: Duration::from_millis(250),
            rcvbuf_bytes: crate::netflow::DEFAULT_RCVBUF,
        }
    }
}

impl FlowOptions {
    /// Whether any collector is configured.
    pub fn is_enabled(&self) -> bool {
        !(self.netflow_listen.is_empty() && self.zeek_conn.is_empty() && self.eve.is_empty())
    }
}

/// Where flows came from, for rate limits and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A NetFlow/IPFIX exporter, by source address.
    Exporter(IpAddr),
    /// A tailed file, by index among the configured files.
    File(u16),
}

/// Flows handed from a collector to the pipeline.
#[derive(Debug)]
pub struct Chunk {
    /// The tailed file they were read from; `None` for UDP, where each
    /// record's `exporter` is its origin.
    pub file: Option<u16>,
    /// When the collector received them, ms since the epoch (the rate
    /// limit's clock).
    pub received_ms: u64,
    pub records: Vec<FlowRecord>,
    /// IDS alerts read from the same lines (EVE files only).
    pub alerts: Vec<IdsAlert>,
    /// For a file: where its last complete line ends.
    pub checkpoint: Option<TailPos>,
}

/// Counters of one exporter (or tailed file), shown in `status.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExporterStatus {
    /// Flows received (before the rate limit).
    pub flows: u64,
    /// UDP datagrams received.
    pub datagrams: u64,
    /// Datagrams refused, plus sets and templates skipped as malformed.
    pub errors: u64,
    /// Data sets skipped because their template was not (yet) known.
    pub missing_templates: u64,
    /// Flows given the default sampling rate.
    pub sampling_assumed: u64,
    /// Flows kept by the rate limit with `resample > 1`.
    pub resampled: u64,
    /// Flows left out by the rate limit (the resampled ones stand for them).
    pub rate_limited: u64,
    /// Flows lost: the pipeline was behind, or the outbox refused them.
    pub dropped: u64,
    /// Unix seconds of the last update.
    pub last_seen: i64,
}

impl ExporterStatus {
    fn add(&mut self, d: &ExporterStatus) {
        self.flows += d.flows;
        self.datagrams += d.datagrams;
        self.errors += d.errors;
        self.missing_templates += d.missing_templates;
        self.sampling_assumed += d.sampling_assumed;
        self.resampled += d.resampled;
        self.rate_limited += d.rate_limited;
        self.dropped += d.dropped;
    }
}

/// Flow collection state for `status.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowStatus {
    /// By exporter address, or `zeek:PATH` / `eve:PATH` for files.
    pub exporters: BTreeMap<String, ExporterStatus>,
    pub files: BTreeMap<String, TailStatus>,
    pub listening: Vec<String>,
    pub batches_shipped: u64,
    pub flows_shipped: u64,
    /// Batches the outbox refused (they would have evicted more important
    /// data) or that failed to seal or store.
    pub batches_dropped: u64,
    /// Older batches the outbox evicted to make room for flows.
    pub batches_evicted: u64,
    /// Flows not shipped because the data controls could not be read.
    pub flows_blocked: u64,
    /// IDS alerts queued in the outbox, dropped (outbox full or failure),
    /// and not shipped because the data controls could not be read.
    pub alerts_shipped: u64,
    pub alerts_dropped: u64,
    pub alerts_blocked: u64,
    pub controls_version: u64,
    /// Why nothing is shipped, when the controls could not be read.
    pub controls_blocked: Option<String>,
    pub pseudonym_key_id: Option<String>,
    /// Pseudonyms are asked for but the key is not here yet: addresses are
    /// being dropped.
    pub waiting_for_pseudonym_key: bool,
}

/// Shared counters, updated by every flow thread.
#[derive(Default)]
pub struct FlowStats {
    labels: Vec<String>,
    inner: Mutex<FlowStatus>,
}

impl FlowStats {
    fn new(labels: Vec<String>, listening: Vec<String>) -> Self {
        FlowStats {
            labels,
            inner: Mutex::new(FlowStatus {
                listening,
                ..FlowStatus::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlowStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self, o: Origin) -> String {
        match o {
            Origin::Exporter(a) => a.to_string(),
            Origin::File(i) => self
                .labels
                .get(usize::from(i))
                .cloned()
                .unwrap_or_else(|| format!("file:{i}")),
        }
    }

    /// Adds per-origin deltas; keeps at most [`MAX_EXPORTERS`] entries,
    /// forgetting the longest idle.
    pub(crate) fn merge(&self, deltas: impl IntoIterator<Item = (Origin, ExporterStatus)>) {
        let now = crate::client::time_now();
        let named: Vec<_> = deltas.into_iter().map(|(o, d)| (self.name(o), d)).collect();
        let mut s = self.lock();
        for (name, d) in named {
            let e = s.exporters.entry(name).or_default();
            e.add(&d);
            e.last_seen = now;
        }
        while s.exporters.len() > MAX_EXPORTERS {
            let idle = s
                .exporters
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => s.exporters.remove(&k),
                None => break,
            };
        }
    }

    fn set_file(&self, label: &str, t: &TailStatus) {
        let mut s = self.lock();
        if s.files.get(label) != Some(t) {
            s.files.insert(label.to_string(), t.clone());
        }
    }

    /// A copy of the counters, with the data controls in force.
    pub fn snapshot(&self, controls: &Controls) -> FlowStatus {
        let mut s = self.lock().clone();
        let m = controls.current();
        s.controls_version = m.version();
        s.controls_blocked = m.blocked_reason().map(str::to_string);
        s.pseudonym_key_id = m.key_id().map(str::to_string);
        s.waiting_for_pseudonym_key = m.waiting_for_key();
        s
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A batch on its way to the outbox.
struct Job {
    plaintext: Vec<u8>,
    items: u32,
    origins: Vec<(Origin, u32)>,
    /// Masked IDS alerts, shipped as their own batch.
    alerts: Vec<IdsAlert>,
    /// Tail positions to save once the batch is in the outbox.
    checkpoints: BTreeMap<String, TailPos>,
}

/// Seals batches into the outbox; what [`FlowCollectors`] ships to.
pub struct Shipper {
    pub id: Identity,
    pub outbox: Arc<Outbox>,
    /// Called after each stored batch (wakes the uploader).
    pub on_stored: Arc<dyn Fn() + Send + Sync>,
}

/// The running flow threads.
pub struct FlowCollectors {
    stop: Arc<AtomicBool>,
    collectors: Vec<JoinHandle<()>>,
    pipeline: Option<JoinHandle<()>>,
    shipper: Option<JoinHandle<()>>,
    tx: Option<SyncSender<Chunk>>,
    stats: Arc<FlowStats>,
    controls: Arc<Controls>,
    local_addrs: Vec<SocketAddr>,
}

impl FlowCollectors {
    /// Binds the UDP sockets, opens the tailed files and starts every
    /// thread. Fails (starting nothing) if a socket cannot be bound.
    pub fn start(
        dir: &StateDir,
        shipper: Shipper,
        controls: Arc<Controls>,
        opts: FlowOptions,
    ) -> Result<Self, AgentError> {
        let mut files: Vec<(String, PathBuf, Box<dyn LineParser>)> = Vec::new();
        for p in &opts.zeek_conn {
            files.push((
                format!("zeek:{}", p.display()),
                p.clone(),
                Box::new(ZeekParser::new()),
            ));
        }
        for p in &opts.eve {
            files.push((
                format!("eve:{}", p.display()),
                p.clone(),
                Box::new(EveParser::default()),
            ));
        }
        if files.len() > usize::from(u16::MAX) {
            return Err(AgentError::State(
                "too many tailed files: at most 65535".into(),
            ));
        }
        let mut sockets = Vec::new();
        for addr in &opts.netflow_listen {
            let s = crate::netflow::bind(*addr, opts.rcvbuf_bytes).map_err(|e| {
                AgentError::State(format!(
                    "cannot listen for flows on {addr}: {e}: check the address and that no other collector uses the port"
                ))
            })?;
            sockets.push(s);
        }
        let local_addrs: Vec<SocketAddr> =
            sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        let labels: Vec<String> = files.iter().map(|(l, _, _)| l.clone()).collect();
        let stats = Arc::new(FlowStats::new(
            labels.clone(),
            local_addrs.iter().map(|a| a.to_string()).collect(),
        ));
        let offsets = Arc::new(TailOffsets::load(dir)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<Chunk>(QUEUE_CHUNKS);
        let (ship_tx, ship_rx) = sync_channel::<Job>(SHIP_QUEUE);

        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| AgentError::State(format!("cannot start a flow thread: {e}")))
        };

        let shipper_thread = {
            let stats = stats.clone();
            let offsets = offsets.clone();
            spawn(
                "flow-ship".into(),
                Box::new(move || ship_loop(ship_rx, shipper, stats, offsets)),
            )?
        };
        let pipeline_thread = {
            let p = Pipeline {
                default_rate: opts.default_sampling_rate.max(1),
                max_records: opts.batch_max_records.clamp(1, 1_000_000),
                max_age: opts.batch_max_age,
                limiter: RateLimiter::new(opts.max_flows_per_exporter, MAX_EXPORTERS),
                controls: controls.clone(),
                stats: stats.clone(),
                labels,
                batch: Vec::new(),
                alerts: Vec::new(),
                batch_origins: HashMap::new(),
                batch_started: None,
                checkpoints: BTreeMap::new(),
                deltas: HashMap::new(),
                ship: ship_tx,
            };
            spawn("flow-pipeline".into(), Box::new(move || p.run(rx)))?
        };

        let mut collectors = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let (tx, stop, stats) = (tx.clone(), stop.clone(), stats.clone());
            collectors.push(spawn(
                format!("netflow-{i}"),
                Box::new(move || crate::netflow::run(socket, tx, stop, stats)),
            )?);
        }
        for (i, (label, path, parser)) in files.into_iter().enumerate() {
            let saved = offsets.get(&label);
            let tailer = Tailer::new(path, parser, saved);
            let (tx, stop, stats) = (tx.clone(), stop.clone(), stats.clone());
            let poll = opts.tail_poll;
            collectors.push(spawn(
                format!("tail-{i}"),
                Box::new(move || tail_loop(tailer, i as u16, label, tx, stop, stats, poll)),
            )?);
        }
        Ok(FlowCollectors {
            stop,
            collectors,
            pipeline: Some(pipeline_thread),
            shipper: Some(shipper_thread),
            tx: Some(tx),
            stats,
            controls,
            local_addrs,
        })
    }

    /// The bound UDP addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<FlowStats> {
        self.stats.clone()
    }

    /// Counters, with the data controls in force.
    pub fn status(&self) -> FlowStatus {
        self.stats.snapshot(&self.controls)
    }

    /// Hands flows to the pipeline as a collector would (waits for room).
    pub fn submit(&self, chunk: Chunk) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok())
    }

    /// Stops the collectors, ships what the pipeline holds, saves the tail
    /// positions, and returns when all threads are done. Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.collectors.drain(..) {
            let _ = t.join();
        }
        self.tx = None;
        if let Some(t) = self.pipeline.take() {
            let _ = t.join();
        }
        if let Some(t) = self.shipper.take() {
            let _ = t.join();
        }
    }
}

fn tail_loop(
    mut tailer: Tailer,
    index: u16,
    label: String,
    tx: SyncSender<Chunk>,
    stop: Arc<AtomicBool>,
    stats: Arc<FlowStats>,
    poll: Duration,
) {
    let mut last_sent: Option<TailPos> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut records = Vec::new();
        let progressed = tailer.poll(&mut records, TAIL_BUDGET);
        let alerts = tailer.take_alerts();
        let checkpoint = tailer.checkpoint();
        if !records.is_empty() || !alerts.is_empty() || checkpoint != last_sent {
            let chunk = Chunk {
                file: Some(index),
                received_ms: now_ms(),
                records,
                alerts,
                checkpoint: checkpoint.clone(),
            };
            if tx.send(chunk).is_err() {
                break;
            }
            last_sent = checkpoint;
        }
        stats.set_file(&label, tailer.status());
        if !progressed {
            // Sleep in slices so a stop is noticed quickly.
            let until = Instant::now() + poll;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(poll.min(Duration::from_millis(50)));
            }
        }
    }
    stats.set_file(&label, tailer.status());
}

struct Pipeline {
    default_rate: u32,
    max_records: usize,
    max_age: Duration,
    limiter: RateLimiter<Origin>,
    controls: Arc<Controls>,
    stats: Arc<FlowStats>,
    labels: Vec<String>,
    batch: Vec<FlowRecord>,
    /// IDS alerts waiting to ship with the batch.
    alerts: Vec<IdsAlert>,
    batch_origins: HashMap<Origin, u32>,
    batch_started: Option<Instant>,
    /// Tail positions reached by the flows in (or before) the batch.
    checkpoints: BTreeMap<String, TailPos>,
    deltas: HashMap<Origin, ExporterStatus>,
    ship: SyncSender<Job>,
}

impl Pipeline {
    fn run(mut self, rx: Receiver<Chunk>) {
        let mut last_publish = Instant::now();
        loop {
            let wait = match self.batch_started {
                Some(t) => self.max_age.saturating_sub(t.elapsed()),
                None => Duration::from_secs(1),
            };
            match rx.recv_timeout(wait) {
                Ok(chunk) => self.take(chunk),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let aged = self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.max_age);
            // Alerts wait for nothing: they go out with the flows read so
            // far, at most one batch per tail poll.
            if aged || self.batch.len() >= self.max_records || !self.alerts.is_empty() {
                self.flush();
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                last_publish = Instant::now();
                self.publish();
            }
        }
        self.flush();
        self.publish();
    }

    fn take(&mut self, chunk: Chunk) {
        self.alerts.extend(chunk.alerts);
        for mut r in chunk.records {
            let origin = match chunk.file {
                Some(i) => Origin::File(i),
                None => Origin::Exporter(r.exporter),
            };
            let d = self.deltas.entry(origin).or_default();
            d.flows += 1;
            if r.sampling_rate == 0 {
                r.sampling_rate = self.default_rate;
                r.flags |= FlowFlags::SAMPLING_ASSUMED;
                d.sampling_assumed += 1;
            }
            match self.limiter.admit(&origin, chunk.received_ms) {
                Verdict::Skip => {
                    d.rate_limited += 1;
                    continue;
                }
                Verdict::Keep(k) => {
                    if k > 1 {
                        r.resample = r.resample.max(1).saturating_mul(k);
                        d.resampled += 1;
                    }
                }
            }
            if self.batch.is_empty() {
                self.batch_started = Some(Instant::now());
                self.batch.reserve(self.max_records);
            }
            self.batch.push(r);
            *self.batch_origins.entry(origin).or_default() += 1;
            if self.batch.len() >= self.max_records {
                self.flush();
            }
        }
        if let (Some(i), Some(pos)) = (chunk.file, chunk.checkpoint) {
            if let Some(label) = self.labels.get(usize::from(i)) {
                self.checkpoints.insert(label.clone(), pos);
            }
        }
    }

    /// Masks, encodes and hands the batch to the shipper.
    fn flush(&mut self) {
        self.batch_started = None;
        if self.batch.is_empty() && self.alerts.is_empty() && self.checkpoints.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let mut alerts = std::mem::take(&mut self.alerts);
        let origins: Vec<(Origin, u32)> = self.batch_origins.drain().collect();
        let masker = self.controls.current();
        let blocked = masker.apply(&mut batch);
        let alerts_blocked = masker.apply_alerts(&mut alerts);
        if blocked > 0 || alerts_blocked > 0 {
            let mut s = self.stats.lock();
            s.flows_blocked += blocked as u64;
            s.alerts_blocked += alerts_blocked as u64;
        }
        let mut plaintext = Vec::new();
        if !batch.is_empty() {
            codec::encode(&batch, &mut plaintext);
        }
        let job = Job {
            items: u32::try_from(batch.len()).unwrap_or(u32::MAX),
            plaintext,
            origins: if batch.is_empty() {
                Vec::new()
            } else {
                origins
            },
            alerts,
            checkpoints: std::mem::take(&mut self.checkpoints),
        };
        if self.ship.send(job).is_err() {
            tracing::error!("flow shipper stopped: batch lost");
        }
    }

    fn publish(&mut self) {
        if !self.deltas.is_empty() {
            self.stats.merge(self.deltas.drain());
        }
    }
}

fn ship_loop(
    rx: Receiver<Job>,
    shipper: Shipper,
    stats: Arc<FlowStats>,
    offsets: Arc<TailOffsets>,
) {
    for job in rx {
        if job.items > 0 {
            let outcome = crate::run::enqueue_outcome(
                &shipper.id,
                &shipper.outbox,
                BATCH_KIND,
                Priority::Data,
                job.items,
                &job.plaintext,
            );
            let stored = match outcome {
                Ok((_, o)) => {
                    let mut s = stats.lock();
                    s.batches_evicted += o.evicted_batches;
                    if o.stored() {
                        s.batches_shipped += 1;
                        s.flows_shipped += u64::from(job.items);
                    } else {
                        s.batches_dropped += 1;
                    }
                    o.stored()
                }
                Err(e) => {
                    tracing::error!(error = %e, flows = job.items, "cannot queue a flow batch: dropped");
                    stats.lock().batches_dropped += 1;
                    false
                }
            };
            if stored {
                (shipper.on_stored)();
            } else {
                stats.merge(job.origins.iter().map(|(o, n)| {
                    (
                        *o,
                        ExporterStatus {
                            dropped: u64::from(*n),
                            ..ExporterStatus::default()
                        },
                    )
                }));
            }
        }
        if !job.alerts.is_empty() {
            ship_alerts(&shipper, &stats, &job.alerts);
        }
        // Saved even when the batch was dropped: its lines were read and
        // the loss is counted; reading them again would not get them in.
        if let Err(e) = offsets.commit(&job.checkpoints) {
            tracing::error!(error = %e, "cannot save tail positions: lines may be read again after a restart");
        }
    }
}

/// Seals IDS alerts as one "ids_alerts" batch at alarm priority, which the
/// outbox sends first and evicts last.
fn ship_alerts(shipper: &Shipper, stats: &FlowStats, alerts: &[IdsAlert]) {
    let items = u32::try_from(alerts.len()).unwrap_or(u32::MAX);
    let plaintext = rampart_proto::alerts::encode(alerts);
    match crate::run::enqueue_outcome(
        &shipper.id,
        &shipper.outbox,
        rampart_proto::alerts::BATCH_KIND,
        Priority::Alarm,
        items,
        &plaintext,
    ) {
        Ok((_, o)) if o.stored() => {
            stats.lock().alerts_shipped += u64::from(items);
            (shipper.on_stored)();
        }
        Ok(_) => stats.lock().alerts_dropped += u64::from(items),
        Err(e) => {
            tracing::error!(error = %e, alerts = items, "cannot queue IDS alerts: dropped");
            stats.lock().alerts_dropped += u64::from(items);
        }
    }
}
