-- Billing (issue 6 §6): what the payment provider's webhooks tell us about a
-- tenant. Only the customer's email and the card's brand and last 4 digits
-- are kept; nothing else of a card ever reaches this table.
CREATE TABLE billing (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    -- The provider's customer id (Stripe `cus_...`): one tenant per customer.
    customer_id TEXT NOT NULL UNIQUE,
    email       TEXT,
    card_brand  TEXT,
    card_last4  TEXT,
    plan        TEXT,
    -- The subscription status as the provider says it (active, past_due, ...).
    status      TEXT,
    -- Creation time (unix seconds) of the event that set plan and status:
    -- an older event delivered late must not undo a newer one.
    status_at   INTEGER,
    updated_at  INTEGER NOT NULL
);

-- Event ids already applied, so a redelivered or replayed event changes
-- nothing. Pruned after 30 days (the provider retries for 3).
CREATE TABLE billing_events (
    event_id    TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL
);
CREATE INDEX billing_events_received ON billing_events(received_at);
