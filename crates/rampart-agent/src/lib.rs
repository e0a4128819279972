//! The Rampart edge agent: outbound-only, signed instructions in, sealed
//! batches out.
//!
//! Invariants:
//! - every connection to the portal is agent → portal; the only sockets the
//!   agent listens on are the UDP flow collectors the operator configures
//!   (`--netflow-listen`), which take datagrams and answer nothing;
//! - nothing runs unless its envelope verifies under the tenant key, names
//!   this tenant and device, is in date and is above the last applied seq;
//! - data leaves only sealed to the tenant's upload key, and is sealed before
//!   it is written to the outbox, so the outbox holds no plaintext either;
//! - flows are masked by the tenant's data controls before they are sealed,
//!   and a batch is masked under one version of them;
//! - the device key is written only wrapped.

pub mod actions;
pub mod backoff;
pub mod client;
pub mod config;
pub mod decode;
pub mod identity;
pub mod masking;
pub mod netflow;
pub mod outbox;
pub mod pipeline;
pub mod ratelimit;
pub mod rules;
pub mod run;
pub mod tail;
pub mod wg;

/// Errors of the agent library. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    State(String),
    #[error("invalid enrollment token: {0}")]
    Token(String),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}
