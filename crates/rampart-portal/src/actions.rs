//! Remote actions (issue 7): restart an agent, rotate its device key,
//! collect a diagnostics bundle, run a connectivity test. Each is one signed
//! instruction to one device (`rampart_proto::actions` defines the kinds);
//! the outcome is the instruction's result, read like any other.
//!
//! The key rotation has a device route of its own: the agent sends
//! `POST /api/v1/device/key` signed with its current key (checked by the
//! `DeviceRequest` extractor) and carrying a signature by the new key over
//! the tenant, device, new key and the seq of a pending `rotate_device_key`
//! instruction. The portal checks both, then swaps the key in one
//! compare-and-swap on the old key; from then on only the new key verifies.
//!
//! Diagnostics bundles arrive as sealed `diagnostics` batches and stay
//! sealed in the spool; they are opened only when an admin reads one. The
//! spool cleaner's `SPENT` rules name only flows and IDS alerts, so a bundle
//! is kept until the plan's retention removes it.

use rampart_proto::actions::{
    kind_of_action, ConnectivityTest, DeviceKeyView, KeyRotateRequest, CONNECTIVITY_TEST,
    DIAGNOSTICS_BATCH_KIND, ROTATE_DEVICE_KEY,
};
use rampart_proto::keys::VerifyingKey;
use rampart_store::{BatchRow, Device, DeviceId, InstructionRow, TenantId};
use uuid::Uuid;

use crate::audit::{self, Actor};
use crate::service::{now, Portal, Result, ServiceError};

/// Diagnostics bundles listed per device, newest first.
pub const DIAGNOSTICS_LISTED: u32 = 100;

/// An action's parameters as its instruction payload: validated here so a
/// bad request is a 400 now rather than a failed result later.
pub fn action_payload(
    action: &str,
    params: serde_json::Value,
) -> Result<(&'static str, serde_json::Value)> {
    let kind = kind_of_action(action).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if kind == CONNECTIVITY_TEST {
        let test = ConnectivityTest::from_payload(&params)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let payload =
            serde_json::to_value(test).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        return Ok((kind, payload));
    }
    let empty = params.is_null() || params.as_object().is_some_and(|o| o.is_empty());
    if !empty {
        return Err(ServiceError::Invalid(format!(
            "{action} takes no params: leave params out"
        )));
    }
    Ok((kind, serde_json::json!({})))
}

impl Portal {
    /// Validates and queues one remote action for one device.
    pub async fn queue_action(
        &self,
        actor: &Actor,
        tenant: TenantId,
        device: DeviceId,
        action: &str,
        params: serde_json::Value,
        ttl_secs: Option<i64>,
    ) -> Result<InstructionRow> {
        let (kind, payload) = action_payload(action, params)?;
        self.queue_instruction(actor, tenant, device, kind, payload, ttl_secs)
            .await
    }

    /// Replaces `device`'s key with the one `req` proves, for a pending
    /// `rotate_device_key` instruction. The request itself was verified
    /// under the current key by the caller (the `DeviceRequest` extractor).
    pub async fn rotate_device_key(
        &self,
        tenant: TenantId,
        device: &Device,
        req: &KeyRotateRequest,
    ) -> Result<DeviceKeyView> {
        if req.new_public_key.len() > 64 || req.proof.len() > 128 {
            return Err(ServiceError::Invalid(
                "new_public_key or proof is too long: send a base64 ed25519 key and signature"
                    .into(),
            ));
        }
        let new = VerifyingKey::from_b64(&req.new_public_key)
            .map_err(|e| ServiceError::Invalid(format!("new_public_key: {e}")))?;
        let proof = rampart_proto::unb64("proof", &req.proof, 64)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let input =
            KeyRotateRequest::proof_input(tenant.0, device.id.0, &req.new_public_key, req.seq);
        new.verify(&input, &proof).map_err(|_| {
            ServiceError::Invalid(
                "proof does not verify: sign the rotation message with the new key".into(),
            )
        })?;
        let pending = self
            .store
            .get_instruction(tenant, device.id, req.seq)
            .await?
            .is_some_and(|i| {
                i.kind == ROTATE_DEVICE_KEY
                    && matches!(i.status.as_str(), "queued" | "delivered")
                    && i.expires_at > now()
            });
        if !pending {
            return Err(ServiceError::Conflict(format!(
                "instruction {} is not a pending rotate_device_key instruction of this device: ask an admin for a new rotation",
                req.seq
            )));
        }
        let new_bytes = new.to_bytes();
        if device.public_key != new_bytes {
            if !self
                .store
                .replace_device_key(tenant, device.id, &device.public_key, &new_bytes)
                .await?
            {
                return Err(ServiceError::Conflict(
                    "the device key changed meanwhile: settle the key and retry".into(),
                ));
            }
            let detail = serde_json::json!({
                "seq": req.seq,
                "old_public_key": audit::hex(&device.public_key),
                "new_public_key": audit::hex(&new_bytes),
            });
            audit::record(
                self,
                Some(tenant),
                &Actor::Device(device.id),
                "device.key_rotate",
                &format!("device:{}", device.id),
                detail,
            )
            .await?;
            tracing::info!(%tenant, device = %device.id, seq = req.seq, "device key rotated");
        }
        Ok(DeviceKeyView {
            public_key: new.to_b64(),
        })
    }

    /// The diagnostics bundles a device uploaded, newest first.
    pub async fn list_diagnostics(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<BatchRow>> {
        Ok(self
            .store
            .list_device_batches(tenant, device, DIAGNOSTICS_BATCH_KIND, DIAGNOSTICS_LISTED)
            .await?)
    }

    /// Opens one diagnostics bundle (audited: it shows the device's state).
    pub async fn read_diagnostics(
        &self,
        actor: &Actor,
        tenant: TenantId,
        device: DeviceId,
        batch_id: Uuid,
    ) -> Result<serde_json::Value> {
        let b = self
            .store
            .get_batch(tenant, device, batch_id)
            .await?
            .filter(|b| b.kind == DIAGNOSTICS_BATCH_KIND)
            .ok_or_else(|| ServiceError::NotFound(format!("diagnostics bundle {batch_id}")))?;
        let plaintext = self.open_spooled(tenant, &b).await.map_err(|e| match e {
            ServiceError::NotFound(_) => ServiceError::NotFound(format!(
                "diagnostics bundle {batch_id} (removed by retention)"
            )),
            other => other,
        })?;
        let bundle: serde_json::Value = serde_json::from_slice(&plaintext).map_err(|e| {
            ServiceError::Invalid(format!(
                "diagnostics bundle {batch_id} is not json: {e}: collect a new one"
            ))
        })?;
        audit::record(
            self,
            Some(tenant),
            actor,
            "device.diagnostics_read",
            &format!("device:{device}"),
            serde_json::json!({"batch_id": batch_id}),
        )
        .await?;
        Ok(bundle)
    }
}
