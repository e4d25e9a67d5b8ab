//! Writers: build in staging, sync, publish with one rename; and
//! single-flight `ensure`.

use super::*;

impl Cache {
    /// Build an entry for `key` and publish it, replacing any previous
    /// one atomically. `build` fills the directory it is given and returns
    /// the caller's metadata for `entry.json`. Returns the new entry, held
    /// for reading.
    ///
    /// # Errors
    /// [`CacheError::Build`] if `build` fails (nothing is published),
    /// [`CacheError::InvalidKey`], timeouts, lock and I/O errors.
    pub fn store<M: serde::Serialize>(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult<M>,
    ) -> Result<EntryGuard, CacheError> {
        check_key(key)?;
        self.store_until(key, build, self.deadline())
    }

    pub(crate) fn store_until<M: serde::Serialize>(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult<M>,
        deadline: Option<Instant>,
    ) -> Result<EntryGuard, CacheError> {
        self.writable()?;
        let guard = self.in_staging(key, deadline, |slot| self.fill_and_publish(key, build, slot))?;
        #[cfg(feature = "remote")]
        let guard = self.push_built(guard)?;
        Ok(guard)
    }

    /// Fill a fresh staging slot for `key` and publish it (`fill`),
    /// holding the cache-wide lock shared; then discard what the slot
    /// still holds, which is only debris: the displaced old entry, or
    /// what a failed fill left.
    pub(crate) fn in_staging(
        &self,
        key: &str,
        deadline: Option<Instant>,
        fill: impl FnOnce(&Slot<'_>) -> Result<EntryGuard, CacheError>,
    ) -> Result<EntryGuard, CacheError> {
        let cache_lock = self.lock(&self.locks, CACHE_LOCK, LockMode::Shared, "*", deadline)?;
        let slot = self.staging_slot(key, true)?;
        #[cfg(feature = "test-hooks")]
        self.step(Step::StagingCreated);
        let outcome = fill(&slot);
        let discarded = slot.discard();
        drop(cache_lock);
        let guard = outcome?;
        if let Err(e) = discarded {
            tracing::warn!(error = %e, "leaving staging debris for the next sweep");
        }
        Ok(guard)
    }

    pub(crate) fn fill_and_publish<M: serde::Serialize>(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult<M>,
        slot: &Slot<'_>,
    ) -> Result<EntryGuard, CacheError> {
        let path = slot.path();
        let user = build(&path)
            .and_then(|meta| serde_json::to_value(meta).map_err(BuildError::from))
            .map_err(|source| CacheError::Build { key: key.to_owned(), source })?;
        #[cfg(feature = "test-hooks")]
        self.step(Step::Built);
        // The build had the path; from here on, its directory by descriptor.
        let dir = dirfd::open_dir(&self.staging, slot.name.as_str())
            .map_err(|e| CacheError::io(&path, "open", e))?;
        let meta_path = path.join(METADATA);
        if dirfd::stat(&dir, METADATA, &meta_path)?.is_some() {
            return Err(CacheError::Build {
                key: key.to_owned(),
                source: format!("the build wrote {METADATA}, a name the cache reserves for itself").into(),
            });
        }
        let walked = entry::walk(&dir, &path, true, &mut |_| {})?;
        self.seal_and_publish(key, slot, &dir, walked, user, now_ns())
    }

    /// Write `entry.json` for the synced tree in `slot` (its directory
    /// `dir`), sync the directory, and publish it.
    pub(crate) fn seal_and_publish(
        &self,
        key: &str,
        slot: &Slot<'_>,
        dir: &OwnedFd,
        walked: entry::Walked,
        user: serde_json::Value,
        created_ns: u64,
    ) -> Result<EntryGuard, CacheError> {
        let path = slot.path();
        let meta_path = path.join(METADATA);
        let meta = EntryMeta {
            schema: SCHEMA,
            key: key.to_owned(),
            created_ns,
            size: walked.size,
            files: walked.files,
            digest: walked.digest,
            user,
        };
        let encoded = serde_json::to_vec_pretty(&meta)
            .map_err(|e| CacheError::io(&meta_path, "encode", std::io::Error::other(e)))?;
        write_synced(dir, &meta_path, &encoded)?;
        rustix::fs::fsync(dir).map_err(|e| CacheError::io(&path, "fsync", e))?;
        #[cfg(feature = "test-hooks")]
        self.step(Step::Synced);

        // A wait of its own: the build may have outlasted the caller's.
        let mut lock =
            self.lock(&self.locks, &entry_lock_name(key), LockMode::Exclusive, key, self.deadline())?;
        self.publish(key, slot)?;
        touch(&lock);
        #[cfg(feature = "test-hooks")]
        self.step(Step::Published);
        lock.set_mode(LockMode::Shared).map_err(|e| CacheError::from_lock(key, e))?;
        Ok(EntryGuard { path: self.entry_path(key), meta, lock })
    }

    /// Store a copy of the directory `source` as `key`'s entry, with
    /// `meta` for `entry.json`, replacing any previous one atomically.
    ///
    /// The copy is made in one pass: each file is read once, and its bytes
    /// are digested, written and synced as they go (a [`Cache::store`]
    /// whose build copies reads them again to digest). It keeps what the
    /// digest covers: directories, regular files with their executable
    /// bit (written 0755, else 0644, less the umask), and symlinks as
    /// they are. Symlinks are never followed, and one pointing outside
    /// the entry, a FIFO, socket or device node, or a top-level
    /// `entry.json` is refused.
    ///
    /// # Errors
    /// [`CacheError::Rejected`] or [`CacheError::Refused`] for what cannot
    /// be stored (nothing is published), [`CacheError::Io`] if the source
    /// cannot be read, and as [`Cache::store`].
    pub fn put<M: serde::Serialize>(
        &self,
        key: &str,
        source: impl AsRef<Path>,
        meta: M,
    ) -> Result<EntryGuard, CacheError> {
        check_key(key)?;
        self.writable()?;
        let source = source.as_ref();
        let user = serde_json::to_value(meta)
            .map_err(|e| CacheError::Build { key: key.to_owned(), source: e.into() })?;
        let from =
            rustix::fs::open(source, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| CacheError::io(source, "open", e))?;
        let guard = self.in_staging(key, self.deadline(), |slot| {
            let path = slot.path();
            let dir = dirfd::open_dir(&self.staging, slot.name.as_str())
                .map_err(|e| CacheError::io(&path, "open", e))?;
            let mut writer = tree::TreeWriter::new(dir.as_fd(), &path, tree::Limits::NONE);
            let how = entry::Walk { sync: false, skip_metadata: false };
            entry::visit(&from, source, how, &mut writer, &mut |_| {})?;
            let (walked, _) = writer.finish()?;
            self.seal_and_publish(key, slot, &dir, walked, user, now_ns())
        })?;
        #[cfg(feature = "remote")]
        let guard = self.push_built(guard)?;
        Ok(guard)
    }

    /// Move the staging directory into place; the caller holds the entry
    /// lock exclusively.
    pub(crate) fn publish(&self, key: &str, slot: &Slot<'_>) -> Result<(), CacheError> {
        let target = self.entry_path(key);
        let exists = match dirfd::stat(&self.dir, key, &target)? {
            Some(st) if dirfd::is_dir(&st) => true,
            Some(_) => {
                return Err(CacheError::Refused {
                    path: target,
                    what: "something other than a directory where an entry belongs".to_owned(),
                });
            }
            None => false,
        };
        let flags = if exists { RenameFlags::EXCHANGE } else { RenameFlags::NOREPLACE };
        #[cfg(feature = "test-hooks")]
        let forced = exists && self.options.two_renames;
        #[cfg(not(feature = "test-hooks"))]
        let forced = false;
        let result = if forced {
            Err(Errno::INVAL)
        } else {
            rustix::fs::renameat_with(&self.staging, slot.name.as_str(), &self.dir, key, flags)
        };
        match result {
            Ok(()) => {}
            Err(Errno::INVAL | Errno::NOSYS) if exists => {
                // No RENAME_EXCHANGE here: see "Exchange unsupported".
                tracing::debug!(key, "RENAME_EXCHANGE unsupported; publishing with two renames");
                rustix::fs::renameat(&self.dir, key, &self.staging, slot.old().as_str())
                    .map_err(|e| CacheError::io(&target, "rename", e))?;
                #[cfg(feature = "test-hooks")]
                self.step(Step::Displaced);
                rustix::fs::renameat(&self.staging, slot.name.as_str(), &self.dir, key)
                    .map_err(|e| CacheError::io(slot.path(), "rename", e))?;
            }
            Err(e) => return Err(CacheError::io(&target, "rename", e)),
        }
        dirfd::sync_dir(&self.dir, &self.root)?;
        dirfd::sync_dir(&self.staging, self.staging.path())
    }

    /// The entry for `key`: read it if present, otherwise pull it from the
    /// remote if one is set, otherwise build it (and push it), with one
    /// builder or downloader among all processes of the host that ask at
    /// once. The others wait
    /// (bounded by [`CacheOptions::wait`], cancellable) and read what it
    /// published; if the builder dies, one of them builds instead.
    ///
    /// # Errors
    /// As [`Cache::lookup`] and [`Cache::store`].
    pub fn ensure<M: serde::Serialize>(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult<M>,
    ) -> Result<EntryGuard, CacheError> {
        check_key(key)?;
        let deadline = self.deadline();
        if let Some(found) = self.lookup_until(key, deadline)? {
            return Ok(found);
        }
        self.writable()?;
        let _building =
            self.lock(&self.locks, &format!("{key}.build"), LockMode::Exclusive, key, deadline)?;
        // Whoever held the build lock before us may have published.
        if let Some(found) = self.lookup_until(key, deadline)? {
            return Ok(found);
        }
        #[cfg(feature = "remote")]
        if let Some(remote) = self.options.remote.as_deref()
            && let Some(pulled) = self.download_or_warn(remote, key)?
        {
            return Ok(pulled);
        }
        self.store_until(key, build, deadline)
    }
}

/// Create `entry.json` in `dir` and sync it.
pub(crate) fn write_synced(dir: impl AsFd, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    use std::io::Write;
    let fd = rustix::fs::openat(
        dir,
        METADATA,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| CacheError::io(path, "create", e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(|e| CacheError::io(path, "write", e))?;
    file.sync_all().map_err(|e| CacheError::io(path, "fsync", e))
}
