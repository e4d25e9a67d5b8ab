//! The crate's only unsafe code: the hook a child runs between fork and
//! exec to join its reservation's cgroup.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

/// Make `command`'s children write `0` to `procs` (a cgroup's
/// `cgroup.procs`, open for writing) before they exec, which moves them
/// into that cgroup: nothing they run exists outside it. A failed write
/// fails the spawn.
pub(crate) fn join_cgroup_on_exec(command: &mut Command, procs: Arc<OwnedFd>) {
    // `procs` is owned by the closure (an `Arc` clone), so the descriptor
    // is open for as long as the command can spawn.
    let hook = move || match rustix::io::write(procs.as_fd(), b"0") {
        Ok(1) => Ok(()),
        Ok(_) => Err(std::io::Error::from(rustix::io::Errno::IO)),
        Err(e) => Err(std::io::Error::from(e)),
    };
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe work is allowed: it makes one write(2) system
    // call (rustix, no libc buffering) and builds an error from its errno
    // without allocating; it takes no lock and touches no state the
    // parent's other threads could have left inconsistent.
    unsafe {
        command.pre_exec(hook);
    }
}
