//! What the agent takes from a configuration (`apply_config`): the pure
//! parts of applying one. The orchestration (validate, apply, health check,
//! keep or roll back, ack) is in `run.rs`, which owns the running pieces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rampart_proto::config::{ConfigDoc, EffectiveConfig, Layer};

use crate::pipeline::FlowOptions;

/// Health check timeout per target when the configuration sets none.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes the log filter at run time (`log_level`); the binary passes one
/// built on `tracing_subscriber::reload`. `None` restores the filter the
/// agent started with.
#[derive(Clone)]
pub struct LogControl(pub Arc<SetLogLevel>);

/// Sets the log filter (`None`: the one the agent started with).
pub type SetLogLevel = dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

/// The parsed document of a running configuration (none: the flags alone).
pub fn doc_of(c: Option<&EffectiveConfig>) -> ConfigDoc {
    c.and_then(|c| ConfigDoc::parse(&c.config, Layer::Device).ok())
        .unwrap_or_default()
}

/// The flow options a document asks for, over the ones given by flags:
/// a section the document sets replaces the flag's value.
pub fn flow_options(base: &FlowOptions, doc: &ConfigDoc) -> FlowOptions {
    let mut o = base.clone();
    if let Some(c) = &doc.collectors {
        if let Some(l) = &c.netflow_listen {
            // Validated: every entry parses.
            o.netflow_listen = l.iter().filter_map(|a| a.parse().ok()).collect();
        }
        if let Some(z) = &c.zeek_conn {
            o.zeek_conn = z.iter().map(PathBuf::from).collect();
        }
        if let Some(e) = &c.eve {
            o.eve = e.iter().map(PathBuf::from).collect();
        }
        if let Some(r) = c.default_sampling_rate {
            o.default_sampling_rate = r;
        }
        if let Some(m) = c.max_flows_per_exporter {
            o.max_flows_per_exporter = m;
        }
    }
    if let Some(u) = &doc.upload {
        if let Some(n) = u.batch_max_records {
            o.batch_max_records = n as usize;
        }
        if let Some(ms) = u.batch_max_age_ms {
            o.batch_max_age = Duration::from_millis(u64::from(ms));
        }
    }
    o
}

/// Whether two flow option sets need the collectors restarted.
pub fn collectors_differ(a: &FlowOptions, b: &FlowOptions) -> bool {
    a.netflow_listen != b.netflow_listen
        || a.zeek_conn != b.zeek_conn
        || a.eve != b.eve
        || a.default_sampling_rate != b.default_sampling_rate
        || a.max_flows_per_exporter != b.max_flows_per_exporter
        || a.batch_max_records != b.batch_max_records
        || a.batch_max_age != b.batch_max_age
}

/// Runs the document's health check after it was applied: every listener
/// it names is bound, every TCP target accepts a connection. Returns one
/// line per finding; `Err` when any failed.
pub async fn health_check(
    doc: &ConfigDoc,
    bound: &[SocketAddr],
) -> Result<Vec<String>, Vec<String>> {
    let mut lines = Vec::new();
    let mut ok = true;
    if let Some(l) = doc
        .collectors
        .as_ref()
        .and_then(|c| c.netflow_listen.as_ref())
    {
        for a in l {
            let want: Option<SocketAddr> = a.parse().ok();
            // Port 0 asks for any port: a bound socket on that address counts.
            let found = want.is_some_and(|w| {
                bound
                    .iter()
                    .any(|b| b == &w || (w.port() == 0 && b.ip() == w.ip()))
            });
            ok &= found;
            lines.push(format!(
                "listener {a}: {}",
                if found { "bound" } else { "not bound" }
            ));
        }
    }
    if let Some(h) = &doc.health {
        let timeout = h
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
        for t in h.tcp.iter().flatten() {
            let started = std::time::Instant::now();
            let r = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(t.as_str())).await;
            let line = match r {
                Ok(Ok(_)) => format!("tcp {t}: connected in {} ms", started.elapsed().as_millis()),
                Ok(Err(e)) => {
                    ok = false;
                    format!("tcp {t}: {e}")
                }
                Err(_) => {
                    ok = false;
                    format!("tcp {t}: no answer within {} ms", timeout.as_millis())
                }
            };
            lines.push(line);
        }
    }
    if ok {
        Ok(lines)
    } else {
        Err(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_sections_replace_flag_values() {
        let base = FlowOptions {
            netflow_listen: vec!["127.0.0.1:2055".parse().unwrap()],
            ..FlowOptions::default()
        };
        let doc = ConfigDoc::parse(
            &json!({"collectors": {"netflow_listen": ["127.0.0.1:9995", "[::1]:9996"]}, "upload": {"batch_max_records": 500}}),
            Layer::Device,
        )
        .unwrap();
        let o = flow_options(&base, &doc);
        assert_eq!(
            o.netflow_listen,
            vec![
                "127.0.0.1:9995".parse::<SocketAddr>().unwrap(),
                "[::1]:9996".parse().unwrap()
            ]
        );
        assert_eq!(o.batch_max_records, 500);
        assert!(collectors_differ(&base, &o));
        // No sections: the flags as given.
        let none = flow_options(&base, &ConfigDoc::default());
        assert!(!collectors_differ(&base, &none));
    }

    #[tokio::test]
    async fn health_check_reports_each_target() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let doc = ConfigDoc::parse(
            &json!({"health": {"tcp": [open.local_addr().unwrap().to_string()], "timeout_ms": 1000}}),
            Layer::Device,
        )
        .unwrap();
        let lines = health_check(&doc, &[]).await.unwrap();
        assert!(lines[0].contains("connected"), "{lines:?}");
        let doc = ConfigDoc::parse(
            &json!({"health": {"tcp": [closed.to_string()]}, "collectors": {"netflow_listen": ["127.0.0.1:0"]}}),
            Layer::Device,
        )
        .unwrap();
        let bound: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let lines = health_check(&doc, &[bound]).await.unwrap_err();
        assert_eq!(lines[0], "listener 127.0.0.1:0: bound");
        assert!(lines[1].starts_with(&format!("tcp {closed}:")), "{lines:?}");
    }
}
