//! Who holds a lock file, and who waits for it.
//!
//! # The key
//!
//! `/proc/locks` names a file by `MAJ:MIN:INODE`, where `MAJ:MIN` is the
//! superblock's device. `stat().st_dev` is not always that number: btrfs
//! subvolumes, overlayfs and some bind mounts report an anonymous device.
//! So the device is taken from the file's mount: `statx` reports the mount
//! id (`STATX_MNT_ID`, Linux 5.8; before that fdinfo's `mnt_id:`), and the
//! mountinfo line with that id carries the superblock's `MAJ:MIN`. Only if
//! neither is available is the mount guessed from the path (the longest
//! mount point prefix; [`KeySource`] says which way a key was found).
//!
//! # Cheap and exact holders
//!
//! The pid in `/proc/locks` is a hint: it is the process that took a
//! `flock` (which may have exited while a forked child keeps the lock), `-1`
//! for OFD locks, and `0` in fdinfo for an owner outside the reader's pid
//! namespace (`/proc/locks` leaves such locks out entirely; see
//! [`in_initial_pid_namespace`]).
//! [`Snapshot::holders`] reports it as is ([`Attribution::Recorded`]).
//! [`Snapshot::exact_holders`] instead finds every process with a
//! descriptor whose fdinfo shows the lock ([`Attribution::Exact`]): the only
//! way to name OFD holders and children that inherited a lock. It costs a
//! `stat` per open descriptor on the host.
//!
//! On btrfs every subvolume numbers its inodes from 256, and `/proc/locks`
//! shows the filesystem's device, not the subvolume's: two files with the
//! same inode number in different subvolumes have the same key, so the
//! cheap answer may name the holder of the other one. The exact answer
//! compares `st_dev` too and does not confuse them.
//!
//! Overlayfs keeps locks per layer view: a lock taken through the overlay
//! and one taken on the same file through its upper or lower directory do
//! not exclude each other, and `/proc/locks` shows them on different
//! devices. A key names one view; ask about each path you care about.

use std::fmt;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt, HashSet};
use lockyard_procfs::{
    Cmdline, Descriptors, FdInfo, LockKey, LockRecord, MountInfo, OpenFile, ProcLocks, ProcessStat,
    RecordKind,
};
use rustix::fs::{AtFlags, StatxFlags};

use crate::error::LockError;
use crate::lock::LockMode;

/// How many characters of a holder's command line are kept.
pub const CMDLINE_WIDTH: usize = 100;

/// How a [`FileId`]'s device was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum KeySource {
    /// From the file's mount id (`statx` or fdinfo): exact.
    MountId,
    /// From the longest mount point covering the canonical path: a guess
    /// that a mount over a parent directory can fool.
    PathPrefix,
}

/// A file as `/proc/locks` and as `stat` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FileId {
    /// The `/proc/locks` key.
    pub key: LockKey,
    /// `st_dev` as `stat` reports it (differs from `key.device` on btrfs,
    /// overlayfs, some bind mounts).
    pub st_dev: u64,
    /// The inode number.
    pub st_ino: u64,
    /// How `key.device` was found.
    pub source: KeySource,
}

/// How a holder was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Attribution {
    /// The pid `/proc/locks` recorded (may be gone, `None` for OFD locks).
    Recorded,
    /// A process holding a descriptor that carries the lock (fdinfo).
    Exact,
}

/// One process holding, or waiting for, a lock on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Holder {
    /// The process, if known (`None`: an OFD lock seen without exact mode,
    /// or an owner outside this pid namespace).
    pub pid: Option<u32>,
    /// The descriptor carrying the lock (exact mode only).
    pub fd: Option<u32>,
    /// Command line for display, at most [`CMDLINE_WIDTH`] characters;
    /// `None` for a kernel thread, a zombie, or a process already gone.
    pub cmdline: Option<String>,
    /// Start time of the process in clock ticks after boot, to tell it
    /// from a later process that reuses the pid.
    pub start_time: Option<u64>,
    /// Which mechanism (`/proc/locks`' kind: holders may hold leases and
    /// delegations, which are not a [`crate::LockKind`] one can take).
    pub kind: RecordKind,
    /// Shared or exclusive; `None` for neither (a lease being broken to
    /// `UNLCK`, a word this version does not know).
    pub mode: Option<LockMode>,
    /// First locked byte.
    pub start: u64,
    /// Last locked byte, `None` for to the end of the file.
    pub end: Option<u64>,
    /// Blocked waiting for the lock rather than holding it.
    pub waiting: bool,
    /// How the process was identified.
    pub attribution: Attribution,
}

impl Holder {
    fn from_record(record: &LockRecord, pid: Option<u32>, fd: Option<u32>, attribution: Attribution) -> Self {
        let (cmdline, start_time) = pid.map_or((None, None), describe);
        Holder {
            pid,
            fd,
            cmdline,
            start_time,
            kind: record.kind(),
            mode: LockMode::try_from(record.mode()).ok(),
            start: record.start(),
            end: record.end(),
            waiting: record.is_waiter(),
            attribution,
        }
    }
}

/// Command line and start time of `pid`, each `None` if unreadable.
fn describe(pid: u32) -> (Option<String>, Option<u64>) {
    let cmdline = Cmdline::read_pid(pid).ok().flatten().map(|c| c.display(CMDLINE_WIDTH));
    let start = ProcessStat::read_pid(pid).ok().map(|s| s.start_time);
    (cmdline, start)
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.waiting {
            f.write_str("waiting: ")?;
        }
        match self.pid {
            Some(pid) => write!(f, "pid={pid}")?,
            None => f.write_str("pid=?")?,
        }
        match &self.cmdline {
            Some(cmd) => write!(f, " cmd={cmd:?}")?,
            None => f.write_str(" cmd=?")?,
        }
        let kind = self.kind.name().unwrap_or("lock");
        match self.mode {
            Some(mode) => write!(f, " ({mode} {kind}")?,
            None => write!(f, " ({kind}")?,
        }
        if self.kind.has_range() && (self.start != 0 || self.end.is_some()) {
            match self.end {
                Some(end) => write!(f, " bytes {}-{end}", self.start)?,
                None => write!(f, " bytes {}-EOF", self.start)?,
            }
        }
        f.write_str(")")
    }
}

/// The holders and waiters of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Holders(pub Vec<Holder>);

impl Holders {
    /// Those holding the lock (not waiting).
    pub fn holding(&self) -> impl Iterator<Item = &Holder> {
        self.0.iter().filter(|h| !h.waiting)
    }

    /// Those waiting for it.
    pub fn waiting(&self) -> impl Iterator<Item = &Holder> {
        self.0.iter().filter(|h| h.waiting)
    }

    /// Whether nobody holds or waits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Holders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(
                "nobody visible in /proc (the holder may have just released it, or run in another pid namespace)",
            );
        }
        for (i, holder) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{holder}")?;
        }
        Ok(())
    }
}

/// One reading of mountinfo and `/proc/locks`, to answer any number of
/// questions about holders without reading either again.
#[derive(Debug, Clone)]
pub struct Snapshot {
    mounts: MountInfo,
    locks: ProcLocks,
    skipped: Vec<String>,
}

impl Snapshot {
    /// Read `/proc/self/mountinfo` and `/proc/locks`, once each, leniently:
    /// a malformed line is skipped (and listed in [`Snapshot::skipped`])
    /// rather than failing every question, and a lock the kernel printed
    /// twice in one read is kept once (see
    /// [`ProcLocks::parse_lenient`]).
    ///
    /// # Errors
    /// [`LockError::Proc`] if either cannot be read.
    pub fn read() -> Result<Self, LockError> {
        let (mounts, bad_mounts) = MountInfo::read_lenient()?;
        let (locks, bad_locks) = ProcLocks::read_lenient()?;
        let skipped: Vec<String> = bad_mounts.iter().chain(&bad_locks).map(ToString::to_string).collect();
        for line in &skipped {
            log!(warn, %line, "skipped a malformed line");
        }
        Ok(Snapshot { mounts, locks, skipped })
    }

    /// A snapshot of given contents (tests, or files read elsewhere).
    pub fn from_parts(mounts: MountInfo, locks: ProcLocks) -> Self {
        Snapshot { mounts, locks, skipped: Vec::new() }
    }

    /// The lines [`Snapshot::read`] skipped as malformed, each with its
    /// file, line number and reason: answers are then from the rest, and
    /// callers should say so.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The mount table read.
    pub fn mounts(&self) -> &MountInfo {
        &self.mounts
    }

    /// The locks read.
    pub fn locks(&self) -> &ProcLocks {
        &self.locks
    }

    /// The identity of the file at `path` (symlinks followed).
    ///
    /// # Errors
    /// [`LockError::Io`] if the file cannot be examined, or
    /// [`LockError::InvalidPath`] if no mount covers it.
    pub fn file_id(&self, path: &Path) -> Result<FileId, LockError> {
        let io = |op, e: rustix::io::Errno| LockError::io(path, op, e);
        let mask = StatxFlags::TYPE | StatxFlags::INO | StatxFlags::MNT_ID;
        let stx = match rustix::fs::statx(rustix::fs::CWD, path, AtFlags::empty(), mask) {
            // Longer than PATH_MAX: a lock can be taken there (lock files
            // are opened one component at a time), so it can be asked
            // about too.
            Err(rustix::io::Errno::NAMETOOLONG) => statx_by_components(path, mask),
            other => other,
        };
        let (st_dev, st_ino, mount_id) = match stx {
            Ok(stx) => {
                let dev = rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor);
                let mnt = (stx.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(stx.stx_mnt_id);
                (dev, stx.stx_ino, mnt)
            }
            Err(rustix::io::Errno::NOSYS) => {
                let st = rustix::fs::stat(path).map_err(|e| io("stat", e))?;
                (st.st_dev, st.st_ino, None)
            }
            Err(e) => return Err(io("stat", e)),
        };
        let mount_id = match mount_id {
            Some(id) => Some(id),
            None => mount_id_from_fdinfo(path),
        };
        if let Some(mount) = mount_id.and_then(|id| self.mounts.by_id(id)) {
            let key = LockKey::new(mount.device, st_ino);
            return Ok(FileId { key, st_dev, st_ino, source: KeySource::MountId });
        }
        let canonical = std::fs::canonicalize(path).map_err(|e| LockError::io(path, "canonicalize", e))?;
        let mount = self
            .mounts
            .covering(&canonical)
            .ok_or(LockError::InvalidPath { path: path.to_owned(), reason: "no mount covers this path" })?;
        Ok(FileId { key: LockKey::new(mount.device, st_ino), st_dev, st_ino, source: KeySource::PathPrefix })
    }

    /// Holders and waiters of `key` as `/proc/locks` records them (the
    /// cheap answer; see the module docs).
    pub fn holders(&self, key: LockKey) -> Holders {
        Holders(
            self.locks
                .on(key)
                .map(|record| Holder::from_record(record, record.pid_hint(), None, Attribution::Recorded))
                .collect(),
        )
    }

    /// The processes that actually hold each file's locks, by their
    /// descriptors' fdinfo, plus the waiters `/proc/locks` lists; one pass
    /// over every process's descriptors for all of `files`.
    ///
    /// Processes whose descriptors this process may not inspect (other
    /// users', without privilege) are skipped; run as root for a complete
    /// answer.
    ///
    /// # Errors
    /// A failure to read `/proc` that would leave holders out (out of
    /// descriptors or memory); processes that exit meanwhile, or that may
    /// not be inspected, are passed over instead.
    pub fn exact_holders(&self, files: &[FileId]) -> Result<Vec<Holders>, LockError> {
        let mut out: Vec<Holders> = files
            .iter()
            .map(|file| {
                Holders(
                    self.locks
                        .on(file.key)
                        .filter(|r| r.is_waiter())
                        .map(|r| Holder::from_record(r, r.pid_hint(), None, Attribution::Recorded))
                        .collect(),
                )
            })
            .collect();
        // Only files that someone locks are worth looking for.
        let mut wanted: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            if self.locks.on(file.key).next().is_some() {
                wanted.entry((file.st_dev, file.st_ino)).or_default().push(i);
            }
        }
        if wanted.is_empty() {
            return Ok(out);
        }
        let inodes: HashSet<u64> = wanted.keys().map(|&(_, ino)| ino).collect();
        scan_descriptors(lockyard_procfs::pids()?, &inodes, |descriptors, fd, file| {
            let Some(indexes) = wanted.get(&(file.dev, file.ino)) else {
                return Ok(ControlFlow::Continue(()));
            };
            let Some(info) = or_pass(descriptors.fdinfo(fd))? else { return Ok(ControlFlow::Continue(())) };
            let pid = descriptors.pid();
            for &i in indexes {
                for record in info.locks.iter().filter(|r| r.key() == Some(files[i].key)) {
                    out[i].0.push(Holder::from_record(record, Some(pid), Some(fd), Attribution::Exact));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        for holders in &mut out {
            holders.0.sort_by_key(|h| (h.waiting, h.pid, h.fd));
        }
        Ok(out)
    }
}

/// `statx` of `path` reached one component at a time through `O_PATH`
/// directory descriptors, for paths longer than `PATH_MAX` (each
/// component is at most `NAME_MAX`). Symlinks are followed as path
/// resolution would follow them.
fn statx_by_components(path: &Path, mask: StatxFlags) -> Result<rustix::fs::Statx, rustix::io::Errno> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut cur = rustix::fs::open(if path.is_absolute() { "/" } else { "." }, flags, Mode::empty())?;
    let parts: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            std::path::Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return rustix::fs::statx(&cur, "", AtFlags::EMPTY_PATH, mask);
    };
    for dir in dirs {
        cur = rustix::fs::openat(&cur, *dir, flags, Mode::empty())?;
    }
    rustix::fs::statx(&cur, *last, AtFlags::empty(), mask)
}

/// The mount id of `path` from fdinfo, for kernels before `STATX_MNT_ID`.
fn mount_id_from_fdinfo(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let raw = u32::try_from(fd.as_fd().as_raw_fd()).ok()?;
    FdInfo::read_fd(std::process::id(), raw).ok()?.mnt_id
}

/// The inode of the host's initial pid namespace (`PROC_PID_INIT_INO`),
/// fixed since Linux 3.8.
const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

/// Whether this process runs in the host's initial pid namespace (`None`
/// if `/proc/self/ns/pid` cannot be read).
///
/// Answers from inside a nested pid namespace are partial, and callers
/// should say so: the kernel leaves out of `/proc/locks` every flock and
/// POSIX lock whose owner is not visible in the namespace of the reader's
/// `/proc`, so a file locked from outside looks free (taking the lock
/// still fails: the kernel enforces what it does not show). OFD locks
/// stay listed, with pid `-1`, and exact attribution cannot name an
/// outside holder either, as it scans only this namespace's processes.
/// From the host, holders inside a namespace are listed with their host
/// pids.
pub fn in_initial_pid_namespace() -> Option<bool> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(link.as_os_str() == INITIAL_PID_NAMESPACE)
}

/// Whether a failure to read a process's entries in `/proc` only means
/// that process or descriptor is to be passed over (it exited or closed
/// it, or it belongs to another user and we lack the privilege), rather
/// than that the answer would be incomplete (out of descriptors or
/// memory, `/proc` unreadable): `Ok(())` to pass over, the error
/// otherwise. A file that does not parse teaches nothing and is passed
/// over too.
fn pass_over(e: lockyard_procfs::Error) -> Result<(), LockError> {
    match &e {
        lockyard_procfs::Error::Read { source, .. }
            if e.is_gone() || source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Ok(())
        }
        lockyard_procfs::Error::Read { .. } => Err(e.into()),
        _ => {
            log!(debug, error = %e, "passing over an unreadable /proc entry");
            Ok(())
        }
    }
}

/// One pass over the open descriptors of `pids`: `visit` is called for
/// each descriptor whose file's inode number is in `inodes` (one cached
/// `statx` per descriptor decides; fdinfo and links are read only for
/// those `visit` asks about), and ends the pass early by returning
/// `Break`. Processes and descriptors that go away or may not be
/// inspected meanwhile are passed over, and `visit` may pass over its
/// own reads the same way with [`or_pass`].
///
/// This is the one descriptor walk behind [`Snapshot::exact_holders`] and
/// [`crate::listing::list`].
pub(crate) fn scan_descriptors(
    pids: impl IntoIterator<Item = u32>,
    inodes: &HashSet<u64>,
    mut visit: impl FnMut(&mut Descriptors, u32, OpenFile) -> Result<ControlFlow<()>, LockError>,
) -> Result<(), LockError> {
    if inodes.is_empty() {
        return Ok(());
    }
    for pid in pids {
        let mut descriptors = match Descriptors::open(pid) {
            Ok(descriptors) => descriptors,
            Err(e) => {
                pass_over(e)?;
                continue;
            }
        };
        while let Some(fd) = descriptors.next_fd() {
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) => {
                    pass_over(e)?;
                    break;
                }
            };
            match descriptors.file(fd) {
                Ok(file) if inodes.contains(&file.ino) => {
                    if visit(&mut descriptors, fd, file)?.is_break() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => pass_over(e)?,
            }
        }
    }
    Ok(())
}

/// Turn a read of one descriptor into `Some`, or `None` when it is to be
/// passed over (see [`pass_over`]).
pub(crate) fn or_pass<T>(read: Result<T, lockyard_procfs::Error>) -> Result<Option<T>, LockError> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(e) => pass_over(e).map(|()| None),
    }
}

/// How many reads of `/proc/locks` must agree before a lock is called
/// free. The kernel generates the file a page at a time, so while other
/// locks come and go a lock held throughout can be missing from one read
/// (measured here: 1.3% of reads with 2,000 locks held and two processes
/// each taking and dropping 50); four misses in a row are rare enough
/// (about 3 in 10^8) to stand for "not held".
pub const READS_TO_CALL_FREE: usize = 4;

/// Confirm every "not held" in `answers` (one per file of `files`) by
/// reading `/proc/locks` again, up to [`READS_TO_CALL_FREE`] reads in all;
/// a file found held in a later read gets that read's holders.
///
/// # Errors
/// `/proc/locks` cannot be read again.
pub fn confirm_unheld(files: &[FileId], mut answers: Vec<Holders>) -> Result<Vec<Holders>, LockError> {
    for _ in 1..READS_TO_CALL_FREE {
        let unheld: Vec<usize> =
            (0..files.len().min(answers.len())).filter(|&i| answers[i].holding().next().is_none()).collect();
        if unheld.is_empty() {
            break;
        }
        let (again, _) = ProcLocks::read_lenient()?;
        for i in unheld {
            let found: Vec<Holder> = again
                .on(files[i].key)
                .map(|record| Holder::from_record(record, record.pid_hint(), None, Attribution::Recorded))
                .collect();
            if found.iter().any(|h| !h.waiting) {
                answers[i] = Holders(found);
            }
        }
    }
    Ok(answers)
}

/// Holders and waiters of the lock file at `path`, as `/proc/locks`
/// records them (one read of mountinfo and of `/proc/locks`).
///
/// # Errors
/// As [`Snapshot::read`] and [`Snapshot::file_id`].
pub fn holders_of(path: impl AsRef<Path>) -> Result<Holders, LockError> {
    let snapshot = Snapshot::read()?;
    let id = snapshot.file_id(path.as_ref())?;
    Ok(snapshot.holders(id.key))
}

/// One path's answer from [`holders_of_many`].
pub type PathHolders = (PathBuf, Result<Holders, LockError>);

/// Holders of many files with one read of mountinfo and of `/proc/locks`;
/// each path gets its own result, so one missing file does not hide the
/// others.
///
/// # Errors
/// The outer error if /proc cannot be read at all.
pub fn holders_of_many<P: AsRef<Path>>(paths: &[P], exact: bool) -> Result<Vec<PathHolders>, LockError> {
    let snapshot = Snapshot::read()?;
    let ids: Vec<Result<FileId, LockError>> = paths.iter().map(|p| snapshot.file_id(p.as_ref())).collect();
    let found: Vec<FileId> = ids.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let mut exact_answers =
        if exact { snapshot.exact_holders(&found)?.into_iter() } else { Vec::new().into_iter() };
    Ok(paths
        .iter()
        .zip(ids)
        .map(|(path, id)| {
            let holders = id.map(|id| match exact_answers.next() {
                Some(holders) => holders,
                None => snapshot.holders(id.key),
            });
            (path.as_ref().to_owned(), holders)
        })
        .collect())
}
