/// Why a datagram, or a part of one, could not be decoded.
///
/// [`crate::Decoder::decode`] returns an error only when the datagram is
/// refused as a whole (its header is short, has an unknown version or
/// contradicts the datagram); nothing was decoded from it then. Problems
/// confined to one set or one template record (a refused template, a set
/// running past the end of the datagram) are skipped, counted, and the first
/// of them is reported in [`crate::DecodeStats::error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: needs {need} bytes at offset {offset}, only {have} remain")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("unsupported flow export version {0}: expected 5 (netflow v5), 9 (netflow v9) or 10 (ipfix)")]
    BadVersion(u16),
    #[error("bad length: {what} is {value}, {reason}")]
    BadLength {
        what: &'static str,
        value: usize,
        reason: &'static str,
    },
    #[error("template id {template_id} is reserved: data template ids start at 256")]
    BadTemplateId { template_id: u16 },
    #[error(
        "template {template_id} declares {length}-byte records, more than any datagram can carry"
    )]
    AbsurdFieldLength { template_id: u16, length: usize },
    #[error("template {template_id} has {count} fields, more than the limit of {limit}")]
    TooManyFields {
        template_id: u16,
        count: usize,
        limit: usize,
    },
    #[error("template {template_id} describes zero-length records, which would never advance (template loop)")]
    ZeroLengthTemplate { template_id: u16 },
    #[error(
        "options template {template_id} declares {scope} scope fields but has only {count} fields"
    )]
    BadScope {
        template_id: u16,
        scope: usize,
        count: usize,
    },
    #[error("record of template {template_id} runs past the end of its set at offset {offset}")]
    RecordOverrun { template_id: u16, offset: usize },
}

impl DecodeError {
    pub(crate) fn truncated(what: &'static str, offset: usize, need: usize, have: usize) -> Self {
        DecodeError::Truncated {
            what,
            offset,
            need,
            have,
        }
    }
}
