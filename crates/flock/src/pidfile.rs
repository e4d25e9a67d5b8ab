//! Pidfiles that cannot lie: the claim is a lock, the pid is a label.
//!
//! A pidfile names the one process that may act as, say, the daemon for a
//! resource. The claim is an exclusive `flock` on the file, held for the
//! claimant's whole life and released by the kernel when it dies; the pid
//! written inside is only for humans and for signalling. So a stale file
//! with a dead pid is simply unclaimed, and nothing ever needs cleaning up.
//!
//! **A pidfile is never removed**, not even by its claimant on a clean
//! exit. Removing it opens a race: a newcomer that opened the file before
//! the removal gets the lock on the removed inode, while a third process
//! creates a new file at the path and locks that; two claimants run. (The
//! lock file's inode check in [`crate::LockFile`] catches this for
//! lockyard's own claimants, but not for other tools sharing the file.)
//!
//! **Reading a pidfile takes its lock for an instant.** [`Pidfile::read`]
//! learns whether the file is claimed by trying the lock; a claim racing
//! with that probe would find the lock busy and fail although nobody holds
//! the claim. So a claim that finds the lock taken waits up to
//! [`PROBE_GRACE`] for it before reporting the holder: a probe lets go
//! within that, a claimant does not.
//!
//! # Signalling the claimant safely
//!
//! A pid read from a file may belong to a different process by the time a
//! signal is sent: the claimant may have exited and the pid been reused.
//! [`Claimant::signal`] closes that window:
//!
//! 1. `pidfd_open(pid)` pins whatever process has that pid now;
//! 2. that process's start time must equal the one recorded when the
//!    pidfile was read, and the pidfile must still be claimed;
//! 3. the signal goes through the pidfd, which cannot be redirected to a
//!    newer process with the same pid.
//!
//! If the check in step 2 fails, no signal is sent.

use std::path::{Path, PathBuf};

use rustix::process::{Pid, PidfdFlags, Signal};

use crate::error::LockError;
use crate::lock::{LockFile, LockGuard, LockOptions, Wait};

/// How long a claim waits for a lock that may only be held by a
/// [`Pidfile::read`] probing it, before calling it claimed.
pub const PROBE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// A pidfile at a path.
///
/// ```
/// use lockyard_flock::{Pidfile, PidfileState};
///
/// let dir = std::env::temp_dir().join(format!("lockyard-pidfile-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let pidfile = Pidfile::new(dir.join("daemon.pid"));
/// let claim = pidfile.claim()?; // fails with Contended if another instance runs
/// // Another process asking sees us, by the lock we hold.
/// let PidfileState::ClaimedBy(who) = pidfile.read()? else { unreachable!() };
/// assert_eq!(who.pid, std::process::id());
/// drop(claim); // released; the file stays
/// assert!(matches!(pidfile.read()?, PidfileState::Unclaimed(_)));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    options: LockOptions,
}

/// What [`Pidfile::read`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum PidfileState {
    /// No file at the path.
    NotExist,
    /// The file exists and nobody holds its lock. The returned guard holds
    /// it now (so nobody can claim it until it is dropped).
    Unclaimed(PidfileGuard),
    /// A live process holds the claim.
    ClaimedBy(Claimant),
}

/// The process that holds a pidfile's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimant {
    /// A process that holds the lock: the one the file names if it is
    /// among the holders, else the first holder found. Found through the
    /// descriptors that carry the lock (`/proc/PID/fdinfo`), or, where
    /// those cannot be read (another user's processes, unprivileged), the
    /// pid `/proc/locks` records. Never taken from the file alone: a pid
    /// written there may be stale, impossible or forged.
    pub pid: u32,
    /// The pid written in the file, if it holds a number.
    pub recorded: Option<u32>,
    /// Start time of `pid` (clock ticks after boot) when the file was read.
    pub start_time: Option<u64>,
    /// Command line of `pid`, for display.
    pub cmdline: Option<String>,
    path: PathBuf,
}

/// Holds a pidfile's claim; dropping it releases the claim (the file stays).
#[must_use = "the claim is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PidfileGuard {
    lock: LockGuard,
}

impl Pidfile {
    /// A pidfile at `path`, created 0644 when first claimed.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Pidfile { path: path.as_ref().to_owned(), options: LockOptions::new().exclusive() }
    }

    /// A pidfile with other lock options (permissions, filesystem policy);
    /// the lock is always an exclusive `flock`.
    pub fn with_options(path: impl AsRef<Path>, options: LockOptions) -> Self {
        Pidfile { path: path.as_ref().to_owned(), options: options.exclusive() }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Claim the pidfile for the calling process: take the lock (waiting at
    /// most [`PROBE_GRACE`], for a reader's probe) and write our pid.
    ///
    /// # Errors
    /// [`LockError::Contended`] naming the claimant if it is claimed, or an
    /// opening, locking or writing failure.
    pub fn claim(&self) -> Result<PidfileGuard, LockError> {
        self.claim_for(std::process::id())
    }

    /// Claim the pidfile, held by the calling process, on behalf of `pid`
    /// (a child this process supervises): the lock is ours, the pid written
    /// is `pid`.
    ///
    /// # Errors
    /// As [`Pidfile::claim`].
    pub fn claim_for(&self, pid: u32) -> Result<PidfileGuard, LockError> {
        let file = LockFile::with_options(&self.path, self.options.clone())?;
        let lock = match file.try_lock()? {
            Some(lock) => lock,
            // Perhaps only a reader probing it (see the module docs).
            None => match file.lock_timeout(PROBE_GRACE) {
                Ok(lock) => lock,
                Err(e) if e.is_busy() => file.try_lock_or_holders()?,
                Err(e) => return Err(e),
            },
        };
        Self::finish_claim(lock, pid)
    }

    /// Claim the pidfile for `pid`, waiting as `wait` says for the
    /// previous instance to let go (a restart that overlaps the old
    /// process's shutdown).
    ///
    /// # Errors
    /// [`LockError::Timeout`] naming the claimant still there when the
    /// wait ran out, [`LockError::Cancelled`], or as
    /// [`Pidfile::claim_for`].
    pub fn claim_wait(&self, pid: u32, wait: &Wait) -> Result<PidfileGuard, LockError> {
        let file = LockFile::with_options(&self.path, self.options.clone())?;
        Self::finish_claim(file.lock_with(wait)?, pid)
    }

    fn finish_claim(lock: LockGuard, pid: u32) -> Result<PidfileGuard, LockError> {
        let guard = PidfileGuard { lock };
        guard.check_ours()?;
        guard.write_pid(pid)?;
        Ok(guard)
    }

    /// Find out whether the pidfile is claimed, and by whom.
    ///
    /// # Errors
    /// Opening or locking failed for a reason other than contention.
    pub fn read(&self) -> Result<PidfileState, LockError> {
        let file = match LockFile::with_options(&self.path, self.options.clone().must_exist()) {
            Ok(file) => file,
            Err(LockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PidfileState::NotExist);
            }
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(Some(lock)) => Ok(PidfileState::Unclaimed(PidfileGuard { lock })),
            Ok(None) => self.claimant(&file).map(PidfileState::ClaimedBy),
            Err(LockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(PidfileState::NotExist)
            }
            Err(e) => Err(e),
        }
    }

    /// Who holds the claim: the processes holding the lock, preferring the
    /// one the file names.
    fn claimant(&self, file: &LockFile) -> Result<Claimant, LockError> {
        let recorded = file.read_small(32).ok().and_then(|text| {
            std::str::from_utf8(&text).ok()?.trim().parse::<u32>().ok().filter(|&pid| pid > 0)
        });
        let snapshot = crate::holders::Snapshot::read()?;
        let id = snapshot.file_id(&self.path)?;
        let mut holders = snapshot.exact_holders(&[id])?.pop().unwrap_or_default();
        if holders.holding().next().is_none() {
            // Another user's descriptors cannot be read without privilege:
            // fall back to the pid the kernel recorded, read again if the
            // first read missed the lock (see `confirm_unheld`).
            let cheap = vec![snapshot.holders(id.key)];
            holders = crate::holders::confirm_unheld(&[id], cheap)?.pop().unwrap_or_default();
        }
        let holding: Vec<u32> = holders.holding().filter_map(|h| h.pid).collect();
        let pid = match recorded {
            Some(pid) if holding.contains(&pid) => pid,
            _ => *holding.first().ok_or(LockError::InvalidPath {
                path: self.path.clone(),
                reason: "claimed, but no process visible from here holds the lock \
                         (it may be in another pid namespace)",
            })?,
        };
        let stat = lockyard_procfs::ProcessStat::read_pid(pid).ok();
        let cmdline = lockyard_procfs::Cmdline::read_pid(pid)
            .ok()
            .flatten()
            .map(|c| c.display(crate::holders::CMDLINE_WIDTH));
        Ok(Claimant {
            pid,
            recorded,
            start_time: stat.map(|s| s.start_time),
            cmdline,
            path: self.path.clone(),
        })
    }
}

impl PidfileGuard {
    /// Refuse to write through a file that may not be ours: one with
    /// another name somewhere (a hard link to a file the attacker could not
    /// write, planted where we would write) or another owner. Checked on
    /// the locked descriptor, so it is the file about to be truncated.
    fn check_ours(&self) -> Result<(), LockError> {
        let st = rustix::fs::fstat(&self.lock).map_err(|e| LockError::io(self.lock.path(), "stat", e))?;
        let refuse = |found| LockError::Refused { path: self.lock.path().to_owned(), found };
        #[allow(clippy::useless_conversion)] // nlink's type differs between architectures.
        let links = u64::from(st.st_nlink);
        if links != 1 {
            return Err(refuse(crate::Found::HardLinked { links }));
        }
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(refuse(crate::Found::ForeignFile { uid: st.st_uid }));
        }
        Ok(())
    }

    /// Replace the file's content with `pid`; the claim is unaffected.
    fn write_pid(&self, pid: u32) -> Result<(), LockError> {
        let io = |op, e: rustix::io::Errno| LockError::io(self.lock.path(), op, e);
        let text = format!("{pid}\n");
        // Under our exclusive lock, so no reader of ours sees a torn
        // write; readers that ignore the lock may see an empty file for an
        // instant, which they must treat as "not yet written".
        rustix::fs::ftruncate(&self.lock, 0).map_err(|e| io("truncate", e))?;
        let written = rustix::io::pwrite(&self.lock, text.as_bytes(), 0).map_err(|e| io("write", e))?;
        if written != text.len() {
            return Err(io("write", rustix::io::Errno::IO));
        }
        Ok(())
    }

    /// Write a different pid (for example once a supervised child has
    /// started).
    ///
    /// # Errors
    /// Writing failed.
    pub fn set_pid(&self, pid: u32) -> Result<(), LockError> {
        self.write_pid(pid)
    }

    /// The pidfile's path.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// The claim's descriptor, closed without unlocking: for a supervisor
    /// whose child inherited the descriptor and keeps the claim after the
    /// supervisor is gone (see [`LockGuard::into_fd`]).
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.lock.into_fd()
    }
}

/// The claim's lock descriptor, for a child to inherit.
impl std::os::fd::AsFd for PidfileGuard {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.as_fd()
    }
}

impl Claimant {
    /// Send `signal` to the claimant, but only if it is still the process
    /// that was read and it still holds the claim (see the module docs).
    ///
    /// # Errors
    /// [`LockError::InvalidPath`] if the claimant changed or released the
    /// claim (nothing was sent), or the system call's error.
    pub fn signal(&self, signal: Signal) -> Result<(), LockError> {
        let io = |op, e: rustix::io::Errno| LockError::io(&self.path, op, e);
        let gone = |reason| LockError::InvalidPath { path: self.path.clone(), reason };
        let pid = Pid::from_raw(i32::try_from(self.pid).map_err(|_| gone("pid out of range"))?)
            .ok_or(gone("pid 0 is not a process"))?;
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| io("pidfd_open", e))?;
        let now = lockyard_procfs::ProcessStat::read_pid(self.pid).ok().map(|s| s.start_time);
        if now.is_none() || now != self.start_time {
            return Err(gone("the claimant exited and its pid now names another process; no signal sent"));
        }
        let file = LockFile::with_options(&self.path, LockOptions::new().must_exist())?;
        if file.try_lock()?.is_some() {
            return Err(gone("the pidfile is no longer claimed; no signal sent"));
        }
        rustix::process::pidfd_send_signal(&pidfd, signal).map_err(|e| io("pidfd_send_signal", e))
    }
}
