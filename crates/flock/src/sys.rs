//! The one place this crate calls libc directly: `fcntl` byte-range locks,
//! which rustix wraps only for whole files.

#![allow(unsafe_code)]

use rustix::io::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Which `fcntl` lock family a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `F_OFD_SETLK`: owned by the open file description.
    Ofd,
    /// `F_SETLK`: owned by the process.
    Posix,
}

/// The lock type of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Read,
    Write,
    Unlock,
}

/// Apply an `fcntl` lock to bytes `start..start+len` (`len` 0: to the end
/// of the file, however it grows); with `block`, wait in the kernel's
/// queue (`F_OFD_SETLKW`/`F_SETLKW`) until it is granted.
///
/// # Errors
/// `EAGAIN`/`EACCES` when another owner holds a conflicting lock (without
/// `block`), `EINTR` when a signal interrupts a blocked wait, `EDEADLK`
/// for a POSIX wait that would deadlock, `EINVAL` when the kernel lacks
/// OFD locks (before 3.15), others as the kernel says.
pub(crate) fn set_lock(
    fd: BorrowedFd<'_>,
    family: Family,
    kind: Type,
    start: u64,
    len: u64,
    block: bool,
) -> Result<(), Errno> {
    let invalid = || Errno::INVAL;
    let request = libc::flock {
        l_type: match kind {
            Type::Read => libc::F_RDLCK,
            Type::Write => libc::F_WRLCK,
            Type::Unlock => libc::F_UNLCK,
        } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: libc::off_t::try_from(start).map_err(|_| invalid())?,
        l_len: libc::off_t::try_from(len).map_err(|_| invalid())?,
        // OFD requests must pass 0 here; the kernel fills it for F_GETLK.
        l_pid: 0,
    };
    let cmd = match (family, block) {
        (Family::Ofd, false) => libc::F_OFD_SETLK,
        (Family::Ofd, true) => libc::F_OFD_SETLKW,
        (Family::Posix, false) => libc::F_SETLK,
        (Family::Posix, true) => libc::F_SETLKW,
    };
    // SAFETY: `fd` is a live descriptor for the duration of the call (it is
    // borrowed), `cmd` is a lock command whose third argument is a pointer
    // to a `struct flock`, and `request` is a fully initialized `flock` that
    // outlives the call. The kernel only reads it for SETLK(W) commands.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &request) };
    if rc == -1 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(())
    }
}
