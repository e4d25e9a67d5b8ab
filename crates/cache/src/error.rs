//! The one error type of the cache.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use lockyard_flock::{FsType, Holders, LockError};

use crate::key::KeyError;

/// Why an entry cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CorruptReason {
    /// The entry has no `entry.json`.
    MissingMetadata,
    /// `entry.json` or the entry could not be read.
    Unreadable,
    /// `entry.json` is not the metadata this crate writes.
    Malformed,
    /// `entry.json` was written by a newer version of this crate.
    SchemaFromTheFuture,
    /// The content no longer matches the digest recorded at publish time.
    DigestMismatch,
    /// Something other than a directory (a planted symlink, a file) sits
    /// where the entry should be.
    NotADirectory,
}

impl std::fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CorruptReason::MissingMetadata => "entry.json is missing",
            CorruptReason::Unreadable => "the entry cannot be read",
            CorruptReason::Malformed => "entry.json is malformed",
            CorruptReason::SchemaFromTheFuture => "entry.json was written by a newer lockyard-cache",
            CorruptReason::DigestMismatch => "the content does not match its recorded digest",
            CorruptReason::NotADirectory => "it is not a directory (a planted symlink or a stray file)",
        })
    }
}

/// Why a directory is not a cache lockyard may use (see
/// [`crate::Cache::open`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotACache {
    /// It does not exist (only when opened read-only).
    Missing,
    /// It is empty, or was adopted but not yet set up (only when opened
    /// read-only).
    Empty,
    /// It holds files but no [`crate::MARKER`]: not a lockyard cache.
    Foreign {
        /// A few of its names, sorted.
        shown: Vec<String>,
        /// How many names it holds.
        count: usize,
    },
}

impl std::fmt::Display for NotACache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotACache::Missing => f.write_str("no cache here: the directory does not exist"),
            NotACache::Empty => f.write_str("no cache here yet: nothing has been stored"),
            NotACache::Foreign { shown, count } => {
                write!(f, "not a lockyard cache: it has no {} marker and holds ", crate::MARKER)?;
                let quoted: Vec<String> = shown.iter().map(|n| format!("{n:?}")).collect();
                f.write_str(&quoted.join(", "))?;
                if *count > shown.len() {
                    write!(f, " and {} more", count - shown.len())?;
                }
                f.write_str(
                    "; refusing to adopt it, since a cache removes what it does not recognise. \
                     Use a new or empty directory for the cache",
                )
            }
        }
    }
}

/// Why something in a cache root is not an entry lockyard made. Such
/// items are reported and never removed unless named explicitly
/// ([`crate::Cache::remove`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ForeignReason {
    /// A file, symlink or other non-directory.
    NotADirectory,
    /// A directory without `entry.json`, which every publish writes.
    NoMetadata,
    /// A name no key can have.
    NotAKey,
}

impl std::fmt::Display for ForeignReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForeignReason::NotADirectory => "not a directory",
            ForeignReason::NoMetadata => "a directory without entry.json",
            ForeignReason::NotAKey => "a name that is not a valid key",
        })
    }
}

/// Everything that can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The key cannot name an entry.
    #[error(
        "invalid cache key {key:?}: {reason}; keys are 1-200 bytes of printable text without `/`, not starting with `.`"
    )]
    InvalidKey {
        /// The key given.
        key: String,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// The entry (or the whole cache, for a full clean) is in use.
    #[error("{key}: in use, held by {holders}; retry later or stop the holder")]
    Contended {
        /// The entry's key (`*` for the cache-wide lock).
        key: String,
        /// Who holds its lock.
        holders: Holders,
    },
    /// A bounded wait ran out.
    #[error("{key}: not available within {waited:.1?}; held by {holders}; raise the wait or stop the holder")]
    Timeout {
        /// The entry's key (`*` for the cache-wide lock).
        key: String,
        /// How long was waited.
        waited: Duration,
        /// Who held the lock when the wait gave up.
        holders: Holders,
    },
    /// The wait was cancelled by the caller.
    #[error("{key}: wait cancelled after {waited:.1?}")]
    Cancelled {
        /// The entry's key.
        key: String,
        /// How long was waited.
        waited: Duration,
    },
    /// The entry exists but cannot be trusted.
    #[error("{}: corrupt entry: {reason}; remove it with a clean, or store it again", path.display())]
    Corrupt {
        /// The entry's directory.
        path: PathBuf,
        /// Why.
        reason: CorruptReason,
    },
    /// The cache root is on a filesystem where locks are not reliable.
    #[error(
        "{}: the cache is on {fs}, where advisory locks are not reliable; put it on a local filesystem",
        path.display()
    )]
    UnsupportedFilesystem {
        /// The lock file that was refused.
        path: PathBuf,
        /// The filesystem found.
        fs: FsType,
    },
    /// Something not made by the cache sits at an internal path.
    #[error("{}: refusing to use {what}; remove it (the cache root must hold only what lockyard-cache made)", path.display())]
    Refused {
        /// The path.
        path: PathBuf,
        /// What was found there.
        what: String,
    },
    /// The root is not a cache lockyard may use; nothing was written.
    #[error("{}: {reason}", path.display())]
    NotACache {
        /// The root.
        path: PathBuf,
        /// Why.
        reason: NotACache,
    },
    /// The cache was opened read-only ([`crate::CacheOptions::read_only`]).
    #[error("{}: opened read-only; nothing can be stored or removed", path.display())]
    ReadOnly {
        /// The root.
        path: PathBuf,
    },
    /// The caller's build function failed; nothing was published.
    #[error("{key}: build failed: {source}")]
    Build {
        /// The entry's key.
        key: String,
        /// The build's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tree being written into the cache (by [`crate::Cache::put`] or a
    /// pull) broke its rules: a path out of order or outside the entry, a
    /// symlink leading out, more or other data than declared. Nothing was
    /// published.
    #[error("{}: refused: {reason}; nothing was published", path.display())]
    Rejected {
        /// Where the item would have gone.
        path: PathBuf,
        /// Which rule it broke.
        reason: String,
    },
    /// The remote tier failed: unreachable, timed out, refused, or not
    /// configured. The local cache is unaffected.
    #[error("remote cache {url}: {op}: {source}")]
    Remote {
        /// The remote's URL (it never carries credentials).
        url: String,
        /// What was being done.
        op: &'static str,
        /// The cause, from the object store client.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A lock could not be opened or taken for another reason.
    #[error(transparent)]
    Lock(LockError),
    /// A system call failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// For `io::Result` code: `?` turns a [`CacheError`] into an
/// [`io::Error`] of the matching kind, the cache error kept inside. Busy
/// is `WouldBlock`, a timeout `TimedOut`, a cancelled wait `Interrupted`,
/// a corrupt entry `InvalidData`, a bad key or a root that is not a cache
/// `InvalidInput`, a read-only cache `ReadOnlyFilesystem`, something
/// refused `PermissionDenied`, lock and I/O errors their own kind.
impl From<CacheError> for io::Error {
    fn from(err: CacheError) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

impl CacheError {
    /// The [`io::ErrorKind`] this error stands for (see the
    /// `From<CacheError> for io::Error` impl).
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            CacheError::Contended { .. } => io::ErrorKind::WouldBlock,
            CacheError::Timeout { .. } => io::ErrorKind::TimedOut,
            CacheError::Cancelled { .. } => io::ErrorKind::Interrupted,
            CacheError::Corrupt { .. } | CacheError::Rejected { .. } => io::ErrorKind::InvalidData,
            CacheError::InvalidKey { .. } | CacheError::NotACache { .. } => io::ErrorKind::InvalidInput,
            CacheError::ReadOnly { .. } => io::ErrorKind::ReadOnlyFilesystem,
            CacheError::UnsupportedFilesystem { .. } => io::ErrorKind::Unsupported,
            CacheError::Refused { .. } => io::ErrorKind::PermissionDenied,
            CacheError::Build { .. } | CacheError::Remote { .. } => io::ErrorKind::Other,
            CacheError::Lock(e) => e.io_kind(),
            CacheError::Io { source, .. } => source.kind(),
        }
    }
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: impl Into<io::Error>) -> Self {
        CacheError::Io { path: path.into(), op, source: source.into() }
    }

    /// Translate a lock error about `key`'s lock into the cache's terms.
    pub(crate) fn from_lock(key: &str, err: LockError) -> Self {
        match err {
            LockError::Contended { holders, .. } => CacheError::Contended { key: key.to_owned(), holders },
            LockError::Timeout { waited, holders, .. } => {
                CacheError::Timeout { key: key.to_owned(), waited, holders }
            }
            LockError::Cancelled { waited, .. } => CacheError::Cancelled { key: key.to_owned(), waited },
            LockError::UnsupportedFilesystem { path, fs } => CacheError::UnsupportedFilesystem { path, fs },
            other => CacheError::Lock(other),
        }
    }

    /// Whether another process holds what was asked for: contended now,
    /// or still held when a wait ran out, as
    /// [`LockError::is_busy`](lockyard_flock::LockError::is_busy) means it
    /// (not misuse, a broken cache, or a cancelled wait).
    pub fn is_busy(&self) -> bool {
        matches!(self, CacheError::Contended { .. } | CacheError::Timeout { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_errors_become_io_errors_of_their_kind() {
        let cases = [
            (
                CacheError::Contended { key: "k".into(), holders: Holders::default() },
                io::ErrorKind::WouldBlock,
            ),
            (CacheError::ReadOnly { path: "/c".into() }, io::ErrorKind::ReadOnlyFilesystem),
            (
                CacheError::NotACache { path: "/c".into(), reason: NotACache::Missing },
                io::ErrorKind::InvalidInput,
            ),
            (
                CacheError::Corrupt { path: "/c/k".into(), reason: CorruptReason::DigestMismatch },
                io::ErrorKind::InvalidData,
            ),
            (
                CacheError::Lock(LockError::InvalidPath { path: "/".into(), reason: "no name" }),
                io::ErrorKind::InvalidInput,
            ),
        ];
        for (err, kind) in cases {
            let io: io::Error = err.into();
            assert_eq!(io.kind(), kind, "{io}");
            assert!(io.get_ref().is_some_and(<dyn std::error::Error + Send + Sync>::is::<CacheError>));
        }
    }
}
