//! Cache keys: which strings may name an entry.

/// The longest key, in bytes: staging names add a pid, a random suffix
/// and `.lock`, and must stay under the 255-byte file name limit.
pub const MAX_KEY_LEN: usize = 200;

/// What is wrong with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The empty string.
    Empty,
    /// More than [`MAX_KEY_LEN`] bytes.
    TooLong,
    /// Contains `/`.
    Slash,
    /// Contains a NUL byte.
    Nul,
    /// `.` or `..`.
    DotName,
    /// Starts with `.`: reserved for the cache's own names.
    LeadingDot,
    /// Contains a control character (newline, tab, escape, ...).
    Control,
    /// Only white space: it would print as nothing.
    Blank,
    /// Contains a bidirectional-text control (U+202A..U+202E,
    /// U+2066..U+2069, U+200E, U+200F, U+061C), which makes a key print as
    /// another.
    Bidi,
    /// A name the cache root keeps for itself (`CACHEDIR.TAG`).
    Reserved,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyError::Empty => "it is empty",
            KeyError::TooLong => "it is longer than 200 bytes",
            KeyError::Slash => "it contains `/`",
            KeyError::Nul => "it contains a NUL byte",
            KeyError::DotName => "`.` and `..` name directories, not entries",
            KeyError::LeadingDot => "a leading `.` is reserved for the cache's own files",
            KeyError::Control => "it contains a control character",
            KeyError::Blank => "it is only white space",
            KeyError::Bidi => {
                "it contains a bidirectional-text control character, which disguises what it prints as"
            }
            KeyError::Reserved => "CACHEDIR.TAG is a name the cache root keeps for itself",
        })
    }
}

/// Check that `key` can name an entry: 1 to [`MAX_KEY_LEN`] bytes of
/// UTF-8 with no `/`, NUL or other control character, not `.` or `..`,
/// not starting with `.` (the cache's own `.locks`, `.staging`), not only
/// white space, without bidirectional-text controls, and not
/// `CACHEDIR.TAG`. Everything else is accepted, inner spaces and
/// non-ASCII letters included.
///
/// # Errors
/// The first rule the key breaks.
pub fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if key == "." || key == ".." {
        return Err(KeyError::DotName);
    }
    if key.starts_with('.') {
        return Err(KeyError::LeadingDot);
    }
    if key.contains('/') {
        return Err(KeyError::Slash);
    }
    if key.contains('\0') {
        return Err(KeyError::Nul);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    if key.chars().all(char::is_whitespace) {
        return Err(KeyError::Blank);
    }
    if key.chars().any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')) {
        return Err(KeyError::Bidi);
    }
    if key == crate::TAG {
        return Err(KeyError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_rule_by_rule() {
        for good in ["linux-6.18", "disk template v2", "ünïcode", "a.b.c", "x..y", &"k".repeat(200)] {
            assert_eq!(validate(good), Ok(()), "{good:?}");
        }
        let cases: [(&str, KeyError); 13] = [
            ("", KeyError::Empty),
            (&"k".repeat(201), KeyError::TooLong),
            ("a/b", KeyError::Slash),
            ("a\0b", KeyError::Nul),
            (".", KeyError::DotName),
            ("..", KeyError::DotName),
            (".locks", KeyError::LeadingDot),
            ("a\nb", KeyError::Control),
            ("a\u{1b}[31m", KeyError::Control),
            ("   ", KeyError::Blank),
            ("\u{3000}", KeyError::Blank),
            ("evil\u{202e}txt.exe", KeyError::Bidi),
            ("CACHEDIR.TAG", KeyError::Reserved),
        ];
        for (bad, why) in cases {
            assert_eq!(validate(bad), Err(why), "{bad:?}");
        }
    }
}
