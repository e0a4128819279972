//! Helpers for the flow pipeline tests: an enrolled-looking state dir whose
//! tenant upload key is a local HPKE keypair, so the tests can open the
//! sealed batches the pipeline puts in the outbox, exactly as the portal
//! would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_agent::identity::{Identity, StateDir};
use rampart_agent::masking::Controls;
use rampart_agent::outbox::Outbox;
use rampart_agent::pipeline::{FlowCollectors, FlowOptions, FlowStatus, Shipper};
use rampart_flow::{codec, FlowRecord};
use rampart_proto::batch::{self, BatchHeader};
use rampart_proto::keys::HpkeSecretKey;
use uuid::Uuid;

pub const GOFLOW2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/netflow_goflow2"
);
pub const ZEEK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/zeek_conn_log"
);
pub const EVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/suricata_eve"
);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub sd: StateDir,
    pub id: Identity,
    pub sk: HpkeSecretKey,
    pub outbox: Arc<Outbox>,
}

/// A batch taken out of the outbox, opened and decoded.
pub struct Shipped {
    pub header: BatchHeader,
    pub frame: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub records: Vec<FlowRecord>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("state"), None);
        let (sk, pk) = HpkeSecretKey::generate();
        let id = Identity {
            portal_url: "https://portal.example".into(),
            resolve: None,
            pin: "unused".into(),
            tenant_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            instruction_key: "unused".into(),
            upload_key: pk.to_b64(),
            poll_wait_secs: 30,
            enrolled_at: 0,
        };
        sd.save_identity(&id).unwrap();
        let outbox = Arc::new(Outbox::open(&sd.outbox_dir(), 256 * 1024 * 1024).unwrap());
        Env {
            dir,
            sd,
            id,
            sk,
            outbox,
        }
    }

    /// A path in the temp dir (outside the state dir), for tailed logs.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Options for tests: quick polls and short batches.
    pub fn options() -> FlowOptions {
        FlowOptions {
            batch_max_age: Duration::from_millis(200),
            tail_poll: Duration::from_millis(20),
            rcvbuf_bytes: 1024 * 1024,
            ..FlowOptions::default()
        }
    }

    /// Starts the flow threads as `rampart-agent run` does: the controls are
    /// loaded from the state dir first.
    pub fn start(&self, opts: FlowOptions) -> FlowCollectors {
        let controls = Arc::new(Controls::load(&self.sd));
        self.start_with(opts, controls)
    }

    pub fn start_with(&self, opts: FlowOptions, controls: Arc<Controls>) -> FlowCollectors {
        let shipper = Shipper {
            id: self.id.clone(),
            outbox: self.outbox.clone(),
            on_stored: Arc::new(|| {}),
        };
        FlowCollectors::start(&self.sd, shipper, controls, opts).unwrap()
    }

    /// Takes every batch out of the outbox (oldest first), opening each with
    /// the tenant's secret key.
    pub fn drain(&self) -> Vec<Shipped> {
        let mut out = Vec::new();
        while let Some(e) = self.outbox.peek().unwrap() {
            let frame = self.outbox.read(&e).unwrap().unwrap();
            self.outbox.remove(e.batch_id).unwrap();
            let parsed = batch::parse(&frame).unwrap();
            let plaintext = parsed
                .open(&self.sk, self.id.tenant_id, self.id.device_id)
                .unwrap();
            let header = parsed.header.clone();
            let mut records = Vec::new();
            if header.kind == "flows" {
                codec::decode(&plaintext, 1_000_000, &mut records).unwrap();
                assert_eq!(header.items as usize, records.len());
            }
            out.push(Shipped {
                header,
                frame,
                plaintext,
                records,
            });
        }
        out
    }

    /// Every flow record in the outbox, in order (drains it).
    pub fn drain_records(&self) -> Vec<FlowRecord> {
        self.drain().into_iter().flat_map(|s| s.records).collect()
    }
}

/// Polls `cond` every 10 ms for at most `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Flows counted for one exporter (or file label) so far.
pub fn flows_of(status: &FlowStatus, name: &str) -> u64 {
    status.exporters.get(name).map_or(0, |e| e.flows)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub fn append(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}
