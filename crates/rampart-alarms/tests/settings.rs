//! Settings: defaults, validation, serde, and the CIDR type.

use std::net::IpAddr;

use rampart_alarms::settings::{Cidr, DetectorSettings};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidr_contains_table() {
    // (network, address, inside?) by the definitions of RFC 4632 (IPv4
    // prefixes) and RFC 4291 §2.3 (IPv6 prefixes).
    let table = [
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "11.0.0.0", false),
        ("172.16.0.0/12", "172.31.255.255", true),
        ("172.16.0.0/12", "172.32.0.0", false),
        ("192.168.1.128/25", "192.168.1.127", false),
        ("192.168.1.128/25", "192.168.1.128", true),
        ("100.64.0.0/10", "100.127.255.255", true),
        ("100.64.0.0/10", "100.128.0.0", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "2001:db8::1", false),
        ("192.0.2.7", "192.0.2.7", true),
        ("192.0.2.7/32", "192.0.2.8", false),
        ("10.1.2.3/8", "10.200.0.1", true),
        ("fc00::/7", "fdff:ffff::1", true),
        ("fc00::/7", "fe00::1", false),
        ("fc00::/7", "10.0.0.1", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::", false),
        ("::/0", "::1", true),
        ("2001:db8::1/128", "2001:db8::1", true),
        ("2001:db8::1", "2001:db8::2", false),
        // IPv4-mapped IPv6 addresses are their IPv4 address.
        ("10.0.0.0/8", "::ffff:10.1.1.1", true),
    ];
    for (net, a, want) in table {
        let c: Cidr = net.parse().unwrap_or_else(|e| panic!("{net}: {e}"));
        assert_eq!(c.contains(ip(a)), want, "{net} contains {a}");
    }
    assert_eq!(
        "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
        "2001:db8::1/128"
    );
    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "host",
        "::ffff:10.0.0.0/104",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
    }
    let c: Cidr = serde_json::from_str("\"fc00::/7\"").unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"fc00::/7\"");
}

#[test]
fn defaults_validate_and_round_trip() {
    let d = DetectorSettings::default();
    d.validate().unwrap();
    assert_eq!(
        d.internal_networks,
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7"
        ]
    );
    let v = serde_json::to_value(&d).unwrap();
    let back: DetectorSettings = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
    // A stored config names only what it changes.
    let partial: DetectorSettings =
        serde_json::from_str(r#"{"port_scan":{"min_ports":30},"blocked_countries":["KP"]}"#)
            .unwrap();
    assert_eq!(partial.port_scan.min_ports, 30);
    assert_eq!(partial.port_scan.window_ms, d.port_scan.window_ms);
    assert_eq!(partial.host_scan, d.host_scan);
    partial.validate().unwrap();
    // Typos are errors, at any level.
    assert!(serde_json::from_str::<DetectorSettings>(r#"{"port_scna":{}}"#).is_err());
    assert!(serde_json::from_str::<DetectorSettings>(r#"{"port_scan":{"min_port":3}}"#).is_err());
}

/// A field name and a way to make it invalid.
type Breakage = (&'static str, fn(&mut DetectorSettings));

#[test]
fn validation_names_the_field() {
    let table: Vec<Breakage> = vec![
        ("internal_networks[1]", |s| {
            s.internal_networks[1] = "172.16/12".into()
        }),
        ("blocked_networks[0]", |s| {
            s.blocked_networks = vec!["nope".into()]
        }),
        ("blocked_countries[0]", |s| {
            s.blocked_countries = vec!["ru".into()]
        }),
        ("blocked_countries[1]", |s| {
            s.blocked_countries = vec!["RU".into(), "ZZ".into()]
        }),
        ("blocked_countries[0]", |s| {
            s.blocked_countries = vec!["RUS".into()]
        }),
        ("blocked_asns[0]", |s| s.blocked_asns = vec![0]),
        ("new_host.learn_ms", |s| s.new_host.learn_ms = -1),
        ("port_scan.window_ms", |s| s.port_scan.window_ms = 0),
        ("port_scan.min_ports", |s| s.port_scan.min_ports = 1),
        ("host_scan.min_hosts", |s| s.host_scan.min_hosts = 5000),
        ("host_scan.max_probe_packets", |s| {
            s.host_scan.max_probe_packets = 0
        }),
        ("upload.alpha", |s| s.upload.alpha = 0.0),
        ("upload.alpha", |s| s.upload.alpha = f64::NAN),
        ("upload.k_sigma", |s| s.upload.k_sigma = f64::INFINITY),
        ("upload.bucket_ms", |s| s.upload.bucket_ms = 8 * 86_400_000),
        ("upload.warmup_buckets", |s| s.upload.warmup_buckets = 0),
        ("large_flow.min_bytes", |s| s.large_flow.min_bytes = 0),
        ("output.repeat_after_ms", |s| s.output.repeat_after_ms = -5),
        ("limits.max_known_hosts", |s| {
            s.limits.max_known_hosts = 2_000_000
        }),
        ("limits.max_scan_trackers", |s| {
            s.limits.max_scan_trackers = 0
        }),
    ];
    for (field, break_it) in table {
        let mut s = DetectorSettings::default();
        break_it(&mut s);
        let e = s.validate().expect_err(field);
        assert!(e.contains(field), "{field}: {e}");
        assert!(!e.ends_with('.') && e.contains(':'), "{e}");
        assert!(rampart_alarms::detect::FlowDetectors::new(&s).is_err());
    }
}
