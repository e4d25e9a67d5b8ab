//! Opening lock files as if the directory were hostile.
//!
//! `/tmp` and `/var/tmp` are world-writable: anyone may plant a symlink, a
//! FIFO or a file of their own under the name a lock file will have. The
//! rules here:
//!
//! - The directory is reached one component at a time with `O_PATH`
//!   descriptors. A symlink on the way is followed only where the kernel's
//!   `protected_symlinks` would follow it: outside world-writable sticky
//!   directories, or when it belongs to us or to the directory's owner (so
//!   root's `/var/run -> /run` works, another user's `/tmp/x -> /etc` does
//!   not). Symlink targets are walked the same way, at most 40 hops.
//! - The lock file itself is opened relative to that directory with
//!   `O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK`: never through a
//!   symlink, never left open across `exec`, never becoming a controlling
//!   terminal, never blocking on a FIFO. What was opened is `fstat`ed and
//!   refused (and closed) unless it is a regular file. A missing file is
//!   created with `O_EXCL`, so this call knows whether it created it.
//!   (Opening a device node can have side effects, but only root can
//!   create one, and root is trusted anyway.)
//! - In a world-writable sticky directory the file must belong to us or to
//!   root: another user could otherwise hold it forever or swap its content.
//! - Nothing is ever truncated or unlinked. Permissions are set with
//!   `fchmod`, so a requested 0666 holds whatever the umask, and only on a
//!   file this call created (`O_EXCL` tells which).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Found, LockError};

const MAX_SYMLINK_HOPS: u32 = 40;

/// A directory opened with the rules above, kept open so every lock file in
/// it is opened relative to the same inode, whatever its path comes to name.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// World-writable and sticky, like `/tmp`.
    shared: bool,
    /// The filesystem magic of the last device a lock file in here was
    /// found on: one device is one superblock, so `fstatfs` is asked once
    /// per directory rather than once per lock file made from it.
    fs_magic: Mutex<Option<(u64, u64)>>,
}

fn stat_is_shared_dir(st: &Stat) -> bool {
    let mode = st.st_mode;
    mode & libc::S_ISVTX != 0 && mode & libc::S_IWOTH != 0
}

impl Dir {
    /// Open `path` (absolute or relative to the working directory).
    pub(crate) fn open(path: &Path) -> Result<Dir, LockError> {
        let io = |op, e: Errno| LockError::io(path, op, e);
        let start = if path.is_absolute() { "/" } else { "." };
        let mut cur =
            rustix::fs::open(start, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io("open directory", e))?;
        let mut cur_stat = rustix::fs::fstat(&cur).map_err(|e| io("stat directory", e))?;
        let mut queue: VecDeque<OsString> = components(path).collect();
        let mut hops = 0;
        while let Some(name) = queue.pop_front() {
            let st = rustix::fs::statat(&cur, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io("stat directory", e))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io("resolve directory", Errno::LOOP));
                }
                let euid = rustix::process::geteuid().as_raw();
                if stat_is_shared_dir(&cur_stat) && st.st_uid != euid && st.st_uid != cur_stat.st_uid {
                    return Err(LockError::Refused {
                        path: path.to_owned(),
                        found: Found::ForeignSymlink { uid: st.st_uid },
                    });
                }
                let target = rustix::fs::readlinkat(&cur, name.as_os_str(), Vec::new())
                    .map_err(|e| io("read symlink", e))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    cur = rustix::fs::open(
                        "/",
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io("open directory", e))?;
                    cur_stat = rustix::fs::fstat(&cur).map_err(|e| io("stat directory", e))?;
                }
                for (i, part) in components(&target).enumerate() {
                    queue.insert(i, part);
                }
                continue;
            }
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(LockError::InvalidPath {
                    path: path.to_owned(),
                    reason: "a component is not a directory",
                });
            }
            cur = rustix::fs::openat(
                &cur,
                name.as_os_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io("open directory", e))?;
            cur_stat = rustix::fs::fstat(&cur).map_err(|e| io("stat directory", e))?;
        }
        Ok(Dir {
            fd: cur,
            path: path.to_owned(),
            shared: stat_is_shared_dir(&cur_stat),
            fs_magic: Mutex::default(),
        })
    }

    /// Open the directory `name` inside this one: relative to this
    /// descriptor, never through a symlink, refused unless a directory.
    /// It inherits no trust: whether it is shared is its own mode's say.
    pub(crate) fn open_child(&self, name: &OsStr) -> Result<Dir, LockError> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LockError::io(&path, "open directory", e))?;
        // O_PATH | O_NOFOLLOW opens a symlink itself rather than failing:
        // the type check below is what refuses it.
        let st = rustix::fs::fstat(&fd).map_err(|e| LockError::io(&path, "stat directory", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(LockError::Refused { path, found: Found::from_mode(st.st_mode) });
        }
        Ok(Dir { fd, shared: stat_is_shared_dir(&st), path, fs_magic: Mutex::default() })
    }

    /// The filesystem magic of device `dev`, if known.
    pub(crate) fn fs_magic(&self, dev: u64) -> Option<u64> {
        let known = *self.fs_magic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.and_then(|(known_dev, magic)| (known_dev == dev).then_some(magic))
    }

    pub(crate) fn remember_fs_magic(&self, dev: u64, magic: u64) {
        *self.fs_magic.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((dev, magic));
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The names to walk for `path`: `.` dropped, `..` kept for the kernel.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// How to open a lock file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    /// Permissions for a file we create, applied with `fchmod`; `None`
    /// leaves the creation mode 0644 filtered by the umask.
    pub(crate) permissions: Option<u32>,
    /// Whether a read-only open is good enough when read-write is denied
    /// (shared locks on a file we may not write).
    pub(crate) read_only_ok: bool,
    /// Whether to create a missing file (else `ENOENT`).
    pub(crate) create: bool,
    /// Whether a file of another user in a sticky, world-writable
    /// directory is acceptable (a directory made for all users to share).
    pub(crate) foreign_ok: bool,
}

/// An open lock file and the identity it had when opened.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) fd: OwnedFd,
    pub(crate) stat: Stat,
}

/// Open `name` in `dir` under the rules of the module docs.
pub(crate) fn open_lock_file(
    dir: &Dir,
    name: &OsStr,
    path: &Path,
    options: OpenOptions,
) -> Result<Opened, LockError> {
    let base = OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    let io = |op, e: Errno| LockError::io(path, op, e);
    let refuse = |found| LockError::Refused { path: path.to_owned(), found };
    for _ in 0..8 {
        // Open what is there first: the common case, one system call.
        let (fd, created) = match open_existing(dir, name, base, options) {
            Ok(fd) => (fd, false),
            Err(Errno::NOENT) if options.create => {
                let flags = base | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
                match rustix::fs::openat(dir.as_fd(), name, flags, Mode::from_raw_mode(0o644)) {
                    Ok(fd) => (fd, true),
                    // Created (or planted) since; look again.
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(io("create", e)),
                }
            }
            Err(Errno::LOOP) => return Err(refuse(Found::Symlink)),
            Err(e) => {
                // A socket (ENXIO), a directory (EISDIR), ...: say what it is.
                return match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => match check_existing(dir, &st, options.foreign_ok) {
                        Err(found) => Err(refuse(found)),
                        Ok(()) => Err(io("open", e)),
                    },
                    Err(_) => Err(io("open", e)),
                };
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io("stat", e))?;
        check_existing(dir, &stat, options.foreign_ok).map_err(refuse)?;
        if created && let Some(mode) = options.permissions {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io("chmod", e))?;
        }
        return Ok(Opened { fd, stat });
    }
    Err(LockError::Unstable { path: path.to_owned(), attempts: 8 })
}

fn open_existing(dir: &Dir, name: &OsStr, base: OFlags, options: OpenOptions) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir.as_fd(), name, base | OFlags::RDWR, Mode::empty()) {
        Err(Errno::ACCESS) if options.read_only_ok => {
            rustix::fs::openat(dir.as_fd(), name, base | OFlags::RDONLY, Mode::empty())
        }
        other => other,
    }
}

/// Whether an existing file (by its `lstat` or `fstat`) may be used.
fn check_existing(dir: &Dir, st: &Stat, foreign_ok: bool) -> Result<(), Found> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Found::from_mode(st.st_mode));
    }
    if dir.shared && !foreign_ok && st.st_uid != 0 && st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Found::ForeignFile { uid: st.st_uid });
    }
    Ok(())
}
