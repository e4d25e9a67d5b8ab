//! One error type for every parser and reader in this crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A /proc file could not be read or did not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes were read but line `line` (1-based) is malformed.
    ///
    /// `file` is the real path when the bytes came from one of the `read`
    /// helpers, and the conventional name of the format (for example
    /// `mountinfo`) when the caller passed bytes to a `parse` function.
    #[error("{}: line {line}: {reason}", file.display())]
    Parse {
        /// The file (or format name) the bytes came from.
        file: PathBuf,
        /// 1-based line number of the malformed line.
        line: usize,
        /// What was wrong with it.
        reason: Reason,
    },
    /// The file could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The [`io::ErrorKind`] this error stands for: the read's own kind,
    /// or `InvalidData` for a malformed line.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Read { source, .. } => source.kind(),
            Error::Parse { .. } => io::ErrorKind::InvalidData,
        }
    }

    /// Whether the error means the file does not exist, as when the process
    /// being inspected has exited.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// Whether the error means the process or descriptor being inspected
    /// went away (`ENOENT`, or `ESRCH` through a directory descriptor of a
    /// process that exited).
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Read { source, .. }
            if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()))
    }

    /// Re-label a parse error with the path its bytes were read from.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Error::Parse { line, reason, .. } => Error::Parse { file: path.into(), line, reason },
            other => other,
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Read { path: path.into(), source }
    }
}

/// What was wrong with a malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The line ended before this field.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The field is present but not of the expected shape.
    #[error("field `{field}` is {value}, expected {expected}")]
    InvalidField {
        /// Name of the field, as the kernel's documentation calls it.
        field: &'static str,
        /// The offending text, escaped and shortened for display.
        value: Shown,
        /// A short description of what would have been accepted.
        expected: &'static str,
    },
}

/// Bytes from a malformed line, kept short and printable for messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

/// For `io::Result` code: the error of the matching kind
/// ([`Error::io_kind`]), this one kept inside.
impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

impl Shown {
    const MAX: usize = 64;

    pub(crate) fn new(bytes: &[u8]) -> Self {
        let cut = bytes.len().min(Self::MAX);
        let mut text = format!("{:?}", String::from_utf8_lossy(&bytes[..cut]));
        if cut < bytes.len() {
            text.push('…');
        }
        Shown(text)
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shorthand for building a parse error inside the parsers, before the
/// file name is known.
pub(crate) fn invalid(
    format: &'static str,
    line: usize,
    field: &'static str,
    value: &[u8],
    expected: &'static str,
) -> Error {
    Error::Parse {
        file: PathBuf::from(format),
        line,
        reason: Reason::InvalidField { field, value: Shown::new(value), expected },
    }
}

pub(crate) fn missing(format: &'static str, line: usize, field: &'static str) -> Error {
    Error::Parse { file: PathBuf::from(format), line, reason: Reason::MissingField(field) }
}

#[cfg(test)]
mod io_tests {
    #[test]
    fn a_malformed_file_is_invalid_data_and_a_failed_read_keeps_its_kind() {
        let parse = crate::ProcLocks::parse(b"not a lock\n").expect_err("malformed");
        assert_eq!(std::io::Error::from(parse).kind(), std::io::ErrorKind::InvalidData);
        let read = crate::ProcLocks::read_from("/nonexistent/locks").expect_err("missing");
        assert_eq!(std::io::Error::from(read).kind(), std::io::ErrorKind::NotFound);
    }
}
