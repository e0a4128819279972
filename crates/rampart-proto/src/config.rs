//! Device configuration: the document operators write (one per layer:
//! tenant, group, device) and the effective configuration an agent runs,
//! delivered as a signed `apply_config` instruction.
//!
//! Both sides validate with [`ConfigDoc::parse`]: the portal so that a bad
//! document is refused with the JSON path and the reason before it can reach
//! any device, the agent because it must never run a configuration it
//! cannot apply fully (it keeps its last good one and reports why).
//!
//! Every field of every section is optional, so each layer is a valid
//! document on its own and layers merge as JSON Merge Patch (RFC 7396): the
//! more specific layer wins key by key, `null` removes a key, arrays are
//! replaced whole. Unknown fields are refused, so a typo is an error rather
//! than a setting silently not applied.
//!
//! Secrets never travel in a configuration: instructions are stored by the
//! portal and shown to tenant admins. The WireGuard private key is fetched
//! with a signed request, like the pseudonym key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::controls::DataControls;

/// The instruction kind whose payload is an [`EffectiveConfig`].
pub const INSTRUCTION_KIND: &str = "apply_config";
/// Largest document, in bytes of JSON.
pub const MAX_DOC_BYTES: usize = 256 * 1024;
/// Most block and allow rules in one document.
pub const MAX_RULES: usize = 1_000;
/// Most listeners, tailed files, health targets of one kind.
pub const MAX_ENDPOINTS: usize = 16;
/// Most check schedules in one document.
pub const MAX_CHECKS: usize = 200;
/// Most entries of all target lists in one effective configuration.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Which layer a document is. Merged tenant, then group, then device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Layer {
    Tenant,
    Group,
    Device,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Tenant => "tenant",
            Layer::Group => "group",
            Layer::Device => "device",
        }
    }
}

/// One layer's document. See the module docs for how layers merge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDoc {
    /// Flow collectors: UDP listeners and tailed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collectors: Option<Collectors>,
    /// What the agent masks before data leaves it. When set, it replaces
    /// the tenant's data controls on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<DataControls>,
    /// The portal's alarm detector settings (tenant layer only: detectors
    /// run in the portal over all of a tenant's flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub detectors: Option<serde_json::Value>,
    /// Block and allow rules, evaluated in order; the first match wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    /// Synthetic checks the device runs (the private checkpoint role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckSchedule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadLimits>,
    /// What must hold after the configuration is applied; if it does not,
    /// the agent rolls back to its last good configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Collectors {
    /// UDP `address:port` to receive NetFlow v5/v9 and IPFIX on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netflow_listen: Option<Vec<String>>,
    /// Absolute paths of Zeek conn.log files to tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeek_conn: Option<Vec<String>>,
    /// Absolute paths of Suricata EVE files to tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eve: Option<Vec<String>>,
    /// Sampling rate assumed for exporters that announce none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_sampling_rate: Option<u32>,
    /// Flows per second per exporter before resampling (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows_per_exporter: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadLimits {
    /// Most records in one sealed batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_max_records: Option<u32>,
    /// Longest a record waits for its batch to fill, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_max_age_ms: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `host:port` that must accept a TCP connection from the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Vec<String>>,
    /// Per target, in milliseconds (100 to 10000; 2000 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Block,
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

/// A block or allow rule. Every matcher given must match (at least one is
/// required); `list` names a target list of domains, addresses and CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: RuleAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// ISO 3166-1 alpha-2 code, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// A port (`443`) or an inclusive range (`8000-8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The name of a target list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// When the rule is in force; always if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Days and a daily window `start`–`end` (`HH:MM`, local to
/// `utc_offset_minutes`); an `end` before `start` wraps past midnight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Weekday>>,
    pub start: String,
    pub end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_minutes: Option<i16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Http,
    Tcp,
    Dns,
    Tls,
}

/// A synthetic check and how often it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSchedule {
    pub name: String,
    pub kind: CheckKind,
    /// A URL for `http`, `host:port` for `tcp` and `tls`, a name for `dns`.
    pub target: String,
    /// 10 to 86400 seconds.
    pub interval_secs: u32,
    /// 100 to 60000 milliseconds; 10000 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

/// Why a document was refused: where (a JSON path from `$`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

type Check = Result<(), ConfigError>;

impl ConfigDoc {
    /// Parses and validates one layer's document (or, with
    /// [`Layer::Device`], a merged one), naming the first bad field.
    pub fn parse(value: &serde_json::Value, layer: Layer) -> Result<ConfigDoc, ConfigError> {
        if !value.is_object() {
            return Err(ConfigError::at(
                "$",
                "a configuration document is a JSON object",
            ));
        }
        let size = serde_json::to_vec(value)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_DOC_BYTES {
            return Err(ConfigError::at(
                "$",
                format!("document is {size} bytes, the limit is {MAX_DOC_BYTES}: split rules into target lists"),
            ));
        }
        let doc: ConfigDoc = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "$".to_string()
            } else {
                format!("$.{path}")
            };
            ConfigError::at(path, e.into_inner().to_string())
        })?;
        doc.validate(layer)?;
        Ok(doc)
    }

    /// What serde cannot check: ranges, syntax of addresses and names,
    /// uniqueness, the layer a section may be set in.
    pub fn validate(&self, layer: Layer) -> Check {
        if let Some(c) = &self.collectors {
            c.validate()?;
        }
        if let Some(m) = &self.masking {
            m.validate()
                .map_err(|e| ConfigError::at("$.masking", e.to_string()))?;
        }
        if self.detectors.is_some() && layer != Layer::Tenant {
            return Err(ConfigError::at(
                "$.detectors",
                "detector settings apply to the whole tenant: set them in the tenant document",
            ));
        }
        if let Some(d) = &self.detectors {
            if !d.is_object() {
                return Err(ConfigError::at("$.detectors", "expected an object"));
            }
        }
        if let Some(rules) = &self.rules {
            if rules.len() > MAX_RULES {
                return Err(ConfigError::at(
                    "$.rules",
                    format!(
                        "{} rules, the limit is {MAX_RULES}: put addresses in a target list",
                        rules.len()
                    ),
                ));
            }
            for (i, r) in rules.iter().enumerate() {
                r.validate(&format!("$.rules[{i}]"))?;
            }
        }
        if let Some(checks) = &self.checks {
            if checks.len() > MAX_CHECKS {
                return Err(ConfigError::at(
                    "$.checks",
                    format!("{} checks, the limit is {MAX_CHECKS}", checks.len()),
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, c) in checks.iter().enumerate() {
                let p = format!("$.checks[{i}]");
                c.validate(&p)?;
                if !names.insert(c.name.as_str()) {
                    return Err(ConfigError::at(
                        format!("{p}.name"),
                        format!("check name {} is used twice: names must be unique", c.name),
                    ));
                }
            }
        }
        if let Some(u) = &self.upload {
            in_range(
                "$.upload.batch_max_records",
                u.batch_max_records,
                1,
                100_000,
            )?;
            in_range("$.upload.batch_max_age_ms", u.batch_max_age_ms, 100, 60_000)?;
        }
        if let Some(h) = &self.health {
            if let Some(t) = &h.tcp {
                endpoints("$.health.tcp", t, host_port)?;
            }
            in_range("$.health.timeout_ms", h.timeout_ms, 100, 10_000)?;
        }
        Ok(())
    }

    /// The names of the target lists the rules refer to.
    pub fn list_names(&self) -> std::collections::BTreeSet<&str> {
        self.rules
            .iter()
            .flatten()
            .filter_map(|r| r.list.as_deref())
            .collect()
    }
}

impl Collectors {
    fn validate(&self) -> Check {
        if let Some(l) = &self.netflow_listen {
            endpoints("$.collectors.netflow_listen", l, |s| {
                s.parse::<SocketAddr>()
                    .map(|_| ())
                    .map_err(|_| "expected address:port, e.g. 0.0.0.0:2055".into())
            })?;
        }
        for (name, files) in [("zeek_conn", &self.zeek_conn), ("eve", &self.eve)] {
            if let Some(files) = files {
                endpoints(&format!("$.collectors.{name}"), files, |s| {
                    if s.starts_with('/') && s.len() <= 4096 && !s.contains('\0') {
                        Ok(())
                    } else {
                        Err("expected an absolute path".into())
                    }
                })?;
            }
        }
        in_range(
            "$.collectors.default_sampling_rate",
            self.default_sampling_rate,
            1,
            1 << 24,
        )?;
        Ok(())
    }
}

impl Rule {
    fn validate(&self, p: &str) -> Check {
        let matchers = [
            self.ip.is_some(),
            self.cidr.is_some(),
            self.domain.is_some(),
            self.country.is_some(),
            self.port.is_some(),
            self.list.is_some(),
        ];
        if !matchers.contains(&true) {
            return Err(ConfigError::at(
                p,
                "a rule needs at least one of ip, cidr, domain, country, port, list",
            ));
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 128 {
                return Err(ConfigError::at(
                    format!("{p}.name"),
                    "expected 1 to 128 bytes",
                ));
            }
        }
        if let Some(ip) = &self.ip {
            ip.parse::<IpAddr>().map_err(|_| {
                ConfigError::at(format!("{p}.ip"), "expected an IPv4 or IPv6 address")
            })?;
        }
        if let Some(c) = &self.cidr {
            parse_cidr(c).map_err(|r| ConfigError::at(format!("{p}.cidr"), r))?;
        }
        if let Some(d) = &self.domain {
            check_domain(d).map_err(|r| ConfigError::at(format!("{p}.domain"), r))?;
        }
        if let Some(c) = &self.country {
            if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(ConfigError::at(
                    format!("{p}.country"),
                    "expected an ISO 3166-1 alpha-2 code such as DE",
                ));
            }
        }
        if let Some(port) = &self.port {
            parse_ports(port).map_err(|r| ConfigError::at(format!("{p}.port"), r))?;
        }
        if let Some(l) = &self.list {
            if !is_name(l) {
                return Err(ConfigError::at(
                    format!("{p}.list"),
                    "a list name is 1 to 64 characters of a-z, 0-9, - and _",
                ));
            }
        }
        if let Some(s) = &self.schedule {
            s.validate(&format!("{p}.schedule"))?;
        }
        Ok(())
    }
}

impl Schedule {
    fn validate(&self, p: &str) -> Check {
        parse_hhmm(&self.start).map_err(|r| ConfigError::at(format!("{p}.start"), r))?;
        parse_hhmm(&self.end).map_err(|r| ConfigError::at(format!("{p}.end"), r))?;
        if let Some(o) = self.utc_offset_minutes {
            if !(-720..=840).contains(&o) {
                return Err(ConfigError::at(
                    format!("{p}.utc_offset_minutes"),
                    "expected -720 to 840",
                ));
            }
        }
        if matches!(&self.days, Some(d) if d.is_empty()) {
            return Err(ConfigError::at(
                format!("{p}.days"),
                "an empty list of days never matches: leave days out for every day",
            ));
        }
        Ok(())
    }

    /// Whether the schedule is in force at unix time `now`.
    pub fn is_active(&self, now: i64) -> bool {
        let (Ok(start), Ok(end)) = (parse_hhmm(&self.start), parse_hhmm(&self.end)) else {
            return false;
        };
        let local = now + i64::from(self.utc_offset_minutes.unwrap_or(0)) * 60;
        let minute = local.rem_euclid(86_400) / 60;
        let days_since_epoch = local.div_euclid(86_400);
        // 1970-01-01 was a Thursday.
        let weekday_of = |d: i64| {
            [
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
            ][d.rem_euclid(7) as usize]
        };
        let on = |d: i64| {
            self.days
                .as_ref()
                .is_none_or(|days| days.contains(&weekday_of(d)))
        };
        let (start, end) = (i64::from(start), i64::from(end));
        if start <= end {
            on(days_since_epoch) && minute >= start && minute < end
        } else {
            // Wraps: the part after midnight belongs to the day it started.
            (on(days_since_epoch) && minute >= start) || (on(days_since_epoch - 1) && minute < end)
        }
    }
}

impl CheckSchedule {
    fn validate(&self, p: &str) -> Check {
        if !is_name(&self.name) {
            return Err(ConfigError::at(
                format!("{p}.name"),
                "a check name is 1 to 64 characters of a-z, 0-9, - and _",
            ));
        }
        let t = &self.target;
        let ok = match self.kind {
            CheckKind::Http => {
                if (t.starts_with("http://") || t.starts_with("https://")) && t.len() <= 2048 {
                    Ok(())
                } else {
                    Err("expected an http:// or https:// URL of at most 2048 bytes".to_string())
                }
            }
            CheckKind::Tcp | CheckKind::Tls => host_port(t),
            CheckKind::Dns => check_domain(t),
        };
        ok.map_err(|r| ConfigError::at(format!("{p}.target"), r))?;
        in_range(
            &format!("{p}.interval_secs"),
            Some(self.interval_secs),
            10,
            86_400,
        )?;
        in_range(&format!("{p}.timeout_ms"), self.timeout_ms, 100, 60_000)?;
        Ok(())
    }
}

fn in_range(path: &str, v: Option<u32>, min: u32, max: u32) -> Check {
    match v {
        Some(v) if !(min..=max).contains(&v) => Err(ConfigError::at(
            path,
            format!("{v} is out of range: expected {min} to {max}"),
        )),
        _ => Ok(()),
    }
}

fn endpoints(path: &str, items: &[String], check: impl Fn(&str) -> Result<(), String>) -> Check {
    if items.len() > MAX_ENDPOINTS {
        return Err(ConfigError::at(
            path,
            format!("{} entries, the limit is {MAX_ENDPOINTS}", items.len()),
        ));
    }
    for (i, s) in items.iter().enumerate() {
        check(s).map_err(|r| ConfigError::at(format!("{path}[{i}]"), r))?;
    }
    Ok(())
}

/// A list or check name: what can appear in a URL path and a log line.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `host:port`, with `[v6]:port` for IPv6 addresses.
pub fn host_port(s: &str) -> Result<(), String> {
    let bad = || "expected host:port, e.g. 192.0.2.1:443 or example.com:443".to_string();
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    check_domain(host).map_err(|_| bad())
}

/// A DNS name (RFC 1123 labels), optionally `*.`-prefixed.
pub fn check_domain(s: &str) -> Result<(), String> {
    let name = s.strip_prefix("*.").unwrap_or(s);
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("expected a domain name such as example.com or *.example.com".into())
    }
}

/// `address/prefix`; the address must be the network (no host bits).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let bad = || "expected address/prefix, e.g. 10.0.0.0/8 or 2001:db8::/32".to_string();
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let (bits, max) = match addr {
        IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    };
    if prefix > max {
        return Err(format!("prefix /{prefix} is longer than {max} bits"));
    }
    // checked: a /128 shifts by the whole width (no host bits).
    let host_mask = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if bits & host_mask != 0 {
        return Err(format!(
            "{a} has host bits set for /{prefix}: give the network address"
        ));
    }
    Ok((addr, prefix))
}

/// `443` or `8000-8080`.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || "expected a port 1-65535 or a range such as 8000-8080".to_string();
    let one = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi {
        return Err(format!(
            "range {lo}-{hi} is empty: give the lower port first"
        ));
    }
    Ok((lo, hi))
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let bad = || "expected HH:MM from 00:00 to 23:59".to_string();
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// The JSON Schema (draft 2020-12) of a document, as published by the API.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigDoc)).unwrap_or(serde_json::Value::Null)
}

/// Applies `patch` to `target` as RFC 7396 JSON Merge Patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
    }
}

/// What a device runs: the merged document, the target lists its rules
/// name, and its VPN interface. The payload of `apply_config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveConfig {
    /// Per tenant, increasing with each configuration the portal issues.
    pub revision: u64,
    /// [`EffectiveConfig::content_hash`], so both sides name the same content.
    pub hash: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Value,
    /// Target lists by name: domains, addresses and CIDRs.
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub vpn: Option<crate::wg::WgInterface>,
}

impl EffectiveConfig {
    /// SHA-256 over the content (not the revision), hex. serde_json's maps
    /// are sorted, so equal content hashes equally.
    pub fn content_hash(
        config: &serde_json::Value,
        lists: &BTreeMap<String, Vec<String>>,
        vpn: Option<&crate::wg::WgInterface>,
    ) -> String {
        let body = serde_json::json!({ "config": config, "lists": lists, "vpn": vpn });
        hex::encode(Sha256::digest(body.to_string().as_bytes()))
    }

    /// Nothing configured: no section, list or VPN interface.
    pub fn is_empty(&self) -> bool {
        self.config.as_object().is_none_or(|m| m.is_empty())
            && self.lists.is_empty()
            && self.vpn.is_none()
    }

    /// Checks the hash, the document and that every list a rule names is
    /// present and within bounds: what an agent does before applying.
    pub fn check(&self) -> Result<ConfigDoc, ConfigError> {
        if Self::content_hash(&self.config, &self.lists, self.vpn.as_ref()) != self.hash {
            return Err(ConfigError::at(
                "$.hash",
                "does not match the content: the configuration was altered",
            ));
        }
        let doc = ConfigDoc::parse(&self.config, Layer::Tenant)?;
        if let Some(v) = &self.vpn {
            v.validate().map_err(|r| ConfigError::at("$.vpn", r))?;
        }
        let entries: usize = self.lists.values().map(Vec::len).sum();
        if entries > MAX_LIST_ENTRIES {
            return Err(ConfigError::at(
                "$.lists",
                format!("{entries} entries, the limit is {MAX_LIST_ENTRIES}"),
            ));
        }
        for name in doc.list_names() {
            if !self.lists.contains_key(name) {
                return Err(ConfigError::at(
                    "$.lists",
                    format!("list {name} is named by a rule but missing"),
                ));
            }
        }
        Ok(doc)
    }
}

/// Outcome reported in an `apply_config` ack's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplyReport {
    /// The revision the device runs after this instruction.
    pub running_revision: u64,
    pub running_hash: String,
    /// Set when the new configuration was not kept: validation, applying or
    /// the health check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when it was applied, failed its health check and was undone.
    #[serde(default)]
    pub rolled_back: bool,
    /// The health check's findings, one line per target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7396 Appendix A, every example.
    #[test]
    fn merge_patch_matches_rfc7396_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (i, (mut target, patch, want)) in cases.into_iter().enumerate() {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "case {i}");
        }
    }

    #[test]
    fn refusals_name_the_json_path() {
        let cases = [
            (json!({"log_level": "loud"}), "$.log_level"),
            (
                json!({"rules": [{"action": "block", "ip": "10.0.0.1"}, {"action": "drop", "ip": "1.2.3.4"}]}),
                "$.rules[1].action",
            ),
            (json!({"rules": [{"action": "block"}]}), "$.rules[0]"),
            (
                json!({"rules": [{"action": "block", "cidr": "10.0.0.1/8"}]}),
                "$.rules[0].cidr",
            ),
            (
                json!({"rules": [{"action": "allow", "port": "90-80"}]}),
                "$.rules[0].port",
            ),
            (
                json!({"rules": [{"action": "allow", "country": "de"}]}),
                "$.rules[0].country",
            ),
            (
                json!({"rules": [{"action": "block", "domain": "a..b"}]}),
                "$.rules[0].domain",
            ),
            (
                json!({"rules": [{"action": "block", "list": "x", "schedule": {"start": "24:00", "end": "01:00"}}]}),
                "$.rules[0].schedule.start",
            ),
            (
                json!({"collectors": {"netflow_listen": ["0.0.0.0"]}}),
                "$.collectors.netflow_listen[0]",
            ),
            (
                json!({"collectors": {"eve": ["relative.json"]}}),
                "$.collectors.eve[0]",
            ),
            (json!({"collectors": {"listen": []}}), "$.collectors.listen"),
            (
                json!({"upload": {"batch_max_records": 0}}),
                "$.upload.batch_max_records",
            ),
            (
                json!({"checks": [{"name": "a", "kind": "tcp", "target": "x:1", "interval_secs": 60}, {"name": "a", "kind": "dns", "target": "x", "interval_secs": 60}]}),
                "$.checks[1].name",
            ),
            (json!({"health": {"tcp": ["nope"]}}), "$.health.tcp[0]"),
            (
                json!({"masking": {"redact": [{"field": "app", "pattern": "("}]}}),
                "$.masking",
            ),
            (json!({"colectors": {}}), "$.colectors"),
            (json!([]), "$"),
        ];
        for (doc, path) in cases {
            let e = ConfigDoc::parse(&doc, Layer::Group).expect_err(&doc.to_string());
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn detectors_only_in_the_tenant_layer() {
        let doc = json!({"detectors": {"port_scan": {"enabled": false}}});
        assert!(ConfigDoc::parse(&doc, Layer::Tenant).is_ok());
        let e = ConfigDoc::parse(&doc, Layer::Device).unwrap_err();
        assert_eq!(e.path, "$.detectors");
    }

    /// Weekday of the unix epoch and of known dates (2026-12-04 is a Friday).
    #[test]
    fn schedules_follow_the_calendar() {
        let fri_1000_utc = 1_796_378_400; // 2026-12-04T10:00:00Z
        let s = |days: Option<Vec<Weekday>>, start: &str, end: &str, off: Option<i16>| Schedule {
            days,
            start: start.into(),
            end: end.into(),
            utc_offset_minutes: off,
        };
        assert!(s(Some(vec![Weekday::Fri]), "09:00", "17:00", None).is_active(fri_1000_utc));
        assert!(!s(Some(vec![Weekday::Thu]), "09:00", "17:00", None).is_active(fri_1000_utc));
        assert!(!s(None, "11:00", "17:00", None).is_active(fri_1000_utc));
        // 10:00Z is 11:00 at +60.
        assert!(s(None, "11:00", "12:00", Some(60)).is_active(fri_1000_utc));
        // 22:00-06:00 started Thursday covers Friday 05:00.
        let fri_0500 = fri_1000_utc - 5 * 3600;
        assert!(s(Some(vec![Weekday::Thu]), "22:00", "06:00", None).is_active(fri_0500));
        assert!(!s(Some(vec![Weekday::Fri]), "22:00", "06:00", None).is_active(fri_0500));
    }

    #[test]
    fn effective_hash_detects_alteration() {
        let config = json!({"log_level": "debug"});
        let lists = BTreeMap::new();
        let mut e = EffectiveConfig {
            revision: 3,
            hash: EffectiveConfig::content_hash(&config, &lists, None),
            config,
            lists,
            vpn: None,
        };
        assert!(e.check().is_ok());
        e.config = json!({"log_level": "trace"});
        assert_eq!(e.check().unwrap_err().path, "$.hash");
    }

    #[test]
    fn schema_is_published_for_every_section() {
        let s = schema();
        let props = s["properties"].as_object().expect("properties");
        for k in [
            "collectors",
            "masking",
            "detectors",
            "rules",
            "checks",
            "log_level",
            "upload",
            "health",
        ] {
            assert!(props.contains_key(k), "{k}");
        }
        assert_eq!(s["additionalProperties"], json!(false));
    }
}
