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
    /// Days of flows a new tenant's queries can see (its plan may change it).
    pub flow_visible_days: u32,
    /// Days of flows kept on disk; at least `flow_visible_days`, so a plan
    /// change or a late query near the edge still finds its data.
    pub flow_stored_days: u32,
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
            flow_visible_days: 30,
            flow_stored_days: 32,
            flow_cache_mib: 256,
            agent_offline_alarm_secs: 600,
            alarm_webhooks_allow_private: false,
            alarm_webhook_attempts: 8,
            alarm_webhook_retry_secs: 10,
            alarm_webhook_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            smtp_url: None,
            smtp_from: "rampart@localhost".into(),
            stripe_webhook_secret: None,
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
        if self.flow_visible_days == 0 || self.flow_stored_days < self.flow_visible_days {
            return Err(
                "flow_visible_days must be at least 1 and flow_stored_days at least flow_visible_days"
                    .into(),
            );
        }
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
        crate::service::validate_domain(&self.admin_domain)
            .map_err(|e| format!("admin_domain: {e}"))?;
        Ok(())
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
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listen_addr = \"x\"").is_err());
    }
}
