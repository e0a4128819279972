//! Enrollment and the agent's main loop.
//!
//! `run` drives these tasks over one portal client:
//! - check-in: long-poll, verify each instruction, run it, record it, ack it;
//! - uploader: drain the outbox, highest priority oldest first, with backoff;
//! - heartbeat: seal a health batch into the outbox and write `status.json`;
//! - pseudonym key: fetch the tenant's key when the data controls need it.
//!
//! With collectors configured (by flags or by the running configuration)
//! it also starts the flow threads ([`crate::pipeline`]), after loading the
//! data controls, so the first batch after a restart is masked like the
//! last one before it. An `apply_config` instruction validates, applies,
//! health-checks and keeps a configuration, or rolls back to the last good
//! one and says why ([`apply_config`]).
//!
//! Every portal connection is outbound; the only sockets the agent listens
//! on are the UDP flow collectors the operator asks for.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_proto::api::{AckRequest, AckStatus, EnrollRequest, Heartbeat, RefusalReport};
use rampart_proto::batch::{self, BatchHeader, Priority};
use rampart_proto::envelope::{Envelope, Expectation, SignedInstruction};
use rampart_proto::keys::{HpkePublicKey, SigningKey, VerifyingKey};
use rampart_proto::token::EnrollmentToken;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use rampart_proto::config::{self as cfg, ApplyReport, ConfigDoc, EffectiveConfig};

use crate::backoff::Backoff;
use crate::client::{time_now, ClientError, PortalClient};
use crate::config::{self, LogControl};
use crate::identity::{Identity, PendingAck, RunState, StateDir};
use crate::masking::Controls;
use crate::outbox::{Outbox, PushOutcome};
use crate::pipeline::{FlowCollectors, FlowOptions, FlowStats, FlowStatus, Shipper};
use crate::AgentError;
use crate::{rules, wg};

/// How often uploads are tried while the portal pauses this tenant
/// (suspended or cancelled): often enough that a reactivation is noticed
/// soon, rarely enough to cost the portal nothing.
const TENANT_PAUSED_RETRY: Duration = Duration::from_secs(15);
use crate::actions;
use rampart_proto::actions::{
    COLLECT_DIAGNOSTICS, CONNECTIVITY_TEST, RESTART_AGENT, ROTATE_DEVICE_KEY,
};
use rampart_proto::controls::{DataControls, INSTRUCTION_KIND as SET_DATA_CONTROLS};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Enrolls with `token`: makes a device key, proves it to the portal, keeps
/// the identity. Refuses a portal whose certificate key is not the pinned one.
pub async fn enroll(
    dir: &StateDir,
    token: &str,
    resolve: Option<std::net::SocketAddr>,
    hostname: &str,
) -> Result<Identity, AgentError> {
    if dir.is_enrolled() {
        return Err(AgentError::State(format!(
            "{} is already enrolled: use another --state-dir, or remove it to enroll again",
            dir.root.display()
        )));
    }
    let tok = EnrollmentToken::decode(token).map_err(|e| AgentError::Token(e.to_string()))?;
    let client = PortalClient::new(&tok.portal_url, &tok.pin, resolve)?;
    let key = SigningKey::generate();
    let pk = key.verifying_key().to_b64();
    let proof = rampart_proto::b64(&key.sign(&EnrollRequest::proof_input(&tok.secret, &pk)));
    let resp = client
        .enroll(&EnrollRequest {
            secret: tok.secret.clone(),
            device_public_key: pk,
            proof,
            hostname: hostname.to_string(),
            agent_version: VERSION.into(),
        })
        .await?;
    if resp.tenant_id != tok.tenant {
        return Err(AgentError::State(
            "portal answered for another tenant than the token names".into(),
        ));
    }
    // Validate the keys before keeping them.
    VerifyingKey::from_b64(&resp.instruction_key).map_err(|e| AgentError::State(e.to_string()))?;
    HpkePublicKey::from_b64(&resp.upload_key).map_err(|e| AgentError::State(e.to_string()))?;
    dir.save_device_key(&key)?;
    let id = Identity {
        portal_url: tok.portal_url,
        resolve,
        pin: tok.pin,
        tenant_id: resp.tenant_id,
        device_id: resp.device_id,
        instruction_key: resp.instruction_key,
        upload_key: resp.upload_key,
        poll_wait_secs: resp.poll_wait_secs,
        enrolled_at: time_now(),
    };
    dir.save_identity(&id)?;
    tracing::info!(device = %id.device_id, tenant = %id.tenant_id, status = ?resp.status, "enrolled");
    Ok(id)
}

/// Seals `plaintext` for the tenant and queues it in the outbox. Used by the
/// heartbeat and by `rampart-agent send`.
pub fn enqueue(
    id: &Identity,
    outbox: &Outbox,
    kind: &str,
    priority: Priority,
    items: u32,
    plaintext: &[u8],
) -> Result<Uuid, AgentError> {
    enqueue_outcome(id, outbox, kind, priority, items, plaintext).map(|(id, _)| id)
}

/// [`enqueue`], also saying whether the outbox kept the batch and what it
/// evicted for it (the flow pipeline counts both).
pub fn enqueue_outcome(
    id: &Identity,
    outbox: &Outbox,
    kind: &str,
    priority: Priority,
    items: u32,
    plaintext: &[u8],
) -> Result<(Uuid, PushOutcome), AgentError> {
    let key =
        HpkePublicKey::from_b64(&id.upload_key).map_err(|e| AgentError::State(e.to_string()))?;
    let header = BatchHeader {
        batch_id: Uuid::new_v4(),
        priority,
        created_at: time_now(),
        items,
        kind: kind.to_string(),
    };
    let frame = batch::seal(&header, plaintext, &key, id.tenant_id, id.device_id)
        .map_err(|e| AgentError::State(e.to_string()))?;
    let outcome = outbox.push(priority, header.batch_id, &frame)?;
    if !outcome.stored() {
        tracing::warn!(kind, status = ?outcome.status, "outbox full: batch dropped");
    }
    if outcome.evicted_batches > 0 {
        tracing::warn!(
            evicted = outcome.evicted_batches,
            bytes = outcome.evicted_bytes,
            "outbox full: dropped older lower-priority batches"
        );
    }
    Ok((header.batch_id, outcome))
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub heartbeat_every: Duration,
    pub outbox_max_bytes: u64,
    /// Overrides the poll wait the portal gave at enrollment.
    pub poll_wait: Option<Duration>,
    /// Flow collectors; none by default. A running configuration's
    /// `collectors` and `upload` sections replace these values.
    pub flows: FlowOptions,
    /// Applies a configuration's `log_level`; none: the level stays.
    pub log: Option<LogControl>,
    /// Whether block and allow rules are also applied to the host's
    /// firewall (`--firewall nft`), or only evaluated (the default).
    pub firewall: crate::rules::Firewall,
    /// The WireGuard interface the agent may manage; none by default.
    pub wireguard: crate::wg::WgOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            heartbeat_every: Duration::from_secs(30),
            outbox_max_bytes: 256 * 1024 * 1024,
            poll_wait: None,
            flows: FlowOptions::default(),
            log: None,
            firewall: crate::rules::Firewall::Off,
            wireguard: crate::wg::WgOptions::default(),
        }
    }
}

/// What `rampart-agent status` shows; written by `run` every heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub device_id: Uuid,
    pub started_at: i64,
    pub updated_at: i64,
    pub last_contact: Option<i64>,
    pub last_error: Option<String>,
    pub last_applied_seq: u64,
    pub outbox_batches: u64,
    pub outbox_bytes: u64,
    pub outbox_dropped_batches: u64,
    pub outbox_dropped_bytes: u64,
    pub heartbeat_secs: u64,
    /// Flow collectors' counters and the data controls in force.
    #[serde(default)]
    pub flows: Option<FlowStatus>,
    /// The configuration revision running, if one was ever applied.
    #[serde(default)]
    pub config_revision: Option<u64>,
}

struct Shared {
    dir: StateDir,
    id: Identity,
    client: PortalClient,
    outbox: Arc<Outbox>,
    instruction_key: VerifyingKey,
    state: Mutex<RunState>,
    upload_wake: Arc<Notify>,
    controls: Arc<Controls>,
    /// The flag values collectors start from.
    base_flows: FlowOptions,
    /// The options the collectors run with, and the collectors.
    flow_opts: Mutex<FlowOptions>,
    collectors: Mutex<Option<FlowCollectors>>,
    /// The last applied, healthy configuration.
    running: Mutex<Option<EffectiveConfig>>,
    log: Option<LogControl>,
    /// Wakes the pseudonym key task; `key_refresh` asks it to fetch even
    /// when a key is held (new controls may come with a rotated key).
    key_wake: Notify,
    key_refresh: std::sync::atomic::AtomicBool,
    started: Instant,
    started_at: i64,
    last_error: Mutex<Option<String>>,
    last_contact: Mutex<Option<i64>>,
    /// The options this run loop was started with (diagnostics show them).
    options: RunOptions,
    restart: actions::RestartSignal,
}

impl Shared {
    fn note_error(&self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        tracing::warn!(error = %msg, "portal exchange failed");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
    }

    fn lock_collectors(&self) -> std::sync::MutexGuard<'_, Option<FlowCollectors>> {
        self.collectors.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> Option<EffectiveConfig> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn flow_status(&self) -> FlowStatus {
        match self.lock_collectors().as_ref() {
            Some(c) => c.status(),
            None => FlowStats::default().snapshot(&self.controls),
        }
    }

    /// Starts collectors with `opts` (none when it names no source).
    async fn start_collectors(
        &self,
        opts: &FlowOptions,
    ) -> Result<Option<FlowCollectors>, AgentError> {
        if !opts.is_enabled() {
            return Ok(None);
        }
        let wake = self.upload_wake.clone();
        let shipper = Shipper {
            id: self.id.clone(),
            outbox: self.outbox.clone(),
            on_stored: Arc::new(move || wake.notify_one()),
        };
        let (dir, controls, o) = (self.dir.clone(), self.controls.clone(), opts.clone());
        let c =
            tokio::task::spawn_blocking(move || FlowCollectors::start(&dir, shipper, controls, o))
                .await
                .map_err(|e| AgentError::State(format!("starting collectors: {e}")))??;
        tracing::info!(listening = ?c.local_addrs(), zeek = ?opts.zeek_conn, eve = ?opts.eve, "flow collectors running");
        Ok(Some(c))
    }

    /// Restarts the collectors when `want` differs from what runs; if the
    /// new ones cannot start, the old options are started again.
    async fn set_collectors(&self, want: FlowOptions) -> Result<(), String> {
        let cur = self
            .flow_opts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !config::collectors_differ(&cur, &want) {
            return Ok(());
        }
        let old = self.lock_collectors().take();
        if let Some(c) = old {
            // Ships what the pipeline holds and saves the tail positions.
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        match self.start_collectors(&want).await {
            Ok(c) => {
                *self.lock_collectors() = c;
                *self.flow_opts.lock().unwrap_or_else(|p| p.into_inner()) = want;
                Ok(())
            }
            Err(e) => {
                let back = self.start_collectors(&cur).await;
                if let Err(e2) = &back {
                    tracing::error!(error = %e2, "previous collectors did not start again");
                }
                *self.lock_collectors() = back.ok().flatten();
                Err(format!("collectors did not start: {e}"))
            }
        }
    }

    fn note_contact(&self) {
        *self.last_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(time_now());
    }

    /// Persists the run state off the async thread (it fsyncs).
    async fn save_state(&self) -> Result<(), AgentError> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.save_run_state(&s))
            .await
            .map_err(|e| AgentError::State(format!("saving state: {e}")))?
    }
}

/// Why [`run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Shutdown,
    /// A `restart_agent` instruction: the loops stopped cleanly and the
    /// caller starts again (the binary re-executes itself).
    Restart,
}

/// Runs until `shutdown` resolves; a `restart_agent` instruction restarts
/// the loops in this process.
pub async fn run(
    dir: StateDir,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match run_until(dir.clone(), opts.clone(), shutdown.as_mut()).await? {
            RunEnd::Shutdown => return Ok(()),
            RunEnd::Restart => tracing::info!("restarting the run loop"),
        }
    }
}

/// Runs until `shutdown` resolves or a `restart_agent` instruction asks
/// for a restart, then stops cleanly (collectors flushed, state saved).
pub async fn run_until<F: std::future::Future<Output = ()>>(
    dir: StateDir,
    opts: RunOptions,
    mut shutdown: std::pin::Pin<&mut F>,
) -> Result<RunEnd, AgentError> {
    let id = dir.identity()?;
    let key = Arc::new(dir.device_key()?);
    let instruction_key = VerifyingKey::from_b64(&id.instruction_key)
        .map_err(|e| AgentError::State(e.to_string()))?;
    let outbox = Arc::new(Outbox::open(&dir.outbox_dir(), opts.outbox_max_bytes)?);
    tracing::info!(firewall = ?opts.firewall, "block and allow rule enforcement");
    let client =
        PortalClient::new(&id.portal_url, &id.pin, id.resolve)?.with_device(id.device_id, key);
    let state = dir.run_state()?;
    tracing::info!(device = %id.device_id, portal = %id.portal_url, last_applied_seq = state.last_applied_seq, "agent running");
    // Loaded before any collector starts: no flow leaves under older controls.
    let controls = Arc::new(Controls::load(&dir));
    let upload_wake = Arc::new(Notify::new());
    let running = dir.running_config()?;
    let doc = config::doc_of(running.as_ref());
    if let (Some(log), Some(level)) = (&opts.log, doc.log_level) {
        if let Err(e) = (log.0)(Some(level.as_str())) {
            tracing::warn!(error = %e, "log level of the running configuration not applied");
        }
    }
    let flow_opts = config::flow_options(&opts.flows, &doc);
    let shared = Arc::new(Shared {
        dir,
        id,
        client,
        outbox,
        instruction_key,
        state: Mutex::new(state),
        upload_wake,
        controls,
        base_flows: opts.flows.clone(),
        flow_opts: Mutex::new(flow_opts.clone()),
        collectors: Mutex::new(None),
        running: Mutex::new(running),
        log: opts.log.clone(),
        key_wake: Notify::new(),
        key_refresh: std::sync::atomic::AtomicBool::new(false),
        started: Instant::now(),
        started_at: time_now(),
        last_error: Mutex::new(None),
        last_contact: Mutex::new(None),
        options: opts.clone(),
        restart: actions::RestartSignal::default(),
    });
    *shared.lock_collectors() = shared.start_collectors(&flow_opts).await?;
    // A key rotation cut short by a crash is settled before anything is
    // signed; the collectors, which need no portal, run meanwhile.
    let settled = tokio::select! {
        r = actions::settle_pending_key(&shared.dir, &shared.client) => r.map(|()| true),
        _ = shutdown.as_mut() => Ok(false),
    };
    if !matches!(settled, Ok(true)) {
        let collectors = shared.lock_collectors().take();
        if let Some(c) = collectors {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        return settled.map(|_| RunEnd::Shutdown);
    }
    // Rules and the VPN interface of the running configuration, again
    // (the host may have rebooted since they were applied).
    if let Some(r) = shared.running() {
        let doc = config::doc_of(Some(&r));
        if let Err(e) = apply_rules(shared.options.firewall, &doc, &r.lists).await {
            shared.note_error("loading the running rules", &e);
        }
        if let Err(e) = wg::apply(&shared.client, r.vpn.as_ref(), &shared.options.wireguard).await {
            shared.note_error("applying the running wireguard interface", &e);
        }
    }
    let mut tasks = vec![
        tokio::spawn(checkin_loop(shared.clone(), opts.clone())),
        tokio::spawn(upload_loop(shared.clone())),
        tokio::spawn(pseudonym_key_loop(shared.clone())),
    ];
    if opts.firewall == rules::Firewall::Nft {
        tasks.push(tokio::spawn(rules_loop(shared.clone())));
    }
    tasks.push(tokio::spawn(heartbeat_loop(shared.clone(), opts)));
    let end = tokio::select! {
        _ = shutdown => RunEnd::Shutdown,
        _ = shared.restart.fired() => RunEnd::Restart,
    };
    for t in &tasks {
        t.abort();
    }
    // Wait for them to go, so nothing of this run outlives it.
    for t in tasks {
        let _ = t.await;
    }
    let collectors = shared.lock_collectors().take();
    if let Some(c) = collectors {
        // Ships what the pipeline holds and saves the tail positions.
        let _ = tokio::task::spawn_blocking(move || c.stop()).await;
    }
    let _ = shared.save_state().await;
    tracing::info!(?end, "agent stopped");
    Ok(end)
}

async fn checkin_loop(s: Arc<Shared>, opts: RunOptions) {
    let wait = opts
        .poll_wait
        .unwrap_or(Duration::from_secs(s.id.poll_wait_secs.max(1)));
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        if let Err(e) = flush_pending(&s).await {
            s.note_error("sending results", &e);
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        let after = s
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_applied_seq;
        match s.client.poll(after, wait).await {
            Ok(resp) => {
                backoff.reset();
                s.note_contact();
                for si in resp.instructions {
                    handle_instruction(&s, &si).await;
                    if s.restart.is_requested() {
                        break;
                    }
                }
                if s.restart.is_requested() {
                    // The ack is recorded; deliver it now if the portal
                    // answers, else it goes out after the restart.
                    let _ = tokio::time::timeout(Duration::from_secs(10), flush_pending(&s)).await;
                    s.restart.fire();
                    return;
                }
            }
            Err(e) => {
                s.note_error("check-in", &e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Sends results and refusal reports the portal has not acknowledged yet.
async fn flush_pending(s: &Shared) -> Result<(), ClientError> {
    let (acks, refusals) = {
        let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.pending_acks.clone(), st.pending_refusals.clone())
    };
    for p in acks {
        match s.client.ack(p.seq, &p.ack).await {
            Ok(()) => {}
            // A client error will not change on retry (unknown instruction,
            // outcome already recorded): drop it rather than block the queue.
            Err(
                e @ ClientError::Refused {
                    status: 400..=499, ..
                },
            ) if !e.is_retryable() => {
                tracing::warn!(seq = p.seq, error = %e, "portal will not take this result: dropping it");
            }
            Err(e) => return Err(e),
        }
        s.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending_acks
            .retain(|a| a.seq != p.seq);
        let _ = s.save_state().await;
    }
    for r in refusals {
        s.client.report_refusal(&r).await?;
        {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = st
                .pending_refusals
                .iter()
                .position(|x| x.code == r.code && x.seq == r.seq && x.message == r.message)
            {
                st.pending_refusals.remove(i);
            }
        }
        let _ = s.save_state().await;
    }
    Ok(())
}

async fn handle_instruction(s: &Shared, si: &SignedInstruction) {
    let exp = Expectation {
        tenant: s.id.tenant_id,
        device: s.id.device_id,
        last_applied_seq: s
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_applied_seq,
        now: time_now(),
    };
    let env = match si.verify(&s.instruction_key, &exp) {
        Ok(env) => env,
        Err(refusal) => {
            tracing::warn!(code = refusal.code(), reason = %refusal, "refused an instruction");
            let report = RefusalReport {
                code: refusal.code().into(),
                message: refusal.to_string(),
                seq: refusal.seq(),
            };
            s.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_refusals
                .push(report);
            if let Err(e) = s.save_state().await {
                tracing::error!(error = %e, "cannot record refusal");
            }
            return;
        }
    };
    tracing::info!(seq = env.seq, kind = %env.kind, "running instruction");
    let ack = execute(s, &env).await;
    // Record the seq (and the result to send) before acking: after a crash
    // the instruction is not run again, and its result is still sent.
    {
        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_applied_seq = env.seq;
        st.pending_acks.push(PendingAck { seq: env.seq, ack });
    }
    if let Err(e) = s.save_state().await {
        tracing::error!(error = %e, "cannot record applied instruction");
    }
}

/// Runs one verified instruction. New kinds plug in here.
async fn execute(s: &Shared, env: &Envelope) -> AckRequest {
    match env.kind.as_str() {
        SET_DATA_CONTROLS => set_data_controls(s, &env.payload).await,
        cfg::INSTRUCTION_KIND => apply_config(s, &env.payload).await,
        RESTART_AGENT => actions::restart_agent(&s.restart, s.started_at),
        ROTATE_DEVICE_KEY => actions::rotate_device_key(&s.dir, &s.id, &s.client, env.seq).await,
        COLLECT_DIAGNOSTICS => collect_diagnostics(s).await,
        CONNECTIVITY_TEST => actions::connectivity_test(&s.id, &env.payload).await,
        "ping" => AckRequest {
            status: AckStatus::Ok,
            result: serde_json::json!({
                "pong": env.payload.get("message").cloned().unwrap_or(serde_json::Value::Null),
                "agent_version": VERSION,
                "at": time_now(),
            }),
        },
        other => AckRequest {
            status: AckStatus::Failed,
            result: serde_json::json!({
                "error": format!("unsupported instruction kind {other}: upgrade the agent")
            }),
        },
    }
}

/// Gathers what a diagnostics bundle shows and hands it to
/// [`actions::collect_diagnostics`].
async fn collect_diagnostics(s: &Shared) -> AckRequest {
    let input = actions::DiagnosticsInput {
        dir: s.dir.clone(),
        id: s.id.clone(),
        outbox: s.outbox.clone(),
        options: s.options.clone(),
        run_state: s.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        controls: serde_json::to_value(s.controls.current().controls())
            .unwrap_or(serde_json::Value::Null),
        started_at: s.started_at,
    };
    actions::collect_diagnostics(input, &s.upload_wake).await
}

/// Validates, persists and applies new data controls; acks with the version
/// in force, or fails with the validation message (the old controls stay).
/// A version lower than the one in force is applied as sent: the envelope's
/// seq already orders instructions, and a portal restored from a backup may
/// legitimately count again.
async fn set_data_controls(s: &Shared, payload: &serde_json::Value) -> AckRequest {
    let failed = |msg: String| AckRequest {
        status: AckStatus::Failed,
        result: serde_json::json!({ "error": msg }),
    };
    let controls = match DataControls::from_payload(payload) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let wants_key = controls.needs_pseudonym_key();
    let c = s.controls.clone();
    let applied = tokio::task::spawn_blocking(move || c.set(controls)).await;
    let masker = match applied {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(e) => return failed(format!("applying data controls failed: {e}")),
    };
    if wants_key {
        s.key_refresh
            .store(true, std::sync::atomic::Ordering::Relaxed);
        s.key_wake.notify_one();
    }
    AckRequest {
        status: AckStatus::Ok,
        result: serde_json::json!({
            "applied_version": masker.version(),
            "pseudonym_key": if !wants_key { "not_needed" } else if masker.waiting_for_key() { "fetching" } else { "held" },
        }),
    }
}

/// Validates, applies, health-checks and keeps a configuration; anything
/// short of that leaves the last good one running (rolled back if it was
/// partly applied) and fails the instruction with the reason.
async fn apply_config(s: &Shared, payload: &serde_json::Value) -> AckRequest {
    let running = s.running();
    let report = |c: Option<&EffectiveConfig>, error: Option<String>, rolled_back, health| {
        let r = ApplyReport {
            running_revision: c.map(|c| c.revision).unwrap_or(0),
            running_hash: c.map(|c| c.hash.clone()).unwrap_or_default(),
            error: error.clone(),
            rolled_back,
            health,
        };
        AckRequest {
            status: if error.is_some() {
                AckStatus::Failed
            } else {
                AckStatus::Ok
            },
            result: serde_json::to_value(r).unwrap_or_default(),
        }
    };
    let kept = |what: String| {
        let rev = running.as_ref().map(|c| c.revision).unwrap_or(0);
        format!("{what}; kept revision {rev}")
    };
    let eff: EffectiveConfig = match serde_json::from_value(payload.clone()) {
        Ok(e) => e,
        Err(e) => {
            return report(
                running.as_ref(),
                Some(kept(format!("configuration does not parse: {e}"))),
                false,
                vec![],
            )
        }
    };
    let doc = match eff.check() {
        Ok(d) => d,
        Err(e) => {
            return report(
                running.as_ref(),
                Some(kept(format!("revision {} refused at {e}", eff.revision))),
                false,
                vec![],
            )
        }
    };
    if running.as_ref().is_some_and(|r| r.hash == eff.hash) {
        // Sent again (or the same content under a newer revision).
        return keep_config(s, eff, vec!["already running this content".into()], report).await;
    }
    let before = config::doc_of(running.as_ref());
    let no_lists = std::collections::BTreeMap::new();
    let before_lists = running.as_ref().map(|r| &r.lists).unwrap_or(&no_lists);
    let before_vpn = running.as_ref().and_then(|r| r.vpn.as_ref());
    let prev_controls = s.controls.current().controls().clone();
    let undo = || async {
        if let Err(e) = apply_doc(s, &before, before_lists, before_vpn, None).await {
            tracing::error!(error = %e, "rolling back the configuration failed");
        }
        if doc.masking.is_some() {
            let c = s.controls.clone();
            let _ = tokio::task::spawn_blocking(move || c.set(prev_controls)).await;
        }
    };
    let notes = match apply_doc(s, &doc, &eff.lists, eff.vpn.as_ref(), Some(eff.revision)).await {
        Ok(notes) => notes,
        Err(e) => {
            undo().await;
            return report(
                running.as_ref(),
                Some(kept(format!(
                    "applying revision {} failed: {e}",
                    eff.revision
                ))),
                true,
                vec![],
            );
        }
    };
    let bound: Vec<std::net::SocketAddr> = s
        .lock_collectors()
        .as_ref()
        .map(|c| c.local_addrs().to_vec())
        .unwrap_or_default();
    let mut health = config::health_check(&doc, &bound).await;
    let wg_opts = &s.options.wireguard;
    if let (Some(iface), Some(name)) = (eff.vpn.as_ref(), wg_opts.interface.as_deref()) {
        let probe = wg::probe(name, iface, wg_opts).await;
        health = match (health, probe) {
            (Ok(mut l), Ok(m)) => {
                l.push(m);
                Ok(l)
            }
            (Ok(mut l) | Err(mut l), Err(e)) => {
                l.push(format!("wireguard {name}: {e}"));
                Err(l)
            }
            (Err(mut l), Ok(m)) => {
                l.push(m);
                Err(l)
            }
        };
    }
    match health.map(|l| notes.iter().cloned().chain(l).collect()) {
        Ok(lines) => keep_config(s, eff, lines, report).await,
        Err(lines) => {
            undo().await;
            tracing::warn!(revision = eff.revision, health = ?lines, "configuration failed its health check: rolled back");
            let why = format!(
                "health check of revision {} failed: {}",
                eff.revision,
                lines.join("; ")
            );
            let rev = running.as_ref().map(|c| c.revision).unwrap_or(0);
            report(
                running.as_ref(),
                Some(format!("{why}; rolled back to revision {rev}")),
                true,
                lines,
            )
        }
    }
}

/// Makes `eff` the running configuration on disk and in memory.
async fn keep_config(
    s: &Shared,
    eff: EffectiveConfig,
    health: Vec<String>,
    report: impl Fn(Option<&EffectiveConfig>, Option<String>, bool, Vec<String>) -> AckRequest,
) -> AckRequest {
    let dir = s.dir.clone();
    let e2 = eff.clone();
    match tokio::task::spawn_blocking(move || dir.save_running_config(&e2)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return report(
                s.running().as_ref(),
                Some(format!("saving the configuration failed: {e}")),
                false,
                health,
            )
        }
        Err(e) => {
            return report(
                s.running().as_ref(),
                Some(format!("saving the configuration failed: {e}")),
                false,
                health,
            )
        }
    }
    tracing::info!(revision = eff.revision, hash = %eff.hash, "configuration applied");
    *s.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(eff.clone());
    report(Some(&eff), None, false, health)
}

/// Applies the parts of a document that run in this process: log level,
/// masking (numbered by `revision`; `None` when restoring, which leaves
/// masking to the caller) and collectors with upload limits.
async fn apply_doc(
    s: &Shared,
    doc: &ConfigDoc,
    lists: &std::collections::BTreeMap<String, Vec<String>>,
    vpn: Option<&rampart_proto::wg::WgInterface>,
    revision: Option<u64>,
) -> Result<Vec<String>, String> {
    if let Some(log) = &s.log {
        (log.0)(doc.log_level.map(|l| l.as_str()))?;
    }
    if let (Some(m), Some(rev)) = (&doc.masking, revision) {
        let mut c = m.clone();
        c.version = rev;
        let wants_key = c.needs_pseudonym_key();
        let controls = s.controls.clone();
        tokio::task::spawn_blocking(move || controls.set(c))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if wants_key {
            s.key_refresh
                .store(true, std::sync::atomic::Ordering::Relaxed);
            s.key_wake.notify_one();
        }
    }
    s.set_collectors(config::flow_options(&s.base_flows, doc))
        .await?;
    let rules_note = apply_rules(s.options.firewall, doc, lists).await?;
    let vpn_note = wg::apply(&s.client, vpn, &s.options.wireguard)
        .await
        .map_err(|e| format!("wireguard: {e}"))?;
    Ok(vec![
        format!("rules: {rules_note}"),
        format!("wireguard: {vpn_note}"),
    ])
}

/// Evaluates (and with `--firewall nft` loads) the document's block and
/// allow rules, off the async thread (`nft` and name lookups block).
async fn apply_rules(
    mode: rules::Firewall,
    doc: &ConfigDoc,
    lists: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<String, String> {
    let rules = doc.rules.clone().unwrap_or_default();
    let lists = lists.clone();
    tokio::task::spawn_blocking(move || rules::apply(mode, &rules, &lists, time_now()))
        .await
        .map_err(|e| format!("rules: {e}"))?
        .map_err(|e| format!("rules: {e}"))
}

/// With `--firewall nft`, loads the running rules again at each schedule
/// boundary, so a scheduled rule is in force only in its window.
async fn rules_loop(s: Arc<Shared>) {
    loop {
        let running = s.running();
        let doc = config::doc_of(running.as_ref());
        let now = time_now();
        let next = running.as_ref().and_then(|r| {
            rules::RuleSet::build(doc.rules.as_deref().unwrap_or(&[]), &r.lists, &mut |_| {
                Vec::new()
            })
            .ok()
            .and_then(|set| set.next_change(now))
        });
        // Without a boundary ahead, look again in a minute (a new
        // configuration may bring one).
        let wait = next.map(|t| (t - now).clamp(1, 86_400)).unwrap_or(60);
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        if next.is_some() {
            let lists = running.map(|r| r.lists).unwrap_or_default();
            match apply_rules(s.options.firewall, &doc, &lists).await {
                Ok(summary) => tracing::info!(%summary, "scheduled rules loaded"),
                Err(e) => s.note_error("loading scheduled rules", &e),
            }
        }
    }
}

/// Fetches the pseudonym key when the controls need one and none is held
/// (addresses are dropped meanwhile), or when new controls asked for a
/// refresh. Retries with backoff; a portal without the route (404) is
/// retried rarely.
async fn pseudonym_key_loop(s: Arc<Shared>) {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(600));
    loop {
        let refresh = s
            .key_refresh
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !(refresh || s.controls.needs_key()) {
            backoff.reset();
            let _ = tokio::time::timeout(Duration::from_secs(60), s.key_wake.notified()).await;
            continue;
        }
        match s.client.pseudonym_key().await {
            Ok(key) => {
                s.note_contact();
                let c = s.controls.clone();
                match tokio::task::spawn_blocking(move || c.set_key(&key)).await {
                    Ok(Ok(())) => backoff.reset(),
                    Ok(Err(e)) => s.note_error("storing the pseudonym key", &e),
                    Err(e) => s.note_error("storing the pseudonym key", &e),
                }
            }
            Err(e) => {
                s.note_error("fetching the pseudonym key", &e);
                if refresh && !s.controls.needs_key() {
                    // A key is held; keep using it rather than retrying.
                    continue;
                }
                let _ = tokio::time::timeout(backoff.next_delay(), s.key_wake.notified()).await;
            }
        }
    }
}

async fn upload_loop(s: Arc<Shared>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let outbox = s.outbox.clone();
        // Outer None: nothing queued. Inner None: the batch vanished between
        // peek and read (evicted by a concurrent push); just peek again.
        let next = tokio::task::spawn_blocking(move || {
            let e = outbox.peek()?;
            match e {
                Some(e) => outbox.read(&e).map(|f| Some(f.map(|f| (e, f)))),
                None => Ok(None),
            }
        })
        .await;
        let (entry, frame) = match next {
            Ok(Ok(Some(Some(x)))) => x,
            Ok(Ok(Some(None))) => continue,
            Ok(Ok(None)) => {
                // Nothing queued: sleep until something is, or re-scan now
                // and then for batches queued by `rampart-agent send`.
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), s.upload_wake.notified()).await;
                continue;
            }
            Ok(Err(e)) => {
                s.note_error("reading the outbox", &e);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                s.note_error("reading the outbox", &e);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let remove = match s.client.upload(frame).await {
            Ok(ack) => {
                backoff.reset();
                s.note_contact();
                tracing::debug!(batch = %ack.batch_id, stored = ack.stored, "batch delivered");
                true
            }
            Err(e) if e.is_retryable() => {
                s.note_error("upload", &e);
                tokio::time::sleep(backoff.next_delay()).await;
                false
            }
            // Kept in the outbox: a reactivated tenant gets everything.
            Err(e) if e.is_tenant_paused() => {
                s.note_error("upload paused", &e);
                tokio::time::sleep(TENANT_PAUSED_RETRY).await;
                false
            }
            Err(e) => {
                // The portal will never take this batch (malformed, sealed
                // to an old key): keeping it would block the queue forever.
                tracing::error!(batch = %entry.batch_id, error = %e, "portal rejected a batch: dropping it");
                s.note_error("upload rejected", &e);
                true
            }
        };
        if remove {
            let outbox = s.outbox.clone();
            let id = entry.batch_id;
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || outbox.remove(id)).await {
                s.note_error("removing a sent batch", &e);
            }
        }
    }
}

async fn heartbeat_loop(s: Arc<Shared>, opts: RunOptions) {
    let mut tick = tokio::time::interval(opts.heartbeat_every);
    loop {
        tick.tick().await;
        let s2 = s.clone();
        let secs = opts.heartbeat_every.as_secs();
        let r = tokio::task::spawn_blocking(move || beat(&s2, secs)).await;
        match r {
            Ok(Ok(())) => s.upload_wake.notify_one(),
            Ok(Err(e)) => tracing::error!(error = %e, "heartbeat failed"),
            Err(e) => tracing::error!(error = %e, "heartbeat task failed"),
        }
    }
}

fn beat(s: &Shared, heartbeat_secs: u64) -> Result<(), AgentError> {
    let stats = s.outbox.stats()?;
    let last_error = s
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let hb = Heartbeat {
        agent_version: VERSION.into(),
        uptime_secs: s.started.elapsed().as_secs(),
        sent_at: time_now(),
        outbox_batches: stats.batches,
        outbox_bytes: stats.bytes,
        outbox_dropped_batches: stats.dropped_batches,
        outbox_dropped_bytes: stats.dropped_bytes,
        last_error: last_error.clone(),
        started_at: s.started_at,
    };
    let line = serde_json::to_vec(&hb).map_err(|e| AgentError::State(e.to_string()))?;
    enqueue(&s.id, &s.outbox, "health", Priority::Health, 1, &line)?;
    let status = Status {
        pid: std::process::id(),
        version: VERSION.into(),
        device_id: s.id.device_id,
        started_at: s.started_at,
        updated_at: time_now(),
        last_contact: *s.last_contact.lock().unwrap_or_else(|p| p.into_inner()),
        last_error,
        last_applied_seq: s
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_applied_seq,
        outbox_batches: stats.batches,
        outbox_bytes: stats.bytes,
        outbox_dropped_batches: stats.dropped_batches,
        outbox_dropped_bytes: stats.dropped_bytes,
        heartbeat_secs,
        flows: Some(s.flow_status()),
        config_revision: s
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.revision),
    };
    s.dir.save_status(&status)
}

/// Whether `status` is fresh enough for a container health check: the run
/// loop wrote it within three heartbeats.
pub fn is_healthy(status: &Status, now: i64) -> bool {
    now.saturating_sub(status.updated_at) <= 3 * status.heartbeat_secs.clamp(1, 86_400) as i64 + 5
}

/// Opens the outbox of an enrolled state dir (for `send` and `status`).
pub fn open_outbox(dir: &StateDir, max_bytes: u64) -> Result<Outbox, AgentError> {
    Ok(Outbox::open(&dir.outbox_dir(), max_bytes)?)
}
