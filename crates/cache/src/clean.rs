//! Eviction by policy, planned then carried out, and removal by name.

use super::*;

/// What [`Cache::clean`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Clean {
    /// Every entry (and all debris); holds the cache-wide lock so nothing
    /// is published meanwhile.
    All,
    /// All but the N most recently created valid entries.
    KeepNewest(usize),
    /// Entries not used for this long.
    UnusedFor(Duration),
    /// Least recently used entries until the valid ones total at most
    /// this many bytes.
    MaxBytes(u64),
}

/// What [`Cache::clean`] did. Corrupt entries are removed by every policy.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CleanReport {
    /// Keys removed.
    pub removed: Vec<String>,
    /// Bytes freed (of valid entries).
    pub freed: u64,
    /// Keys skipped because they were in use, with who holds them.
    pub busy: Busy,
    /// Keys skipped because they were replaced or used after the plan
    /// was made (see [`Cache::clean_planned`]).
    pub changed: Vec<String>,
}

/// What a clean would remove: made by [`Cache::plan_clean`], carried out
/// by [`Cache::clean_planned`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CleanPlan {
    #[cfg_attr(feature = "serde", serde(skip))]
    pub(crate) policy: Clean,
    /// The entries to remove: corrupt ones first, then by the policy's
    /// order (newest first, or least recently used first for a size cap).
    pub victims: Vec<Victim>,
    /// What the root holds that is not an entry: left alone, to report.
    pub foreign: Vec<(String, ForeignReason)>,
}

impl CleanPlan {
    /// Bytes the plan frees (of valid entries).
    pub fn bytes(&self) -> u64 {
        self.victims.iter().map(|v| v.size).sum()
    }
}

/// One entry a [`CleanPlan`] removes.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Victim {
    /// Its key.
    pub key: String,
    /// Its size (0 for a corrupt entry).
    pub size: u64,
    /// Its last use, ns since the Unix epoch (0 for a corrupt entry).
    pub last_used_ns: u64,
    /// Its digest when planned (`None` for a corrupt entry).
    pub digest: Option<String>,
    /// Why it is corrupt, if it is.
    pub corrupt: Option<CorruptReason>,
}

impl Cache {
    /// Remove entries by `policy`; corrupt entries always go. An entry is
    /// removed only while its lock is held exclusively, taken without
    /// blocking: entries in use are skipped and reported.
    ///
    /// # Errors
    /// For [`Clean::All`], a timeout while stores are in progress; lock
    /// and I/O errors.
    pub fn clean(&self, policy: Clean) -> Result<CleanReport, CacheError> {
        self.writable()?;
        let wipe = self.wipe_lock(policy)?;
        let plan = self.plan_clean(policy)?;
        self.remove_planned(&plan, wipe.is_some(), &mut |_| {})
    }

    /// What [`Cache::clean`] with `policy` would remove now, removing
    /// nothing (for a dry run, or to ask before [`Cache::clean_planned`]).
    ///
    /// # Errors
    /// [`CacheError::Io`] if the root cannot be listed.
    pub fn plan_clean(&self, policy: Clean) -> Result<CleanPlan, CacheError> {
        let listed = self.list()?;
        let now = now_ns();
        let mut victims = Vec::new();
        let mut valid = Vec::new();
        let mut foreign = Vec::new();
        for item in listed {
            match item {
                Listed::Foreign { key, reason } => foreign.push((key, reason)),
                Listed::Corrupt { key, reason } => {
                    victims.push(Victim {
                        key,
                        size: 0,
                        last_used_ns: 0,
                        digest: None,
                        corrupt: Some(reason),
                    });
                }
                Listed::Valid { key, size, last_used_ns, digest, .. } => {
                    valid.push(Victim { key, size, last_used_ns, digest: Some(digest), corrupt: None });
                }
            }
        }
        // `valid` is newest first, as listed.
        match policy {
            Clean::All => victims.append(&mut valid),
            Clean::KeepNewest(n) => victims.extend(valid.into_iter().skip(n)),
            Clean::UnusedFor(age) => {
                let cutoff = now.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
                victims.extend(valid.into_iter().filter(|v| v.last_used_ns < cutoff));
            }
            Clean::MaxBytes(limit) => {
                valid.sort_by_key(|v| v.last_used_ns);
                let mut total: u64 = valid.iter().map(|v| v.size).sum();
                for v in valid {
                    if total <= limit {
                        break;
                    }
                    total -= v.size;
                    victims.push(v);
                }
            }
        }
        Ok(CleanPlan { policy, victims, foreign })
    }

    /// Remove what `plan` lists, and only that. For every policy but
    /// [`Clean::All`], an entry replaced or used since the plan was made
    /// is kept (reported in [`CleanReport::changed`]): the plan's reasons
    /// no longer hold for it.
    ///
    /// # Errors
    /// As [`Cache::clean`].
    pub fn clean_planned(&self, plan: &CleanPlan) -> Result<CleanReport, CacheError> {
        self.clean_planned_with(plan, |_| {})
    }

    /// As [`Cache::clean_planned`], telling `progress` each victim once it
    /// has been dealt with (removed, or kept as busy or changed).
    ///
    /// # Errors
    /// As [`Cache::clean`].
    pub fn clean_planned_with(
        &self,
        plan: &CleanPlan,
        mut progress: impl FnMut(&Victim),
    ) -> Result<CleanReport, CacheError> {
        self.writable()?;
        let wipe = self.wipe_lock(plan.policy)?;
        self.remove_planned(plan, wipe.is_some(), &mut progress)
    }

    /// For a full clean, the cache-wide lock held exclusively, so nothing
    /// is published mid-wipe.
    pub(crate) fn wipe_lock(&self, policy: Clean) -> Result<Option<LockGuard>, CacheError> {
        match policy {
            Clean::All => {
                Ok(Some(self.lock(&self.locks, CACHE_LOCK, LockMode::Exclusive, "*", self.deadline())?))
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn remove_planned(
        &self,
        plan: &CleanPlan,
        and_sweep: bool,
        progress: &mut dyn FnMut(&Victim),
    ) -> Result<CleanReport, CacheError> {
        let mut report = CleanReport::default();
        let mut busy = Vec::new();
        for victim in &plan.victims {
            let key = victim.key.as_str();
            let file = self.lock_file(&self.locks, &entry_lock_name(key), LockOptions::new().exclusive())?;
            match file.try_lock().map_err(CacheError::Lock)? {
                None => busy.push(key),
                Some(lock) if !self.as_planned(victim, &lock, plan.policy != Clean::All) => {
                    report.changed.push(key.to_owned());
                }
                Some(lock) => {
                    self.remove_entry(key, lock)?;
                    report.removed.push(key.to_owned());
                    report.freed += victim.size;
                }
            }
            progress(victim);
        }
        report.busy = self.locks.holders(&busy);
        if and_sweep {
            self.sweep()?;
        }
        Ok(report)
    }

    /// Remove `name` from the root, whatever it is: an entry, valid or
    /// corrupt, or something [`Cache::list`] reports as
    /// [`Listed::Foreign`], which no clean removes on its own. For an
    /// operator who named it. Taken under `name`'s entry lock,
    /// exclusively and without waiting, so an entry in use stays.
    /// Returns whether anything was there.
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`] for a name of the cache's own (its
    /// marker, `CACHEDIR.TAG`, `.locks`, `.staging`) or one that is not a
    /// single path component; [`CacheError::Contended`] if in use; lock
    /// and I/O errors.
    pub fn remove(&self, name: &str) -> Result<bool, CacheError> {
        self.writable()?;
        let own = [MARKER, TAG, LOCKS_DIR, STAGING_DIR, ".", ".."].contains(&name);
        if own || name.is_empty() || name.contains(['/', '\0']) {
            let reason =
                if own { KeyError::Reserved } else { key::validate(name).err().unwrap_or(KeyError::Slash) };
            return Err(CacheError::InvalidKey { key: name.to_owned(), reason });
        }
        let file = self.lock_file(&self.locks, &entry_lock_name(name), LockOptions::new().exclusive())?;
        let lock = file.try_lock_or_holders().map_err(|e| CacheError::from_lock(name, e))?;
        if dirfd::stat(&self.dir, name, &self.entry_path(name))?.is_none() {
            return Ok(false);
        }
        self.remove_entry(name, lock)?;
        Ok(true)
    }

    /// Whether `victim` may still go: it is still something a publish
    /// made (a directory with `entry.json`), and, when `unchanged`, still
    /// what the plan saw: same content, not used since (we hold its lock
    /// exclusively, so neither can change while we look).
    pub(crate) fn as_planned(&self, victim: &Victim, lock: &LockGuard, unchanged: bool) -> bool {
        let now = match self.entry_dir(&victim.key) {
            Ok(Some(dir)) => entry::read_meta(&dir, &victim.key),
            // Gone, or no longer a directory: not ours to remove.
            Ok(None) | Err(_) => return false,
        };
        match (&victim.digest, now) {
            (_, Err(CorruptReason::MissingMetadata)) => false,
            (_, _) if !unchanged => true,
            (None, Err(_)) => true,
            (Some(digest), Ok(meta)) => {
                *digest == meta.digest && fd_mtime_ns(lock).is_none_or(|used| used <= victim.last_used_ns)
            }
            _ => false,
        }
    }

    /// Move `key`'s entry into a staging slot of its own, then delete it
    /// there: a crash leaves debris for [`Cache::sweep`], never half an
    /// entry under its key.
    pub(crate) fn remove_entry(&self, key: &str, lock: LockGuard) -> Result<(), CacheError> {
        let slot = self.staging_slot(key, false)?;
        match rustix::fs::renameat(&self.dir, key, &self.staging, slot.name.as_str()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(CacheError::io(self.entry_path(key), "rename", e)),
        }
        dirfd::sync_dir(&self.dir, &self.root)?;
        drop(lock);
        slot.discard()
    }
}
