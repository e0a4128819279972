//! Country and ASN enrichment against small MMDB files written by
//! `support/mmdb_writer.rs`. Expected values are the ones written into the
//! files; each file is also decoded by the `maxminddb` crate directly, as an
//! independent reader, to show the writer follows the format.

#[path = "support/mmdb_writer.rs"]
mod mmdb_writer;

use std::net::IpAddr;
use std::path::PathBuf;

use maxminddb::geoip2;
use mmdb_writer::{Value, Writer};
use rampart_flowstore::geo::{Geo, GeoDb, GeoError, MAX_DB_BYTES};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A GeoIP2 City-shaped record (the keys and types of MaxMind's City
/// schema), so the lookup has to skip maps, doubles and booleans.
fn city(iso: &str, geoname_id: u32, name: &str, lat: f64, lon: f64) -> Value {
    let country = Value::map([
        ("geoname_id", Value::U32(geoname_id)),
        ("is_in_european_union", Value::Bool(iso != "GB")),
        ("iso_code", Value::str(iso)),
        ("names", Value::map([("en", Value::str(name))])),
    ]);
    Value::map([
        (
            "continent",
            Value::map([
                ("code", Value::str("EU")),
                ("geoname_id", Value::U32(6_255_148)),
                ("names", Value::map([("en", Value::str("Europe"))])),
            ]),
        ),
        ("country", country.clone()),
        (
            "location",
            Value::map([
                ("accuracy_radius", Value::U16(100)),
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
            ]),
        ),
        ("registered_country", country),
        (
            "subdivisions",
            Value::Array(vec![Value::map([("iso_code", Value::str("ENG"))])]),
        ),
    ])
}

fn asn(number: u32, org: &str) -> Value {
    Value::map([
        ("autonomous_system_number", Value::U32(number)),
        ("autonomous_system_organization", Value::str(org)),
    ])
}

/// City-style file: IPv6 tree, 28-bit records, IPv4 under ::/96.
fn city_db() -> Writer {
    let mut w = Writer::new("GeoLite2-City", 6, 28);
    w.insert(
        "81.2.69.0/24",
        &city("GB", 2_635_167, "United Kingdom", 51.5, -0.13),
    );
    w.insert(
        "89.160.0.0/16",
        &city("SE", 2_661_886, "Sweden", 58.4, 15.6),
    );
    // More specific, inserted after the broader one: must win inside it.
    w.insert(
        "89.160.20.0/24",
        &city("DE", 2_921_044, "Germany", 52.5, 13.4),
    );
    w.insert(
        "2a02:8010::/32",
        &city("GB", 2_635_167, "United Kingdom", 51.5, -0.13),
    );
    // A private range given a country, as some vendor files do: the
    // enrichment must still say nothing for it.
    w.insert(
        "10.0.0.0/8",
        &city("US", 6_252_001, "United States", 37.7, -97.8),
    );
    w.insert(
        "fd00::/8",
        &city("US", 6_252_001, "United States", 37.7, -97.8),
    );
    // Only a registered country (anycast-style record).
    w.insert(
        "185.0.0.0/16",
        &Value::map([(
            "registered_country",
            Value::map([("iso_code", Value::str("NL"))]),
        )]),
    );
    w
}

/// ASN-style file: IPv4-only tree, 24-bit records.
fn asn_db() -> Writer {
    let mut w = Writer::new("GeoLite2-ASN", 4, 24);
    w.insert("81.2.64.0/18", &asn(20_712, "Andrews & Arnold Ltd"));
    w.insert("89.160.20.0/22", &asn(29_518, "Bredband2 AB"));
    w.insert("1.0.0.0/24", &asn(13_335, "CLOUDFLARENET"));
    w
}

/// ipinfo-style combined file: flat `country` string and `asn` "AS<n>"
/// string, IPv6 tree, 32-bit records.
fn combined_db() -> Writer {
    let mut w = Writer::new("ipinfo country_asn.mmdb", 6, 32);
    for (net, cc, asn) in [
        ("8.8.8.0/24", "US", "AS15169"),
        ("2001:4860::/32", "US", "AS15169"),
        ("81.2.69.0/24", "FR", "AS1"),
    ] {
        w.insert(
            net,
            &Value::map([
                ("as_name", Value::str("Example")),
                ("asn", Value::str(asn)),
                ("continent", Value::str("NA")),
                ("country", Value::str(cc)),
                ("country_name", Value::str("Example")),
            ]),
        );
    }
    // A numeric `asn`, as a uint64: read through the lenient path.
    w.insert(
        "9.9.9.0/24",
        &Value::map([("asn", Value::U64(19_281)), ("country", Value::str("ch"))]),
    );
    w
}

struct Files {
    _dir: tempfile::TempDir,
    city: PathBuf,
    asn: PathBuf,
    combined: PathBuf,
}

fn write_files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("GeoLite2-City.mmdb");
    let asn = dir.path().join("GeoLite2-ASN.mmdb");
    let combined = dir.path().join("country_asn.mmdb");
    std::fs::write(&city, city_db().to_bytes()).unwrap();
    std::fs::write(&asn, asn_db().to_bytes()).unwrap();
    std::fs::write(&combined, combined_db().to_bytes()).unwrap();
    Files {
        _dir: dir,
        city,
        asn,
        combined,
    }
}

fn geo(country: Option<&str>, asn: Option<u32>) -> Geo {
    Geo {
        country: country.map(|c| {
            let b = c.as_bytes();
            [b[0], b[1]]
        }),
        asn,
    }
}

#[test]
fn writer_output_is_read_by_the_maxminddb_crate() {
    let bytes = city_db().to_bytes();
    let r = maxminddb::Reader::from_source(bytes).unwrap();
    r.verify().unwrap();
    let m = r.metadata();
    assert_eq!(m.binary_format_major_version, 2);
    assert_eq!(m.database_type, "GeoLite2-City");
    assert_eq!(m.ip_version, 6);
    assert_eq!(m.record_size, 28);
    assert_eq!(m.build_epoch, 1_700_000_000);

    let res = r.lookup(ip("81.2.69.142")).unwrap();
    assert_eq!(res.network().unwrap().to_string(), "81.2.69.0/24");
    let c: geoip2::City = res.decode().unwrap().unwrap();
    assert_eq!(c.country.iso_code, Some("GB"));
    assert_eq!(c.country.geoname_id, Some(2_635_167));
    assert_eq!(c.country.names.english, Some("United Kingdom"));
    assert_eq!(c.country.is_in_european_union, Some(false));
    assert_eq!(c.location.latitude, Some(51.5));
    assert_eq!(c.location.longitude, Some(-0.13));
    assert_eq!(c.continent.code, Some("EU"));
    assert_eq!(c.subdivisions[0].iso_code, Some("ENG"));

    // Longest prefix: the /24 split out of the /16 after it.
    let res = r.lookup(ip("89.160.20.5")).unwrap();
    assert_eq!(res.network().unwrap().to_string(), "89.160.20.0/24");
    let c: geoip2::Country = res.decode().unwrap().unwrap();
    assert_eq!(c.country.iso_code, Some("DE"));
    assert_eq!(c.country.is_in_european_union, Some(true));
    let res = r.lookup(ip("89.160.21.5")).unwrap();
    assert_eq!(res.network().unwrap().to_string(), "89.160.21.0/24");
    let c: geoip2::Country = res.decode().unwrap().unwrap();
    assert_eq!(c.country.iso_code, Some("SE"));

    let res = r.lookup(ip("2a02:8010:1::1")).unwrap();
    assert_eq!(res.network().unwrap().to_string(), "2a02:8010::/32");
    let c: geoip2::Country = res.decode().unwrap().unwrap();
    assert_eq!(c.country.iso_code, Some("GB"));

    assert!(!r.lookup(ip("8.8.8.8")).unwrap().has_data());
    // The reader itself does return the private range's record.
    let c: geoip2::Country = r.lookup(ip("10.1.2.3")).unwrap().decode().unwrap().unwrap();
    assert_eq!(c.country.iso_code, Some("US"));

    let r = maxminddb::Reader::from_source(asn_db().to_bytes()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.metadata().ip_version, 4);
    assert_eq!(r.metadata().record_size, 24);
    let res = r.lookup(ip("81.2.69.142")).unwrap();
    assert_eq!(res.network().unwrap().to_string(), "81.2.64.0/18");
    let a: geoip2::Asn = res.decode().unwrap().unwrap();
    assert_eq!(a.autonomous_system_number, Some(20_712));
    assert_eq!(
        a.autonomous_system_organization,
        Some("Andrews & Arnold Ltd")
    );

    let r = maxminddb::Reader::from_source(combined_db().to_bytes()).unwrap();
    r.verify().unwrap();
    assert_eq!(r.metadata().record_size, 32);
    let res = r.lookup(ip("2001:4860:4860::8888")).unwrap();
    let asn: Option<&str> = res.decode_path(&maxminddb::path!["asn"]).unwrap();
    assert_eq!(asn, Some("AS15169"));
}

#[test]
fn geo_db_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GeoDb>();
}

#[test]
fn country_and_asn_files_together_give_the_inserted_values() {
    let f = write_files();
    let db = GeoDb::open(&[f.city.clone(), f.asn.clone()]).unwrap();
    let files: Vec<_> = db
        .files()
        .map(|i| {
            (
                i.database_type.as_str(),
                i.ip_version,
                i.has_country,
                i.has_asn,
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("GeoLite2-City", 6, true, false),
            ("GeoLite2-ASN", 4, false, true)
        ]
    );

    assert_eq!(db.lookup(ip("81.2.69.142")), geo(Some("GB"), Some(20_712)));
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(
        db.lookup(ip("::ffff:81.2.69.142")),
        geo(Some("GB"), Some(20_712))
    );
    // In the ASN /18 but outside the country /24.
    assert_eq!(db.lookup(ip("81.2.70.1")), geo(None, Some(20_712)));
    assert_eq!(db.lookup(ip("89.160.20.5")), geo(Some("DE"), Some(29_518)));
    assert_eq!(db.lookup(ip("89.160.21.5")), geo(Some("SE"), Some(29_518)));
    assert_eq!(db.lookup(ip("89.160.24.5")), geo(Some("SE"), None));
    assert_eq!(db.lookup(ip("1.0.0.1")), geo(None, Some(13_335)));
    // IPv6: country file has it; the IPv4-only ASN file is skipped.
    assert_eq!(db.lookup(ip("2a02:8010:1::1")), geo(Some("GB"), None));
    // Registered country when there is no country.
    assert_eq!(db.lookup(ip("185.0.3.4")), geo(Some("NL"), None));
    assert_eq!(db.lookup(ip("185.0.3.4")).country_code(), Some("NL"));
}

#[test]
fn unknown_addresses_give_nothing() {
    let f = write_files();
    let db = GeoDb::open(&[f.city.clone(), f.asn.clone()]).unwrap();
    assert_eq!(db.lookup(ip("8.8.8.8")), Geo::default());
    assert_eq!(db.lookup(ip("2600::1")), Geo::default());
    assert_eq!(db.lookup(ip("255.255.255.254")), Geo::default());
}

#[test]
fn private_ranges_give_nothing_even_when_the_file_has_them() {
    let f = write_files();
    let db = GeoDb::open(std::slice::from_ref(&f.city)).unwrap();
    assert_eq!(db.lookup(ip("10.1.2.3")), Geo::default());
    assert_eq!(db.lookup(ip("fd00::1")), Geo::default());
    assert_eq!(db.lookup(ip("::ffff:10.1.2.3")), Geo::default());
}

#[test]
fn combined_file_with_string_country_and_asn_is_read() {
    let f = write_files();
    let db = GeoDb::open(std::slice::from_ref(&f.combined)).unwrap();
    let info = db.files().next().unwrap();
    assert!(info.has_country && info.has_asn);
    assert_eq!(db.lookup(ip("8.8.8.8")), geo(Some("US"), Some(15_169)));
    assert_eq!(
        db.lookup(ip("2001:4860:4860::8888")),
        geo(Some("US"), Some(15_169))
    );
    // Lower-case code upper-cased; uint64 AS number.
    assert_eq!(db.lookup(ip("9.9.9.9")), geo(Some("CH"), Some(19_281)));
    assert_eq!(db.lookup(ip("9.9.10.9")), Geo::default());
}

#[test]
fn first_file_wins_per_field() {
    let f = write_files();
    // City says GB for 81.2.69.0/24, the combined file FR / AS1.
    let db = GeoDb::open(&[f.city.clone(), f.combined.clone(), f.asn.clone()]).unwrap();
    assert_eq!(db.lookup(ip("81.2.69.1")), geo(Some("GB"), Some(1)));
    let db = GeoDb::open(&[f.combined.clone(), f.city.clone()]).unwrap();
    assert_eq!(db.lookup(ip("81.2.69.1")), geo(Some("FR"), Some(1)));
}

fn open_bytes(bytes: &[u8]) -> Result<GeoDb, GeoError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mmdb");
    std::fs::write(&p, bytes).unwrap();
    GeoDb::open(&[p])
}

#[test]
fn truncated_file_is_an_error_on_open() {
    let bytes = city_db().to_bytes();
    for cut in [0, 1, 16, bytes.len() / 2, bytes.len() - 20, bytes.len() - 1] {
        let err = open_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, GeoError::Invalid { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("download it again"), "{err}");
    }
}

#[test]
fn corrupt_file_is_an_error_on_open() {
    // Not an MMDB at all.
    let err = open_bytes(b"this is not a maxmind database").unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err}");

    // Root node's left record pointing far past the data section (24-bit
    // records: the first three bytes). Only a full verification finds it.
    let mut bytes = asn_db().to_bytes();
    bytes[..3].copy_from_slice(&[0xff, 0xff, 0xfe]);
    let err = open_bytes(&bytes).unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err}");

    // Record size the format does not have.
    let mut bytes = asn_db().to_bytes();
    let key = b"record_size";
    let at = bytes.windows(key.len()).rposition(|w| w == key).unwrap();
    // uint16 control byte (size 1) then the value 24.
    assert_eq!(bytes[at + key.len()..at + key.len() + 2], [0xa1, 24]);
    bytes[at + key.len() + 1] = 25;
    let err = open_bytes(&bytes).unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err}");

    // Corrupt data: a string record's length made to run past the end.
    let mut bytes = asn_db().to_bytes();
    let org = b"CLOUDFLARENET";
    let at = bytes.windows(org.len()).position(|w| w == org).unwrap();
    assert_eq!(bytes[at - 1], 0x40 | org.len() as u8);
    bytes[at - 1] = 0x5f; // utf8, three-byte extended size
    let err = open_bytes(&bytes).unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err}");
}

#[test]
fn missing_file_and_no_files_are_errors() {
    let err = GeoDb::open(&[PathBuf::from("/nonexistent/GeoLite2-ASN.mmdb")]).unwrap_err();
    assert!(matches!(err, GeoError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/GeoLite2-ASN.mmdb"),
        "{err}"
    );
    assert!(matches!(GeoDb::open(&[]).unwrap_err(), GeoError::NoFiles));
}

#[test]
fn file_over_one_gib_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.mmdb");
    // Sparse: takes no disk space, and must not be read.
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_DB_BYTES + 1).unwrap();
    drop(f);
    let err = GeoDb::open(&[p]).unwrap_err();
    match err {
        GeoError::TooLarge { size, limit, .. } => {
            assert_eq!(size, (1 << 30) + 1);
            assert_eq!(limit, 1 << 30);
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}
