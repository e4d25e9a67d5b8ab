//! Readers: lookups and inspections under the entry's shared lock.

use super::*;

impl Cache {
    /// The entry for `key`, held for reading, or `None` if there is none.
    /// Waits (bounded by [`CacheOptions::wait`]) while a writer publishes.
    /// With a remote ([`CacheOptions::remote`], feature `remote`), a local
    /// miss is pulled from it, unless another process of this host is
    /// building or pulling the key right now (then it is a miss).
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`], [`CacheError::Corrupt`], a timeout, or
    /// a lock or I/O error.
    pub fn lookup(&self, key: &str) -> Result<Option<EntryGuard>, CacheError> {
        check_key(key)?;
        let deadline = self.deadline();
        let found = self.lookup_until(key, deadline)?;
        #[cfg(feature = "remote")]
        if found.is_none() {
            return self.pull_through(key, deadline);
        }
        Ok(found)
    }

    /// As [`Cache::lookup`], but not recorded as a use: for tools that
    /// look at entries (show, verify) without deciding their eviction.
    ///
    /// # Errors
    /// As [`Cache::lookup`].
    pub fn inspect(&self, key: &str) -> Result<Option<EntryGuard>, CacheError> {
        check_key(key)?;
        let Some(lock) = self.reader_lock(key, self.deadline())? else { return Ok(None) };
        self.open_entry(key, lock, false)
    }

    pub(crate) fn lookup_until(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<EntryGuard>, CacheError> {
        let Some(lock) = self.reader_lock(key, deadline)? else { return Ok(None) };
        self.open_entry(key, lock, true)
    }

    /// The published directory of `key`, opened; `None` if there is none.
    pub(crate) fn entry_dir(&self, key: &str) -> Result<Option<OwnedFd>, CacheError> {
        match dirfd::open_dir(&self.dir, key) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR | Errno::LOOP) => {
                Err(CacheError::Corrupt { path: self.entry_path(key), reason: CorruptReason::NotADirectory })
            }
            Err(e) => Err(CacheError::io(self.entry_path(key), "open", e)),
        }
    }

    /// Read the entry of `key` under `lock` (held shared or exclusive).
    pub(crate) fn open_entry(
        &self,
        key: &str,
        lock: LockGuard,
        used: bool,
    ) -> Result<Option<EntryGuard>, CacheError> {
        let corrupt = |reason| CacheError::Corrupt { path: self.entry_path(key), reason };
        let meta = match dirfd::open_file_beneath(&self.dir, &format!("{key}/{METADATA}")) {
            Ok(file) => entry::read_meta_from(&file, key).map_err(corrupt)?,
            // A miss, a corrupt entry, or no openat2: one step at a time
            // tells which.
            Err(_) => {
                let Some(dir) = self.entry_dir(key)? else { return Ok(None) };
                entry::read_meta(&dir, key).map_err(corrupt)?
            }
        };
        if used {
            touch(&lock);
        }
        Ok(Some(EntryGuard { path: self.entry_path(key), meta, lock }))
    }
}
