//! Edge data controls: what an agent must mask in flow records before they
//! leave it, set per tenant on the portal and delivered as a signed
//! `set_data_controls` instruction whose payload is a [`DataControls`].
//!
//! Both sides call [`DataControls::validate`]: the portal to refuse a bad
//! setting with a clear message, the agent because it must never run a
//! setting it cannot apply fully (it acks the instruction as failed with the
//! same message instead).
//!
//! The secret behind pseudonymized addresses is deliberately not part of the
//! controls: instructions are stored by the portal and shown to tenant
//! admins, so the agent fetches the key separately
//! (`GET /api/v1/device/pseudonym-key`, answered with a [`PseudonymKey`]).
//!
//! Unknown fields are refused rather than ignored: a newer portal adding a
//! masking control must not meet an older agent that silently ships what the
//! tenant asked to hide.

use serde::{Deserialize, Serialize};

/// The instruction kind whose payload is a [`DataControls`].
pub const INSTRUCTION_KIND: &str = "set_data_controls";
/// Most redaction rules one setting may hold.
pub const MAX_REDACTIONS: usize = 32;
/// Longest redaction pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Longest redaction replacement, in bytes.
pub const MAX_REPLACEMENT_BYTES: usize = 64;
/// Compiled size limit of one pattern (the regex crate's `size_limit`), so
/// a short pattern with huge repetitions cannot use a lot of memory.
pub const MAX_COMPILED_REGEX_BYTES: usize = 1 << 20;
/// Longest pseudonym key, decoded.
pub const MAX_PSEUDONYM_KEY_BYTES: usize = 64;
/// Shortest pseudonym key, decoded: an HMAC-SHA256 key below 128 bits would
/// make pseudonyms guessable by trying keys.
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 16;
/// Longest pseudonym key id.
pub const MAX_KEY_ID_BYTES: usize = 128;

/// Default IPv4 truncation: keep the /24.
pub const DEFAULT_V4_PREFIX: u8 = 24;
/// Default IPv6 truncation: keep the /48.
pub const DEFAULT_V6_PREFIX: u8 = 48;

/// A flow field that can be dropped: the agent ships it as zero (the
/// unspecified address for `exporter`, an empty label for `app`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(schemars::JsonSchema)]
pub enum FlowField {
    SrcPort,
    DstPort,
    Protocol,
    TcpFlags,
    InIf,
    OutIf,
    Direction,
    Exporter,
    DomainId,
    App,
}

/// A text field that redaction rules apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(schemars::JsonSchema)]
pub enum TextField {
    /// The flow's application label (Zeek `service`, Suricata `app_proto`).
    App,
}

/// Addresses are cut to these prefix lengths (the rest set to zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(schemars::JsonSchema)]
pub struct Truncate {
    /// 0 to 32.
    #[serde(default = "default_v4_prefix")]
    pub v4_prefix: u8,
    /// 0 to 128.
    #[serde(default = "default_v6_prefix")]
    pub v6_prefix: u8,
}

fn default_v4_prefix() -> u8 {
    DEFAULT_V4_PREFIX
}

fn default_v6_prefix() -> u8 {
    DEFAULT_V6_PREFIX
}

impl Default for Truncate {
    fn default() -> Self {
        Truncate {
            v4_prefix: DEFAULT_V4_PREFIX,
            v6_prefix: DEFAULT_V6_PREFIX,
        }
    }
}

/// Every match of `pattern` in `field` is replaced by `replacement`
/// (`$1`, `${name}` refer to groups, as in the regex crate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(schemars::JsonSchema)]
pub struct Redaction {
    pub field: TextField,
    pub pattern: String,
    #[serde(default)]
    pub replacement: String,
}

/// What an agent masks before flow records leave it. The default masks
/// nothing.
///
/// Applied in this order: drop fields, stop collecting addresses,
/// truncate then pseudonymize addresses, redact text. When both `truncate`
/// and `pseudonymize_addresses` are set, the truncated prefix is
/// pseudonymized: one stable pseudonym per network, hiding both the network
/// and the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(schemars::JsonSchema)]
pub struct DataControls {
    /// Set by the portal, increasing with each change; the agent acks the
    /// version it applied. Absent in a config document's `masking`: the
    /// agent numbers those by the config revision.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub drop_fields: Vec<FlowField>,
    #[serde(default)]
    pub truncate: Option<Truncate>,
    #[serde(default)]
    pub pseudonymize_addresses: bool,
    #[serde(default)]
    pub redact: Vec<Redaction>,
    /// False: no IP address is collected at all (source, destination and
    /// exporter are shipped as the unspecified address).
    #[serde(default = "yes")]
    pub collect_addresses: bool,
}

fn yes() -> bool {
    true
}

impl Default for DataControls {
    fn default() -> Self {
        DataControls {
            version: 0,
            drop_fields: Vec::new(),
            truncate: None,
            pseudonymize_addresses: false,
            redact: Vec::new(),
            collect_addresses: true,
        }
    }
}

/// Why a [`DataControls`] or [`PseudonymKey`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlsError {
    #[error("data controls are not valid json for this agent: {0}: check the field names and types, or upgrade the agent")]
    Json(String),
    #[error("data controls hold {count} redaction rules, the limit is {MAX_REDACTIONS}: merge rules with alternation")]
    TooManyRedactions { count: usize },
    #[error(
        "redaction {index} pattern is {len} bytes, the limit is {MAX_PATTERN_BYTES}: shorten it"
    )]
    PatternTooLong { index: usize, len: usize },
    #[error("redaction {index} replacement is {len} bytes, the limit is {MAX_REPLACEMENT_BYTES}: shorten it")]
    ReplacementTooLong { index: usize, len: usize },
    #[error("redaction {index} pattern does not compile: {detail}: fix the pattern")]
    BadPattern { index: usize, detail: String },
    #[error("redaction {index} pattern matches the empty string: anchor it or use + instead of *")]
    EmptyMatch { index: usize },
    #[error("truncate v4_prefix is {0}, it must be 0 to 32")]
    V4Prefix(u8),
    #[error("truncate v6_prefix is {0}, it must be 0 to 128")]
    V6Prefix(u8),
    #[error("pseudonym key is malformed: {0}: fetch it again from the portal")]
    Key(String),
}

impl From<ControlsError> for crate::ProtoError {
    fn from(e: ControlsError) -> Self {
        crate::ProtoError::malformed("data controls", e)
    }
}

/// Compiles a redaction pattern with the size limits every user of
/// [`DataControls`] must use, so the portal and agent accept the same set.
pub fn compile_pattern(index: usize, pattern: &str) -> Result<regex::Regex, ControlsError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ControlsError::PatternTooLong {
            index,
            len: pattern.len(),
        });
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(MAX_COMPILED_REGEX_BYTES)
        .dfa_size_limit(MAX_COMPILED_REGEX_BYTES)
        .nest_limit(64)
        .build()
        .map_err(|e| ControlsError::BadPattern {
            index,
            detail: e.to_string().replace('\n', " "),
        })?;
    // A rule that matches nothing at all would insert its replacement between
    // every character, which is never what a tenant means.
    if re.is_match("") {
        return Err(ControlsError::EmptyMatch { index });
    }
    Ok(re)
}

impl DataControls {
    /// Parses an instruction payload and validates it.
    pub fn from_payload(payload: &serde_json::Value) -> Result<Self, ControlsError> {
        let c: DataControls = serde::Deserialize::deserialize(payload)
            .map_err(|e| ControlsError::Json(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks every limit and compiles every pattern.
    pub fn validate(&self) -> Result<(), ControlsError> {
        self.compiled_patterns().map(|_| ())
    }

    /// Validates, then returns the compiled redaction patterns in order.
    pub fn compiled_patterns(&self) -> Result<Vec<(TextField, regex::Regex)>, ControlsError> {
        if let Some(t) = self.truncate {
            if t.v4_prefix > 32 {
                return Err(ControlsError::V4Prefix(t.v4_prefix));
            }
            if t.v6_prefix > 128 {
                return Err(ControlsError::V6Prefix(t.v6_prefix));
            }
        }
        if self.redact.len() > MAX_REDACTIONS {
            return Err(ControlsError::TooManyRedactions {
                count: self.redact.len(),
            });
        }
        self.redact
            .iter()
            .enumerate()
            .map(|(index, r)| {
                if r.replacement.len() > MAX_REPLACEMENT_BYTES {
                    return Err(ControlsError::ReplacementTooLong {
                        index,
                        len: r.replacement.len(),
                    });
                }
                Ok((r.field, compile_pattern(index, &r.pattern)?))
            })
            .collect()
    }

    /// Whether `field` is to be dropped.
    pub fn drops(&self, field: FlowField) -> bool {
        self.drop_fields.contains(&field)
    }

    /// Whether these controls need the tenant's pseudonym key.
    pub fn needs_pseudonym_key(&self) -> bool {
        self.collect_addresses && self.pseudonymize_addresses
    }
}

/// `GET /api/v1/device/pseudonym-key`: the tenant's secret for keyed-hash
/// address pseudonyms. Agents keep it only wrapped under their local key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PseudonymKey {
    /// Names the key, so a rotation can be told apart.
    pub key_id: String,
    /// Base64 of 16 to 64 random bytes.
    pub key_b64: String,
}

impl PseudonymKey {
    /// The key bytes, checked for length.
    pub fn key_bytes(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ControlsError> {
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID_BYTES {
            return Err(ControlsError::Key(format!(
                "key id must be 1 to {MAX_KEY_ID_BYTES} bytes"
            )));
        }
        let k = crate::unb64("pseudonym key", &self.key_b64, MAX_PSEUDONYM_KEY_BYTES)
            .map_err(|e| ControlsError::Key(e.to_string()))?;
        let k = zeroize::Zeroizing::new(k);
        if !(MIN_PSEUDONYM_KEY_BYTES..=MAX_PSEUDONYM_KEY_BYTES).contains(&k.len()) {
            return Err(ControlsError::Key(format!(
                "key is {} bytes, it must be {MIN_PSEUDONYM_KEY_BYTES} to {MAX_PSEUDONYM_KEY_BYTES}",
                k.len()
            )));
        }
        Ok(k)
    }
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_payload_masks_nothing_and_defaults_prefixes() {
        let c = DataControls::from_payload(&json!({"version": 3})).unwrap();
        assert_eq!(
            c,
            DataControls {
                version: 3,
                ..DataControls::default()
            }
        );
        assert!(c.collect_addresses);
        let c = DataControls::from_payload(&json!({"version": 4, "truncate": {}})).unwrap();
        assert_eq!(
            c.truncate,
            Some(Truncate {
                v4_prefix: 24,
                v6_prefix: 48
            })
        );
    }

    #[test]
    fn full_payload_parses() {
        let c = DataControls::from_payload(&json!({
            "version": 9,
            "drop_fields": ["src_port", "in_if", "app", "exporter"],
            "truncate": {"v4_prefix": 16, "v6_prefix": 64},
            "pseudonymize_addresses": true,
            "redact": [{"field": "app", "pattern": "^secret", "replacement": "x"}],
            "collect_addresses": true
        }))
        .unwrap();
        assert!(c.drops(FlowField::InIf) && !c.drops(FlowField::DstPort));
        assert!(c.needs_pseudonym_key());
        assert_eq!(c.compiled_patterns().unwrap().len(), 1);
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        for bad in [
            json!({"version": 1, "hash_everything": true}),
            json!({"version": 1, "drop_fields": ["src_addr_typo"]}),
            json!({"version": 1, "redact": [{"field": "dns_query", "pattern": "a"}]}),
            json!({"version": 1, "truncate": {"v4": 8}}),
        ] {
            let err = DataControls::from_payload(&bad).unwrap_err();
            assert!(matches!(err, ControlsError::Json(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn limits_are_enforced_with_clear_messages() {
        let base = DataControls {
            version: 1,
            ..DataControls::default()
        };
        let with = |f: &dyn Fn(&mut DataControls)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        let rule = |p: &str| Redaction {
            field: TextField::App,
            pattern: p.into(),
            replacement: String::new(),
        };
        assert_eq!(
            with(&|c| c.truncate = Some(Truncate {
                v4_prefix: 33,
                v6_prefix: 48
            })),
            ControlsError::V4Prefix(33)
        );
        assert_eq!(
            with(&|c| c.truncate = Some(Truncate {
                v4_prefix: 24,
                v6_prefix: 129
            })),
            ControlsError::V6Prefix(129)
        );
        assert_eq!(
            with(&|c| c.redact = vec![rule("a"); 33]),
            ControlsError::TooManyRedactions { count: 33 }
        );
        assert_eq!(
            with(&|c| c.redact = vec![rule(&"a".repeat(513))]),
            ControlsError::PatternTooLong { index: 0, len: 513 }
        );
        assert!(matches!(
            with(&|c| c.redact = vec![rule("ok"), rule("(unclosed")]),
            ControlsError::BadPattern { index: 1, .. }
        ));
        assert_eq!(
            with(&|c| c.redact = vec![rule("x*")]),
            ControlsError::EmptyMatch { index: 0 }
        );
        // Short to write, huge to compile: refused by the size limit.
        let err = with(&|c| c.redact = vec![rule(r"\w{1000}\w{1000}\w{1000}")]);
        assert!(
            matches!(err, ControlsError::BadPattern { index: 0, .. }),
            "{err:?}"
        );
        let mut c = base.clone();
        c.redact = vec![rule("a"); 32];
        c.truncate = Some(Truncate {
            v4_prefix: 32,
            v6_prefix: 128,
        });
        c.validate().unwrap();
        let msg = ControlsError::PatternTooLong { index: 0, len: 513 }.to_string();
        assert_eq!(
            msg,
            "redaction 0 pattern is 513 bytes, the limit is 512: shorten it"
        );
    }

    #[test]
    fn pseudonym_key_length_is_checked_and_not_printed() {
        let k = |b: &[u8]| PseudonymKey {
            key_id: "k1".into(),
            key_b64: crate::b64(b),
        };
        assert_eq!(&*k(&[7; 32]).key_bytes().unwrap(), &[7; 32]);
        assert!(k(&[7; 15]).key_bytes().is_err());
        assert!(k(&[7; 65]).key_bytes().is_err());
        let mut no_id = k(&[7; 32]);
        no_id.key_id.clear();
        assert!(no_id.key_bytes().is_err());
        assert!(!format!("{:?}", k(&[7; 32])).contains(&crate::b64(&[7; 32])));
    }
}
