//! `rampart`: the portal binary. Parses flags and calls the library.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use rampart_portal::audit::Actor;
use rampart_portal::config::Config;
use rampart_portal::service::Portal;
use rampart_store::TenantStatus;

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "Rampart multi-tenant security portal"
)]
struct Cli {
    /// TOML config file (see `rampart config defaults`).
    #[arg(long, env = "RAMPART_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long, env = "RAMPART_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Master key file (default <data-dir>/master.key); RAMPART_MASTER_KEY wins.
    #[arg(long, env = "RAMPART_MASTER_KEY_FILE", global = true)]
    master_key_file: Option<PathBuf>,
    /// During a master key rotation: the previous master key's file.
    #[arg(long, env = "RAMPART_PREVIOUS_MASTER_KEY_FILE", global = true)]
    previous_master_key_file: Option<PathBuf>,
    /// Key vault directory (default <data-dir>/vault).
    #[arg(long, env = "RAMPART_VAULT_DIR", global = true)]
    vault_dir: Option<PathBuf>,
    /// Domain of the admin API.
    #[arg(long, env = "RAMPART_ADMIN_DOMAIN", global = true)]
    admin_domain: Option<String>,
    /// Port written into enrollment tokens (default: the listen port).
    #[arg(long, env = "RAMPART_PUBLIC_PORT", global = true)]
    public_port: Option<u16>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// HTTPS listen address.
    #[arg(long, env = "RAMPART_LISTEN")]
    listen: Option<SocketAddr>,
    /// Seconds a device long poll is held.
    #[arg(long, env = "RAMPART_POLL_WAIT_SECS")]
    poll_wait_secs: Option<u64>,
    /// Seconds without contact before a device shows offline.
    #[arg(long, env = "RAMPART_OFFLINE_AFTER_SECS")]
    offline_after_secs: Option<u64>,
    /// Plain-HTTP metrics listener, or `off`.
    #[arg(long, env = "RAMPART_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// `text` or `json` logs.
    #[arg(long, env = "RAMPART_LOG_FORMAT")]
    log_format: Option<String>,
    /// MaxMind-format database for flow country/ASN enrichment (repeatable;
    /// env: comma-separated).
    #[arg(
        long = "geoip-file",
        env = "RAMPART_GEOIP_FILES",
        value_delimiter = ','
    )]
    geoip_files: Vec<PathBuf>,
    /// Seconds of silence before an active agent raises an alarm.
    #[arg(long, env = "RAMPART_AGENT_OFFLINE_ALARM_SECS")]
    agent_offline_alarm_secs: Option<u64>,
    /// Allow webhooks to loopback and private addresses.
    #[arg(long, env = "RAMPART_ALARM_WEBHOOKS_ALLOW_PRIVATE")]
    alarm_webhooks_allow_private: bool,
    /// Tries per webhook delivery before it is dead-lettered.
    #[arg(long, env = "RAMPART_ALARM_WEBHOOK_ATTEMPTS")]
    alarm_webhook_attempts: Option<u32>,
    /// Seconds before the first retry of a failed webhook (doubling after).
    #[arg(long, env = "RAMPART_ALARM_WEBHOOK_RETRY_SECS")]
    alarm_webhook_retry_secs: Option<u64>,
    /// SMTP relay for alarm email (smtps://, smtp+starttls:// or smtp://).
    #[arg(long, env = "RAMPART_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender address of alarm email.
    #[arg(long, env = "RAMPART_SMTP_FROM")]
    smtp_from: Option<String>,
    /// Stripe webhook signing secret (whsec_...); prefer the env variable,
    /// which `ps` does not show.
    #[arg(long, env = "RAMPART_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    stripe_webhook_secret: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the portal (production start).
    Serve(ServeArgs),
    /// Serve with a demo tenant and a local demo agent, and print how to use them.
    Demo(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Plans: days visible and stored, device limit, features.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Manage enrollment tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Operator tokens for the admin API.
    #[command(subcommand)]
    AdminToken(AdminTokenCmd),
    /// A tenant's alarms: list, show, acknowledge, resolve.
    #[command(subcommand)]
    Alarms(AlarmsCmd),
    /// Device configuration: layered documents, rollout, rollback, drift.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// The audit log: verify its hash chain, list entries.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// User accounts: a tenant's users (`--tenant`) or MSP operator users (`--msp`).
    #[command(subcommand)]
    User(UserCmd),
    /// Encryption keys: rotate, re-encrypt, status, master key rotation.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// A tenant's daily and weekly reports.
    #[command(subcommand)]
    Reports(ReportsCmd),
    /// Take an encrypted, consistent snapshot of the data dir (the portal
    /// may keep running). Leaves out the master key and the key vault.
    Backup {
        /// New directory for the backup (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new data dir (--data-dir), with the master
    /// key of the portal that made it (--master-key-file or
    /// RAMPART_MASTER_KEY).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The key vault directory to copy in (it is never in a backup).
        #[arg(long)]
        vault: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant; prints its first admin API token.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        domain: String,
        /// Operator-provided certificate chain (PEM).
        #[arg(long, requires = "key_file")]
        cert_file: Option<String>,
        #[arg(long, requires = "cert_file")]
        key_file: Option<String>,
        /// The tenant's region: this deployment's (config `region`) by
        /// default; another region's is refused with its deployment's URL.
        #[arg(long)]
        region: Option<String>,
    },
    List,
    Show {
        tenant: String,
    },
    Suspend {
        tenant: String,
    },
    Resume {
        tenant: String,
    },
    /// Put a tenant on a plan, with optional overrides of its values.
    Plan {
        tenant: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        visible_days: Option<u32>,
        #[arg(long)]
        stored_days: Option<u32>,
        #[arg(long)]
        max_devices: Option<u32>,
        /// Comma-separated features (flows, alarms, checks, config, vpn).
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
    },
    /// Cancel a tenant: access stops now, keys and data are destroyed after
    /// `tenant_delete_after_secs` unless it is reactivated.
    Cancel {
        tenant: String,
    },
    /// Undo a cancellation inside its window.
    Reactivate {
        tenant: String,
    },
    /// Set how many days of flows the tenant sees and how many are stored.
    FlowPlan {
        tenant: String,
        #[arg(long)]
        visible_days: u32,
        #[arg(long)]
        stored_days: u32,
    },
}

#[derive(Subcommand)]
enum PlanCmd {
    List,
    /// Create or replace a plan.
    Set {
        name: String,
        #[arg(long)]
        visible_days: u32,
        #[arg(long)]
        stored_days: u32,
        /// No limit when absent.
        #[arg(long)]
        max_devices: Option<u32>,
        /// Comma-separated features (flows, alarms, checks, config, vpn).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "flows,alarms,checks,config,vpn"
        )]
        features: Vec<String>,
    },
    /// Delete a plan no tenant is on.
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an enrollment token (printed once).
    Create {
        #[arg(long)]
        tenant: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: i64,
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        needs_approval: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Revoke {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
    },
}

/// `--doc` is `tenant`, `group:NAME` or `device:ID`.
#[derive(Subcommand)]
enum FleetCmd {
    /// Print a document (the newest version, or --version).
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "tenant")]
        doc: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Save a new version from a JSON file and roll it out.
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "tenant")]
        doc: String,
        /// The document (JSON).
        file: PathBuf,
        #[arg(long, default_value = "")]
        comment: String,
        /// The version this edit is based on: a newer one refuses the save.
        /// Without it, the newest version is the base.
        #[arg(long)]
        base_version: Option<u64>,
    },
    /// Save an earlier version's content as the newest and roll it out.
    Rollback {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "tenant")]
        doc: String,
        #[arg(long)]
        to: u64,
    },
    /// Desired and applied configuration revision of every device.
    Drift {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ReportsCmd {
    /// Make a report now for a period that has ended (one per period).
    Generate {
        #[arg(long)]
        tenant: String,
        /// daily or weekly.
        #[arg(long)]
        kind: String,
        /// The period's first day, YYYY-MM-DD (UTC; a Monday for weekly).
        /// Default: the last period that has ended.
        #[arg(long)]
        period_start: Option<String>,
    },
}

#[derive(Subcommand)]
enum AlarmsCmd {
    /// Newest first; archived ones only with --state archived.
    List {
        #[arg(long)]
        tenant: String,
        /// active, acknowledged, resolved or archived.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One alarm with its evidence and history.
    Show {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
    },
    Ack {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
    },
    Resolve {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
    },
    Archive {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
    },
    /// Assign to someone (omit --to to unassign).
    Assign {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
        #[arg(long)]
        to: Option<String>,
    },
    /// Add a note to the alarm's history.
    Note {
        #[arg(long)]
        tenant: String,
        id: uuid::Uuid,
        text: String,
    },
    /// Silence matching alarms (recorded, not notified) for a while.
    Mute {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// Hours until the rule expires (default: never).
        #[arg(long)]
        hours: Option<u32>,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain; exits non-zero naming the first bad seq.
    Verify {
        /// A head printed by an earlier verify (SEQ:HASH), kept outside the
        /// data dir: also catches a rewrite of the whole tail.
        #[arg(long)]
        expect: Option<String>,
    },
    /// Entries oldest first, every tenant's or one tenant's.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Whose users: one tenant's, or the portal's MSP operator users.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct UserScope {
    /// The tenant (name or id).
    #[arg(long)]
    tenant: Option<String>,
    /// MSP operator users, who act on a tenant only where its owner granted it.
    #[arg(long)]
    msp: bool,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user. With --password-stdin the first line of stdin is its
    /// password; otherwise a tenant user gets a one-time setup token (printed
    /// once) to set it at POST /api/v1/auth/setup.
    Create {
        #[command(flatten)]
        scope: UserScope,
        #[arg(long)]
        email: String,
        /// owner, admin, analyst or read_only (tenant users only).
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List live users.
    List {
        #[command(flatten)]
        scope: UserScope,
    },
    /// Offboard a user: every session and every token it created are revoked at once.
    Offboard {
        #[command(flatten)]
        scope: UserScope,
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a new data key version for a tenant; new writes use it at once,
    /// older data is re-encrypted by `serve` in the background (or `reencrypt`).
    Rotate {
        #[arg(long)]
        tenant: String,
    },
    /// A tenant's key versions and how much data each still holds.
    Status {
        #[arg(long)]
        tenant: String,
    },
    /// Re-encrypt data under old key versions now and retire them (what the
    /// background job does, run to the end); also re-wraps the vault.
    Reencrypt {
        /// At most this many passes (each bounded by key_rekey_batch).
        #[arg(long, default_value_t = 10_000)]
        max_passes: u32,
    },
    /// Re-wrap every vault entry and the CA key under the current master key.
    /// Give the new key as --master-key-file and the old one as
    /// --previous-master-key-file; destroy the old key afterwards.
    RotateMaster,
}

#[derive(Subcommand)]
enum AdminTokenCmd {
    /// Create an operator token (printed once).
    Create {
        #[arg(long, default_value = "operator")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the documented defaults as TOML.
    Defaults,
}

fn load_config(cli: &Cli, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
    let mut c = match &cli.config {
        Some(p) => Config::from_file(p).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    if let Some(d) = &cli.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(f) = &cli.master_key_file {
        c.master_key_file = Some(f.clone());
    }
    if let Some(f) = &cli.previous_master_key_file {
        c.previous_master_key_file = Some(f.clone());
    }
    if let Some(d) = &cli.vault_dir {
        c.vault_dir = Some(d.clone());
    }
    if let Some(d) = &cli.admin_domain {
        c.admin_domain = d.clone();
    }
    if let Some(p) = cli.public_port {
        c.public_port = Some(p);
    }
    if let Some(s) = serve {
        if let Some(l) = s.listen {
            c.listen = l;
        }
        if let Some(w) = s.poll_wait_secs {
            c.poll_wait_secs = w;
        }
        if let Some(o) = s.offline_after_secs {
            c.offline_after_secs = o;
        }
        match s.metrics_listen.as_deref() {
            None => {}
            Some("off") | Some("") => c.metrics_listen = None,
            Some(a) => {
                c.metrics_listen = Some(a.parse().with_context(|| format!("--metrics-listen {a}"))?)
            }
        }
        if let Some(f) = &s.log_format {
            c.log_format = f.clone();
        }
        if !s.geoip_files.is_empty() {
            c.geoip_files = s.geoip_files.clone();
        }
        if let Some(v) = s.agent_offline_alarm_secs {
            c.agent_offline_alarm_secs = v;
        }
        if s.alarm_webhooks_allow_private {
            c.alarm_webhooks_allow_private = true;
        }
        if let Some(v) = s.alarm_webhook_attempts {
            c.alarm_webhook_attempts = v;
        }
        if let Some(v) = s.alarm_webhook_retry_secs {
            c.alarm_webhook_retry_secs = v;
        }
        if let Some(v) = &s.smtp_url {
            c.smtp_url = Some(v.clone());
        }
        if let Some(v) = &s.smtp_from {
            c.smtp_from = v.clone();
        }
        if let Some(v) = &s.stripe_webhook_secret {
            c.stripe_webhook_secret = Some(v.clone());
        }
    }
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn print<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let serve_args = match &cli.cmd {
        Cmd::Serve(a) | Cmd::Demo(a) => Some(a.clone()),
        _ => None,
    };
    let mut config = load_config(&cli, serve_args.as_ref())?;
    if matches!(cli.cmd, Cmd::Demo(_)) && serve_args.as_ref().is_some_and(|a| a.listen.is_none()) {
        // The demo stays on loopback unless told otherwise.
        config.listen = SocketAddr::from(([127, 0, 0, 1], 8443));
    }
    init_logging(&config.log_format);
    if let Cmd::Config(ConfigCmd::Defaults) = cli.cmd {
        print!("{}", rampart_portal::config::defaults_toml());
        return Ok(());
    }
    if let Cmd::Restore { from, vault } = &cli.cmd {
        return restore_cmd(&config, from, vault.as_deref(), cli.json).await;
    }
    if matches!(cli.cmd, Cmd::Backup { .. }) && !config.db_path().exists() {
        // Opening the portal would create an empty store (and a new
        // master key) to back up.
        bail!(
            "no database at {}: give the --data-dir of the portal to back up",
            config.db_path().display()
        );
    }
    let portal =
        Arc::new(Portal::open(config.clone()).await.with_context(|| {
            format!("opening the portal data dir {}", config.data_dir.display())
        })?);
    match cli.cmd {
        Cmd::Serve(_) => {
            let listener = rampart_portal::bind(config.listen)
                .with_context(|| format!("binding {}", config.listen))?;
            rampart_portal::run(portal, listener, shutdown_signal()).await?;
        }
        Cmd::Demo(_) => demo::run(portal).await?,
        Cmd::Tenant(t) => tenant_cmd(&portal, t, cli.json).await?,
        Cmd::Plan(c) => plan_cmd(&portal, c, cli.json).await?,
        Cmd::Token(t) => token_cmd(&portal, t, cli.json).await?,
        Cmd::Alarms(a) => alarms_cmd(&portal, a, cli.json).await?,
        Cmd::Audit(a) => audit_cmd(&portal, a, cli.json).await?,
        Cmd::Fleet(f) => fleet_cmd(&portal, f, cli.json).await?,
        Cmd::User(u) => user_cmd(&portal, u, cli.json).await?,
        Cmd::Keys(k) => keys_cmd(&portal, k, cli.json).await?,
        Cmd::Reports(ReportsCmd::Generate {
            tenant,
            kind,
            period_start,
        }) => {
            let t = portal.find_tenant(&tenant).await?;
            let now = rampart_portal::service::now();
            let (info, r) = rampart_portal::reports::generate_now(
                &portal,
                &t,
                &kind,
                period_start.as_deref(),
                now,
            )
            .await?;
            let v = serde_json::json!({"id": info.id, "report": r});
            print(cli.json, &v, || {
                format!(
                    "{} report {} for {}: {} to {}; download it at /api/v1/reports/{}/pdf",
                    r.kind, info.id, t.name, r.period_start, r.period_end, info.id
                )
            });
        }
        Cmd::AdminToken(AdminTokenCmd::Create { name }) => {
            let t = portal
                .mint_api_token(&Actor::Cli, None, &name, "operator", None)
                .await?;
            print(
                cli.json,
                &serde_json::json!({"id": t.row.id, "token": t.secret}),
                || format!("operator token (shown once): {}", t.secret),
            );
        }
        Cmd::Backup { out } => {
            let s = rampart_portal::backup::create(&portal, &out)
                .await
                .with_context(|| {
                    format!(
                        "backing up {} to {}",
                        config.data_dir.display(),
                        out.display()
                    )
                })?;
            print(cli.json, &s, || {
                format!(
                    "backup {} written to {}: database (migration {}) and {} blobs, {} bytes\n\
                     not included: the master key and the {}/ key vault; keep them separately",
                    s.backup_id,
                    s.dir.display(),
                    s.migration_level,
                    s.blobs,
                    s.bytes,
                    rampart_portal::backup::VAULT_DIR
                )
            });
        }
        Cmd::Config(_) | Cmd::Restore { .. } => unreachable!("handled above"),
    }
    Ok(())
}

async fn keys_cmd(p: &Portal, cmd: KeysCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Rotate { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let version = p.rotate_tenant_key(&Actor::Cli, t.id).await?;
            print(json, &serde_json::json!({"version": version}), || {
                format!(
                    "tenant {} now writes with data key version {version}; older data is \
                     re-encrypted in the background",
                    t.name
                )
            });
        }
        KeysCmd::Status { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let s = p.key_status(t.id).await?;
            print(json, &s, || {
                let mut out = format!(
                    "tenant {}: current version {}, {} rows and {} segments on old versions, \
                     {} segments unverified, master key {}\n",
                    t.name,
                    s.current_version,
                    s.rows_on_old_versions,
                    s.segments_on_old_versions,
                    s.segments_unverified,
                    s.master_key_id
                );
                for v in &s.versions {
                    out.push_str(&format!(
                        "  v{} {} rows {} segments {}\n",
                        v.version,
                        match (v.current, v.retired_at) {
                            (true, _) => "current",
                            (false, Some(_)) => "retired",
                            (false, None) => "old",
                        },
                        v.rows,
                        v.segments
                    ));
                }
                out.trim_end().to_string()
            });
        }
        KeysCmd::Reencrypt { max_passes } => {
            let r = p.rekey_until_done(max_passes).await?;
            print(json, &r, || {
                format!(
                    "re-encrypted {} rows and {} segments, retired {} versions, re-wrapped {} \
                     vault entries; {} tenants still pending",
                    r.rows_resealed,
                    r.segments_resealed,
                    r.versions_retired,
                    r.vault_entries_rewrapped,
                    r.tenants_pending
                )
            });
        }
        KeysCmd::RotateMaster => {
            let n = p.rotate_master(&Actor::Cli).await?;
            let id = p.vault_status().await?.master_key_id;
            print(
                json,
                &serde_json::json!({"vault_entries_rewrapped": n, "master_key_id": id}),
                || {
                    format!(
                        "re-wrapped {n} vault entries and the CA key under master key {id}: \
                         the previous master key is no longer needed"
                    )
                },
            );
        }
    }
    Ok(())
}

async fn tenant_cmd(p: &Portal, cmd: TenantCmd, json: bool) -> anyhow::Result<()> {
    use rampart_portal::routes::admin::tenant_view;
    match cmd {
        TenantCmd::Create {
            name,
            domain,
            cert_file,
            key_file,
            region,
        } => {
            let files = cert_file.zip(key_file);
            let t = p
                .create_tenant_in(&Actor::Cli, &name, &domain, region.as_deref(), files)
                .await?;
            let tok = p
                .mint_api_token(&Actor::Cli, Some(t.id), "initial owner", "owner", None)
                .await?;
            let v = tenant_view(p, &t);
            print(
                json,
                &serde_json::json!({"tenant": v, "admin_token": tok.secret, "role": "owner"}),
                || {
                    format!(
                        "tenant {} ({}) created at {}\nowner api token (shown once): {}",
                        t.name, t.id, v.url, tok.secret
                    )
                },
            );
        }
        TenantCmd::List => {
            let ts = p.store.list_tenants().await?;
            let vs: Vec<_> = ts.iter().map(|t| tenant_view(p, t)).collect();
            print(json, &vs, || {
                vs.iter()
                    .map(|v| {
                        format!(
                            "{}  {:<20} {:<10} {:<10} {}",
                            v.id, v.name, v.status, v.region, v.url
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TenantCmd::Show { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let pin = p.tenant_pin(&t).await?;
            let v = tenant_view(p, &t);
            print(json, &serde_json::json!({"tenant": v, "pin": pin}), || {
                format!(
                    "{}  {} {}\nurl {}\npin {}",
                    v.id, v.name, v.status, v.url, pin
                )
            });
        }
        TenantCmd::Suspend { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            p.set_tenant_status(&Actor::Cli, t.id, TenantStatus::Suspended)
                .await?;
            println!("tenant {} suspended", t.name);
        }
        TenantCmd::Resume { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            p.set_tenant_status(&Actor::Cli, t.id, TenantStatus::Active)
                .await?;
            println!("tenant {} resumed", t.name);
        }
        TenantCmd::Plan {
            tenant,
            plan,
            visible_days,
            stored_days,
            max_devices,
            features,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let tp = rampart_store::TenantPlan {
                plan,
                visible_days,
                stored_days,
                max_devices,
                features,
            };
            let eff = p.set_tenant_plan(&Actor::Cli, t.id, tp).await?;
            print(json, &eff, || {
                format!(
                    "tenant {} on plan {}: visible {} days, stored {} days, devices {}, features {}",
                    t.name,
                    eff.plan,
                    eff.visible_days,
                    eff.stored_days,
                    eff.max_devices.map_or("unlimited".into(), |n| n.to_string()),
                    eff.features.join(",")
                )
            });
        }
        TenantCmd::Cancel { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let t = p.cancel_tenant(&Actor::Cli, t.id).await?;
            let v = tenant_view(p, &t);
            print(json, &v, || {
                format!(
                    "tenant {} cancelled; its keys and data will be destroyed at {} unless it is reactivated",
                    t.name,
                    v.delete_after.clone().unwrap_or_default()
                )
            });
        }
        TenantCmd::Reactivate { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let t = p.reactivate_tenant(&Actor::Cli, t.id).await?;
            println!("tenant {} reactivated", t.name);
        }
        TenantCmd::FlowPlan {
            tenant,
            visible_days,
            stored_days,
        } => {
            let plan = rampart_portal::routes::admin::FlowPlan {
                visible_days,
                stored_days,
            };
            rampart_portal::routes::admin::validate_flow_plan(&plan)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let t = p.find_tenant(&tenant).await?;
            p.set_flow_plan(&Actor::Cli, t.id, visible_days, stored_days)
                .await?;
            print(json, &plan, || {
                format!(
                    "tenant {}: flows visible {visible_days} days, stored {stored_days} days",
                    t.name
                )
            });
        }
    }
    Ok(())
}

async fn plan_cmd(p: &Portal, cmd: PlanCmd, json: bool) -> anyhow::Result<()> {
    let line = |pl: &rampart_store::Plan| {
        format!(
            "{:<16} visible {:>5} d  stored {:>5} d  devices {:<10} {}",
            pl.name,
            pl.visible_days,
            pl.stored_days,
            pl.max_devices.map_or("unlimited".into(), |n| n.to_string()),
            pl.features.join(",")
        )
    };
    match cmd {
        PlanCmd::List => {
            let plans = p.store.list_plans().await?;
            print(json, &plans, || {
                plans.iter().map(line).collect::<Vec<_>>().join("\n")
            });
        }
        PlanCmd::Set {
            name,
            visible_days,
            stored_days,
            max_devices,
            features,
        } => {
            let plan = rampart_store::Plan {
                name,
                visible_days,
                stored_days,
                max_devices,
                features,
                updated_at: 0,
            };
            let plan = p.set_plan(&Actor::Cli, plan).await?;
            print(json, &plan, || line(&plan));
        }
        PlanCmd::Delete { name } => {
            p.delete_plan(&Actor::Cli, &name).await?;
            println!("plan {name} deleted");
        }
    }
    Ok(())
}

/// Restores before any portal opens the target, then opens it once to
/// check that the master key opens the restored store and to record the
/// restore in its audit log.
async fn restore_cmd(
    config: &Config,
    from: &std::path::Path,
    vault: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    use rampart_portal::backup;
    let master = rampart_portal::crypto::load_existing_master_key(&config.master_key_path())
        .map_err(anyhow::Error::msg)?;
    let s = backup::restore(config, &master, from, vault)
        .await
        .with_context(|| {
            format!(
                "restoring {} into {}",
                from.display(),
                config.data_dir.display()
            )
        })?;
    let portal = Portal::open(config.clone()).await.with_context(|| {
        format!(
            "opening the restored data dir {}",
            config.data_dir.display()
        )
    })?;
    backup::record_restore(&portal, &s, from).await?;
    let vault_note = if s.vault_copied {
        "key vault copied in".to_string()
    } else {
        format!(
            "no key vault given: put it in {} before serving, if this portal has one",
            config.data_dir.join(backup::VAULT_DIR).display()
        )
    };
    print(json, &s, || {
        format!(
            "backup {} restored into {}: database (migration {}) and {} blobs, {} bytes\n{vault_note}\n\
             serve it with the same master key",
            s.backup_id,
            s.data_dir.display(),
            s.migration_level,
            s.blobs,
            s.bytes
        )
    });
    Ok(())
}

fn doc_ref(doc: &str) -> anyhow::Result<rampart_portal::devconf::DocRef> {
    let (layer, scope) = doc.split_once(':').unwrap_or((doc, "-"));
    Ok(rampart_portal::devconf::DocRef::parse(layer, scope)?)
}

async fn fleet_cmd(p: &Portal, cmd: FleetCmd, json: bool) -> anyhow::Result<()> {
    use rampart_portal::devconf;
    let newest = |t: rampart_store::TenantId, d: devconf::DocRef| async move {
        let row = p
            .store
            .config_doc(t, d.layer.as_str(), &d.scope, None)
            .await?;
        anyhow::Ok(row.map(|r| r.version).unwrap_or(0))
    };
    match cmd {
        FleetCmd::Show {
            tenant,
            doc,
            version,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let d = doc_ref(&doc)?;
            let row = p
                .store
                .config_doc(t.id, d.layer.as_str(), &d.scope, version)
                .await?
                .with_context(|| {
                    format!("{doc} has no such version: see the versions with the API")
                })?;
            print(json, &row, || {
                format!(
                    "version {} by {} at {}: {}\n{}",
                    row.version,
                    row.author,
                    rampart_portal::routes::rfc3339(row.created_at),
                    row.comment,
                    serde_json::to_string_pretty(&row.body).unwrap_or_default()
                )
            });
        }
        FleetCmd::Set {
            tenant,
            doc,
            file,
            comment,
            base_version,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let d = doc_ref(&doc)?;
            let body: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            )
            .with_context(|| format!("{} is not JSON", file.display()))?;
            let base = match base_version {
                Some(b) => b,
                None => newest(t.id, d.clone()).await?,
            };
            let out = devconf::save(p, &Actor::Cli, t.id, &d, body, base, &comment, None).await?;
            print(json, &out, || {
                format!(
                    "saved version {}; {} devices sent it",
                    out.version, out.queued
                )
            });
        }
        FleetCmd::Rollback { tenant, doc, to } => {
            let t = p.find_tenant(&tenant).await?;
            let out = devconf::rollback(p, &Actor::Cli, t.id, &doc_ref(&doc)?, to, None).await?;
            print(json, &out, || {
                format!(
                    "version {} has version {to}'s content; {} devices sent it",
                    out.version, out.queued
                )
            });
        }
        FleetCmd::Drift { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let rows = p.store.device_configs(t.id).await?;
            print(json, &rows, || {
                rows.iter()
                    .map(|r| {
                        let applied = r
                            .applied_revision
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into());
                        format!(
                            "{}  desired {:<6} applied {:<6} {:<8} {}",
                            r.device_id,
                            r.desired_revision,
                            applied,
                            r.status,
                            r.error.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

async fn alarms_cmd(p: &Portal, cmd: AlarmsCmd, json: bool) -> anyhow::Result<()> {
    use rampart_portal::routes::alarms::{AlarmView, HistoryView};
    use rampart_store::{AlarmFilter, AlarmState, AlarmUpdate};
    let line = |a: &AlarmView| {
        format!(
            "{}  {:<12} {:<8} {:<20} x{:<5} {}  {}",
            a.id, a.state, a.severity, a.kind, a.count, a.last_seen, a.title
        )
    };
    let change = |tenant: String, id: uuid::Uuid, u: AlarmUpdate| async move {
        let t = p.find_tenant(&tenant).await?;
        let a = p
            .store
            .update_alarm(t.id, id, "cli", &u, rampart_portal::service::now())
            .await
            .with_context(|| format!("alarm {id} of tenant {}", t.name))?;
        // A running portal notifies state changes from the history.
        anyhow::Ok(AlarmView::from(&a))
    };
    match cmd {
        AlarmsCmd::List {
            tenant,
            state,
            kind,
            severity,
            limit,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let state = state
                .map(|s| {
                    AlarmState::parse(&s).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--state must be active, acknowledged, resolved or archived"
                        )
                    })
                })
                .transpose()?;
            let rows = p
                .store
                .list_alarms(
                    t.id,
                    &AlarmFilter {
                        state,
                        kind,
                        severity,
                        limit: limit.clamp(1, 1000),
                        ..Default::default()
                    },
                )
                .await?;
            let vs: Vec<AlarmView> = rows.iter().map(AlarmView::from).collect();
            print(json, &vs, || {
                vs.iter().map(line).collect::<Vec<_>>().join("\n")
            });
        }
        AlarmsCmd::Show { tenant, id } => {
            let t = p.find_tenant(&tenant).await?;
            let a = p
                .store
                .get_alarm(t.id, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no alarm {id} in tenant {}", t.name))?;
            let hist: Vec<HistoryView> = p
                .store
                .alarm_history(t.id, id)
                .await?
                .iter()
                .map(HistoryView::from)
                .collect();
            let v = AlarmView::from(&a);
            let text = || {
                let mut s = format!("{}\nevidence {}\n", line(&v), v.evidence);
                if let Some(f) = &v.flow_filter {
                    s.push_str(&format!("flows    {f}\n"));
                }
                for h in &hist {
                    s.push_str(&format!(
                        "{}  {:<10} {:<16} {}\n",
                        h.at, h.action, h.actor, h.detail
                    ));
                }
                s
            };
            print(
                json,
                &serde_json::json!({"alarm": v, "history": hist}),
                text,
            );
        }
        AlarmsCmd::Ack { tenant, id } => {
            let v = change(tenant, id, AlarmUpdate::State(AlarmState::Acknowledged)).await?;
            print(json, &v, || line(&v));
        }
        AlarmsCmd::Resolve { tenant, id } => {
            let v = change(tenant, id, AlarmUpdate::State(AlarmState::Resolved)).await?;
            print(json, &v, || line(&v));
        }
        AlarmsCmd::Archive { tenant, id } => {
            let v = change(tenant, id, AlarmUpdate::State(AlarmState::Archived)).await?;
            print(json, &v, || line(&v));
        }
        AlarmsCmd::Assign { tenant, id, to } => {
            if to.as_ref().is_some_and(|s| s.is_empty() || s.len() > 128) {
                bail!("--to must be 1 to 128 characters");
            }
            let v = change(tenant, id, AlarmUpdate::Assign(to)).await?;
            print(json, &v, || line(&v));
        }
        AlarmsCmd::Note { tenant, id, text } => {
            if text.is_empty() || text.len() > 4096 {
                bail!("the note must be 1 to 4096 characters");
            }
            let v = change(tenant, id, AlarmUpdate::Note(text)).await?;
            print(json, &v, || line(&v));
        }
        AlarmsCmd::Mute {
            tenant,
            kind,
            host,
            network,
            port,
            hours,
            comment,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let now = rampart_portal::service::now();
            let row = rampart_store::AlarmRuleRow {
                id: uuid::Uuid::new_v4(),
                action: "mute".into(),
                kind,
                host,
                network,
                port,
                expires_at: hours.map(|h| (now + i64::from(h) * 3600) * 1000),
                comment,
                created_at: now,
            };
            rampart_portal::alarms::create_rule(p, t.id, &row).await?;
            print(json, &row, || {
                format!("mute rule {} added to tenant {}", row.id, t.name)
            });
        }
    }
    Ok(())
}

async fn token_cmd(p: &Portal, cmd: TokenCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            tenant,
            ttl_secs,
            max_uses,
            labels,
            needs_approval,
        } => {
            let t = p.find_tenant(&tenant).await?;
            let (row, token) = p
                .create_enrollment_token(
                    &Actor::Cli,
                    &t,
                    ttl_secs,
                    max_uses,
                    labels,
                    needs_approval,
                )
                .await?;
            print(
                json,
                &serde_json::json!({"id": row.id, "token": token, "expires_at": row.expires_at}),
                || format!("enrollment token {} (shown once):\n{token}", row.id),
            );
        }
        TokenCmd::List { tenant } => {
            let t = p.find_tenant(&tenant).await?;
            let rows = p.store.list_enrollment_tokens(t.id).await?;
            let vs: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"id": r.id, "expires_at": r.expires_at, "uses": r.uses,
                    "max_uses": r.max_uses, "revoked": r.revoked_at.is_some(), "labels": r.labels})
                })
                .collect();
            print(json, &vs, || {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  uses {}/{}  revoked {}",
                            r.id,
                            r.uses,
                            r.max_uses,
                            r.revoked_at.is_some()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TokenCmd::Revoke { tenant, id } => {
            let t = p.find_tenant(&tenant).await?;
            if !p.revoke_enrollment_token(&Actor::Cli, t.id, id).await? {
                bail!("no enrollment token {id} in tenant {}", t.name);
            }
            println!("enrollment token {id} revoked");
        }
    }
    Ok(())
}

async fn audit_cmd(p: &Portal, cmd: AuditCmd, json: bool) -> anyhow::Result<()> {
    use rampart_portal::audit::{self, hex};
    match cmd {
        AuditCmd::Verify { expect } => {
            let expect = expect
                .map(|e| {
                    audit::parse_head(&e).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--expect must be SEQ:HASH as printed by `rampart audit verify`"
                        )
                    })
                })
                .transpose()?;
            // A broken chain is an error: the exit status says so, and the
            // message names the first seq that is wrong.
            let v = audit::verify(p.store.as_ref(), expect.as_ref())
                .await
                .with_context(|| {
                    format!("verifying the audit log in {}", p.config.data_dir.display())
                })?;
            let head = v
                .head
                .as_ref()
                .map(|h| format!("{}:{}", h.seq, hex(&h.hash)));
            print(
                json,
                &serde_json::json!({"ok": true, "entries": v.entries, "head": head}),
                || {
                    match &head {
                    Some(h) => format!(
                        "audit log intact: {} entries\nhead {h} (keep it elsewhere; pass it to --expect later)",
                        v.entries
                    ),
                    None => "audit log intact: no entries yet".into(),
                }
                },
            );
        }
        AuditCmd::List {
            tenant,
            after,
            limit,
        } => {
            let limit = limit.clamp(1, 10_000);
            let rows = match tenant {
                Some(t) => {
                    let t = p.find_tenant(&t).await?;
                    p.store.list_audit(t.id, after, limit).await?
                }
                None => p.store.audit_chain(after, limit).await?,
            };
            let vs: Vec<_> = rows
                .iter()
                .map(rampart_portal::routes::audit::AuditView::operator)
                .collect();
            print(json, &vs, || {
                vs.iter()
                    .map(|v| {
                        format!(
                            "{:>6}  {}  {:<36}  {:<24} {:<24} {}  {}",
                            v.seq,
                            v.at,
                            v.tenant_id
                                .map(|t| t.to_string())
                                .unwrap_or_else(|| "-".into()),
                            v.actor,
                            v.action,
                            v.target,
                            v.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

async fn user_cmd(p: &Portal, cmd: UserCmd, json: bool) -> anyhow::Result<()> {
    use rampart_portal::access::Role;
    use rampart_portal::users;
    async fn scope_of(p: &Portal, s: &UserScope) -> anyhow::Result<Option<rampart_store::Tenant>> {
        match &s.tenant {
            Some(t) => Ok(Some(p.find_tenant(t).await?)),
            None => Ok(None),
        }
    }
    match cmd {
        UserCmd::Create {
            scope,
            email,
            role,
            password_stdin,
        } => {
            let tenant = scope_of(p, &scope).await?;
            let role = match (&tenant, role.as_deref()) {
                (Some(_), Some(r)) => Some(Role::parse(r).with_context(|| {
                    format!("--role {r}: use owner, admin, analyst or read_only")
                })?),
                (Some(_), None) => {
                    bail!("a tenant user needs --role owner|admin|analyst|read_only")
                }
                (None, Some(_)) => {
                    bail!("msp users have no role of their own: a tenant's owner grants one")
                }
                (None, None) => None,
            };
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                Some(zeroize::Zeroizing::new(
                    line.trim_end_matches(['\r', '\n']).to_string(),
                ))
            } else {
                None
            };
            let c = users::create_user(
                p,
                &Actor::Cli,
                tenant.as_ref().map(|t| t.id),
                &email,
                role,
                password.as_deref().map(|s| s.as_str()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            print(
                json,
                &serde_json::json!({"id": c.user.id, "email": c.user.email, "role": c.user.role,
                    "setup_token": c.setup_token}),
                || match &c.setup_token {
                    Some(t) => format!(
                        "user {} ({}) invited\nsetup token (shown once): {t}",
                        c.user.email, c.user.id
                    ),
                    None => format!("user {} ({}) created", c.user.email, c.user.id),
                },
            );
        }
        UserCmd::List { scope } => {
            let tenant = scope_of(p, &scope).await?;
            let rows = p.store.list_users(tenant.map(|t| t.id)).await?;
            let vs: Vec<_> = rows
                .iter()
                .map(|u| {
                    serde_json::json!({"id": u.id, "email": u.email, "role": u.role,
                    "totp": u.totp_enabled, "invited": u.password_hash.is_none()})
                })
                .collect();
            print(json, &vs, || {
                rows.iter()
                    .map(|u| {
                        format!(
                            "{}  {:<40} {}",
                            u.id,
                            u.email,
                            u.role.as_deref().unwrap_or("msp")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCmd::Offboard { scope, email } => {
            let tenant = scope_of(p, &scope).await?.map(|t| t.id);
            let user = p
                .store
                .user_by_email(tenant, &email.to_ascii_lowercase())
                .await?
                .with_context(|| format!("no live user {email} there"))?;
            let n = users::offboard(p, &Actor::Cli, tenant, &user)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print(
                json,
                &serde_json::json!({"sessions_revoked": n.sessions, "tokens_revoked": n.tokens,
                    "grants_revoked": n.grants}),
                || {
                    format!(
                        "user {email} offboarded: {} sessions, {} tokens and {} grants revoked",
                        n.sessions, n.tokens, n.grants
                    )
                },
            );
        }
    }
    Ok(())
}
