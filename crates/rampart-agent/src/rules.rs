//! Block and allow rules on the device (issue 7): a pure evaluator of the
//! configuration's rules over a flow, and their rendering as an nftables
//! ruleset, applied only when the agent runs with `--firewall nft`.
//!
//! Semantics, shared by both:
//! - rules are tried in order and the first whose matchers all match wins;
//!   no rule matching is no verdict (the traffic is not ours to decide);
//! - a rule with a schedule is in force only while the schedule is active
//!   ([`Schedule::is_active`]); the nftables ruleset holds the rules in
//!   force when it is rendered, so it is rendered again at
//!   [`RuleSet::next_change`];
//! - `ip`, `cidr`, `domain`, `list` and `country` match the remote address:
//!   the destination of outbound traffic, the source of inbound traffic;
//!   `port` matches the destination port (the service) in both directions;
//! - a `domain` (and a list's domains) matches the addresses it resolved to
//!   when the rules were built: nftables sees addresses, not names. A
//!   wildcard (`*.example.com`) resolves to nothing and is not enforced by
//!   nftables;
//! - `country` needs the flow's GeoIP country: the evaluator matches it;
//!   nftables has no country match, so such rules are left out of the
//!   ruleset and counted in the summary (an allow rule left out can leave
//!   a later block rule to match what it would have allowed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use rampart_proto::config::{parse_cidr, parse_ports, Direction, Protocol, Rule, RuleAction};

/// Most domains resolved when rules are built, and addresses kept per
/// domain: resolution is blocking and a list can hold 100 000 names.
pub const MAX_RESOLVED_DOMAINS: usize = 256;
pub const MAX_ADDRS_PER_DOMAIN: usize = 16;

/// How rules are enforced: only evaluated (the default), or also applied
/// to the host's firewall with nftables (`--firewall nft`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Firewall {
    #[default]
    Off,
    Nft,
}

/// A network: address bits (IPv4 in the low 32 bits) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Net {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Net {
    fn host(ip: IpAddr) -> Net {
        match ip.to_canonical() {
            IpAddr::V4(a) => Net {
                v6: false,
                bits: u128::from(u32::from(a)),
                prefix: 32,
            },
            IpAddr::V6(a) => Net {
                v6: true,
                bits: u128::from(a),
                prefix: 128,
            },
        }
    }

    fn parse(s: &str) -> Option<Net> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(Net::host(ip));
        }
        let (addr, prefix) = parse_cidr(s).ok()?;
        let n = Net::host(addr);
        Some(Net { prefix, ..n })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let h = Net::host(ip);
        if h.v6 != self.v6 {
            return false;
        }
        let width = if self.v6 { 128 } else { 32 };
        let shift = u32::from(width - self.prefix);
        self.prefix == 0 || h.bits >> shift == self.bits >> shift
    }

    fn render(&self) -> String {
        let addr = if self.v6 {
            IpAddr::V6(self.bits.into())
        } else {
            IpAddr::V4((self.bits as u32).into())
        };
        let full = if self.v6 { 128 } else { 32 };
        if self.prefix == full {
            addr.to_string()
        } else {
            format!("{addr}/{}", self.prefix)
        }
    }
}

/// An address matcher: every one of a rule's must hold the remote address.
#[derive(Clone, Debug, Default)]
struct AddrSet {
    nets: Vec<Net>,
    /// Set for a target list, so the ruleset declares it once.
    list: Option<String>,
}

impl AddrSet {
    fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }
}

/// One rule, parsed.
#[derive(Clone, Debug)]
struct Compiled {
    rule: Rule,
    direction: Direction,
    addrs: Vec<AddrSet>,
    country: Option<String>,
    ports: Option<(u16, u16)>,
    /// Domains that resolved to nothing (wildcards, unknown names): the
    /// rule's domain matcher then holds no address.
    unresolved: usize,
}

/// Rules ready to evaluate and render.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Compiled>,
}

/// The parts of a flow the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// `Inbound` or `Outbound` (`Both` is taken as outbound).
    pub direction: Direction,
    /// The remote address's ISO country code, when known.
    pub country: Option<[u8; 2]>,
}

fn protocol_matches(p: Option<Protocol>, proto: u8) -> bool {
    match p {
        None | Some(Protocol::Any) => true,
        Some(Protocol::Tcp) => proto == 6,
        Some(Protocol::Udp) => proto == 17,
        Some(Protocol::Icmp) => proto == 1 || proto == 58,
    }
}

impl RuleSet {
    /// Parses rules (already validated by `EffectiveConfig::check`) with the
    /// lists they name and the addresses domains resolve to (`resolve` is
    /// asked at most [`MAX_RESOLVED_DOMAINS`] times). A rule naming a list
    /// absent from `lists`, or a value that does not parse, is an error.
    pub fn build(
        rules: &[Rule],
        lists: &BTreeMap<String, Vec<String>>,
        resolve: &mut dyn FnMut(&str) -> Vec<IpAddr>,
    ) -> Result<RuleSet, String> {
        let mut cache: BTreeMap<String, Vec<Net>> = BTreeMap::new();
        let mut lookup = |d: &str| -> Vec<Net> {
            let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            if d.starts_with("*.") {
                return Vec::new();
            }
            if let Some(n) = cache.get(&d) {
                return n.clone();
            }
            if cache.len() >= MAX_RESOLVED_DOMAINS {
                return Vec::new();
            }
            let mut addrs: Vec<Net> = resolve(&d).into_iter().map(Net::host).collect();
            addrs.sort();
            addrs.dedup();
            addrs.truncate(MAX_ADDRS_PER_DOMAIN);
            cache.insert(d, addrs.clone());
            addrs
        };
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = |what: &str, why: String| format!("rules[{i}].{what}: {why}");
            let mut addrs = Vec::new();
            let mut unresolved = 0;
            if let Some(ip) = &r.ip {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| at("ip", "expected an address".into()))?;
                addrs.push(AddrSet {
                    nets: vec![Net::host(ip)],
                    list: None,
                });
            }
            if let Some(c) = &r.cidr {
                let n =
                    Net::parse(c).ok_or_else(|| at("cidr", "expected address/prefix".into()))?;
                addrs.push(AddrSet {
                    nets: vec![n],
                    list: None,
                });
            }
            if let Some(d) = &r.domain {
                let nets = lookup(d);
                unresolved += usize::from(nets.is_empty());
                addrs.push(AddrSet { nets, list: None });
            }
            if let Some(name) = &r.list {
                let entries = lists.get(name).ok_or_else(|| {
                    at("list", format!("list {name} is not in the configuration"))
                })?;
                let mut nets = Vec::with_capacity(entries.len());
                for e in entries {
                    match Net::parse(e) {
                        Some(n) => nets.push(n),
                        None => {
                            let resolved = lookup(e);
                            unresolved += usize::from(resolved.is_empty());
                            nets.extend(resolved);
                        }
                    }
                }
                nets.sort();
                nets.dedup();
                addrs.push(AddrSet {
                    nets,
                    list: Some(name.clone()),
                });
            }
            let ports = r
                .port
                .as_deref()
                .map(parse_ports)
                .transpose()
                .map_err(|e| at("port", e))?;
            out.push(Compiled {
                rule: r.clone(),
                direction: r.direction.unwrap_or(Direction::Both),
                addrs,
                country: r.country.clone(),
                ports,
                unresolved,
            });
        }
        Ok(RuleSet { rules: out })
    }

    /// The first rule in force at `now` that matches the flow: its action
    /// and index.
    pub fn verdict(&self, f: &FlowKey, now: i64) -> Option<(RuleAction, usize)> {
        let inbound = f.direction == Direction::Inbound;
        let remote = if inbound { f.src } else { f.dst };
        self.rules.iter().enumerate().find_map(|(i, c)| {
            let r = &c.rule;
            let dir_ok = match c.direction {
                Direction::Both => true,
                Direction::Inbound => inbound,
                Direction::Outbound => !inbound,
            };
            let ok = dir_ok
                && r.schedule.as_ref().is_none_or(|s| s.is_active(now))
                && protocol_matches(r.protocol, f.protocol)
                && c.ports.is_none_or(|(lo, hi)| {
                    matches!(f.protocol, 6 | 17 | 132) && (lo..=hi).contains(&f.dst_port)
                })
                && c.country.as_ref().is_none_or(|want| {
                    f.country
                        .is_some_and(|got| got.as_slice() == want.as_bytes())
                })
                && c.addrs.iter().all(|a| a.contains(remote));
            ok.then_some((r.action, i))
        })
    }

    /// The first minute after `now` (within 8 days) at which a scheduled
    /// rule comes into or goes out of force: when to render again.
    pub fn next_change(&self, now: i64) -> Option<i64> {
        let first = (now.div_euclid(60) + 1) * 60;
        let mut best: Option<i64> = None;
        for s in self.rules.iter().filter_map(|c| c.rule.schedule.as_ref()) {
            let off = i64::from(s.utc_offset_minutes.unwrap_or(0)) * 60;
            let mut times = Vec::new();
            for hhmm in [&s.start, &s.end] {
                let Some((h, m)) = hhmm.split_once(':') else {
                    continue;
                };
                let (Ok(h), Ok(m)) = (h.parse::<i64>(), m.parse::<i64>()) else {
                    continue;
                };
                let minute = h * 3600 + m * 60;
                let day0 = (first + off).div_euclid(86_400);
                for d in 0..=8 {
                    let t = (day0 + d) * 86_400 + minute - off;
                    if t >= first {
                        times.push(t);
                    }
                }
            }
            times.sort_unstable();
            if let Some(t) = times
                .into_iter()
                .find(|t| s.is_active(*t) != s.is_active(t - 60))
            {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        best
    }
}

/// What was rendered, for the apply report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// An `nft -f` script that replaces the `inet rampart` table atomically.
    pub script: String,
    /// Rules in the ruleset (each may be one nftables rule per chain and
    /// address family).
    pub in_force: usize,
    /// Rules left out: scheduled and not active now.
    pub scheduled_off: usize,
    /// Rules left out: a country matcher (nftables has none).
    pub country: usize,
    /// Rules left out: they match no address of either family (a list with
    /// no networks, a domain that resolved to nothing).
    pub empty: usize,
    /// Domains that resolved to nothing and are not enforced.
    pub unresolved_domains: usize,
}

impl Rendered {
    pub fn summary(&self) -> String {
        format!(
            "{} rules in force, {} scheduled and inactive, {} by country not enforced by nftables, \
             {} matching no address, {} domains not resolved",
            self.in_force, self.scheduled_off, self.country, self.empty, self.unresolved_domains
        )
    }
}

fn proto_expr(p: Option<Protocol>, ports: Option<(u16, u16)>) -> Option<String> {
    let ports = ports.map(|(lo, hi)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    });
    match (p.unwrap_or(Protocol::Any), ports) {
        (Protocol::Tcp, Some(pt)) => Some(format!("tcp dport {pt}")),
        (Protocol::Udp, Some(pt)) => Some(format!("udp dport {pt}")),
        (Protocol::Any, Some(pt)) => {
            Some(format!("meta l4proto {{ tcp, udp, sctp }} th dport {pt}"))
        }
        // ICMP has no ports: such a rule matches nothing.
        (Protocol::Icmp, Some(_)) => None,
        (Protocol::Tcp, None) => Some("meta l4proto tcp".into()),
        (Protocol::Udp, None) => Some("meta l4proto udp".into()),
        (Protocol::Icmp, None) => Some("meta l4proto { icmp, ipv6-icmp }".into()),
        (Protocol::Any, None) => Some(String::new()),
    }
}

fn elements(nets: &[&Net]) -> String {
    nets.iter()
        .map(|n| n.render())
        .collect::<Vec<_>>()
        .join(", ")
}

impl RuleSet {
    /// The ruleset in force at `now`: table `inet rampart` with an `input`
    /// and an `output` chain (policy accept: only the rules decide), one
    /// named interval set per target list and family, rules in order with
    /// `drop` for block and `accept` for allow.
    pub fn render(&self, now: i64) -> Rendered {
        let mut r = Rendered {
            script: String::new(),
            in_force: 0,
            scheduled_off: 0,
            country: 0,
            empty: 0,
            unresolved_domains: self.rules.iter().map(|c| c.unresolved).sum(),
        };
        // Lists, by name: one set per family, declared once.
        let mut list_sets: BTreeMap<&str, [Vec<&Net>; 2]> = BTreeMap::new();
        for c in &self.rules {
            for a in &c.addrs {
                if let Some(name) = &a.list {
                    list_sets.entry(name.as_str()).or_insert_with(|| {
                        let v4 = a.nets.iter().filter(|n| !n.v6).collect();
                        let v6 = a.nets.iter().filter(|n| n.v6).collect();
                        [v4, v6]
                    });
                }
            }
        }
        let set_name: BTreeMap<&str, usize> =
            list_sets.keys().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut input = Vec::new();
        let mut output = Vec::new();
        for (i, c) in self.rules.iter().enumerate() {
            let rule = &c.rule;
            if rule.schedule.as_ref().is_some_and(|s| !s.is_active(now)) {
                r.scheduled_off += 1;
                continue;
            }
            if c.country.is_some() {
                r.country += 1;
                continue;
            }
            let Some(proto) = proto_expr(rule.protocol, c.ports) else {
                r.empty += 1;
                continue;
            };
            let verdict = match rule.action {
                RuleAction::Block => "drop",
                RuleAction::Allow => "accept",
            };
            let comment = format!("rule {i}");
            let mut lines: Vec<(bool, String)> = Vec::new();
            for inbound in [true, false] {
                let applies = match c.direction {
                    Direction::Both => true,
                    Direction::Inbound => inbound,
                    Direction::Outbound => !inbound,
                };
                if !applies {
                    continue;
                }
                let field = if inbound { "saddr" } else { "daddr" };
                if c.addrs.is_empty() {
                    lines.push((inbound, format!("{proto} {verdict} comment \"{comment}\"")));
                    continue;
                }
                for (fam, v6) in [("ip", false), ("ip6", true)] {
                    let mut exprs = Vec::new();
                    let mut possible = true;
                    for a in &c.addrs {
                        let nets: Vec<&Net> = a.nets.iter().filter(|n| n.v6 == v6).collect();
                        if nets.is_empty() {
                            possible = false;
                            break;
                        }
                        match a.list.as_deref().and_then(|n| set_name.get(n)) {
                            Some(j) => {
                                let sfx = if v6 { "v6" } else { "v4" };
                                exprs.push(format!("{fam} {field} @list{j}_{sfx}"));
                            }
                            None if nets.len() == 1 => {
                                exprs.push(format!("{fam} {field} {}", nets[0].render()))
                            }
                            None => exprs.push(format!("{fam} {field} {{ {} }}", elements(&nets))),
                        }
                    }
                    if possible {
                        lines.push((
                            inbound,
                            format!(
                                "{} {proto} {verdict} comment \"{comment}\"",
                                exprs.join(" ")
                            ),
                        ));
                    }
                }
            }
            if lines.is_empty() {
                r.empty += 1;
                continue;
            }
            r.in_force += 1;
            for (inbound, l) in lines {
                let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
                if inbound {
                    input.push(l);
                } else {
                    output.push(l);
                }
            }
        }
        let s = &mut r.script;
        // Declaring the table first makes the delete valid when it does not
        // exist yet; the three statements are one transaction.
        s.push_str("table inet rampart\ndelete table inet rampart\ntable inet rampart {\n");
        for (name, [v4, v6]) in &list_sets {
            let j = set_name[name];
            for (sfx, ty, nets) in [("v4", "ipv4_addr", v4), ("v6", "ipv6_addr", v6)] {
                if nets.is_empty() {
                    continue;
                }
                let _ = write!(
                    s,
                    "  # target list {name}\n  set list{j}_{sfx} {{\n    type {ty}\n    flags interval\n    auto-merge\n    elements = {{ {} }}\n  }}\n",
                    elements(nets)
                );
            }
        }
        for (chain, hook, lines) in [("input", "input", &input), ("output", "output", &output)] {
            let _ = writeln!(
                s,
                "  chain {chain} {{\n    type filter hook {hook} priority filter; policy accept;"
            );
            for l in lines {
                let _ = writeln!(s, "    {l}");
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        r
    }
}

/// Resolves a domain with the system resolver (blocking).
pub fn system_resolve(domain: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    (domain, 0)
        .to_socket_addrs()
        .map(|it| it.map(|sa| sa.ip()).collect())
        .unwrap_or_default()
}

/// Threads resolving at once: the system resolver has no timeout of ours,
/// and a name that does not answer costs its full timeout.
const RESOLVERS: usize = 16;

/// The domains the rules name (theirs and their lists'), at most
/// [`MAX_RESOLVED_DOMAINS`], resolved [`RESOLVERS`] at a time.
fn resolve_all(
    rules: &[Rule],
    lists: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<IpAddr>> {
    let mut names = std::collections::BTreeSet::new();
    let listed = rules
        .iter()
        .filter_map(|r| r.list.as_deref())
        .filter_map(|l| lists.get(l))
        .flatten();
    for d in rules.iter().filter_map(|r| r.domain.as_ref()).chain(listed) {
        if names.len() >= MAX_RESOLVED_DOMAINS {
            break;
        }
        if Net::parse(d).is_none() && !d.starts_with("*.") {
            names.insert(d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase());
        }
    }
    let names: Vec<String> = names.into_iter().collect();
    let chunk = names.len().div_ceil(RESOLVERS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|d| (d.clone(), system_resolve(d)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .flatten()
            .collect()
    })
}

/// Runs `nft` with the script on its standard input. Debian installs it in
/// /usr/sbin, which a service's PATH may lack.
fn nft(args: &[&str], script: &str) -> Result<(), String> {
    let spawn = |bin: &str| {
        Command::new(bin)
            .args(args)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    let mut child = spawn("nft")
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => spawn("/usr/sbin/nft"),
            _ => Err(e),
        })
        .map_err(|e| {
            format!("cannot run nft: {e}: install nftables or run without --firewall nft")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing the ruleset to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.chars().take(2000).collect();
        Err(format!("nft {} failed: {}", args.join(" "), err.trim()))
    }
}

/// Checks a rendered script with `nft -c` (nothing is changed).
pub fn check(script: &str) -> Result<(), String> {
    nft(&["-c", "-f"], script)
}

/// Builds the rules and, with [`Firewall::Nft`], renders them for `now`,
/// checks the ruleset with `nft -c` and applies it with `nft -f` (one
/// transaction: the old table stays on any failure). Returns a summary for
/// the apply report. Blocking (name resolution, nft): call it from
/// `spawn_blocking`, and again at [`RuleSet::next_change`].
pub fn apply(
    mode: Firewall,
    rules: &[Rule],
    lists: &BTreeMap<String, Vec<String>>,
    now: i64,
) -> Result<String, String> {
    match mode {
        Firewall::Off => {
            let set = RuleSet::build(rules, lists, &mut |_| Vec::new())?;
            Ok(format!(
                "{} rules evaluated on flows only: firewall enforcement is off (run with --firewall nft)",
                set.rules.len()
            ))
        }
        Firewall::Nft => {
            let resolved = resolve_all(rules, lists);
            let set = RuleSet::build(rules, lists, &mut |d| {
                resolved.get(d).cloned().unwrap_or_default()
            })?;
            let r = set.render(now);
            check(&r.script)?;
            nft(&["-f"], &r.script)?;
            Ok(format!(
                "nftables table inet rampart applied: {}",
                r.summary()
            ))
        }
    }
}
