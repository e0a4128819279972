//! The flow filter language: a compatible subset of nfdump's filter syntax
//! (nfdump(1), "filter"), so that operators can reuse what they already type
//! at `nfdump -r file '...'`:
//!
//! ```
//! use rampart_flow::filter::Filter;
//!
//! let f = Filter::parse("src host 10.0.0.1 and dst port 443 and proto tcp").unwrap();
//! assert!(!f.is_match_all());
//! let e = Filter::parse("dst port https").unwrap_err();
//! assert_eq!(e.to_string(), "column 10: expected a port number after 'port', found 'https'");
//! ```
//!
//! A filter is parsed once into a small tree of precompiled tests (addresses
//! as integers and masks, lists sorted, negations pushed down to the leaves)
//! and then evaluated per record by [`Filter::matches`], which allocates
//! nothing and touches no strings: the query engine calls it on millions of
//! rows. The user documentation, including what nfdump offers that this does
//! not, is `docs/filter.md`.
//!
//! Semantics follow nfdump 1.7 where it is documented, and where the man page
//! is silent they follow what nfdump 1.7.1 does (checked by running it over
//! the same records, see `tests/filter.rs`). One such case is negated TCP
//! flags: `flags SA` is true when all of S and A are set, but nfdump reads
//! `not flags AFRPU` as "none of A, F, R, P, U set" (this is what makes its
//! documented idiom `flags S and not flags AFRPU` select flows with only SYN).
//! Pushing negations down to the leaves reproduces that exactly.
//!
//! Bounds: a filter is at most [`MAX_FILTER_LEN`] bytes, nests at most
//! [`MAX_DEPTH`] parentheses and a list holds at most [`MAX_LIST_LEN`]
//! entries; beyond them parsing returns an error (recursion is bounded by the
//! parenthesis depth, so no input can overflow the stack).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::record::{Direction, FlowRecord};

/// Longest filter accepted, in bytes. nfdump has virtually no limit, but
/// filters reach us over HTTP and a long one is almost always a list that
/// belongs in a query parameter of its own.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest parenthesis nesting accepted. Parsing and evaluation recurse once
/// per level, so this bounds the stack they use.
pub const MAX_DEPTH: usize = 64;
/// Most entries in one `in [ ... ]` list.
pub const MAX_LIST_LEN: usize = 1024;

/// Why a filter expression was refused, and where.
///
/// `position` is the 1-based column, counted in characters (not bytes), of
/// the token or character where parsing failed; one past the last character
/// when the filter ended too early. The HTTP layer returns it with a 400 so a
/// client can underline the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {position}: {message}")]
pub struct FilterError {
    /// 1-based column, in characters, where parsing failed.
    pub position: usize,
    /// Lowercase, says what was expected and what was found instead.
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

/// The record fields a filter reads, so that the query planner can tell
/// whether a rollup that keeps only some dimensions can answer it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(u16);

impl FieldSet {
    pub const SRC_ADDR: FieldSet = FieldSet(1);
    pub const DST_ADDR: FieldSet = FieldSet(1 << 1);
    pub const EXPORTER: FieldSet = FieldSet(1 << 2);
    pub const SRC_PORT: FieldSet = FieldSet(1 << 3);
    pub const DST_PORT: FieldSet = FieldSet(1 << 4);
    pub const PROTOCOL: FieldSet = FieldSet(1 << 5);
    pub const BYTES: FieldSet = FieldSet(1 << 6);
    pub const PACKETS: FieldSet = FieldSet(1 << 7);
    pub const TCP_FLAGS: FieldSet = FieldSet(1 << 8);
    pub const IN_IF: FieldSet = FieldSet(1 << 9);
    pub const OUT_IF: FieldSet = FieldSet(1 << 10);
    pub const DIRECTION: FieldSet = FieldSet(1 << 11);
    /// `start_ms` and `end_ms` (the `duration` primitive).
    pub const TIMES: FieldSet = FieldSet(1 << 12);

    pub const EMPTY: FieldSet = FieldSet(0);

    pub const fn union(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 | other.0)
    }

    /// True when every field of `other` is in `self`.
    pub const fn contains(self, other: FieldSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: FieldSet) -> bool {
        self.0 & other.0 != 0
    }

    /// True when every field in `self` is in `other`: a rollup keeping the
    /// dimensions `other` can evaluate this filter.
    pub const fn is_subset_of(self, other: FieldSet) -> bool {
        other.contains(self)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn bits(self) -> u16 {
        self.0
    }
}

impl std::ops::BitOr for FieldSet {
    type Output = FieldSet;
    fn bitor(self, rhs: FieldSet) -> FieldSet {
        self.union(rhs)
    }
}

/// A compiled filter expression.
///
/// Cheap to share between threads (`Send + Sync`, immutable after parsing).
#[derive(Debug, Clone)]
pub struct Filter {
    source: String,
    root: Node,
    fields: FieldSet,
}

impl Filter {
    /// Parses and compiles `src`. An empty filter (only blanks or `#`
    /// comments) matches every flow, as in nfdump.
    pub fn parse(src: &str) -> Result<Filter, FilterError> {
        if src.len() > MAX_FILTER_LEN {
            // Point at the first character past the limit.
            let col = src
                .char_indices()
                .take_while(|(i, _)| *i < MAX_FILTER_LEN)
                .count()
                + 1;
            return Err(FilterError::new(
                col,
                format!(
                    "filter is {} bytes, longer than the limit of {MAX_FILTER_LEN}: shorten it",
                    src.len()
                ),
            ));
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        let root = if p.peek().kind == Kind::Eof {
            Node::Const(true)
        } else {
            let n = p.parse_or(false)?;
            let t = p.peek();
            if t.kind != Kind::Eof {
                return Err(FilterError::new(
                    t.col,
                    format!("expected 'and', 'or' or end of filter, found {}", found(&t)),
                ));
            }
            n
        };
        let fields = root.fields();
        Ok(Filter {
            source: src.to_owned(),
            root,
            fields,
        })
    }

    /// True when the record passes the filter. Allocation-free.
    #[inline]
    pub fn matches(&self, r: &FlowRecord) -> bool {
        self.root.eval(r)
    }

    /// The expression as given to [`Filter::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the filter keeps every flow (empty, `any`, or something
    /// that folds to it such as `any or port 80`), so the planner can ignore
    /// it.
    pub fn is_match_all(&self) -> bool {
        matches!(self.root, Node::Const(true))
    }

    /// True when the filter reads the source or destination address (any
    /// address primitive, or `inet`/`inet6`). Rollups and flows whose
    /// addresses were dropped at the edge cannot answer such a filter.
    /// The exporter address (`router ip`) is not a flow address and does not
    /// count here; see [`Filter::referenced_fields`].
    pub fn needs_addresses(&self) -> bool {
        self.fields
            .intersects(FieldSet::SRC_ADDR.union(FieldSet::DST_ADDR))
    }

    /// Every record field the filter reads.
    pub fn referenced_fields(&self) -> FieldSet {
        self.fields
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---- compiled form -------------------------------------------------------

/// Negations are pushed down to the leaves while parsing, so the tree has
/// no `not` node: `Test::negate` carries it.
#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    All(Box<[Node]>),
    Any(Box<[Node]>),
    Test(Test),
}

#[derive(Debug, Clone)]
struct Test {
    pred: Pred,
    negate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
    /// Either address/port (no qualifier, or `src or dst`).
    Either,
    /// `src and dst`.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfSide {
    In,
    Out,
    Either,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Op {
    #[inline]
    fn cmp<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Gt => a > b,
            Op::Lt => a < b,
            Op::Ge => a >= b,
            Op::Le => a <= b,
        }
    }
}

#[derive(Debug, Clone)]
enum Pred {
    /// `any`; folded into `Node::Const` before it reaches the tree.
    Any,
    /// `inet` (false) / `inet6` (true): both addresses of that family.
    Family {
        v6: bool,
    },
    Proto(u8),
    Addr {
        side: Side,
        m: AddrMatch,
    },
    /// `router ip`.
    Exporter(AddrMatch),
    Port {
        side: Side,
        op: Op,
        value: u16,
    },
    PortIn {
        side: Side,
        set: Box<[u16]>,
    },
    Bytes(Op, u64),
    Packets(Op, u64),
    /// `end_ms - start_ms` compared in milliseconds.
    Duration(Op, u64),
    /// `flags <letters>`: TCP and all of these bits set.
    FlagsAll(u8),
    /// `not flags <letters>` as nfdump evaluates it: not TCP, or none of
    /// these bits set.
    FlagsNone(u8),
    /// `flags <number>`: TCP and exactly this flags byte.
    FlagsEq(u8),
    If {
        side: IfSide,
        value: u32,
    },
    Dir(Direction),
}

#[derive(Debug, Clone)]
enum AddrMatch {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
    List(Box<AddrList>),
}

/// An `ip in [ ... ]` list: exact addresses sorted for binary search,
/// networks scanned (lists are mostly hosts).
#[derive(Debug, Clone, Default)]
struct AddrList {
    v4_hosts: Box<[u32]>,
    v6_hosts: Box<[u128]>,
    v4_nets: Box<[(u32, u32)]>,
    v6_nets: Box<[(u128, u128)]>,
}

impl AddrMatch {
    #[inline]
    fn matches(&self, ip: &IpAddr) -> bool {
        // A filter address of one family never matches an address of the
        // other (nfdump: `net 0.0.0.0/0` matches no IPv6 flow).
        match (self, ip) {
            (AddrMatch::V4 { net, mask }, IpAddr::V4(a)) => u32::from(*a) & mask == *net,
            (AddrMatch::V6 { net, mask }, IpAddr::V6(a)) => u128::from(*a) & mask == *net,
            (AddrMatch::List(l), IpAddr::V4(a)) => {
                let a = u32::from(*a);
                l.v4_hosts.binary_search(&a).is_ok() || l.v4_nets.iter().any(|(n, m)| a & m == *n)
            }
            (AddrMatch::List(l), IpAddr::V6(a)) => {
                let a = u128::from(*a);
                l.v6_hosts.binary_search(&a).is_ok() || l.v6_nets.iter().any(|(n, m)| a & m == *n)
            }
            _ => false,
        }
    }

    fn cost(&self) -> u32 {
        match self {
            AddrMatch::List(_) => 8,
            _ => 2,
        }
    }
}

#[inline]
fn on_side<T: Copy>(side: Side, src: T, dst: T, f: impl Fn(T) -> bool) -> bool {
    match side {
        Side::Src => f(src),
        Side::Dst => f(dst),
        Side::Either => f(src) || f(dst),
        Side::Both => f(src) && f(dst),
    }
}

const TCP: u8 = 6;

impl Pred {
    #[inline]
    fn eval(&self, r: &FlowRecord) -> bool {
        match self {
            Pred::Any => true,
            Pred::Family { v6 } => r.src_addr.is_ipv6() == *v6 && r.dst_addr.is_ipv6() == *v6,
            Pred::Proto(p) => r.protocol == *p,
            Pred::Addr { side, m } => on_side(*side, &r.src_addr, &r.dst_addr, |a| m.matches(a)),
            Pred::Exporter(m) => m.matches(&r.exporter),
            Pred::Port { side, op, value } => {
                on_side(*side, r.src_port, r.dst_port, |p| op.cmp(p, *value))
            }
            Pred::PortIn { side, set } => on_side(*side, r.src_port, r.dst_port, |p| {
                set.binary_search(&p).is_ok()
            }),
            Pred::Bytes(op, v) => op.cmp(r.bytes, *v),
            Pred::Packets(op, v) => op.cmp(r.packets, *v),
            Pred::Duration(op, v) => op.cmp(r.end_ms.saturating_sub(r.start_ms), *v),
            Pred::FlagsAll(m) => r.protocol == TCP && r.tcp_flags & m == *m,
            Pred::FlagsNone(m) => r.protocol != TCP || r.tcp_flags & m == 0,
            Pred::FlagsEq(v) => r.protocol == TCP && r.tcp_flags == *v,
            Pred::If { side, value } => match side {
                IfSide::In => r.in_if == *value,
                IfSide::Out => r.out_if == *value,
                IfSide::Either => r.in_if == *value || r.out_if == *value,
            },
            Pred::Dir(d) => r.direction == *d,
        }
    }

    fn fields(&self) -> FieldSet {
        let addrs = |s: Side| match s {
            Side::Src => FieldSet::SRC_ADDR,
            Side::Dst => FieldSet::DST_ADDR,
            Side::Either | Side::Both => FieldSet::SRC_ADDR | FieldSet::DST_ADDR,
        };
        let ports = |s: Side| match s {
            Side::Src => FieldSet::SRC_PORT,
            Side::Dst => FieldSet::DST_PORT,
            Side::Either | Side::Both => FieldSet::SRC_PORT | FieldSet::DST_PORT,
        };
        match self {
            Pred::Any => FieldSet::EMPTY,
            Pred::Family { .. } => FieldSet::SRC_ADDR | FieldSet::DST_ADDR,
            Pred::Proto(_) => FieldSet::PROTOCOL,
            Pred::Addr { side, .. } => addrs(*side),
            Pred::Exporter(_) => FieldSet::EXPORTER,
            Pred::Port { side, .. } | Pred::PortIn { side, .. } => ports(*side),
            Pred::Bytes(..) => FieldSet::BYTES,
            Pred::Packets(..) => FieldSet::PACKETS,
            Pred::Duration(..) => FieldSet::TIMES,
            Pred::FlagsAll(_) | Pred::FlagsNone(_) | Pred::FlagsEq(_) => {
                FieldSet::TCP_FLAGS | FieldSet::PROTOCOL
            }
            Pred::If { side, .. } => match side {
                IfSide::In => FieldSet::IN_IF,
                IfSide::Out => FieldSet::OUT_IF,
                IfSide::Either => FieldSet::IN_IF | FieldSet::OUT_IF,
            },
            Pred::Dir(_) => FieldSet::DIRECTION,
        }
    }

    /// Rough relative cost, to test cheap leaves first in `and`/`or`.
    fn cost(&self) -> u32 {
        match self {
            Pred::Addr { m, .. } | Pred::Exporter(m) => m.cost(),
            Pred::PortIn { .. } => 4,
            _ => 1,
        }
    }
}

impl Node {
    #[inline]
    fn eval(&self, r: &FlowRecord) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::All(v) => v.iter().all(|n| n.eval(r)),
            Node::Any(v) => v.iter().any(|n| n.eval(r)),
            Node::Test(t) => t.pred.eval(r) != t.negate,
        }
    }

    /// A leaf under `negate` negations (parity).
    fn leaf(pred: Pred, negate: bool) -> Node {
        match (pred, negate) {
            (Pred::Any, n) => Node::Const(!n),
            // nfdump inverts a flags test into "none of these set" (or not
            // TCP), not into "not all of these set".
            (Pred::FlagsAll(m), true) => Node::Test(Test {
                pred: Pred::FlagsNone(m),
                negate: false,
            }),
            (pred, negate) => Node::Test(Test { pred, negate }),
        }
    }

    /// Conjunction (`all = true`) or disjunction of `items`, flattened and
    /// constant-folded, cheapest tests first.
    fn combine(all: bool, items: Vec<Node>) -> Node {
        let mut out: Vec<Node> = Vec::with_capacity(items.len());
        for n in items {
            match n {
                // The neutral element disappears.
                Node::Const(b) if b == all => {}
                // The absorbing element decides.
                Node::Const(b) => return Node::Const(b),
                Node::All(v) if all => out.extend(v.into_vec()),
                Node::Any(v) if !all => out.extend(v.into_vec()),
                n => out.push(n),
            }
        }
        if out.len() <= 1 {
            return out.pop().unwrap_or(Node::Const(all));
        }
        // Stable, so equal costs keep the user's order.
        out.sort_by_key(Node::cost);
        let v = out.into_boxed_slice();
        if all {
            Node::All(v)
        } else {
            Node::Any(v)
        }
    }

    fn cost(&self) -> u32 {
        match self {
            Node::Const(_) => 0,
            Node::Test(t) => t.pred.cost(),
            Node::All(v) | Node::Any(v) => v.iter().map(Node::cost).sum::<u32>().saturating_add(1),
        }
    }

    fn fields(&self) -> FieldSet {
        match self {
            Node::Const(_) => FieldSet::EMPTY,
            Node::Test(t) => t.pred.fields(),
            Node::All(v) | Node::Any(v) => v
                .iter()
                .fold(FieldSet::EMPTY, |acc, n| acc.union(n.fields())),
        }
    }
}

// ---- lexer ---------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    /// `!=`, which nfdump does not have; lexed to explain that.
    BangEq,
    Cmp(Op),
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    kind: Kind,
    text: &'a str,
    /// 1-based column in characters.
    col: usize,
}

const EOF_TEXT: &str = "";

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '!' | '&' | '|' | '<' | '>' | '=' | '#'
        )
}

fn lex(src: &str) -> Result<Vec<Tok<'_>>, FilterError> {
    let mut toks = Vec::new();
    let mut it = src.char_indices().peekable();
    let mut col = 0usize;
    let text = |from: usize, len: usize| src.get(from..from + len).unwrap_or(EOF_TEXT);
    while let Some((i, c)) = it.next() {
        col += 1;
        let start = col;
        let mut push = |kind: Kind, len: usize| {
            toks.push(Tok {
                kind,
                text: text(i, len),
                col: start,
            })
        };
        match c {
            c if c.is_whitespace() => {}
            // nfdump: anything after '#' is a comment to the end of the line.
            '#' => {
                while let Some(&(_, c2)) = it.peek() {
                    if c2 == '\n' {
                        break;
                    }
                    it.next();
                    col += 1;
                }
            }
            '(' => push(Kind::LParen, 1),
            ')' => push(Kind::RParen, 1),
            '[' => push(Kind::LBracket, 1),
            ']' => push(Kind::RBracket, 1),
            ',' => push(Kind::Comma, 1),
            '&' | '|' => {
                if it.peek().map(|&(_, c2)| c2) == Some(c) {
                    it.next();
                    col += 1;
                    push(if c == '&' { Kind::AndAnd } else { Kind::OrOr }, 2);
                } else {
                    let (word, sym) = if c == '&' {
                        ("and", "&&")
                    } else {
                        ("or", "||")
                    };
                    return Err(FilterError::new(
                        start,
                        format!("unexpected '{c}': write '{word}' or '{sym}'"),
                    ));
                }
            }
            '!' | '=' | '<' | '>' => {
                let eq_next = it.peek().map(|&(_, c2)| c2) == Some('=');
                if eq_next {
                    it.next();
                    col += 1;
                }
                let kind = match (c, eq_next) {
                    ('!', false) => Kind::Bang,
                    ('!', true) => Kind::BangEq,
                    ('=', _) => Kind::Cmp(Op::Eq),
                    ('<', false) => Kind::Cmp(Op::Lt),
                    ('<', true) => Kind::Cmp(Op::Le),
                    ('>', false) => Kind::Cmp(Op::Gt),
                    _ => Kind::Cmp(Op::Ge),
                };
                push(kind, if eq_next { 2 } else { 1 });
            }
            _ => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, c2)) = it.peek() {
                    if is_separator(c2) {
                        break;
                    }
                    end = j + c2.len_utf8();
                    it.next();
                    col += 1;
                }
                push(Kind::Word, end - i);
            }
        }
    }
    toks.push(Tok {
        kind: Kind::Eof,
        text: EOF_TEXT,
        col: col + 1,
    });
    Ok(toks)
}

/// How a token is named in messages: quoted and cut to a readable length.
fn found(t: &Tok<'_>) -> String {
    if t.kind == Kind::Eof {
        return "end of filter".to_owned();
    }
    const MAX: usize = 40;
    match t.text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("'{}...'", t.text.get(..cut).unwrap_or(EOF_TEXT)),
        None => format!("'{}'", t.text),
    }
}

// ---- parser --------------------------------------------------------------

/// nfdump primitives this subset does not implement, named in the error so
/// a user knows it is not a typo.
const UNSUPPORTED: &[&str] = &[
    "@include",
    "as",
    "asa",
    "bgpnext",
    "bpp",
    "bps",
    "client",
    "count",
    "egress",
    "engine-id",
    "engine-type",
    "flow",
    "flows",
    "geo",
    "icmp-code",
    "icmp-type",
    "ident",
    "ingress",
    "latency",
    "mac",
    "mask",
    "mpls",
    "nat",
    "next",
    "nip",
    "nport",
    "observation",
    "payload",
    "pps",
    "prev",
    "server",
    "sysid",
    "tos",
    "tun",
    "tunip",
    "vlan",
    "vrf",
    "xip",
    "xnet",
    "xport",
];

/// Protocol names nfdump 1.7.1 accepts after `proto`, with the numbers it
/// maps them to (checked with `nfdump -X 'proto <name>'`).
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ipip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmp6", 58),
    ("eigrp", 88),
    ("ospf", 89),
    ("encap", 98),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
];

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
    depth: usize,
}

type PResult<T> = Result<T, FilterError>;

fn is_kw(t: &Tok<'_>, kw: &str) -> bool {
    t.kind == Kind::Word && t.text.eq_ignore_ascii_case(kw)
}

impl<'a> Parser<'a> {
    fn at(&self, ahead: usize) -> Tok<'a> {
        self.toks
            .get(self.pos + ahead)
            .or_else(|| self.toks.last())
            .copied()
            .unwrap_or(Tok {
                kind: Kind::Eof,
                text: EOF_TEXT,
                col: 1,
            })
    }

    fn peek(&self) -> Tok<'a> {
        self.at(0)
    }

    fn bump(&mut self) -> Tok<'a> {
        let t = self.peek();
        if t.kind != Kind::Eof {
            self.pos += 1;
        }
        t
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(&self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `or` list; `negate` is the parity of enclosing `not`s, pushed down
    /// (De Morgan) so that the compiled tree needs no `not` node.
    fn parse_or(&mut self, negate: bool) -> PResult<Node> {
        let mut items = vec![self.parse_and(negate)?];
        loop {
            let t = self.peek();
            if t.kind == Kind::OrOr || is_kw(&t, "or") {
                self.pos += 1;
                items.push(self.parse_and(negate)?);
            } else {
                break;
            }
        }
        Ok(Node::combine(negate, items))
    }

    fn parse_and(&mut self, negate: bool) -> PResult<Node> {
        let mut items = vec![self.parse_unary(negate)?];
        loop {
            let t = self.peek();
            if t.kind == Kind::AndAnd || is_kw(&t, "and") {
                self.pos += 1;
                items.push(self.parse_unary(negate)?);
            } else {
                break;
            }
        }
        Ok(Node::combine(!negate, items))
    }

    /// `not`/`!` bind tighter than `and`; a run of them is folded into a
    /// parity here (no recursion, however many there are).
    fn parse_unary(&mut self, mut negate: bool) -> PResult<Node> {
        loop {
            let t = self.peek();
            if t.kind == Kind::Bang || is_kw(&t, "not") {
                self.pos += 1;
                negate = !negate;
            } else {
                break;
            }
        }
        self.parse_primary(negate)
    }

    fn parse_primary(&mut self, negate: bool) -> PResult<Node> {
        let t = self.peek();
        match t.kind {
            Kind::LParen => {
                self.pos += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(FilterError::new(
                        t.col,
                        format!("parentheses nest deeper than {MAX_DEPTH} levels: simplify the filter"),
                    ));
                }
                let n = self.parse_or(negate)?;
                let close = self.peek();
                if close.kind != Kind::RParen {
                    return Err(FilterError::new(
                        close.col,
                        format!(
                            "expected 'and', 'or' or ')' to close the '(' at column {}, found {}",
                            t.col,
                            found(&close)
                        ),
                    ));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(n)
            }
            Kind::Word => {
                let pred = self.primitive()?;
                Ok(Node::leaf(pred, negate))
            }
            _ => Err(FilterError::new(
                t.col,
                format!(
                    "expected a filter primitive such as 'host', 'net', 'port' or 'proto', found {}",
                    found(&t)
                ),
            )),
        }
    }

    fn primitive(&mut self) -> PResult<Pred> {
        let t = self.bump();
        let kw = t.text.to_ascii_lowercase();
        match kw.as_str() {
            "any" => Ok(Pred::Any),
            "inet" | "ipv4" => Ok(Pred::Family { v6: false }),
            "inet6" | "ipv6" => Ok(Pred::Family { v6: true }),
            "proto" => self.proto(),
            "ip" | "host" => self.addr(Side::Either, &kw),
            "net" => self.net(Side::Either),
            "port" => self.port(Side::Either),
            "src" | "dst" => self.directed(&kw),
            "if" => Ok(Pred::If {
                side: IfSide::Either,
                value: self.if_number("if")?,
            }),
            "in" | "out" => self.in_out(&kw),
            "router" => {
                let ip = self.bump();
                if !is_kw(&ip, "ip") {
                    return Err(FilterError::new(
                        ip.col,
                        format!("expected 'ip' after 'router', found {}", found(&ip)),
                    ));
                }
                let a = self.bump();
                Ok(Pred::Exporter(host_match(&a, "router ip")?))
            }
            "bytes" => {
                let (op, v) = self.scaled_comparison("bytes")?;
                Ok(Pred::Bytes(op, v))
            }
            "packets" => {
                let (op, v) = self.scaled_comparison("packets")?;
                Ok(Pred::Packets(op, v))
            }
            "duration" => {
                let op = self.comparator()?;
                let n = self.bump();
                let v = number(&n).map_err(|e| {
                    e.or_expected(&n, "a duration in milliseconds after 'duration'")
                })?;
                Ok(Pred::Duration(op, v))
            }
            "flags" => self.flags(),
            "flowdir" => {
                let d = self.bump();
                let lower = d.text.to_ascii_lowercase();
                match (d.kind, lower.as_str()) {
                    (Kind::Word, "ingress" | "0") => Ok(Pred::Dir(Direction::Ingress)),
                    (Kind::Word, "egress" | "1") => Ok(Pred::Dir(Direction::Egress)),
                    _ => Err(FilterError::new(
                        d.col,
                        format!(
                            "expected 'ingress', 'egress', 0 or 1 after 'flowdir', found {}",
                            found(&d)
                        ),
                    )),
                }
            }
            _ if UNSUPPORTED.contains(&kw.as_str()) => Err(FilterError::new(
                t.col,
                format!(
                    "'{kw}' is an nfdump filter primitive that rampart does not support (see docs/filter.md)"
                ),
            )),
            _ => Err(FilterError::new(
                t.col,
                format!(
                    "expected a filter primitive such as 'host', 'net', 'port' or 'proto', found {}",
                    found(&t)
                ),
            )),
        }
    }

    /// After `src`/`dst`: optionally `and dst`/`or dst` (nfdump's
    /// `src and dst ip ...`), then `ip`, `host`, `net` or `port`.
    fn directed(&mut self, first: &str) -> PResult<Pred> {
        let other = if first == "src" { "dst" } else { "src" };
        let mut side = if first == "src" { Side::Src } else { Side::Dst };
        let conj = self.peek();
        if (is_kw(&conj, "and") || is_kw(&conj, "or")) && is_kw(&self.at(1), other) {
            side = if is_kw(&conj, "and") {
                Side::Both
            } else {
                Side::Either
            };
            self.pos += 2;
        }
        let t = self.bump();
        let kw = t.text.to_ascii_lowercase();
        match (t.kind, kw.as_str()) {
            (Kind::Word, "ip" | "host") => self.addr(side, &kw),
            (Kind::Word, "net") => self.net(side),
            (Kind::Word, "port") => self.port(side),
            _ => Err(FilterError::new(
                t.col,
                format!(
                    "expected 'ip', 'host', 'net' or 'port' after '{first}', found {}",
                    found(&t)
                ),
            )),
        }
    }

    fn in_out(&mut self, first: &str) -> PResult<Pred> {
        let t = self.bump();
        let kw = t.text.to_ascii_lowercase();
        let side = if first == "in" {
            IfSide::In
        } else {
            IfSide::Out
        };
        match (t.kind, kw.as_str(), side) {
            (Kind::Word, "if", _) => Ok(Pred::If {
                side,
                value: self.if_number("if")?,
            }),
            // For a unidirectional flow nfdump defines `in bytes` as `bytes`.
            (Kind::Word, "bytes", IfSide::In) => {
                let (op, v) = self.scaled_comparison("bytes")?;
                Ok(Pred::Bytes(op, v))
            }
            (Kind::Word, "packets", IfSide::In) => {
                let (op, v) = self.scaled_comparison("packets")?;
                Ok(Pred::Packets(op, v))
            }
            (Kind::Word, "bytes" | "packets", _) => Err(FilterError::new(
                t.col,
                format!(
                    "'out {kw}' counts the reverse side of a bidirectional flow, which rampart flow records do not have: use '{kw}'"
                ),
            )),
            (Kind::Word, "mac", _) => Err(FilterError::new(
                t.col,
                "'mac' is an nfdump filter primitive that rampart does not support (see docs/filter.md)",
            )),
            _ => Err(FilterError::new(
                t.col,
                format!(
                    "expected 'if', 'bytes' or 'packets' after '{first}', found {}",
                    found(&t)
                ),
            )),
        }
    }

    fn proto(&mut self) -> PResult<Pred> {
        let t = self.bump();
        if t.kind == Kind::Word {
            if let Some((_, n)) = PROTOCOLS
                .iter()
                .find(|(name, _)| t.text.eq_ignore_ascii_case(name))
            {
                return Ok(Pred::Proto(*n));
            }
        }
        let expected =
            "a protocol name (tcp, udp, icmp, icmp6, gre, esp, ...) or number after 'proto'";
        let n = number(&t).map_err(|e| e.or_expected(&t, expected))?;
        let p = u8::try_from(n).map_err(|_| {
            FilterError::new(
                t.col,
                format!("protocol number {n} is out of range: use 0 to 255"),
            )
        })?;
        Ok(Pred::Proto(p))
    }

    fn addr(&mut self, side: Side, kw: &str) -> PResult<Pred> {
        if self.eat_kw("in") {
            let items = self.list("an ip address or network", |t| list_addr(t))?;
            return Ok(Pred::Addr {
                side,
                m: AddrMatch::List(Box::new(build_addr_list(items))),
            });
        }
        let t = self.bump();
        Ok(Pred::Addr {
            side,
            m: host_match(&t, kw)?,
        })
    }

    fn net(&mut self, side: Side) -> PResult<Pred> {
        let t = self.bump();
        if t.kind != Kind::Word {
            return Err(FilterError::new(
                t.col,
                format!(
                    "expected a network such as 10.0.0.0/8 after 'net', found {}",
                    found(&t)
                ),
            ));
        }
        if t.text.contains('/') {
            return Ok(Pred::Addr { side, m: cidr(&t)? });
        }
        // `net a.b.c.d m.m.m.m` (IPv4 only).
        match parse_ip(t.text) {
            Some(IpAddr::V4(net)) => {
                let m = self.peek();
                let mask = match (m.kind, parse_v4(m.text)) {
                    (Kind::Word, Some(mask)) => u32::from(mask),
                    _ => {
                        return Err(FilterError::new(
                            m.col,
                            format!(
                                "expected a netmask such as 255.0.0.0 after the network '{net}', found {} (or write {net}/8)",
                                found(&m)
                            ),
                        ))
                    }
                };
                self.pos += 1;
                Ok(Pred::Addr {
                    side,
                    m: AddrMatch::V4 {
                        net: u32::from(net) & mask,
                        mask,
                    },
                })
            }
            Some(IpAddr::V6(net)) => Err(FilterError::new(
                t.col,
                format!("expected a prefix length after the ipv6 network '{net}', such as {net}/48 (netmasks are for ipv4 only)"),
            )),
            None => Err(FilterError::new(
                t.col,
                format!(
                    "expected a network such as 10.0.0.0/8 after 'net', found {}",
                    found(&t)
                ),
            )),
        }
    }

    fn port(&mut self, side: Side) -> PResult<Pred> {
        if self.eat_kw("in") {
            let mut set = self.list("a port number", |t| port_number(t, "in the list"))?;
            set.sort_unstable();
            set.dedup();
            return Ok(Pred::PortIn {
                side,
                set: set.into_boxed_slice(),
            });
        }
        let op = self.comparator()?;
        let t = self.bump();
        let value = port_number(&t, "after 'port'")?;
        Ok(Pred::Port { side, op, value })
    }

    fn flags(&mut self) -> PResult<Pred> {
        let t = self.bump();
        let expected = "tcp flags (letters from a s f r p u x) or a number after 'flags'";
        if t.kind != Kind::Word {
            return Err(FilterError::new(
                t.col,
                format!("expected {expected}, found {}", found(&t)),
            ));
        }
        if t.text.starts_with(|c: char| c.is_ascii_digit()) {
            let n = number(&t).map_err(|e| e.or_expected(&t, expected))?;
            let v = u8::try_from(n).map_err(|_| {
                FilterError::new(
                    t.col,
                    format!("tcp flags value {n} is out of range: use 0 to 255"),
                )
            })?;
            return Ok(Pred::FlagsEq(v));
        }
        let mut mask = 0u8;
        for (i, c) in t.text.chars().enumerate() {
            mask |= match c.to_ascii_uppercase() {
                'F' => 0x01,
                'S' => 0x02,
                'R' => 0x04,
                'P' => 0x08,
                'A' => 0x10,
                'U' => 0x20,
                'X' => 0x3f,
                _ => {
                    return Err(FilterError::new(
                        t.col + i,
                        format!(
                            "unknown tcp flag '{c}' in {}: use the letters a (ack), s (syn), f (fin), r (reset), p (push), u (urgent) or x (all)",
                            found(&t)
                        ),
                    ))
                }
            };
        }
        Ok(Pred::FlagsAll(mask))
    }

    fn if_number(&mut self, kw: &str) -> PResult<u32> {
        let t = self.bump();
        let n = number(&t)
            .map_err(|e| e.or_expected(&t, &format!("an interface number after '{kw}'")))?;
        u32::try_from(n).map_err(|_| {
            FilterError::new(
                t.col,
                format!("interface number {n} is out of range: use 0 to 4294967295"),
            )
        })
    }

    /// An optional comparator; nfdump assumes `==` without one.
    fn comparator(&mut self) -> PResult<Op> {
        let t = self.peek();
        let op = match t.kind {
            Kind::Cmp(op) => op,
            Kind::BangEq => {
                return Err(FilterError::new(
                    t.col,
                    "'!=' is not an nfdump comparator: negate the primitive instead, as in 'not port 80'",
                ))
            }
            Kind::Word => match t.text.to_ascii_lowercase().as_str() {
                "eq" => Op::Eq,
                "gt" => Op::Gt,
                "lt" => Op::Lt,
                "ge" => Op::Ge,
                "le" => Op::Le,
                "ne" => {
                    return Err(FilterError::new(
                        t.col,
                        "'ne' is not an nfdump comparator: negate the primitive instead, as in 'not port 80'",
                    ))
                }
                _ => return Ok(Op::Eq),
            },
            _ => return Ok(Op::Eq),
        };
        self.pos += 1;
        Ok(op)
    }

    /// `[comp] <num>[k|m|g|t]` for bytes and packets.
    fn scaled_comparison(&mut self, kw: &str) -> PResult<(Op, u64)> {
        let op = self.comparator()?;
        let t = self.bump();
        let v = scaled_number(&t).map_err(|e| {
            e.or_expected(&t, &format!("a number such as 1500 or 10k after '{kw}'"))
        })?;
        Ok((op, v))
    }

    /// `[ item item, item ... ]`, separated by blanks or single commas.
    fn list<T>(
        &mut self,
        what: &str,
        mut item: impl FnMut(&Tok<'a>) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let open = self.bump();
        if open.kind != Kind::LBracket {
            return Err(FilterError::new(
                open.col,
                format!("expected '[' after 'in', found {}", found(&open)),
            ));
        }
        let mut out = Vec::new();
        let mut after_comma = false;
        loop {
            let t = self.bump();
            match t.kind {
                Kind::RBracket if !out.is_empty() && !after_comma => return Ok(out),
                Kind::Word => {
                    if out.len() >= MAX_LIST_LEN {
                        return Err(FilterError::new(
                            t.col,
                            format!("list has more than {MAX_LIST_LEN} entries: split it"),
                        ));
                    }
                    out.push(item(&t)?);
                    after_comma = false;
                    if self.peek().kind == Kind::Comma {
                        self.pos += 1;
                        after_comma = true;
                    }
                }
                Kind::Eof => {
                    return Err(FilterError::new(
                        t.col,
                        format!(
                            "expected {what} or ']' to close the list opened at column {}, found end of filter",
                            open.col
                        ),
                    ))
                }
                _ => {
                    return Err(FilterError::new(
                        t.col,
                        format!("expected {what} in the list, found {}", found(&t)),
                    ))
                }
            }
        }
    }
}

// ---- values --------------------------------------------------------------

/// Why a number did not parse; turned into a message once the caller says
/// what it expected.
enum NumError {
    NotANumber,
    TooLarge,
}

impl NumError {
    fn or_expected(self, t: &Tok<'_>, expected: &str) -> FilterError {
        match self {
            NumError::NotANumber => {
                FilterError::new(t.col, format!("expected {expected}, found {}", found(t)))
            }
            NumError::TooLarge => FilterError::new(
                t.col,
                format!("number {} is too large: at most {}", found(t), u64::MAX),
            ),
        }
    }
}

/// Decimal (leading zeros allowed, still decimal) or `0x` hexadecimal, as
/// nfdump reads numbers.
fn number(t: &Tok<'_>) -> Result<u64, NumError> {
    if t.kind != Kind::Word {
        return Err(NumError::NotANumber);
    }
    parse_u64(t.text)
}

fn parse_u64(s: &str) -> Result<u64, NumError> {
    let (digits, radix) = match s.get(..2) {
        Some("0x" | "0X") => (s.get(2..).unwrap_or(EOF_TEXT), 16),
        _ => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumError::NotANumber);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumError::TooLarge)
}

/// A number with an optional decimal scaling suffix: nfdump multiplies by
/// 1000 per step (k = 10^3, m = 10^6, g = 10^9; nfdump 1.7.1 also takes
/// t = 10^12), not by 1024.
fn scaled_number(t: &Tok<'_>) -> Result<u64, NumError> {
    if t.kind != Kind::Word {
        return Err(NumError::NotANumber);
    }
    let s = t.text;
    let scale = match s.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => 1_000u64,
        Some('m') => 1_000_000,
        Some('g') => 1_000_000_000,
        Some('t') => 1_000_000_000_000,
        _ => 1,
    };
    // A hex number's last digit is never one of k, m, g or t.
    let digits = if scale == 1 {
        s
    } else {
        s.get(..s.len() - 1).unwrap_or(EOF_TEXT)
    };
    let n = parse_u64(digits)?;
    n.checked_mul(scale).ok_or(NumError::TooLarge)
}

fn port_number(t: &Tok<'_>, context: &str) -> PResult<u16> {
    let n = number(t).map_err(|e| e.or_expected(t, &format!("a port number {context}")))?;
    u16::try_from(n)
        .map_err(|_| FilterError::new(t.col, format!("port {n} is out of range: use 0 to 65535")))
}

fn host_match(t: &Tok<'_>, kw: &str) -> PResult<AddrMatch> {
    let parsed = if t.kind == Kind::Word {
        parse_ip(t.text)
    } else {
        None
    };
    match parsed {
        Some(IpAddr::V4(a)) => Ok(AddrMatch::V4 {
            net: u32::from(a),
            mask: u32::MAX,
        }),
        Some(IpAddr::V6(a)) => Ok(AddrMatch::V6 {
            net: u128::from(a),
            mask: u128::MAX,
        }),
        None => {
            let hint = if t.kind != Kind::Word {
                ""
            } else if t.text.contains('/') && (kw == "host" || kw == "ip") {
                " (for a network write 'net' instead)"
            } else if t.text.chars().any(|c| c.is_ascii_alphabetic()) && !t.text.contains(':') {
                " (hostnames are not resolved: give the address)"
            } else {
                ""
            };
            Err(FilterError::new(
                t.col,
                format!(
                    "expected an ip address after '{kw}', found {}{hint}",
                    found(t)
                ),
            ))
        }
    }
}

/// `a.b.c.d/bits`, abbreviated `172.16/16` (missing octets are zero, as
/// nfdump documents), or `x::/bits`. Host bits are cleared.
fn cidr(t: &Tok<'_>) -> PResult<AddrMatch> {
    let (addr, bits) = t.text.split_once('/').unwrap_or((t.text, ""));
    let bits_col = t.col + addr.chars().count() + 1;
    let bad_bits = || {
        FilterError::new(
            bits_col,
            format!("expected a prefix length after '/', found '{bits}'"),
        )
    };
    if bits.is_empty() || !bits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad_bits());
    }
    let bits: u32 = bits.parse().map_err(|_| bad_bits())?;
    if addr.contains(':') {
        let a: Ipv6Addr = addr.parse().map_err(|_| {
            FilterError::new(
                t.col,
                format!("expected an ipv6 network before '/', found '{addr}'"),
            )
        })?;
        if bits > 128 {
            return Err(FilterError::new(
                bits_col,
                format!("prefix length {bits} is too long for an ipv6 network: at most 128"),
            ));
        }
        let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        return Ok(AddrMatch::V6 {
            net: u128::from(a) & mask,
            mask,
        });
    }
    let a = abbreviated_v4(addr).ok_or_else(|| {
        FilterError::new(
            t.col,
            format!("expected an ipv4 network such as 10.0.0.0/8 before '/', found '{addr}'"),
        )
    })?;
    if bits > 32 {
        return Err(FilterError::new(
            bits_col,
            format!("prefix length {bits} is too long for an ipv4 network: at most 32"),
        ));
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Ok(AddrMatch::V4 {
        net: a & mask,
        mask,
    })
}

/// An IPv6 address, or an IPv4 address in dotted decimal. nfdump reads
/// `010.0.0.1` as 10.0.0.1 (decimal, not octal), which Rust's parser
/// refuses, so IPv4 goes through [`abbreviated_v4`].
fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        parse_v4(s).map(IpAddr::V4)
    }
}

/// Exactly four dotted decimal octets.
fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    if s.split('.').count() != 4 {
        return None;
    }
    abbreviated_v4(s).map(Ipv4Addr::from)
}

/// One to four dotted decimal octets, the missing ones zero.
fn abbreviated_v4(s: &str) -> Option<u32> {
    let mut v = 0u32;
    let mut n = 0;
    for part in s.split('.') {
        if part.is_empty() || part.len() > 3 || !part.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let octet: u8 = part.parse().ok()?;
        v = v << 8 | u32::from(octet);
        n += 1;
        if n > 4 {
            return None;
        }
    }
    Some(v << (8 * (4 - n)))
}

fn list_addr(t: &Tok<'_>) -> PResult<AddrMatch> {
    if t.text.contains('/') {
        cidr(t)
    } else {
        host_match(t, "in").map_err(|e| {
            FilterError::new(
                e.position,
                format!(
                    "expected an ip address or network in the list, found {}",
                    found(t)
                ),
            )
        })
    }
}

fn build_addr_list(items: Vec<AddrMatch>) -> AddrList {
    let mut v4_hosts = Vec::new();
    let mut v6_hosts = Vec::new();
    let mut v4_nets = Vec::new();
    let mut v6_nets = Vec::new();
    for m in items {
        match m {
            AddrMatch::V4 { net, mask } if mask == u32::MAX => v4_hosts.push(net),
            AddrMatch::V4 { net, mask } => v4_nets.push((net, mask)),
            AddrMatch::V6 { net, mask } if mask == u128::MAX => v6_hosts.push(net),
            AddrMatch::V6 { net, mask } => v6_nets.push((net, mask)),
            // `list_addr` never returns a list.
            AddrMatch::List(_) => {}
        }
    }
    v4_hosts.sort_unstable();
    v4_hosts.dedup();
    v6_hosts.sort_unstable();
    v6_hosts.dedup();
    AddrList {
        v4_hosts: v4_hosts.into_boxed_slice(),
        v6_hosts: v6_hosts.into_boxed_slice(),
        v4_nets: v4_nets.into_boxed_slice(),
        v6_nets: v6_nets.into_boxed_slice(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviated_networks_pad_with_zero_octets() {
        assert_eq!(abbreviated_v4("172.16"), Some(0xac10_0000));
        assert_eq!(abbreviated_v4("10"), Some(0x0a00_0000));
        assert_eq!(abbreviated_v4("1.2.3.4"), Some(0x0102_0304));
        assert_eq!(abbreviated_v4("1.2.3.4.5"), None);
        assert_eq!(abbreviated_v4("1..3"), None);
        assert_eq!(abbreviated_v4("256"), None);
        assert_eq!(parse_v4("010.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_v4("10.0.1"), None);
        assert_eq!(parse_v4("1.2.3.4.5"), None);
    }

    #[test]
    fn numbers_are_decimal_or_hex_and_scale_by_1000() {
        let tok = |s| Tok {
            kind: Kind::Word,
            text: s,
            col: 1,
        };
        assert!(matches!(scaled_number(&tok("1k")), Ok(1_000)));
        assert!(matches!(scaled_number(&tok("2M")), Ok(2_000_000)));
        assert!(matches!(scaled_number(&tok("0x3e8")), Ok(1_000)));
        assert!(matches!(scaled_number(&tok("010")), Ok(10)));
        assert!(matches!(
            scaled_number(&tok("k")),
            Err(NumError::NotANumber)
        ));
        assert!(matches!(
            scaled_number(&tok("18446744073709552g")),
            Err(NumError::TooLarge)
        ));
    }

    #[test]
    fn constant_folding_leaves_match_all() {
        assert!(Filter::parse("any or port 80").unwrap().is_match_all());
        assert!(Filter::parse("not not any").unwrap().is_match_all());
        assert!(!Filter::parse("not any").unwrap().is_match_all());
        assert!(!Filter::parse("any and port 80").unwrap().is_match_all());
    }
}
