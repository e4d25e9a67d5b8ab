//! The crate's only unsafe code: the hooks a child runs between fork and
//! exec to join its reservation's cgroup and to take its memory policy.

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

/// `set_mempolicy(2)` modes.
pub(crate) const MPOL_BIND: libc::c_int = 2;
pub(crate) const MPOL_INTERLEAVE: libc::c_int = 3;

/// Make `command`'s children set their memory policy to `mode` over
/// `nodes` before they exec; the policy is inherited by everything they
/// start. A refused policy fails the spawn.
pub(crate) fn mempolicy_on_exec(command: &mut Command, mode: libc::c_int, nodes: &[u32]) {
    let bits = libc::c_ulong::BITS as usize;
    let highest = nodes.iter().max().map_or(0, |&n| n as usize);
    let mut mask: Vec<libc::c_ulong> = vec![0; highest / bits + 1];
    for &node in nodes {
        mask[node as usize / bits] |= 1 << (node as usize % bits);
    }
    // The kernel reads `maxnode - 1` bits.
    let maxnode = (mask.len() * bits + 1) as libc::c_ulong;
    let hook = move || {
        // SAFETY: `mask` is owned by the closure and holds `maxnode - 1`
        // bits; the kernel only reads it.
        let ret = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask.as_ptr(), maxnode) };
        if ret == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    // SAFETY: as for `join_cgroup_on_exec`: one system call and a read of
    // errno, nothing allocated or locked in the forked child.
    unsafe {
        command.pre_exec(hook);
    }
}
