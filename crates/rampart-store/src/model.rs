//! Rows the store keeps. Plain data: no behaviour, no IO.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A tenant. Every tenant-scoped store call takes one first.
    TenantId
);
id_type!(DeviceId);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [TenantStatus::Active, TenantStatus::Suspended]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub domain: String,
    pub status: TenantStatus,
    pub created_at: i64,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// A tenant's keys as stored: public halves in the clear, private halves wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantKeys {
    pub kek_wrapped: Vec<u8>,
    pub signing_sk_wrapped: Vec<u8>,
    pub signing_pk: Vec<u8>,
    pub upload_sk_wrapped: Vec<u8>,
    pub upload_pk: Vec<u8>,
    pub tls_cert_pem: String,
    pub tls_key_wrapped: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    /// `None` for operator tokens, which act on the admin API only.
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub token_hash: String,
    pub role: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokenRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    pub labels: Vec<String>,
    pub needs_approval: bool,
    pub revoked_at: Option<i64>,
}

/// Why an enrollment token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRejection {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub tenant_id: TenantId,
    pub public_key: Vec<u8>,
    pub hostname: String,
    pub labels: Vec<String>,
    /// `pending`, `active` or `revoked`.
    pub status: String,
    pub enrolled_at: i64,
    pub enrollment_token_id: Option<Uuid>,
    pub last_seen: Option<i64>,
    /// JSON of the last heartbeat.
    pub health: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionRow {
    pub device_id: DeviceId,
    pub seq: u64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// JSON of the signed instruction, exactly as delivered.
    pub signed: serde_json::Value,
    pub issued_at: i64,
    pub expires_at: i64,
    /// `queued`, `delivered`, `ok`, `failed` or `refused`.
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub delivered_at: Option<i64>,
    pub acked_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub device_id: DeviceId,
    pub at: i64,
    pub kind: String,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRow {
    pub batch_id: Uuid,
    pub device_id: DeviceId,
    pub kind: String,
    pub priority: u8,
    pub items: u32,
    pub bytes: u64,
    pub created_at: i64,
    pub received_at: i64,
    /// Where the sealed frame lives in the blob store.
    pub blob_key: String,
}
