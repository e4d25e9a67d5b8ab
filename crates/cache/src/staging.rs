//! Staging slots: a writer's directory and the lock it holds for its
//! life.

use super::*;

impl Cache {
    /// A fresh staging slot for `key`: its lock file created and locked,
    /// then (with `make_dir`) its directory.
    pub(crate) fn staging_slot(&self, key: &str, make_dir: bool) -> Result<Slot<'_>, CacheError> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let random = RandomState::new().hash_one((now_ns(), SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        let name = format!("{key}.{}.{random:016x}", std::process::id());
        let lock_name = format!("{name}.lock");
        // Not a try: a sweep may hold the fresh lock file for the moment
        // between our creating and our locking it. It then unlinks it, and
        // the lock we get on the unlinked file fails lockyard-flock's path
        // check, which creates and locks a new one.
        let deadline = self.deadline();
        let guard = self.lock(&self.staging, &lock_name, LockMode::Exclusive, key, deadline)?;
        let slot = Slot { staging: &self.staging, name, guard: Some(guard) };
        if make_dir {
            rustix::fs::mkdirat(&self.staging, slot.name.as_str(), Mode::from_raw_mode(0o777))
                .map_err(|e| CacheError::io(slot.path(), "create", e))?;
        }
        Ok(slot)
    }
}

/// A staging directory `{name}` (`.old` beside it for a displaced entry)
/// and the lock `{name}.lock` its writer holds for its life.
pub(crate) struct Slot<'a> {
    pub(crate) staging: &'a LockDir,
    pub(crate) name: String,
    pub(crate) guard: Option<LockGuard>,
}

impl Slot<'_> {
    pub(crate) fn path(&self) -> PathBuf {
        self.staging.path().join(&self.name)
    }

    /// Where the two-rename fallback puts a displaced entry.
    pub(crate) fn old(&self) -> String {
        format!("{}.old", self.name)
    }

    /// Remove the slot's trees, then its lock file while still holding it.
    pub(crate) fn discard(mut self) -> Result<(), CacheError> {
        let dir = self.staging.path();
        dirfd::remove_tree(self.staging, self.name.as_ref(), &self.path())?;
        let old = self.old();
        dirfd::remove_tree(self.staging, old.as_ref(), &dir.join(&old))?;
        let lock = format!("{}.lock", self.name);
        match rustix::fs::unlinkat(self.staging, lock.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(CacheError::io(dir.join(&lock), "remove", e)),
        }
        drop(self.guard.take());
        Ok(())
    }
}
