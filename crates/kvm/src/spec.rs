//! What kernel a harness asks for, in one string.
//!
//! ```text
//! spec    = path | version | key
//! path    = "path:" ANY | ANY containing "/" | "." | ".."   a file (an image) or a directory (a build tree)
//! version = "version:" V | V                                 V = DIGITS "." DIGITS ["." DIGITS] [suffix]
//! key     = "key:" K | K                                     K = a lockyard cache key
//! suffix  = ("-" | "+" | "_" | "~") followed by letters, digits, ".", "-", "+", "_", "~"
//! ```
//!
//! Without a prefix, a string with a `/` (or `.`, `..`) is a path, one
//! that reads as a version is a version, and anything else that is a
//! valid cache key is a key. The prefixes say it outright (`path:linux`
//! for a directory named `linux` here, `key:6.14.2` for a cache key that
//! looks like a version). The library reads no environment: the
//! `lockyard` command takes `LOCKYARD_KERNEL` as the spec when given
//! none.

use std::fmt;
use std::path::PathBuf;

/// A parsed kernel spec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelSpec {
    /// An image file, or a kernel build tree.
    Path(PathBuf),
    /// A kernel release: its cached image, else the installed one, each
    /// checked to name this release in its header.
    Version(String),
    /// A lockyard cache key.
    Key(String),
}

/// Why a spec does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid kernel spec {spec:?}: {reason}; expected a path (with a '/', or path:NAME), a version (6.14.2), or a cache key (key:NAME)"
)]
#[non_exhaustive]
pub struct SpecError {
    /// The text given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl KernelSpec {
    /// Parse a spec (see the module docs).
    ///
    /// # Errors
    /// [`SpecError`] for an empty spec, an empty value after a prefix, or
    /// a key or version that is not one.
    pub fn parse(text: &str) -> Result<KernelSpec, SpecError> {
        let bad = |reason| Err(SpecError { spec: text.to_owned(), reason });
        if text.is_empty() {
            return bad("it is empty");
        }
        if let Some(path) = text.strip_prefix("path:") {
            if path.is_empty() {
                return bad("nothing follows path:");
            }
            return Ok(KernelSpec::Path(PathBuf::from(path)));
        }
        if let Some(version) = text.strip_prefix("version:") {
            if !is_version(version) {
                return bad("what follows version: is not a version such as 6.14.2 or 6.14.2-rc1");
            }
            return Ok(KernelSpec::Version(version.to_owned()));
        }
        if let Some(key) = text.strip_prefix("key:") {
            if !is_key(key) {
                return bad("what follows key: is not a cache key (letters, digits, '.', '-', '_', '+')");
            }
            return Ok(KernelSpec::Key(key.to_owned()));
        }
        if text.contains('/') || text == "." || text == ".." {
            return Ok(KernelSpec::Path(PathBuf::from(text)));
        }
        if is_version(text) {
            return Ok(KernelSpec::Version(text.to_owned()));
        }
        if is_key(text) {
            return Ok(KernelSpec::Key(text.to_owned()));
        }
        bad("it is neither a path, a version nor a cache key")
    }
}

/// Prints as a spec that parses back to the same value.
impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Path(path) => write!(f, "path:{}", path.display()),
            KernelSpec::Version(version) => write!(f, "version:{version}"),
            KernelSpec::Key(key) => write!(f, "key:{key}"),
        }
    }
}

/// `6.14`, `6.14.2`, `6.14.2-rc1`, `6.1.0-28-cloud-amd64`.
fn is_version(text: &str) -> bool {
    let (numbers, suffix) = match text.find(['-', '+', '_', '~']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    let numeric = (2..=3).contains(&parts.len())
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_none_or(|s| {
        !s.is_empty()
            && !s.ends_with(['-', '+', '_', '~', '.'])
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
    });
    numeric && suffix_ok
}

/// A key the lockyard cache accepts, and nothing a path could be.
fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('.')
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_parses() {
        assert_eq!(KernelSpec::parse("6.14.2"), Ok(KernelSpec::Version("6.14.2".into())));
        assert_eq!(KernelSpec::parse("6.14"), Ok(KernelSpec::Version("6.14".into())));
        assert_eq!(
            KernelSpec::parse("6.1.0-28-cloud-amd64"),
            Ok(KernelSpec::Version("6.1.0-28-cloud-amd64".into()))
        );
        assert_eq!(KernelSpec::parse("./linux"), Ok(KernelSpec::Path("./linux".into())));
        assert_eq!(KernelSpec::parse("/boot/vmlinuz"), Ok(KernelSpec::Path("/boot/vmlinuz".into())));
        assert_eq!(KernelSpec::parse("."), Ok(KernelSpec::Path(".".into())));
        assert_eq!(KernelSpec::parse("path:linux"), Ok(KernelSpec::Path("linux".into())));
        assert_eq!(KernelSpec::parse("sched-ext-v3"), Ok(KernelSpec::Key("sched-ext-v3".into())));
        assert_eq!(KernelSpec::parse("key:6.14.2"), Ok(KernelSpec::Key("6.14.2".into())));
        assert_eq!(KernelSpec::parse("version:6.14.2"), Ok(KernelSpec::Version("6.14.2".into())));
        // Not a version (a trailing dash), but a valid cache key.
        assert_eq!(KernelSpec::parse("6.14.2-"), Ok(KernelSpec::Key("6.14.2-".into())));
    }

    #[test]
    fn malformed_specs_say_what_was_expected() {
        for bad in ["", "path:", "version:six", "version:6.14.2-", "key:", "key:a/b", "two words", "ünï"] {
            let err = KernelSpec::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("expected a path"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// No input makes the parser panic, and whatever parses prints as
        /// a spec that parses back to the same value.
        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,40}") {
            if let Ok(spec) = KernelSpec::parse(&text) {
                proptest::prop_assert_eq!(KernelSpec::parse(&spec.to_string()), Ok(spec));
            }
        }

        #[test]
        fn versions_and_keys_round_trip(text in "[0-9]{1,3}\\.[0-9]{1,3}(\\.[0-9]{1,3})?(-[a-z0-9]{1,8})?|[a-z][a-z0-9_-]{0,20}") {
            let spec = KernelSpec::parse(&text).expect("parses");
            proptest::prop_assert_eq!(KernelSpec::parse(&spec.to_string()), Ok(spec));
        }
    }
}
