//! Everything under the root, reached relative to a directory descriptor
//! (hence the name: every call here is an `*at` call on a held `dirfd`).
//!
//! The root is opened once with lockyard-flock's hardening; from there
//! every name is one component looked up in a directory we already hold,
//! with `O_NOFOLLOW`. A symlink planted as an entry, inside one, or as a
//! staging directory is never followed, and renaming or replacing a
//! directory above the root after it was opened changes nothing we touch.
//! Paths are kept only to name things in messages.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::error::CacheError;

/// Open the directory `name` in `dir` for reading, never through a
/// symlink: `ELOOP` or `ENOTDIR` says something else is there.
pub(crate) fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Open the regular file `name` in `dir` for reading. `O_NONBLOCK` so a
/// FIFO swapped in after a `stat` cannot hang us; the caller checks the
/// type with `fstat`.
pub(crate) fn open_file(dir: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
}

/// Open the file at `path` (components separated by `/`) below `dir` for
/// reading in one call, with no symlink anywhere on the way
/// (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`). Fails with `ENOSYS`
/// or `EPERM` where `openat2` is missing or filtered: callers then walk
/// one component at a time.
pub(crate) fn open_file_beneath(dir: impl AsFd, path: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn stat(
    dir: impl AsFd,
    name: impl rustix::path::Arg,
    path: &Path,
) -> Result<Option<Stat>, CacheError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(CacheError::io(path, "stat", e)),
    }
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// The names in a directory, `.` and `..` left out, in no order.
pub(crate) fn names(dir: impl AsFd, path: &Path) -> Result<Vec<OsString>, CacheError> {
    let io = |e| CacheError::io(path, "list", e);
    // A descriptor of our own, readable even when `dir` is `O_PATH` (which
    // `Dir::read_from` would copy, and getdents refuses).
    let fd = open_dir(dir, ".").map_err(io)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(fd).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// `fsync` a directory we hold an `O_PATH` (or any) descriptor of, so the
/// names in it survive a power cut.
pub(crate) fn sync_dir(dir: impl AsFd, path: &Path) -> Result<(), CacheError> {
    let fd =
        rustix::fs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| CacheError::io(path, "open", e))?;
    rustix::fs::fsync(&fd).map_err(|e| CacheError::io(path, "fsync", e))
}

/// A directory's identity, to check that `..` leads back where we came
/// from.
pub(crate) fn identity(fd: impl AsFd, path: &Path) -> Result<(u64, u64), CacheError> {
    let st = rustix::fs::fstat(fd).map_err(|e| CacheError::io(path, "stat", e))?;
    Ok((st.st_dev, st.st_ino))
}

/// Climb from `dir` to its parent, which must be the directory `expected`
/// (by identity): a tree is walked holding one descriptor at a time, so a
/// directory deep inside it is left by `..`, and a directory moved
/// meanwhile must not lead the walk elsewhere.
pub(crate) fn parent(dir: impl AsFd, expected: (u64, u64), path: &Path) -> Result<OwnedFd, CacheError> {
    let up = open_dir(dir, "..").map_err(|e| CacheError::io(path, "open ..", e))?;
    if identity(&up, path)? != expected {
        return Err(CacheError::io(
            path,
            "walk",
            std::io::Error::other("a directory was moved during the walk"),
        ));
    }
    Ok(up)
}

/// Remove `name` from `dir`, a whole tree if it is a directory, without
/// following any symlink in it; gone already is fine.
///
/// Iterative, holding one directory descriptor at a time (plus the names
/// still to visit on the current branch), so a tree of any depth is
/// removed with neither recursion nor one descriptor per level: a build
/// that left a directory chain 100,000 deep cannot overflow the stack or
/// run out of descriptors.
pub(crate) fn remove_tree(dir: impl AsFd, name: &OsStr, path: &Path) -> Result<(), CacheError> {
    struct Level {
        name: OsString,
        id: (u64, u64),
        todo: Vec<OsString>,
    }
    let dir = dir.as_fd();
    let gone = |r: Result<(), Errno>, path: &Path| match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(CacheError::io(path, "remove", e)),
    };
    let mut cur = match open_dir(dir, name) {
        Ok(fd) => fd,
        // Not a directory (a file, a symlink): unlink the name itself.
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return gone(rustix::fs::unlinkat(dir, name, AtFlags::empty()), path);
        }
        Err(e) => return gone(Err(e), path),
    };
    let mut path = path.to_owned();
    let mut levels =
        vec![Level { name: name.to_owned(), id: identity(&cur, &path)?, todo: names(&cur, &path)? }];
    while let Some(level) = levels.last_mut() {
        if let Some(child) = level.todo.pop() {
            match open_dir(&cur, child.as_os_str()) {
                Ok(fd) => {
                    path.push(&child);
                    let id = identity(&fd, &path)?;
                    let todo = names(&fd, &path)?;
                    cur = fd;
                    levels.push(Level { name: child, id, todo });
                }
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    gone(
                        rustix::fs::unlinkat(&cur, child.as_os_str(), AtFlags::empty()),
                        &path.join(&child),
                    )?;
                }
                Err(e) => gone(Err(e), &path.join(&child))?,
            }
            continue;
        }
        let done = levels.pop().expect("the loop runs only while a level is left");
        let Some(up) = levels.last() else { break };
        cur = parent(&cur, up.id, &path)?;
        gone(rustix::fs::unlinkat(&cur, done.name.as_os_str(), AtFlags::REMOVEDIR), &path)?;
        path.pop();
    }
    drop(cur);
    gone(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR), &path)
}

/// A `stat`'s mtime, ns since the Unix epoch.
pub(crate) fn mtime_ns(st: &Stat) -> Option<u64> {
    let secs = u64::try_from(st.st_mtime).ok()?;
    // The field's type differs between architectures.
    #[allow(clippy::useless_conversion)]
    let nanos = u64::try_from(st.st_mtime_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}
