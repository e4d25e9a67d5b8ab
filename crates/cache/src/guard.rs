//! [`EntryGuard`]: an entry held for reading.

use super::*;

/// A published entry, held for reading: while this guard lives, nobody
/// replaces or deletes the entry.
#[must_use = "the entry may be replaced or removed as soon as the guard is dropped"]
#[derive(Debug)]
pub struct EntryGuard {
    pub(crate) path: PathBuf,
    pub(crate) meta: EntryMeta,
    pub(crate) lock: LockGuard,
}

impl EntryGuard {
    /// The entry's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its metadata.
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    /// Its key.
    pub fn key(&self) -> &str {
        &self.meta.key
    }

    /// Its last use (lookup or publication), ns since the Unix epoch.
    pub fn last_used_ns(&self) -> u64 {
        fd_mtime_ns(&self.lock).unwrap_or(self.meta.created_ns)
    }

    /// The reader lock's descriptor, closed without unlocking: for a
    /// program that handed the lock to a child (which inherited this
    /// descriptor) and must not release it while the child still runs.
    /// The kernel drops the lock when the last copy is closed.
    pub fn into_fd(self) -> OwnedFd {
        self.lock.into_fd()
    }
}

/// The reader lock's descriptor: a child that inherits it keeps the entry
/// held for reading, even if this process dies first.
impl AsFd for EntryGuard {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.as_fd()
    }
}
