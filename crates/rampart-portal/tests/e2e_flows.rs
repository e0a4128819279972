//! The flow path end to end, through the real binaries: exporter datagrams
//! replayed over UDP to a running agent, shipped sealed to a running portal,
//! stored, and queried over the API; checked against nfdump, which decodes
//! the very same datagrams independently (`nfcapd` receives a copy of each).
//!
//! nfdump comes from Debian's `nfdump` package; scripts/test installs it.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Captures from ../shared/testdata/netflow_logstash/dat, in the order an
/// exporter sends them (templates before data), grouped by exporter. Each
/// group is replayed from its own loopback source address, so templates of
/// different exporters never meet.
///
/// Left out: `netflow5.dat`, whose header counts 2 records in a 1,728-byte
/// datagram. logstash (whose spec ships the capture) and we read the 2
/// records the header announces; nfdump 1.7.1 reads 30 from the bytes past
/// them.
const CAPTURES: &[&[&str]] = &[
    &["netflow5_test_microtik.dat"],
    &["netflow9_test_cisco_1941K9.dat"],
    &["netflow9_test_softflowd_tpl_data.dat"],
    &["netflow9_test_valid01.dat"],
    &[
        "netflow9_test_nprobe_tpl.dat",
        "netflow9_test_nprobe_data.dat",
    ],
    &[
        "netflow9_test_streamcore_tpl_data256.dat",
        "netflow9_test_streamcore_tpl_data260.dat",
    ],
    &[
        "ipfix_test_openbsd_pflow_tpl.dat",
        "ipfix_test_openbsd_pflow_data.dat",
    ],
    &[
        "ipfix_test_ixia_tpldata256.dat",
        "ipfix_test_ixia_tpldata271.dat",
    ],
    &[
        "ipfix_test_netscaler_tpl.dat",
        "ipfix_test_netscaler_data.dat",
    ],
    &["ipfix.dat"],
];

fn testdata(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/netflow_logstash/dat")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free udp port")
}

/// One nfdump record: what the comparison needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Rec {
    src: String,
    dst: String,
    /// As nfdump prints it (`type.code` for ICMP).
    src_port: String,
    dst_port: String,
    proto: u8,
    bytes: u64,
    packets: u64,
}

/// Reads nfcapd's files with nfdump, one record per line.
fn nfdump_records(dir: &Path) -> Vec<Rec> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%byt|%pkt"])
        .output()
        .expect("nfdump runs (scripts/test installs Debian's nfdump)");
    assert!(
        out.status.success(),
        "nfdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(f.len(), 7, "unexpected nfdump line {l:?}");
            let proto = match f[4] {
                "TCP" => 6,
                "UDP" => 17,
                "ICMP" => 1,
                "ICMP6" => 58,
                "GRE" => 47,
                "ESP" => 50,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("protocol {other:?}")),
            };
            Rec {
                src: f[0].to_string(),
                dst: f[1].to_string(),
                src_port: f[2].to_string(),
                dst_port: f[3].to_string(),
                proto,
                bytes: f[5].parse().unwrap(),
                packets: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// Top `n` sources by bytes from nfdump's records; ties broken by address so
/// both sides can be compared as lists.
fn top_src_bytes(recs: &[Rec], n: usize) -> Vec<(String, u64)> {
    let mut m: HashMap<&str, u64> = HashMap::new();
    for r in recs {
        *m.entry(&r.src).or_default() += r.bytes;
    }
    let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, b)| (k.to_string(), b)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn replay(targets: &[SocketAddr]) {
    for (i, group) in CAPTURES.iter().enumerate() {
        let src = format!("127.0.2.{}:0", i + 2);
        let sock = UdpSocket::bind(&src).expect("bind a loopback source address");
        for name in group.iter() {
            let d = testdata(name);
            for t in targets {
                sock.send_to(&d, t).expect("send datagram");
            }
            // Loopback does not reorder, but give both receivers time to
            // read templates before the data that needs them.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_captures_replayed_through_agent_match_nfdump_totals_and_top_sources() {
    let portal = PortalProc::start().await;
    let t = portal.create_tenant("flows").await;
    // The captures are years old (some flows even carry 1970 times, as
    // exported): let this tenant see a century.
    let (s, v) = portal
        .call(
            reqwest::Method::PUT,
            "localhost",
            "/api/v1/admin/tenants/flows/flow-plan",
            &portal.operator,
            Some(json!({"visible_days": 36500, "stored_days": 36500})),
        )
        .await;
    assert_eq!(s, 200, "flow plan: {v}");
    let token = portal.enrollment_token(&t, json!({})).await;
    let mut agent = Agent::new();
    let (ok, out) = agent.enroll(&token, portal.addr());
    assert!(ok, "enroll: {out}");
    let agent_port = free_udp_port();
    agent.start_with(&["--netflow-listen", &format!("127.0.0.1:{agent_port}")]);

    let nf_dir = tempfile::tempdir().unwrap();
    let nf_port = free_udp_port();
    let mut nfcapd = Proc::spawn(
        Command::new("nfcapd").arg("-w").arg(nf_dir.path()).args([
            "-b",
            "127.0.0.1",
            "-p",
            &nf_port.to_string(),
            "-t",
            "3600",
        ]),
        "nfcapd",
        nf_dir.path(),
    );
    // Both listen once their UDP sockets are bound: wait for the agent's
    // collector to show in its status, and give nfcapd a moment.
    eventually("the agent's collector", Duration::from_secs(30), || async {
        let s = agent.status();
        s.to_string()
            .contains(&agent_port.to_string())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    replay(&[
        SocketAddr::from(([127, 0, 0, 1], agent_port)),
        SocketAddr::from(([127, 0, 0, 1], nf_port)),
    ]);

    // nfcapd writes its file when it stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &nfcapd.child.id().to_string()])
        .status();
    let _ = nfcapd.child.wait();
    let recs = nfdump_records(nf_dir.path());
    assert!(recs.len() > 100, "nfdump read only {} records", recs.len());
    let want_bytes: u64 = recs.iter().map(|r| r.bytes).sum();
    let want_packets: u64 = recs.iter().map(|r| r.packets).sum();
    let want_top = top_src_bytes(&recs, 10);

    let window = "from=0&to=4102444800000";
    let mut totals = serde_json::Value::Null;
    for _ in 0..600 {
        let (s, v) = portal
            .get(
                &t.domain,
                &format!("/api/v1/flows/totals?{window}"),
                &t.token,
            )
            .await;
        totals = v;
        if s == 200 && totals["records"].as_u64() == Some(recs.len() as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        totals["records"].as_u64(),
        Some(recs.len() as u64),
        "the portal does not hold every flow nfdump read: {totals}\nagent status: {}",
        agent.status()
    );
    assert_eq!(totals["bytes"].as_u64(), Some(want_bytes), "{totals}");
    assert_eq!(totals["packets"].as_u64(), Some(want_packets), "{totals}");
    assert_eq!(totals["approximate"], false);

    let (s, top) = portal
        .get(
            &t.domain,
            &format!("/api/v1/flows/top?dim=src&metric=bytes&n=10&{window}"),
            &t.token,
        )
        .await;
    assert_eq!(s, 200, "{top}");
    let mut got: Vec<(String, u64)> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(got, want_top);

    // A filter in nfdump's language: the portal's answer equals nfdump's own
    // filtered read of the same capture.
    let filter = "proto tcp and dst port 443";
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(nf_dir.path())
        .args(["-q", "-N", "-o", "fmt:%byt", filter])
        .output()
        .unwrap();
    let want_tcp443: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    let (s, v) = portal
        .get(
            &t.domain,
            &format!("/api/v1/flows/totals?{window}&filter=proto%20tcp%20and%20dst%20port%20443"),
            &t.token,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(want_tcp443), "{filter}: {v}");

    // A bad filter is a 400 naming the column.
    let (s, v) = portal
        .get(
            &t.domain,
            &format!("/api/v1/flows/totals?{window}&filter=src%20port%20https"),
            &t.token,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["position"], 10, "{v}");

    // Every flow once through cursor pagination, as CSV and JSON alike.
    let mut seen = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/flows/search?{window}&limit=50");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = portal.get(&t.domain, &path, &t.token).await;
        assert_eq!(s, 200, "{v}");
        seen += v["flows"].as_array().unwrap().len();
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, recs.len());

    // A plan that shows one day hides these years-old flows from every
    // query, though they are still stored; widening it shows them again.
    let plan = |visible: u32| json!({"visible_days": visible, "stored_days": 36500});
    for (visible, want) in [(1, 0), (36500, recs.len() as u64)] {
        let (s, v) = portal
            .call(
                reqwest::Method::PUT,
                "localhost",
                "/api/v1/admin/tenants/flows/flow-plan",
                &portal.operator,
                Some(plan(visible)),
            )
            .await;
        assert_eq!(s, 200, "flow plan: {v}");
        let (s, v) = portal
            .get(
                &t.domain,
                &format!("/api/v1/flows/totals?{window}"),
                &t.token,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["records"].as_u64(),
            Some(want),
            "visible {visible} days: {v}"
        );
    }
}
