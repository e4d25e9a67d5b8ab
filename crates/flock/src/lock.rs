//! Lock files, the ways to lock them, and the guards that hold the locks.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockyard_procfs::{RecordKind, RecordMode};
use rustix::fs::{AtFlags, FlockOperation};
use rustix::io::Errno;

use crate::error::LockError;
use crate::fs_policy::{FsPolicy, FsType};
use crate::holders::Holders;
use crate::open::{Dir, DirTrust, OpenOptions, Opened, open_lock_file};
use crate::sys;
use crate::wait::{CancelToken, Waiter, Wake};

/// How many times a lock is retaken because its path came to name another
/// file (deleted, renamed over) before giving up with
/// [`LockError::Unstable`].
const MAX_REOPENS: u32 = 8;

/// Which kernel lock to take.
///
/// On Linux `flock` locks and `fcntl` (OFD and POSIX) locks are independent:
/// a `flock` never conflicts with an `fcntl` lock on the same file. Every
/// process sharing a lock file must use the same family as its peers
/// (`flock(1)` uses `flock`; pressure-vessel and `bwrap --lock-file` use
/// OFD). OFD and POSIX locks do conflict with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LockKind {
    /// `flock(2)`: whole-file, owned by the open file description, so it
    /// survives `fork` into children and is released when the last
    /// descriptor sharing it closes. What util-linux `flock(1)` takes.
    #[default]
    Flock,
    /// Open-file-description `fcntl` locks (`F_OFD_SETLK`, Linux 3.15+):
    /// byte ranges with flock's ownership. What pressure-vessel and
    /// `bwrap --lock-file` take. On a kernel without them, falls back to
    /// [`LockKind::Posix`] (the guard reports which it got).
    Ofd,
    /// Process-associated `fcntl` locks (`F_SETLK`). Beware: they belong to
    /// the process, not the descriptor, so a second lock of the same file
    /// in the same process never conflicts with the first, closing *any*
    /// descriptor of the file in the process releases them all, and a
    /// forked child does not inherit them.
    Posix,
}

/// The lower-case name (`flock`, `ofd`, `posix`), as
/// [`RecordKind::name`] spells it.
impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(RecordKind::from(*self).name().unwrap_or_default())
    }
}

/// How `/proc/locks` shows a lock of this kind.
impl From<LockKind> for RecordKind {
    fn from(kind: LockKind) -> Self {
        match kind {
            LockKind::Flock => RecordKind::Flock,
            LockKind::Ofd => RecordKind::Ofd,
            LockKind::Posix => RecordKind::Posix,
        }
    }
}

/// The kind to take for a lock `/proc/locks` shows; leases, delegations
/// and unknown kinds are not locks one can take and come back as `Err`.
impl TryFrom<RecordKind> for LockKind {
    type Error = RecordKind;

    fn try_from(kind: RecordKind) -> Result<Self, RecordKind> {
        match kind {
            RecordKind::Flock => Ok(LockKind::Flock),
            RecordKind::Ofd => Ok(LockKind::Ofd),
            RecordKind::Posix => Ok(LockKind::Posix),
            other => Err(other),
        }
    }
}

/// Shared (many readers) or exclusive (one writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LockMode {
    /// Any number of shared holders, no exclusive one.
    Shared,
    /// One holder, nobody else.
    #[default]
    Exclusive,
}

/// `READ` is shared and `WRITE` exclusive; anything else (a lease being
/// broken to `UNLCK`, an unknown word) is neither and comes back as `Err`.
impl TryFrom<RecordMode> for LockMode {
    type Error = RecordMode;

    fn try_from(mode: RecordMode) -> Result<Self, RecordMode> {
        match mode {
            RecordMode::Read => Ok(LockMode::Shared),
            RecordMode::Write => Ok(LockMode::Exclusive),
            other => Err(other),
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// A byte range for the `fcntl` kinds; `flock` always locks the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Number of bytes; 0 means "to the end of the file, however it grows".
    pub len: u64,
}

impl ByteRange {
    /// The whole file.
    pub const WHOLE: ByteRange = ByteRange { start: 0, len: 0 };

    /// `len` bytes from `start` (`len` 0: to the end of the file).
    pub const fn new(start: u64, len: u64) -> Self {
        ByteRange { start, len }
    }
}

/// How to open and lock a [`LockFile`].
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    kind: LockKind,
    mode: LockMode,
    range: ByteRange,
    permissions: Option<u32>,
    fs_policy: FsPolicy,
    must_exist: bool,
    foreign_ok: bool,
    trust: DirTrust,
}

impl LockOptions {
    /// Exclusive `flock` on the whole file, created 0644 (minus the umask),
    /// refusing [`FsType::UNRELIABLE`] filesystems.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which kernel lock to take.
    #[must_use]
    pub fn kind(mut self, kind: LockKind) -> Self {
        self.kind = kind;
        self
    }

    /// Shared or exclusive.
    #[must_use]
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// Shorthand for `mode(LockMode::Shared)`.
    #[must_use]
    pub fn shared(self) -> Self {
        self.mode(LockMode::Shared)
    }

    /// Shorthand for `mode(LockMode::Exclusive)`.
    #[must_use]
    pub fn exclusive(self) -> Self {
        self.mode(LockMode::Exclusive)
    }

    /// Lock only these bytes (the `fcntl` kinds; ignored by `flock`).
    #[must_use]
    pub fn range(mut self, range: ByteRange) -> Self {
        self.range = range;
        self
    }

    /// Permissions for the lock file if this open creates it, applied with
    /// `fchmod` so the umask does not interfere. A lock directory shared by
    /// several users needs `0o666`, or other users cannot open the file
    /// read-write. An existing file's permissions are never changed.
    #[must_use]
    pub fn permissions(mut self, mode: u32) -> Self {
        self.permissions = Some(mode & 0o7777);
        self
    }

    /// Which filesystems to refuse.
    #[must_use]
    pub fn fs_policy(mut self, policy: FsPolicy) -> Self {
        self.fs_policy = policy;
        self
    }

    /// Do not create a missing lock file: locking it fails with an
    /// [`LockError::Io`] whose source is `NotFound`. For inspecting a lock
    /// without leaving a file behind.
    #[must_use]
    pub fn must_exist(mut self) -> Self {
        self.must_exist = true;
        self
    }

    /// In a world-writable sticky directory, accept a lock file owned by
    /// another (non-root) user, which is refused by default. For a
    /// directory made so that every user of the host coordinates through
    /// it, such as CPU reservation locks: there, another user's file is
    /// the point, and holding it is no more than any user may do anyway.
    /// Symlinks, FIFOs and other non-files are still refused.
    #[must_use]
    pub fn allow_foreign_owner(mut self) -> Self {
        self.foreign_ok = true;
        self
    }

    /// Which directories the lock file may be in and be reached through
    /// ([`DirTrust::private`] unless set).
    #[must_use]
    pub fn trust(mut self, trust: DirTrust) -> Self {
        self.trust = trust;
        self
    }
}

/// How long to wait for a lock, and what can stop the wait early: the one
/// way every lockyard crate takes a wait ([`LockFile::lock_with`], the
/// cache's `CacheOptions::wait`, topo's `Reserver::reserve_wait`).
/// `Wait::default()` waits as long as it takes; a timeout too long to
/// represent as an instant (`Duration::MAX`) is no limit either.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    /// Give up with [`LockError::Timeout`] after this long; `None` waits
    /// until the lock is free or the wait is cancelled.
    pub timeout: Option<Duration>,
    /// Give up with [`LockError::Cancelled`] when this token is cancelled.
    pub cancel: Option<CancelToken>,
}

impl Wait {
    /// Wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        Wait { timeout: Some(timeout), cancel: None }
    }

    /// Also give up when `token` is cancelled.
    #[must_use]
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// When this wait, started at `start`, gives up (`None`: never).
    pub fn deadline_from(&self, start: Instant) -> Option<Instant> {
        self.timeout.and_then(|t| start.checked_add(t))
    }

    /// What is left of this wait until `deadline` (from
    /// [`Wait::deadline_from`]), with the same cancellation: for one wait
    /// shared by several locks taken in turn.
    pub fn until(&self, deadline: Option<Instant>) -> Wait {
        Wait {
            timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
            cancel: self.cancel.clone(),
        }
    }
}

/// Locks other processes hold, each with its holders as /proc showed
/// them: what a busy error or a report of what was left alone carries
/// (see [`LockDir::holders`]).
///
/// Prints as `NAME held by HOLDERS; NAME held by HOLDERS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Busy(pub Vec<BusyLock>);

/// One busy lock: the resource's name and who holds its lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BusyLock {
    /// The resource's name (its lock file is `NAME.lock`).
    pub name: String,
    /// Who holds it.
    pub holders: Holders,
}

impl Busy {
    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many locks are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The busy locks.
    pub fn iter(&self) -> std::slice::Iter<'_, BusyLock> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Busy {
    type Item = &'a BusyLock;
    type IntoIter = std::slice::Iter<'a, BusyLock>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, lock) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} held by {}", lock.name, lock.holders)?;
        }
        Ok(())
    }
}

/// A directory of lock files, opened once with the hardening rules (see the
/// crate docs). Lock files made from it share its descriptor, so making
/// one costs no path walk: for callers that lock many names in one
/// directory (a cache's per-entry locks, per-CPU reservation files).
#[derive(Debug, Clone)]
pub struct LockDir {
    dir: Arc<Dir>,
}

impl LockDir {
    /// Open the directory at `path`, trusted as [`DirTrust::private`].
    ///
    /// # Errors
    /// As [`LockFile::new`] for a lock file's directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LockError> {
        Self::open_with(path, &DirTrust::private())
    }

    /// Open the directory at `path`, refusing it (and every directory on
    /// the way) unless `trust` accepts it.
    ///
    /// # Errors
    /// [`LockError::Untrusted`] naming the directory refused, its owner and
    /// mode; otherwise as [`LockFile::new`] for a lock file's directory.
    pub fn open_with(path: impl AsRef<Path>, trust: &DirTrust) -> Result<Self, LockError> {
        Ok(LockDir { dir: Arc::new(Dir::open(path.as_ref(), trust, None)?) })
    }

    /// Open the directory at `path` as [`LockDir::open_with`] does,
    /// creating what is missing on the way: each directory with `mkdirat`
    /// relative to its already vetted parent, so a symlink planted while
    /// it is made is refused rather than followed. The last directory, if
    /// this call made it, gets exactly `mode` (the umask does not apply);
    /// any others 0755 minus the umask. An existing directory keeps its
    /// mode.
    ///
    /// # Errors
    /// As [`LockDir::open_with`], or the directory cannot be created.
    pub fn create(path: impl AsRef<Path>, mode: u32, trust: &DirTrust) -> Result<Self, LockError> {
        Ok(LockDir { dir: Arc::new(Dir::open(path.as_ref(), trust, Some(mode & 0o7777))?) })
    }

    /// The directory's path as given.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the lock file of resource `name`: `NAME.lock` in this
    /// directory, the convention every lockyard lock directory follows (a
    /// cache entry's key, a CPU's or LLC's name).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.lock"))
    }

    /// The lock file of resource `name` ([`LockDir::lock_path`]), as
    /// [`LockDir::file`] opens it.
    ///
    /// # Errors
    /// As [`LockDir::file`].
    pub fn lock_file(&self, name: &str, options: LockOptions) -> Result<LockFile, LockError> {
        self.file(format!("{name}.lock"), options)
    }

    /// Who holds the lock file of each of `names` ([`LockDir::lock_path`]),
    /// from one reading of /proc for all of them: for the error or report
    /// that says what was busy. A name /proc says nothing about (its file
    /// gone, /proc unreadable) gets empty holders, which print as "nobody
    /// visible"; being busy was already established by the lock attempt.
    pub fn holders<S: AsRef<str>>(&self, names: &[S]) -> Busy {
        if names.is_empty() {
            return Busy::default();
        }
        let paths: Vec<PathBuf> = names.iter().map(|n| self.lock_path(n.as_ref())).collect();
        let mut found = crate::holders::holders_of_many(&paths, false).unwrap_or_default().into_iter();
        Busy(
            names
                .iter()
                .map(|name| BusyLock {
                    name: name.as_ref().to_owned(),
                    holders: found.next().and_then(|(_, h)| h.ok()).unwrap_or_default(),
                })
                .collect(),
        )
    }

    /// The directory `name` inside this one, opened relative to this
    /// one's descriptor and never through a symlink: for a tree of lock
    /// directories under one hardened root (a cache's `.locks`).
    ///
    /// # Errors
    /// [`LockError::InvalidPath`] unless `name` is one path component;
    /// [`LockError::Refused`] if it is a symlink or not a directory;
    /// [`LockError::Io`] if it cannot be opened.
    pub fn subdir(&self, name: impl AsRef<OsStr>) -> Result<LockDir, LockError> {
        let name = name.as_ref();
        check_component(&self.dir.path().join(name), name)?;
        Ok(LockDir { dir: Arc::new(self.dir.open_child(name)?) })
    }

    /// The lock file `name` in this directory.
    ///
    /// # Errors
    /// [`LockError::InvalidPath`] unless `name` is one path component
    /// (not empty, `.`, `..`, and without `/`).
    pub fn file(&self, name: impl AsRef<OsStr>, options: LockOptions) -> Result<LockFile, LockError> {
        let name = name.as_ref();
        let path = self.dir.path().join(name);
        check_component(&path, name)?;
        Ok(LockFile { dir: Arc::clone(&self.dir), name: name.to_owned(), path, options })
    }
}

/// The descriptor is an `O_PATH` one: good as the directory of `*at`
/// calls (`openat`, `statat`, `mkdirat`, `renameat`, `unlinkat`), not for
/// reading or `fsync`.
impl AsFd for LockDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

fn check_component(path: &Path, name: &OsStr) -> Result<(), LockError> {
    let bytes = name.as_encoded_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(LockError::InvalidPath {
            path: path.to_owned(),
            reason: "a lock file or directory name must be one path component",
        });
    }
    Ok(())
}

/// A lock file: a path in a directory opened once, hardened (see the crate
/// docs), and the options to lock it with. Each lock attempt opens the file
/// anew relative to that directory.
#[derive(Debug)]
pub struct LockFile {
    dir: Arc<Dir>,
    name: OsString,
    path: PathBuf,
    options: LockOptions,
}

impl LockFile {
    /// A lock file at `path` with default [`LockOptions`].
    ///
    /// # Errors
    /// [`LockError::InvalidPath`] if `path` has no file name, or an error
    /// opening its directory (including [`LockError::Refused`] for a foreign
    /// symlink on the way).
    pub fn new(path: impl AsRef<Path>) -> Result<Self, LockError> {
        Self::with_options(path, LockOptions::new())
    }

    /// A lock file at `path` with `options`.
    ///
    /// # Errors
    /// As [`LockFile::new`].
    pub fn with_options(path: impl AsRef<Path>, options: LockOptions) -> Result<Self, LockError> {
        let path = path.as_ref();
        let invalid = |reason| LockError::InvalidPath { path: path.to_owned(), reason };
        let name = match path.file_name() {
            Some(name) if !path.as_os_str().as_encoded_bytes().ends_with(b"/") => name.to_owned(),
            _ => return Err(invalid("a lock file path must end in a file name")),
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = Arc::new(Dir::open(parent, &options.trust, None)?);
        Ok(LockFile { dir, name, path: path.to_owned(), options })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options locks are taken with.
    pub fn options(&self) -> &LockOptions {
        &self.options
    }

    /// Take the lock if it is free now; `Ok(None)` if someone holds it.
    ///
    /// # Errors
    /// Opening or locking failed for a reason other than contention.
    pub fn try_lock(&self) -> Result<Option<LockGuard>, LockError> {
        self.acquire(None).map(Result::ok)
    }

    /// Take the lock if it is free now; [`LockError::Contended`], naming the
    /// holders, if someone holds it.
    ///
    /// # Errors
    /// As [`LockFile::try_lock`], plus `Contended`.
    pub fn try_lock_or_holders(&self) -> Result<LockGuard, LockError> {
        match self.acquire(None)? {
            Ok(guard) => Ok(guard),
            Err(_) => {
                Err(LockError::Contended { path: self.path.clone(), holders: self.holders_for_error() })
            }
        }
    }

    /// Wait for the lock as long as it takes. Prefer
    /// [`LockFile::lock_timeout`] or [`LockFile::lock_with`] where a stuck
    /// holder must not stall the caller forever.
    ///
    /// # Errors
    /// Opening or locking failed.
    pub fn lock(&self) -> Result<LockGuard, LockError> {
        self.lock_with(&Wait::default())
    }

    /// Wait at most `timeout` for the lock.
    ///
    /// # Errors
    /// [`LockError::Timeout`] naming the holders, or an opening or locking
    /// failure.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard, LockError> {
        self.lock_with(&Wait::timeout(timeout))
    }

    /// Wait for the lock as `wait` says.
    ///
    /// # Errors
    /// [`LockError::Timeout`], [`LockError::Cancelled`], or an opening or
    /// locking failure.
    pub fn lock_with(&self, wait: &Wait) -> Result<LockGuard, LockError> {
        let started = Instant::now();
        // A timeout too large to represent (`Duration::MAX`) is no limit.
        let deadline = wait.timeout.and_then(|t| started.checked_add(t));
        let mut waiter = Waiter::new(deadline, wait.cancel.as_ref());
        match self.acquire(Some(&mut waiter))? {
            Ok(guard) => Ok(guard),
            Err(Wake::Cancelled) => {
                Err(LockError::Cancelled { path: self.path.clone(), waited: started.elapsed() })
            }
            Err(_) => Err(LockError::Timeout {
                path: self.path.clone(),
                waited: started.elapsed(),
                holders: self.holders_for_error(),
            }),
        }
    }

    fn holders_for_error(&self) -> Holders {
        match crate::holders::holders_of(&self.path) {
            Ok(holders) => holders,
            Err(e) => {
                log!(debug, path = %self.path.display(), error = %e, "cannot list holders");
                Holders::default()
            }
        }
    }

    /// Open, lock, verify; with a waiter, wait until locked or told to stop.
    /// The inner `Err` says why the wait stopped (`Retry` for a failed
    /// non-blocking attempt).
    fn acquire(&self, mut waiter: Option<&mut Waiter<'_>>) -> Result<Result<LockGuard, Wake>, LockError> {
        let opts = &self.options;
        let open_options = OpenOptions {
            permissions: opts.permissions,
            read_only_ok: opts.mode == LockMode::Shared,
            create: !opts.must_exist,
            foreign_ok: opts.foreign_ok,
        };
        for _ in 0..MAX_REOPENS {
            let opened = open_lock_file(&self.dir, &self.name, &self.path, open_options)?;
            self.check_filesystem(&opened)?;
            let mut kind = opts.kind;
            let mut watching = false;
            loop {
                match apply(opened.fd.as_fd(), &mut kind, Some(opts.mode), opts.range) {
                    Ok(()) => {
                        if self.still_names(&opened)? {
                            return Ok(Ok(LockGuard::new(opened.fd, self, kind)));
                        }
                        log!(debug, path = %self.path.display(), "lock file replaced after locking; retrying");
                        break;
                    }
                    Err(Errno::WOULDBLOCK | Errno::ACCESS) => {}
                    Err(e) => return Err(LockError::io(&self.path, lock_op(kind), e)),
                }
                let Some(waiter) = waiter.as_deref_mut() else { return Ok(Err(Wake::Retry)) };
                if !watching {
                    // Watch, then retry once before sleeping, so a release
                    // between the failed attempt and the watch is not lost.
                    waiter.watch(opened.fd.as_fd());
                    watching = true;
                    continue;
                }
                match waiter.sleep().map_err(|e| LockError::io(&self.path, "wait", e))? {
                    Wake::Retry => {}
                    Wake::Replaced => {
                        if !self.still_names(&opened)? {
                            break;
                        }
                        watching = false;
                    }
                    stop @ (Wake::Deadline | Wake::Cancelled) => return Ok(Err(stop)),
                }
            }
        }
        Err(LockError::Unstable { path: self.path.clone(), attempts: MAX_REOPENS })
    }

    fn check_filesystem(&self, opened: &Opened) -> Result<(), LockError> {
        let magic = match self.dir.fs_magic(opened.stat.st_dev) {
            Some(magic) => magic,
            None => {
                let magic =
                    fs_magic(opened.fd.as_fd()).map_err(|e| LockError::io(&self.path, "statfs", e))?;
                self.dir.remember_fs_magic(opened.stat.st_dev, magic);
                magic
            }
        };
        self.options
            .fs_policy
            .check(magic)
            .map_err(|fs: FsType| LockError::UnsupportedFilesystem { path: self.path.clone(), fs })
    }

    /// Up to `max` bytes from the start of the file, opened as for locking
    /// but not created and not locked (a pidfile's pid).
    pub(crate) fn read_small(&self, max: usize) -> Result<Vec<u8>, LockError> {
        let options = OpenOptions {
            permissions: None,
            read_only_ok: true,
            create: false,
            foreign_ok: self.options.foreign_ok,
        };
        let opened = open_lock_file(&self.dir, &self.name, &self.path, options)?;
        let mut buf = vec![0; max];
        let n =
            rustix::io::pread(&opened.fd, &mut buf, 0).map_err(|e| LockError::io(&self.path, "read", e))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Whether the path still names the inode that was opened (a tmp
    /// cleaner or `rm` may have removed it, and another process created a
    /// new file there that a newcomer would lock instead).
    fn still_names(&self, opened: &Opened) -> Result<bool, LockError> {
        match rustix::fs::statat(self.dir.as_fd(), self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) => Ok(now.st_dev == opened.stat.st_dev && now.st_ino == opened.stat.st_ino),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(LockError::io(&self.path, "stat", e)),
        }
    }

    /// The directory the lock file lives in, as given.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Lock the open file description `fd` refers to, in place: a file the
/// caller opened itself, or one inherited from a shell (`exec 9>file;
/// flock 9`). The lock belongs to that open file description, so it stays
/// after this returns, for as long as any descriptor sharing it is open,
/// or until [`unlock_descriptor`]. Returns the kind taken (`Posix` where
/// `Ofd` fell back).
///
/// The kind, mode and range of `options` apply, and its filesystem
/// policy; the rest of `options` is about opening, which the caller did.
/// `wait` says how long to wait: with a zero timeout, one attempt; with
/// neither timeout nor cancel token, the wait blocks in the kernel's own
/// queue, which is fair and wakes the moment the lock is free, however it
/// is released; otherwise it waits as [`LockFile::lock_with`] does. There
/// is no path to re-check: a file replaced under its name meanwhile is
/// not noticed. Messages name the file by its `/proc/self/fd` link.
///
/// # Errors
/// [`LockError::Contended`] (zero timeout) or [`LockError::Timeout`]
/// naming the holders, [`LockError::Cancelled`],
/// [`LockError::UnsupportedFilesystem`], or the lock call's own error
/// (`EBADF` for a closed descriptor, or for an exclusive `fcntl` lock on
/// one not open for writing).
pub fn lock_descriptor(
    fd: BorrowedFd<'_>,
    options: &LockOptions,
    wait: &Wait,
) -> Result<LockKind, LockError> {
    let path = || descriptor_path(fd);
    let magic = fs_magic(fd).map_err(|e| LockError::io(path(), "statfs", e))?;
    options.fs_policy.check(magic).map_err(|fs| LockError::UnsupportedFilesystem { path: path(), fs })?;
    let mut kind = options.kind;
    let holders = || crate::holders::holders_of(path()).unwrap_or_default();
    if wait.timeout.is_none() && wait.cancel.is_none() {
        loop {
            match lock_call(fd, &mut kind, Some(options.mode), options.range, true) {
                Ok(()) => return Ok(kind),
                Err(Errno::INTR) => {}
                Err(e) => return Err(LockError::io(path(), lock_op(kind), e)),
            }
        }
    }
    let started = Instant::now();
    let once = wait.timeout.is_some_and(|t| t.is_zero());
    let deadline = wait.timeout.and_then(|t| started.checked_add(t));
    let mut waiter = Waiter::new(deadline, wait.cancel.as_ref());
    let mut watching = false;
    loop {
        match apply(fd, &mut kind, Some(options.mode), options.range) {
            Ok(()) => return Ok(kind),
            Err(Errno::WOULDBLOCK | Errno::ACCESS) => {}
            Err(e) => return Err(LockError::io(path(), lock_op(kind), e)),
        }
        if once {
            return Err(LockError::Contended { holders: holders(), path: path() });
        }
        if !watching {
            // Watch, then retry once before sleeping (see LockFile::acquire).
            waiter.watch(fd);
            watching = true;
            continue;
        }
        match waiter.sleep().map_err(|e| LockError::io(path(), "wait", e))? {
            Wake::Retry | Wake::Replaced => {}
            Wake::Cancelled => return Err(LockError::Cancelled { path: path(), waited: started.elapsed() }),
            Wake::Deadline => {
                return Err(LockError::Timeout {
                    holders: holders(),
                    path: path(),
                    waited: started.elapsed(),
                });
            }
        }
    }
}

/// Lock `fd` as [`lock_descriptor`] does with a timeout, but waiting in
/// the kernel's own queue, on a thread of its own, so that the lock is
/// taken the moment it is free, however it is released. Returns the
/// descriptor, locked, and the kind taken.
///
/// [`lock_descriptor`]'s timed wait cannot block in the kernel (only a
/// signal could end that, and the library installs no handlers behind its
/// caller's back): it retries on a capped backoff, and a holder that
/// unlocks without closing is noticed up to 10 ms late (docs/benchmarks.md
/// measures 5.8 ms p50, against 46 µs for a waiter blocked in the kernel).
///
/// The descriptor is taken, and must be the only one of its open file
/// description (not a `dup` or an inherited copy): when the wait times
/// out it stays with the waiting thread, blocked until the lock is free,
/// and that thread closes it once its call returns, releasing whatever it
/// got. Nothing the caller still holds can be locked or unlocked behind
/// its back. The price is a thread per wait that times out, for as long
/// as the lock stays held: use it where waits end (a command, a job that
/// gives up), not to retry a lock held forever in a loop.
///
/// # Errors
/// As [`lock_descriptor`]: [`LockError::Timeout`] naming the holders,
/// [`LockError::UnsupportedFilesystem`], or the lock call's own error.
pub fn lock_descriptor_queued(
    fd: OwnedFd,
    options: &LockOptions,
    timeout: Duration,
) -> Result<(OwnedFd, LockKind), LockError> {
    use std::sync::{Mutex, mpsc};
    if timeout.is_zero() {
        let kind = lock_descriptor(fd.as_fd(), options, &Wait::timeout(timeout))?;
        return Ok((fd, kind));
    }
    let started = Instant::now();
    let path = descriptor_path(fd.as_fd());
    let magic = fs_magic(fd.as_fd()).map_err(|e| LockError::io(&path, "statfs", e))?;
    options
        .fs_policy
        .check(magic)
        .map_err(|fs| LockError::UnsupportedFilesystem { path: path.clone(), fs })?;
    let abandoned = Arc::new(Mutex::new(false));
    let (tx, rx) = mpsc::channel();
    let (mode, range, mut kind) = (options.mode, options.range, options.kind);
    let given_up = Arc::clone(&abandoned);
    std::thread::spawn(move || {
        let result = loop {
            match lock_call(fd.as_fd(), &mut kind, Some(mode), range, true) {
                Err(Errno::INTR) => {}
                other => break other,
            }
        };
        // Decided under the mutex: either the waiter still wants it, or
        // the descriptor (and with it any lock just taken) closes here.
        let given_up = given_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*given_up {
            let _ = tx.send(result.map(|()| (fd, kind)));
        }
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            *abandoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            // Sent between the timeout and the flag: it is ours.
            match rx.try_recv() {
                Ok(result) => result,
                Err(_) => {
                    let holders = crate::holders::holders_of(&path).unwrap_or_default();
                    return Err(LockError::Timeout { path, waited: started.elapsed(), holders });
                }
            }
        }
    };
    result.map_err(|e| LockError::io(&path, lock_op(options.kind), e))
}

/// Release this open file description's lock of `kind` on `range` (the
/// whole file for `flock`), in place: `flock -u`.
///
/// # Errors
/// The unlock call's own error (`EBADF` for a closed descriptor).
pub fn unlock_descriptor(fd: BorrowedFd<'_>, kind: LockKind, range: ByteRange) -> Result<(), LockError> {
    let mut kind = kind;
    apply(fd, &mut kind, None, range).map_err(|e| LockError::io(descriptor_path(fd), lock_op(kind), e))
}

/// The magic number of the filesystem `fd` lives on, as [`FsPolicy`]
/// compares it.
fn fs_magic(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let statfs = rustix::fs::fstatfs(fd)?;
    // `f_type` is signed on some targets; the magic numbers are u32.
    #[allow(clippy::cast_sign_loss, clippy::unnecessary_cast)]
    Ok((statfs.f_type as i64 as u64) & 0xffff_ffff)
}

/// A descriptor's file for messages: its `/proc/self/fd` link, or
/// `descriptor N` where that cannot be read.
fn descriptor_path(fd: BorrowedFd<'_>) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from(format!("descriptor {}", fd.as_raw_fd())))
}

fn lock_op(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Flock => "flock",
        LockKind::Ofd => "fcntl(F_OFD_SETLK)",
        LockKind::Posix => "fcntl(F_SETLK)",
    }
}

/// Apply (or, with `mode` `None`, release) a lock without blocking. An OFD
/// request on a kernel without OFD locks turns `kind` into `Posix`.
fn apply(
    fd: BorrowedFd<'_>,
    kind: &mut LockKind,
    mode: Option<LockMode>,
    range: ByteRange,
) -> Result<(), Errno> {
    lock_call(fd, kind, mode, range, false)
}

/// [`apply`], or with `block` a lock that waits in the kernel's own queue
/// until granted (`EINTR` if a signal interrupts it).
fn lock_call(
    fd: BorrowedFd<'_>,
    kind: &mut LockKind,
    mode: Option<LockMode>,
    range: ByteRange,
    block: bool,
) -> Result<(), Errno> {
    if *kind == LockKind::Flock {
        let op = match (mode, block) {
            (Some(LockMode::Shared), false) => FlockOperation::NonBlockingLockShared,
            (Some(LockMode::Shared), true) => FlockOperation::LockShared,
            (Some(LockMode::Exclusive), false) => FlockOperation::NonBlockingLockExclusive,
            (Some(LockMode::Exclusive), true) => FlockOperation::LockExclusive,
            (None, _) => FlockOperation::Unlock,
        };
        return rustix::fs::flock(fd, op);
    }
    let kind_arg = match mode {
        Some(LockMode::Shared) => sys::Type::Read,
        Some(LockMode::Exclusive) => sys::Type::Write,
        None => sys::Type::Unlock,
    };
    let family = if *kind == LockKind::Ofd { sys::Family::Ofd } else { sys::Family::Posix };
    match sys::set_lock(fd, family, kind_arg, range.start, range.len, block) {
        // EINVAL for a range that fits is the kernel not knowing the command.
        Err(Errno::INVAL) if family == sys::Family::Ofd && i64::try_from(range.start).is_ok() => {
            log!(
                warn,
                "kernel lacks OFD locks (before Linux 3.15); falling back to process-associated POSIX locks"
            );
            *kind = LockKind::Posix;
            sys::set_lock(fd, sys::Family::Posix, kind_arg, range.start, range.len, block)
        }
        other => other,
    }
}

/// A held lock; dropping it releases the lock and closes the descriptor.
///
/// Dropping unlocks explicitly before closing. Closing alone would not be
/// enough in a threaded program: while another thread is between `fork`
/// and `exec` (any `std::process::Command::spawn`), the child holds a copy
/// of every descriptor, close-on-exec or not, and a `flock` or OFD lock
/// lives until the last copy is closed. The explicit unlock releases it for
/// every copy at once. To hand the lock to a child on purpose (as
/// `flock(1)` does for its command), take the descriptor with
/// [`LockGuard::into_fd`].
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    /// `None` only inside `unlock` and `into_fd`, which consume the guard.
    fd: Option<OwnedFd>,
    path: PathBuf,
    kind: LockKind,
    mode: LockMode,
    range: ByteRange,
}

impl LockGuard {
    fn new(fd: OwnedFd, file: &LockFile, kind: LockKind) -> Self {
        LockGuard {
            fd: Some(fd),
            path: file.path.clone(),
            kind,
            mode: file.options.mode,
            range: file.options.range,
        }
    }

    /// Lock a descriptor the caller already has open, as
    /// [`lock_descriptor`] does, and own it: the guard unlocks it when
    /// dropped; [`LockGuard::into_fd`] keeps the lock for as long as the
    /// descriptor (or any copy sharing its open file description) lives.
    ///
    /// # Errors
    /// As [`lock_descriptor`].
    pub fn lock_fd(fd: OwnedFd, options: &LockOptions, wait: &Wait) -> Result<LockGuard, LockError> {
        let kind = lock_descriptor(fd.as_fd(), options, wait)?;
        let path = descriptor_path(fd.as_fd());
        Ok(LockGuard { fd: Some(fd), path, kind, mode: options.mode, range: options.range })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of lock held (`Posix` if `Ofd` fell back).
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// Shared or exclusive.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The locked bytes (the whole file for `flock`).
    pub fn range(&self) -> ByteRange {
        self.range
    }

    /// Release the lock now, for every process sharing the descriptor, and
    /// close it; like dropping the guard, but reporting a failure.
    ///
    /// # Errors
    /// The unlock failed (closing still releases this copy).
    pub fn unlock(mut self) -> Result<(), LockError> {
        let fd = self.take_fd();
        let mut kind = self.kind;
        apply(fd.as_fd(), &mut kind, None, self.range)
            .map_err(|e| LockError::io(&self.path, lock_op(kind), e))
    }

    /// The descriptor carrying the lock, without unlocking: the lock now
    /// lives as long as this descriptor and any copy of it (a child that
    /// inherits it keeps it after we close ours).
    pub fn into_fd(mut self) -> OwnedFd {
        self.take_fd()
    }

    fn take_fd(&mut self) -> OwnedFd {
        self.fd.take().expect("the descriptor is only taken by methods consuming the guard")
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("the descriptor is only taken by methods consuming the guard").as_fd()
    }

    /// Change between shared and exclusive without waiting.
    ///
    /// For the `fcntl` kinds the conversion is atomic: on failure the old
    /// lock is still held. For `flock` the kernel may drop the old lock
    /// before it finds the new one unavailable (a documented property of
    /// `flock(2)` conversions); if so this returns `Contended` and the guard
    /// keeps its old mode on paper but may hold nothing, so drop it.
    ///
    /// # Errors
    /// [`LockError::Contended`] if another holder prevents the change.
    pub fn set_mode(&mut self, mode: LockMode) -> Result<(), LockError> {
        let mut kind = self.kind;
        match apply(self.fd(), &mut kind, Some(mode), self.range) {
            Ok(()) => {
                self.mode = mode;
                Ok(())
            }
            Err(Errno::WOULDBLOCK | Errno::ACCESS) => Err(LockError::Contended {
                path: self.path.clone(),
                holders: crate::holders::holders_of(&self.path).unwrap_or_default(),
            }),
            Err(e) => Err(LockError::io(&self.path, lock_op(self.kind), e)),
        }
    }
}

impl AsFd for LockGuard {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl std::os::fd::AsRawFd for LockGuard {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().as_raw_fd()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let mut kind = self.kind;
            if let Err(e) = apply(fd.as_fd(), &mut kind, None, self.range) {
                // Closing `fd` below still releases this copy.
                log!(debug, path = %self.path.display(), error = %e, "unlock failed");
            }
        }
    }
}
