//! The pure logic of Rampart's alarm engine (issue 5): what becomes an alarm
//! candidate, the flow detectors that find them, the rules that mute or
//! allow them, and the webhook signing scheme that notifies about them.
//!
//! - [`model`]: [`Candidate`](model::Candidate), [`Severity`](model::Severity),
//!   [`AlarmKind`](model::AlarmKind): what every source produces and the
//!   portal deduplicates by `dedupe_key`;
//! - [`source`]: the constructors (and the [`AlarmSource`](source::AlarmSource)
//!   trait) through which the other roles raise candidates: operational
//!   alarms, checkpoint failures, filtering-node attacks;
//! - [`eve`]: Suricata alerts (read by `rampart_flow::eve`) to candidates;
//! - [`settings`]: per-tenant [`DetectorSettings`](settings::DetectorSettings)
//!   and the small [`Cidr`](settings::Cidr) type;
//! - [`detect`]: [`FlowDetectors`](detect::FlowDetectors), the stateful,
//!   bounded, snapshot-able detectors run over a tenant's flows;
//! - [`rules`]: mute and allow rules;
//! - [`webhook`]: `Rampart-Signature` signing and verification, and the
//!   delivery [`Backoff`](webhook::Backoff).
//!
//! ```
//! use rampart_alarms::detect::{FlowDetectors, FlowObs};
//! use rampart_alarms::settings::DetectorSettings;
//! use rampart_alarms::webhook;
//!
//! let mut detectors = FlowDetectors::new(&DetectorSettings::default()).unwrap();
//! # let flow: rampart_flow::FlowRecord = rampart_flow::eve::parse_line(br#"{"timestamp":"2024-01-01T00:00:00Z","event_type":"netflow","src_ip":"10.0.0.5","dest_ip":"198.51.100.1","src_port":40000,"dest_port":443,"proto":"TCP","netflow":{"pkts":10,"bytes":1500}}"#, "0.0.0.0".parse().unwrap()).unwrap().flows().next().copied().unwrap();
//! let obs = FlowObs {
//!     flow: &flow,
//!     device: uuid::Uuid::nil(),
//!     src_country: *b"ZZ",
//!     dst_country: *b"US",
//!     src_asn: 0,
//!     dst_asn: 64_496,
//! };
//! for candidate in detectors.observe(&obs) {
//!     let body = serde_json::to_vec(&candidate).unwrap();
//!     let header = webhook::sign(b"secret", 1_700_000_000, &body);
//!     assert!(webhook::verify(b"secret", &header, &body, 1_700_000_000, 300).is_ok());
//! }
//! let saved = detectors.snapshot(); // persist; after a restart:
//! let detectors = FlowDetectors::restore(&DetectorSettings::default(), &saved).unwrap();
//! assert_eq!(detectors.stats().flows, 1);
//! ```
//!
//! Invariants: no IO and no clock (callers pass `now_ms`; detectors use flow
//! time only, so replaying the same flows gives the same alarms); nothing
//! here knows of tenants, storage or HTTP; every state map is bounded and
//! counts what it dropped; untrusted input never panics.

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

pub mod detect;
mod error;
pub mod eve;
pub mod model;
pub mod netset;
pub mod rules;
pub mod settings;
pub mod source;
mod text;
pub mod webhook;

pub use error::Error;
