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
    /// Cancellation and deletion, apart from `status` (suspension), so a
    /// tenant reactivated inside its window comes back as it was.
    pub lifecycle: Lifecycle,
    /// The region whose deployment holds the tenant (config `region`).
    pub region: String,
}

impl Tenant {
    /// Served: neither cancelled nor deleted (it may still be suspended).
    pub fn is_live(&self) -> bool {
        self.lifecycle == Lifecycle::Live
    }
}

/// Where a tenant is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Lifecycle {
    #[default]
    Live,
    /// Access stopped at `at` (unix seconds); its keys and data are
    /// destroyed at `delete_after` unless it is reactivated before.
    Cancelled { at: i64, delete_after: i64 },
    /// Keys and data destroyed at `at`; the row stays for the audit log.
    Deleted { at: i64 },
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
    /// The user who minted it (`None`: the CLI); offboarding the user
    /// revokes it.
    pub created_by: Option<crate::users::UserId>,
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
    /// The tenant's plan allows this many devices (pending and active),
    /// and it has them all.
    DeviceLimit(u32),
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

/// Which table of the flow store a segment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentLevel {
    /// Flow records as received.
    Raw,
    /// 1-minute rollups.
    M1,
    /// 1-hour rollups.
    H1,
    /// 1-day rollups, merged from a day's 1-hour rollups.
    D1,
}

impl SegmentLevel {
    pub const ALL: [SegmentLevel; 4] = [
        SegmentLevel::Raw,
        SegmentLevel::M1,
        SegmentLevel::H1,
        SegmentLevel::D1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SegmentLevel::Raw => "raw",
            SegmentLevel::M1 => "m1",
            SegmentLevel::H1 => "h1",
            SegmentLevel::D1 => "d1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// One row of the flow segment index: where an encrypted Parquet file of a
/// tenant's flows (or of their rollups) lives and what it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSegment {
    pub id: Uuid,
    pub level: SegmentLevel,
    /// Hours since the epoch (`start_ms / 3_600_000`): a segment holds the
    /// flows, or buckets, of exactly one hour; a `D1` segment names the
    /// first hour of its day.
    pub partition_hour: i64,
    /// Half-open range `[start_ms, end_ms)` of the flow starts (raw) or
    /// bucket starts plus the bucket width (rollups) it covers, in ms.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Flow records (raw) or rollup rows it holds.
    pub rows: u64,
    /// Size of the stored blob.
    pub bytes: u64,
    pub blob_key: String,
    /// A rollup that kept only its top keys for some bucket and dimension:
    /// answers computed from it may be approximate.
    pub cut: bool,
    /// Written by compaction: the merged raw or m1 segment of a closed hour,
    /// its h1 rollup, or a d1 rollup. An uncompacted m1 segment in an hour
    /// that has an h1 one arrived after the compaction and is not counted
    /// in it.
    pub compacted: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// Where a batch stands in the flow spool processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchState {
    /// No such batch in this tenant.
    Unknown,
    /// Recorded, not yet processed.
    Pending,
    /// Its rows are in a committed segment (or it was rejected).
    Processed,
}

/// One change to the flow segment index, applied in one transaction, so a
/// crash leaves either all of it or none of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentCommit<'a> {
    pub insert: &'a [FlowSegment],
    /// Ids of segments to remove (compaction's sources).
    pub delete: &'a [Uuid],
    /// Batches (device, batch id) to mark processed.
    pub processed: &'a [(DeviceId, Uuid)],
    /// Unix seconds, recorded as the batches' `processed_at`.
    pub now: i64,
}

/// A tenant's flow retention: queries see `visible_days`, the disk keeps
/// `stored_days` (a little more, so a plan change does not lose data at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRetention {
    pub visible_days: u32,
    pub stored_days: u32,
}

impl Default for FlowRetention {
    fn default() -> Self {
        FlowRetention {
            visible_days: 30,
            stored_days: 32,
        }
    }
}

/// A plan: how long a tenant's data is visible and kept, how many devices
/// it may enroll and which features it may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub visible_days: u32,
    pub stored_days: u32,
    /// `None`: no limit.
    pub max_devices: Option<u32>,
    pub features: Vec<String>,
    pub updated_at: i64,
}

/// A tenant's plan and what it overrides of it (`None`: the plan's value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPlan {
    pub plan: String,
    pub visible_days: Option<u32>,
    pub stored_days: Option<u32>,
    pub max_devices: Option<u32>,
    pub features: Option<Vec<String>>,
}

/// The name of the plan every tenant without one is on; it cannot be deleted.
pub const DEFAULT_PLAN: &str = "standard";

/// A tenant's plan with its overrides applied: what is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePlan {
    pub plan: String,
    pub visible_days: u32,
    pub stored_days: u32,
    pub max_devices: Option<u32>,
    pub features: Vec<String>,
}

impl EffectivePlan {
    pub fn resolve(plan: &Plan, t: &TenantPlan) -> EffectivePlan {
        EffectivePlan {
            plan: plan.name.clone(),
            visible_days: t.visible_days.unwrap_or(plan.visible_days),
            stored_days: t.stored_days.unwrap_or(plan.stored_days),
            max_devices: t.max_devices.or(plan.max_devices),
            features: t.features.clone().unwrap_or_else(|| plan.features.clone()),
        }
    }
    pub fn has_feature(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }
    pub fn flow_retention(&self) -> FlowRetention {
        FlowRetention {
            visible_days: self.visible_days,
            stored_days: self.stored_days,
        }
    }
}

/// What one retention pass removed for a tenant, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub alarms: u64,
    pub alarm_history: u64,
    pub alarm_deliveries: u64,
    pub device_events: u64,
    pub instructions: u64,
    pub batches: u64,
    /// Reports whose period ended before the cutoff.
    pub reports: u64,
}

/// Spool frames whose work is done: a batch of `kind` (`None`: any) may
/// lose its spooled frame once processed (when `processed`) and detected
/// (when `detected`).
#[derive(Clone, Copy, Debug)]
pub struct SpoolRule<'a> {
    pub kind: Option<&'a str>,
    pub processed: bool,
    pub detected: bool,
}

/// Where an alarm stands. `Active → Acknowledged → Resolved`, and any of
/// them → `Archived` (out of the default lists, kept for the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Active,
    Acknowledged,
    Resolved,
    Archived,
}

impl AlarmState {
    pub const ALL: [AlarmState; 4] = [
        AlarmState::Active,
        AlarmState::Acknowledged,
        AlarmState::Resolved,
        AlarmState::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Active => "active",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Resolved => "resolved",
            AlarmState::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Open alarms take new occurrences of their dedupe key; closed ones
    /// never reopen (a new occurrence makes a new alarm).
    pub fn is_open(self) -> bool {
        matches!(self, AlarmState::Active | AlarmState::Acknowledged)
    }
}

/// One alarm. Kind and severity are the alarm engine's names, kept as text:
/// the store knows nothing of what they mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmRow {
    pub id: Uuid,
    pub device_id: Option<DeviceId>,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub dedupe_key: String,
    pub state: AlarmState,
    pub assignee: Option<String>,
    /// Unix ms.
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    /// JSON array of the most recent evidence items.
    pub evidence: serde_json::Value,
    pub flow_filter: Option<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

/// An occurrence to record: bumps the open alarm with the same dedupe key
/// seen within `window_ms`, or creates a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmOccurrence {
    /// Id for the alarm if a new one is made (the caller derives it, so a
    /// retried commit makes the same alarm).
    pub new_id: Uuid,
    pub device_id: Option<DeviceId>,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub dedupe_key: String,
    /// Unix ms.
    pub at: i64,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    pub evidence: serde_json::Value,
    pub flow_filter: Option<String>,
    pub window_ms: i64,
    /// Matched a mute rule: recorded (and logged as muted in its `created`
    /// history line) but not notified.
    pub muted: bool,
}

/// One detection step, applied in one transaction: the occurrences, the
/// detector state after them, and the batches they came from, so a crash
/// or a retry can neither lose an alarm nor raise it twice.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlarmCommit<'a> {
    pub occurrences: &'a [AlarmOccurrence],
    /// Replaces the tenant's detector state when given.
    pub detector_state: Option<&'a [u8]>,
    /// Batches (device, batch id) to mark detected.
    pub detected: &'a [(DeviceId, Uuid)],
    /// Evidence items kept per alarm (the newest).
    pub max_evidence: usize,
    /// Unix seconds.
    pub now: i64,
}

/// What a commit did to each occurrence, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmOutcome {
    Created(Uuid),
    Bumped(Uuid),
}

/// Filters for listing alarms; `None` matches anything. Archived alarms
/// are listed only when `state` asks for them.
#[derive(Clone, Debug, Default)]
pub struct AlarmFilter {
    pub state: Option<AlarmState>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub device_id: Option<DeviceId>,
    /// Unix ms, on `last_seen`: `[from, to)`.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Keyset cursor: alarms strictly before (last_seen, id) in the
    /// newest-first order.
    pub before: Option<(i64, Uuid)>,
    pub limit: u32,
}

/// A change to an alarm made by a person or the portal.
#[derive(Clone, Debug, PartialEq)]
pub enum AlarmUpdate {
    State(AlarmState),
    Assign(Option<String>),
    Note(String),
}

/// One line of an alarm's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    pub id: i64,
    pub alarm_id: Uuid,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    /// `created`, `bumped`, `state`, `assigned`, `note`.
    pub action: String,
    pub detail: serde_json::Value,
}

/// A mute or allow rule; `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmRuleRow {
    pub id: Uuid,
    pub action: String,
    pub kind: Option<String>,
    pub host: Option<String>,
    pub network: Option<String>,
    pub port: Option<u16>,
    /// Unix ms; `None` never expires.
    pub expires_at: Option<i64>,
    pub comment: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookRow {
    pub id: Uuid,
    pub url: String,
    #[serde(skip)]
    pub secret_wrapped: Vec<u8>,
    pub min_severity: String,
    /// Empty: every kind.
    pub kinds: Vec<String>,
    pub created_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Where a notification goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryChannel {
    Webhook,
    Email,
}

impl DeliveryChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryChannel::Webhook => "webhook",
            DeliveryChannel::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Webhook, Self::Email]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One notification of one alarm event (or one digest) to one target,
/// retried until delivered or dead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub channel: DeliveryChannel,
    /// The webhook id; for email, the tenant's email route id.
    pub target_id: Uuid,
    /// The alarm it announces (a digest: the newest alarm in it).
    pub alarm_id: Uuid,
    /// The [`AlarmEvent::id`] it announces (a digest: the newest event in
    /// it): one delivery per (target, event).
    pub event_id: i64,
    /// The exact body sent (and, for webhooks, signed) every attempt.
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One entry of the audit log, as stored. The whole portal has one chain:
/// each entry's `prev_hash` is the `hash` of the entry before it (by `seq`),
/// and `hash` is [`crate::audit::entry_hash`] of the other fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// 1, 2, 3, ... across the whole portal, without gaps.
    pub seq: u64,
    /// `None`: an operator or portal-wide entry.
    pub tenant_id: Option<TenantId>,
    /// Unix seconds.
    pub at: i64,
    /// `operator:<token name>`, `tenant:<token name>`, `cli`, `device:<id>`,
    /// `portal`, `stripe`, `user:<user id>` (a tenant user: never its
    /// email, which is sealed) or `msp:<email>`.
    pub actor: String,
    /// e.g. `tenant.create`, `api_token.create`, `export.flows`.
    pub action: String,
    /// What was acted on, e.g. `tenant:acme`, `device:<id>`.
    pub target: String,
    /// JSON text, exactly as stored and hashed (re-serializing a parsed
    /// value could reorder keys and break the hash).
    pub detail: String,
    /// 32 bytes; the first entry's is all zeros. Kept as stored (not as an
    /// array) so a damaged column is reported by verification, not lost.
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// An entry to append: the store assigns `seq` and the hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// The newest entry's seq and hash, kept apart from the log (in
/// `portal_meta`) and moved in the same transaction as each append: a log
/// whose newest rows were removed no longer reaches its anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: Vec<u8>,
}

/// What the billing provider told us about a tenant. Only these fields are
/// kept: of a card, its brand and last 4 digits, nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingRow {
    pub tenant_id: TenantId,
    pub customer_id: String,
    pub email: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub plan: Option<String>,
    /// The provider's subscription status (`active`, `past_due`, ...).
    pub status: Option<String>,
    /// Creation time of the event that set `plan` and `status` (unix s).
    pub status_at: Option<i64>,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A subscription change carried by a billing event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// `None` keeps the stored plan.
    pub plan: Option<String>,
    pub status: String,
    /// Set the tenant to this status in the same transaction (only if the
    /// change is applied, i.e. not older than the stored one).
    pub tenant_status: Option<TenantStatus>,
}

/// One billing event to apply. `None` fields keep what is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingUpdate {
    /// The provider's event id: applied at most once.
    pub event_id: String,
    /// Creation time of the event (unix seconds).
    pub event_at: i64,
    pub customer_id: String,
    pub email: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub subscription: Option<SubscriptionChange>,
    pub now: i64,
}

/// What applying a billing event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillingOutcome {
    /// Stored; `tenant_status` says whether the tenant's status was set.
    Applied {
        row: BillingRow,
        tenant_status: Option<TenantStatus>,
    },
    /// Stored, except its subscription change, which is older than the
    /// one stored (events arrive out of order).
    Stale { row: BillingRow },
    /// This event id was applied before: nothing changed.
    Duplicate,
}

/// One version of a tenant's data key, as stored: the key wrapped by the
/// tenant's KEK, or `None` once retired (its row stays as the record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRow {
    pub version: u32,
    pub key_wrapped: Option<Vec<u8>>,
    /// Unix seconds.
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// How much of a tenant's data is under each key version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// (version, rows with a value sealed under it as their oldest), across
    /// every sealed table.
    pub fields: Vec<(u32, u64)>,
    /// (version, flow segments verified to be sealed under it).
    pub segments: Vec<(u32, u64)>,
    /// Segments not yet looked at by the re-encryption job.
    pub segments_unverified: u64,
}

/// A stored report's clear columns (migration 0014): what it covers and
/// when it was made and mailed. Its body is sealed and read on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportInfo {
    pub id: Uuid,
    /// `daily` or `weekly`.
    pub kind: String,
    /// Unix seconds: the period is `[period_start, period_end)`.
    pub period_start: i64,
    pub period_end: i64,
    pub created_at: i64,
    /// When its email went out; `None` until then (or without recipients).
    pub emailed_at: Option<i64>,
}
