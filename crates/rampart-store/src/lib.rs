//! The Rampart portal's persistence: one [`Store`] trait for metadata and one
//! [`blob::BlobStore`] trait for large objects, each with an embedded backend.
//!
//! Invariants:
//! - every call on tenant data takes the [`TenantId`] first, and every query
//!   filters on it: a caller cannot forget the tenant, because it is the first
//!   argument it has to produce;
//! - the store stores what it is given. It never sees a private key in the
//!   clear: the portal wraps keys before they get here;
//! - tenant content is sealed on write and opened on read through the
//!   [`cipher::FieldCipher`] the portal installs; the store holds no key;
//! - the store knows nothing of HTTP, TLS or the protocol's crypto;
//! - [`suite`] is the one behaviour test every backend passes.

pub mod audit;
pub mod blob;
pub mod cipher;
pub mod configs;
pub mod model;
pub mod sqlite;
mod sqlite_actions;
mod sqlite_alarms;
mod sqlite_audit;
mod sqlite_billing;
mod sqlite_config;
mod sqlite_keys;
mod sqlite_lifecycle;
mod sqlite_reports;
mod sqlite_snapshot;
mod sqlite_targets;
mod sqlite_users;
mod sqlite_vpn;
pub mod suite;
pub mod targets;
pub mod users;
pub mod vpn;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::cipher::FieldCipher;

pub use configs::*;
pub use model::*;
pub use targets::*;
pub use users::*;
pub use vpn::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists: choose another")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost to another writer (two spool processors or
    /// compactors on the same work): nothing was changed.
    #[error("{0} was changed by another writer: retry with fresh state")]
    Raced(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("blob store io error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid blob key {0:?}: use [A-Za-z0-9._-] segments separated by /")]
    BadKey(String),
    /// Sealing or opening tenant content failed (no key, wrong key, a
    /// tampered or moved value).
    #[error("encryption at rest: {0}")]
    Crypto(String),
}

impl StoreError {
    /// The backend is unreachable or saturated, rather than the request wrong:
    /// callers answer 503 with a retry-after, and agents keep their data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            )
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A new tenant with its wrapped keys, created in one transaction.
#[derive(Clone, Debug)]
pub struct NewTenant {
    pub tenant: Tenant,
    pub keys: TenantKeys,
}

/// A device to insert when an enrollment token is redeemed.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub id: DeviceId,
    pub public_key: Vec<u8>,
    pub hostname: String,
    pub now: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- portal-wide metadata (local CA, settings) ---
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Inserts unless the key exists; returns the value now stored, so that
    /// replicas racing to initialise agree on one value.
    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;

    // --- tenants ---
    async fn create_tenant(&self, new: &NewTenant) -> Result<()>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    /// The tenant served at `domain` (compared lowercase). Separate from the
    /// name lookup, so a tenant's name can never shadow another's domain.
    async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>>;
    async fn set_tenant_status(&self, id: TenantId, status: TenantStatus) -> Result<()>;
    async fn tenant_keys(&self, id: TenantId) -> Result<TenantKeys>;

    // --- API tokens (hashed) ---
    async fn create_api_token(&self, token: &ApiToken) -> Result<()>;
    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>>;

    // --- enrollment ---
    async fn create_enrollment_token(
        &self,
        tenant: TenantId,
        token: &EnrollmentTokenRow,
    ) -> Result<()>;
    async fn list_enrollment_tokens(&self, tenant: TenantId) -> Result<Vec<EnrollmentTokenRow>>;
    /// Returns false when no such token exists in this tenant.
    async fn revoke_enrollment_token(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool>;
    /// Atomically checks the token, counts one use and inserts the device
    /// (`pending` if the token needs approval, else `active`).
    async fn redeem_enrollment(
        &self,
        tenant: TenantId,
        secret_hash: &str,
        device: &NewDevice,
    ) -> Result<Result<Device, TokenRejection>>;

    // --- devices ---
    async fn get_device(&self, tenant: TenantId, id: DeviceId) -> Result<Option<Device>>;
    async fn list_devices(&self, tenant: TenantId) -> Result<Vec<Device>>;
    /// Returns false when no such device exists in this tenant.
    async fn set_device_status(&self, tenant: TenantId, id: DeviceId, status: &str)
        -> Result<bool>;
    async fn touch_device(&self, tenant: TenantId, id: DeviceId, now: i64) -> Result<()>;
    async fn set_device_health(
        &self,
        tenant: TenantId,
        id: DeviceId,
        health: &serde_json::Value,
    ) -> Result<()>;
    /// Devices across all tenants seen at or after `since` (for the metric).
    async fn count_devices_seen_since(&self, since: i64) -> Result<u64>;

    // --- instructions ---
    /// Reserves the next sequence number (1, 2, ...) of each device, in one
    /// transaction. Devices not in this tenant are left out of the answer.
    async fn allocate_seqs(
        &self,
        tenant: TenantId,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, u64)>>;
    /// Inserts signed instructions in one transaction.
    async fn insert_instructions(&self, tenant: TenantId, rows: &[InstructionRow]) -> Result<()>;
    /// Unacknowledged, unexpired instructions above `after_seq`, oldest first.
    async fn pending_instructions(
        &self,
        tenant: TenantId,
        device: DeviceId,
        after_seq: u64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<InstructionRow>>;
    /// Marks (device, seq) pairs delivered, in one transaction.
    async fn mark_delivered(
        &self,
        tenant: TenantId,
        delivered: &[(DeviceId, u64)],
        now: i64,
    ) -> Result<()>;
    /// Records the outcome of a queued or delivered instruction; returns false
    /// when there is no such instruction or it already has an outcome
    /// (outcomes are final).
    async fn finish_instruction(
        &self,
        tenant: TenantId,
        device: DeviceId,
        seq: u64,
        status: &str,
        result: &serde_json::Value,
        now: i64,
    ) -> Result<bool>;
    async fn get_instruction(
        &self,
        tenant: TenantId,
        device: DeviceId,
        seq: u64,
    ) -> Result<Option<InstructionRow>>;
    async fn list_instructions(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<InstructionRow>>;

    // --- device events (refusals and other reports) ---
    async fn add_device_event(&self, tenant: TenantId, event: &DeviceEvent) -> Result<()>;
    async fn list_device_events(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Vec<DeviceEvent>>;

    // --- batches ---
    /// Records an ingested batch; false if this device's batch id was seen before.
    async fn record_batch(&self, tenant: TenantId, row: &BatchRow) -> Result<bool>;
    async fn get_batch(
        &self,
        tenant: TenantId,
        device: DeviceId,
        batch_id: Uuid,
    ) -> Result<Option<BatchRow>>;
    async fn list_batches(
        &self,
        tenant: TenantId,
        device: Option<DeviceId>,
        limit: u32,
    ) -> Result<Vec<BatchRow>>;

    // --- flow store ---
    /// Batches of `kind` not yet processed, across ALL tenants, oldest
    /// received first, each with its tenant.
    ///
    /// The one tenant-data call that is not per tenant, on purpose: it is the
    /// work queue of the portal-wide spool processor, which must take the
    /// oldest work whoever owns it (one query, not one per tenant per tick,
    /// and no tenant starved behind another). Everything the processor does
    /// next is per tenant, with the tenant this call returned.
    async fn unprocessed_batches(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, BatchRow)>>;
    /// The state of each batch, in the order asked.
    async fn batch_states(
        &self,
        tenant: TenantId,
        batches: &[(DeviceId, Uuid)],
    ) -> Result<Vec<BatchState>>;
    /// Inserts segment index rows, deletes others and marks batches
    /// processed, all in one transaction. Fails with [`StoreError::Raced`]
    /// and changes nothing when an inserted id exists, a deleted id does
    /// not, or a batch is unknown or already processed: two processors or compactors racing on the same work
    /// cannot both commit it.
    async fn commit_flow_segments(
        &self,
        tenant: TenantId,
        commit: &SegmentCommit<'_>,
    ) -> Result<()>;
    /// Segments of `level` whose `[start_ms, end_ms)` overlaps the given
    /// half-open range, ordered by (start_ms, id).
    async fn list_flow_segments(
        &self,
        tenant: TenantId,
        level: SegmentLevel,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<FlowSegment>>;
    /// Removes index rows (retention, after their blobs); returns how many
    /// existed. Missing ids are not an error, so retention is idempotent.
    async fn delete_flow_segments(&self, tenant: TenantId, ids: &[Uuid]) -> Result<u64>;
    /// Sets the tenant's flow windows as overrides of its plan (the portal
    /// checks that `visible_days <= stored_days`; the store keeps what it is
    /// given).
    async fn set_flow_retention(
        &self,
        tenant: TenantId,
        visible_days: u32,
        stored_days: u32,
    ) -> Result<()>;
    /// The tenant's flow windows: its effective plan's.
    async fn flow_retention(&self, tenant: TenantId) -> Result<FlowRetention> {
        Ok(self.effective_plan(tenant).await?.flow_retention())
    }

    // --- tenant settings ---
    /// Replaces the tenant's setting `key` (a small JSON document).
    async fn set_tenant_setting(
        &self,
        tenant: TenantId,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<()>;
    async fn tenant_setting(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>>;

    // --- alarms ---
    /// Batches of `kind` the detectors have not seen, across ALL tenants,
    /// oldest first: the detection queue, portal-wide for the same reason
    /// as [`Store::unprocessed_batches`].
    async fn undetected_batches(&self, kind: &str, limit: u32)
        -> Result<Vec<(TenantId, BatchRow)>>;
    /// Records occurrences (bump the open alarm with the same dedupe key
    /// last seen within the window, else create one; both logged in the
    /// history), replaces the detector state and marks batches detected,
    /// in one transaction. Fails with [`StoreError::Raced`] and changes
    /// nothing when a batch is unknown or already detected.
    async fn commit_alarms(
        &self,
        tenant: TenantId,
        commit: &AlarmCommit<'_>,
    ) -> Result<Vec<AlarmOutcome>>;
    async fn detector_state(&self, tenant: TenantId) -> Result<Option<Vec<u8>>>;
    async fn get_alarm(&self, tenant: TenantId, id: Uuid) -> Result<Option<AlarmRow>>;
    /// Newest `last_seen` first.
    async fn list_alarms(&self, tenant: TenantId, filter: &AlarmFilter) -> Result<Vec<AlarmRow>>;
    /// Alarms per (kind, severity, state), archived ones left out.
    async fn alarm_counts(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(String, String, AlarmState, u64)>>;
    /// Applies a change and logs it; [`StoreError::NotFound`] for an
    /// unknown alarm.
    async fn update_alarm(
        &self,
        tenant: TenantId,
        id: Uuid,
        actor: &str,
        update: &AlarmUpdate,
        now: i64,
    ) -> Result<AlarmRow>;
    /// The alarm's history, oldest first.
    async fn alarm_history(&self, tenant: TenantId, id: Uuid) -> Result<Vec<AlarmEvent>>;
    /// History events after `after` across ALL tenants, in order: the
    /// notifier's queue (it keeps its cursor with [`Store::queue_deliveries`]).
    async fn alarm_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, AlarmEvent)>>;
    async fn create_alarm_rule(&self, tenant: TenantId, rule: &AlarmRuleRow) -> Result<()>;
    async fn list_alarm_rules(&self, tenant: TenantId) -> Result<Vec<AlarmRuleRow>>;
    async fn delete_alarm_rule(&self, tenant: TenantId, id: Uuid) -> Result<bool>;
    async fn create_webhook(&self, tenant: TenantId, hook: &WebhookRow) -> Result<()>;
    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<WebhookRow>>;
    async fn delete_webhook(&self, tenant: TenantId, id: Uuid) -> Result<bool>;
    /// Inserts deliveries (a (webhook, event) pair already queued is
    /// skipped) and moves the portal-wide notifier cursor `cursor_key` to
    /// `cursor`, in one transaction.
    async fn queue_deliveries(
        &self,
        cursor_key: &str,
        cursor: i64,
        rows: &[(TenantId, DeliveryRow)],
    ) -> Result<()>;
    /// Pending deliveries whose `next_at` has come, across ALL tenants.
    async fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<(TenantId, DeliveryRow)>>;
    /// Records an attempt: its new status, attempt count, next time and error.
    async fn record_delivery_attempt(&self, tenant: TenantId, row: &DeliveryRow) -> Result<()>;
    /// Newest first; `status` filters.
    async fn list_deliveries(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>>;

    // --- audit log ---
    /// Appends one entry for `tenant` (`None`: operator or portal-wide) and
    /// moves the anchor, in one transaction that takes the write lock first,
    /// so appends from every process are serialized into one linear chain.
    /// The new seq and prev_hash come from the anchor, not from the newest
    /// row: a removed newest row leaves a gap rather than being replaced.
    /// Fails with [`StoreError::Corrupt`] when entries exist but the anchor
    /// does not (the log was tampered with).
    async fn append_audit(
        &self,
        tenant: Option<TenantId>,
        entry: &NewAuditEntry,
    ) -> Result<AuditEntry>;
    /// The tenant's entries with seq above `after_seq`, oldest first.
    async fn list_audit(
        &self,
        tenant: TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;
    /// Every entry (all tenants and portal-wide) with seq above
    /// `after_seq`, in seq order: the chain, for verification and the
    /// operator's listing.
    async fn audit_chain(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// The anchor: the seq and hash of the newest entry appended.
    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>>;

    // --- billing ---
    /// Applies a billing event once: records its id (a repeat answers
    /// [`BillingOutcome::Duplicate`] and changes nothing), upserts the
    /// tenant's billing row (`None` fields keep what is stored) and, when
    /// its subscription change is not older than the stored one, sets plan,
    /// status and the tenant's status, all in one transaction. A customer
    /// id already billed to another tenant is a [`StoreError::Conflict`].
    async fn apply_billing(
        &self,
        tenant: TenantId,
        update: &BillingUpdate,
    ) -> Result<BillingOutcome>;
    async fn get_billing(&self, tenant: TenantId) -> Result<Option<BillingRow>>;
    /// The tenant billed as this provider customer. Not tenant-scoped on
    /// purpose, like [`Store::tenant_by_domain`]: a provider event names its
    /// customer, and this is how it finds its tenant.
    async fn billing_tenant(&self, customer_id: &str) -> Result<Option<TenantId>>;

    // --- plans ---
    /// Inserts or replaces a plan.
    async fn upsert_plan(&self, plan: &Plan) -> Result<()>;
    async fn list_plans(&self) -> Result<Vec<Plan>>;
    async fn get_plan(&self, name: &str) -> Result<Option<Plan>>;
    /// False when no such plan exists; [`StoreError::Conflict`] when a
    /// tenant is on it or it is [`DEFAULT_PLAN`].
    async fn delete_plan(&self, name: &str) -> Result<bool>;
    /// Puts the tenant on a plan with overrides; [`StoreError::NotFound`]
    /// for an unknown tenant or plan.
    async fn set_tenant_plan(&self, tenant: TenantId, plan: &TenantPlan) -> Result<()>;
    /// The tenant's plan and overrides ([`DEFAULT_PLAN`] without any when
    /// none was set).
    async fn tenant_plan(&self, tenant: TenantId) -> Result<TenantPlan>;
    /// The plan with the tenant's overrides applied.
    async fn effective_plan(&self, tenant: TenantId) -> Result<EffectivePlan>;

    // --- lifecycle and retention ---
    /// Cancels a live tenant; [`StoreError::NotFound`] for an unknown one,
    /// [`StoreError::Conflict`] when it is already cancelled or deleted.
    async fn cancel_tenant(&self, tenant: TenantId, now: i64, delete_after: i64) -> Result<()>;
    /// Makes a cancelled tenant live again; false when it is not cancelled
    /// (live, deleted or unknown).
    async fn reactivate_tenant(&self, tenant: TenantId) -> Result<bool>;
    /// Cancelled tenants whose `delete_after` has come, across ALL tenants:
    /// the deletion job's queue.
    async fn tenants_due_for_deletion(&self, now: i64) -> Result<Vec<Tenant>>;
    /// Every blob key the tenant's rows name (spooled batches, flow
    /// segments), for deletion before [`Store::purge_tenant`].
    async fn tenant_blob_keys(&self, tenant: TenantId) -> Result<Vec<String>>;
    /// Deletes every row of the tenant from every table that has a
    /// `tenant_id` (its keys included) except the audit log, and marks the
    /// tenant deleted under a tombstone name and domain, in one
    /// transaction. Returns the rows removed per table.
    async fn purge_tenant(
        &self,
        tenant: TenantId,
        now: i64,
    ) -> Result<std::collections::BTreeMap<String, u64>>;
    /// Deletes, of one tenant, what is older than `before` (unix seconds):
    /// alarms unchanged since (with their history and deliveries), device
    /// events, finished or expired instructions, and batch records whose
    /// spooled frame is already deleted.
    async fn delete_tenant_data_before(
        &self,
        tenant: TenantId,
        before: i64,
    ) -> Result<RetentionReport>;
    /// Blob keys of batches received before `before` whose spooled frame
    /// still exists and whose work is done by one of `rules`, at most
    /// `limit`: of one tenant (retention) or, with `None`, across ALL
    /// tenants (the spool cleaner's queue).
    async fn spent_spool(
        &self,
        tenant: Option<TenantId>,
        rules: &[SpoolRule<'_>],
        before: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, DeviceId, Uuid, String)>>;
    /// Records that these batches' spooled frames were deleted.
    async fn mark_spool_deleted(
        &self,
        tenant: TenantId,
        batches: &[(DeviceId, Uuid)],
        now: i64,
    ) -> Result<()>;
    // --- users and access (issue 6 §4) ---
    // User calls take `Option<TenantId>` first: `Some` for a tenant's
    // users, `None` for portal-level MSP operator users (like audit
    // appends). Every query filters on it, so a tenant's call never sees
    // another tenant's users nor an MSP user.
    /// A duplicate live email in the same scope is a [`StoreError::Conflict`].
    async fn create_user(&self, tenant: Option<TenantId>, user: &UserRow) -> Result<()>;
    async fn get_user(&self, tenant: Option<TenantId>, id: UserId) -> Result<Option<UserRow>>;
    /// The live (not offboarded) user with this email (lowercase).
    async fn user_by_email(&self, tenant: Option<TenantId>, email: &str)
        -> Result<Option<UserRow>>;
    /// The live user whose unexpired setup token hashes to this.
    async fn user_by_setup_token(
        &self,
        tenant: Option<TenantId>,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>>;
    /// Live users, by email.
    async fn list_users(&self, tenant: Option<TenantId>) -> Result<Vec<UserRow>>;
    /// Applies the update to a live user (recovery codes replaced in the
    /// same transaction); false when there is no such live user.
    async fn update_user(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        update: &UserUpdate,
    ) -> Result<bool>;
    /// Counts a failed login; the `max_failures`-th in a row locks the
    /// account until `now + lock_secs` and starts the count again.
    async fn login_failed(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
        max_failures: u32,
        lock_secs: i64,
    ) -> Result<LoginFailure>;
    /// Resets the failure count after a successful login.
    async fn login_succeeded(&self, tenant: Option<TenantId>, id: UserId) -> Result<()>;
    /// Accepts TOTP time step `step` once: true only if it is above the last
    /// one accepted (a code cannot be replayed), which it then becomes.
    async fn use_totp_step(&self, tenant: Option<TenantId>, id: UserId, step: i64) -> Result<bool>;
    /// Marks an unused recovery code used; false if unknown or used.
    async fn use_recovery_code(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        code_hash: &str,
        now: i64,
    ) -> Result<bool>;
    /// Offboards a live user: marks it offboarded and revokes every session,
    /// every API token it created and (for an MSP user) every grant, in one
    /// transaction. `None` when there is no such live user.
    async fn offboard_user(
        &self,
        tenant: Option<TenantId>,
        id: UserId,
        now: i64,
    ) -> Result<Option<Revoked>>;

    async fn create_session(&self, tenant: TenantId, session: &SessionRow) -> Result<()>;
    /// The tenant's session with this id hash, revoked or not.
    async fn get_session(&self, tenant: TenantId, id_hash: &str) -> Result<Option<SessionRow>>;
    async fn touch_session(&self, tenant: TenantId, id_hash: &str, now: i64) -> Result<()>;
    /// False when the tenant has no such live session.
    async fn revoke_session(&self, tenant: TenantId, id_hash: &str, now: i64) -> Result<bool>;

    /// The tenant's API tokens, newest first (hashes included: callers
    /// never show them).
    async fn list_api_tokens(&self, tenant: TenantId) -> Result<Vec<ApiToken>>;
    /// False when the tenant has no such unrevoked token.
    async fn revoke_api_token(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool>;

    async fn create_msp_grant(&self, tenant: TenantId, grant: &MspGrantRow) -> Result<()>;
    /// The tenant's grants, newest first.
    async fn list_msp_grants(&self, tenant: TenantId) -> Result<Vec<MspGrantRow>>;
    /// The newest unrevoked, unexpired grant of the tenant to this user.
    async fn active_msp_grant(
        &self,
        tenant: TenantId,
        user: UserId,
        now: i64,
    ) -> Result<Option<MspGrantRow>>;
    /// Revokes the grant and, in the same transaction, the grantee's
    /// sessions and the tokens it created in this tenant. `None` when the
    /// tenant has no such unrevoked grant.
    async fn revoke_msp_grant(
        &self,
        tenant: TenantId,
        id: Uuid,
        now: i64,
    ) -> Result<Option<(MspGrantRow, Revoked)>>;
    // --- config management (migration 0013, `configs`) ---
    /// Versions of one layer's document, newest first, at most `limit`.
    async fn config_doc_versions(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        limit: u32,
    ) -> Result<Vec<ConfigDocRow>>;
    /// One version, or the newest with `None`.
    async fn config_doc(
        &self,
        tenant: TenantId,
        layer: &str,
        scope: &str,
        version: Option<u64>,
    ) -> Result<Option<ConfigDocRow>>;
    /// The newest version of every document of the tenant.
    async fn latest_config_docs(&self, tenant: TenantId) -> Result<Vec<ConfigDocRow>>;
    /// Stores `row` (its `version` must be `expected + 1`) if the newest
    /// version is still `expected` (0: none yet); false when another save
    /// came first, so no edit is silently lost.
    async fn save_config_doc(
        &self,
        tenant: TenantId,
        row: &ConfigDocRow,
        expected: u64,
    ) -> Result<bool>;
    /// Creates a group; false when it exists.
    async fn create_config_group(&self, tenant: TenantId, name: &str, now: i64) -> Result<bool>;
    /// Deletes a group with no devices, its documents and rollouts; false
    /// when it does not exist, [`StoreError::Raced`] when a device is in it.
    async fn delete_config_group(&self, tenant: TenantId, name: &str) -> Result<bool>;
    async fn config_groups(&self, tenant: TenantId) -> Result<Vec<String>>;
    /// Puts the device in a group (`None`: in none).
    async fn set_device_group(
        &self,
        tenant: TenantId,
        device: DeviceId,
        group: Option<&str>,
    ) -> Result<()>;
    /// Every device that is in a group, with its group.
    async fn device_groups(&self, tenant: TenantId) -> Result<Vec<(DeviceId, String)>>;
    /// Reserves `n` effective-configuration revisions; returns the first.
    async fn allocate_config_revisions(&self, tenant: TenantId, n: u64) -> Result<u64>;
    async fn device_configs(&self, tenant: TenantId) -> Result<Vec<DeviceConfigRow>>;
    /// The devices whose desired configuration is not acked yet (the config
    /// job's work), without opening every other row.
    async fn pending_device_configs(&self, tenant: TenantId) -> Result<Vec<DeviceConfigRow>>;
    async fn device_config(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Option<DeviceConfigRow>>;
    /// Writes each device's row and appends its event, in one transaction.
    async fn put_device_configs(
        &self,
        tenant: TenantId,
        rows: &[(DeviceConfigRow, ConfigEvent)],
    ) -> Result<()>;
    /// The device's history, newest first.
    async fn config_history(
        &self,
        tenant: TenantId,
        device: DeviceId,
        limit: u32,
    ) -> Result<Vec<ConfigEvent>>;
    /// For each (device, seq): marks the device's undelivered or unacked
    /// instructions of `kind` below `seq` superseded, so a device that was
    /// offline gets only the newest; one transaction for all (one commit
    /// for a whole rollout). Returns how many per device, in order.
    async fn supersede_instructions(
        &self,
        tenant: TenantId,
        kind: &str,
        newest: &[(DeviceId, u64)],
    ) -> Result<Vec<u64>>;
    /// Inserts or replaces a rollout.
    async fn put_rollout(&self, tenant: TenantId, r: &RolloutRow) -> Result<()>;
    async fn rollouts(&self, tenant: TenantId, limit: u32) -> Result<Vec<RolloutRow>>;
    // --- encryption at rest (see `cipher`) ---
    /// Installs the cipher tenant content is sealed with; until one is,
    /// every read or write of tenant content fails with
    /// [`StoreError::Crypto`]. Installing again replaces it.
    fn set_field_cipher(&self, cipher: Arc<dyn FieldCipher>);
    /// Every version of the tenant's data key, oldest first.
    async fn data_keys(&self, tenant: TenantId) -> Result<Vec<DataKeyRow>>;
    /// Adds a version; [`StoreError::Conflict`] when it exists (two
    /// rotations racing: the loser retries with a fresh list).
    async fn add_data_key(&self, tenant: TenantId, row: &DataKeyRow) -> Result<()>;
    /// Drops the wrapped key of `version` and records when; false when no
    /// such version is active.
    async fn retire_data_key(&self, tenant: TenantId, version: u32, now: i64) -> Result<bool>;
    /// Re-seals under the current version up to `limit` rows whose oldest
    /// value is under an older one (or of unknown version); returns how
    /// many. A row changed meanwhile is left for the next pass.
    async fn reseal_fields(&self, tenant: TenantId, limit: u32) -> Result<u64>;
    /// How much of the tenant's data is under each key version.
    async fn key_usage(&self, tenant: TenantId) -> Result<KeyUsage>;
    /// Segments not verified to be sealed under `version`, oldest first.
    async fn segments_off_key(
        &self,
        tenant: TenantId,
        version: u32,
        limit: u32,
    ) -> Result<Vec<FlowSegment>>;
    /// Records the key version a segment's file is sealed under; false when
    /// the segment is gone (compacted or expired meanwhile).
    async fn set_segment_key_version(
        &self,
        tenant: TenantId,
        id: Uuid,
        version: u32,
    ) -> Result<bool>;
    /// Deletes the tenant's wrapped keys (KEK, private keys, data keys):
    /// with the vault entry gone too, nothing of the tenant opens again.
    /// Also deletes its alarm history and deliveries and marks its spooled
    /// batches processed and detected: the portal-wide queues read across
    /// tenants, and rows nobody can open would stop them. The rest of its
    /// rows stay for the cancellation job to delete.
    async fn destroy_tenant_keys(&self, tenant: TenantId) -> Result<()>;
    /// Replaces a portal-wide value if it is still `expected`; false when it
    /// is not (someone else replaced it first).
    async fn replace_meta(&self, key: &str, expected: &[u8], value: &[u8]) -> Result<bool>;
    // --- remote actions (issue 7) ---
    /// Replaces a device's public key if it is still `old` (of two
    /// rotations signed with the same old key, one wins); false when the
    /// device is not this tenant's or its key changed meanwhile.
    async fn replace_device_key(
        &self,
        tenant: TenantId,
        device: DeviceId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool>;
    /// A device's batches of `kind`, newest first.
    async fn list_device_batches(
        &self,
        tenant: TenantId,
        device: DeviceId,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<BatchRow>>;

    // --- reports (migration 0014) ---
    /// Stores a report with its body (sealed) unless the tenant has one of
    /// the same kind and period start: false then, and nothing changes, so
    /// two replicas or a restart never make a period's report twice.
    async fn create_report(
        &self,
        tenant: TenantId,
        info: &ReportInfo,
        body: &serde_json::Value,
    ) -> Result<bool>;
    /// Newest period first; `kind` filters.
    async fn list_reports(
        &self,
        tenant: TenantId,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportInfo>>;
    /// A report with its body.
    async fn get_report(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<(ReportInfo, serde_json::Value)>>;
    /// The report of this kind whose period starts at `period_start`.
    async fn report_for_period(
        &self,
        tenant: TenantId,
        kind: &str,
        period_start: i64,
    ) -> Result<Option<ReportInfo>>;
    /// Records that the report's email went out; false for an unknown report.
    async fn mark_report_emailed(&self, tenant: TenantId, id: Uuid, now: i64) -> Result<bool>;
    /// Alarms first seen in `[from_ms, to_ms)` per (kind, severity, state),
    /// in every state (archived included): what was raised in a window.
    async fn alarm_counts_between(
        &self,
        tenant: TenantId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, String, AlarmState, u64)>>;

    // --- target lists (issue 7) ---
    /// The tenant's lists, by name, entries included.
    async fn list_target_lists(&self, tenant: TenantId) -> Result<Vec<TargetListRow>>;
    async fn get_target_list(&self, tenant: TenantId, name: &str) -> Result<Option<TargetListRow>>;
    /// Writes a list if it is at `expected_version` (0: it must not exist
    /// yet) and returns its new version; [`StoreError::Raced`] and nothing
    /// changed otherwise, so a stale writer never overwrites a newer list.
    /// The row's own `version` is ignored.
    async fn put_target_list(
        &self,
        tenant: TenantId,
        list: &TargetListRow,
        expected_version: u64,
    ) -> Result<u64>;
    /// Records an import of a list still bound to `source`: its outcome and,
    /// when `entries` is given, the new entries (one version more). `None`
    /// when the list is gone or bound elsewhere now; else its version.
    async fn record_target_import(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
        entries: Option<&[String]>,
        import: &TargetImport,
    ) -> Result<Option<u64>>;
    /// False when the tenant has no such list.
    async fn delete_target_list(&self, tenant: TenantId, name: &str) -> Result<bool>;
    /// (name, version) of each list, by name, without opening any: what a
    /// cache checks before it reloads a list.
    async fn target_list_versions(&self, tenant: TenantId) -> Result<Vec<(String, u64)>>;

    // --- VPN: WireGuard interfaces of devices and their peers (see `vpn`) ---
    /// Creates or replaces the device's interface.
    async fn put_vpn_interface(&self, tenant: TenantId, row: &VpnInterfaceRow) -> Result<()>;
    async fn get_vpn_interface(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> Result<Option<VpnInterfaceRow>>;
    /// Adds a peer to an existing interface. [`StoreError::Conflict`] when a
    /// live peer of the device has the name, [`StoreError::Raced`] when one
    /// took the slot (the caller picks another).
    async fn create_vpn_peer(&self, tenant: TenantId, row: &VpnPeerRow) -> Result<()>;
    /// The device's peers, revoked ones included, oldest first.
    async fn list_vpn_peers(&self, tenant: TenantId, device: DeviceId) -> Result<Vec<VpnPeerRow>>;
    async fn get_vpn_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
    ) -> Result<Option<VpnPeerRow>>;
    /// Revokes a live peer and drops its wrapped keys; false when the
    /// device has no such live peer.
    async fn revoke_vpn_peer(
        &self,
        tenant: TenantId,
        device: DeviceId,
        id: Uuid,
        now: i64,
    ) -> Result<bool>;
}
