//! Target lists (issue 7): a tenant's named lists of domains, addresses and
//! CIDRs, kept by hand or imported from a source the operator configured.
//! Block rules name them (the rollout puts the lists a device's rules name
//! into its effective configuration, through [`resolve`]), and so does the
//! alarm detectors' `blocked_lists`.
//!
//! Invariants:
//! - a tenant binds a list to an import source only by the name of one in
//!   the operator's `target_list_sources`, never by a URL: the portal
//!   fetches only what the operator allowed (no server-side request to a
//!   tenant's choice of address), and a source's URL, which may carry the
//!   feed's credentials, is never shown to tenants;
//! - entries are validated and normalized before they are stored (an
//!   address in its canonical form, a CIDR as its network, a domain lower
//!   case without the final dot), sorted and unique, so equal content has
//!   one form and one version;
//! - a write names the version it replaces; a stale one is refused (409),
//!   never applied over a newer list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart_proto::config::{check_domain, is_name, parse_cidr};
use rampart_store::{
    StoreError, TargetImport, TargetListRow, TenantId, TenantStatus, SOURCE_MANUAL,
    SOURCE_URL_PREFIX,
};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor};
use crate::service::{now, Portal, Result, ServiceError};

/// Most entries of one list (and of all lists of one configuration).
pub const MAX_ENTRIES: usize = rampart_proto::config::MAX_LIST_ENTRIES;
/// Most bytes of one list's entries, newline-separated.
pub const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes fetched from a source: hosts files carry an address and
/// often comments on every line, so they are larger than their entries.
pub const MAX_DOWNLOAD_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_DESCRIPTION: usize = 1024;
/// Most lists of one tenant.
pub const MAX_LISTS: usize = 256;
/// A fetch from a source may take this long, body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the import job looks for lists due for a refresh.
const JOB_EVERY: Duration = Duration::from_secs(60);

/// An import source the operator allows tenants to bind lists to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetListSource {
    /// What tenants choose it by (`url:<name>`).
    pub name: String,
    /// `https://` only; fetched with TLS verified against
    /// `target_list_ca_file`. Never shown to tenants.
    pub url: String,
    /// Seconds between fetches (300 to 604800).
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
}

fn default_refresh() -> u64 {
    3600
}

impl TargetListSource {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !is_name(&self.name) {
            return Err(format!(
                "target_list_sources: name {:?} must be 1 to 64 of a-z, 0-9, - and _",
                self.name
            ));
        }
        let rest = self.url.strip_prefix("https://").unwrap_or("");
        if rest.is_empty() || self.url.len() > 2048 || self.url.contains(char::is_whitespace) {
            return Err(format!(
                "target_list_sources.{}: url must be an https:// url of at most 2048 characters",
                self.name
            ));
        }
        if !(300..=604_800).contains(&self.refresh_secs) {
            return Err(format!(
                "target_list_sources.{}: refresh_secs must be between 300 and 604800",
                self.name
            ));
        }
        Ok(())
    }
}

/// Checks the operator's sources: each valid, names unique.
pub fn validate_sources(sources: &[TargetListSource]) -> std::result::Result<(), String> {
    let mut names = BTreeSet::new();
    for s in sources {
        s.validate()?;
        if !names.insert(s.name.as_str()) {
            return Err(format!(
                "target_list_sources: name {} is used twice: names must be unique",
                s.name
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ entries

/// One entry in its stored form: an address (canonical, so `::ffff:1.2.3.4`
/// is `1.2.3.4`), a CIDR as its network (a /32 or /128 is the address), or
/// a domain (lower case, no final dot, `*.` kept).
pub fn normalize_entry(s: &str) -> std::result::Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty entry".into());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_canonical().to_string());
    }
    if s.contains('/') {
        let (addr, prefix) = parse_cidr(s)?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == full {
            return Ok(addr.to_string());
        }
        return Ok(format!("{addr}/{prefix}"));
    }
    check_domain(s).map_err(|_| {
        "expected an address (192.0.2.1), a network (192.0.2.0/24) or a domain (example.com)"
            .to_string()
    })?;
    let d = s.strip_suffix('.').unwrap_or(s);
    Ok(d.to_ascii_lowercase())
}

/// Sorted, unique and within the bounds; `what` names the entries in the
/// error.
fn finish(set: BTreeSet<String>, what: &str) -> std::result::Result<Vec<String>, String> {
    if set.len() > MAX_ENTRIES {
        return Err(format!(
            "{what} has {} entries, the limit is {MAX_ENTRIES}: split it into several lists",
            set.len()
        ));
    }
    let bytes: usize = set.iter().map(|e| e.len() + 1).sum();
    if bytes > MAX_LIST_BYTES {
        return Err(format!(
            "{what} is {bytes} bytes, the limit is {MAX_LIST_BYTES}: split it into several lists"
        ));
    }
    Ok(set.into_iter().collect())
}

/// A tenant's entries: every one must be valid (the first bad one is
/// named with its index), then normalized.
pub fn normalize_entries(entries: &[String]) -> std::result::Result<Vec<String>, String> {
    if entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries, the limit is {MAX_ENTRIES}: split them into several lists",
            entries.len()
        ));
    }
    let mut set = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let n = normalize_entry(e).map_err(|why| {
            let shown: String = e.chars().take(64).collect();
            format!("entries[{i}] {shown:?}: {why}")
        })?;
        set.insert(n);
    }
    finish(set, "the list")
}

/// What an import made of a source's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<String>,
    /// Lines (or, in hosts files, names) taken, and those skipped as
    /// invalid. Blank and comment lines are neither.
    pub accepted: u64,
    pub skipped: u64,
}

/// Reads a plain-text list: one entry per line, `#` starts a comment, and
/// so does `;` (as in Spamhaus DROP: `192.0.2.0/24 ; SBL123`). A hosts-file
/// line (`0.0.0.0 ads.example [more names]`) gives its names; its
/// single-label names (`localhost`, `broadcasthost`) are boilerplate, not
/// targets, and are skipped. Anything else that is not one valid entry is
/// skipped and counted. Fails only when the result is over the bounds.
pub fn parse_list_text(text: &str) -> std::result::Result<Parsed, String> {
    let mut set = BTreeSet::new();
    let (mut accepted, mut skipped) = (0u64, 0u64);
    for line in text.lines() {
        if set.len() > MAX_ENTRIES {
            break;
        }
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut tokens = line.split_whitespace();
        let first = tokens.next().unwrap_or("");
        let rest: Vec<&str> = tokens.collect();
        if rest.is_empty() {
            match normalize_entry(first) {
                Ok(e) => {
                    set.insert(e);
                    accepted += 1;
                }
                Err(_) => skipped += 1,
            }
            continue;
        }
        if first.parse::<IpAddr>().is_err() {
            skipped += 1;
            continue;
        }
        for name in rest {
            let ok = name.contains('.') && name.parse::<IpAddr>().is_err();
            match normalize_entry(name) {
                Ok(e) if ok => {
                    set.insert(e);
                    accepted += 1;
                }
                _ => skipped += 1,
            }
        }
    }
    Ok(Parsed {
        entries: finish(set, "the source")?,
        accepted,
        skipped,
    })
}

// ------------------------------------------------------------------ service

/// A tenant's write of one list.
#[derive(Clone, Debug, Default)]
pub struct PutList {
    pub description: String,
    pub entries: Vec<String>,
    /// `manual` (the default) or `url:<source name>`.
    pub source: Option<String>,
    /// The version replaced; 0 or none: the list must not exist yet.
    pub expected_version: Option<u64>,
}

fn check_name(name: &str) -> Result<()> {
    if is_name(name) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid list name {:?}: use 1 to 64 of a-z, 0-9, - and _",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// The operator's source a list's `source` names, if it is one.
pub fn source_of<'a>(p: &'a Portal, source: &str) -> Option<&'a TargetListSource> {
    let name = source.strip_prefix(SOURCE_URL_PREFIX)?;
    p.config.target_list_sources.iter().find(|s| s.name == name)
}

fn check_source(p: &Portal, source: &str) -> Result<()> {
    if source == SOURCE_MANUAL || source_of(p, source).is_some() {
        return Ok(());
    }
    let names: Vec<String> = p
        .config
        .target_list_sources
        .iter()
        .map(|s| format!("url:{}", s.name))
        .collect();
    Err(ServiceError::Invalid(if names.is_empty() {
        "source must be manual: the operator has configured no import sources".into()
    } else {
        format!(
            "source must be manual or one of the operator's sources: {}",
            names.join(", ")
        )
    }))
}

pub async fn list(p: &Portal, tenant: TenantId) -> Result<Vec<TargetListRow>> {
    Ok(p.store.list_target_lists(tenant).await?)
}

pub async fn get(p: &Portal, tenant: TenantId, name: &str) -> Result<TargetListRow> {
    check_name(name)?;
    p.store
        .get_target_list(tenant, name)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("target list {name}")))
}

/// The refusal of a write whose precondition did not hold.
async fn stale(p: &Portal, tenant: TenantId, name: &str, expected: u64) -> ServiceError {
    match p.store.get_target_list(tenant, name).await {
        Ok(Some(cur)) if expected == 0 => ServiceError::Conflict(format!(
            "target list {name} exists at version {}: send expected_version {} (or If-Match) to replace it",
            cur.version, cur.version
        )),
        Ok(Some(cur)) => ServiceError::Conflict(format!(
            "target list {name} is at version {}, not {expected}: it was changed meanwhile; fetch it and retry",
            cur.version
        )),
        Ok(None) => ServiceError::Conflict(format!(
            "target list {name} does not exist: send expected_version 0 (or none) to create it"
        )),
        Err(e) => e.into(),
    }
}

/// Creates or replaces a list. A list bound to a source takes its entries
/// from there: sending entries with one is refused.
pub async fn put(
    p: &Portal,
    tenant: TenantId,
    actor: &Actor,
    name: &str,
    req: PutList,
) -> Result<TargetListRow> {
    check_name(name)?;
    if req.description.len() > MAX_DESCRIPTION {
        return Err(ServiceError::Invalid(format!(
            "description must be at most {MAX_DESCRIPTION} bytes"
        )));
    }
    let source = req.source.unwrap_or_else(|| SOURCE_MANUAL.to_string());
    check_source(p, &source)?;
    if source != SOURCE_MANUAL && !req.entries.is_empty() {
        return Err(ServiceError::Invalid(
            "a list bound to an import source takes its entries from there: omit entries, or use source manual"
                .into(),
        ));
    }
    let entries = normalize_entries(&req.entries).map_err(ServiceError::Invalid)?;
    let expected = req.expected_version.unwrap_or(0);
    if i64::try_from(expected).is_err() {
        // No list ever gets there: stale by definition.
        return Err(stale(p, tenant, name, expected).await);
    }
    let old = p.store.get_target_list(tenant, name).await?;
    if expected == 0
        && old.is_none()
        && p.store.target_list_versions(tenant).await?.len() >= MAX_LISTS
    {
        return Err(ServiceError::Invalid(format!(
            "this tenant has {MAX_LISTS} lists, the limit: delete one first"
        )));
    }
    // A list staying on its source keeps the entries and status of its
    // last import; a list moving to a source starts empty and is due.
    let (entries, last_import) = match &old {
        Some(o) if source != SOURCE_MANUAL && o.source == source => {
            (o.entries.clone(), o.last_import.clone())
        }
        _ => (entries, None),
    };
    let row = TargetListRow {
        name: name.to_string(),
        description: req.description,
        entries,
        source,
        version: 0,
        updated_at: now(),
        last_import,
    };
    let version = match p.store.put_target_list(tenant, &row, expected).await {
        Ok(v) => v,
        Err(StoreError::Raced(_)) => return Err(stale(p, tenant, name, expected).await),
        Err(e) => return Err(e.into()),
    };
    audit::record(
        p,
        Some(tenant),
        actor,
        "target_list.put",
        name,
        serde_json::json!({"version": version, "entries": row.entries.len(), "source": row.source}),
    )
    .await?;
    list_changed(p, tenant, name).await;
    Ok(TargetListRow { version, ..row })
}

/// Where a list is still used, one phrase each; empty when nowhere.
/// Configuration documents are checked by the config rollout.
pub async fn references(p: &Portal, tenant: TenantId, name: &str) -> Result<Vec<String>> {
    let mut used = Vec::new();
    let settings = crate::alarms::settings(p, tenant).await?;
    if settings.blocked_lists.iter().any(|l| l == name) {
        used.push("the alarm detector settings (blocked_lists)".to_string());
    }
    used.extend(crate::devconf::documents_naming_list(p, tenant, name).await?);
    Ok(used)
}

/// Deletes a list no longer used anywhere; one still used is refused with
/// 409 naming where.
pub async fn delete(p: &Portal, tenant: TenantId, actor: &Actor, name: &str) -> Result<()> {
    check_name(name)?;
    let used = references(p, tenant, name).await?;
    if !used.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "target list {name} is used by {}: remove it there first",
            used.join(" and ")
        )));
    }
    if !p.store.delete_target_list(tenant, name).await? {
        return Err(ServiceError::NotFound(format!("target list {name}")));
    }
    audit::record(
        p,
        Some(tenant),
        actor,
        "target_list.delete",
        name,
        serde_json::json!({}),
    )
    .await?;
    list_changed(p, tenant, name).await;
    Ok(())
}

/// The lists named, by name, for a device's effective configuration: what
/// the config rollout calls. An unknown name is an
/// [`ServiceError::Invalid`] naming it (a 400 to whoever asked for the
/// configuration); all lists together are bounded like one list.
pub async fn resolve(
    p: &Portal,
    tenant: TenantId,
    names: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for name in names {
        let Some(l) = p.store.get_target_list(tenant, name).await? else {
            return Err(ServiceError::Invalid(format!(
                "target list {name} does not exist: create it (PUT /api/v1/target-lists/{name}) or remove the rule that names it"
            )));
        };
        total += l.entries.len();
        if total > MAX_ENTRIES {
            return Err(ServiceError::Invalid(format!(
                "the target lists named by the rules have more than {MAX_ENTRIES} entries together: use fewer or smaller lists"
            )));
        }
        out.insert(l.name, l.entries);
    }
    Ok(out)
}

/// (name, version) of those of `names` that exist: cheap (nothing is
/// opened), for the detectors to tell whether their lists changed.
pub async fn versions_of(
    p: &Portal,
    tenant: TenantId,
    names: &[String],
) -> Result<Vec<(String, u64)>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    Ok(p.store
        .target_list_versions(tenant)
        .await?
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .collect())
}

/// The entries of the lists named, by name, for the detectors: a list
/// deleted meanwhile is left out rather than stopping detection.
pub async fn entries_of(
    p: &Portal,
    tenant: TenantId,
    lists: &[(String, u64)],
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for (name, _) in lists {
        if let Some(l) = p.store.get_target_list(tenant, name).await? {
            out.insert(l.name, l.entries);
        }
    }
    Ok(out)
}

/// Checks that every list the detector settings name exists.
pub async fn check_exist(p: &Portal, tenant: TenantId, names: &[String]) -> Result<()> {
    let have = versions_of(p, tenant, names).await?;
    for n in names {
        if !have.iter().any(|(h, _)| h == n) {
            return Err(ServiceError::Invalid(format!(
                "blocked_lists names target list {n}, which does not exist: create it first"
            )));
        }
    }
    Ok(())
}

/// Everything that follows a change of a tenant's list (entries,
/// description, source, or its deletion). THE place where the config
/// rollout refreshes the effective configuration of the tenant's devices
/// whose rules name the list. The detectors need nothing here: they compare
/// list versions every round ([`versions_of`]).
pub async fn list_changed(p: &Portal, tenant: TenantId, name: &str) {
    tracing::info!(tenant = %tenant, list = name, "target list changed");
    if let Err(e) = crate::devconf::refresh(p, &Actor::Portal, tenant, None).await {
        tracing::warn!(tenant = %tenant, list = name, error = %e, "target list change not rolled out");
    }
}

// ------------------------------------------------------------------ imports

/// A client for one fetch: TLS verified against the operator's bundle (read
/// each time, so a renewed bundle is picked up), no redirects (a source
/// must not send the portal elsewhere), bounded in time.
fn client(p: &Portal) -> std::result::Result<reqwest::Client, String> {
    let ca = p
        .config
        .target_list_ca_file
        .as_deref()
        .unwrap_or(&p.config.alarm_webhook_ca_file);
    let tls = crate::alarms::webhook_tls(ca).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rampart-portal/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("import client: {e}"))
}

/// Fetches and parses a source. The error says what went wrong without
/// the URL (tenants see it in their list's import status).
pub async fn fetch(p: &Portal, src: &TargetListSource) -> std::result::Result<Parsed, String> {
    let name = &src.name;
    let client = client(p)?;
    let mut resp = client
        .get(&src.url)
        .send()
        .await
        .map_err(|e| format!("fetching source {name} failed: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!(
            "source {name} answered {}: the entries were kept",
            resp.status()
        ));
    }
    let too_big = || format!("source {name} is larger than {MAX_DOWNLOAD_BYTES} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOWNLOAD_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading source {name} failed: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_DOWNLOAD_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    let parsed =
        tokio::task::spawn_blocking(move || parse_list_text(&String::from_utf8_lossy(&body)))
            .await
            .map_err(|e| format!("parsing source {name} failed: {e}"))??;
    tracing::info!(source = %name, entries = parsed.entries.len(), accepted = parsed.accepted,
        skipped = parsed.skipped, "target list source fetched");
    Ok(parsed)
}

/// Records a fetch's outcome on one list; returns its version after.
async fn apply(
    p: &Portal,
    tenant: TenantId,
    list: &TargetListRow,
    fetched: &std::result::Result<Parsed, String>,
) -> Result<Option<u64>> {
    let at = now();
    let (entries, import) = match fetched {
        Ok(parsed) => (
            (parsed.entries != list.entries).then_some(parsed.entries.as_slice()),
            TargetImport {
                at,
                accepted: parsed.accepted,
                skipped: parsed.skipped,
                error: None,
            },
        ),
        Err(e) => (
            None,
            TargetImport {
                at,
                accepted: 0,
                skipped: 0,
                error: Some(e.clone()),
            },
        ),
    };
    let v = p
        .store
        .record_target_import(tenant, &list.name, &list.source, entries, &import)
        .await?;
    if entries.is_some() && v.is_some() {
        list_changed(p, tenant, &list.name).await;
    }
    Ok(v)
}

/// Imports one list from its source now (the tenant's "import now").
pub async fn import_now(
    p: &Portal,
    tenant: TenantId,
    actor: &Actor,
    name: &str,
) -> Result<TargetListRow> {
    let list = get(p, tenant, name).await?;
    let Some(src) = source_of(p, &list.source) else {
        return Err(ServiceError::Conflict(if list.source == SOURCE_MANUAL {
            format!("target list {name} is kept by hand: bind it to an import source first")
        } else {
            format!(
                "target list {name} is bound to {}, which the operator no longer configures: choose another source",
                list.source
            )
        }));
    };
    let fetched = fetch(p, src).await;
    apply(p, tenant, &list, &fetched).await?;
    let after = get(p, tenant, name).await?;
    audit::record(
        p,
        Some(tenant),
        actor,
        "target_list.import",
        name,
        serde_json::json!({
            "version": after.version,
            "entries": after.entries.len(),
            "ok": fetched.is_ok(),
        }),
    )
    .await?;
    Ok(after)
}

/// One pass of the import job: fetches each source that has lists due
/// (never imported, or last imported `refresh_secs` ago) once, and records
/// the result on every one of them. Returns the lists whose entries changed.
pub async fn refresh_due(p: &Portal) -> Result<usize> {
    let now = now();
    let mut due: BTreeMap<String, Vec<(TenantId, TargetListRow)>> = BTreeMap::new();
    for t in p.store.list_tenants().await? {
        if t.status != TenantStatus::Active || !t.is_live() {
            continue;
        }
        for l in p.store.list_target_lists(t.id).await? {
            let Some(src) = source_of(p, &l.source) else {
                continue;
            };
            let refresh = i64::try_from(src.refresh_secs).unwrap_or(i64::MAX);
            if l.last_import
                .as_ref()
                .is_none_or(|i| i.at.saturating_add(refresh) <= now)
            {
                due.entry(src.name.clone()).or_default().push((t.id, l));
            }
        }
    }
    let mut changed = 0;
    for (name, lists) in due {
        let Some(src) = p.config.target_list_sources.iter().find(|s| s.name == name) else {
            continue;
        };
        let fetched = fetch(p, src).await;
        if let Err(e) = &fetched {
            tracing::warn!(source = %name, error = %e, lists = lists.len(), "target list import failed; entries kept");
        }
        for (tenant, l) in lists {
            let before = l.version;
            if apply(p, tenant, &l, &fetched)
                .await?
                .is_some_and(|v| v != before)
            {
                changed += 1;
            }
        }
    }
    Ok(changed)
}

/// The import job, started by [`crate::run`] when the operator configured
/// sources.
pub async fn jobs(p: Arc<Portal>) {
    if p.config.target_list_sources.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(JOB_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = refresh_due(&p).await {
            tracing::warn!(error = %e, "target list imports failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalized_or_refused_with_their_index() {
        let cases = [
            ("192.0.2.1", Ok("192.0.2.1")),
            (" ::ffff:192.0.2.1 ", Ok("192.0.2.1")),
            ("2001:DB8::1", Ok("2001:db8::1")),
            ("198.51.100.0/24", Ok("198.51.100.0/24")),
            ("198.51.100.7/32", Ok("198.51.100.7")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("2001:db8::1/128", Ok("2001:db8::1")),
            ("::/0", Ok("::/0")),
            ("Ads.Example.COM.", Ok("ads.example.com")),
            ("*.tracker.example", Ok("*.tracker.example")),
            ("198.51.100.7/24", Err("host bits")),
            ("10.0.0.0/33", Err("longer than 32")),
            ("bad..example", Err("expected an address")),
            ("http://x.example/", Err("expected address/prefix")),
            ("", Err("empty")),
        ];
        for (input, want) in cases {
            match (normalize_entry(input), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{input:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input:?}: {e}"),
                (got, _) => panic!("{input:?}: {got:?}"),
            }
        }
        let e = normalize_entries(&["192.0.2.1".into(), "no such thing!".into()]).unwrap_err();
        assert!(e.starts_with("entries[1]"), "{e}");
        // Sorted and unique, whatever the spelling.
        let n = normalize_entries(&[
            "b.example".into(),
            "192.0.2.1".into(),
            "B.example.".into(),
            "::ffff:192.0.2.1".into(),
        ])
        .unwrap();
        assert_eq!(n, vec!["192.0.2.1".to_string(), "b.example".to_string()]);
    }

    /// The formats feeds are published in: a hosts file as ad-block lists
    /// ship it, Spamhaus DROP's `network ; SBL id` lines, and a plain list.
    #[test]
    fn common_plain_text_formats_are_read_and_bad_lines_counted() {
        let hosts = "# Title: blocklist\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
                     0.0.0.0 0.0.0.0\n0.0.0.0 ads.example.com\n0.0.0.0 track.example.net # t\n\
                     \n0.0.0.0 a.example b.example\n";
        let p = parse_list_text(hosts).unwrap();
        assert_eq!(
            p.entries,
            [
                "a.example",
                "ads.example.com",
                "b.example",
                "track.example.net"
            ]
        );
        // localhost, ip6-localhost and localhost, 0.0.0.0: 4 names skipped.
        assert_eq!((p.accepted, p.skipped), (4, 4));

        let drop = "; Spamhaus DROP List 2026/12/04\r\n; Last-Modified: Fri\r\n\
                    1.10.16.0/20 ; SBL256894\r\n2.56.192.0/22 ; SBL459831\r\n\
                    2.56.192.7/22 ; SBL0\r\n";
        let p = parse_list_text(drop).unwrap();
        assert_eq!(p.entries, ["1.10.16.0/20", "2.56.192.0/22"]);
        assert_eq!((p.accepted, p.skipped), (2, 1), "host bits set");

        let plain = "evil.example\n203.0.113.5\n2001:db8::/48\nnot a valid line\n\u{fffd}\n";
        let p = parse_list_text(plain).unwrap();
        assert_eq!(p.entries, ["2001:db8::/48", "203.0.113.5", "evil.example"]);
        assert_eq!((p.accepted, p.skipped), (3, 2));
    }

    #[test]
    fn oversized_sources_fail_rather_than_truncate() {
        let mut text = String::new();
        for i in 0..=MAX_ENTRIES as u32 {
            text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let e = parse_list_text(&text).unwrap_err();
        assert!(e.contains("the limit is 100000"), "{e}");
    }

    #[test]
    fn sources_are_https_named_and_unique() {
        let s = |name: &str, url: &str, refresh_secs| TargetListSource {
            name: name.into(),
            url: url.into(),
            refresh_secs,
        };
        assert!(validate_sources(&[s("drop", "https://feeds.example/drop.txt", 3600)]).is_ok());
        for bad in [
            vec![s("Drop", "https://feeds.example/drop.txt", 3600)],
            vec![s("drop", "http://feeds.example/drop.txt", 3600)],
            vec![s("drop", "https://", 3600)],
            vec![s("drop", "https://feeds.example/drop.txt", 10)],
            vec![
                s("drop", "https://a.example/x", 3600),
                s("drop", "https://b.example/y", 3600),
            ],
        ] {
            assert!(validate_sources(&bad).is_err(), "{bad:?}");
        }
    }
}
