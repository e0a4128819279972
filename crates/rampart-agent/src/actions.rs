//! Remote actions (`rampart_proto::actions`): restart, device key rotation,
//! the diagnostics bundle and the connectivity test. `run::execute` calls
//! these after the envelope verified; each returns the ack to send.
//!
//! Restart: the agent records the seq and the ack ("restarting") like any
//! instruction, tries to deliver the ack (it stays in `state.json` if that
//! fails, and goes out after the restart), then stops its loops cleanly
//! (collectors flushed, tail positions and state saved). The binary then
//! re-executes itself with the same arguments ([`reexec`]), so it needs no
//! supervisor and picks up an upgraded binary at the same path; in-process
//! callers of [`crate::run::run`] get the loops started again instead.
//!
//! Key rotation, and what a crash at each step leaves:
//! 1. a new key is written wrapped to `device.key.next` beside the old one;
//! 2. `POST /api/v1/device/key` signed with the old key carries the new
//!    public key and a signature by the new key over
//!    [`KeyRotateRequest::proof_input`] (tenant, device, key, seq); no other
//!    request is in flight meanwhile ([`PortalClient::lock_key`]);
//! 3. once the portal accepted, `device.key.next` is renamed over
//!    `device.key` and later requests are signed with the new key.
//!
//! After a crash between 1 and 3, `device.key.next` exists: at start
//! [`settle_pending_key`] asks the portal (`GET /api/v1/device/key`) with
//! the new key, then the old, and keeps the one it accepts. An answer lost
//! in transit during 2 is settled the same way at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_proto::actions::{
    parse_target, ConnectivityResult, ConnectivityTest, KeyRotateRequest, TargetResult,
    DIAGNOSTICS_BATCH_KIND, MAX_DIAGNOSTICS_BYTES,
};
use rampart_proto::api::{AckRequest, AckStatus};
use rampart_proto::batch::Priority;
use rampart_proto::keys::SigningKey;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::client::{time_now, ClientError, PortalClient};
use crate::identity::{Identity, RunState, StateDir};
use crate::outbox::Outbox;
use crate::run::RunOptions;
use crate::AgentError;

fn failed(msg: impl Into<String>) -> AckRequest {
    AckRequest {
        status: AckStatus::Failed,
        result: json!({ "error": msg.into() }),
    }
}

// ---------------------------------------------------------------- restart

/// Set by the restart action, acted on by the check-in loop once the seq
/// and the ack are recorded.
#[derive(Default)]
pub struct RestartSignal {
    requested: AtomicBool,
    fired: Notify,
}

impl RestartSignal {
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Ends the run loop with [`crate::run::RunEnd::Restart`].
    pub fn fire(&self) {
        self.fired.notify_one();
    }

    pub async fn fired(&self) {
        self.fired.notified().await
    }
}

/// `restart_agent`: asks for the restart; the result names the process
/// start being ended, so the heartbeat's new `started_at` shows it happened.
pub fn restart_agent(signal: &RestartSignal, started_at: i64) -> AckRequest {
    signal.requested.store(true, Ordering::SeqCst);
    tracing::info!(
        started_at,
        "restart requested: the agent restarts after acking"
    );
    AckRequest {
        status: AckStatus::Ok,
        result: json!({
            "restarting": true,
            "previous_started_at": started_at,
            "pid": std::process::id(),
        }),
    }
}

/// Replaces this process with a fresh start of the same program and
/// arguments. `argv[0]` is used rather than `/proc/self/exe`, so an
/// upgraded binary at the same path is what starts. Returns only on failure.
#[cfg(unix)]
pub fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = match args.next() {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(p) => p.into_os_string(),
            Err(e) => return e,
        },
    };
    tracing::info!(program = ?program, "re-executing the agent");
    std::process::Command::new(program).args(args).exec()
}

#[cfg(not(unix))]
pub fn reexec() -> std::io::Error {
    std::io::Error::other("re-executing needs unix: run the agent under a service manager")
}

// ------------------------------------------------------------ key rotation

/// Which key the portal holds for this device.
enum Held {
    New,
    Old,
}

/// Asks the portal, signing with `new` then `old`, which key it accepts.
async fn which_key(
    client: &PortalClient,
    old: &SigningKey,
    new: &SigningKey,
) -> Result<Held, ClientError> {
    let unauthorized = |e: &ClientError| matches!(e, ClientError::Refused { status: 401, .. });
    match client.device_key_as(new).await {
        Ok(_) => return Ok(Held::New),
        Err(e) if unauthorized(&e) => {}
        Err(e) => return Err(e),
    }
    client.device_key_as(old).await.map(|_| Held::Old)
}

/// Settles which key the portal holds, retrying transport failures with
/// backoff up to `patience`; then makes that key the device key, on disk
/// and in `client` (whose key lock `key` is).
async fn settle(
    dir: &StateDir,
    client: &PortalClient,
    key: &mut Option<Arc<SigningKey>>,
    old: Arc<SigningKey>,
    new: Arc<SigningKey>,
    patience: Option<Duration>,
) -> Result<Held, ClientError> {
    // None: until the portal answers.
    let deadline = patience.and_then(|p| Instant::now().checked_add(p));
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let held = loop {
        match which_key(client, &old, &new).await {
            Ok(h) => break h,
            Err(e) if e.is_retryable() && deadline.is_none_or(|d| Instant::now() < d) => {
                tracing::warn!(error = %e, "cannot tell which device key the portal holds yet; retrying");
                let left = deadline.map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                tokio::time::sleep(backoff.next_delay().min(left)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let d = dir.clone();
    let saved = match held {
        Held::New => {
            *key = Some(new);
            tokio::task::spawn_blocking(move || d.promote_next_device_key()).await
        }
        Held::Old => {
            *key = Some(old);
            tokio::task::spawn_blocking(move || d.discard_next_device_key()).await
        }
    };
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot settle the device key files"),
        Err(e) => tracing::error!(error = %e, "cannot settle the device key files"),
    }
    Ok(held)
}

/// At start: a `device.key.next` left by a rotation that did not finish is
/// settled with the portal before any other request (retrying while the
/// portal is unreachable). Keeps the current key if the portal refuses both.
pub async fn settle_pending_key(dir: &StateDir, client: &PortalClient) -> Result<(), AgentError> {
    let d = dir.clone();
    let next = tokio::task::spawn_blocking(move || d.next_device_key())
        .await
        .map_err(|e| AgentError::State(format!("reading the next device key: {e}")))??;
    let Some(next) = next else {
        return Ok(());
    };
    let mut key = client.lock_key().await;
    let Some(old) = key.clone() else {
        return Ok(());
    };
    tracing::warn!("a device key rotation did not finish: asking the portal which key it holds");
    match settle(dir, client, &mut key, old, Arc::new(next), None).await {
        Ok(Held::New) => tracing::info!("the portal holds the new device key: using it"),
        Ok(Held::Old) => tracing::info!("the portal kept the old device key: new key discarded"),
        Err(e) => {
            tracing::error!(error = %e, "the portal accepts neither device key: keeping the current one")
        }
    }
    Ok(())
}

/// `rotate_device_key`: see the module docs for the steps.
pub async fn rotate_device_key(
    dir: &StateDir,
    id: &Identity,
    client: &PortalClient,
    seq: u64,
) -> AckRequest {
    let mut key = client.lock_key().await;
    let Some(old) = key.clone() else {
        return failed("this agent has no device key loaded");
    };
    let new = Arc::new(SigningKey::generate());
    let (d, n) = (dir.clone(), new.clone());
    match tokio::task::spawn_blocking(move || d.save_next_device_key(&n)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return failed(format!("cannot keep the new key: {e}")),
        Err(e) => return failed(format!("cannot keep the new key: {e}")),
    }
    let new_pk = new.verifying_key().to_b64();
    let old_pk = old.verifying_key().to_b64();
    let proof = new.sign(&KeyRotateRequest::proof_input(
        id.tenant_id,
        id.device_id,
        &new_pk,
        seq,
    ));
    let req = KeyRotateRequest {
        seq,
        new_public_key: new_pk.clone(),
        proof: rampart_proto::b64(&proof),
    };
    let held = match client.rotate_key_as(&old, &req).await {
        Ok(view) if view.public_key == new_pk => {
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || d.promote_next_device_key()).await {
                Ok(Ok(())) => {}
                // device.key.next stays: the next start settles it.
                Ok(Err(e)) => tracing::error!(error = %e, "cannot replace device.key"),
                Err(e) => tracing::error!(error = %e, "cannot replace device.key"),
            }
            *key = Some(new);
            Ok(Held::New)
        }
        // A refusal the portal answered: it kept the old key.
        Err(e @ ClientError::Refused { .. }) if !e.is_retryable() => {
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || d.discard_next_device_key()).await;
            return failed(format!("the portal refused the new key: {e}"));
        }
        // Lost or garbled answer: ask which key the portal holds now.
        other => {
            if let Err(e) = &other {
                tracing::warn!(error = %e, "key rotation answer lost: settling with the portal");
            }
            settle(
                dir,
                client,
                &mut key,
                old,
                new,
                Some(Duration::from_secs(60)),
            )
            .await
        }
    };
    match held {
        Ok(Held::New) => {
            tracing::info!(public_key = %new_pk, "device key rotated");
            AckRequest {
                status: AckStatus::Ok,
                result: json!({ "public_key": new_pk, "previous_public_key": old_pk }),
            }
        }
        Ok(Held::Old) => failed("the portal kept the old key: send the action again"),
        Err(e) => failed(format!(
            "cannot tell whether the portal took the new key ({e}): the agent settles it at its next start"
        )),
    }
}

// ------------------------------------------------------------ diagnostics

/// Recent log lines kept in memory for diagnostics bundles.
pub const LOG_LINES: usize = 500;
/// Longest log line kept, in bytes; longer ones are cut.
pub const MAX_LOG_LINE: usize = 2048;

struct LogRing {
    lines: Mutex<VecDeque<String>>,
    /// Lines pushed out of the ring since start.
    evicted: AtomicU64,
    installed: AtomicBool,
}

static RING: LogRing = LogRing {
    lines: Mutex::new(VecDeque::new()),
    evicted: AtomicU64::new(0),
    installed: AtomicBool::new(false),
};

/// A tracing layer that keeps the last [`LOG_LINES`] events (as the other
/// layers' filter lets through) for [`collect_diagnostics`]. The binary
/// installs it; without it bundles say logs were not captured.
pub struct LogLayer;

impl LogLayer {
    pub fn new() -> LogLayer {
        RING.installed.store(true, Ordering::Relaxed);
        LogLayer
    }
}

impl Default for LogLayer {
    fn default() -> Self {
        Self::new()
    }
}

struct LineVisitor<'a>(&'a mut String);

impl tracing::field::Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut line = format!("{now} {} {}:", meta.level(), meta.target());
        event.record(&mut LineVisitor(&mut line));
        if line.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut lines = RING.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() >= LOG_LINES {
            lines.pop_front();
            RING.evicted.fetch_add(1, Ordering::Relaxed);
        }
        lines.push_back(line);
    }
}

/// What a bundle is made of, gathered by the run loop.
pub struct DiagnosticsInput {
    pub dir: StateDir,
    pub id: Identity,
    pub outbox: Arc<Outbox>,
    pub options: RunOptions,
    pub run_state: RunState,
    pub controls: Value,
    pub started_at: i64,
}

/// The run options as they are in force (no secrets among them).
fn options_json(o: &RunOptions) -> Value {
    json!({
        "heartbeat_secs": o.heartbeat_every.as_secs(),
        "outbox_max_bytes": o.outbox_max_bytes,
        "poll_wait_secs": o.poll_wait.map(|d| d.as_secs()),
        "netflow_listen": o.flows.netflow_listen,
        "zeek_conn": o.flows.zeek_conn,
        "eve": o.flows.eve,
        "default_sampling_rate": o.flows.default_sampling_rate,
        "max_flows_per_exporter": o.flows.max_flows_per_exporter,
        "batch_max_records": o.flows.batch_max_records,
        "batch_max_age_ms": o.flows.batch_max_age.as_millis() as u64,
    })
}

/// Names and sizes of the state dir's files (never their contents: the
/// key files are among them).
fn state_files(dir: &StateDir) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir.root) {
        for e in rd.flatten().take(100) {
            let meta = e.metadata().ok();
            out.push(json!({
                "name": e.file_name().to_string_lossy(),
                "dir": meta.as_ref().is_some_and(|m| m.is_dir()),
                "bytes": meta.map(|m| m.len()),
            }));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

/// Builds the bundle (blocking: reads files): JSON, at most [`MAX_DIAGNOSTICS_BYTES`] (oldest log
/// lines go first when it would be larger). It holds no key, token or
/// wrapping key: the identity's public fields only, file names without
/// contents, and log lines, which never carry secrets.
fn build_bundle(input: &DiagnosticsInput) -> Result<(Vec<u8>, usize), AgentError> {
    let outbox = input.outbox.stats()?;
    // status.json as the last heartbeat wrote it (at most one heartbeat old).
    let status = input.dir.status()?;
    let mut logs: Vec<String> = RING
        .lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let id = &input.id;
    let mut bundle = json!({
        "format": "rampart-diagnostics/1",
        "collected_at": time_now(),
        "agent": {
            "version": crate::run::VERSION,
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "pid": std::process::id(),
            "started_at": input.started_at,
        },
        "device": {
            "tenant_id": id.tenant_id,
            "device_id": id.device_id,
            "portal_url": id.portal_url,
            "resolve": id.resolve,
            "pin": id.pin,
            "enrolled_at": id.enrolled_at,
            "poll_wait_secs": id.poll_wait_secs,
        },
        "options": options_json(&input.options),
        "controls": input.controls,
        "status": status,
        "run_state": {
            "last_applied_seq": input.run_state.last_applied_seq,
            "pending_acks": input.run_state.pending_acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
            "pending_refusals": input.run_state.pending_refusals,
        },
        "outbox": {
            "batches": outbox.batches,
            "bytes": outbox.bytes,
            "dropped_batches": outbox.dropped_batches,
            "dropped_bytes": outbox.dropped_bytes,
            "max_bytes": input.options.outbox_max_bytes,
        },
        "state_files": state_files(&input.dir),
        "logs_captured": RING.installed.load(Ordering::Relaxed),
        "logs_evicted": RING.evicted.load(Ordering::Relaxed),
    });
    loop {
        bundle["logs"] = json!(logs);
        let bytes = serde_json::to_vec(&bundle).map_err(|e| AgentError::State(e.to_string()))?;
        if bytes.len() <= MAX_DIAGNOSTICS_BYTES {
            return Ok((bytes, logs.len()));
        }
        if !logs.is_empty() {
            logs.drain(..logs.len().div_ceil(2));
            bundle["logs_cut_to_fit"] = json!(true);
        } else if !bundle["status"]["flows"].is_null() {
            bundle["status"]["flows"] = json!("left out: too large for a bundle");
        } else {
            return Err(AgentError::State(format!(
                "diagnostics bundle is {} bytes even without logs, the limit is {MAX_DIAGNOSTICS_BYTES}",
                bytes.len()
            )));
        }
    }
}

/// `collect_diagnostics`: builds the bundle and queues it sealed to the
/// tenant's upload key as a `diagnostics` batch; the ack names the batch.
pub async fn collect_diagnostics(input: DiagnosticsInput, upload_wake: &Notify) -> AckRequest {
    // Reads files and fsyncs the outbox: off the async thread.
    let queued = tokio::task::spawn_blocking(move || {
        let (bytes, log_lines) = build_bundle(&input)?;
        let (batch_id, outcome) = crate::run::enqueue_outcome(
            &input.id,
            &input.outbox,
            DIAGNOSTICS_BATCH_KIND,
            Priority::Health,
            1,
            &bytes,
        )?;
        Ok::<_, AgentError>((batch_id, outcome, bytes.len(), log_lines))
    })
    .await;
    match queued {
        Ok(Ok((batch_id, outcome, n, log_lines))) if outcome.stored() => {
            upload_wake.notify_one();
            AckRequest {
                status: AckStatus::Ok,
                result: json!({ "batch_id": batch_id, "bytes": n, "log_lines": log_lines }),
            }
        }
        Ok(Ok(_)) => failed("the outbox is full: the bundle was not queued; try again later"),
        Ok(Err(e)) => failed(format!("cannot build or queue the diagnostics bundle: {e}")),
        Err(e) => failed(format!("cannot build or queue the diagnostics bundle: {e}")),
    }
}

// ------------------------------------------------------- connectivity test

/// A stable, lowercase description of a connect error.
fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        std::io::ErrorKind::HostUnreachable => "host unreachable".into(),
        std::io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string().to_lowercase(),
    }
}

/// Resolves `host` (unless `fixed` gives the address) and connects over
/// TCP, to each address in turn until one answers, within `timeout`.
async fn probe(
    label: String,
    host: String,
    port: u16,
    fixed: Option<SocketAddr>,
    timeout: Duration,
) -> TargetResult {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut r = TargetResult {
        target: label,
        ok: false,
        addresses: Vec::new(),
        connected: None,
        resolve_ms: None,
        connect_ms: None,
        error: None,
    };
    let addrs: Vec<SocketAddr> = match fixed {
        Some(a) => vec![a],
        None => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
                .await
            {
                Ok(Ok(it)) => it.take(16).collect(),
                Ok(Err(e)) => {
                    r.error = Some(format!("name does not resolve: {}", describe(&e)));
                    return r;
                }
                Err(_) => {
                    r.error = Some("timed out resolving the name".into());
                    return r;
                }
            }
        }
    };
    r.resolve_ms = Some(start.elapsed().as_millis() as u64);
    r.addresses = addrs.iter().map(|a| a.ip().to_string()).collect();
    if addrs.is_empty() {
        r.error = Some("name resolves to no address".into());
        return r;
    }
    for addr in addrs {
        let t0 = tokio::time::Instant::now();
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_conn)) => {
                r.ok = true;
                r.connected = Some(addr.to_string());
                r.connect_ms = Some(t0.elapsed().as_millis() as u64);
                r.error = None;
                return r;
            }
            Ok(Err(e)) => r.error = Some(describe(&e)),
            Err(_) => {
                r.error = Some("timed out".into());
                return r;
            }
        }
    }
    r
}

/// `connectivity_test`: every target at once, results in the order asked,
/// the portal first when asked for.
pub async fn connectivity_test(id: &Identity, payload: &Value) -> AckRequest {
    let test = match ConnectivityTest::from_payload(payload) {
        Ok(t) => t,
        Err(e) => return failed(e.to_string()),
    };
    let mut probes = tokio::task::JoinSet::new();
    let mut n = 0;
    if test.portal {
        let url = reqwest::Url::parse(&id.portal_url);
        let host = url
            .as_ref()
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        let port = url.as_ref().ok().and_then(|u| u.port_or_known_default());
        if let (Some(host), Some(port)) = (host, port) {
            let label = match id.resolve {
                Some(a) => format!("portal {host}:{port} via {a}"),
                None => format!("portal {host}:{port}"),
            };
            let timeout = Duration::from_millis(rampart_proto::actions::DEFAULT_TIMEOUT_MS.into());
            let fut = probe(label, host, port, id.resolve, timeout);
            probes.spawn(async move { (n, fut.await) });
            n += 1;
        }
    }
    for t in &test.targets {
        // Validated by from_payload.
        let Ok((host, port)) = parse_target(&t.target) else {
            continue;
        };
        let timeout = Duration::from_millis(t.timeout_ms().into());
        let fut = probe(t.target.clone(), host, port, None, timeout);
        let i = n;
        probes.spawn(async move { (i, fut.await) });
        n += 1;
    }
    let mut results: Vec<(usize, TargetResult)> = probes.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    let result = ConnectivityResult {
        results: results.into_iter().map(|(_, r)| r).collect(),
    };
    AckRequest {
        status: AckStatus::Ok,
        result: serde_json::to_value(result).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_log_ring_keeps_the_newest_lines_each_cut_to_its_limit() {
        let subscriber = tracing_subscriber::registry().with(LogLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..LOG_LINES + 100 {
                tracing::info!(line = i, "event {i}");
            }
            tracing::warn!(long = %"x".repeat(3 * MAX_LOG_LINE), "long");
        });
        let lines = RING.lines.lock().unwrap().clone();
        assert_eq!(lines.len(), LOG_LINES);
        // 601 events into 500 places: the first 101 went.
        assert_eq!(RING.evicted.load(Ordering::Relaxed), 101);
        assert!(lines[0].ends_with(" event 101 line=101"), "{}", lines[0]);
        assert!(lines[0].contains(" INFO rampart_agent::actions::tests:"));
        let last = lines.back().unwrap();
        assert_eq!(last.len(), MAX_LOG_LINE);
        assert!(last.contains(" WARN ") && last.contains(" long long=xxx"));
    }
}
