//! Rows of config management (migration 0013): versioned documents per
//! layer, device groups, each device's desired and applied configuration
//! with its history, and staged rollouts.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DeviceId;

/// One version of one layer's document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigDocRow {
    /// `tenant`, `group` or `device`.
    pub layer: String,
    /// Empty for the tenant layer, else the group name or device id.
    pub scope: String,
    pub version: u64,
    pub body: serde_json::Value,
    pub author: String,
    pub comment: String,
    pub created_at: i64,
}

/// What a device should run and what it reported running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceConfigRow {
    pub device_id: DeviceId,
    pub desired_revision: u64,
    pub desired_hash: String,
    /// The `EffectiveConfig` sent, as JSON.
    pub desired_body: serde_json::Value,
    pub desired_seq: Option<u64>,
    pub desired_at: i64,
    pub applied_revision: Option<u64>,
    pub applied_hash: Option<String>,
    pub applied_at: Option<i64>,
    /// `pending`, `applied` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

/// One step in a device's configuration history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigEvent {
    pub at: i64,
    pub revision: u64,
    /// `queued`, `applied`, `failed`, `rolled_back`, `superseded`, `reissued`.
    pub event: String,
    pub detail: serde_json::Value,
}

/// A staged rollout of one group document version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRow {
    pub id: Uuid,
    pub group: String,
    pub from_version: u64,
    pub to_version: u64,
    pub canary_percent: u32,
    pub bake_secs: u32,
    pub canaries: Vec<DeviceId>,
    /// `canary`, `paused`, `done`, `failed` or `aborted`.
    pub state: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RolloutRow {
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "canary" | "paused")
    }
}
