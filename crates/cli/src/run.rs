//! `lockyard run` and `lockyard pidfile claim`: run a command while holding
//! a lock, forwarding signals, passing its exit status through.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use lockyard_cli::cli::RunArgs;

use lockyard::flock::{DirTrust, LockError, LockFile, LockGuard, LockKind, LockOptions, Pidfile, Wait};
use lockyard_cli::cli::RunKind;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::EX_USAGE;
use crate::exit::{Exit, Outcome};

/// `sysexits.h` code flock(1) uses when the lock file cannot be opened.
const EX_NOINPUT: u8 = 66;

pub(crate) fn run(args: &RunArgs) -> Exit {
    let argv: Vec<OsString> = match (&args.shell_command, args.command.as_slice()) {
        (Some(script), []) => vec!["sh".into(), "-c".into(), script.into()],
        (Some(_), _) => return usage("-c takes the whole command; do not give COMMAND as well"),
        (None, []) => return usage("a COMMAND to run under the lock is required (or -c 'COMMAND')"),
        (None, rest) => rest.to_vec(),
    };
    let guard = match run_lock(args) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    if !args.close {
        inherit(&mut command, vec![guard.as_raw_fd()]);
    }
    let code = spawn_and_wait(command, |_| {});
    if args.close {
        drop(guard);
    } else {
        // Like flock(1): close our descriptor without unlocking, so a
        // process the command left running keeps the lock it inherited.
        drop(guard.into_fd());
    }
    code
}

fn usage(message: &str) -> Exit {
    eprintln!("lockyard run: {message}");
    eprintln!("hint: lockyard run [OPTIONS] PATH -- COMMAND [ARGS...]; see lockyard run --help");
    Exit::status(EX_USAGE)
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
    spawn_with_and_wait(command, Command::spawn, started)
}

/// As [`spawn_and_wait`], spawning with `spawn` (to pin the child to
/// reserved CPUs, say).
pub(crate) fn spawn_with_and_wait(
    mut command: Command,
    spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    started: impl FnOnce(u32),
) -> Exit {
    Exit::status(wait_status(&mut command, spawn, started))
}

fn wait_status(
    command: &mut Command,
    spawn: impl FnOnce(&mut Command) -> std::io::Result<std::process::Child>,
    started: impl FnOnce(u32),
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
        Err(e) => {
            let program = command.get_program().to_string_lossy().into_owned();
            eprintln!("lockyard: cannot run {}: {e}", crate::escape(&program));
            return if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
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

/// Lock options for `run`. The operator names the lock file, as with
/// flock(1), so its directory may be anyone's ([`DirTrust::any_owner`]);
/// the symlink and file-type rules still hold.
fn run_options(args: &RunArgs) -> LockOptions {
    let options = LockOptions::new().trust(DirTrust::any_owner()).kind(match args.kind {
        RunKind::Flock => LockKind::Flock,
        RunKind::Ofd => LockKind::Ofd,
    });
    if args.shared { options.shared() } else { options.exclusive() }
}

/// How long `run` waits: `None` for not at all.
fn run_wait(args: &RunArgs) -> Option<Wait> {
    match args.timeout {
        _ if args.nonblock => None,
        Some(wait) if wait.is_zero() => None,
        Some(wait) => Some(Wait::timeout(wait)),
        None => Some(Wait::default()),
    }
}

/// Open and lock for `run`, mapping failures to flock(1)'s exit codes.
fn run_lock(args: &RunArgs) -> Result<LockGuard, Exit> {
    let fail = |err: &LockError| {
        if err.is_busy() {
            if args.verbose {
                eprintln!("lockyard: {}", crate::escape(&err.to_string()));
            }
            Exit::status(args.conflict_exit_code)
        } else {
            eprintln!("lockyard: {}", crate::escape(&err.to_string()));
            Exit::status(EX_NOINPUT)
        }
    };
    let file = LockFile::with_options(&args.path, run_options(args)).map_err(|e| fail(&e))?;
    let result = match run_wait(args) {
        None => file.try_lock_or_holders(),
        Some(wait) => file.lock_with(&wait),
    };
    result.map_err(|e| fail(&e))
}
