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
//! are values from the caller.
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
//!     Ok(serde_json::json!({ "made_by": "the doc example" }))
//! })?;
//! assert_eq!(std::fs::read_to_string(entry.path().join("hello.txt"))?, "hello\n");
//! drop(entry); // now it may be replaced or cleaned
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod at;
mod entry;
mod error;
mod key;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockyard_flock::{
    DirTrust, FsPolicy, Holders, LockDir, LockError, LockFile, LockGuard, LockMode, LockOptions,
};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

pub use entry::{EntryMeta, METADATA, SCHEMA};
pub use error::{CacheError, CorruptReason, ForeignReason, NotACache};
pub use key::{KeyError, MAX_KEY_LEN, validate as validate_key};
/// How waits are given, from lockyard-flock (re-exported so this crate is
/// usable alone).
pub use lockyard_flock::{CancelToken, Wait};

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

/// What a build function returns: its own metadata for `entry.json`.
pub type BuildResult = Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>>;

/// A point in [`Cache::store`] a crash test can stop at.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The staging directory exists and is locked; nothing built yet.
    StagingCreated,
    /// The build function returned; nothing synced yet.
    Built,
    /// Content and `entry.json` are synced; not yet published.
    Synced,
    /// Two-rename fallback only: the old entry is moved out, the new one
    /// not yet in (the key is missing).
    Displaced,
    /// Published; the displaced old entry is not yet deleted.
    Published,
}

/// How a [`Cache`] waits and locks.
#[derive(Clone)]
pub struct CacheOptions {
    wait: Wait,
    fs_policy: FsPolicy,
    trust: DirTrust,
    read_only: bool,
    #[cfg(feature = "test-hooks")]
    hook: Option<std::sync::Arc<dyn Fn(Step) + Send + Sync>>,
    #[cfg(feature = "test-hooks")]
    two_renames: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            wait: Wait::timeout(Duration::from_secs(60)),
            fs_policy: FsPolicy::default(),
            trust: DirTrust::private(),
            read_only: false,
            #[cfg(feature = "test-hooks")]
            hook: None,
            #[cfg(feature = "test-hooks")]
            two_renames: false,
        }
    }
}

impl std::fmt::Debug for CacheOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheOptions")
            .field("wait", &self.wait)
            .field("fs_policy", &self.fs_policy)
            .field("trust", &self.trust)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl CacheOptions {
    /// Waits of up to 60 s, no cancellation, lockyard-flock's default
    /// filesystem policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// How any one operation waits for a lock (a reader for a writer, an
    /// `ensure` for a builder): at most its timeout (60 s unless set;
    /// [`Wait::default`] waits as long as it takes), and until its
    /// [`CancelToken`], if any, is cancelled.
    #[must_use]
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Which filesystems the lock files may live on.
    #[must_use]
    pub fn fs_policy(mut self, policy: FsPolicy) -> Self {
        self.fs_policy = policy;
        self
    }

    /// Which directories the root may be and be reached through:
    /// [`DirTrust::private`] unless set. A cache shared by a group is
    /// [`DirTrust::group`]; see [`Cache::open`] for why another user's
    /// directory is refused.
    #[must_use]
    pub fn trust(mut self, trust: DirTrust) -> Self {
        self.trust = trust;
        self
    }

    /// Create nothing: not the root, not its marker or internal
    /// directories, not a lock file. For tools that only look (list, show,
    /// verify). A missing or empty root is then
    /// [`NotACache::Missing`]/[`NotACache::Empty`] rather than a new cache,
    /// and an entry whose lock file does not exist reads as missing.
    /// Storing into a cache opened so fails with [`CacheError::ReadOnly`].
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Call `hook` at each [`Step`] of a store (crash tests kill the
    /// process there).
    #[cfg(feature = "test-hooks")]
    #[must_use]
    pub fn on_step(mut self, hook: impl Fn(Step) + Send + Sync + 'static) -> Self {
        self.hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Publish replacements with the two-rename fallback even where
    /// `RENAME_EXCHANGE` works, to test it.
    #[cfg(feature = "test-hooks")]
    #[must_use]
    pub fn force_two_renames(mut self) -> Self {
        self.two_renames = true;
        self
    }
}

/// A published entry, held for reading: while this guard lives, nobody
/// replaces or deletes the entry.
#[must_use = "the entry may be replaced or removed as soon as the guard is dropped"]
#[derive(Debug)]
pub struct EntryGuard {
    path: PathBuf,
    meta: EntryMeta,
    lock: LockGuard,
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

/// One entry as [`Cache::list`] found it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
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
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CleanReport {
    /// Keys removed.
    pub removed: Vec<String>,
    /// Bytes freed (of valid entries).
    pub freed: u64,
    /// Keys skipped because they were in use, with who holds them.
    pub busy: Vec<(String, Holders)>,
    /// Keys skipped because they were replaced or used after the plan
    /// was made (see [`Cache::clean_planned`]).
    pub changed: Vec<String>,
}

/// What a clean would remove: made by [`Cache::plan_clean`], carried out
/// by [`Cache::clean_planned`].
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct CleanPlan {
    #[serde(skip)]
    policy: Clean,
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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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

/// What [`Cache::sweep`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Staging names whose writer was dead, now removed.
    pub removed: Vec<String>,
    /// Staging names whose writer is alive, with who holds them.
    pub kept: Vec<(String, Holders)>,
}

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
        self.locks.path().join(entry_lock_name(key))
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

    /// The entry for `key`, held for reading, or `None` if there is none.
    /// Waits (bounded by [`CacheOptions::wait`]) while a writer publishes.
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`], [`CacheError::Corrupt`], a timeout, or
    /// a lock or I/O error.
    pub fn lookup(&self, key: &str) -> Result<Option<EntryGuard>, CacheError> {
        check_key(key)?;
        self.lookup_until(key, self.deadline())
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

    fn lookup_until(&self, key: &str, deadline: Option<Instant>) -> Result<Option<EntryGuard>, CacheError> {
        let Some(lock) = self.reader_lock(key, deadline)? else { return Ok(None) };
        self.open_entry(key, lock, true)
    }

    /// The published directory of `key`, opened; `None` if there is none.
    fn entry_dir(&self, key: &str) -> Result<Option<OwnedFd>, CacheError> {
        match at::open_dir(&self.dir, key) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR | Errno::LOOP) => {
                Err(CacheError::Corrupt { path: self.entry_path(key), reason: CorruptReason::NotADirectory })
            }
            Err(e) => Err(CacheError::io(self.entry_path(key), "open", e)),
        }
    }

    /// Read the entry of `key` under `lock` (held shared or exclusive).
    fn open_entry(&self, key: &str, lock: LockGuard, used: bool) -> Result<Option<EntryGuard>, CacheError> {
        let corrupt = |reason| CacheError::Corrupt { path: self.entry_path(key), reason };
        let meta = match at::open_file_beneath(&self.dir, &format!("{key}/{METADATA}")) {
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

    /// Build an entry for `key` and publish it, replacing any previous
    /// one atomically. `build` fills the directory it is given and returns
    /// the caller's metadata for `entry.json`. Returns the new entry, held
    /// for reading.
    ///
    /// # Errors
    /// [`CacheError::Build`] if `build` fails (nothing is published),
    /// [`CacheError::InvalidKey`], timeouts, lock and I/O errors.
    pub fn store(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult,
    ) -> Result<EntryGuard, CacheError> {
        check_key(key)?;
        self.store_until(key, build, self.deadline())
    }

    fn store_until(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult,
        deadline: Option<Instant>,
    ) -> Result<EntryGuard, CacheError> {
        self.writable()?;
        let cache_lock = self.lock(&self.locks, CACHE_LOCK, LockMode::Shared, "*", deadline)?;
        let slot = self.staging_slot(key, true)?;
        #[cfg(feature = "test-hooks")]
        self.step(Step::StagingCreated);
        let outcome = self.fill_and_publish(key, build, &slot);
        // Whatever happened, the staging slot now holds only debris: the
        // displaced old entry, or a failed build.
        let discarded = slot.discard();
        drop(cache_lock);
        let guard = outcome?;
        if let Err(e) = discarded {
            tracing::warn!(error = %e, "leaving staging debris for the next sweep");
        }
        Ok(guard)
    }

    fn fill_and_publish(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult,
        slot: &Slot<'_>,
    ) -> Result<EntryGuard, CacheError> {
        let path = slot.path();
        let user = build(&path).map_err(|source| CacheError::Build { key: key.to_owned(), source })?;
        #[cfg(feature = "test-hooks")]
        self.step(Step::Built);
        // The build had the path; from here on, its directory by descriptor.
        let dir =
            at::open_dir(&self.staging, slot.name.as_str()).map_err(|e| CacheError::io(&path, "open", e))?;
        let meta_path = path.join(METADATA);
        if at::stat(&dir, METADATA, &meta_path)?.is_some() {
            return Err(CacheError::Build {
                key: key.to_owned(),
                source: format!("the build wrote {METADATA}, a name the cache reserves for itself").into(),
            });
        }
        let walked = entry::walk(&dir, &path, true, &mut |_| {})?;
        let meta = EntryMeta {
            schema: SCHEMA,
            key: key.to_owned(),
            created_ns: now_ns(),
            size: walked.size,
            files: walked.files,
            digest: walked.digest,
            user,
        };
        let encoded = serde_json::to_vec_pretty(&meta)
            .map_err(|e| CacheError::io(&meta_path, "encode", std::io::Error::other(e)))?;
        write_synced(&dir, &meta_path, &encoded)?;
        rustix::fs::fsync(&dir).map_err(|e| CacheError::io(&path, "fsync", e))?;
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

    /// Move the staging directory into place; the caller holds the entry
    /// lock exclusively.
    fn publish(&self, key: &str, slot: &Slot<'_>) -> Result<(), CacheError> {
        let target = self.entry_path(key);
        let exists = match at::stat(&self.dir, key, &target)? {
            Some(st) if at::is_dir(&st) => true,
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
        at::sync_dir(&self.dir, &self.root)?;
        at::sync_dir(&self.staging, self.staging.path())
    }

    /// The entry for `key`: read it if present, otherwise build it, with
    /// one builder among all processes that ask at once. The others wait
    /// (bounded by [`CacheOptions::wait`], cancellable) and read what it
    /// published; if the builder dies, one of them builds instead.
    ///
    /// # Errors
    /// As [`Cache::lookup`] and [`Cache::store`].
    pub fn ensure(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> BuildResult,
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
        self.store_until(key, build, deadline)
    }

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
        for name in at::names(&self.dir, &self.root)? {
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
    fn last_used_ns(&self, key: &str) -> Option<u64> {
        let st = rustix::fs::statat(&self.locks, entry_lock_name(key).as_str(), AtFlags::empty()).ok()?;
        at::mtime_ns(&st)
    }

    /// Remove the debris of dead writers: every staging directory whose
    /// lock can be taken without blocking. Live writers' are kept.
    ///
    /// # Errors
    /// [`CacheError::Io`] if the staging directory cannot be listed.
    pub fn sweep(&self) -> Result<SweepReport, CacheError> {
        self.writable()?;
        let staging_path = self.staging.path();
        let mut names: Vec<String> = at::names(&self.staging, staging_path)?
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
                Ok(None) => live.push((base.to_owned(), staging_path.join(name))),
                // Swept by someone else meanwhile.
                Err(lockyard_flock::LockError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::Lock(e)),
            }
        }
        report.kept = name_holders(live);
        // A tree without a lock file has no writer: writers create and
        // lock the lock file before the tree, and sweeps remove the tree
        // before the lock file.
        let exists = |name: &str| at::stat(&self.staging, name, &staging_path.join(name));
        for name in &names {
            if name.ends_with(".lock") || exists(name)?.is_none() {
                continue;
            }
            let base = name.strip_suffix(".old").unwrap_or(name);
            if exists(&format!("{base}.lock"))?.is_none() {
                at::remove_tree(&self.staging, name.as_ref(), &staging_path.join(name))?;
                report.removed.push(name.clone());
            }
        }
        Ok(report)
    }

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
    fn wipe_lock(&self, policy: Clean) -> Result<Option<LockGuard>, CacheError> {
        match policy {
            Clean::All => {
                Ok(Some(self.lock(&self.locks, CACHE_LOCK, LockMode::Exclusive, "*", self.deadline())?))
            }
            _ => Ok(None),
        }
    }

    fn remove_planned(
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
                None => busy.push((key.to_owned(), self.lock_path(key))),
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
        report.busy = name_holders(busy);
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
        if at::stat(&self.dir, name, &self.entry_path(name))?.is_none() {
            return Ok(false);
        }
        self.remove_entry(name, lock)?;
        Ok(true)
    }

    /// Whether `victim` may still go: it is still something a publish
    /// made (a directory with `entry.json`), and, when `unchanged`, still
    /// what the plan saw: same content, not used since (we hold its lock
    /// exclusively, so neither can change while we look).
    fn as_planned(&self, victim: &Victim, lock: &LockGuard, unchanged: bool) -> bool {
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
    fn remove_entry(&self, key: &str, lock: LockGuard) -> Result<(), CacheError> {
        let slot = self.staging_slot(key, false)?;
        match rustix::fs::renameat(&self.dir, key, &self.staging, slot.name.as_str()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(CacheError::io(self.entry_path(key), "rename", e)),
        }
        at::sync_dir(&self.dir, &self.root)?;
        drop(lock);
        slot.discard()
    }

    /// A fresh staging slot for `key`: its lock file created and locked,
    /// then (with `make_dir`) its directory.
    fn staging_slot(&self, key: &str, make_dir: bool) -> Result<Slot<'_>, CacheError> {
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
struct Slot<'a> {
    staging: &'a LockDir,
    name: String,
    guard: Option<LockGuard>,
}

impl Slot<'_> {
    fn path(&self) -> PathBuf {
        self.staging.path().join(&self.name)
    }

    /// Where the two-rename fallback puts a displaced entry.
    fn old(&self) -> String {
        format!("{}.old", self.name)
    }

    /// Remove the slot's trees, then its lock file while still holding it.
    fn discard(mut self) -> Result<(), CacheError> {
        let dir = self.staging.path();
        at::remove_tree(self.staging, self.name.as_ref(), &self.path())?;
        let old = self.old();
        at::remove_tree(self.staging, old.as_ref(), &dir.join(&old))?;
        let lock = format!("{}.lock", self.name);
        match rustix::fs::unlinkat(self.staging, lock.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(CacheError::io(dir.join(&lock), "remove", e)),
        }
        drop(self.guard.take());
        Ok(())
    }
}

/// Check that the root `dir` is a cache (see [`Cache::open`]); with
/// `write`, make an empty (or legacy) one a cache and set up what is
/// missing inside it.
fn adopt(dir: &LockDir, root: &Path, write: bool) -> Result<(), CacheError> {
    let mut names = at::names(dir, root)?;
    if names.iter().any(|n| n == MARKER) {
        let path = root.join(MARKER);
        if !at::stat(dir, MARKER, &path)?.is_some_and(|st| at::is_regular(&st)) {
            return Err(CacheError::Refused {
                path,
                what: "something other than a file as the cache's marker".into(),
            });
        }
    } else if names.is_empty() || is_legacy(dir, &names) {
        if !write {
            return if names.is_empty() {
                Err(CacheError::NotACache { path: root.to_owned(), reason: NotACache::Empty })
            } else {
                Ok(())
            };
        }
        // First, so that a root set up halfway is still recognised.
        create_file(dir, MARKER, MARKER_CONTENT, &root.join(MARKER))?;
    } else {
        names.sort();
        let count = names.len();
        let shown = names.iter().take(4).map(|n| n.to_string_lossy().into_owned()).collect();
        return Err(CacheError::NotACache {
            path: root.to_owned(),
            reason: NotACache::Foreign { shown, count },
        });
    }
    if write {
        create_file(dir, TAG, TAG_CONTENT, &root.join(TAG))?;
        for name in [LOCKS_DIR, STAGING_DIR] {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(CacheError::io(root.join(name), "create", e)),
            }
        }
    }
    Ok(())
}

/// A root made by lockyard-cache before it wrote [`MARKER`]: its own
/// `CACHEDIR.TAG`, byte for byte, and a `.locks` directory.
fn is_legacy(dir: &LockDir, names: &[std::ffi::OsString]) -> bool {
    if !names.iter().any(|n| n == LOCKS_DIR) {
        return false;
    }
    let Ok(fd) = at::open_file(dir, TAG) else { return false };
    if !rustix::fs::fstat(&fd).is_ok_and(|st| at::is_regular(&st)) {
        return false;
    }
    let mut buf = [0u8; 512];
    rustix::io::read(&fd, &mut buf).is_ok_and(|n| &buf[..n] == TAG_CONTENT.as_bytes())
}

/// Create the file `name` in `dir` holding `content`, unless it exists.
fn create_file(dir: &LockDir, name: &str, content: &str, path: &Path) -> Result<(), CacheError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => {
            use std::io::Write;
            std::fs::File::from(fd)
                .write_all(content.as_bytes())
                .map_err(|e| CacheError::io(path, "write", e))
        }
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(CacheError::io(path, "create", e)),
    }
}

fn entry_lock_name(key: &str) -> String {
    format!("{key}.lock")
}

/// The holders of each busy lock, with one read of /proc for all of them
/// (empty where /proc could not say).
fn name_holders(busy: Vec<(String, PathBuf)>) -> Vec<(String, Holders)> {
    if busy.is_empty() {
        return Vec::new();
    }
    let paths: Vec<&Path> = busy.iter().map(|(_, path)| path.as_path()).collect();
    let mut found = lockyard_flock::holders_of_many(&paths, false).unwrap_or_default().into_iter();
    busy.into_iter()
        .map(|(name, _)| (name, found.next().and_then(|(_, h)| h.ok()).unwrap_or_default()))
        .collect()
}

fn check_key(key: &str) -> Result<(), CacheError> {
    key::validate(key).map_err(|reason| CacheError::InvalidKey { key: key.to_owned(), reason })
}

/// Create `entry.json` in `dir` and sync it.
fn write_synced(dir: impl AsFd, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
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
    at::mtime_ns(&rustix::fs::fstat(fd).ok()?)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
