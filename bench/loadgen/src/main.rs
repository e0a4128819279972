//! `rampart-loadgen`: the client side of the `bench/spine` benchmark.
//!
//! Simulates many agents against one portal on loopback, each with its own
//! Ed25519 device key and its own pinned TLS connection, the way a real
//! `rampart-agent` talks (signed requests per `rampart_proto::reqsig`).
//!
//! Subcommands:
//! - `enroll`: enroll N simulated devices with one multi-use token;
//! - `hold`:   one long poll per device, re-polled when it returns, and record
//!   when each device's first instruction arrived;
//! - `push`:   queue one instruction per device through the tenant API;
//! - `seal`:   single-core throughput of `batch::seal` / `Frame::open`.
//!
//! Not a test and not part of the main workspace; nothing here runs in CI.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rampart_proto::api::{EnrollRequest, EnrollResponse, ErrorBody, PollResponse};
use rampart_proto::envelope::Expectation;
use rampart_proto::keys::{SigningKey, VerifyingKey};
use rampart_proto::pin::PinnedServerVerifier;
use rampart_proto::reqsig::{DeviceAuth, HDR_DEVICE, HDR_NONCE, HDR_SIGNATURE, HDR_TIMESTAMP};
use rampart_proto::token::EnrollmentToken;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "rampart-loadgen", about = "Load generator for bench/spine (not a test)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll N simulated devices; writes their ids and keys to --out.
    Enroll {
        /// Enrollment token (rmp1_...) with at least --count uses left.
        #[arg(long)]
        token: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        /// Portal address to connect to (like curl --resolve).
        #[arg(long)]
        resolve: SocketAddr,
        /// Parallel enrollment connections.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Hold one long poll per device and time instruction arrival.
    Hold {
        #[arg(long)]
        devices: PathBuf,
        #[arg(long)]
        resolve: SocketAddr,
        /// Upper bound on the run, in seconds.
        #[arg(long)]
        duration: u64,
        /// wait_secs sent with each poll (the portal caps it).
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
        /// File holding the start timestamp (unix nanoseconds), written by
        /// `push`; read at the end. Without it latencies are measured from
        /// the first arrival.
        #[arg(long)]
        t0_file: Option<PathBuf>,
        /// Connection attempts (TCP + TLS handshakes) in flight at once.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Stop as soon as every device has received an instruction.
        #[arg(long)]
        exit_when_all: bool,
        /// Seconds between progress lines on stderr.
        #[arg(long, default_value_t = 5)]
        progress_secs: u64,
    },
    /// Queue one instruction for every device through the tenant API.
    Push {
        /// Tenant API token (rmt_...).
        #[arg(long)]
        token: String,
        /// Tenant domain (Host header and TLS server name).
        #[arg(long)]
        host: String,
        #[arg(long)]
        resolve: SocketAddr,
        #[arg(long)]
        devices: PathBuf,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Where to write t0 (unix nanoseconds, taken right before the first POST).
        #[arg(long)]
        t0_file: Option<PathBuf>,
        #[arg(long, default_value = "ping")]
        kind: String,
    },
    /// Sealed-upload throughput on one core (seal and open).
    Seal {
        /// Megabytes (10^6 bytes) of plaintext to seal.
        #[arg(long, default_value_t = 256)]
        mb: usize,
        /// Plaintext per batch, KiB.
        #[arg(long, default_value_t = 1024)]
        batch_kib: usize,
        /// Also write the plaintext (all batches concatenated) here, so a
        /// peer tool can be timed on the very same bytes.
        #[arg(long)]
        write_plaintext: Option<PathBuf>,
    },
}

/// The devices file written by `enroll`.
///
/// NOTE: it holds every simulated device's Ed25519 secret key in plaintext.
/// That is acceptable only because these are throwaway benchmark identities
/// on a throwaway portal under /tmp; a real agent wraps its key at rest.
#[derive(Serialize, Deserialize)]
struct DevicesFile {
    portal_url: String,
    host: String,
    port: u16,
    pin: String,
    tenant_id: Uuid,
    /// Base64 Ed25519 key that verifies the tenant's instructions.
    instruction_key: String,
    devices: Vec<DeviceEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct DeviceEntry {
    id: Uuid,
    /// Base64 of the 32-byte Ed25519 secret key (plaintext, see above).
    key: String,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `https://host[:port][/...]` -> (host, port).
fn parse_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("portal url must be https: {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_ascii_lowercase(), p.parse().context("port in portal url")?)),
        None => Ok((authority.to_ascii_lowercase(), 443)),
    }
}

/// Counts errors by a short description.
#[derive(Default)]
struct ErrorCounts(Mutex<BTreeMap<String, u64>>);

impl ErrorCounts {
    fn add(&self, what: impl Into<String>) {
        let mut s: String = what.into();
        s.truncate(120);
        *self.0.lock().unwrap().entry(s).or_default() += 1;
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

/// Short description of an error chain, for grouping.
fn describe(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p == &s) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Where and how to connect: one new TCP + TLS connection per `connect`.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    sni: ServerName<'static>,
    /// Host name the requests are signed for (no port).
    host: String,
    /// `Host` header (with port, as a browser or reqwest would send).
    host_header: String,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    fn new(addr: SocketAddr, host: &str, port: u16, pin: &str) -> anyhow::Result<Self> {
        let mut cfg = PinnedServerVerifier::client_config(pin).map_err(|e| anyhow!("{e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Each simulated device is its own agent process in reality, with no
        // session to resume: make every connection a full handshake.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Target {
            addr,
            sni: ServerName::try_from(host.to_string()).context("tls server name")?,
            host: host.to_ascii_lowercase(),
            host_header: if port == 443 { host.to_string() } else { format!("{host}:{port}") },
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow!("tcp connect timed out"))?
            .context("tcp connect")?;
        tcp.set_nodelay(true)?;
        let tls = tokio::time::timeout(Duration::from_secs(30), self.tls.connect(self.sni.clone(), tcp))
            .await
            .map_err(|_| anyhow!("tls handshake timed out"))?
            .context("tls handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("http handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host_header)
            .header("user-agent", "rampart-loadgen")
    }

    /// A request signed as `device`, like the agent's `PortalClient::send`.
    fn signed(&self, key: &SigningKey, device: Uuid, method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        let auth = DeviceAuth::sign(key, device, method, &self.host, path, now_secs(), &body);
        self.request(method, path)
            .header("content-type", "application/json")
            .header(HDR_DEVICE, auth.device.to_string())
            .header(HDR_TIMESTAMP, auth.timestamp.to_string())
            .header(HDR_NONCE, auth.nonce)
            .header(HDR_SIGNATURE, auth.signature)
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    }
}

/// Sends one request and reads the whole answer, within `timeout`.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>, timeout: Duration) -> anyhow::Result<(u16, Bytes)> {
    let fut = async {
        sender.ready().await.context("connection not ready")?;
        let resp = sender.send_request(req).await.context("send")?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.context("read body")?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| anyhow!("request timed out after {timeout:?}"))?
}

/// `status 503 nonce_cache_full` style label for an error answer.
fn status_label(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => format!("status {status} {}: {}", b.error.code, b.error.message),
        Err(_) => format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(80)])),
    }
}

#[derive(Serialize, Default)]
struct Dist {
    count: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn dist(mut v: Vec<f64>) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |p: f64| {
        let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[idx] * 10.0).round() / 10.0
    };
    Dist { count: v.len(), min: pick(0.0), p50: pick(0.50), p90: pick(0.90), p99: pick(0.99), max: pick(1.0) }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Seal { mb, batch_kib, write_plaintext } => seal_bench(mb, batch_kib, write_plaintext),
        cmd => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                match cmd {
                    Cmd::Enroll { token, count, out, resolve, concurrency } => {
                        enroll(token, count, out, resolve, concurrency).await
                    }
                    Cmd::Hold { devices, resolve, duration, wait_secs, t0_file, connect_concurrency, exit_when_all, progress_secs } => {
                        hold(devices, resolve, duration, wait_secs, t0_file, connect_concurrency, exit_when_all, progress_secs).await
                    }
                    Cmd::Push { token, host, resolve, devices, concurrency, t0_file, kind } => {
                        push(token, host, resolve, devices, concurrency, t0_file, kind).await
                    }
                    Cmd::Seal { .. } => unreachable!(),
                }
            })?;
            // Don't wait for the remaining connection tasks to wind down.
            std::process::exit(0)
        }
    }
}

// ---------------------------------------------------------------- enroll --

async fn enroll(token: String, count: usize, out: PathBuf, resolve: SocketAddr, concurrency: usize) -> anyhow::Result<()> {
    let tok = EnrollmentToken::decode(&token).map_err(|e| anyhow!("{e}"))?;
    let (host, port) = parse_url(&tok.portal_url)?;
    let target = Target::new(resolve, &host, port, &tok.pin)?;
    let next = Arc::new(AtomicUsize::new(0));
    let done: Arc<Mutex<Vec<DeviceEntry>>> = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let info: Arc<Mutex<Option<EnrollResponse>>> = Arc::default();
    let errors = Arc::new(ErrorCounts::default());
    let failed = Arc::new(AtomicU64::new(0));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (target, next, done, info, errors, failed, lat, secret) =
            (target.clone(), next.clone(), done.clone(), info.clone(), errors.clone(), failed.clone(), lat.clone(), tok.secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender: Option<Sender> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let mut ok = false;
                for attempt in 1..=5 {
                    if attempt > 1 {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        match target.connect().await {
                            Ok(s) => sender = Some(s),
                            Err(e) => {
                                errors.add(describe(&e));
                                continue;
                            }
                        }
                    }
                    let key = SigningKey::generate();
                    let pk = key.verifying_key().to_b64();
                    let proof = rampart_proto::b64(&key.sign(&EnrollRequest::proof_input(&secret, &pk)));
                    let body = serde_json::to_vec(&EnrollRequest {
                        secret: secret.clone(),
                        device_public_key: pk,
                        proof,
                        hostname: format!("loadgen-{i:05}"),
                        agent_version: "loadgen".into(),
                    })
                    .expect("serializes");
                    let req = target
                        .request("POST", "/api/v1/enroll")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .expect("valid request");
                    let t = Instant::now();
                    match send(sender.as_mut().unwrap(), req, Duration::from_secs(60)).await {
                        Ok((201, body)) => {
                            lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                            match serde_json::from_slice::<EnrollResponse>(&body) {
                                Ok(r) => {
                                    done.lock().unwrap().push(DeviceEntry {
                                        id: r.device_id,
                                        key: rampart_proto::b64(&key.secret_bytes()),
                                    });
                                    info.lock().unwrap().get_or_insert(r);
                                    ok = true;
                                }
                                Err(e) => errors.add(format!("enroll answer: {e}")),
                            }
                            break;
                        }
                        Ok((status, body)) => {
                            errors.add(status_label(status, &body));
                            if !(status >= 500 || status == 429) {
                                break;
                            }
                        }
                        Err(e) => {
                            errors.add(describe(&e));
                            sender = None;
                        }
                    }
                }
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let devices = std::mem::take(&mut *done.lock().unwrap());
    let Some(r) = info.lock().unwrap().take() else {
        bail!("no device enrolled; errors: {:?}", errors.snapshot());
    };
    let file = DevicesFile {
        portal_url: tok.portal_url.clone(),
        host,
        port,
        pin: tok.pin.clone(),
        tenant_id: r.tenant_id,
        instruction_key: r.instruction_key,
        devices,
    };
    // Plaintext device keys: a benchmark artifact only (see DevicesFile).
    std::fs::write(&out, serde_json::to_vec(&file)?).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "enrolled": file.devices.len(),
            "failed": failed.load(Ordering::Relaxed),
            "secs": (secs * 100.0).round() / 100.0,
            "per_sec": ((file.devices.len() as f64 / secs) * 10.0).round() / 10.0,
            "latency_ms": dist(std::mem::take(&mut *lat.lock().unwrap())),
            "errors": errors.snapshot(),
        })
    );
    Ok(())
}

// ------------------------------------------------------------------ hold --

struct HoldState {
    n: usize,
    /// Devices with a live connection right now.
    connected: AtomicI64,
    /// Devices that got a connection at least once.
    ever_connected: AtomicU64,
    /// When `ever_connected` reached n (ns since start; 0 = not yet).
    all_connected_ns: AtomicU64,
    reconnects: AtomicU64,
    polls_sent: AtomicU64,
    polls_in_flight: AtomicI64,
    polls_empty: AtomicU64,
    polls_with_instructions: AtomicU64,
    verify_failed: AtomicU64,
    received: AtomicU64,
    /// Unix ns when each device's first instruction arrived (0 = none yet).
    first_ns: Vec<AtomicU64>,
    errors: ErrorCounts,
}

#[allow(clippy::too_many_arguments)]
async fn hold(
    devices: PathBuf,
    resolve: SocketAddr,
    duration: u64,
    wait_secs: u64,
    t0_file: Option<PathBuf>,
    connect_concurrency: usize,
    exit_when_all: bool,
    progress_secs: u64,
) -> anyhow::Result<()> {
    let f: DevicesFile = serde_json::from_slice(&std::fs::read(&devices).with_context(|| format!("reading {}", devices.display()))?)?;
    let target = Target::new(resolve, &f.host, f.port, &f.pin)?;
    let ikey = VerifyingKey::from_b64(&f.instruction_key).map_err(|e| anyhow!("{e}"))?;
    let n = f.devices.len();
    let st = Arc::new(HoldState {
        n,
        connected: AtomicI64::new(0),
        ever_connected: AtomicU64::new(0),
        all_connected_ns: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        polls_sent: AtomicU64::new(0),
        polls_in_flight: AtomicI64::new(0),
        polls_empty: AtomicU64::new(0),
        polls_with_instructions: AtomicU64::new(0),
        verify_failed: AtomicU64::new(0),
        received: AtomicU64::new(0),
        first_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        errors: ErrorCounts::default(),
    });
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(duration);
    let sem = Arc::new(tokio::sync::Semaphore::new(connect_concurrency.max(1)));
    for (i, d) in f.devices.iter().enumerate() {
        let key = SigningKey::from_secret(&rampart_proto::unb64("device key", &d.key, 32).map_err(|e| anyhow!("{e}"))?)
            .map_err(|e| anyhow!("{e}"))?;
        let (target, st, sem, id, tenant) = (target.clone(), st.clone(), sem.clone(), d.id, f.tenant_id);
        tokio::spawn(async move {
            let mut sender: Option<Sender> = None;
            let mut after_seq = 0u64;
            let mut was_connected = false;
            while tokio::time::Instant::now() < deadline {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    if sender.take().is_some() {
                        st.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    let permit = sem.acquire().await.expect("semaphore open");
                    let r = target.connect().await;
                    drop(permit);
                    match r {
                        Ok(s) => {
                            sender = Some(s);
                            st.connected.fetch_add(1, Ordering::Relaxed);
                            if was_connected {
                                st.reconnects.fetch_add(1, Ordering::Relaxed);
                            } else {
                                was_connected = true;
                                if st.ever_connected.fetch_add(1, Ordering::Relaxed) + 1 == st.n as u64 {
                                    st.all_connected_ns.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) => {
                            st.errors.add(describe(&e));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let path = format!("/api/v1/device/poll?after_seq={after_seq}&wait_secs={wait_secs}");
                let req = target.signed(&key, id, "GET", &path, Vec::new());
                st.polls_sent.fetch_add(1, Ordering::Relaxed);
                st.polls_in_flight.fetch_add(1, Ordering::Relaxed);
                let r = send(sender.as_mut().unwrap(), req, Duration::from_secs(wait_secs + 20)).await;
                st.polls_in_flight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok((200, body)) => {
                        let arrived = now_ns();
                        let resp: PollResponse = match serde_json::from_slice(&body) {
                            Ok(r) => r,
                            Err(e) => {
                                st.errors.add(format!("poll answer: {e}"));
                                continue;
                            }
                        };
                        if resp.instructions.is_empty() {
                            st.polls_empty.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        st.polls_with_instructions.fetch_add(1, Ordering::Relaxed);
                        // Verify like the agent does (signature, addressing,
                        // expiry, sequence); acks are not sent.
                        for ins in &resp.instructions {
                            let exp = Expectation { tenant, device: id, last_applied_seq: after_seq, now: now_secs() };
                            match ins.verify(&ikey, &exp) {
                                Ok(env) => after_seq = after_seq.max(env.seq),
                                Err(e) => {
                                    st.verify_failed.fetch_add(1, Ordering::Relaxed);
                                    st.errors.add(format!("instruction refused: {}", e.code()));
                                }
                            }
                        }
                        if st.first_ns[i].compare_exchange(0, arrived, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                            st.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((status, body)) => {
                        st.errors.add(format!("poll {}", status_label(status, &body)));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        st.errors.add(format!("poll: {}", describe(&e)));
                        sender = None;
                        st.connected.fetch_sub(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    let mut last_progress = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let all = st.received.load(Ordering::Relaxed) as usize >= n;
        if last_progress.elapsed() >= Duration::from_secs(progress_secs) || all || tokio::time::Instant::now() >= deadline {
            last_progress = Instant::now();
            eprintln!(
                "[hold {:>5.1}s] connected={} ever={} polls_in_flight={} polls_sent={} received={}/{} errors={}",
                start.elapsed().as_secs_f64(),
                st.connected.load(Ordering::Relaxed),
                st.ever_connected.load(Ordering::Relaxed),
                st.polls_in_flight.load(Ordering::Relaxed),
                st.polls_sent.load(Ordering::Relaxed),
                st.received.load(Ordering::Relaxed),
                n,
                st.errors.total()
            );
        }
        if (exit_when_all && all) || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    // Latencies: from t0 (push's first POST) if available, else the first arrival.
    let arrivals: Vec<u64> = st.first_ns.iter().map(|a| a.load(Ordering::Relaxed)).filter(|&t| t != 0).collect();
    let file_t0 = t0_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    let (t0, t0_source) = match file_t0 {
        Some(t) => (Some(t), "t0_file"),
        None => (arrivals.iter().min().copied(), "first_arrival"),
    };
    let lat: Vec<f64> = match t0 {
        Some(t0) => arrivals.iter().map(|&a| (a as f64 - t0 as f64) / 1e6).collect(),
        None => Vec::new(),
    };
    let all_conn = st.all_connected_ns.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "devices": n,
            "connections_established": st.ever_connected.load(Ordering::Relaxed),
            "connected_at_end": st.connected.load(Ordering::Relaxed),
            "all_connected_after_secs": if all_conn == 0 { None } else { Some((all_conn as f64 / 1e7).round() / 100.0) },
            "reconnects": st.reconnects.load(Ordering::Relaxed),
            "polls_sent": st.polls_sent.load(Ordering::Relaxed),
            "polls_empty": st.polls_empty.load(Ordering::Relaxed),
            "polls_with_instructions": st.polls_with_instructions.load(Ordering::Relaxed),
            "instructions_refused": st.verify_failed.load(Ordering::Relaxed),
            "received": arrivals.len(),
            "errors_total": st.errors.total(),
            "errors": st.errors.snapshot(),
            "t0_source": t0_source,
            "delivery_latency_ms": dist(lat),
            "elapsed_secs": (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        }))?
    );
    Ok(())
}

// ------------------------------------------------------------------ push --

async fn push(
    token: String,
    host: String,
    resolve: SocketAddr,
    devices: PathBuf,
    concurrency: usize,
    t0_file: Option<PathBuf>,
    kind: String,
) -> anyhow::Result<()> {
    let f: DevicesFile = serde_json::from_slice(&std::fs::read(&devices).with_context(|| format!("reading {}", devices.display()))?)?;
    let target = Target::new(resolve, &host, f.port, &f.pin)?;
    let ids: Arc<Vec<Uuid>> = Arc::new(f.devices.iter().map(|d| d.id).collect());
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"kind": kind, "payload": {}}))?);
    let auth = format!("Bearer {token}");
    // Connect first, so t0 measures queueing and delivery, not handshakes.
    let mut senders = Vec::new();
    for _ in 0..concurrency.max(1) {
        senders.push(target.connect().await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(ErrorCounts::default());
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let t0 = now_ns();
    if let Some(p) = &t0_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, t0.to_string())?;
        std::fs::rename(&tmp, p)?;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in senders {
        let (target, ids, next, errors, statuses, created, failed, lat, body, auth) = (
            target.clone(), ids.clone(), next.clone(), errors.clone(), statuses.clone(), created.clone(), failed.clone(), lat.clone(), body.clone(), auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sender = Some(s);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ids.len() {
                    break;
                }
                let path = format!("/api/v1/devices/{}/instructions", ids[i]);
                let mut ok = false;
                for attempt in 1..=3u64 {
                    if attempt > 1 {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        match target.connect().await {
                            Ok(s) => sender = Some(s),
                            Err(e) => {
                                errors.add(describe(&e));
                                continue;
                            }
                        }
                    }
                    let req = target
                        .request("POST", &path)
                        .header("content-type", "application/json")
                        .header("authorization", &auth)
                        .body(Full::new(body.clone()))
                        .expect("valid request");
                    let t = Instant::now();
                    match send(sender.as_mut().unwrap(), req, Duration::from_secs(60)).await {
                        Ok((status, rbody)) => {
                            lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                            *statuses.lock().unwrap().entry(status).or_default() += 1;
                            if status == 201 {
                                ok = true;
                                break;
                            }
                            errors.add(status_label(status, &rbody));
                            if status < 500 && status != 429 {
                                break;
                            }
                        }
                        Err(e) => {
                            errors.add(describe(&e));
                            sender = None;
                        }
                    }
                }
                if ok {
                    created.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "devices": ids.len(),
            "created": created.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed),
            "statuses": statuses.lock().unwrap().clone(),
            "errors": errors.snapshot(),
            "t0_unix_ns": t0,
            "push_secs": (secs * 1000.0).round() / 1000.0,
            "per_sec": ((ids.len() as f64 / secs) * 10.0).round() / 10.0,
            "post_latency_ms": dist(std::mem::take(&mut *lat.lock().unwrap())),
        }))?
    );
    Ok(())
}

// ------------------------------------------------------------------ seal --

/// Flow-log-like JSON lines (what a network collector would upload): repeated
/// keys, a small vocabulary of apps, hosts and ports, varying numbers.
fn flow_records(rng: &mut impl rand::Rng, ts: &mut i64, target: usize) -> (Vec<u8>, u32) {
    use std::fmt::Write;
    const APPS: &[(&str, &str, u16, &str)] = &[
        ("https", "api.github.com", 443, "tcp"),
        ("https", "login.microsoftonline.com", 443, "tcp"),
        ("https", "updates.example-vendor.com", 443, "tcp"),
        ("https", "s3.eu-west-1.amazonaws.com", 443, "tcp"),
        ("dns", "", 53, "udp"),
        ("ntp", "", 123, "udp"),
        ("ssh", "", 22, "tcp"),
        ("http", "ocsp.digicert.com", 80, "tcp"),
        ("quic", "www.google.com", 443, "udp"),
        ("smb", "", 445, "tcp"),
    ];
    const ACTIONS: &[&str] = &["allow", "allow", "allow", "allow", "allow", "allow", "allow", "deny"];
    let mut s = String::with_capacity(target + 512);
    let mut items = 0u32;
    while s.len() < target {
        *ts += rng.gen_range(0..40);
        let (app, sni, port, proto) = APPS[rng.gen_range(0..APPS.len())];
        let bytes_out: u64 = 40 << rng.gen_range(0..14);
        let _ = writeln!(
            s,
            r#"{{"ts":{}.{:03},"type":"flow","src_ip":"10.{}.{}.{}","src_port":{},"dst_ip":"{}.{}.{}.{}","dst_port":{},"proto":"{}","app":"{}","sni":"{}","bytes_out":{},"bytes_in":{},"packets":{},"duration_ms":{},"action":"{}","rule_id":{},"iface":"eth{}"}}"#,
            *ts / 1000,
            *ts % 1000,
            rng.gen_range(0..4),
            rng.gen_range(0..16),
            rng.gen_range(1..255),
            rng.gen_range(32768..61000),
            [52, 140, 142, 104, 8, 1][rng.gen_range(0..6)],
            rng.gen_range(0..256),
            rng.gen_range(0..256),
            rng.gen_range(1..255),
            port,
            proto,
            app,
            sni,
            bytes_out,
            bytes_out * rng.gen_range(1..20),
            rng.gen_range(1..400),
            rng.gen_range(0..30000),
            ACTIONS[rng.gen_range(0..ACTIONS.len())],
            rng.gen_range(100..140),
            rng.gen_range(0..2),
        );
        items += 1;
    }
    (s.into_bytes(), items)
}

fn seal_bench(mb: usize, batch_kib: usize, write_plaintext: Option<PathBuf>) -> anyhow::Result<()> {
    use rand::SeedableRng;
    use rampart_proto::batch::{self, BatchHeader, Priority};
    use rampart_proto::keys::HpkeSecretKey;

    let total = mb * 1_000_000;
    let batch_bytes = batch_kib * 1024;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut ts = 1_700_000_000_000i64;
    let mut batches: Vec<(Vec<u8>, u32)> = Vec::new();
    let mut made = 0usize;
    while made < total {
        let b = flow_records(&mut rng, &mut ts, batch_bytes.min(total - made));
        made += b.0.len();
        batches.push(b);
    }
    if let Some(p) = &write_plaintext {
        let mut all = Vec::with_capacity(made);
        for (b, _) in &batches {
            all.extend_from_slice(b);
        }
        std::fs::write(p, &all).with_context(|| format!("writing {}", p.display()))?;
    }
    let (sk, pk) = HpkeSecretKey::generate();
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    let header = |items: u32| BatchHeader {
        batch_id: Uuid::new_v4(),
        priority: Priority::Data,
        created_at: now_secs(),
        items,
        kind: "flows".into(),
    };
    // Warm up (page in code and allocator) outside the timed loop.
    let w = batch::seal(&header(batches[0].1), &batches[0].0, &pk, tenant, device).map_err(|e| anyhow!("{e}"))?;
    batch::parse(&w).map_err(|e| anyhow!("{e}"))?.open(&sk, tenant, device).map_err(|e| anyhow!("{e}"))?;

    let t = Instant::now();
    let mut frames = Vec::with_capacity(batches.len());
    for (b, items) in &batches {
        frames.push(batch::seal(&header(*items), b, &pk, tenant, device).map_err(|e| anyhow!("{e}"))?);
    }
    let seal_secs = t.elapsed().as_secs_f64();
    let sealed: usize = frames.iter().map(Vec::len).sum();

    let t = Instant::now();
    let mut opened = 0usize;
    for f in &frames {
        opened += batch::parse(f).map_err(|e| anyhow!("{e}"))?.open(&sk, tenant, device).map_err(|e| anyhow!("{e}"))?.len();
    }
    let open_secs = t.elapsed().as_secs_f64();
    if opened != made {
        bail!("opened {opened} bytes, sealed {made}");
    }
    // Breakdown: the zstd share of seal and open, with the same level and the
    // same streaming decoder as `batch.rs`, and the bulk decoder for contrast.
    let t = Instant::now();
    let mut compressed = Vec::with_capacity(batches.len());
    for (b, _) in &batches {
        compressed.push(zstd::bulk::compress(b, 3)?);
    }
    let zc_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in &compressed {
        use std::io::Read;
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&c[..])?.read_to_end(&mut out)?;
    }
    let zds_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in &compressed {
        use std::io::Read;
        // Same streaming decoder, output buffer sized up front from the
        // frame's declared content size (what a fix in batch.rs could do).
        let size = zstd::zstd_safe::get_frame_content_size(c).ok().flatten().unwrap_or(0) as usize;
        let mut out = Vec::with_capacity(size.min(rampart_proto::batch::MAX_PLAINTEXT_BYTES));
        zstd::stream::read::Decoder::new(&c[..])?.read_to_end(&mut out)?;
    }
    let zdsp_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in &compressed {
        zstd::bulk::decompress(c, batch_bytes + 64 * 1024)?;
    }
    let zdb_secs = t.elapsed().as_secs_f64();
    let r = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "plaintext_bytes": made,
            "batches": batches.len(),
            "batch_bytes": batch_bytes,
            "records": batches.iter().map(|b| b.1 as u64).sum::<u64>(),
            "sealed_bytes": sealed,
            "sealed_over_plaintext": (sealed as f64 / made as f64 * 1e4).round() / 1e4,
            "seal_secs": (seal_secs * 1e3).round() / 1e3,
            "seal_mb_per_s": r(made as f64 / 1e6 / seal_secs),
            "open_secs": (open_secs * 1e3).round() / 1e3,
            "open_mb_per_s": r(made as f64 / 1e6 / open_secs),
            "breakdown_mb_per_s": {
                "zstd3_compress": r(made as f64 / 1e6 / zc_secs),
                "zstd_decompress_stream_read_to_end": r(made as f64 / 1e6 / zds_secs),
                "zstd_decompress_stream_presized": r(made as f64 / 1e6 / zdsp_secs),
                "zstd_decompress_bulk": r(made as f64 / 1e6 / zdb_secs),
            },
        }))?
    );
    Ok(())
}
