//! The crate's one error type.

/// Why an alarm-engine call failed. Messages are lowercase and say what to
/// do, as everywhere in Rampart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown severity {0:?}: use info, low, medium, high or critical")]
    UnknownSeverity(String),
    #[error("unknown alarm kind {0:?}: use one of the names in AlarmKind::ALL")]
    UnknownKind(String),
    #[error(
        "bad network {0:?}: write an address or address/prefix such as 10.0.0.0/8 or fc00::/7"
    )]
    BadCidr(String),
    #[error("bad detector settings: {0}")]
    Settings(String),
    #[error("detector snapshot is unreadable ({0}): discard it and let the detectors learn again")]
    Snapshot(String),
    #[error("detector snapshot has format version {found}, this build reads {expected}: discard it and let the detectors learn again")]
    SnapshotVersion { found: u32, expected: u32 },
}
