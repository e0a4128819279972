//! A minimal, test-only MaxMind DB writer, following the "MaxMind DB File
//! Format Specification" v2.0.
//!
//! Why hand-written: the Rust writer crates on crates.io (`maxminddb-writer`,
//! `mmdb-writer`, `libmaxminddb-rs`) are 0.1 releases by single maintainers
//! with little use and, for the oldest, no docs and a reader dev-dependency
//! many majors behind; MaxMind's own writers are Go and Perl. The subset a
//! test needs is small (a binary trie, a handful of data types, the
//! metadata map), and every file written here is also decoded and verified
//! by the `maxminddb` crate, an independent reader, in `tests/geo.rs`.
//!
//! Layout written: search tree (`node_count` nodes of two `record_size`-bit
//! records, breadth-first, root first), 16 zero bytes, data section,
//! `\xAB\xCD\xEFMaxMind.com`, metadata map. Repeated strings in the data
//! section (map keys above all) are written once and then referred to by
//! pointers, as MaxMind's files do, so readers' pointer handling is
//! exercised too.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;

/// A data-section value (the types this writer supports).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Double(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
    Bool(bool),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

// Type numbers, spec "Output Data Section" / "Data Field Format".
const T_POINTER: u8 = 1;
const T_UTF8: u8 = 2;
const T_DOUBLE: u8 = 3;
const T_UINT16: u8 = 5;
const T_UINT32: u8 = 6;
const T_MAP: u8 = 7;
const T_UINT64: u8 = 9;
const T_ARRAY: u8 = 11;
const T_BOOL: u8 = 14;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
const DATA_SECTION_SEPARATOR: usize = 16;

enum Node {
    Empty,
    /// Offset of the record in the data section.
    Data(usize),
    Inner(Box<[Node; 2]>),
}

pub struct Writer {
    database_type: String,
    ip_version: u16,
    record_size: u16,
    root: Node,
    data: Vec<u8>,
    /// Offsets of strings already in the data section, for pointers.
    strings: HashMap<String, usize>,
    pub build_epoch: u64,
}

impl Writer {
    /// `ip_version` 4 or 6; `record_size` 24, 28 or 32.
    pub fn new(database_type: &str, ip_version: u16, record_size: u16) -> Writer {
        assert!(ip_version == 4 || ip_version == 6);
        assert!(matches!(record_size, 24 | 28 | 32));
        Writer {
            database_type: database_type.to_owned(),
            ip_version,
            record_size,
            root: Node::Inner(Box::new([Node::Empty, Node::Empty])),
            data: Vec::new(),
            strings: HashMap::new(),
            build_epoch: 1_700_000_000,
        }
    }

    /// Maps the network `cidr` ("81.2.69.0/24", "2a02:8010::/32") to
    /// `value`. In an IPv6 tree IPv4 networks go under `::/96`, where
    /// readers look IPv4 addresses up. A more specific network inserted
    /// after a broader one splits it (longest prefix wins); a broader one
    /// inserted later replaces whatever was below it.
    pub fn insert(&mut self, cidr: &str, value: &Value) {
        let (addr, len) = cidr.split_once('/').expect("cidr");
        let addr: IpAddr = addr.parse().expect("address");
        let len: u32 = len.parse().expect("prefix length");
        let (bits, depth) = match (addr, self.ip_version) {
            (IpAddr::V4(a), 4) => ((u128::from(u32::from(a))) << 96, len),
            (IpAddr::V4(a), 6) => (u128::from(u32::from(a)), 96 + len),
            (IpAddr::V6(a), 6) => (u128::from(a), len),
            (IpAddr::V6(_), _) => panic!("IPv6 network in an IPv4 database"),
            _ => unreachable!(),
        };
        assert!(depth >= 1 && depth <= if self.ip_version == 4 { 32 } else { 128 });
        let offset = self.data.len();
        self.encode(value);
        let mut node = &mut self.root;
        for i in 0..depth {
            // Split a leaf on the way down: both halves keep its data.
            let replacement = match node {
                Node::Empty => Some(Node::Inner(Box::new([Node::Empty, Node::Empty]))),
                Node::Data(o) => Some(Node::Inner(Box::new([Node::Data(*o), Node::Data(*o)]))),
                Node::Inner(_) => None,
            };
            if let Some(r) = replacement {
                *node = r;
            }
            let Node::Inner(children) = node else {
                unreachable!()
            };
            let bit = ((bits >> (127 - i)) & 1) as usize;
            node = &mut children[bit];
        }
        *node = Node::Data(offset);
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Number the inner nodes breadth-first; the root is node 0.
        let mut order: Vec<&[Node; 2]> = Vec::new();
        let Node::Inner(root) = &self.root else {
            unreachable!()
        };
        order.push(root);
        let mut i = 0;
        while i < order.len() {
            for child in order[i].iter() {
                if let Node::Inner(c) = child {
                    order.push(c);
                }
            }
            i += 1;
        }
        let node_count = order.len() as u64;
        // Inner nodes appear in `order` in the same sequence as they are
        // met while writing, so a running counter gives each child's index.
        let mut next_inner = 1u64;
        let mut tree = Vec::new();
        for node in &order {
            let mut rec = [0u64; 2];
            for (side, child) in node.iter().enumerate() {
                rec[side] = match child {
                    Node::Empty => node_count,
                    Node::Data(off) => node_count + DATA_SECTION_SEPARATOR as u64 + *off as u64,
                    Node::Inner(_) => {
                        let n = next_inner;
                        next_inner += 1;
                        n
                    }
                };
                assert!(
                    rec[side] < 1u64 << self.record_size,
                    "record does not fit in {} bits",
                    self.record_size
                );
            }
            let [l, r] = rec;
            match self.record_size {
                24 => {
                    tree.extend_from_slice(&(l as u32).to_be_bytes()[1..]);
                    tree.extend_from_slice(&(r as u32).to_be_bytes()[1..]);
                }
                28 => {
                    tree.extend_from_slice(&(l as u32).to_be_bytes()[1..]);
                    tree.push((((l >> 24) & 0x0f) << 4 | ((r >> 24) & 0x0f)) as u8);
                    tree.extend_from_slice(&(r as u32).to_be_bytes()[1..]);
                }
                32 => {
                    tree.extend_from_slice(&(l as u32).to_be_bytes());
                    tree.extend_from_slice(&(r as u32).to_be_bytes());
                }
                _ => unreachable!(),
            }
        }

        let mut out = tree;
        out.extend_from_slice(&[0u8; DATA_SECTION_SEPARATOR]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(METADATA_MARKER);
        // The metadata is its own data section: no pointers into the other.
        let mut meta = Writer::new("", 4, 24);
        meta.encode(&Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("database_type", Value::str(&self.database_type)),
            (
                "description",
                Value::map([("en", Value::str("Rampart test database"))]),
            ),
            ("ip_version", Value::U16(self.ip_version)),
            ("languages", Value::Array(vec![Value::str("en")])),
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(self.record_size)),
        ]));
        out.extend_from_slice(&meta.data);
        out
    }

    fn control(&mut self, type_num: u8, size: usize) {
        let (low5, extra): (u8, Vec<u8>) = if size < 29 {
            (size as u8, vec![])
        } else if size < 29 + 256 {
            (29, vec![(size - 29) as u8])
        } else if size < 285 + 65_536 {
            (30, ((size - 285) as u16).to_be_bytes().to_vec())
        } else {
            (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
        };
        if type_num <= 7 {
            self.data.push(type_num << 5 | low5);
        } else {
            // Extended type: type bits 0, the type less 7 in the next byte,
            // then the size bytes.
            self.data.push(low5);
            self.data.push(type_num - 7);
        }
        self.data.extend_from_slice(&extra);
    }

    fn pointer(&mut self, target: usize) {
        // Control byte 001SSVVV; SS picks the width, VVV are high bits.
        if target < 1 << 11 {
            self.data.push(T_POINTER << 5 | (target >> 8) as u8);
            self.data.push(target as u8);
        } else if target < 2048 + (1 << 19) {
            let v = target - 2048;
            self.data.push(T_POINTER << 5 | 1 << 3 | (v >> 16) as u8);
            self.data.extend_from_slice(&(v as u16).to_be_bytes());
        } else if target < 526_336 + (1 << 27) {
            let v = target - 526_336;
            self.data.push(T_POINTER << 5 | 2 << 3 | (v >> 24) as u8);
            self.data.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        } else {
            self.data.push(T_POINTER << 5 | 3 << 3);
            self.data.extend_from_slice(&(target as u32).to_be_bytes());
        }
    }

    fn string(&mut self, s: &str) {
        if let Some(&at) = self.strings.get(s) {
            return self.pointer(at);
        }
        let at = self.data.len();
        self.control(T_UTF8, s.len());
        self.data.extend_from_slice(s.as_bytes());
        self.strings.insert(s.to_owned(), at);
    }

    fn uint(&mut self, type_num: u8, v: u64) {
        // Big-endian without leading zero bytes; 0 has size 0.
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.control(type_num, 8 - skip);
        self.data.extend_from_slice(&bytes[skip..]);
    }

    fn encode(&mut self, v: &Value) {
        match v {
            Value::Str(s) => self.string(s),
            Value::Double(d) => {
                self.control(T_DOUBLE, 8);
                self.data.extend_from_slice(&d.to_be_bytes());
            }
            Value::U16(n) => self.uint(T_UINT16, u64::from(*n)),
            Value::U32(n) => self.uint(T_UINT32, u64::from(*n)),
            Value::U64(n) => self.uint(T_UINT64, *n),
            Value::Bool(b) => self.control(T_BOOL, usize::from(*b)),
            Value::Map(pairs) => {
                self.control(T_MAP, pairs.len());
                for (k, v) in pairs {
                    self.string(k);
                    self.encode(v);
                }
            }
            Value::Array(items) => {
                self.control(T_ARRAY, items.len());
                for v in items {
                    self.encode(v);
                }
            }
        }
    }
}
