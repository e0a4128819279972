//! The portal side of the flow path: the spool processor that turns sealed
//! "flows" batches into per-tenant segments, and the periodic compaction and
//! retention of those segments.
//!
//! Ingest (`service::ingest_batch`) only makes a batch durable and
//! acknowledges it; this module does the heavy part later, off the request
//! path. A batch counts as processed only when its rows are in a committed
//! segment (`rampart_flowstore` records the segment and marks the batches in
//! one transaction), so a crash anywhere means the batch is processed again,
//! never lost, and never counted twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_flow::codec;
use rampart_flow::FlowRecord;
use rampart_flowstore::geo::GeoDb;
use rampart_flowstore::{Country, DataKey, FlowRow, FlowStore};
use rampart_proto::controls::{self, DataControls};
use rampart_store::{BatchRow, DeviceId, TenantId};
use tokio::sync::Notify;

use crate::service::{Portal, Result, ServiceError};

/// Batches fetched per round of the processor.
const BATCHES_PER_ROUND: u32 = 256;
/// Rows gathered for one tenant before a segment is written: larger
/// segments compress better and keep the number of files down.
const ROWS_PER_SEGMENT: usize = 500_000;
/// A batch may hold at most this many records (the agent sends 10,000).
const MAX_RECORDS_PER_BATCH: usize = 100_000;

/// The flow half of the portal: storage, enrichment and the processor's
/// wake-up.
pub struct Flows {
    pub store: FlowStore,
    pub geo: Option<Arc<GeoDb>>,
    /// Rung by ingest when a flows batch lands, so data shows up in queries
    /// within moments rather than at the next poll of the spool.
    pub wake: Notify,
}

impl Flows {
    /// The flowstore's key ring of a tenant (all active data key versions).
    pub fn data_key(key: &DataKey) -> DataKey {
        key.clone()
    }
}

/// What one round of the processor did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Processed {
    pub batches: usize,
    pub rows: usize,
    /// Batches that could not be opened or decoded: they are marked
    /// processed (with nothing stored) so they never block the queue, and
    /// counted in the metrics.
    pub rejected: usize,
}

/// Processes the spool until it holds no unprocessed flows batch.
pub async fn drain(p: &Portal) -> Result<Processed> {
    let mut total = Processed::default();
    loop {
        let round = process_round(p).await?;
        let done = round.batches == 0;
        total.batches += round.batches;
        total.rows += round.rows;
        total.rejected += round.rejected;
        if done {
            return Ok(total);
        }
    }
}

async fn process_round(p: &Portal) -> Result<Processed> {
    let queue = p
        .store
        .unprocessed_batches("flows", BATCHES_PER_ROUND)
        .await?;
    let mut by_tenant: HashMap<TenantId, Vec<BatchRow>> = HashMap::new();
    for (tenant, row) in queue {
        by_tenant.entry(tenant).or_default().push(row);
    }
    let mut out = Processed::default();
    for (tenant, batches) in by_tenant {
        let secrets = p.secrets(tenant).await?;
        let key = Flows::data_key(&secrets.data_key);
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for b in batches {
            out.batches += 1;
            match read_batch(p, tenant, &b).await {
                Ok(records) => {
                    let before = rows.len();
                    rows.extend(records.into_iter().map(|flow| FlowRow {
                        flow,
                        device: b.device_id.0,
                        src_country: Country::UNKNOWN,
                        dst_country: Country::UNKNOWN,
                        src_asn: 0,
                        dst_asn: 0,
                    }));
                    p.metrics
                        .flows_ingested
                        .inc_by((rows.len() - before) as u64);
                }
                Err(e) => {
                    out.rejected += 1;
                    p.metrics.flow_batches_rejected.inc();
                    tracing::warn!(tenant = %tenant, device = %b.device_id, batch = %b.batch_id, error = %e, "flows batch rejected");
                }
            }
            ids.push((b.device_id, b.batch_id));
            if rows.len() >= ROWS_PER_SEGMENT {
                out.rows += commit(p, tenant, &key, &mut ids, &mut rows).await?;
            }
        }
        out.rows += commit(p, tenant, &key, &mut ids, &mut rows).await?;
    }
    Ok(out)
}

/// Enriches and appends `rows` as segments, marking `ids` processed.
async fn commit(
    p: &Portal,
    tenant: TenantId,
    key: &DataKey,
    ids: &mut Vec<(DeviceId, uuid::Uuid)>,
    rows: &mut Vec<FlowRow>,
) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut rows = std::mem::take(rows);
    let n = rows.len();
    if let Some(geo) = p.flows.geo.clone() {
        rows = tokio::task::spawn_blocking(move || {
            enrich(&geo, &mut rows);
            rows
        })
        .await
        .map_err(|e| ServiceError::Invalid(format!("enrichment task failed: {e}")))?;
    }
    p.flows
        .store
        .append(tenant, key, ids, rows)
        .await
        .map_err(|e| ServiceError::Invalid(format!("writing flow segment: {e}")))?;
    ids.clear();
    Ok(n)
}

fn enrich(geo: &GeoDb, rows: &mut [FlowRow]) {
    for r in rows {
        let s = geo.lookup(r.flow.src_addr);
        let d = geo.lookup(r.flow.dst_addr);
        r.src_country = s.country.map(Country).unwrap_or(Country::UNKNOWN);
        r.dst_country = d.country.map(Country).unwrap_or(Country::UNKNOWN);
        r.src_asn = s.asn.unwrap_or(0);
        r.dst_asn = d.asn.unwrap_or(0);
    }
}

/// Reads, opens and decodes one spooled flows batch.
pub(crate) async fn read_batch(
    p: &Portal,
    tenant: TenantId,
    b: &BatchRow,
) -> Result<Vec<FlowRecord>> {
    let plain = p.open_spooled(tenant, b).await?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        codec::decode(&plain, MAX_RECORDS_PER_BATCH, &mut out)
            .map_err(|e| ServiceError::Invalid(format!("flows batch: {e}")))?;
        Ok(out)
    })
    .await
    .map_err(|e| ServiceError::Invalid(format!("decode task failed: {e}")))?
}

/// The processor and housekeeping loop, started by [`crate::run`].
pub async fn jobs(p: Arc<Portal>) {
    let mut last_housekeeping = tokio::time::Instant::now();
    loop {
        // A short fallback period covers batches spooled by another replica.
        let _ = tokio::time::timeout(Duration::from_secs(2), p.flows.wake.notified()).await;
        match drain(&p).await {
            Ok(r) if r.batches > 0 => {
                tracing::debug!(
                    batches = r.batches,
                    rows = r.rows,
                    rejected = r.rejected,
                    "flows processed"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "flow spool processing failed; will retry"),
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(60) {
            last_housekeeping = tokio::time::Instant::now();
            if let Err(e) = housekeeping(&p, crate::service::now_ms()).await {
                tracing::warn!(error = %e, "flow compaction failed; will retry");
            }
        }
    }
}

/// Compacts closed hours (retention is the lifecycle job's).
pub async fn housekeeping(p: &Portal, now_ms: i64) -> Result<()> {
    for t in p.store.list_tenants().await? {
        if matches!(t.lifecycle, rampart_store::Lifecycle::Deleted { .. }) {
            continue;
        }
        // A tenant whose keys were destroyed has nothing left to compact,
        // and must not stop the others' housekeeping.
        let secrets = match p.secrets(t.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e, "flow housekeeping skipped");
                continue;
            }
        };
        let key = Flows::data_key(&secrets.data_key);
        p.flows
            .store
            .compact(t.id, &key, now_ms)
            .await
            .map_err(|e| ServiceError::Invalid(format!("compacting flows: {e}")))?;
    }
    Ok(())
}

/// Where a tenant's current edge data controls are kept (tenant settings).
const CONTROLS_SETTING: &str = "data_controls";
/// Controls must reach devices that are offline for a while: they are
/// queued with the longest instruction lifetime, and re-queued to every
/// device that enrolls later.
const CONTROLS_TTL_SECS: i64 = 30 * 86_400;

/// The tenant's current edge data controls (the default masks nothing).
pub async fn data_controls(p: &Portal, tenant: TenantId) -> Result<DataControls> {
    match p.store.tenant_setting(tenant, CONTROLS_SETTING).await? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ServiceError::Invalid(format!("stored data controls: {e}"))),
        None => Ok(DataControls::default()),
    }
}

/// Validates and stores new controls with the next version, and queues them
/// as a signed instruction to every active device. Returns the stored
/// controls and how many devices they were queued for. Recorded as
/// `data_controls.set` (and the instruction as `instruction.queue`).
pub async fn set_data_controls(
    p: &Portal,
    actor: &crate::audit::Actor,
    tenant: TenantId,
    mut controls: DataControls,
) -> Result<(DataControls, usize)> {
    controls.version = data_controls(p, tenant).await?.version + 1;
    controls
        .validate()
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let value =
        serde_json::to_value(&controls).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    p.store
        .set_tenant_setting(tenant, CONTROLS_SETTING, &value)
        .await?;
    let devices: Vec<DeviceId> = p
        .store
        .list_devices(tenant)
        .await?
        .into_iter()
        .filter(|d| d.status == rampart_proto::api::DeviceStatus::Active.as_str())
        .map(|d| d.id)
        .collect();
    let rows = p
        .queue_instructions(
            actor,
            tenant,
            &devices,
            controls::INSTRUCTION_KIND,
            value,
            Some(CONTROLS_TTL_SECS),
        )
        .await?;
    let detail = serde_json::json!({"version": controls.version, "queued": rows.len()});
    crate::audit::record(
        p,
        Some(tenant),
        actor,
        "data_controls.set",
        "data_controls",
        detail,
    )
    .await?;
    Ok((controls, rows.len()))
}

/// Queues the tenant's current controls for a newly enrolled device, so it
/// masks from its first batch on, like the devices enrolled before it.
pub async fn send_controls_to(p: &Portal, tenant: TenantId, device: DeviceId) -> Result<()> {
    let Some(value) = p.store.tenant_setting(tenant, CONTROLS_SETTING).await? else {
        return Ok(());
    };
    p.queue_instructions(
        &crate::audit::Actor::Portal,
        tenant,
        &[device],
        controls::INSTRUCTION_KIND,
        value,
        Some(CONTROLS_TTL_SECS),
    )
    .await?;
    Ok(())
}
