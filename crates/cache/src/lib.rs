//! A crash-safe on-disk cache shared by the processes of one host.
//!
//! Many processes build and read large directory entries (kernel images,
//! disk templates, toolchains) under one root. A SIGKILL at any instant
//! never leaves a half-written entry visible, and its debris is removed by
//! the next [`Cache::sweep`], which proves a writer dead by taking the lock
//! it held rather than guessing from a pid.
//!
//! # Layout
//!
//! ```text
//! {root}/.lockyard-cache                  the marker: a root is adopted only with it
//! {root}/CACHEDIR.TAG                     so backup tools skip the cache
//! {root}/{key}/                           a published entry
//! {root}/{key}/entry.json                 its metadata (EntryMeta)
//! {root}/.locks/{key}.lock                the entry's lock (never deleted)
//! {root}/.locks/{key}.build               single-flight: held by the builder
//! {root}/.locks/.cache.lock               the cache-wide lock
//! {root}/.staging/{key}.{pid}.{random}/   a writer's staging directory
//! {root}/.staging/{key}.{pid}.{random}.lock   its lock, held for its life
//! ```
//!
//! A root is adopted only when it is missing, empty or marked (see
//! [`Cache::open`]), and inside it only what this protocol produces is
//! ever removed on its own: anything else is [`Listed::Foreign`].
//!
//! Lock files live outside the entries, so exchanging an entry never moves
//! a lock. The root is opened once with lockyard-flock's hostile-directory
//! hardening, and every name under it is then reached relative to that
//! descriptor (or to `.locks`' and `.staging`'s, opened from it), one
//! component at a time with `O_NOFOLLOW`: a symlink planted as `.locks`,
//! `.staging` or an entry, or inside one, is refused or reported corrupt,
//! never followed, and nothing outside the root is touched.
//!
//! # Protocol
//!
//! Locks are always taken in this order, so no two processes deadlock:
//! the build lock, then the cache-wide lock, then an entry lock.
//!
//! - **Readers** ([`Cache::lookup`]) hold the entry lock shared for as
//!   long as their [`EntryGuard`] lives: nobody replaces or deletes the
//!   entry under them.
//! - **Writers** ([`Cache::store`]) hold the cache-wide lock shared from
//!   creating their staging directory to publishing it. They build with
//!   no entry lock held, `fsync` every file and directory, write
//!   `entry.json`, then take the entry lock exclusively, publish with
//!   `renameat2(RENAME_NOREPLACE)` (new) or `RENAME_EXCHANGE` (replace),
//!   `fsync` the root, and downgrade to shared to hand the caller a
//!   reader guard. The displaced old entry is then in the staging
//!   directory, still under the writer's staging lock, and is deleted.
//! - **Exchange unsupported** (`EINVAL`/`ENOSYS` from some overlayfs or
//!   FUSE setups): the old entry is renamed into staging, then the new one
//!   into place. Between the two renames the key is missing, which a
//!   reader can only observe as a miss (it needs the entry lock, held
//!   exclusively by the writer throughout); a crash there leaves the key
//!   missing and both trees as debris for [`Cache::sweep`]. Never a
//!   partial entry.
//! - **Single flight** ([`Cache::ensure`]): a caller that misses takes the
//!   key's build lock, looks again (someone may have published while it
//!   waited), and only then builds. Waiters block on the build lock, so
//!   they wake when the builder finishes or dies, not on a poll.
//! - **Sweep**: a staging directory is dead exactly when its lock can be
//!   taken exclusively without blocking; then its trees are removed and,
//!   still holding the lock, its lock file is unlinked. That unlink is
//!   safe where unlinking entry locks would not be: staging names are
//!   unique to one writer, which creates and locks its lock file before
//!   its directory, and lockyard-flock re-checks the path after locking,
//!   so a writer whose lock file is swept before it locked it simply
//!   creates a new one (waiting, if need be, for the sweep to let go of
//!   the file it is unlinking).
//! - **Clean** takes each entry lock exclusively without blocking (busy
//!   entries are skipped and reported with their holders), renames the
//!   entry into a staging slot of its own, and deletes it there. Cleaning
//!   everything ([`Clean::All`]) also holds the cache-wide lock
//!   exclusively, so nothing is published mid-wipe (pressure-vessel's
//!   parent `.ref` model).
//! - **Last use** is the mtime of the entry's lock file, set by every
//!   lookup through the lock descriptor it already holds (one `futimens`;
//!   atime is unreliable under `noatime`/`relatime`).
//!
//! The library reads no environment variables: the root and every wait
//! are values from the caller. (A remote on S3, feature `remote`, is
//! the exception: opendal reads the `AWS_*` variables, as AWS's own
//! clients do.)
//!
//! # Example
//!
//! Build an entry once, whoever asks first, and read it while holding it:
//!
//! ```
//! use lockyard_cache::{Cache, CacheOptions};
//!
//! let root = std::env::temp_dir().join(format!("lockyard-cache-doc-{}", std::process::id()));
//! let cache = Cache::open(&root, CacheOptions::new())?;
//! let entry = cache.ensure("greeting-v1", |staging| {
//!     // Runs only if no process has published the key yet.
//!     std::fs::write(staging.join("hello.txt"), "hello\n")?;
//!     Ok(())
//! })?;
//! assert_eq!(std::fs::read_to_string(entry.path().join("hello.txt"))?, "hello\n");
//! drop(entry); // now it may be replaced or cleaned
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod clean;
mod dirfd;
mod entry;
mod error;
mod guard;
mod key;
mod list;
mod lookup;
mod options;
#[cfg(feature = "remote")]
pub mod remote;
mod root;
mod staging;
mod store;
mod sweep;
mod tree;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockyard_flock::{
    Busy, DirTrust, FsPolicy, LockDir, LockError, LockFile, LockGuard, LockMode, LockOptions,
};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

pub use clean::{Clean, CleanPlan, CleanReport, Victim};
pub use entry::{EntryMeta, METADATA, SCHEMA};
pub use error::{CacheError, CorruptReason, ForeignReason, NotACache};
pub use guard::EntryGuard;
pub use key::{KeyError, MAX_KEY_LEN, validate as validate_key};
pub use list::Listed;
/// How waits are given, from lockyard-flock (re-exported so this crate is
/// usable alone).
pub use lockyard_flock::{CancelToken, Wait};
pub use options::CacheOptions;
#[cfg(feature = "test-hooks")]
pub use options::Step;
#[cfg(feature = "remote")]
pub use remote::{Manifest, Pushed, Remote};
use root::adopt;
use staging::Slot;
pub use sweep::SweepReport;

/// Directory of the lock files, under the root.
pub const LOCKS_DIR: &str = ".locks";
/// Directory of the staging directories, under the root.
pub const STAGING_DIR: &str = ".staging";
const CACHE_LOCK: &str = ".cache.lock";
/// The file that makes a directory a lockyard cache: written first when
/// an empty or new root is adopted, and required before anything in an
/// existing root is touched.
pub const MARKER: &str = ".lockyard-cache";
const MARKER_CONTENT: &str = "lockyard-cache 1\n\
# This directory is a lockyard cache: lockyard may remove what its protocol made here.\n";
pub(crate) const TAG: &str = "CACHEDIR.TAG";
const TAG_CONTENT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by lockyard-cache.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Why a build function failed: any error, boxed.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// What a build function returns: its own metadata for `entry.json`, any
/// `Serialize` value (`()` for none, which is stored as `null`; a struct
/// of your own; or a `serde_json::Value`), or why it failed.
pub type BuildResult<M = serde_json::Value> = Result<M, BuildError>;

/// A cache root. Cheap to clone (clones share three directory descriptors).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// The root, `.locks` and `.staging`, opened once with lockyard-flock's
    /// hardening: every name under the root is reached relative to one of
    /// them (see the `at` module), and making a lock file costs no walk.
    dir: LockDir,
    locks: LockDir,
    staging: LockDir,
    options: CacheOptions,
}

impl Cache {
    /// Open the cache at `root`, creating it if it is missing.
    ///
    /// A root is adopted only if lockyard can prove it is, or may become,
    /// a cache: it is missing (then created, mode 0755), empty, or holds
    /// the [`MARKER`] file written when a cache is first made there. (A
    /// root made by lockyard-cache before the marker existed, recognised
    /// by its own `CACHEDIR.TAG` and `.locks`, gets the marker.) Anything
    /// else is refused and left untouched: a cache removes what it finds
    /// corrupt, and a project tree or a home directory mistaken for one
    /// must not lose a file.
    ///
    /// The root and every directory on the way to it must be trusted
    /// ([`CacheOptions::trust`]; by default the caller's or root's and
    /// not writable by others): a root another user made is refused, as
    /// its owner could plant entries the caller would then run or call
    /// intact. Created directories are made relative to their vetted
    /// parent, so a symlink planted meanwhile is not followed.
    ///
    /// # Errors
    /// [`CacheError::NotACache`] for a root that is not a cache (or, with
    /// [`CacheOptions::read_only`], a missing or empty one);
    /// [`CacheError::Lock`] with [`LockError::Untrusted`] for a directory
    /// of another user; [`CacheError::Refused`] if the marker, `.locks` or
    /// `.staging` is not what the cache made; [`CacheError::Io`] if the
    /// root cannot be created or read.
    pub fn open(root: impl Into<PathBuf>, options: CacheOptions) -> Result<Self, CacheError> {
        let root = root.into();
        let dir = if options.read_only {
            match LockDir::open_with(&root, &options.trust) {
                Err(LockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CacheError::NotACache { path: root, reason: NotACache::Missing });
                }
                opened => opened.map_err(refused)?,
            }
        } else {
            LockDir::create(&root, 0o755, &options.trust).map_err(refused)?
        };
        adopt(&dir, &root, !options.read_only)?;
        let internal = |name: &str| match dir.subdir(name) {
            // A root adopted but not yet fully set up holds no entry.
            Err(LockError::Io { source, .. })
                if options.read_only && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(CacheError::NotACache { path: root.clone(), reason: NotACache::Empty })
            }
            other => other.map_err(refused),
        };
        let locks = internal(LOCKS_DIR)?;
        let staging = internal(STAGING_DIR)?;
        Ok(Cache { root, dir, locks, staging, options })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry for `key` is published (whether or not it exists).
    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The lock file guarding `key`'s entry (for `lockyard who`).
    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.locks.lock_path(key)
    }

    fn lock_file(&self, dir: &LockDir, name: &str, options: LockOptions) -> Result<LockFile, CacheError> {
        let mut options = options.permissions(0o644).fs_policy(self.options.fs_policy.clone());
        if self.options.read_only {
            options = options.must_exist();
        }
        dir.file(name, options).map_err(CacheError::Lock)
    }

    /// Fail unless the cache may be written.
    fn writable(&self) -> Result<(), CacheError> {
        if self.options.read_only {
            return Err(CacheError::ReadOnly { path: self.root.clone() });
        }
        Ok(())
    }

    /// `key`'s entry lock, shared, for reading; `None` when opened
    /// read-only and the lock file does not exist (no entry was ever
    /// published under the key).
    fn reader_lock(&self, key: &str, deadline: Option<Instant>) -> Result<Option<LockGuard>, CacheError> {
        match self.lock(&self.locks, &entry_lock_name(key), LockMode::Shared, key, deadline) {
            Err(CacheError::Lock(LockError::Io { source, .. }))
                if self.options.read_only && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// When a wait starting now gives up; `None` for no limit.
    fn deadline(&self) -> Option<Instant> {
        self.options.wait.deadline_from(Instant::now())
    }

    fn waiting(&self, deadline: Option<Instant>) -> Wait {
        self.options.wait.until(deadline)
    }

    fn lock(
        &self,
        dir: &LockDir,
        name: &str,
        mode: LockMode,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<LockGuard, CacheError> {
        let file = self.lock_file(dir, name, LockOptions::new().mode(mode))?;
        file.lock_with(&self.waiting(deadline)).map_err(|e| CacheError::from_lock(key, e))
    }

    #[cfg(feature = "test-hooks")]
    fn step(&self, step: Step) {
        if let Some(hook) = &self.options.hook {
            hook(step);
        }
    }
}

fn entry_lock_name(key: &str) -> String {
    format!("{key}.lock")
}

fn check_key(key: &str) -> Result<(), CacheError> {
    key::validate(key).map_err(|reason| CacheError::InvalidKey { key: key.to_owned(), reason })
}

/// A lock-directory error as the cache reports it: a refusal names what
/// was found where the cache expected its own directory.
fn refused(e: LockError) -> CacheError {
    match e {
        LockError::Refused { path, found } => CacheError::Refused { path, what: found.to_string() },
        e => CacheError::Lock(e),
    }
}

/// Record a use: the lock file's mtime, through the descriptor we hold.
fn touch(lock: &LockGuard) {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        last_modification: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
    };
    // Another user's lock file may refuse; last use is advisory.
    let _ = rustix::fs::futimens(lock, &now);
}

fn fd_mtime_ns(fd: impl AsFd) -> Option<u64> {
    dirfd::mtime_ns(&rustix::fs::fstat(fd).ok()?)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
