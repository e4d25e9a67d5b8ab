//! The error type of every fallible operation in this crate.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::fs_policy::FsType;
use crate::holders::Holders;

/// Why a lock file could not be opened, locked or inspected.
///
/// Callers match on the variant, never on the message; every message names
/// the path, says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A non-blocking attempt found the lock held.
    #[error("{}: held by {holders}", path.display())]
    Contended {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as far as /proc shows.
        holders: Holders,
    },
    /// A wait ran out of time.
    #[error("{}: not acquired within {waited:.1?}; held by {holders}", path.display())]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// How long was waited.
        waited: Duration,
        /// Who held it when the wait gave up.
        holders: Holders,
    },
    /// A wait was cancelled through its [`crate::CancelToken`].
    #[error("{}: wait cancelled after {waited:.1?}", path.display())]
    Cancelled {
        /// The lock file.
        path: PathBuf,
        /// How long was waited.
        waited: Duration,
    },
    /// A directory on the way to the lock file belongs to, or may be
    /// written by, someone the [`crate::DirTrust`] does not trust.
    #[error(
        "{}: refusing to use {} because it is {why} (owner uid {uid}, mode {mode:04o}); {}",
        path.display(), dir.display(), why.remedy()
    )]
    Untrusted {
        /// The path asked for.
        path: PathBuf,
        /// The directory refused.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
        /// What is wrong with it.
        why: Untrusted,
    },
    /// The lock file is on a filesystem the [`crate::FsPolicy`] refuses.
    #[error(
        "{}: the file is on {fs}, where advisory locks are not reliable; \
         put lock files on a local filesystem such as tmpfs (/run, /dev/shm) or ext4, \
         or allow {} in the FsPolicy if this mount is known to lock correctly",
        path.display(), fs.name
    )]
    UnsupportedFilesystem {
        /// The lock file.
        path: PathBuf,
        /// The filesystem found.
        fs: FsType,
    },
    /// Something other than a lock file we may trust is at the path.
    #[error("{}: refusing to use {found} as a lock file; {}", path.display(), found.remedy())]
    Refused {
        /// The path.
        path: PathBuf,
        /// What was found there.
        found: Found,
    },
    /// The path kept naming a different file than the one locked.
    #[error(
        "{}: the lock file was replaced or removed {attempts} times while it was being locked; \
         something (a tmp cleaner, a script running rm) keeps deleting it: \
         keep lock files out of cleaned directories",
        path.display()
    )]
    Unstable {
        /// The lock file.
        path: PathBuf,
        /// How many times it was reopened.
        attempts: u32,
    },
    /// The path cannot name a lock file.
    #[error("{}: {reason}", path.display())]
    InvalidPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done (`open`, `flock`, ...).
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// /proc could not be read or parsed while looking for holders.
    #[error(transparent)]
    Proc(#[from] lockyard_procfs::Error),
}

impl LockError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: impl Into<io::Error>) -> Self {
        LockError::Io { path: path.into(), op, source: source.into() }
    }

    /// Whether another process holds what was asked for: contended now,
    /// or still held when a wait ran out. Trying again later may succeed;
    /// a cancelled wait is the caller's own doing and not busy. (Every
    /// lockyard crate's `is_busy` means this.)
    pub fn is_busy(&self) -> bool {
        matches!(self, LockError::Contended { .. } | LockError::Timeout { .. })
    }
}

/// For `io::Result` code: `?` turns a [`LockError`] into an
/// [`io::Error`] of the matching kind, the lock error kept as its inner
/// error (and source). Busy is `WouldBlock`, as `std::fs::File::try_lock`
/// says it; a timeout `TimedOut`; a cancelled wait `Interrupted`; a
/// refused or untrusted path `PermissionDenied`; an unreliable filesystem
/// `Unsupported`; a bad path `InvalidInput`; a malformed /proc file
/// `InvalidData`; a failed system call keeps its own kind.
impl From<LockError> for io::Error {
    fn from(err: LockError) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

impl LockError {
    /// The [`io::ErrorKind`] this error stands for (see the
    /// `From<LockError> for io::Error` impl).
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            LockError::Contended { .. } => io::ErrorKind::WouldBlock,
            LockError::Timeout { .. } => io::ErrorKind::TimedOut,
            LockError::Cancelled { .. } => io::ErrorKind::Interrupted,
            LockError::Refused { .. } | LockError::Untrusted { .. } => io::ErrorKind::PermissionDenied,
            LockError::UnsupportedFilesystem { .. } => io::ErrorKind::Unsupported,
            LockError::InvalidPath { .. } => io::ErrorKind::InvalidInput,
            LockError::Unstable { .. } => io::ErrorKind::Other,
            LockError::Io { source, .. } => source.kind(),
            LockError::Proc(e) => e.io_kind(),
        }
    }
}

/// Why a directory is not trusted (see [`crate::DirTrust`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Untrusted {
    /// Owned by a user other than the caller and root.
    ForeignOwner,
    /// Writable by every user, and not sticky.
    WritableByOthers,
    /// Writable by its group, not sticky, and the group not trusted.
    WritableByGroup,
}

impl Untrusted {
    fn remedy(self) -> &'static str {
        match self {
            Untrusted::ForeignOwner => {
                "its owner could remove or swap what lockyard keeps there; use a directory you or root own, \
                 or have root create a shared one (install -d -o root -m 1777 DIR)"
            }
            Untrusted::WritableByOthers => {
                "any user could remove or swap what lockyard keeps there; make it sticky (chmod +t) \
                 or not world-writable (chmod o-w)"
            }
            Untrusted::WritableByGroup => {
                "its group could remove or swap what lockyard keeps there; chmod g-w it, \
                 or trust that group explicitly (a group-shared directory)"
            }
        }
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Untrusted::ForeignOwner => "owned by another user",
            Untrusted::WritableByOthers => "writable by every user and not sticky",
            Untrusted::WritableByGroup => "writable by its group",
        })
    }
}

/// What was found at a path that cannot be a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// A symbolic link (possibly planted to redirect the open).
    Symlink,
    /// A symbolic link in a directory other users may write to, owned by
    /// someone who is neither us nor the directory's owner.
    ForeignSymlink {
        /// Owner of the link.
        uid: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A directory.
    Directory,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A regular file in a world-writable directory owned by someone
    /// other than us or root, who could swap its content or hold it forever.
    ForeignFile {
        /// Owner of the file.
        uid: u32,
    },
    /// A regular file with more than one name: any user who can see it
    /// may have linked someone else's file here (`protected_hardlinks` is
    /// off by default), so it is never written through.
    HardLinked {
        /// Its link count.
        links: u64,
    },
    /// Something else.
    Other,
}

impl Found {
    pub(crate) fn from_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFLNK => Found::Symlink,
            libc::S_IFIFO => Found::Fifo,
            libc::S_IFSOCK => Found::Socket,
            libc::S_IFDIR => Found::Directory,
            libc::S_IFCHR => Found::CharDevice,
            libc::S_IFBLK => Found::BlockDevice,
            _ => Found::Other,
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Found::Symlink | Found::ForeignSymlink { .. } => {
                "lock files are never opened through symbolic links; remove the link or use another path"
            }
            Found::ForeignFile { .. } => {
                "in a world-writable directory only files owned by you or root are trusted; \
                 remove it (as its owner) or use a private directory such as $XDG_RUNTIME_DIR"
            }
            Found::Directory => "a lock file must be a regular file; choose a file name inside the directory",
            Found::HardLinked { .. } => {
                "it may be another file linked here to be overwritten; remove the extra link (as its owner) \
                 or use a private directory such as $XDG_RUNTIME_DIR"
            }
            Found::CharDevice | Found::BlockDevice => {
                "a lock file must be a regular file, and a device node is never used as one; \
                 give the path of a regular file (it is created if missing)"
            }
            _ => "a lock file must be a regular file; use another path, or remove it if it is yours",
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Symlink => f.write_str("a symbolic link"),
            Found::ForeignSymlink { uid } => {
                write!(f, "a symbolic link owned by uid {uid} in a directory other users may write to")
            }
            Found::Fifo => f.write_str("a FIFO"),
            Found::Socket => f.write_str("a socket"),
            Found::Directory => f.write_str("a directory"),
            Found::CharDevice => f.write_str("a character device"),
            Found::BlockDevice => f.write_str("a block device"),
            Found::ForeignFile { uid } => {
                write!(f, "a file owned by uid {uid} in a world-writable directory")
            }
            Found::HardLinked { links } => write!(f, "a file with {links} hard links"),
            Found::Other => f.write_str("a file of unknown type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_for_io(err: LockError) -> io::Result<()> {
        Err(err)?;
        Ok(())
    }

    #[test]
    fn question_mark_works_in_io_code_and_keeps_the_kind_and_the_error() {
        let busy = LockError::Contended { path: "/tmp/x".into(), holders: Holders::default() };
        let err = open_for_io(busy).expect_err("busy");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "as std's File::try_lock says it");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<LockError>()).expect("the lock error inside");
        assert!(inner.is_busy());
        let cases = [
            (
                LockError::Timeout { path: "/x".into(), waited: Duration::ZERO, holders: Holders::default() },
                io::ErrorKind::TimedOut,
            ),
            (LockError::Cancelled { path: "/x".into(), waited: Duration::ZERO }, io::ErrorKind::Interrupted),
            (
                LockError::Refused { path: "/x".into(), found: Found::Symlink },
                io::ErrorKind::PermissionDenied,
            ),
            (LockError::InvalidPath { path: "/".into(), reason: "no name" }, io::ErrorKind::InvalidInput),
            (LockError::io("/x", "open", io::Error::from(io::ErrorKind::NotFound)), io::ErrorKind::NotFound),
        ];
        for (err, kind) in cases {
            assert_eq!(io::Error::from(err).kind(), kind);
        }
    }
}
