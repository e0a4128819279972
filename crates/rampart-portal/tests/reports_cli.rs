//! `rampart reports generate` through the real binary on a real data dir:
//! it makes the period's report once, and refuses a second one and bad
//! input with a message and a non-zero exit.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::{portal_bin, run};
use serde_json::Value;

fn rampart(dir: &Path, args: &[&str]) -> (bool, String, String) {
    run(Command::new(portal_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RAMPART_LOG", "warn"))
}

#[test]
fn the_cli_makes_a_periods_report_once_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, _, err) = rampart(
        d,
        &[
            "tenant",
            "create",
            "--name",
            "acme",
            "--domain",
            "acme.rampart.test",
        ],
    );
    assert!(ok, "tenant create: {err}");
    let args = [
        "--json",
        "reports",
        "generate",
        "--tenant",
        "acme",
        "--kind",
        "weekly",
        "--period-start",
        "2026-11-23",
    ];
    let (ok, out, err) = rampart(d, &args);
    assert!(ok, "reports generate: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["id"].is_string(), "{v}");
    let r = &v["report"];
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["kind"], "weekly");
    assert_eq!(r["period_start"], "2026-11-23T00:00:00Z");
    assert_eq!(r["period_end"], "2026-11-30T00:00:00Z");
    assert_eq!(r["devices"], serde_json::json!([]));

    let (ok, _, err) = rampart(d, &args);
    assert!(!ok, "a second report of the period was made");
    assert!(err.contains("has a report already"), "{err}");
    for (bad, says) in [
        (
            ["--kind", "monthly", "--period-start", "2026-11-23"],
            "kind must be daily or weekly",
        ),
        (
            ["--kind", "weekly", "--period-start", "2026-11-24"],
            "starts on a monday",
        ),
        (
            ["--kind", "daily", "--period-start", "23/11/2026"],
            "period_start must be a date",
        ),
    ] {
        let mut a = vec!["reports", "generate", "--tenant", "acme"];
        a.extend_from_slice(&bad);
        let (ok, _, err) = rampart(d, &a);
        assert!(!ok, "{bad:?} was accepted");
        assert!(err.contains(says), "{bad:?}: {err}");
    }
    let (ok, _, err) = rampart(
        d,
        &[
            "reports", "generate", "--tenant", "nobody", "--kind", "daily",
        ],
    );
    assert!(!ok && err.contains("nobody"), "{err}");
}
