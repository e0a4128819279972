//! The Rampart edge agent: outbound-only, signed instructions in, sealed
//! batches out.
//!
//! Invariants:
//! - the agent never listens on a socket; all traffic is agent → portal;
//! - nothing runs unless its envelope verifies under the tenant key, names
//!   this tenant and device, is in date and is above the last applied seq;
//! - data leaves only sealed to the tenant's upload key, and is sealed before
//!   it is written to the outbox, so the outbox holds no plaintext either;
//! - the device key is written only wrapped.

pub mod backoff;
pub mod client;
pub mod decode;
pub mod identity;
pub mod outbox;
pub mod run;

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
