//! The published JSON Schema of a configuration document, checked by the
//! reference validator (Python `jsonschema`, Draft 2020-12): it is a valid
//! schema, and it accepts and refuses a table of documents as written here
//! from the document format, as our own parser does. What a schema cannot
//! express (a CIDR's host bits, ranges of times) is only our parser's.

use rampart_proto::config::{schema, ConfigDoc, Layer};
use serde_json::{json, Value};

/// `(document, valid)`.
fn table() -> Vec<(Value, bool)> {
    vec![
        (json!({}), true),
        (json!({"log_level": "debug"}), true),
        (
            json!({"collectors": {"netflow_listen": ["0.0.0.0:2055"], "eve": ["/var/log/suricata/eve.json"]},
                   "upload": {"batch_max_records": 5000, "batch_max_age_ms": 1000}}),
            true,
        ),
        (
            json!({"rules": [
                {"action": "block", "cidr": "198.51.100.0/24", "direction": "outbound"},
                {"action": "allow", "port": "443", "protocol": "tcp",
                 "schedule": {"days": ["mon", "fri"], "start": "08:00", "end": "18:00"}},
                {"action": "block", "list": "bad-hosts"}
            ]}),
            true,
        ),
        (
            json!({"checks": [{"name": "intranet", "kind": "http", "target": "https://intranet.example/", "interval_secs": 60}]}),
            true,
        ),
        (
            json!({"masking": {"drop_fields": ["src_port"], "collect_addresses": false}}),
            true,
        ),
        (
            json!({"health": {"tcp": ["192.0.2.10:443"], "timeout_ms": 500}}),
            true,
        ),
        (json!({"log_level": "loud"}), false),
        (json!({"colectors": {}}), false),
        (json!({"collectors": {"listen": []}}), false),
        (
            json!({"rules": [{"action": "drop", "ip": "192.0.2.1"}]}),
            false,
        ),
        (json!({"rules": [{"ip": "192.0.2.1"}]}), false),
        (json!({"upload": {"batch_max_records": -1}}), false),
        (json!({"checks": [{"name": "a", "kind": "tcp"}]}), false),
        (json!({"masking": {"drop_fields": ["colour"]}}), false),
        (json!({"log_level": 3}), false),
    ]
}

fn python() -> String {
    std::env::var("RAMPART_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_published_schema_agrees_with_the_reference_validator_and_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schema.json");
    let docs_file = dir.path().join("docs.json");
    std::fs::write(&schema_file, schema().to_string()).unwrap();
    let docs: Vec<Value> = table().into_iter().map(|(d, _)| d).collect();
    std::fs::write(&docs_file, Value::Array(docs).to_string()).unwrap();
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
print(json.dumps([v.is_valid(d) for d in json.load(open(sys.argv[2]))]))
"#;
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&schema_file)
        .arg(&docs_file)
        .output()
        .expect("python3 runs: scripts/test installs it with jsonschema (RAMPART_TEST_PYTHON)");
    assert!(
        out.status.success(),
        "the reference validator failed (install jsonschema: scripts/test does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    for ((doc, valid), by_schema) in table().into_iter().zip(verdicts) {
        assert_eq!(by_schema, valid, "jsonschema on {doc}");
        let ours = ConfigDoc::parse(&doc, Layer::Tenant);
        assert_eq!(ours.is_ok(), valid, "our parser on {doc}: {ours:?}");
    }
}
