//! Paths in JSON, losslessly (with the `serde` feature).
//!
//! A Linux path is bytes, not text. Where this crate serializes a path
//! (the [`crate::listing`] rows), and in every JSON document of the
//! `lockyard` command, a path is a string when its bytes are UTF-8 (nearly
//! always), and otherwise an array of its bytes as numbers (as
//! `journalctl -o json` writes fields that are not text), so a reader can
//! always recover the exact path: no byte is replaced by U+FFFD. Use these
//! functions with `#[serde(serialize_with = ...)]`.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serializer;

/// Serialize `path` as described in the module docs.
///
/// # Errors
/// The serializer's.
pub fn path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => s.serialize_str(text),
        None => s.collect_seq(path.as_os_str().as_bytes()),
    }
}

/// As [`path`], for an optional path (`null` when absent).
///
/// # Errors
/// The serializer's.
#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<_>`.
pub fn opt_path<S: Serializer>(value: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(p) => path(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::OsStr;

    #[derive(serde::Serialize)]
    struct Doc {
        #[serde(serialize_with = "super::path")]
        path: std::path::PathBuf,
    }

    #[test]
    fn a_path_that_is_not_utf8_keeps_every_byte() {
        let text = serde_json::to_string(&Doc { path: "/tmp/a b".into() }).expect("json");
        assert_eq!(text, r#"{"path":"/tmp/a b"}"#);
        let raw = OsStr::from_bytes(b"/tmp/\xff\n");
        let text = serde_json::to_string(&Doc { path: raw.into() }).expect("json");
        assert_eq!(text, r#"{"path":[47,116,109,112,47,255,10]}"#);
    }

    use std::os::unix::ffi::OsStrExt;
}
