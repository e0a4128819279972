//! JSON bodies of the device API, shared so agent and portal cannot disagree.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::SignedInstruction;

/// Size limit for any JSON body on the device API.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// Domain separation for the proof of possession in an enrollment request.
pub const ENROLL_PROOF_CONTEXT: &[u8] = b"rampart-enroll-v1\0";

/// `POST /api/v1/enroll`: the agent presents its token secret and its new
/// public key, and proves it holds the private half.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// The secret part of the enrollment token.
    pub secret: String,
    /// Base64 Ed25519 public key of the device.
    pub device_public_key: String,
    /// Base64 signature by the device key over
    /// `ENROLL_PROOF_CONTEXT || secret || device_public_key`.
    pub proof: String,
    pub hostname: String,
    pub agent_version: String,
}

impl EnrollRequest {
    pub fn proof_input(secret: &str, device_public_key: &str) -> Vec<u8> {
        [
            ENROLL_PROOF_CONTEXT,
            secret.as_bytes(),
            b"\0",
            device_public_key.as_bytes(),
        ]
        .concat()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeviceStatus {
    /// Enrolled with a token that needs approval; an admin must approve it.
    Pending,
    Active,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DeviceStatus::Pending,
            DeviceStatus::Active,
            DeviceStatus::Revoked,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub tenant_id: Uuid,
    pub device_id: Uuid,
    pub status: DeviceStatus,
    /// Base64 Ed25519 key that signs this tenant's instructions.
    pub instruction_key: String,
    /// Base64 X25519 HPKE key that this tenant's uploads are sealed to.
    pub upload_key: String,
    /// Seconds the portal holds a long poll open.
    pub poll_wait_secs: u64,
}

/// `GET /api/v1/device/poll`: instructions above the agent's last seq.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResponse {
    pub instructions: Vec<SignedInstruction>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AckStatus {
    /// Ran and succeeded.
    Ok,
    /// Ran and failed; `result` says why.
    Failed,
}

/// `POST /api/v1/device/instructions/{seq}/ack`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckRequest {
    pub status: AckStatus,
    pub result: serde_json::Value,
}

/// `POST /api/v1/device/refusals`: the agent refused an instruction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusalReport {
    /// Machine code, e.g. `bad_signature`, `replayed`, `expired`.
    pub code: String,
    pub message: String,
    /// Sequence number the refused instruction claimed, if readable.
    pub seq: Option<u64>,
}

/// The payload of a `health` batch: the agent's heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub agent_version: String,
    pub uptime_secs: u64,
    /// Unix seconds when the agent made this heartbeat.
    pub sent_at: i64,
    pub outbox_batches: u64,
    pub outbox_bytes: u64,
    pub outbox_dropped_batches: u64,
    pub outbox_dropped_bytes: u64,
    pub last_error: Option<String>,
    /// Unix seconds when this agent process started its run loop: a restart
    /// shows as a new value (0 from agents older than remote actions).
    #[serde(default)]
    pub started_at: i64,
}

/// `POST /api/v1/device/batches` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAck {
    pub batch_id: Uuid,
    /// False when the batch id had been ingested before; it was not stored again.
    pub stored: bool,
}

/// The one error shape of every API response.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine code, e.g. `not_found`, `token_expired`.
    pub code: String,
    /// Lowercase, says what to do.
    pub message: String,
    pub request_id: String,
    /// For errors in an expression (a flow filter): the 1-based column,
    /// in characters, where parsing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// For a refused document: the JSON path (from `$`) of what is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}
