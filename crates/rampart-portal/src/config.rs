//! Portal configuration: built-in defaults, then a TOML file, then
//! environment variables and flags (each flag has a `RAMPART_*` variable).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded store keeps its database, spool and CA.
    pub data_dir: PathBuf,
    /// HTTPS listen address for people, tools and agents.
    pub listen: SocketAddr,
    /// Port written into enrollment tokens, when a proxy or NAT maps the
    /// listen port to another one. Defaults to the listen port.
    pub public_port: Option<u16>,
    /// Domain name of the operator's admin API. Tenant domains must differ.
    pub admin_domain: String,
    /// File holding the 32-byte master key (base64). Defaults to
    /// `<data_dir>/master.key`. `RAMPART_MASTER_KEY` takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// During a master key rotation: the previous master key's file. The
    /// portal opens vault entries with either key and re-wraps them under
    /// the current one in the background (or `rampart keys rotate-master`).
    pub previous_master_key_file: Option<PathBuf>,
    /// The key vault: one file per tenant holding its root key, wrapped by
    /// the master key. Defaults to `<data_dir>/vault`. Not in backups: keep
    /// it (and the master key) separately, honouring the deletion window.
    pub vault_dir: Option<PathBuf>,
    /// Seconds between passes of the key rotation job (re-encryption of
    /// data under old key versions, master key re-wrap, retirement).
    pub key_rekey_interval_secs: u64,
    /// Rows and flow segments re-encrypted per tenant per pass.
    pub key_rekey_batch: u32,
    /// An old key version is retired only when nothing uses it and the
    /// newer one is at least this old, so every process has stopped
    /// writing under it (their key caches refresh within 60 s).
    pub key_retire_grace_secs: u64,
    /// How long a device long poll is held open, in seconds.
    pub poll_wait_secs: u64,
    /// A device not seen for this many seconds shows as offline.
    pub offline_after_secs: u64,
    /// Default lifetime of an instruction, in seconds.
    pub instruction_ttl_secs: u64,
    /// Plain-HTTP listener for Prometheus `/metrics`; keep it on loopback or
    /// a management network. Empty to disable.
    pub metrics_listen: Option<SocketAddr>,
    /// `text` or `json`.
    pub log_format: String,
    /// MaxMind-format databases (GeoLite2/GeoIP2 Country or City, ASN) used
    /// to add country and ASN to flows at ingest. Empty: no enrichment.
    pub geoip_files: Vec<PathBuf>,
    /// The plan new tenants are put on (`rampart plan list`; the
    /// `standard` plan, 30 days visible and 32 stored, exists from the start).
    pub default_plan: String,
    /// A cancelled tenant's keys and data are destroyed this many seconds
    /// after the cancellation; it can be reactivated until then.
    pub tenant_delete_after_secs: u64,
    /// How often the lifecycle job runs: retention per plan, the spool
    /// cleaner and the deletion of cancelled tenants.
    pub lifecycle_interval_secs: u64,
    /// How often the config job sends again configurations whose
    /// instruction expired or was lost, and moves staged rollouts on.
    pub config_reconcile_secs: u64,
    /// A batch's sealed frame stays in the spool this long after its flows
    /// and alarms were taken from it (for reprocessing after a bug fix);
    /// then only its record stays.
    pub spool_keep_secs: u64,
    /// Memory for decrypted flow segments and rollups kept for repeated
    /// queries, in MiB.
    pub flow_cache_mib: u64,
    /// An active agent silent for this many seconds raises an alarm.
    pub agent_offline_alarm_secs: u64,
    /// Let tenants point webhooks at loopback and private addresses. Off by
    /// default, so a tenant cannot make the portal call the provider's own
    /// network; turn on for a portal that notifies in-house systems.
    pub alarm_webhooks_allow_private: bool,
    /// Webhook deliveries are tried this many times before they are
    /// dead-lettered, waiting `alarm_webhook_retry_secs` after the first
    /// failure and twice as long after each next one (at most an hour).
    pub alarm_webhook_attempts: u32,
    pub alarm_webhook_retry_secs: u64,
    /// CA bundle that https webhook receivers are verified against.
    pub alarm_webhook_ca_file: PathBuf,
    /// SMTP relay for alarm email: `smtps://user:password@host[:465]`,
    /// `smtp+starttls://user:password@host[:587]` or `smtp://host[:25]`
    /// (no TLS, for a local relay). Unset: no email.
    pub smtp_url: Option<String>,
    /// Sender of alarm email.
    pub smtp_from: String,
    /// Signing secret of the Stripe webhook endpoint (`whsec_...`), which
    /// authenticates `POST /api/v1/billing/stripe`. Unset: the endpoint
    /// answers 404. Prefer `RAMPART_STRIPE_WEBHOOK_SECRET` to a file or flag.
    pub stripe_webhook_secret: Option<String>,
    /// Seconds a deleted blob (replaced flow segment, expired data) stays
    /// in `<data_dir>/blob-trash` before it is removed, and longer while a
    /// `rampart backup` holds its lease: an online backup can still copy a
    /// blob its snapshot names after compaction or retention deleted it.
    pub blob_delete_grace_secs: u64,
    /// The region this deployment serves (e.g. `us`, `eu`): every tenant it
    /// creates lives here, and its data stays in this deployment's store.
    pub region: String,
    /// The other regions' deployments: region name -> base URL of that
    /// deployment's admin API. A tenant asked for in one of them is refused
    /// here with its URL (see docs/regions.md).
    pub regions: std::collections::BTreeMap<String, String>,
    /// Failed logins in a row that lock an account, and for how long.
    pub login_max_failures: u32,
    pub login_lockout_secs: u64,
    /// Login attempts per client IP: a burst of `login_ip_burst`, refilled
    /// at `login_ip_per_min` a minute.
    pub login_ip_burst: u32,
    pub login_ip_per_min: u32,
    /// A session ends after this many seconds without a request, and in any
    /// case this long after login.
    pub session_idle_secs: u64,
    pub session_max_secs: u64,
    /// How long an invited user's one-time setup token is valid.
    pub user_setup_ttl_secs: u64,
    /// How often the report job looks for a daily or weekly period (UTC
    /// days; weeks from Monday) that ended and has no report yet.
    pub report_interval_secs: u64,
    /// A period is reported this long after it ends, so flows agents held
    /// in their outbox around midnight are in.
    pub report_delay_secs: u64,
    /// CA bundle that target list sources are verified against (default:
    /// `alarm_webhook_ca_file`).
    pub target_list_ca_file: Option<PathBuf>,
    /// Import sources tenants may bind target lists to, by name: only these
    /// are ever fetched (`[[target_list_sources]]` with `name`, an
    /// `https://` `url`, never shown to tenants, and `refresh_secs`).
    pub target_list_sources: Vec<crate::targets::TargetListSource>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./rampart-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_port: None,
            admin_domain: "localhost".into(),
            master_key_file: None,
            previous_master_key_file: None,
            vault_dir: None,
            key_rekey_interval_secs: 60,
            key_rekey_batch: 500,
            key_retire_grace_secs: 600,
            poll_wait_secs: 60,
            offline_after_secs: 180,
            instruction_ttl_secs: 3600,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            log_format: "text".into(),
            geoip_files: Vec::new(),
            default_plan: rampart_store::DEFAULT_PLAN.into(),
            tenant_delete_after_secs: 7 * 86_400,
            lifecycle_interval_secs: 60,
            config_reconcile_secs: 15,
            spool_keep_secs: 86_400,
            flow_cache_mib: 256,
            agent_offline_alarm_secs: 600,
            alarm_webhooks_allow_private: false,
            alarm_webhook_attempts: 8,
            alarm_webhook_retry_secs: 10,
            alarm_webhook_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            smtp_url: None,
            smtp_from: "rampart@localhost".into(),
            stripe_webhook_secret: None,
            region: "default".into(),
            regions: std::collections::BTreeMap::new(),
            blob_delete_grace_secs: 3600,
            login_max_failures: 5,
            login_lockout_secs: 900,
            login_ip_burst: 20,
            login_ip_per_min: 10,
            session_idle_secs: 1800,
            session_max_secs: 43_200,
            user_setup_ttl_secs: 3 * 86_400,
            report_interval_secs: 300,
            report_delay_secs: 900,
            target_list_ca_file: None,
            target_list_sources: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
    }

    pub fn public_port(&self) -> u16 {
        self.public_port.unwrap_or(self.listen.port())
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    pub fn vault_dir(&self) -> PathBuf {
        self.vault_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("vault"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("rampart.db")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    /// Deleted blobs during their grace period (see `blob_delete_grace_secs`).
    pub fn blob_trash_dir(&self) -> PathBuf {
        self.data_dir.join("blob-trash")
    }

    /// The local CA certificate, for clients that should trust the portal.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// Base URL of a tenant's API, as written into enrollment tokens.
    pub fn tenant_url(&self, domain: &str) -> String {
        match self.public_port() {
            443 => format!("https://{domain}"),
            p => format!("https://{domain}:{p}"),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.poll_wait_secs == 0 || self.poll_wait_secs > 600 {
            return Err("poll_wait_secs must be between 1 and 600".into());
        }
        if self.instruction_ttl_secs < 10 {
            return Err("instruction_ttl_secs must be at least 10".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err("log_format must be text or json".into());
        }
        if self.lifecycle_interval_secs == 0 || self.lifecycle_interval_secs > 86_400 {
            return Err("lifecycle_interval_secs must be between 1 and 86400".into());
        }
        if self.config_reconcile_secs == 0 || self.config_reconcile_secs > 3_600 {
            return Err("config_reconcile_secs must be between 1 and 3600".into());
        }
        if self.tenant_delete_after_secs > 366 * 86_400 {
            return Err("tenant_delete_after_secs must be at most a year (31622400)".into());
        }
        crate::service::validate_name(&self.default_plan)
            .map_err(|e| format!("default_plan: {e}"))?;
        if self.alarm_webhook_attempts == 0 || self.alarm_webhook_attempts > 100 {
            return Err("alarm_webhook_attempts must be between 1 and 100".into());
        }
        if self.alarm_webhook_retry_secs == 0 || self.alarm_webhook_retry_secs > 3600 {
            return Err("alarm_webhook_retry_secs must be between 1 and 3600".into());
        }
        if self.key_rekey_interval_secs == 0 || self.key_rekey_interval_secs > 86_400 {
            return Err("key_rekey_interval_secs must be between 1 and 86400".into());
        }
        if self.key_rekey_batch == 0 || self.key_rekey_batch > 100_000 {
            return Err("key_rekey_batch must be between 1 and 100000".into());
        }
        if self.agent_offline_alarm_secs < 30 {
            return Err("agent_offline_alarm_secs must be at least 30".into());
        }
        if self
            .stripe_webhook_secret
            .as_ref()
            .is_some_and(|s| s.trim().is_empty() || s.len() > 256)
        {
            return Err(
                "stripe_webhook_secret must be 1 to 256 characters: copy it from the stripe dashboard"
                    .into(),
            );
        }
        if !(1..=100).contains(&self.login_max_failures) {
            return Err("login_max_failures must be between 1 and 100".into());
        }
        if !(1..=86_400).contains(&self.login_lockout_secs) {
            return Err("login_lockout_secs must be between 1 and 86400".into());
        }
        if self.login_ip_burst == 0 || self.login_ip_per_min == 0 {
            return Err("login_ip_burst and login_ip_per_min must be at least 1".into());
        }
        if self.session_idle_secs < 60 || self.session_max_secs < self.session_idle_secs {
            return Err(
                "session_idle_secs must be at least 60 and session_max_secs at least session_idle_secs"
                    .into(),
            );
        }
        if self.session_max_secs > 30 * 86_400 {
            return Err("session_max_secs must be at most 2592000 (30 days)".into());
        }
        if !(60..=30 * 86_400).contains(&self.user_setup_ttl_secs) {
            return Err("user_setup_ttl_secs must be between 60 and 2592000".into());
        }
        crate::service::validate_domain(&self.admin_domain)
            .map_err(|e| format!("admin_domain: {e}"))?;
        validate_region(&self.region).map_err(|e| format!("region: {e}"))?;
        for (r, url) in &self.regions {
            validate_region(r).map_err(|e| format!("regions: {e}"))?;
            if r == &self.region {
                return Err(format!(
                    "regions must not name this deployment's own region {r}: list only the others"
                ));
            }
            if !url.starts_with("https://") || url.len() > 512 || url.contains(char::is_whitespace)
            {
                return Err(format!(
                    "regions.{r} must be the https:// url of that region's admin api"
                ));
            }
        }
        if !(1..=86_400).contains(&self.report_interval_secs) {
            return Err("report_interval_secs must be between 1 and 86400".into());
        }
        if self.report_delay_secs > 86_400 {
            return Err("report_delay_secs must be at most 86400".into());
        }
        if self.blob_delete_grace_secs < 60 {
            return Err("blob_delete_grace_secs must be at least 60".into());
        }
        crate::targets::validate_sources(&self.target_list_sources)?;
        Ok(())
    }
}

/// Region names are short slugs, like tenant names: `us`, `eu`, `ap-south`.
pub fn validate_region(region: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid region {region:?}: use 1 to 32 of a-z, 0-9 and -, such as us or eu"
        ))
    }
}

/// The documented defaults, as `rampart config defaults` prints them.
pub fn defaults_toml() -> String {
    let mut s = String::from(
        "# Rampart portal configuration. Every key is optional; shown are the defaults.\n\
         # Each key can also be set by flag (--data-dir) or env (RAMPART_DATA_DIR).\n",
    );
    s.push_str(&toml::to_string_pretty(&Config::default()).unwrap_or_default());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let parsed: Config = toml::from_str(&defaults_toml()).unwrap();
        assert_eq!(parsed, Config::default());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn regions_are_checked() {
        let c: Config =
            toml::from_str("region = \"us\"\n[regions]\neu = \"https://admin.eu.example.net\"\n")
                .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.regions["eu"], "https://admin.eu.example.net");
        for bad in [
            "region = \"US\"",
            "region = \"us\"\n[regions]\nus = \"https://a.example\"",
            "region = \"us\"\n[regions]\neu = \"http://a.example\"",
            "region = \"us\"\n[regions]\n\"e u\" = \"https://a.example\"",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn target_list_sources_are_read_as_an_array_of_tables() {
        let c: Config = toml::from_str(
            "[[target_list_sources]]\nname = \"drop\"\nurl = \"https://feeds.example/drop.txt\"\n\
             [[target_list_sources]]\nname = \"ads\"\nurl = \"https://feeds.example/hosts\"\nrefresh_secs = 86400\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        let got: Vec<(&str, u64)> = c
            .target_list_sources
            .iter()
            .map(|s| (s.name.as_str(), s.refresh_secs))
            .collect();
        assert_eq!(got, vec![("drop", 3600), ("ads", 86400)]);
        let c: Config = toml::from_str(
            "[[target_list_sources]]\nname = \"drop\"\nurl = \"ftp://feeds.example/x\"\n",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().contains("https://"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listen_addr = \"x\"").is_err());
    }
}
