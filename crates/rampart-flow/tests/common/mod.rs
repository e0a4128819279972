//! Helpers shared by the integration tests: test data paths and ISO-8601
//! timestamps (the Logstash expectations) to ms since the Unix epoch.
#![allow(dead_code)]

use std::net::IpAddr;

pub const GOFLOW2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/netflow_goflow2"
);
pub const LOGSTASH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/netflow_logstash"
);

/// The exporter address every test datagram is attributed to.
pub fn exporter() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

/// A fixed "now" for template expiry; unrelated to the captures' times.
pub const NOW_MS: u64 = 1_700_000_000_000;

pub fn read(dir: &str, name: &str) -> Vec<u8> {
    let path = format!("{dir}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

pub fn logstash_dat(name: &str) -> Vec<u8> {
    read(&format!("{LOGSTASH}/dat"), name)
}

/// Every .dat file of the Logstash captures, sorted by name.
pub fn all_logstash_dats() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(format!("{LOGSTASH}/dat"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    v.sort();
    v.into_iter()
        .map(|n| {
            let b = logstash_dat(&n);
            (n, b)
        })
        .collect()
}

/// "2016-07-21T13:51:42.254Z" (or without the fraction) to ms since the
/// epoch. Only what the spec uses: UTC, 0 or 3 fraction digits.
pub fn iso_ms(s: &str) -> u64 {
    let s = s.strip_suffix('Z').expect("timestamp ends in Z");
    let (date, time) = s.split_once('T').unwrap();
    let mut d = date.split('-').map(|x| x.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().unwrap());
    let (hh, mm, ss) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 * 1000 + ss * 1000 + ms).unwrap()
}

#[test]
fn iso_ms_is_right() {
    assert_eq!(iso_ms("1970-01-01T00:00:00.000Z"), 0);
    assert_eq!(iso_ms("1970-01-01T00:08:33.000Z"), 513_000);
    // date -u -d 2016-07-21T13:51:42Z +%s = 1469109102
    assert_eq!(iso_ms("2016-07-21T13:51:42.254Z"), 1_469_109_102_254);
    assert_eq!(iso_ms("2000-03-01T00:00:00Z"), 951_868_800_000);
}
