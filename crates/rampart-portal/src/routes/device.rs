//! The device API: enrollment, long-poll check-in, acks, refusal reports and
//! sealed batch uploads. Everything but enrollment is signed by the device.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use rampart_proto::api::{
    AckRequest, AckStatus, BatchAck, EnrollRequest, EnrollResponse, ErrorBody, PollResponse,
    RefusalReport,
};
use rampart_proto::controls::PseudonymKey;
use rampart_proto::envelope::SignedInstruction;
use rampart_store::DeviceEvent;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{AppState, DeviceRequest, DeviceUpload, Json, Path, TenantHost};
use crate::metrics::CodeLabels;
use crate::service::now;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(poll))
        .routes(routes!(ack))
        .routes(routes!(report_refusal))
        .routes(routes!(upload_batch))
        .routes(routes!(pseudonym_key))
}

/// The tenant's key for pseudonymising addresses at the edge (HMAC-SHA256).
/// It is derived from the tenant's KEK, never stored by the portal, and
/// given only to the tenant's own devices over the pinned channel, so
/// pseudonyms are stable across a tenant's agents and meaningless elsewhere.
#[utoipa::path(get, path = "/api/v1/device/pseudonym-key", tag = "device", security(("device" = [])),
    responses((status = 200, body = PseudonymKey), (status = 401, body = ErrorBody)))]
async fn pseudonym_key(
    State(p): State<AppState>,
    req: DeviceRequest,
) -> Result<axum::Json<PseudonymKey>, ApiError> {
    use base64::Engine;
    let s = p.secrets(req.tenant.id).await?;
    Ok(axum::Json(PseudonymKey {
        key_id: crate::crypto::PSEUDONYM_KEY_ID.into(),
        key_b64: base64::engine::general_purpose::STANDARD.encode(*s.pseudonym_key),
    }))
}

/// Enroll a device with an enrollment token's secret.
#[utoipa::path(post, path = "/api/v1/enroll", tag = "device",
    request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "token unknown, expired, used up or revoked")))]
async fn enroll(
    State(p): State<AppState>,
    TenantHost(tenant): TenantHost,
    Json(req): Json<EnrollRequest>,
) -> Result<(StatusCode, axum::Json<EnrollResponse>), ApiError> {
    if req.secret.len() > 128 || req.device_public_key.len() > 64 || req.proof.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid",
            "secret, key or proof is too long",
        ));
    }
    let resp = p.enroll(&tenant, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(resp)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// The highest sequence number the agent has applied.
    #[serde(default)]
    pub after_seq: u64,
    /// Longest wait in seconds; capped by the portal's `poll_wait_secs`.
    pub wait_secs: Option<u64>,
}

/// Decrements the long-poll gauge however the poll ends (even if the client
/// goes away and the future is dropped).
struct PollGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Long poll: answers at once when instructions are pending, else holds
/// the request until one is queued or the wait ends (then empty).
#[utoipa::path(get, path = "/api/v1/device/poll", tag = "device", security(("device" = [])),
    params(PollQuery),
    responses((status = 200, body = PollResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn poll(
    State(p): State<AppState>,
    req: DeviceRequest,
) -> Result<axum::Json<PollResponse>, ApiError> {
    let q: PollQuery = req.query()?;
    let (tenant, device) = (req.tenant.id, req.device_id());
    let wait = q
        .wait_secs
        .unwrap_or(p.config.poll_wait_secs)
        .min(p.config.poll_wait_secs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let notify = p.waker.subscribe(device);
    p.metrics.long_polls.inc();
    let _guard = PollGuard(&p.metrics.long_polls);
    let mut first = true;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Register before reading, so a wake between the read and the wait
        // is not lost.
        notified.as_mut().enable();
        if !first {
            // Woken: the device may have been revoked, or its tenant
            // cancelled, meanwhile.
            let dev = p.store.get_device(tenant, device).await?;
            if dev.is_none_or(|d| d.status != "active") {
                return Err(ApiError::forbidden(
                    "device_revoked",
                    "device is revoked: enroll it again with a new token",
                ));
            }
            if !p
                .store
                .get_tenant(tenant)
                .await?
                .is_some_and(|t| t.is_live())
            {
                return Err(ApiError::forbidden(
                    "tenant_cancelled",
                    "this tenant is cancelled: contact your provider to reactivate it",
                ));
            }
        }
        first = false;
        let rows = p
            .store
            .pending_instructions(tenant, device, q.after_seq, now(), 100)
            .await?;
        if !rows.is_empty() {
            for r in &rows {
                p.deliveries.record(tenant, device, r.seq);
            }
            let instructions = rows
                .into_iter()
                .map(|r| serde_json::from_value::<SignedInstruction>(r.signed))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::internal)?;
            return Ok(axum::Json(PollResponse { instructions }));
        }
        // Woken by a queue or a revocation on this portal. Instructions queued
        // elsewhere (another replica) are picked up by the next poll, at
        // most one wait later; scale-out adds a shared wake-up.
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(axum::Json(PollResponse::default())),
        }
    }
}

/// Report the result of an instruction.
#[utoipa::path(post, path = "/api/v1/device/instructions/{seq}/ack", tag = "device", security(("device" = [])),
    params(("seq" = u64, Path, description = "Instruction sequence number")),
    request_body = AckRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the instruction already has an outcome")))]
async fn ack(
    State(p): State<AppState>,
    Path(seq): Path<String>,
    req: DeviceRequest,
) -> Result<StatusCode, ApiError> {
    // Parsed after the signature verified: unauthenticated callers learn nothing.
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_path", "seq must be a whole number"))?;
    let body: AckRequest = req.json()?;
    let status = match body.status {
        AckStatus::Ok => "ok",
        AckStatus::Failed => "failed",
    };
    if p.store
        .finish_instruction(
            req.tenant.id,
            req.device_id(),
            seq,
            status,
            &body.result,
            now(),
        )
        .await?
    {
        p.metrics.instructions_acked.inc();
        let kind = p
            .store
            .get_instruction(req.tenant.id, req.device_id(), seq)
            .await?
            .map(|i| i.kind);
        if kind.as_deref() == Some(rampart_proto::config::INSTRUCTION_KIND) {
            // The outcome is stored either way; if drift is not updated,
            // the config job sends the configuration again and the agent's
            // repeated ack (it already runs it) records it.
            let ok = matches!(body.status, AckStatus::Ok);
            if let Err(e) =
                crate::devconf::on_ack(&p, req.tenant.id, req.device_id(), seq, ok, &body.result)
                    .await
            {
                tracing::warn!(device = %req.device_id(), seq, error = %e, "configuration result not recorded");
            }
        }
        tracing::info!(tenant = %req.tenant.name, device = %req.device_id(), seq, status, "instruction acked");
        Ok(StatusCode::NO_CONTENT)
    } else if p
        .store
        .get_instruction(req.tenant.id, req.device_id(), seq)
        .await?
        .is_some()
    {
        Err(ApiError::conflict(format!(
            "instruction {seq} already has an outcome: results are final"
        )))
    } else {
        Err(ApiError::not_found(format!(
            "instruction {seq} of this device"
        )))
    }
}

/// Report an instruction the agent refused (tampered, replayed, expired,
/// misaddressed). It is logged, counted and kept as a device event.
#[utoipa::path(post, path = "/api/v1/device/refusals", tag = "device", security(("device" = [])),
    request_body = RefusalReport,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn report_refusal(
    State(p): State<AppState>,
    req: DeviceRequest,
) -> Result<StatusCode, ApiError> {
    let r: RefusalReport = req.json()?;
    if r.code.is_empty()
        || r.code.len() > 32
        || !r.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid",
            "code must be 1 to 32 characters of a-z and _",
        ));
    }
    let message: String = r.message.chars().take(1024).collect();
    tracing::warn!(tenant = %req.tenant.name, device = %req.device_id(), code = %r.code, seq = ?r.seq, %message, "agent refused an instruction");
    p.metrics
        .refused_instructions
        .get_or_create(&CodeLabels {
            code: r.code.clone(),
        })
        .inc();
    let detail = serde_json::json!({"code": r.code, "message": message, "seq": r.seq});
    p.store
        .add_device_event(
            req.tenant.id,
            &DeviceEvent {
                device_id: req.device_id(),
                at: now(),
                kind: "refusal".into(),
                detail: detail.clone(),
            },
        )
        .await?;
    let refused = rampart_alarms::source::instruction_refused(
        req.device_id().0,
        r.seq.unwrap_or(0),
        &r.code,
        crate::service::now_ms(),
    );
    crate::alarms::raise(&p, req.tenant.id, vec![refused]).await?;
    if let Some(seq) = r.seq {
        // Outcomes are final in the store: a replayed seq that already ran
        // keeps its real result; only a pending instruction becomes refused.
        p.store
            .finish_instruction(
                req.tenant.id,
                req.device_id(),
                seq,
                "refused",
                &detail,
                now(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Upload one sealed batch frame (application/octet-stream, at most 16 MiB).
/// Stored durably before the answer; a repeated batch id answers
/// `stored: false` and is not ingested again.
#[utoipa::path(post, path = "/api/v1/device/batches", tag = "device", security(("device" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = BatchAck), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload_batch(
    State(p): State<AppState>,
    DeviceUpload(req): DeviceUpload,
) -> Result<axum::Json<BatchAck>, ApiError> {
    let ack = p
        .ingest_batch(req.tenant.id, req.device_id(), &req.body)
        .await?;
    Ok(axum::Json(ack))
}
