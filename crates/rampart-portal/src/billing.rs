//! Billing: Stripe's webhooks set a tenant's plan and status.
//!
//! Authentication is Stripe's `Stripe-Signature: t=<unix>,v1=<hex>` header,
//! HMAC-SHA256 under the endpoint's signing secret over `"<t>.<body>"`, with
//! several `v1` while Stripe rolls the secret. It is the scheme our own
//! webhooks use, so it is verified by [`rampart_alarms::webhook::verify`]
//! (constant-time, tolerance both ways) rather than by a second copy.
//! Where that verifier is stricter than stripe-go, on purpose:
//! - a timestamp more than the tolerance in the future is refused (stripe-go
//!   checks only age), so a signature made with a skewed clock cannot be
//!   kept for later;
//! - a header with two `t=`, or a `t` with a sign, is malformed (stripe-go
//!   takes the last one / parses the sign).
//!
//! And one place where it is looser: a `v1=` value containing `=` is ignored
//! as not hex, where stripe-go refuses the whole header. Either way such a
//! value never matches, so only a header that also carries a valid `v1` is
//! accepted by us and refused by stripe-go.
//!
//! Replays: the timestamp must be within [`TOLERANCE_S`] of our clock, and
//! an event id already applied is answered `duplicate: true` and changes
//! nothing (Stripe redelivers the same event with fresh signatures for up
//! to three days).
//!
//! What is kept: the customer id, the customer's email, the card's brand
//! and last 4 digits, the plan name and the subscription status. The event
//! is parsed in memory, those fields are copied out and checked, and the
//! rest (card fingerprint, expiry, billing address, anything else) is
//! dropped with the parsed value: it is never stored, logged, echoed in an
//! error or put in the audit log.
//!
//! Events handled (anything else is answered 200 `ignored`):
//!
//! | event                                  | effect                                   |
//! |----------------------------------------|------------------------------------------|
//! | `customer.created`, `customer.updated` | email                                    |
//! | `customer.subscription.created/updated`| plan, status, tenant status (below)      |
//! | `customer.subscription.deleted`        | status `canceled`, tenant suspended      |
//! | `payment_method.attached`              | card brand and last 4 (`type: card`)     |
//!
//! The plan is the subscription's `metadata.rampart_plan`, else its first
//! item's `price.lookup_key`, else that price's id. Subscription status to
//! tenant status: `active` and `trialing` resume a tenant that billing
//! suspended (never one the operator suspended for another reason);
//! `canceled`, `unpaid`, `incomplete_expired` and `paused` suspend it;
//! `past_due` and `incomplete` leave it as it is (Stripe is still retrying
//! the payment). An event older than the stored subscription state changes
//! no plan or status (Stripe does not guarantee order).
//!
//! The tenant is the one named (by name or id) in `metadata.rampart_tenant`
//! of the event's object (customer, subscription or payment method), else
//! the one the customer id was linked to by an earlier event. An event that
//! names no tenant is refused with 422, so Stripe retries it: a payment
//! method attached before the customer event that links it arrives later.

use rampart_alarms::webhook::{verify, VerifyError};
use rampart_store::{
    BillingOutcome, BillingRow, BillingUpdate, StoreError, SubscriptionChange, Tenant, TenantStatus,
};
use serde_json::Value;

use crate::audit::{self, Actor};
use crate::service::{Portal, ServiceError};

/// The header Stripe signs with.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// Seconds of clock difference allowed (Stripe's default tolerance).
pub const TOLERANCE_S: i64 = 300;
/// Largest event body accepted. Stripe events are a few KiB; the biggest
/// objects (invoices with many lines) stay well under this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(
        "stripe webhooks are not configured: set stripe_webhook_secret \
         (RAMPART_STRIPE_WEBHOOK_SECRET) to the endpoint's signing secret"
    )]
    Disabled,
    #[error("stripe signature refused: {0}")]
    Signature(#[from] VerifyError),
    #[error("{0}")]
    Invalid(String),
    /// The event names no tenant we know: Stripe should retry it later.
    #[error("{0}")]
    UnknownTenant(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for BillingError {
    fn from(e: StoreError) -> Self {
        BillingError::Service(e.into())
    }
}

/// What happened to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub event_id: String,
    /// The event id was applied before: nothing changed.
    pub duplicate: bool,
    /// `applied`, `stale` (its subscription change is older than the
    /// stored one) or `ignored` (an event type we do not handle).
    pub outcome: &'static str,
}

fn invalid(m: impl Into<String>) -> BillingError {
    BillingError::Invalid(m.into())
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// An optional string field, checked by `ok` and at most `max` bytes. The
/// error names the field, never its value.
fn text(
    v: &Value,
    path: &[&str],
    max: usize,
    ok: fn(&str) -> bool,
) -> Result<Option<String>, BillingError> {
    match at(v, path) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max && ok(s) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!(
            "{} is not a valid value: send a stripe event",
            path.join(".")
        ))),
    }
}

fn required(
    v: &Value,
    path: &[&str],
    max: usize,
    ok: fn(&str) -> bool,
) -> Result<String, BillingError> {
    text(v, path, max, ok)?.ok_or_else(|| {
        invalid(format!(
            "{} is missing: send a stripe event",
            path.join(".")
        ))
    })
}

/// Stripe ids (`evt_...`, `cus_...`, `price_...`).
fn is_id(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_email(s: &str) -> bool {
    s.contains('@') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_plan(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_brand(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' '))
}

fn is_last4(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_tenant_ref(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The customer an object belongs to: its `customer` (an id, or an
/// expanded customer object), or its own id for a customer.
fn customer_of(obj: &Value, is_customer: bool) -> Result<String, BillingError> {
    if is_customer {
        return required(obj, &["id"], 255, is_id);
    }
    match at(obj, &["customer"]) {
        Some(Value::Object(_)) => required(obj, &["customer", "id"], 255, is_id),
        _ => required(obj, &["customer"], 255, is_id),
    }
}

/// Statuses that mean the customer no longer pays.
fn suspends(status: &str) -> bool {
    matches!(
        status,
        "canceled" | "unpaid" | "incomplete_expired" | "paused"
    )
}

fn resumes(status: &str) -> bool {
    matches!(status, "active" | "trialing")
}

fn known_status(status: &str) -> bool {
    suspends(status) || resumes(status) || matches!(status, "past_due" | "incomplete")
}

/// The fields of an event we keep; the parsed event is dropped after this.
struct Extracted {
    customer_id: String,
    tenant_ref: Option<String>,
    email: Option<String>,
    card: Option<(String, String)>,
    /// (plan, status).
    subscription: Option<(Option<String>, String)>,
}

fn extract(kind: &str, obj: &Value) -> Result<Option<Extracted>, BillingError> {
    let customer = matches!(kind, "customer.created" | "customer.updated");
    let subscription = matches!(
        kind,
        "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
    );
    let payment_method = kind == "payment_method.attached";
    if !(customer || subscription || payment_method) {
        return Ok(None);
    }
    let mut e = Extracted {
        customer_id: customer_of(obj, customer)?,
        tenant_ref: text(obj, &["metadata", "rampart_tenant"], 64, is_tenant_ref)?,
        email: None,
        card: None,
        subscription: None,
    };
    if customer {
        e.email = text(obj, &["email"], 254, is_email)?;
    }
    if subscription {
        let status = if kind == "customer.subscription.deleted" {
            "canceled".to_string()
        } else {
            required(obj, &["status"], 32, known_status)?
        };
        // `items.data` is an array, which a key path cannot index.
        let price = obj
            .get("items")
            .and_then(|i| i.get("data"))
            .and_then(|d| d.get(0))
            .and_then(|i| i.get("price"));
        let plan = match text(obj, &["metadata", "rampart_plan"], 64, is_plan)? {
            Some(p) => Some(p),
            None => match price {
                Some(pr) => match text(pr, &["lookup_key"], 64, is_plan)? {
                    Some(p) => Some(p),
                    None => text(pr, &["id"], 64, is_plan)?,
                },
                None => None,
            },
        };
        e.subscription = Some((plan, status));
    }
    if payment_method && (at(obj, &["type"]).and_then(Value::as_str) == Some("card")) {
        let brand = required(obj, &["card", "brand"], 32, is_brand)?;
        let last4 = required(obj, &["card", "last4"], 4, is_last4)?;
        e.card = Some((brand, last4));
    }
    Ok(Some(e))
}

async fn tenant_for(p: &Portal, e: &Extracted) -> Result<Tenant, BillingError> {
    if let Some(r) = &e.tenant_ref {
        return match p.find_tenant(r).await {
            Ok(t) => Ok(t),
            Err(ServiceError::NotFound(_)) => Err(BillingError::UnknownTenant(format!(
                "metadata.rampart_tenant {r:?} names no tenant: use a tenant's name or id"
            ))),
            Err(err) => Err(err.into()),
        };
    }
    let Some(id) = p.store.billing_tenant(&e.customer_id).await? else {
        return Err(BillingError::UnknownTenant(format!(
            "stripe customer {} is not linked to a tenant yet: set metadata.rampart_tenant on \
             the customer or its subscription (this event is refused so that stripe retries it)",
            e.customer_id
        )));
    };
    p.store
        .get_tenant(id)
        .await?
        .ok_or_else(|| BillingError::Service(ServiceError::NotFound(format!("tenant {id}"))))
}

/// The tenant status a subscription status asks for, if it changes the
/// tenant: billing resumes only a tenant it suspended itself.
fn tenant_status_for(
    status: &str,
    tenant: &Tenant,
    before: Option<&BillingRow>,
) -> Option<TenantStatus> {
    if suspends(status) && tenant.status == TenantStatus::Active {
        return Some(TenantStatus::Suspended);
    }
    let suspended_by_billing = before
        .and_then(|b| b.status.as_deref())
        .is_some_and(suspends);
    if resumes(status) && tenant.status == TenantStatus::Suspended && suspended_by_billing {
        return Some(TenantStatus::Active);
    }
    None
}

/// Verifies and applies one webhook delivery. `header` is the
/// `Stripe-Signature` value; `now` is unix seconds.
pub async fn handle(
    p: &Portal,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Handled, BillingError> {
    let secret = p
        .config
        .stripe_webhook_secret
        .as_deref()
        .ok_or(BillingError::Disabled)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(invalid("event body is too large"));
    }
    verify(
        secret.as_bytes(),
        header.unwrap_or(""),
        body,
        now,
        TOLERANCE_S,
    )?;
    // serde_json bounds nesting (128 levels); its messages name positions,
    // not content.
    let event: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("event is not json ({e}): send a stripe event")))?;
    let event_id = required(&event, &["id"], 255, is_id)?;
    let kind = required(&event, &["type"], 128, |s| {
        s.bytes().all(|b| b.is_ascii_graphic())
    })?;
    let created = at(&event, &["created"])
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("created is missing: send a stripe event"))?;
    let obj = at(&event, &["data", "object"])
        .filter(|o| o.is_object())
        .ok_or_else(|| invalid("data.object is missing: send a stripe event"))?;
    let Some(x) = extract(&kind, obj)? else {
        return Ok(Handled {
            event_id,
            duplicate: false,
            outcome: "ignored",
        });
    };
    drop(event);
    let tenant = tenant_for(p, &x).await?;
    let before = p.store.get_billing(tenant.id).await?;
    let subscription = x
        .subscription
        .as_ref()
        .map(|(plan, status)| SubscriptionChange {
            plan: plan.clone(),
            status: status.clone(),
            tenant_status: tenant_status_for(status, &tenant, before.as_ref()),
        });
    let update = BillingUpdate {
        event_id: event_id.clone(),
        event_at: created,
        customer_id: x.customer_id.clone(),
        email: x.email.clone(),
        card_brand: x.card.as_ref().map(|c| c.0.clone()),
        card_last4: x.card.as_ref().map(|c| c.1.clone()),
        subscription,
        now,
    };
    let outcome = match p.store.apply_billing(tenant.id, &update).await {
        Ok(o) => o,
        Err(StoreError::Conflict(_)) => {
            return Err(BillingError::Conflict(format!(
                "stripe customer {} is billed to another tenant: fix metadata.rampart_tenant",
                x.customer_id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let (label, tenant_status) = match &outcome {
        BillingOutcome::Duplicate => {
            return Ok(Handled {
                event_id,
                duplicate: true,
                outcome: "applied",
            })
        }
        BillingOutcome::Applied { tenant_status, .. } => ("applied", *tenant_status),
        BillingOutcome::Stale { .. } => ("stale", None),
    };
    let action = match kind.as_str() {
        "payment_method.attached" => "billing.payment_method",
        k if k.starts_with("customer.subscription.") => "billing.subscription",
        _ => "billing.customer",
    };
    // The kept fields only: the audit log is on disk too.
    let mut m = serde_json::Map::new();
    m.insert("event_id".into(), event_id.clone().into());
    m.insert("type".into(), kind.clone().into());
    // Whether they changed, not their values: the audit log holds no
    // tenant content in the clear (it outlives a shredded tenant).
    if x.email.is_some() {
        m.insert("email".into(), true.into());
    }
    if x.card.is_some() {
        m.insert("card".into(), true.into());
    }
    if let Some((plan, status)) = &x.subscription {
        m.insert("plan".into(), plan.clone().into());
        m.insert("status".into(), status.clone().into());
    }
    if label == "stale" {
        m.insert("stale".into(), true.into());
    }
    let detail = Value::Object(m);
    let target = format!("customer:{}", x.customer_id);
    audit::record(p, Some(tenant.id), &Actor::Stripe, action, &target, detail).await?;
    if let Some(s) = tenant_status {
        let action = match s {
            TenantStatus::Active => "tenant.resume",
            TenantStatus::Suspended => "tenant.suspend",
        };
        let detail = serde_json::json!({"reason": "billing", "event_id": event_id});
        let target = format!("tenant:{}", tenant.id);
        audit::record(p, Some(tenant.id), &Actor::Stripe, action, &target, detail).await?;
        tracing::info!(tenant = %tenant.name, status = s.as_str(), "tenant status changed by billing");
    }
    // A subscription to a plan this portal defines moves the tenant onto
    // it, keeping the operator's overrides; other names are only recorded.
    if let (Some((Some(plan), _)), "applied") = (&x.subscription, label) {
        let current = p.store.tenant_plan(tenant.id).await?;
        if current.plan != *plan && p.store.get_plan(plan).await?.is_some() {
            let next = rampart_store::TenantPlan {
                plan: plan.clone(),
                ..current
            };
            p.set_tenant_plan(&Actor::Stripe, tenant.id, next).await?;
        }
    }
    Ok(Handled {
        event_id,
        duplicate: false,
        outcome: label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_kept_fields_come_out_of_a_payment_method() {
        let pm = json!({
            "id": "pm_1", "object": "payment_method", "type": "card", "customer": "cus_1",
            "billing_details": {"address": {"line1": "1 Secret St"}, "name": "N"},
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2099,
                     "fingerprint": "fp_x", "number": "4242424242424242", "cvc": "123"},
        });
        let x = extract("payment_method.attached", &pm).unwrap().unwrap();
        assert_eq!(x.customer_id, "cus_1");
        assert_eq!(x.card, Some(("visa".into(), "4242".into())));
        assert_eq!((x.email, x.subscription, x.tenant_ref), (None, None, None));
        let bad = json!({"type": "card", "customer": "cus_1", "card": {"brand": "visa", "last4": "42424"}});
        let err = extract("payment_method.attached", &bad)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("card.last4") && !err.contains("42424"),
            "{err}"
        );
    }

    #[test]
    fn subscription_plans_and_statuses() {
        let sub = |extra: Value| {
            let mut v = json!({"customer": "cus_1", "status": "active",
                "items": {"data": [{"price": {"id": "price_9", "lookup_key": "pro_monthly"}}]}});
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            v
        };
        let plan = |v: &Value, kind| extract(kind, v).unwrap().unwrap().subscription.unwrap();
        assert_eq!(
            plan(&sub(json!({})), "customer.subscription.created"),
            (Some("pro_monthly".into()), "active".into())
        );
        assert_eq!(
            plan(
                &sub(json!({"metadata": {"rampart_plan": "enterprise"}})),
                "customer.subscription.updated"
            ),
            (Some("enterprise".into()), "active".into())
        );
        assert_eq!(
            plan(
                &json!({"customer": "cus_1", "status": "past_due", "items": {"data": [{"price": {"id": "price_9"}}]}}),
                "customer.subscription.updated"
            ),
            (Some("price_9".into()), "past_due".into())
        );
        assert_eq!(
            plan(&sub(json!({})), "customer.subscription.deleted").1,
            "canceled"
        );
        assert!(extract(
            "customer.subscription.updated",
            &sub(json!({"status": "weird"}))
        )
        .is_err());
        assert!(extract("invoice.paid", &sub(json!({}))).unwrap().is_none());
        // An expanded customer object.
        let x = extract(
            "customer.subscription.updated",
            &sub(json!({"customer": {"id": "cus_2"}})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(x.customer_id, "cus_2");
    }

    #[test]
    fn billing_resumes_only_what_it_suspended() {
        let t = |status| Tenant {
            lifecycle: rampart_store::Lifecycle::Live,
            id: rampart_store::TenantId(uuid::Uuid::nil()),
            name: "acme".into(),
            domain: "acme.example".into(),
            status,
            created_at: 0,
            cert_file: None,
            key_file: None,
            region: "default".into(),
        };
        let row = |status: &str| BillingRow {
            tenant_id: rampart_store::TenantId(uuid::Uuid::nil()),
            customer_id: "cus_1".into(),
            email: None,
            card_brand: None,
            card_last4: None,
            plan: None,
            status: Some(status.into()),
            status_at: None,
            updated_at: 0,
        };
        use TenantStatus::{Active, Suspended};
        assert_eq!(
            tenant_status_for("canceled", &t(Active), None),
            Some(Suspended)
        );
        assert_eq!(tenant_status_for("canceled", &t(Suspended), None), None);
        assert_eq!(tenant_status_for("past_due", &t(Active), None), None);
        assert_eq!(
            tenant_status_for("active", &t(Suspended), Some(&row("canceled"))),
            Some(Active)
        );
        // Suspended by the operator while billing was fine: stays suspended.
        assert_eq!(
            tenant_status_for("active", &t(Suspended), Some(&row("active"))),
            None
        );
        assert_eq!(tenant_status_for("active", &t(Suspended), None), None);
        assert_eq!(
            tenant_status_for("active", &t(Active), Some(&row("canceled"))),
            None
        );
    }
}
