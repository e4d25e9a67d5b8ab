//! Processes and their open descriptors, listed through `/proc`.
//!
//! Walking every descriptor on the host is what answers "who holds this
//! file", so its per-descriptor cost is the cost of that answer. A
//! [`Descriptors`] keeps directory descriptors of `/proc/PID/fd` and
//! `/proc/PID/fdinfo` open, so each question about one descriptor is one
//! short lookup relative to them rather than a walk of
//! `/proc/PID/fd/N` from the root; and [`Descriptors::file`] asks
//! `statx` with `AT_STATX_DONT_SYNC`, which never waits on a network
//! filesystem's server.
//!
//! A directory descriptor of `/proc/PID` outlives the process it named:
//! once that process exits, lookups through it fail with `ENOENT` or
//! `ESRCH` rather than reaching a later process that reuses the pid.
//! Every method reports a process or descriptor that went away as an
//! [`Error::Read`] for which [`Error::is_gone`] is true.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::Error;
use crate::fdinfo::FdInfo;

/// Every process visible in this process's `/proc` (thread-group leaders),
/// in directory order.
///
/// # Errors
/// [`Error::Read`] if `/proc` cannot be listed.
pub fn pids() -> Result<Vec<u32>, Error> {
    let read = |e| Error::read("/proc", e);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(read)? {
        let name = entry.map_err(read)?.file_name();
        pids.extend(name.to_str().and_then(|n| n.parse::<u32>().ok()));
    }
    Ok(pids)
}

/// The file an open descriptor refers to, as `statx` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenFile {
    /// `st_dev` (not always the superblock device `/proc/locks` prints: see
    /// [`OpenFile::mount_id`]).
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The id of the mount the file was opened through (Linux 5.8+), which
    /// [`crate::MountInfo::by_id`] turns into the superblock device when
    /// the mount is in the reader's mount namespace.
    pub mount_id: Option<u64>,
}

/// The open descriptors of one process, listed as they are asked for
/// ([`Descriptors::next_fd`]): listing `/proc/PID/fd` costs the kernel a
/// dentry per descriptor, so a caller that finds what it wants early
/// does not pay for the rest.
#[derive(Debug)]
pub struct Descriptors {
    pid: u32,
    fd_dir: OwnedFd,
    listing: rustix::fs::Dir,
    fdinfo_dir: Option<OwnedFd>,
}

impl Descriptors {
    /// List the descriptors of `pid`.
    ///
    /// # Errors
    /// [`Error::Read`]: [`Error::is_gone`] if the process exited, a
    /// `PermissionDenied` kind if it belongs to another user and this
    /// process lacks the privilege to look.
    pub fn open(pid: u32) -> Result<Self, Error> {
        let path = format!("/proc/{pid}/fd");
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd_dir =
            rustix::fs::open(&path, flags, Mode::empty()).map_err(|e| Error::read(&path, e.into()))?;
        let listing = rustix::fs::Dir::read_from(&fd_dir).map_err(|e| Error::read(&path, e.into()))?;
        Ok(Descriptors { pid, fd_dir, listing, fdinfo_dir: None })
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next open descriptor in directory order, `None` after the last.
    ///
    /// # Errors
    /// [`Error::Read`] if the listing fails ([`Error::is_gone`] if the
    /// process exited meanwhile).
    pub fn next_fd(&mut self) -> Option<Result<u32, Error>> {
        loop {
            match self.listing.read()? {
                Ok(entry) => {
                    let name = std::str::from_utf8(entry.file_name().to_bytes()).ok();
                    if let Some(fd) = name.and_then(|n| n.parse::<u32>().ok()) {
                        return Some(Ok(fd));
                    }
                }
                Err(e) => return Some(Err(Error::read(format!("/proc/{}/fd", self.pid), e.into()))),
            }
        }
    }

    /// `statx` of the file descriptor `fd` refers to, with cached
    /// attributes (`AT_STATX_DONT_SYNC`).
    ///
    /// # Errors
    /// [`Error::Read`]; [`Error::is_gone`] if the descriptor was closed or
    /// the process exited.
    pub fn file(&self, fd: u32) -> Result<OpenFile, Error> {
        let mask = StatxFlags::INO | StatxFlags::MNT_ID;
        match rustix::fs::statx(&self.fd_dir, fd.to_string(), AtFlags::STATX_DONT_SYNC, mask) {
            Ok(stx) => Ok(OpenFile {
                dev: rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor),
                ino: stx.stx_ino,
                mount_id: (stx.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(stx.stx_mnt_id),
            }),
            // Kernels before statx (4.11).
            Err(Errno::NOSYS) => {
                let st = rustix::fs::statat(&self.fd_dir, fd.to_string(), AtFlags::empty())
                    .map_err(|e| self.error("fd", fd, e))?;
                Ok(OpenFile { dev: st.st_dev, ino: st.st_ino, mount_id: None })
            }
            Err(e) => Err(self.error("fd", fd, e)),
        }
    }

    /// Where descriptor `fd` points, as `readlink` of `/proc/PID/fd/FD`
    /// shows it (a path, or `socket:[INODE]` and the like).
    ///
    /// # Errors
    /// As [`Descriptors::file`].
    pub fn link(&self, fd: u32) -> Result<PathBuf, Error> {
        rustix::fs::readlinkat(&self.fd_dir, fd.to_string(), Vec::new())
            .map(|target| PathBuf::from(OsString::from_vec(target.into_bytes())))
            .map_err(|e| self.error("fd", fd, e))
    }

    /// The fdinfo of descriptor `fd`.
    ///
    /// # Errors
    /// As [`Descriptors::file`], or [`Error::Parse`].
    pub fn fdinfo(&mut self, fd: u32) -> Result<FdInfo, Error> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let dir = match &self.fdinfo_dir {
            Some(dir) => dir,
            None => {
                let path = format!("/proc/{}/fdinfo", self.pid);
                let dir = rustix::fs::open(&path, flags | OFlags::DIRECTORY, Mode::empty())
                    .map_err(|e| Error::read(path, e.into()))?;
                self.fdinfo_dir.insert(dir)
            }
        };
        let file = rustix::fs::openat(dir, fd.to_string(), flags, Mode::empty())
            .map_err(|e| self.error("fdinfo", fd, e))?;
        let bytes = read_to_end(std::fs::File::from(file)).map_err(|e| self.error("fdinfo", fd, e))?;
        FdInfo::parse(&bytes).map_err(|e| e.in_file(format!("/proc/{}/fdinfo/{fd}", self.pid)))
    }

    fn error(&self, dir: &str, fd: u32, e: impl Into<io::Error>) -> Error {
        Error::read(format!("/proc/{}/{dir}/{fd}", self.pid), e.into())
    }
}

/// Read what is left of `file` with plain `read` calls.
pub(crate) fn read_to_end(mut file: impl Read) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(bytes.len() * 2, 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_descriptors_are_listed_and_described() {
        let file = tempfile_in_tmp();
        let own = std::process::id();
        let fd = {
            use std::os::fd::AsRawFd;
            u32::try_from(file.1.as_raw_fd()).expect("fd")
        };
        let mut descriptors = Descriptors::open(own).expect("own fds");
        let fds: Vec<u32> =
            std::iter::from_fn(|| descriptors.next_fd()).map(|fd| fd.expect("listed")).collect();
        assert!(fds.contains(&fd));
        let meta = std::fs::metadata(&file.0).expect("stat");
        let open = descriptors.file(fd).expect("statx");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((open.dev, open.ino), (meta.dev(), meta.ino()));
        assert_eq!(descriptors.link(fd).expect("link"), file.0);
        assert!(descriptors.fdinfo(fd).expect("fdinfo").locks.is_empty());
        assert!(pids().expect("pids").contains(&own));
        let closed = fds.iter().max().copied().unwrap_or(0) + 1000;
        assert!(descriptors.file(closed).expect_err("no such descriptor").is_gone());
        std::fs::remove_file(&file.0).expect("rm");
    }

    fn tempfile_in_tmp() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("lockyard-procfs-fds-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        (path.canonicalize().expect("canonical"), file)
    }
}
