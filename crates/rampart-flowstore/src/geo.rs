//! Country and ASN enrichment from MaxMind-format (MMDB) database files that
//! the operator provides (issue 4 §7).
//!
//! What is read from each record, so that MaxMind's own editions and the
//! common GeoIP2-compatible ones all work without configuration:
//!
//! | key (top level)            | accepted shapes                         | gives          |
//! |----------------------------|-----------------------------------------|----------------|
//! | `country`                  | map with `iso_code` (GeoIP2/GeoLite2 Country and City, DB-IP), or a bare string (ipinfo) | country |
//! | `registered_country`       | map with `iso_code`; used only when `country` is absent (anycast and satellite ranges) | country |
//! | `autonomous_system_number` | unsigned integer (GeoLite2/GeoIP2 ASN, DB-IP ASN) | ASN |
//! | `asn`                      | unsigned integer, or a string `"AS15169"` (ipinfo) | ASN |
//!
//! Everything else in a record is skipped without being decoded. A country
//! code must be two ASCII letters (it is upper-cased); `ZZ`, the
//! "unknown" code some vendors use, counts as absent, and so does ASN 0.
//!
//! Several files may be given (typically a Country or City file and an ASN
//! file); for each field the first file, in the order given, that has a
//! value wins.
//!
//! The files are read into memory rather than memory-mapped: the editions
//! used for flows are 5-80 MB, a mapping needs `unsafe` and is undefined
//! behaviour (in practice a SIGBUS that kills the portal) if the file is
//! truncated or rewritten in place while mapped, and memory-resident lookups
//! are plain slice reads. Reloading a new edition is opening a new [`GeoDb`]
//! and swapping it in.
//!
//! Opening is blocking and does a full structural verification of each file
//! (the search tree and every record it points to), so that a damaged
//! download is refused at start with a clear error instead of quietly
//! enriching nothing: run it in `spawn_blocking`.

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::{path, MaxMindDbError, PathElement, Reader};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Largest database file accepted. GeoIP2 City, the largest edition used for
/// enrichment, is well under this; a larger file is not one we can use.
pub const MAX_DB_BYTES: u64 = 1 << 30;

/// Country and ASN of one address. `None` when no database knows it, or
/// when the address is private, reserved or otherwise not on the Internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 code, upper-case ASCII (for example `*b"GB"`).
    pub country: Option<[u8; 2]>,
    /// Autonomous system number.
    pub asn: Option<u32>,
}

impl Geo {
    /// The country code as a string slice.
    pub fn country_code(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error(
        "no geo database file was given: pass at least one .mmdb path or leave enrichment off"
    )]
    NoFiles,
    #[error("cannot read geo database {}: {source}; check the path and its permissions", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("geo database {} is {size} bytes, over the {limit}-byte limit: use a Country, City or ASN edition", .path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("geo database {} is not a valid MaxMind DB file ({source}); download it again", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
}

/// What an opened file is, for logging at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoFileInfo {
    pub path: PathBuf,
    /// `database_type` from the file's metadata (for example
    /// `GeoLite2-Country`, `GeoLite2-ASN`, `DBIP-Country-Lite`).
    pub database_type: String,
    /// When the file was built, seconds since the Unix epoch: stale
    /// editions misplace addresses, so operators want to see it.
    pub build_epoch: u64,
    /// 4 or 6.
    pub ip_version: u16,
    /// Whether sampled records carry a country / an ASN in a shape we
    /// read; a file with neither is kept (every path is then tried) but is
    /// worth a warning.
    pub has_country: bool,
    pub has_asn: bool,
}

struct GeoFile {
    info: GeoFileInfo,
    schema: Schema,
    reader: Reader<Vec<u8>>,
}

/// One or more MMDB files, queried together. `Send + Sync`: share it in an
/// `Arc`.
pub struct GeoDb {
    files: Vec<GeoFile>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field(
                "files",
                &self.files.iter().map(|g| &g.info).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl GeoDb {
    /// Opens, reads and verifies each file. Blocking.
    pub fn open(paths: &[PathBuf]) -> Result<GeoDb, GeoError> {
        if paths.is_empty() {
            return Err(GeoError::NoFiles);
        }
        let files = paths
            .iter()
            .map(|p| open_one(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GeoDb { files })
    }

    /// The files, in priority order.
    pub fn files(&self) -> impl Iterator<Item = &GeoFileInfo> {
        self.files.iter().map(|f| &f.info)
    }

    /// Country and ASN of `ip`. Never fails: an address no file knows, a
    /// private or reserved one, or a record that cannot be decoded gives
    /// `None` fields. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::/96`)
    /// addresses are looked up as the IPv4 address they carry.
    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let mut geo = Geo::default();
        let Some(ip) = routable(ip) else {
            return geo;
        };
        for file in &self.files {
            let want_country = geo.country.is_none() && file.schema.has_country();
            let want_asn = geo.asn.is_none() && file.schema.has_asn();
            if !want_country && !want_asn {
                continue;
            }
            let (country, asn) = file.fields(ip);
            geo.country = geo.country.or(country);
            geo.asn = geo.asn.or(asn);
            if geo.country.is_some() && geo.asn.is_some() {
                break;
            }
        }
        geo
    }
}

fn open_one(path: &Path) -> Result<GeoFile, GeoError> {
    let io = |source| GeoError::Io {
        path: path.to_owned(),
        source,
    };
    let too_large = |size| GeoError::TooLarge {
        path: path.to_owned(),
        size,
        limit: MAX_DB_BYTES,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_DB_BYTES {
        return Err(too_large(size));
    }
    // `size` is bounded above; `take` guards against the file growing
    // between the stat and the read.
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_DB_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_DB_BYTES {
        return Err(too_large(buf.len() as u64));
    }
    let invalid = |source| GeoError::Invalid {
        path: path.to_owned(),
        source,
    };
    let reader = Reader::from_source(buf).map_err(invalid)?;
    reader.verify().map_err(invalid)?;
    let schema = learn_schema(&reader);
    let m = reader.metadata();
    let info = GeoFileInfo {
        path: path.to_owned(),
        database_type: m.database_type.clone(),
        build_epoch: m.build_epoch,
        ip_version: m.ip_version,
        has_country: schema.has_country(),
        has_asn: schema.has_asn(),
    };
    Ok(GeoFile {
        info,
        schema,
        reader,
    })
}

/// `Some` with the address to look up if it can have a country or ASN.
///
/// Special-purpose blocks per the IANA IPv4 and IPv6 special-purpose address
/// registries (RFC 6890 and updates) that are not globally routable are
/// refused: vendors either leave them out or fill them with placeholder
/// data, and a flow store should not label a LAN with a country.
fn routable(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => routable_v4(v4).map(IpAddr::V4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return routable_v4(v4).map(IpAddr::V4);
            }
            // 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052).
            if let [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] = s {
                let v4 = Ipv4Addr::from(u32::from(hi) << 16 | u32::from(lo));
                return routable_v4(v4).map(IpAddr::V4);
            }
            routable_v6(v6).then_some(IpAddr::V6(v6))
        }
    }
}

fn routable_v4(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network"
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGN)
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    (!special).then_some(ip)
}

fn routable_v6(ip: Ipv6Addr) -> bool {
    let [s0, s1, s2, s3, ..] = ip.segments();
    let special = s0 & 0xff00 == 0 // ::/8: unspecified, loopback, IPv4-compatible
        || (s0 == 0x0100 && [s1, s2, s3] == [0, 0, 0]) // discard-only, 100::/64
        || (s0 == 0x2001 && s1 < 0x0200) // IETF protocol assignments, 2001::/23
        || (s0 == 0x2001 && s1 == 0x0db8) // documentation
        || s0 & 0xfe00 == 0xfc00 // unique local
        || s0 & 0xffc0 == 0xfe80 // link-local
        || s0 & 0xff00 == 0xff00; // multicast
    !special
}

/// Which of the keys we read a file's records carry, learnt at open from a
/// sample of its records, so a lookup only navigates to keys the file has
/// (an ASN file is never searched for a country, and the other way round).
#[derive(Debug, Default, Clone, Copy)]
struct Schema {
    /// `country` as a map (GeoIP2 schema).
    country_map: bool,
    /// `country` as a bare code (ipinfo).
    country_str: bool,
    registered_country: bool,
    autonomous_system_number: bool,
    asn: bool,
}

impl Schema {
    /// Every path, for a file whose sample showed none of ours.
    const ALL: Schema = Schema {
        country_map: true,
        country_str: true,
        registered_country: true,
        autonomous_system_number: true,
        asn: true,
    };

    fn has_country(&self) -> bool {
        self.country_map || self.country_str || self.registered_country
    }

    fn has_asn(&self) -> bool {
        self.autonomous_system_number || self.asn
    }
}

/// Records sampled at open: the first ones in tree order, then one per
/// probe address spread over the address space.
const SCHEMA_SAMPLE: usize = 1024;

fn learn_schema(reader: &Reader<Vec<u8>>) -> Schema {
    let mut s = Schema::default();
    let mut learn = |r: &maxminddb::LookupResult<'_, Vec<u8>>| {
        if let Ok(Some(shape)) = r.decode::<Shape>() {
            s.country_map |= shape.0.country_map;
            s.country_str |= shape.0.country_str;
            s.registered_country |= shape.0.registered_country;
            s.autonomous_system_number |= shape.0.autonomous_system_number;
            s.asn |= shape.0.asn;
        }
    };
    if let Ok(networks) = reader.networks(Default::default()) {
        for r in networks.flatten().take(SCHEMA_SAMPLE) {
            learn(&r);
        }
    }
    for a in 1..224u8 {
        if let Ok(r) = reader.lookup(IpAddr::V4(Ipv4Addr::new(a, 90, 90, 90))) {
            learn(&r);
        }
    }
    if reader.metadata().ip_version == 6 {
        for k in 0..64u16 {
            let ip = Ipv6Addr::new(0x2000 + (k << 7), 0x5a5a, 0, 0, 0, 0, 0, 1);
            if let Ok(r) = reader.lookup(IpAddr::V6(ip)) {
                learn(&r);
            }
        }
    }
    if s.has_country() || s.has_asn() {
        s
    } else {
        Schema::ALL
    }
}

impl GeoFile {
    fn fields(&self, ip: IpAddr) -> (Option<[u8; 2]>, Option<u32>) {
        if self.info.ip_version == 4 && ip.is_ipv6() {
            return (None, None);
        }
        let Ok(r) = self.reader.lookup(ip) else {
            return (None, None);
        };
        if !r.has_data() {
            return (None, None);
        }
        let s = &self.schema;
        let code = |p: &[PathElement<'_>]| {
            r.decode_path::<&str>(p)
                .ok()
                .flatten()
                .and_then(country_code)
        };
        let mut country = None;
        if s.country_map {
            country = code(&path!["country", "iso_code"]);
        }
        if country.is_none() && s.country_str {
            country = code(&path!["country"]);
        }
        if country.is_none() && s.registered_country {
            country = code(&path!["registered_country", "iso_code"]);
        }
        // The typed `u32` read is the fast path; other shapes (uint64, a
        // string) go through the lenient visitor.
        let number = |p: &[PathElement<'_>]| match r.decode_path::<u32>(p) {
            Ok(n) => n.and_then(|n| nonzero_asn(u64::from(n))),
            Err(_) => r.decode_path::<Asn>(p).ok().flatten().and_then(|a| a.0),
        };
        let mut asn = None;
        if s.autonomous_system_number {
            asn = number(&path!["autonomous_system_number"]);
        }
        if asn.is_none() && s.asn {
            asn = number(&path!["asn"]);
        }
        (country, asn)
    }
}

fn country_code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
            (code != *b"ZZ").then_some(code)
        }
        _ => None,
    }
}

fn nonzero_asn(n: u64) -> Option<u32> {
    u32::try_from(n).ok().filter(|&n| n != 0)
}

/// Which of our keys one record has, and the shape of its `country`.
struct Shape(Schema);

enum Key {
    Country,
    RegisteredCountry,
    AutonomousSystemNumber,
    Asn,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "country" => Key::Country,
                    "registered_country" => Key::RegisteredCountry,
                    "autonomous_system_number" => Key::AutonomousSystemNumber,
                    "asn" => Key::Asn,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        struct RecordVisitor;
        impl<'de> Visitor<'de> for RecordVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut s = Schema::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Country => match map.next_value::<ValueKind>()? {
                            ValueKind::Map => s.country_map = true,
                            ValueKind::Str => s.country_str = true,
                            ValueKind::Other => {}
                        },
                        Key::RegisteredCountry => {
                            map.next_value::<IgnoredAny>()?;
                            s.registered_country = true;
                        }
                        Key::AutonomousSystemNumber => {
                            map.next_value::<IgnoredAny>()?;
                            s.autonomous_system_number = true;
                        }
                        Key::Asn => {
                            map.next_value::<IgnoredAny>()?;
                            s.asn = true;
                        }
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Shape(s))
            }
        }
        d.deserialize_map(RecordVisitor)
    }
}

enum ValueKind {
    Map,
    Str,
    Other,
}

impl<'de> Deserialize<'de> for ValueKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ValueKind, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = ValueKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ValueKind, E> {
                Ok(ValueKind::Str)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueKind, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ValueKind::Map)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ValueKind, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ValueKind::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<ValueKind, E> {
                Ok(ValueKind::Other)
            }
        }
        d.deserialize_any(KindVisitor)
    }
}

/// An AS number that is not a plain uint32: a wider integer, or a string
/// like `AS15169` (ipinfo).
struct Asn(Option<u32>);

impl<'de> Deserialize<'de> for Asn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Asn, D::Error> {
        struct AsnVisitor;
        impl<'de> Visitor<'de> for AsnVisitor {
            type Value = Asn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an AS number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Asn, E> {
                Ok(Asn(nonzero_asn(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Asn, E> {
                Ok(Asn(u64::try_from(v).ok().and_then(nonzero_asn)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Asn, E> {
                Ok(Asn(u64::try_from(v).ok().and_then(nonzero_asn)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Asn, E> {
                let digits = v
                    .strip_prefix("AS")
                    .or_else(|| v.strip_prefix("as"))
                    .unwrap_or(v);
                Ok(Asn(digits.parse::<u64>().ok().and_then(nonzero_asn)))
            }
        }
        d.deserialize_any(AsnVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses_are_not_looked_up() {
        for ip in [
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "64:ff9b::c0a8:1",
            "2001:db8::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(routable(ip), None, "{ip}");
        }
        for (ip, as_v4) in [
            ("8.8.8.8", "8.8.8.8"),
            ("172.32.0.1", "172.32.0.1"),
            ("::ffff:81.2.69.1", "81.2.69.1"),
            ("64:ff9b::5102:4501", "81.2.69.1"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let want: IpAddr = as_v4.parse().unwrap();
            assert_eq!(routable(ip), Some(want));
        }
        let v6: IpAddr = "2a00:1450::1".parse().unwrap();
        assert_eq!(routable(v6), Some(v6));
    }

    #[test]
    fn country_codes_are_two_letters_and_zz_is_unknown() {
        assert_eq!(country_code("gb"), Some(*b"GB"));
        assert_eq!(country_code("ZZ"), None);
        assert_eq!(country_code("GBR"), None);
        assert_eq!(country_code("1A"), None);
        assert_eq!(country_code("É"), None);
    }
}
