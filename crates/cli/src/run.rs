//! Running a command while holding a lock, for every command that does
//! (`run`, `pidfile claim`, `reserve`, `cache ensure`): the lock
//! descriptors it inherits, signals forwarded, its status passed
//! through; and `pidfile claim` itself.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use lockyard::flock::{Pidfile, Wait};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit::{Exit, Outcome};

/// The descriptor `number` this process inherited (`flock 9`, `exec
/// 9>file`), borrowed for the rest of the process; `None` if no such
/// descriptor is open.
#[allow(unsafe_code)]
pub(crate) fn inherited_fd(number: i32) -> Option<std::os::fd::BorrowedFd<'static>> {
    // Open now? (Its /proc link exists exactly while it is.)
    std::fs::symlink_metadata(format!("/proc/self/fd/{number}")).ok()?;
    // SAFETY: `number` names an open descriptor (checked just above, at a
    // point where this process has opened and closed nothing of its own
    // beyond what std holds on 0-2), and nothing in lockyard closes a
    // descriptor it did not open, so it stays open, and means the same
    // file, for the rest of the process.
    Some(unsafe { std::os::fd::BorrowedFd::borrow_raw(number) })
}

/// Let the command inherit the lock descriptors `fds`, as flock(1) does
/// without `-o`: a lock is per open file description, so the command and
/// whatever it leaves running hold it until the last of them exits, even
/// if lockyard itself is killed first. The caller must then close its own
/// copies without unlocking (`into_fd`), since an unlock through any copy
/// releases the lock for all of them.
#[allow(unsafe_code)]
pub(crate) fn inherit(command: &mut Command, fds: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // only async-signal-safe system calls (fcntl F_SETFD) and allocates
    // nothing (`fds` was allocated before the fork); each fd is a lock
    // descriptor, open in the child as in the parent, and `borrow_raw`
    // only borrows it for that call.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
}

/// Start `command`, forward SIGINT, SIGTERM, SIGHUP and SIGQUIT to it
/// until it exits, and turn its status into ours (128+N for signal N;
/// 127 if it cannot be found, 126 if it cannot be run). `started` sees the
/// child's pid once it runs.
pub(crate) fn spawn_and_wait(command: Command, started: impl FnOnce(u32)) -> Exit {
    spawn_with_and_wait(command, Command::spawn, started, cannot_run)
}

/// Say that `program` cannot be started; 127 if it was not found, else
/// 126, as shells report it.
pub(crate) fn cannot_run(program: &std::ffi::OsStr, e: &std::io::Error) -> u8 {
    eprintln!("lockyard: cannot run {}: {e}", crate::escape(&program.to_string_lossy()));
    if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }
}

/// As [`spawn_and_wait`], spawning with `spawn` (to pin the child to
/// reserved CPUs, say), and reporting a command that cannot be started
/// with `cannot_run`, which returns the exit status for it.
pub(crate) fn spawn_with_and_wait(
    mut command: Command,
    spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    started: impl FnOnce(u32),
    cannot_run: impl FnOnce(&std::ffi::OsStr, &std::io::Error) -> u8,
) -> Exit {
    Exit::status(wait_status(&mut command, spawn, started, cannot_run))
}

fn wait_status(
    command: &mut Command,
    spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    started: impl FnOnce(u32),
    cannot_run: impl FnOnce(&std::ffi::OsStr, &std::io::Error) -> u8,
) -> u8 {
    // Registered before the child exists, so no signal is lost in between;
    // the child starts with default dispositions (exec resets handlers).
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("lockyard: cannot set up signal forwarding: {e}");
            return 71;
        }
    };
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => return cannot_run(command.get_program(), &e),
    };
    let pid = child.id();
    started(pid);
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if let (Some(pid), Some(signal)) = (
                rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                rustix::process::Signal::from_named_raw(signal),
            ) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    });
    let status = child.wait();
    handle.close();
    let _ = forwarder.join();
    match status {
        Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
            (None, None) => 1,
        },
        Err(e) => {
            eprintln!("lockyard: waiting for the command failed: {e}");
            71
        }
    }
}

pub(crate) fn pidfile_claim(
    path: &std::path::Path,
    argv: &[OsString],
    close: bool,
    wait: Option<std::time::Duration>,
) -> Outcome {
    let pidfile = Pidfile::new(path);
    let claimed = match wait {
        Some(wait) => pidfile.claim_wait(std::process::id(), &Wait::timeout(wait)),
        None => pidfile.claim(),
    };
    let guard = claimed?;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    if !close {
        inherit(&mut command, vec![guard.as_fd().as_raw_fd()]);
    }
    let code = spawn_and_wait(command, |pid| {
        if let Err(e) = guard.set_pid(pid) {
            eprintln!("lockyard: {}", crate::escape(&e.to_string()));
        }
    });
    if !close {
        // The command's leftovers keep the claim they inherited.
        drop(guard.into_fd());
    }
    Ok(code)
}
