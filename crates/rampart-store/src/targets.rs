//! Target lists: a tenant's named lists of domains, addresses and CIDRs
//! (issue 7). The portal validates and normalizes entries; the store keeps
//! what it is given, sealed.

use serde::{Deserialize, Serialize};

/// Where a list's entries come from.
pub const SOURCE_MANUAL: &str = "manual";
/// Prefix of a source that names an operator-configured import source.
pub const SOURCE_URL_PREFIX: &str = "url:";

/// One target list of one tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetListRow {
    pub name: String,
    pub description: String,
    /// Normalized entries, sorted and unique.
    pub entries: Vec<String>,
    /// [`SOURCE_MANUAL`] or `url:<source name>`.
    pub source: String,
    /// 1 when created, one more with every change.
    pub version: u64,
    /// Unix seconds.
    pub updated_at: i64,
    pub last_import: Option<TargetImport>,
}

/// The outcome of the newest import of a list bound to a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetImport {
    /// Unix seconds.
    pub at: i64,
    /// Lines taken as entries, and lines skipped as invalid.
    pub accepted: u64,
    pub skipped: u64,
    /// Set when the import failed (the entries were then left as they were).
    pub error: Option<String>,
}
