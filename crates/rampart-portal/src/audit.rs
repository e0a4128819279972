//! The audit log: every admin action, export and key operation, kept
//! append-only in one hash chain for the whole portal, listed per tenant
//! through the API and checked by `rampart audit verify`.
//!
//! What is recorded, by action:
//! - `tenant.create`, `key.create` (the tenant's KEK, signing, upload and
//!   TLS keys), `tenant.suspend`, `tenant.resume`, `flow_plan.set`;
//! - `api_token.create` (operator and tenant tokens; never the secret or
//!   its hash), `enrollment_token.create`, `enrollment_token.revoke`;
//! - `device.enroll`, `device.approve`, `device.revoke`;
//! - `instruction.queue` (one entry per call, however many devices; the
//!   kind and the count, not the payload), `data_controls.set`;
//! - `export.flows`, `export.flows_top`, `export.alarm_timeline`;
//! - `billing.customer`, `billing.subscription`, `billing.payment_method`;
//! - `backup.create` (in the backed-up portal's log, after the backup is
//!   written), `backup.restore` (in the restored portal's log).
//!
//! - users and access: `user.create`, `msp_user.create`, `user.setup`,
//!   `user.role`, `user.totp_enable`, `user.offboard` (with what it
//!   revoked), `api_token.revoke`, `msp_grant.create`, `msp_grant.revoke`;
//!   `login.success`, `login.failure` (with the reason), `login.lockout`,
//!   `login.recovery_code`, `logout`. Using a token or a session for a
//!   request is not an action and is not recorded.
//!
//! One chain for the portal, not one per tenant: operator actions that
//! span tenants keep their order; one anchor covers everything, so removing
//! all of one tenant's entries (with a per-tenant anchor, removing the
//! anchor too) cannot go unseen; and a tenant's entries must outlive the
//! tenant (its deletion is itself an entry), which a chain of its own would
//! not survive being shredded. The cost is that appends are serialized
//! portal-wide, which SQLite does anyway (one writer), and that a tenant
//! cannot check continuity from its own entries alone: the per-tenant
//! listing filters the one chain, and verification is the operator's.
//!
//! An entry is appended after its action succeeded, not in the action's
//! transaction (each action has its own store call). If the append fails,
//! the action has happened but the caller gets the error (the API answers
//! 5xx, the CLI fails) and it is logged, so it is not a silent success.
//!
//! What the chain detects: an edited entry (its hash), a removed entry (a
//! seq gap), a rewritten one (the next entry's `prev_hash`), removed newest
//! entries (the anchor, moved in the same transaction as each append).
//! Someone who can write the database can also rewrite every later hash
//! and the anchor: to catch that, keep the head that `rampart audit verify`
//! prints somewhere else and pass it back with `--expect SEQ:HASH`.

use rampart_store::audit::{entry_hash, GENESIS};
use rampart_store::{AuditAnchor, AuditEntry, NewAuditEntry, Store, StoreError, TenantId};
use serde_json::Value;

use crate::extract::{MinRole, Operator, TenantCaller};
use crate::service::{now, Portal, ServiceError};

/// A detail longer than this (as JSON text) is replaced by a note saying
/// so: details are built from bounded inputs, this bounds the log anyway.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Targets are ids and names; longer ones are cut.
const MAX_TARGET_BYTES: usize = 256;
/// Entries read per page while verifying: memory stays flat.
const VERIFY_PAGE: u32 = 1000;

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An operator token, by its name.
    Operator(String),
    /// A tenant's token, by its name.
    Tenant(String),
    /// The `rampart` CLI on the portal host.
    Cli,
    /// An enrolled device.
    Device(rampart_store::DeviceId),
    /// The portal on its own (e.g. sending controls to a new device).
    Portal,
    /// A Stripe webhook, authenticated by its signature.
    Stripe,
    /// A tenant's user with a session, by id: the email is tenant content,
    /// sealed in the users table, and the audit log is clear.
    User(rampart_store::UserId),
    /// An MSP operator user acting on a tenant through its grant, by email
    /// (the MSP's own staff, not tenant content, like operator token names).
    Msp(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Operator(n) => write!(f, "operator:{n}"),
            Actor::Tenant(n) => write!(f, "tenant:{n}"),
            Actor::Cli => f.write_str("cli"),
            Actor::Device(d) => write!(f, "device:{d}"),
            Actor::Portal => f.write_str("portal"),
            Actor::Stripe => f.write_str("stripe"),
            Actor::User(e) => write!(f, "user:{e}"),
            Actor::Msp(e) => write!(f, "msp:{e}"),
        }
    }
}

impl Operator {
    pub fn actor(&self) -> Actor {
        Actor::Operator(self.token.name.clone())
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Appends one entry. `tenant` is the tenant acted on (`None` for
/// operator-wide actions such as minting an operator token).
pub async fn record(
    p: &Portal,
    tenant: Option<TenantId>,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: Value,
) -> Result<AuditEntry, ServiceError> {
    let text_len = detail.to_string().len();
    let detail = if text_len > MAX_DETAIL_BYTES {
        serde_json::json!({"truncated": true, "bytes": text_len})
    } else {
        detail
    };
    let entry = NewAuditEntry {
        at: now(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: cut(target, MAX_TARGET_BYTES),
        detail,
    };
    match p.store.append_audit(tenant, &entry).await {
        Ok(e) => {
            tracing::info!(seq = e.seq, actor = %e.actor, action = %e.action, target = %e.target, "audit");
            Ok(e)
        }
        Err(err) => {
            tracing::error!(error = %err, actor = %entry.actor, action = %entry.action, target = %entry.target,
                "the action succeeded but its audit entry could not be written");
            Err(err.into())
        }
    }
}

/// Records a tenant's export (an API download of its data).
pub async fn export<R: MinRole>(
    p: &Portal,
    a: &TenantCaller<R>,
    what: &str,
    csv: bool,
    rows: usize,
) -> Result<(), ServiceError> {
    let format = if csv { "csv" } else { "json" };
    let detail = serde_json::json!({"format": format, "rows": rows});
    record(
        p,
        Some(a.tenant.id),
        &a.actor(),
        &format!("export.{what}"),
        what,
        detail,
    )
    .await?;
    Ok(())
}

/// Why the chain does not hold; each names the first seq that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("seq {seq} does not match its hash: the entry was edited")]
    Edited { seq: u64 },
    #[error(
        "seq {seq} does not link to seq {}: seq {} was replaced or seq {seq} rewritten",
        .seq - 1,
        .seq - 1
    )]
    Unlinked { seq: u64 },
    #[error("seq {expected} is missing (the next entry is seq {found}): entries were removed")]
    Missing { expected: u64, found: u64 },
    #[error(
        "seq {missing} is missing: the log ends at seq {}, but its anchor is at seq {anchor}: \
         the newest entries were removed",
        .missing - 1
    )]
    Truncated { missing: u64, anchor: u64 },
    #[error(
        "seq {seq} is not the entry its anchor names: the newest entry or the anchor was changed"
    )]
    AnchorMismatch { seq: u64 },
    #[error(
        "seq {seq} is beyond the anchor: entries were added outside the portal, or the anchor was removed"
    )]
    BeyondAnchor { seq: u64 },
    #[error("seq {seq} is not the entry recorded as the head: the log was rewritten since")]
    ExpectedMismatch { seq: u64 },
    #[error("seq {seq} is missing, yet it was recorded as the head: the log was truncated since")]
    ExpectedMissing { seq: u64 },
}

impl ChainBreak {
    /// The first seq that is wrong.
    pub fn seq(&self) -> u64 {
        match *self {
            ChainBreak::Edited { seq }
            | ChainBreak::Unlinked { seq }
            | ChainBreak::AnchorMismatch { seq }
            | ChainBreak::BeyondAnchor { seq }
            | ChainBreak::ExpectedMismatch { seq }
            | ChainBreak::ExpectedMissing { seq } => seq,
            ChainBreak::Missing { expected, .. } => expected,
            ChainBreak::Truncated { missing, .. } => missing,
        }
    }
}

/// The detail is in the message, not in a source: printed as an error
/// chain, it would otherwise say the same thing twice.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the audit log is broken: {0}")]
    Broken(ChainBreak),
    #[error("cannot read the audit log: {0}")]
    Store(StoreError),
}

impl From<ChainBreak> for VerifyError {
    fn from(b: ChainBreak) -> Self {
        VerifyError::Broken(b)
    }
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        VerifyError::Store(e)
    }
}

/// A chain that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// The newest entry; record it elsewhere and pass it back as `expect`
    /// to detect a rewrite of the whole tail.
    pub head: Option<AuditAnchor>,
}

/// Parses `SEQ:HEX` as printed by `rampart audit verify`.
pub fn parse_head(s: &str) -> Option<AuditAnchor> {
    let (seq, hash) = s.trim().split_once(':')?;
    let hash = hex_decode_32(hash)?;
    Some(AuditAnchor {
        seq: seq.parse().ok()?,
        hash: hash.to_vec(),
    })
}

fn hex_decode_32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Walks the whole chain: recomputes every hash, checks every link and the
/// seqs for gaps, and ends at the anchor (and at `expect`, a head recorded
/// earlier, when given). Safe beside a running portal: entries appended
/// while it walks are verified too.
pub async fn verify(
    store: &dyn Store,
    expect: Option<&AuditAnchor>,
) -> Result<Verified, VerifyError> {
    let mut anchor = store.audit_anchor().await?;
    let mut expected_seq: u64 = 1;
    let mut prev: Vec<u8> = GENESIS.to_vec();
    loop {
        let page = store.audit_chain(expected_seq - 1, VERIFY_PAGE).await?;
        if page.is_empty() {
            // The anchor may have moved since it was read: re-read, and walk
            // on if entries were appended meanwhile.
            anchor = store.audit_anchor().await?;
            let last = expected_seq - 1;
            match &anchor {
                Some(a) if a.seq > last => {
                    if store.audit_chain(last, 1).await?.is_empty() {
                        return Err(ChainBreak::Truncated {
                            missing: last + 1,
                            anchor: a.seq,
                        }
                        .into());
                    }
                    continue;
                }
                _ => break,
            }
        }
        for e in page {
            if e.seq != expected_seq {
                return Err(if e.seq > expected_seq {
                    ChainBreak::Missing {
                        expected: expected_seq,
                        found: e.seq,
                    }
                } else {
                    ChainBreak::Edited { seq: e.seq }
                }
                .into());
            }
            if entry_hash(&e).as_slice() != e.hash.as_slice() {
                return Err(ChainBreak::Edited { seq: e.seq }.into());
            }
            if e.prev_hash != prev {
                return Err(ChainBreak::Unlinked { seq: e.seq }.into());
            }
            if anchor.as_ref().is_none_or(|a| e.seq > a.seq) {
                anchor = store.audit_anchor().await?;
                if anchor.as_ref().is_none_or(|a| e.seq > a.seq) {
                    return Err(ChainBreak::BeyondAnchor { seq: e.seq }.into());
                }
            }
            if anchor
                .as_ref()
                .is_some_and(|a| a.seq == e.seq && a.hash != e.hash)
            {
                return Err(ChainBreak::AnchorMismatch { seq: e.seq }.into());
            }
            if let Some(x) = expect {
                if x.seq == e.seq && x.hash != e.hash {
                    return Err(ChainBreak::ExpectedMismatch { seq: e.seq }.into());
                }
            }
            prev = e.hash;
            expected_seq += 1;
        }
    }
    let entries = expected_seq - 1;
    if let Some(x) = expect {
        if x.seq > entries {
            return Err(ChainBreak::ExpectedMissing { seq: x.seq }.into());
        }
    }
    Ok(Verified {
        entries,
        head: (entries > 0).then_some(AuditAnchor {
            seq: entries,
            hash: prev,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_as_printed() {
        let h = AuditAnchor {
            seq: 42,
            hash: (0..32).collect(),
        };
        let printed = format!("{}:{}", h.seq, hex(&h.hash));
        assert_eq!(parse_head(&printed), Some(h));
        for bad in ["", "42", "x:00", "42:zz", &format!("42:{}", "0".repeat(63))] {
            assert_eq!(parse_head(bad), None, "{bad}");
        }
    }

    #[test]
    fn breaks_name_their_seq_in_lowercase_without_a_period() {
        for b in [
            ChainBreak::Edited { seq: 2 },
            ChainBreak::Unlinked { seq: 2 },
            ChainBreak::Missing {
                expected: 2,
                found: 3,
            },
            ChainBreak::Truncated {
                missing: 2,
                anchor: 5,
            },
            ChainBreak::AnchorMismatch { seq: 2 },
            ChainBreak::BeyondAnchor { seq: 2 },
            ChainBreak::ExpectedMismatch { seq: 2 },
            ChainBreak::ExpectedMissing { seq: 2 },
        ] {
            let m = b.to_string();
            assert!(m.starts_with("seq 2 "), "{m}");
            assert_eq!(b.seq(), 2);
            assert!(!m.ends_with('.'), "{m}");
        }
        assert_eq!(Actor::Operator("ops".into()).to_string(), "operator:ops");
        assert_eq!(Actor::Tenant("ci".into()).to_string(), "tenant:ci");
    }

    #[test]
    fn long_targets_are_cut_on_a_char_boundary() {
        let s = "é".repeat(200);
        let c = cut(&s, 255);
        assert!(c.len() <= 255 && s.starts_with(&c));
    }
}
