//! Prometheus metrics, served on the separate metrics listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/api/v1/devices/{id}`), never the raw path, so
    /// the label set stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    pub kind: String,
    /// `stored` or `duplicate`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `webhook` or `email`.
    pub channel: String,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// What was counted: `rows` or `segments` re-sealed; `alarms`,
    /// `spool_frames`, ... removed by the lifecycle job.
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub ingest_batches: Family<BatchLabels, Counter>,
    pub ingest_bytes: Counter,
    pub refused_instructions: Family<CodeLabels, Counter>,
    pub instructions_queued: Counter,
    pub instructions_acked: Counter,
    pub devices_online: Gauge,
    pub long_polls: Gauge,
    pub flows_ingested: Counter,
    pub flow_batches_rejected: Counter,
    pub alarms_raised: Counter,
    pub alarms_suppressed: Counter,
    pub alarm_batches_rejected: Counter,
    pub alarm_flows_evaluated: Counter,
    pub alarm_detection_lag: Gauge,
    pub alarm_deliveries: Family<DeliveryLabels, Counter>,
    /// Unix seconds of the lifecycle job's last complete pass.
    pub lifecycle_last_run: Gauge,
    /// What retention, the spool cleaner and tenant deletion removed, by kind.
    pub lifecycle_removed: Family<KindLabels, Counter>,
    pub tenants_deleted: Counter,
    pub key_rotations: Counter,
    pub key_objects_resealed: Family<KindLabels, Counter>,
    pub key_rotation_last_run: Gauge,
    /// Reports made (by the job or on request) and report mails that failed.
    pub reports_generated: Counter,
    pub report_mail_failures: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let m = Metrics {
            http_requests: Family::default(),
            ingest_batches: Family::default(),
            ingest_bytes: Counter::default(),
            refused_instructions: Family::default(),
            instructions_queued: Counter::default(),
            instructions_acked: Counter::default(),
            devices_online: Gauge::default(),
            long_polls: Gauge::default(),
            flows_ingested: Counter::default(),
            flow_batches_rejected: Counter::default(),
            alarms_raised: Counter::default(),
            alarms_suppressed: Counter::default(),
            alarm_batches_rejected: Counter::default(),
            alarm_flows_evaluated: Counter::default(),
            alarm_detection_lag: Gauge::default(),
            alarm_deliveries: Family::default(),
            lifecycle_last_run: Gauge::default(),
            lifecycle_removed: Family::default(),
            tenants_deleted: Counter::default(),
            key_rotations: Counter::default(),
            key_objects_resealed: Family::default(),
            key_rotation_last_run: Gauge::default(),
            reports_generated: Counter::default(),
            report_mail_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "key_rotations",
            "Tenant data key versions added",
            m.key_rotations.clone(),
        );
        registry.register(
            "key_objects_resealed",
            "Rows and flow segment files re-encrypted under a newer data key",
            m.key_objects_resealed.clone(),
        );
        registry.register(
            "key_rotation_last_run",
            "Unix time of the last pass of the key rotation job",
            m.key_rotation_last_run.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served",
            m.http_requests.clone(),
        );
        registry.register(
            "ingest_batches",
            "Sealed batches received",
            m.ingest_batches.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Sealed batch bytes stored",
            m.ingest_bytes.clone(),
        );
        registry.register(
            "refused_instructions",
            "Instructions agents refused (tampered, replayed, expired, misaddressed)",
            m.refused_instructions.clone(),
        );
        registry.register(
            "instructions_queued",
            "Instructions signed and queued",
            m.instructions_queued.clone(),
        );
        registry.register(
            "instructions_acked",
            "Instruction results received",
            m.instructions_acked.clone(),
        );
        registry.register(
            "devices_online",
            "Active devices seen within the offline threshold",
            m.devices_online.clone(),
        );
        registry.register(
            "long_polls",
            "Device long polls being held",
            m.long_polls.clone(),
        );
        registry.register(
            "flows_ingested",
            "Flow records written to segments",
            m.flows_ingested.clone(),
        );
        registry.register(
            "flow_batches_rejected",
            "Spooled flows batches that could not be opened or decoded (skipped)",
            m.flow_batches_rejected.clone(),
        );
        registry.register(
            "alarms_raised",
            "Alarms created (repeats that bump an open alarm are not counted)",
            m.alarms_raised.clone(),
        );
        registry.register(
            "alarms_suppressed",
            "Alarm candidates dropped by a mute or allow rule",
            m.alarms_suppressed.clone(),
        );
        registry.register(
            "alarm_batches_rejected",
            "Spooled batches the detectors could not open or decode (skipped)",
            m.alarm_batches_rejected.clone(),
        );
        registry.register(
            "alarm_flows_evaluated",
            "Flow records run through the flow detectors",
            m.alarm_flows_evaluated.clone(),
        );
        registry.register(
            "alarm_detection_lag_seconds",
            "Age of the oldest batch the detectors have not seen yet",
            m.alarm_detection_lag.clone(),
        );
        registry.register(
            "alarm_deliveries",
            "Alarm notification attempts by channel and outcome (delivered, retry, dead)",
            m.alarm_deliveries.clone(),
        );
        registry.register(
            "lifecycle_last_run_timestamp_seconds",
            "When the lifecycle job (retention, spool cleaner, tenant deletion) last completed a pass",
            m.lifecycle_last_run.clone(),
        );
        registry.register(
            "lifecycle_removed",
            "Rows and blobs removed by retention, the spool cleaner and tenant deletion, by kind",
            m.lifecycle_removed.clone(),
        );
        registry.register(
            "tenants_deleted",
            "Cancelled tenants whose keys and data were destroyed",
            m.tenants_deleted.clone(),
        );
        registry.register(
            "reports_generated",
            "Daily and weekly tenant reports made",
            m.reports_generated.clone(),
        );
        registry.register(
            "report_mail_failures",
            "Report emails the relay did not take (retried for a day)",
            m.report_mail_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn record_batch(&self, kind: &str, stored: bool, bytes: usize) {
        self.ingest_batches
            .get_or_create(&BatchLabels {
                kind: kind.to_string(),
                result: if stored { "stored" } else { "duplicate" }.into(),
            })
            .inc();
        if stored {
            self.ingest_bytes.inc_by(bytes as u64);
        }
    }

    pub fn removed(&self, kind: &str, n: u64) {
        if n > 0 {
            self.lifecycle_removed
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(n);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
