//! The flow store's public vocabulary: rows in, dimensions and metrics,
//! queries and their answers.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use rampart_flow::{Direction, FlowRecord};
use serde::{Serialize, Serializer};
use uuid::Uuid;

/// An ISO 3166-1 alpha-2 country code, upper-case ASCII.
///
/// Unknown is `ZZ`, the code CLDR uses for "Unknown Region": it is not
/// assigned to any country, so it cannot be confused with one, and it shows
/// as a code rather than an empty cell in CSV and charts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(pub [u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// Two ASCII letters (any case), else [`Country::UNKNOWN`].
    pub fn new(code: &str) -> Country {
        match code.as_bytes() {
            [a, b] => Country([*a, *b]).normalized(),
            _ => Country::UNKNOWN,
        }
    }

    /// Upper-cased if both bytes are ASCII letters, else unknown: anything
    /// else would be a key nobody can name in a query or a chart.
    pub fn normalized(self) -> Country {
        let [a, b] = self.0;
        if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() {
            Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        } else {
            Country::UNKNOWN
        }
    }

    pub fn is_known(&self) -> bool {
        self.normalized() != Country::UNKNOWN
    }

    pub fn as_str(&self) -> &str {
        let n = self.normalized();
        if n == *self {
            std::str::from_utf8(&self.0).unwrap_or("ZZ")
        } else {
            "ZZ"
        }
    }
}

impl Default for Country {
    fn default() -> Self {
        Country::UNKNOWN
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One flow as the portal stores it: the record the agent sent, the device
/// it came through, and the enrichment the portal added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FlowRow {
    #[serde(flatten)]
    pub flow: FlowRecord,
    pub device: Uuid,
    pub src_country: Country,
    pub dst_country: Country,
    /// 0 when unknown.
    pub src_asn: u32,
    pub dst_asn: u32,
}

/// A dimension flows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    Src,
    Dst,
    SrcPort,
    DstPort,
    Proto,
    Device,
    Direction,
    SrcCountry,
    DstCountry,
    SrcAsn,
    DstAsn,
}

impl Dim {
    pub const ALL: [Dim; 11] = [
        Dim::Src,
        Dim::Dst,
        Dim::SrcPort,
        Dim::DstPort,
        Dim::Proto,
        Dim::Device,
        Dim::Direction,
        Dim::SrcCountry,
        Dim::DstCountry,
        Dim::SrcAsn,
        Dim::DstAsn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Src => "src",
            Dim::Dst => "dst",
            Dim::SrcPort => "src_port",
            Dim::DstPort => "dst_port",
            Dim::Proto => "proto",
            Dim::Device => "device",
            Dim::Direction => "direction",
            Dim::SrcCountry => "src_country",
            Dim::DstCountry => "dst_country",
            Dim::SrcAsn => "src_asn",
            Dim::DstAsn => "dst_asn",
        }
    }

    /// Position in [`Dim::ALL`], also the code stored in rollup files.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The grouping key of `row` in this dimension.
    pub(crate) fn key(self, row: &FlowRow) -> Key {
        let f = &row.flow;
        match self {
            Dim::Src => addr_key(f.src_addr),
            Dim::Dst => addr_key(f.dst_addr),
            Dim::SrcPort => num_key(u64::from(f.src_port)),
            Dim::DstPort => num_key(u64::from(f.dst_port)),
            Dim::Proto => num_key(u64::from(f.protocol)),
            Dim::Device => *row.device.as_bytes(),
            Dim::Direction => num_key(u64::from(direction_code(f.direction))),
            Dim::SrcCountry => country_key(row.src_country),
            Dim::DstCountry => country_key(row.dst_country),
            Dim::SrcAsn => num_key(u64::from(row.src_asn)),
            Dim::DstAsn => num_key(u64::from(row.dst_asn)),
        }
    }

    /// The value a key of this dimension stands for.
    pub(crate) fn value(self, key: &Key) -> DimValue {
        let num = || {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key[8..]);
            u64::from_be_bytes(b)
        };
        match self {
            Dim::Src | Dim::Dst => DimValue::Addr(Ipv6Addr::from(*key).to_canonical()),
            Dim::SrcPort | Dim::DstPort => DimValue::Port(num() as u16),
            Dim::Proto => DimValue::Proto(num() as u8),
            Dim::Device => DimValue::Device(Uuid::from_bytes(*key)),
            Dim::Direction => DimValue::Direction(direction_from_code(num() as u8)),
            Dim::SrcCountry | Dim::DstCountry => {
                DimValue::Country(Country([key[14], key[15]]).normalized())
            }
            Dim::SrcAsn | Dim::DstAsn => DimValue::Asn(num() as u32),
        }
    }
}

impl FromStr for Dim {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Dim::ALL.into_iter().find(|d| d.as_str() == s).ok_or(())
    }
}

/// A 16-byte grouping key: IPv6 (IPv4 mapped) addresses and device ids as
/// they are, numbers big-endian in the last 8 bytes, country in the last 2.
/// One fixed width for every dimension keeps rollup files one schema.
pub(crate) type Key = [u8; 16];

fn addr_key(a: IpAddr) -> Key {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn num_key(n: u64) -> Key {
    let mut k = [0u8; 16];
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

fn country_key(c: Country) -> Key {
    let mut k = [0u8; 16];
    let c = c.normalized();
    k[14] = c.0[0];
    k[15] = c.0[1];
    k
}

pub(crate) fn direction_code(d: Direction) -> u8 {
    match d {
        Direction::Unknown => 0,
        Direction::Ingress => 1,
        Direction::Egress => 2,
    }
}

pub(crate) fn direction_from_code(c: u8) -> Direction {
    match c {
        1 => Direction::Ingress,
        2 => Direction::Egress,
        _ => Direction::Unknown,
    }
}

/// A key of some dimension, ready to show. Serializes as the natural JSON
/// value: addresses and device ids as strings, ports, protocols and ASNs as
/// numbers, countries as `"FR"`, directions as `"ingress"`.
///
/// IPv4-mapped IPv6 addresses are reported as IPv4 by the grouping queries,
/// which key both families on 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DimValue {
    Addr(IpAddr),
    Port(u16),
    Proto(u8),
    Device(Uuid),
    Direction(Direction),
    Country(Country),
    Asn(u32),
}

impl DimValue {
    fn rank(&self) -> (u8, u128) {
        match *self {
            DimValue::Addr(IpAddr::V4(a)) => (0, u128::from(u32::from(a))),
            DimValue::Addr(IpAddr::V6(a)) => (1, u128::from(a)),
            DimValue::Port(p) => (2, u128::from(p)),
            DimValue::Proto(p) => (3, u128::from(p)),
            DimValue::Device(d) => (4, d.as_u128()),
            DimValue::Direction(d) => (5, u128::from(direction_code(d))),
            DimValue::Country(c) => (6, u128::from(u16::from_be_bytes(c.0))),
            DimValue::Asn(a) => (7, u128::from(a)),
        }
    }
}

/// Ties in a ranking are broken by this order, so answers are stable.
impl Ord for DimValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for DimValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for DimValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DimValue::Addr(a) => s.collect_str(a),
            DimValue::Port(p) => s.serialize_u16(*p),
            DimValue::Proto(p) => s.serialize_u8(*p),
            DimValue::Device(d) => s.collect_str(d),
            DimValue::Direction(d) => d.serialize(s),
            DimValue::Country(c) => c.serialize(s),
            DimValue::Asn(a) => s.serialize_u32(*a),
        }
    }
}

impl std::fmt::Display for DimValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DimValue::Addr(a) => a.fmt(f),
            DimValue::Port(p) => p.fmt(f),
            DimValue::Proto(p) => p.fmt(f),
            DimValue::Device(d) => d.fmt(f),
            DimValue::Direction(d) => f.write_str(match d {
                Direction::Unknown => "unknown",
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            }),
            DimValue::Country(c) => c.fmt(f),
            DimValue::Asn(a) => a.fmt(f),
        }
    }
}

/// What is counted. Bytes and packets are scaled by the sampling rates,
/// flows by the collector's resampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Bytes,
    Packets,
    Flows,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Bytes => "bytes",
            Metric::Packets => "packets",
            Metric::Flows => "flows",
        }
    }
}

impl FromStr for Metric {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [Metric::Bytes, Metric::Packets, Metric::Flows]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(())
    }
}

/// Which table answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Raw,
    Minute,
    Hour,
    Day,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Raw => "raw",
            Level::Minute => "1m",
            Level::Hour => "1h",
            Level::Day => "1d",
        }
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Every answer says how it was computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer<T> {
    pub data: T,
    /// True when a rollup that had kept only its top keys was used for the
    /// dimension asked, so small keys may be missing or undercounted.
    pub approximate: bool,
    /// The finest table any part of the answer was read from: whole
    /// compacted days are answered from `Day`, whole compacted hours from
    /// `Hour`, partial and open hours from `Minute`, minute fractions and
    /// filtered queries from `Raw`.
    pub level: Level,
    /// Raw flow records or rollup rows read.
    pub rows_scanned: u64,
}

/// A predicate on flow records; the portal passes its filter language's
/// `matches` through this, so the store needs no parser.
pub type RowFilter = Arc<dyn Fn(&FlowRecord) -> bool + Send + Sync>;

/// Top-N query over `[start_ms, end_ms)` (flow starts).
#[derive(Clone)]
pub struct TopQuery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub dim: Dim,
    pub metric: Metric,
    /// 1 to [`crate::MAX_TOP_N`].
    pub n: usize,
    pub filter: Option<RowFilter>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TopEntry {
    pub key: DimValue,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

/// Time series over `[start_ms, end_ms)` in buckets of `bucket_ms`.
///
/// Buckets are aligned to multiples of `bucket_ms` since the epoch (the
/// first one may start before `start_ms`, but only flows inside the window
/// are counted), and a flow counts in the bucket of its start, as nfdump
/// does with first-seen times.
#[derive(Clone)]
pub struct SeriesQuery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub bucket_ms: i64,
    pub metric: Metric,
    /// `None`: one total series; `Some`: the top `top` keys, then other.
    pub dim: Option<Dim>,
    pub top: usize,
    pub filter: Option<RowFilter>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesLabel {
    Total,
    Key(DimValue),
    /// Everything not in the stacked keys: the stack always sums to the
    /// total.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Series {
    pub bucket_starts: Vec<i64>,
    pub series: Vec<(SeriesLabel, Vec<u64>)>,
}

/// Flow search over `[start_ms, end_ms)`, a page at a time.
#[derive(Clone)]
pub struct SearchQuery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub filter: Option<RowFilter>,
    /// 1 to [`crate::MAX_SEARCH_LIMIT`].
    pub limit: usize,
    pub cursor: Option<crate::cursor::Cursor>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<FlowRow>,
    /// Where the next page starts; `None` when no row is left.
    pub next: Option<crate::cursor::Cursor>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Scaled by the sampling rates.
    pub bytes: u64,
    pub packets: u64,
    /// Exported flows these records stand for.
    pub flows: u64,
    /// Flow records stored.
    pub records: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn dim_values_serialize_as_natural_json() {
        let v = |d: DimValue| serde_json::to_value(d).unwrap();
        assert_eq!(v(DimValue::Addr("10.0.0.1".parse().unwrap())), "10.0.0.1");
        assert_eq!(
            v(DimValue::Addr("2001:db8::1".parse().unwrap())),
            "2001:db8::1"
        );
        assert_eq!(v(DimValue::Port(443)), 443);
        assert_eq!(v(DimValue::Proto(6)), 6);
        assert_eq!(v(DimValue::Country(Country::new("fr"))), "FR");
        assert_eq!(v(DimValue::Asn(64_500)), 64_500);
        assert_eq!(v(DimValue::Direction(Direction::Egress)), "egress");
        let id = Uuid::from_u128(7);
        assert_eq!(v(DimValue::Device(id)), id.to_string());
    }

    pub(crate) fn sample_row() -> FlowRow {
        FlowRow {
            flow: FlowRecord {
                start_ms: 0,
                end_ms: 0,
                bytes: 0,
                packets: 0,
                src_addr: "192.0.2.7".parse().unwrap(),
                dst_addr: "2001:db8::9".parse().unwrap(),
                exporter: "192.0.2.1".parse().unwrap(),
                in_if: 0,
                out_if: 0,
                sampling_rate: 1,
                domain_id: 0,
                src_port: 51_234,
                dst_port: 443,
                protocol: 17,
                tcp_flags: 0,
                direction: Direction::Ingress,
                resample: 1,
                flags: 0,
                app: Default::default(),
            },
            device: Uuid::from_u128(99),
            src_country: Country::new("DE"),
            dst_country: Country::UNKNOWN,
            src_asn: 3320,
            dst_asn: 4_200_000_000,
        }
    }

    #[test]
    fn keys_round_trip_through_values() {
        let row = sample_row();
        let want = [
            DimValue::Addr("192.0.2.7".parse().unwrap()),
            DimValue::Addr("2001:db8::9".parse().unwrap()),
            DimValue::Port(51_234),
            DimValue::Port(443),
            DimValue::Proto(17),
            DimValue::Device(Uuid::from_u128(99)),
            DimValue::Direction(Direction::Ingress),
            DimValue::Country(Country(*b"DE")),
            DimValue::Country(Country(*b"ZZ")),
            DimValue::Asn(3320),
            DimValue::Asn(4_200_000_000),
        ];
        for (d, w) in Dim::ALL.into_iter().zip(want) {
            assert_eq!(d.value(&d.key(&row)), w, "{d:?}");
            assert_eq!(d.as_str().parse::<Dim>(), Ok(d));
        }
    }

    #[test]
    fn countries_are_two_letters_or_unknown() {
        assert_eq!(Country::new("gb").as_str(), "GB");
        assert_eq!(Country::new("G").as_str(), "ZZ");
        assert_eq!(Country([0, 0]).as_str(), "ZZ");
        assert_eq!(Country([0, 0]).normalized(), Country::UNKNOWN);
        assert!(!Country::UNKNOWN.is_known());
        assert!(Country::new("NL").is_known());
    }
}
