//! Flow export decoding for the Rampart agent's collectors: NetFlow v5
//! (Cisco's fixed format), NetFlow v9 (RFC 3954) and IPFIX (RFC 7011/7012)
//! datagrams into compact, normalised [`FlowRecord`]s.
//!
//! ```
//! use rampart_flow::{Decoder, FlowRecord};
//!
//! let mut decoder = Decoder::default();
//! let mut out: Vec<FlowRecord> = Vec::new();
//! # let datagram = [0u8, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
//! let exporter = "192.0.2.1".parse().unwrap();
//! let now_ms = 1_700_000_000_000;
//! match decoder.decode(exporter, &datagram, now_ms, &mut out) {
//!     Ok(stats) => assert_eq!(stats.records, out.len()),
//!     Err(e) => eprintln!("dropped a datagram from {exporter}: {e}"),
//! }
//! ```
//!
//! Invariants:
//! - a pure library: no sockets, no files, no clock (callers pass `now_ms`,
//!   used only to expire templates), no tenants, no storage;
//! - never panics on input and never allocates from a length field: counts
//!   are bounded by the bytes actually present, templates by
//!   [`MAX_TEMPLATE_FIELDS`] and [`MAX_RECORD_LEN`], state by
//!   [`DecoderConfig`];
//! - templates are keyed by (exporter, observation domain / source id,
//!   template id), so exporters and domains never see each other's.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod codec;
mod decoder;
mod error;
pub mod eve;
mod fields;
pub mod filter;
mod ipfix;
mod record;
mod template;
mod v5;
mod v9;
mod wire;
pub mod zeek;

pub use decoder::{DecodeStats, Decoder, DecoderConfig, ExporterCounters};
pub use error::DecodeError;
pub use record::{AppLabel, Direction, FlowFlags, FlowRecord};
pub use template::{TemplateCache, TemplateKind, MAX_RECORD_LEN, MAX_TEMPLATE_FIELDS};
