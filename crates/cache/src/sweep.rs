//! Sweeping the debris of dead writers, proven dead by their locks.

use super::*;

/// What [`Cache::sweep`] did.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SweepReport {
    /// Staging names whose writer was dead, now removed.
    pub removed: Vec<String>,
    /// Staging names whose writer is alive, with who holds them.
    pub kept: Busy,
}

impl Cache {
    /// Remove the debris of dead writers: every staging directory whose
    /// lock can be taken without blocking. Live writers' are kept.
    ///
    /// # Errors
    /// [`CacheError::Io`] if the staging directory cannot be listed.
    pub fn sweep(&self) -> Result<SweepReport, CacheError> {
        self.writable()?;
        let staging_path = self.staging.path();
        let mut names: Vec<String> = dirfd::names(&self.staging, staging_path)?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .collect();
        names.sort();
        let mut report = SweepReport::default();
        let mut live = Vec::new();
        for name in &names {
            let Some(base) = name.strip_suffix(".lock") else { continue };
            let file = self.lock_file(&self.staging, name, LockOptions::new().exclusive().must_exist())?;
            match file.try_lock() {
                Ok(Some(guard)) => {
                    let slot = Slot { staging: &self.staging, name: base.to_owned(), guard: Some(guard) };
                    slot.discard()?;
                    report.removed.push(base.to_owned());
                }
                Ok(None) => live.push(base),
                // Swept by someone else meanwhile.
                Err(lockyard_flock::LockError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::Lock(e)),
            }
        }
        report.kept = self.staging.holders(&live);
        // A tree without a lock file has no writer: writers create and
        // lock the lock file before the tree, and sweeps remove the tree
        // before the lock file.
        let exists = |name: &str| dirfd::stat(&self.staging, name, &staging_path.join(name));
        for name in &names {
            if name.ends_with(".lock") || exists(name)?.is_none() {
                continue;
            }
            let base = name.strip_suffix(".old").unwrap_or(name);
            if exists(&format!("{base}.lock"))?.is_none() {
                dirfd::remove_tree(&self.staging, name.as_ref(), &staging_path.join(name))?;
                report.removed.push(name.clone());
            }
        }
        Ok(report)
    }
}
