//! `rampart-agent`: enroll, run, status, send. Logic lives in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use rampart_agent::config::LogControl;
use rampart_agent::identity::StateDir;
use rampart_agent::run::{self, RunOptions};
use rampart_proto::batch::Priority;

#[derive(Parser)]
#[command(
    name = "rampart-agent",
    version,
    about = "Rampart edge agent: connects outbound to its tenant's portal only"
)]
struct Cli {
    /// Where the agent keeps its identity, wrapped key, state and outbox.
    #[arg(
        long,
        env = "RAMPART_AGENT_STATE_DIR",
        default_value = "./rampart-agent-data",
        global = true
    )]
    state_dir: PathBuf,
    /// File with the key that wraps the device key (base64, 32 bytes).
    /// Default: <state-dir>/wrap.key, generated on enrollment.
    #[arg(long, env = "RAMPART_AGENT_WRAP_KEY_FILE", global = true)]
    wrap_key_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll with a token from the portal.
    Enroll {
        token: String,
        /// Connect to this address instead of resolving the portal's domain
        /// (`IP:PORT`, like curl --resolve).
        #[arg(long, env = "RAMPART_AGENT_RESOLVE")]
        resolve: Option<std::net::SocketAddr>,
        /// Name to show in the portal (default: the host name).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Run: check in, run instructions, upload batches.
    Run {
        /// Seconds between heartbeats.
        #[arg(long, env = "RAMPART_AGENT_HEARTBEAT_SECS", default_value_t = 30)]
        heartbeat_secs: u64,
        /// Outbox size bound in MiB; beyond it the oldest lowest-priority
        /// batches are dropped (and counted).
        #[arg(long, env = "RAMPART_AGENT_OUTBOX_MIB", default_value_t = 256)]
        outbox_mib: u64,
        /// Long-poll wait in seconds (default: what the portal said).
        #[arg(long)]
        poll_wait_secs: Option<u64>,
        /// Receive NetFlow v5/v9 and IPFIX on this UDP address, e.g.
        /// 0.0.0.0:2055 (repeatable; comma-separated in the env variable).
        #[arg(long, env = "RAMPART_AGENT_NETFLOW_LISTEN", value_delimiter = ',')]
        netflow_listen: Vec<std::net::SocketAddr>,
        /// Tail this Zeek conn.log, TSV or JSON, through rotation
        /// (repeatable; comma-separated in the env variable).
        #[arg(long, env = "RAMPART_AGENT_ZEEK_CONN", value_delimiter = ',')]
        zeek_conn: Vec<PathBuf>,
        /// Tail this Suricata EVE JSON file (flow and netflow events)
        /// through rotation (repeatable; comma-separated in the env variable).
        #[arg(long, env = "RAMPART_AGENT_EVE", value_delimiter = ',')]
        eve: Vec<PathBuf>,
        /// Sampling rate recorded for flows whose exporter announces none
        /// (they are flagged as assumed).
        #[arg(long, env = "RAMPART_AGENT_DEFAULT_SAMPLING_RATE", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..))]
        default_sampling_rate: u32,
        /// Flows per second per exporter before the agent resamples (keeps
        /// one in k and records k); 0 = no limit.
        #[arg(
            long,
            env = "RAMPART_AGENT_MAX_FLOWS_PER_EXPORTER",
            default_value_t = 100_000
        )]
        max_flows_per_exporter: u32,
        /// Apply the configuration's block and allow rules to the host's
        /// firewall: `nft` renders them as the nftables table `inet
        /// rampart` (checked with `nft -c`, then loaded with `nft -f`);
        /// `off` only evaluates them.
        #[arg(
            long,
            env = "RAMPART_AGENT_FIREWALL",
            value_enum,
            default_value = "off"
        )]
        firewall: rampart_agent::rules::Firewall,
        /// Manage this WireGuard interface (e.g. wg0) from the device's
        /// configuration; without it the agent applies no VPN.
        #[arg(long, env = "RAMPART_AGENT_WIREGUARD_INTERFACE")]
        wireguard_interface: Option<String>,
        /// Create the interface with this userspace WireGuard (e.g.
        /// wireguard-go) when the kernel has none.
        #[arg(long, env = "RAMPART_AGENT_WIREGUARD_USERSPACE")]
        wireguard_userspace: Option<PathBuf>,
    },
    /// Show the agent's state.
    Status {
        /// Exit 0 if the run loop is alive, 1 otherwise (for health checks).
        #[arg(long)]
        health: bool,
        #[arg(long)]
        json: bool,
    },
    /// Seal a file of JSON lines into the outbox as one batch.
    Send {
        #[arg(long)]
        kind: String,
        /// alarm, health or data.
        #[arg(long, default_value = "data")]
        priority: String,
        file: PathBuf,
    },
    /// Print the flows in a capture of exporter traffic, a Zeek conn.log or
    /// a Suricata EVE file as JSON lines.
    ///
    /// Reads pcap or pcapng (Ethernet, VLAN, raw IP, Linux cooked, loopback)
    /// and decodes every UDP datagram, on any port, as NetFlow v5/v9 or
    /// IPFIX, keeping templates per exporter address; or reads Zeek conn.log
    /// (TSV with a #fields header, or JSON lines) or EVE JSON lines. Writes
    /// one JSON object per flow to stdout and warnings with a summary to
    /// stderr; exits 1 if no flow was decoded.
    Decode {
        /// The capture or log file (at most 2 GiB).
        file: PathBuf,
    },
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn print_flows(f: &rampart_agent::pipeline::FlowStatus) {
    let controls = match (&f.controls_blocked, f.waiting_for_pseudonym_key) {
        (Some(why), _) => format!("version {} BLOCKED: {why}", f.controls_version),
        (None, true) => format!(
            "version {} (waiting for the pseudonym key: addresses dropped)",
            f.controls_version
        ),
        (None, false) => format!("version {}", f.controls_version),
    };
    println!("controls    {controls}");
    if f.exporters.is_empty() && f.files.is_empty() && f.listening.is_empty() {
        return;
    }
    println!(
        "flows       {} shipped in {} batches, {} batches dropped",
        f.flows_shipped, f.batches_shipped, f.batches_dropped
    );
    for (name, e) in &f.exporters {
        println!(
            "  {name}: {} flows, {} datagrams, {} errors, {} missing templates, {} resampled, {} rate-limited, {} dropped",
            e.flows, e.datagrams, e.errors, e.missing_templates, e.resampled, e.rate_limited, e.dropped
        );
    }
    for (name, t) in &f.files {
        println!(
            "  {name}: offset {}, {} lines, {} parse errors, {} long lines, {} rotations, {} truncations",
            t.offset, t.lines, t.parse_errors, t.long_lines, t.rotations, t.truncations
        );
    }
}

/// Logs to stderr with `RAMPART_LOG` (default `info`) as the filter, and
/// returns the control a configuration's `log_level` changes it through.
fn init_logging() -> LogControl {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{reload, EnvFilter};
    let initial = std::env::var("RAMPART_LOG").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        // The log ring feeds diagnostics bundles (remote actions).
        .with(rampart_agent::actions::LogLayer::new())
        .init();
    LogControl(std::sync::Arc::new(move |level: Option<&str>| {
        let f = EnvFilter::try_new(level.unwrap_or(&initial)).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log = init_logging();
    // One thread is plenty for an agent, and keeps its memory small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let dir = StateDir::new(&cli.state_dir, cli.wrap_key_file.clone());
    match cli.cmd {
        Cmd::Enroll {
            token,
            resolve,
            hostname: name,
        } => {
            let id = rt
                .block_on(run::enroll(
                    &dir,
                    &token,
                    resolve,
                    &name.unwrap_or_else(hostname),
                ))
                .context("enrollment failed")?;
            println!(
                "enrolled as device {} of tenant {}",
                id.device_id, id.tenant_id
            );
            println!("state dir: {}", cli.state_dir.display());
        }
        Cmd::Run {
            heartbeat_secs,
            outbox_mib,
            poll_wait_secs,
            netflow_listen,
            zeek_conn,
            eve,
            default_sampling_rate,
            max_flows_per_exporter,
            firewall,
            wireguard_interface,
            wireguard_userspace,
        } => {
            if heartbeat_secs == 0 || outbox_mib == 0 {
                bail!("--heartbeat-secs and --outbox-mib must be at least 1");
            }
            if let Some(name) = &wireguard_interface {
                rampart_agent::wg::check_interface_name(name).map_err(anyhow::Error::msg)?;
            }
            let opts = RunOptions {
                heartbeat_every: Duration::from_secs(heartbeat_secs),
                outbox_max_bytes: outbox_mib * 1024 * 1024,
                poll_wait: poll_wait_secs.map(Duration::from_secs),
                flows: rampart_agent::pipeline::FlowOptions {
                    netflow_listen,
                    zeek_conn,
                    eve,
                    default_sampling_rate,
                    max_flows_per_exporter,
                    ..Default::default()
                },
                log: Some(log),
                firewall,
                wireguard: rampart_agent::wg::WgOptions {
                    interface: wireguard_interface,
                    userspace: wireguard_userspace,
                    ..Default::default()
                },
            };
            let end = rt
                .block_on(async {
                    let shutdown = std::pin::pin!(shutdown_signal());
                    run::run_until(dir, opts, shutdown).await
                })
                .context("agent failed")?;
            if end == run::RunEnd::Restart {
                // Nothing of this run may linger into the next image.
                drop(rt);
                return Err(rampart_agent::actions::reexec())
                    .context("restarting the agent (re-executing it) failed");
            }
        }
        Cmd::Status { health, json } => {
            let status = dir.status().context("reading status")?;
            if health {
                let ok = status
                    .as_ref()
                    .is_some_and(|s| run::is_healthy(s, rampart_agent::client::time_now()));
                println!("{}", if ok { "healthy" } else { "unhealthy" });
                std::process::exit(if ok { 0 } else { 1 });
            }
            let id = dir.identity().context("reading identity")?;
            let outbox = run::open_outbox(&dir, u64::MAX)?.stats()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"identity": id, "status": status, "outbox": {
                        "batches": outbox.batches, "bytes": outbox.bytes,
                        "dropped_batches": outbox.dropped_batches, "dropped_bytes": outbox.dropped_bytes}})
                );
            } else {
                println!("device      {}", id.device_id);
                println!("tenant      {}", id.tenant_id);
                println!("portal      {}", id.portal_url);
                println!(
                    "outbox      {} batches, {} bytes",
                    outbox.batches, outbox.bytes
                );
                println!(
                    "dropped     {} batches, {} bytes",
                    outbox.dropped_batches, outbox.dropped_bytes
                );
                match status {
                    Some(s) => {
                        let now = rampart_agent::client::time_now();
                        println!(
                            "run loop    {} (pid {}, updated {}s ago)",
                            if run::is_healthy(&s, now) {
                                "alive"
                            } else {
                                "stale"
                            },
                            s.pid,
                            now.saturating_sub(s.updated_at)
                        );
                        println!("last seq    {}", s.last_applied_seq);
                        println!(
                            "last contact {}",
                            s.last_contact
                                .map(|t| format!("{}s ago", now.saturating_sub(t)))
                                .unwrap_or_else(|| "never".into())
                        );
                        println!(
                            "last error  {}",
                            s.last_error.unwrap_or_else(|| "none".into())
                        );
                        if let Some(f) = &s.flows {
                            print_flows(f);
                        }
                    }
                    None => println!("run loop    never ran"),
                }
            }
        }
        Cmd::Send {
            kind,
            priority,
            file,
        } => {
            let priority = match priority.as_str() {
                "alarm" => Priority::Alarm,
                "health" => Priority::Health,
                "data" => Priority::Data,
                other => bail!("unknown priority {other}: use alarm, health or data"),
            };
            let meta =
                std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
            if meta.len() > rampart_proto::batch::MAX_PLAINTEXT_BYTES as u64 {
                bail!(
                    "{} is larger than one batch may be (64 MiB): split it",
                    file.display()
                );
            }
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let items = data
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u32;
            let outbox = run::open_outbox(&dir, 256 * 1024 * 1024)?;
            let id = run::enqueue(&dir.identity()?, &outbox, &kind, priority, items, &data)?;
            println!("{id}");
        }
        Cmd::Decode { file } => std::process::exit(rampart_agent::decode::run(&file)),
    }
    Ok(())
}
