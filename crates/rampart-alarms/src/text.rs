//! Small string helpers shared by the candidate builders.

/// Longest title kept. Titles come partly from untrusted text (rule names,
/// check names, Suricata signatures); the portal lists them in tables.
pub(crate) const MAX_TITLE: usize = 200;
/// Longest free-text part of a dedupe key.
pub(crate) const MAX_KEY_PART: usize = 128;

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// A title: control characters become spaces, cut to [`MAX_TITLE`].
pub(crate) fn title(s: &str) -> String {
    cut(s, MAX_TITLE)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Free text made safe for a dedupe key: `|` separates key parts, so it (and
/// `%`, the escape itself) is percent-escaped, as are control characters;
/// the result is cut to [`MAX_KEY_PART`] bytes. Escaping rather than
/// replacing keeps two different inputs from sharing one key.
pub(crate) fn key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_KEY_PART));
    for c in s.chars() {
        let add = match c {
            '|' => "%7C".to_owned(),
            '%' => "%25".to_owned(),
            c if c.is_control() => format!("%{:02X}", u32::from(c) & 0xff),
            c => c.to_string(),
        };
        if out.len() + add.len() > MAX_KEY_PART {
            break;
        }
        out.push_str(&add);
    }
    out
}

/// Flow times are `u64` ms; candidates use `i64` ms like the rest of the
/// portal. Times past the year 292 million saturate.
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Bytes for a title, in decimal units as the flow pages show them.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "kB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            let whole = n / size;
            let tenth = (n % size) / (size / 10);
            return format!("{whole}.{tenth} {unit}");
        }
    }
    format!("{n} B")
}

/// A duration for a title: whole minutes when it is one, else seconds.
pub(crate) fn duration(ms: i64) -> String {
    if ms >= 60_000 && ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_are_escaped_and_bounded() {
        assert_eq!(key_part("a|b%c\n"), "a%7Cb%25c%0A");
        assert_ne!(key_part("a|b"), key_part("a%7Cb"));
        assert_eq!(key_part(&"é".repeat(100)).len(), 128);
        assert_eq!(cut("a\u{e9}", 2), "a");
        assert_eq!(title("x\ty"), "x y");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(2_000_000_000), "2.0 GB");
        assert_eq!(duration(300_000), "5 min");
        assert_eq!(duration(90_000), "90 s");
    }
}
