//! Edge data controls: masking flow records before they leave the agent.
//!
//! The tenant sets [`DataControls`] on the portal; they arrive as a signed
//! `set_data_controls` instruction and are kept in the state dir, so a
//! restarted agent masks its first batch like its last. A [`Masker`] is the
//! compiled, immutable form of one version; [`Controls`] swaps whole
//! maskers, and the flow pipeline takes one per batch, so every batch is
//! masked under exactly one version.
//!
//! Applied in this order:
//! 1. dropped fields are zeroed (the unspecified address for `exporter`, an
//!    empty label for `app`);
//! 2. with `collect_addresses: false`, source, destination and exporter
//!    become the unspecified address of their family
//!    ([`FlowFlags::ADDR_DROPPED`]);
//! 3. else source and destination are truncated to their prefix
//!    ([`FlowFlags::ADDR_TRUNCATED`]) and/or pseudonymized
//!    ([`FlowFlags::ADDR_PSEUDONYM`]; with both, the prefix is
//!    pseudonymized). Without the tenant's pseudonym key, an agent told to
//!    pseudonymize ships no addresses at all ([`FlowFlags::ADDR_DROPPED`])
//!    rather than real ones. The exporter is infrastructure, not a host
//!    being watched: drop it with `drop_fields` to hide it;
//! 4. redaction rules rewrite the text fields (for flows, the app label).
//!
//! # Pseudonyms
//!
//! A pseudonym is the IPv6 address `fd72:616d::/32` (a unique-local prefix,
//! "ram" after `fd`) followed by the first 96 bits of
//! `HMAC-SHA256(tenant key, "rampart-pseudonym-v1" || family || address)`,
//! where family is 4 or 6 and address its 4 or 16 bytes (IPv4-mapped IPv6
//! addresses count as IPv4). So storage and queries still see an address
//! (top-N, filters and equality work), the same host gets the same
//! pseudonym on every agent of the tenant, and without the key the mapping
//! cannot be reversed or reproduced, even by trying every IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use rampart_flow::{AppLabel, FlowFlags, FlowRecord};
use rampart_proto::alerts::IdsAlert;
use rampart_proto::controls::{ControlsError, DataControls, FlowField, PseudonymKey, TextField};
use sha2::Sha256;

use crate::identity::StateDir;
use crate::AgentError;

type HmacSha256 = Hmac<Sha256>;

/// The first 32 bits of every pseudonym: `fd72:616d::/32`.
pub const PSEUDONYM_PREFIX: [u8; 4] = [0xfd, 0x72, 0x61, 0x6d];
/// Bound into every pseudonym MAC, so the key could later serve another
/// purpose without its outputs being confused with these.
const PSEUDONYM_CONTEXT: &[u8] = b"rampart-pseudonym-v1";

/// The pseudonym of `addr` under `key`; see the module docs for the layout.
pub fn pseudonym(mac: &HmacSha256, addr: IpAddr) -> Ipv6Addr {
    let mut m = mac.clone();
    m.update(PSEUDONYM_CONTEXT);
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            m.update(&[4]);
            m.update(&a.octets());
        }
        IpAddr::V6(a) => {
            m.update(&[6]);
            m.update(&a.octets());
        }
    }
    let tag = m.finalize().into_bytes();
    let mut out = [0u8; 16];
    let (prefix, rest) = out.split_at_mut(4);
    prefix.copy_from_slice(&PSEUDONYM_PREFIX);
    for (o, t) in rest.iter_mut().zip(tag.iter()) {
        *o = *t;
    }
    Ipv6Addr::from(out)
}

/// `addr` with everything after the first `v4_prefix` (IPv4) or `v6_prefix`
/// (IPv6) bits set to zero. IPv4-mapped IPv6 addresses count as IPv4.
pub fn truncate(addr: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            let keep = u32::from(v4_prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let keep = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// One version of the data controls, compiled and ready to apply.
pub struct Masker {
    controls: DataControls,
    /// Redaction rules for the app label, in order, with their replacement.
    app_rules: Vec<(regex::Regex, String)>,
    mac: Option<HmacSha256>,
    key_id: Option<String>,
    /// Set when the controls on disk could not be read: nothing is shipped
    /// until the portal sends controls again (fail closed).
    blocked: Option<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("controls", &self.controls)
            .field("key_id", &self.key_id)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Compiles `controls`; `key` is the tenant's pseudonym key, if held.
    pub fn new(controls: DataControls, key: Option<&PseudonymKey>) -> Result<Self, ControlsError> {
        let app_rules = controls
            .compiled_patterns()?
            .into_iter()
            .zip(&controls.redact)
            .filter(|((field, _), _)| *field == TextField::App)
            .map(|((_, re), rule)| (re, rule.replacement.clone()))
            .collect();
        let (mac, key_id) = match key {
            Some(k) => {
                let bytes = k.key_bytes()?;
                let mac = HmacSha256::new_from_slice(&bytes)
                    .map_err(|e| ControlsError::Key(e.to_string()))?;
                (Some(mac), Some(k.key_id.clone()))
            }
            None => (None, None),
        };
        Ok(Masker {
            controls,
            app_rules,
            mac,
            key_id,
            blocked: None,
        })
    }

    /// Masks nothing: no controls were ever set.
    pub fn unmasked() -> Self {
        Masker {
            controls: DataControls::default(),
            app_rules: Vec::new(),
            mac: None,
            key_id: None,
            blocked: None,
        }
    }

    /// Ships nothing, for the reason given.
    pub fn blocked(reason: String) -> Self {
        Masker {
            blocked: Some(reason),
            ..Masker::unmasked()
        }
    }

    pub fn controls(&self) -> &DataControls {
        &self.controls
    }

    pub fn version(&self) -> u64 {
        self.controls.version
    }

    pub fn blocked_reason(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// The id of the pseudonym key in use, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Whether the controls want pseudonyms but the key is missing, so
    /// addresses are being dropped instead.
    pub fn waiting_for_key(&self) -> bool {
        self.controls.needs_pseudonym_key() && self.mac.is_none()
    }

    /// Masks `records` in place. Returns how many were removed (all of them
    /// when blocked, else none).
    pub fn apply(&self, records: &mut Vec<FlowRecord>) -> usize {
        if self.blocked.is_some() {
            let n = records.len();
            records.clear();
            return n;
        }
        let c = &self.controls;
        let drops = |f| c.drops(f);
        let (src_port, dst_port, protocol, tcp_flags) = (
            drops(FlowField::SrcPort),
            drops(FlowField::DstPort),
            drops(FlowField::Protocol),
            drops(FlowField::TcpFlags),
        );
        let (in_if, out_if, direction, exporter, domain_id, app) = (
            drops(FlowField::InIf),
            drops(FlowField::OutIf),
            drops(FlowField::Direction),
            drops(FlowField::Exporter),
            drops(FlowField::DomainId),
            drops(FlowField::App),
        );
        for r in records.iter_mut() {
            // 1. Dropped fields.
            if src_port {
                r.src_port = 0;
            }
            if dst_port {
                r.dst_port = 0;
            }
            if protocol {
                r.protocol = 0;
            }
            if tcp_flags {
                r.tcp_flags = 0;
            }
            if in_if {
                r.in_if = 0;
            }
            if out_if {
                r.out_if = 0;
            }
            if direction {
                r.direction = rampart_flow::Direction::Unknown;
            }
            if exporter {
                r.exporter = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            }
            if domain_id {
                r.domain_id = 0;
            }
            if app {
                r.app = AppLabel::default();
            }
            // 2 and 3: the address policy.
            if !c.collect_addresses {
                r.exporter = unspecified_like(r.exporter);
            }
            r.flags |= self.mask_addrs(&mut r.src_addr, &mut r.dst_addr);
            // 4. Redaction of text fields.
            if !self.app_rules.is_empty() && !r.app.is_empty() {
                r.app = AppLabel::new(&self.redact_app(r.app.as_str()));
            }
        }
        0
    }

    /// Steps 2 and 3 of the module docs for one address pair: dropped,
    /// or truncated and/or pseudonymized. Returns the [`FlowFlags`] bits
    /// that say which.
    fn mask_addrs(&self, src: &mut IpAddr, dst: &mut IpAddr) -> u8 {
        let c = &self.controls;
        if !c.collect_addresses {
            *src = unspecified_like(*src);
            *dst = unspecified_like(*dst);
            return FlowFlags::ADDR_DROPPED;
        }
        let mut flags = 0;
        if let Some(t) = c.truncate {
            *src = truncate(*src, t.v4_prefix, t.v6_prefix);
            *dst = truncate(*dst, t.v4_prefix, t.v6_prefix);
            flags |= FlowFlags::ADDR_TRUNCATED;
        }
        if c.pseudonymize_addresses {
            match &self.mac {
                Some(mac) => {
                    *src = IpAddr::V6(pseudonym(mac, *src));
                    *dst = IpAddr::V6(pseudonym(mac, *dst));
                    flags |= FlowFlags::ADDR_PSEUDONYM;
                }
                None => {
                    *src = unspecified_like(*src);
                    *dst = unspecified_like(*dst);
                    flags |= FlowFlags::ADDR_DROPPED;
                }
            }
        }
        flags
    }

    fn redact_app(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (re, replacement) in &self.app_rules {
            if let std::borrow::Cow::Owned(changed) = re.replace_all(&text, replacement.as_str()) {
                text = changed;
            }
        }
        text
    }

    /// Masks IDS alerts in place under the same controls as flows: the
    /// same address policy, port and protocol drops, and the app-label
    /// rules for `app_proto`. Anomalies are IDS alerts too and take the
    /// same treatment; their `anomaly` part (type, event name, layer, code)
    /// names no host or port, so it is kept. Returns how many were removed
    /// (all of them when blocked, else none).
    pub fn apply_alerts(&self, alerts: &mut Vec<IdsAlert>) -> usize {
        if self.blocked.is_some() {
            let n = alerts.len();
            alerts.clear();
            return n;
        }
        let c = &self.controls;
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        for a in alerts.iter_mut() {
            if c.drops(FlowField::SrcPort) {
                a.src_port = None;
            }
            if c.drops(FlowField::DstPort) {
                a.dst_port = None;
            }
            if c.drops(FlowField::Protocol) {
                a.protocol = None;
            }
            if c.drops(FlowField::App) {
                a.app_proto = None;
            }
            let (had_src, had_dst) = (a.src_addr.is_some(), a.dst_addr.is_some());
            let mut src = a.src_addr.unwrap_or(unspecified);
            let mut dst = a.dst_addr.unwrap_or(unspecified);
            let flags = self.mask_addrs(&mut src, &mut dst);
            let dropped = flags & FlowFlags::ADDR_DROPPED != 0;
            a.src_addr = (had_src && !dropped).then_some(src);
            a.dst_addr = (had_dst && !dropped).then_some(dst);
            if let Some(app) = &a.app_proto {
                if !self.app_rules.is_empty() {
                    a.app_proto = Some(self.redact_app(app));
                }
            }
        }
        0
    }
}

/// The data controls in force, shared by the check-in loop (which sets
/// them) and the flow pipeline (which takes one [`Masker`] per batch).
pub struct Controls {
    dir: StateDir,
    current: RwLock<Arc<Masker>>,
}

impl Controls {
    /// Loads what the state dir holds. Controls that cannot be read block
    /// shipping (fail closed) until the portal sends controls again; a
    /// pseudonym key that cannot be read is fetched again.
    pub fn load(dir: &StateDir) -> Controls {
        let masker = match dir.data_controls() {
            Ok(None) => Masker::unmasked(),
            Ok(Some(c)) => {
                let key = match dir.pseudonym_key() {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the pseudonym key: fetching it again");
                        None
                    }
                };
                let version = c.version;
                match Masker::new(c, key.as_ref()) {
                    Ok(m) => m,
                    // A bad key must not block; bad controls must.
                    Err(ControlsError::Key(e)) => {
                        tracing::warn!(error = %e, "stored pseudonym key is unusable: fetching it again");
                        dir.data_controls()
                            .ok()
                            .flatten()
                            .and_then(|c| Masker::new(c, None).ok())
                            .unwrap_or_else(|| Masker::blocked(e))
                    }
                    Err(e) => {
                        tracing::error!(version, error = %e, "stored data controls are invalid: no flow is shipped until the portal sends them again");
                        Masker::blocked(e.to_string())
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the data controls: no flow is shipped until the portal sends them again");
                Masker::blocked(e.to_string())
            }
        };
        if let Some(reason) = masker.blocked_reason() {
            tracing::warn!(reason, "flow shipping blocked");
        }
        Controls {
            dir: dir.clone(),
            current: RwLock::new(Arc::new(masker)),
        }
    }

    /// The masker for the next batch.
    pub fn current(&self) -> Arc<Masker> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validates, persists, then puts `controls` in force (in that order, so
    /// what runs is always what a restart would load). Keeps the pseudonym
    /// key already held.
    pub fn set(&self, controls: DataControls) -> Result<Arc<Masker>, AgentError> {
        controls
            .validate()
            .map_err(|e| AgentError::State(e.to_string()))?;
        let key = self.dir.pseudonym_key().unwrap_or(None);
        let masker = match Masker::new(controls.clone(), key.as_ref()) {
            Ok(m) => m,
            Err(ControlsError::Key(_)) => {
                Masker::new(controls.clone(), None).map_err(|e| AgentError::State(e.to_string()))?
            }
            Err(e) => return Err(AgentError::State(e.to_string())),
        };
        self.dir.save_data_controls(&controls)?;
        let masker = Arc::new(masker);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = masker.clone();
        tracing::info!(
            version = controls.version,
            pseudonym_key = masker.key_id(),
            "data controls applied"
        );
        Ok(masker)
    }

    /// Stores the tenant's pseudonym key (wrapped) and rebuilds the masker
    /// in force with it.
    pub fn set_key(&self, key: &PseudonymKey) -> Result<(), AgentError> {
        key.key_bytes()
            .map_err(|e| AgentError::State(e.to_string()))?;
        self.dir.save_pseudonym_key(key)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.blocked_reason().is_none() {
            let m = Masker::new(cur.controls().clone(), Some(key))
                .map_err(|e| AgentError::State(e.to_string()))?;
            *cur = Arc::new(m);
        }
        tracing::info!(key_id = %key.key_id, "pseudonym key stored");
        Ok(())
    }

    /// Whether the controls in force want a pseudonym key that is missing.
    pub fn needs_key(&self) -> bool {
        self.current().waiting_for_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_flow::Direction;
    use rampart_proto::controls::{Redaction, Truncate};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn flow() -> FlowRecord {
        FlowRecord {
            start_ms: 1,
            end_ms: 2,
            bytes: 3,
            packets: 4,
            src_addr: ip("10.1.2.3"),
            dst_addr: ip("2001:db8:aaaa:bbbb::1"),
            exporter: ip("192.0.2.1"),
            in_if: 5,
            out_if: 6,
            sampling_rate: 1,
            domain_id: 7,
            src_port: 8,
            dst_port: 9,
            protocol: 6,
            tcp_flags: 0x12,
            direction: Direction::Egress,
            resample: 1,
            flags: 0,
            app: AppLabel::new("secret-app"),
        }
    }

    fn key() -> PseudonymKey {
        PseudonymKey {
            key_id: "k1".into(),
            key_b64: rampart_proto::b64(&[0x0b; 20]),
        }
    }

    fn masked(c: DataControls, key: Option<&PseudonymKey>) -> FlowRecord {
        let mut v = vec![flow()];
        Masker::new(c, key).unwrap().apply(&mut v);
        v[0]
    }

    #[test]
    fn truncation_keeps_the_prefix() {
        assert_eq!(truncate(ip("10.1.2.3"), 24, 48), ip("10.1.2.0"));
        assert_eq!(truncate(ip("10.1.2.3"), 0, 48), ip("0.0.0.0"));
        assert_eq!(truncate(ip("10.1.2.3"), 32, 48), ip("10.1.2.3"));
        assert_eq!(truncate(ip("10.255.2.3"), 9, 48), ip("10.128.0.0"));
        assert_eq!(
            truncate(ip("2001:db8:aaaa:bbbb::1"), 24, 48),
            ip("2001:db8:aaaa::")
        );
        assert_eq!(truncate(ip("2001:db8::1"), 24, 0), ip("::"));
        assert_eq!(truncate(ip("::ffff:10.1.2.3"), 24, 48), ip("10.1.2.0"));
    }

    /// RFC 4231 test case 2 ("Jefe", "what do ya want for nothing?") pins
    /// the HMAC we build on; the pseudonym layout is then checked against
    /// an HMAC computed here by hand over the documented input.
    #[test]
    fn pseudonym_is_the_documented_hmac_under_the_prefix() {
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex_of(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = HmacSha256::new_from_slice(&[0x0b; 20]).unwrap();
        let p = pseudonym(&mac, ip("10.1.2.3"));
        let mut want = mac.clone();
        want.update(b"rampart-pseudonym-v1\x04\x0a\x01\x02\x03");
        let tag = want.finalize().into_bytes();
        assert_eq!(&p.octets()[..4], &[0xfd, 0x72, 0x61, 0x6d]);
        assert_eq!(&p.octets()[4..], &tag[..12]);
        // Stable, family-aware, and the v4-mapped form is the same host.
        assert_eq!(pseudonym(&mac, ip("::ffff:10.1.2.3")), p);
        assert_ne!(pseudonym(&mac, ip("10.1.2.4")), p);
        let other = HmacSha256::new_from_slice(&[0x0c; 20]).unwrap();
        assert_ne!(pseudonym(&other, ip("10.1.2.3")), p);
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn no_controls_change_nothing() {
        assert_eq!(masked(DataControls::default(), None), flow());
    }

    #[test]
    fn dropped_fields_are_zeroed() {
        let c = DataControls {
            version: 1,
            drop_fields: vec![
                FlowField::SrcPort,
                FlowField::InIf,
                FlowField::Exporter,
                FlowField::App,
                FlowField::Direction,
            ],
            ..DataControls::default()
        };
        let r = masked(c, None);
        assert_eq!((r.src_port, r.in_if, r.dst_port, r.out_if), (0, 0, 9, 6));
        assert_eq!(r.exporter, ip("0.0.0.0"));
        assert!(r.app.is_empty());
        assert_eq!(r.direction, Direction::Unknown);
        assert_eq!(r.src_addr, flow().src_addr);
        assert_eq!(r.flags, 0);
    }

    #[test]
    fn no_ip_drops_every_address_and_wins_over_pseudonyms() {
        let c = DataControls {
            version: 1,
            collect_addresses: false,
            pseudonymize_addresses: true,
            truncate: Some(Truncate::default()),
            ..DataControls::default()
        };
        let r = masked(c, Some(&key()));
        assert_eq!(
            (r.src_addr, r.dst_addr, r.exporter),
            (ip("0.0.0.0"), ip("::"), ip("0.0.0.0"))
        );
        assert_eq!(r.flags, FlowFlags::ADDR_DROPPED);
    }

    #[test]
    fn pseudonymize_without_the_key_ships_no_address() {
        let c = DataControls {
            version: 1,
            pseudonymize_addresses: true,
            ..DataControls::default()
        };
        let m = Masker::new(c.clone(), None).unwrap();
        assert!(m.waiting_for_key());
        let r = masked(c.clone(), None);
        assert_eq!((r.src_addr, r.dst_addr), (ip("0.0.0.0"), ip("::")));
        assert_eq!(r.flags, FlowFlags::ADDR_DROPPED);
        let r = masked(c, Some(&key()));
        assert_eq!(r.flags, FlowFlags::ADDR_PSEUDONYM);
        let mac = HmacSha256::new_from_slice(&[0x0b; 20]).unwrap();
        assert_eq!(r.src_addr, IpAddr::V6(pseudonym(&mac, ip("10.1.2.3"))));
        assert_eq!(r.exporter, flow().exporter);
    }

    #[test]
    fn truncate_and_pseudonymize_hash_the_prefix() {
        let c = DataControls {
            version: 1,
            pseudonymize_addresses: true,
            truncate: Some(Truncate::default()),
            ..DataControls::default()
        };
        let r = masked(c, Some(&key()));
        let mac = HmacSha256::new_from_slice(&[0x0b; 20]).unwrap();
        assert_eq!(r.src_addr, IpAddr::V6(pseudonym(&mac, ip("10.1.2.0"))));
        assert_eq!(
            r.flags,
            FlowFlags::ADDR_PSEUDONYM | FlowFlags::ADDR_TRUNCATED
        );
    }

    #[test]
    fn redaction_rewrites_the_app_label_in_rule_order() {
        let c = DataControls {
            version: 1,
            redact: vec![
                Redaction {
                    field: TextField::App,
                    pattern: "secret".into(),
                    replacement: "x".into(),
                },
                Redaction {
                    field: TextField::App,
                    pattern: "^x-(a)pp$".into(),
                    replacement: "${1}lpha".into(),
                },
            ],
            ..DataControls::default()
        };
        assert_eq!(masked(c, None).app.as_str(), "alpha");
    }

    #[test]
    fn blocked_ships_nothing() {
        let mut v = vec![flow(), flow()];
        assert_eq!(Masker::blocked("corrupt".into()).apply(&mut v), 2);
        assert!(v.is_empty());
    }

    #[test]
    fn controls_survive_a_restart_and_the_key_is_stored_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), None);
        let c = DataControls {
            version: 7,
            pseudonymize_addresses: true,
            ..DataControls::default()
        };
        let controls = Controls::load(&sd);
        assert_eq!(controls.current().version(), 0);
        controls.set(c.clone()).unwrap();
        assert!(controls.needs_key());
        controls.set_key(&key()).unwrap();
        assert!(!controls.needs_key());

        let on_disk = std::fs::read(dir.path().join("pseudonym.key")).unwrap();
        assert!(!on_disk.windows(20).any(|w| w == [0x0b; 20]));
        let b64 = key().key_b64;
        assert!(!on_disk.windows(b64.len()).any(|w| w == b64.as_bytes()));

        let again = Controls::load(&sd);
        let m = again.current();
        assert_eq!(m.controls(), &c);
        assert_eq!(m.key_id(), Some("k1"));
        assert!(m.blocked_reason().is_none());
    }

    #[test]
    fn corrupt_controls_on_disk_block_shipping_until_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), None);
        std::fs::write(dir.path().join("controls.json"), b"{\"version\": ").unwrap();
        let controls = Controls::load(&sd);
        assert!(controls.current().blocked_reason().is_some());
        controls
            .set(DataControls {
                version: 2,
                ..DataControls::default()
            })
            .unwrap();
        assert!(controls.current().blocked_reason().is_none());
    }
}
