//! Listing entries (valid, corrupt, foreign) and verifying digests.

use super::*;

/// One entry as [`Cache::list`] found it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "state", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Listed {
    /// A readable entry.
    Valid {
        /// Its key.
        key: String,
        /// Total bytes of its files.
        size: u64,
        /// Publication time, ns since the Unix epoch.
        created_ns: u64,
        /// Last lookup (or publication), ns since the Unix epoch.
        last_used_ns: u64,
        /// BLAKE3 digest recorded at publication, hex.
        digest: String,
        /// What the build function returned ([`EntryMeta::user`]): lets a
        /// caller pick its entries from a listing without opening each.
        user: serde_json::Value,
    },
    /// An entry lockyard published that cannot be trusted now (its
    /// `entry.json` is unreadable or malformed). Cleaning removes it.
    Corrupt {
        /// Its key (the directory name).
        key: String,
        /// Why.
        reason: CorruptReason,
    },
    /// Something in the root that no publish can have made. Reported,
    /// never removed unless named ([`Cache::remove`]).
    Foreign {
        /// Its name in the root (lossily decoded if not UTF-8).
        key: String,
        /// Why it is not an entry.
        reason: ForeignReason,
    },
}

impl Listed {
    /// The entry's key (for a foreign item, its name).
    pub fn key(&self) -> &str {
        match self {
            Listed::Valid { key, .. } | Listed::Corrupt { key, .. } | Listed::Foreign { key, .. } => key,
        }
    }
}

impl Cache {
    /// Recompute the digest of `key`'s entry and compare it with the one
    /// recorded at publication.
    ///
    /// # Errors
    /// [`CacheError::Corrupt`] with [`CorruptReason::DigestMismatch`] if
    /// the content changed; `Ok(None)` if there is no entry.
    pub fn verify(&self, key: &str) -> Result<Option<EntryMeta>, CacheError> {
        self.verify_with(key, |_| {})
    }

    /// As [`Cache::verify`], telling `progress` the bytes hashed as they
    /// are read (for a progress bar over a large entry).
    ///
    /// # Errors
    /// As [`Cache::verify`].
    pub fn verify_with(
        &self,
        key: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<Option<EntryMeta>, CacheError> {
        let Some(guard) = self.inspect(key)? else { return Ok(None) };
        // The reader lock keeps this name on the entry the guard read.
        let Some(dir) = self.entry_dir(key)? else { return Ok(None) };
        let walked = entry::walk(&dir, &guard.path, false, &mut progress)?;
        if walked.digest != guard.meta.digest || walked.size != guard.meta.size {
            return Err(CacheError::Corrupt { path: guard.path, reason: CorruptReason::DigestMismatch });
        }
        Ok(Some(guard.meta))
    }

    /// Every entry, newest first, then corrupt entries, then what the
    /// root holds that is not an entry ([`Listed::Foreign`]).
    ///
    /// # Errors
    /// [`CacheError::Io`] if the root cannot be listed.
    pub fn list(&self) -> Result<Vec<Listed>, CacheError> {
        let mut listed = Vec::new();
        for name in dirfd::names(&self.dir, &self.root)? {
            if [MARKER, TAG, LOCKS_DIR, STAGING_DIR].iter().any(|own| name == *own) {
                continue;
            }
            let foreign = |key: String, reason| Listed::Foreign { key, reason };
            let key = match name.into_string() {
                Ok(key) if key::validate(&key).is_ok() => key,
                Ok(key) => {
                    listed.push(foreign(key, ForeignReason::NotAKey));
                    continue;
                }
                Err(name) => {
                    listed.push(foreign(name.to_string_lossy().into_owned(), ForeignReason::NotAKey));
                    continue;
                }
            };
            let dir = match self.entry_dir(&key) {
                Ok(Some(dir)) => dir,
                // Removed since we listed it.
                Ok(None) => continue,
                Err(CacheError::Corrupt { .. }) => {
                    listed.push(foreign(key, ForeignReason::NotADirectory));
                    continue;
                }
                Err(e) => return Err(e),
            };
            listed.push(match entry::read_meta(&dir, &key) {
                Ok(meta) => Listed::Valid {
                    last_used_ns: self.last_used_ns(&key).unwrap_or(meta.created_ns),
                    key,
                    size: meta.size,
                    created_ns: meta.created_ns,
                    digest: meta.digest,
                    user: meta.user,
                },
                Err(CorruptReason::MissingMetadata) => foreign(key, ForeignReason::NoMetadata),
                Err(reason) => Listed::Corrupt { key, reason },
            });
        }
        let rank = |l: &Listed| match l {
            Listed::Valid { created_ns, .. } => (0, std::cmp::Reverse(*created_ns)),
            Listed::Corrupt { .. } => (1, std::cmp::Reverse(0)),
            Listed::Foreign { .. } => (2, std::cmp::Reverse(0)),
        };
        listed.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.key().cmp(b.key())));
        Ok(listed)
    }

    /// The last use of `key`: its lock file's mtime.
    pub(crate) fn last_used_ns(&self, key: &str) -> Option<u64> {
        let st = rustix::fs::statat(&self.locks, entry_lock_name(key).as_str(), AtFlags::empty()).ok()?;
        dirfd::mtime_ns(&st)
    }
}
