//! Opening lock files as if the directory were hostile.
//!
//! `/tmp` and `/var/tmp` are world-writable: anyone may plant a symlink, a
//! FIFO or a file of their own under the name a lock file will have, and a
//! directory another user owns can have its names removed and replaced
//! under us. The rules here:
//!
//! - The directory is reached one component at a time with `O_PATH`
//!   descriptors, and each directory on the way must be one the
//!   [`DirTrust`] accepts (by default: ours or root's, and not writable by
//!   other users unless sticky). Each component is opened once, without
//!   following it, and its type, owner and (for a symlink) target are read
//!   from that one descriptor, so a swap between looking and using is
//!   harmless. A symlink is followed only where the kernel's
//!   `protected_symlinks` would follow it, applied to every directory
//!   others may write to: when it belongs to us or to the directory's owner
//!   (so root's `/var/run -> /run` works, another user's `/tmp/x -> /etc`
//!   does not). Symlink targets are walked the same way, at most 40 hops.
//!   Missing directories, when asked for, are made with `mkdirat` relative
//!   to the vetted parent and then opened with `O_NOFOLLOW`.
//! - The lock file itself is opened relative to that directory with
//!   `O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK`: never through a
//!   symlink, never left open across `exec`, never becoming a controlling
//!   terminal, never blocking on a FIFO. What was opened is `fstat`ed and
//!   refused (and closed) unless it is a regular file. A missing file is
//!   created with `O_EXCL`, so this call knows whether it created it.
//!   (Opening a device node can have side effects, but only root can
//!   create one, and root is trusted anyway.)
//! - In a world-writable directory the file must belong to us or to root
//!   (unless the caller allows otherwise): another user could otherwise
//!   hold it forever or swap its content.
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

use crate::error::{Found, LockError, Untrusted};

const MAX_SYMLINK_HOPS: u32 = 40;

/// Which directories a lock directory may be, and be reached through.
///
/// The default ([`DirTrust::private`]) is the rule for every directory
/// lockyard stores into or locks in on its own account: each directory on
/// the way, and the directory itself, belongs to the caller or root and is
/// not writable by other users, except sticky world-writable ones such as
/// `/tmp`, where nobody can remove or replace another user's names. A
/// directory another user owns (or may write to) could have its lock files
/// unlinked and recreated under a process that trusts them, or be swapped
/// for a symlink to somewhere that process may write and its owner may not.
///
/// Sharing across users is opted into, never implied: a root-owned sticky
/// directory needs no opt-in (another user's lock file in it still does,
/// see [`crate::LockOptions::allow_foreign_owner`]); a directory shared by a
/// group is [`DirTrust::group`]; [`DirTrust::any_owner`] is flock(1)'s
/// stance, for a path the operator named on purpose.
///
/// Whatever the trust, a symlink in a directory other users may write to
/// is followed only if it belongs to the caller or to the directory's
/// owner (the kernel's `protected_symlinks` rule, applied to every such
/// directory rather than only sticky ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirTrust {
    any_owner: bool,
    group: Option<u32>,
}

impl DirTrust {
    /// Only directories of the caller or root, not writable by others
    /// unless sticky. The default.
    pub fn private() -> Self {
        Self::default()
    }

    /// Also directories whose group is `gid`, owned by anyone and writable
    /// by that group: a cache or lock directory a team shares on purpose
    /// (typically mode 2775, so new files keep the group). Every member of
    /// the group is then trusted with what is stored there.
    #[must_use]
    pub fn group(gid: u32) -> Self {
        DirTrust { any_owner: false, group: Some(gid) }
    }

    /// Any directory, whoever owns it: flock(1)'s behaviour, for a lock
    /// path an operator named on purpose. The symlink rule above still
    /// holds.
    #[must_use]
    pub fn any_owner() -> Self {
        DirTrust { any_owner: true, group: None }
    }

    /// Refuse the directory `dir` (with this `stat`, on the way to `path`)
    /// unless this trust accepts it.
    fn check(&self, st: &Stat, euid: u32, path: &Path, dir: &Path) -> Result<(), LockError> {
        self.why_not(st, euid).map_err(|why| LockError::Untrusted {
            path: path.to_owned(),
            dir: dir.to_owned(),
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
            why,
        })
    }

    /// Why the directory with this `stat` may not be used, if it may not.
    fn why_not(&self, st: &Stat, euid: u32) -> Result<(), Untrusted> {
        if self.any_owner {
            return Ok(());
        }
        let mode = st.st_mode;
        let sticky = mode & libc::S_ISVTX != 0;
        let in_group = self.group == Some(st.st_gid);
        if st.st_uid != euid && st.st_uid != 0 && !in_group {
            return Err(Untrusted::ForeignOwner);
        }
        if mode & libc::S_IWOTH != 0 && !sticky {
            return Err(Untrusted::WritableByOthers);
        }
        if mode & libc::S_IWGRP != 0 && !sticky && !in_group {
            return Err(Untrusted::WritableByGroup);
        }
        Ok(())
    }
}

/// A directory opened with the rules above, kept open so every lock file in
/// it is opened relative to the same inode, whatever its path comes to name.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Other users may create names in here: world-writable (sticky, as
    /// `/tmp`, or not, under [`DirTrust::any_owner`]).
    shared: bool,
    trust: DirTrust,
    /// The filesystem magic of the last device a lock file in here was
    /// found on: one device is one superblock, so `fstatfs` is asked once
    /// per directory rather than once per lock file made from it.
    fs_magic: Mutex<Option<(u64, u64)>>,
}

fn writable_by_others(st: &Stat) -> bool {
    st.st_mode & (libc::S_IWOTH | libc::S_IWGRP) != 0
}

/// Open `name` in `dir` as itself: a directory, or a symlink not followed.
fn open_path(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

impl Dir {
    /// Open `path` (absolute or relative to the working directory),
    /// refusing any directory `trust` does not accept. With `create`,
    /// missing directories are made on the way (`mkdirat` relative to the
    /// already vetted parent, never through a path that could be swapped),
    /// the last one with exactly that mode, the others 0755.
    pub(crate) fn open(path: &Path, trust: &DirTrust, create: Option<u32>) -> Result<Dir, LockError> {
        let io = |op, e: Errno| LockError::io(path, op, e);
        let euid = rustix::process::geteuid().as_raw();
        let start = if path.is_absolute() { "/" } else { "." };
        let open_start = || {
            rustix::fs::open(start, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io("open directory", e))
        };
        let mut cur = open_start()?;
        let mut cur_path = PathBuf::from(start);
        let mut cur_stat = rustix::fs::fstat(&cur).map_err(|e| io("stat directory", e))?;
        trust.check(&cur_stat, euid, path, &cur_path)?;
        let mut queue: VecDeque<OsString> = components(path).collect();
        let mut hops = 0;
        while let Some(name) = queue.pop_front() {
            let last = queue.is_empty();
            let mut created = false;
            let fd = match open_path(&cur, &name) {
                Err(Errno::NOENT) if create.is_some() => {
                    match rustix::fs::mkdirat(&cur, name.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => created = last,
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(io("create directory", e)),
                    }
                    open_path(&cur, &name).map_err(|e| io("open directory", e))?
                }
                other => other.map_err(|e| io("open directory", e))?,
            };
            // One descriptor, so the type, owner and target read below are
            // all of the same inode: a swap after the open changes nothing.
            let st = rustix::fs::fstat(&fd).map_err(|e| io("stat directory", e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(io("resolve directory", Errno::LOOP));
                    }
                    if writable_by_others(&cur_stat) && st.st_uid != euid && st.st_uid != cur_stat.st_uid {
                        return Err(LockError::Refused {
                            path: path.to_owned(),
                            found: Found::ForeignSymlink { uid: st.st_uid },
                        });
                    }
                    let target =
                        rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| io("read symlink", e))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        cur = rustix::fs::open(
                            "/",
                            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| io("open directory", e))?;
                        cur_path = PathBuf::from("/");
                        cur_stat = rustix::fs::fstat(&cur).map_err(|e| io("stat directory", e))?;
                    }
                    for (i, part) in components(&target).enumerate() {
                        queue.insert(i, part);
                    }
                }
                FileType::Directory => {
                    if name == ".." {
                        cur_path.pop();
                    } else {
                        cur_path.push(&name);
                    }
                    if created && let Some(mode) = create {
                        // The umask filtered mkdir's mode; fchmod needs a
                        // real descriptor, of the inode we just vetted.
                        let real = rustix::fs::openat(
                            &cur,
                            name.as_os_str(),
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| io("open directory", e))?;
                        let now = rustix::fs::fstat(&real).map_err(|e| io("stat directory", e))?;
                        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                            return Err(io("create directory", Errno::STALE));
                        }
                        rustix::fs::fchmod(&real, Mode::from_raw_mode(mode)).map_err(|e| io("chmod", e))?;
                    }
                    // Its mode changed if we just made it; else `st` is it.
                    cur_stat = if created {
                        rustix::fs::fstat(&fd).map_err(|e| io("stat directory", e))?
                    } else {
                        st
                    };
                    cur = fd;
                    trust.check(&cur_stat, euid, path, &cur_path)?;
                }
                _ => {
                    return Err(LockError::InvalidPath {
                        path: path.to_owned(),
                        reason: "a component is not a directory",
                    });
                }
            }
        }
        Ok(Dir {
            fd: cur,
            path: path.to_owned(),
            shared: cur_stat.st_mode & libc::S_IWOTH != 0,
            trust: trust.clone(),
            fs_magic: Mutex::default(),
        })
    }

    /// Open the directory `name` inside this one: relative to this
    /// descriptor, never through a symlink, refused unless a directory
    /// this one's trust accepts.
    pub(crate) fn open_child(&self, name: &OsStr) -> Result<Dir, LockError> {
        let path = self.path.join(name);
        let fd = open_path(&self.fd, name).map_err(|e| LockError::io(&path, "open directory", e))?;
        // O_PATH | O_NOFOLLOW opens a symlink itself rather than failing:
        // the type check below is what refuses it.
        let st = rustix::fs::fstat(&fd).map_err(|e| LockError::io(&path, "stat directory", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(LockError::Refused { path, found: Found::from_mode(st.st_mode) });
        }
        self.trust.check(&st, rustix::process::geteuid().as_raw(), &path, &path)?;
        Ok(Dir {
            fd,
            shared: st.st_mode & libc::S_IWOTH != 0,
            trust: self.trust.clone(),
            path,
            fs_magic: Mutex::default(),
        })
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
