//! Running a command while holding a lock, for every command that does
//! (`run`, `pidfile claim`, `reserve`, `cache ensure`): the lock
//! descriptors it inherits, signals forwarded, its status passed
//! through; and `pidfile claim` itself.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::process::Command;

use lockyard::flock::{Pidfile, Wait};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

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

/// Let the command lockyard is about to start inherit the lock
/// descriptors `fds`, as flock(1) does without `-o`: a lock is per open
/// file description, so the command and whatever it leaves running hold it
/// until the last of them exits, even if lockyard itself is killed first.
/// The caller must then close its own copies without unlocking
/// (`into_fd`), since an unlock through any copy releases the lock for all
/// of them.
///
/// Close-on-exec is cleared here, in lockyard, rather than in the child
/// between fork and exec: lockyard execs nothing else, so nothing else can
/// inherit them, and without a pre-exec hook std starts the command with
/// `posix_spawn` (a `vfork`) instead of a `fork` that copies lockyard's
/// page tables.
pub(crate) fn inherit<'a>(fds: impl IntoIterator<Item = std::os::fd::BorrowedFd<'a>>) -> std::io::Result<()> {
    for fd in fds {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    Ok(())
}

/// Retry the blocking lock call `call` until it succeeds or `timeout` has
/// passed, a timer signal interrupting it, as flock(1) times its waits:
/// the wait stays in the kernel's queue (woken at once by an unlock), and
/// the call's own result says whether the lock was taken, so a lock
/// granted as the time ran out is never left behind on a descriptor
/// lockyard gave up on. `Ok(false)`: the time ran out.
///
/// SIGALRM is caught (by a handler that does nothing, installed without
/// `SA_RESTART` so the call returns `EINTR`) for the duration of the wait
/// and restored after. The timer fires at the deadline and every 10 ms
/// after it, so a signal that lands just before the call blocks is not
/// the last. Only for a thread with no other use of SIGALRM (the
/// command-line program, before it starts the command).
#[allow(unsafe_code)]
pub(crate) fn with_alarm(
    timeout: std::time::Duration,
    mut call: impl FnMut() -> Result<(), rustix::io::Errno>,
) -> Result<bool, rustix::io::Errno> {
    use rustix::io::Errno;
    extern "C" fn interrupt(_: libc::c_int) {}
    fn timeval(d: std::time::Duration) -> libc::timeval {
        libc::timeval {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(d.subsec_micros()),
        }
    }
    let last = || Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
    let deadline = std::time::Instant::now() + timeout;
    // SAFETY: `sigaction` is a plain C struct for which all zeroes is a
    // valid value (no handler, no flags, an empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: as above.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live `sigaction` values; the handler
    // does nothing, so it is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGALRM, &action, &mut previous) } != 0 {
        return Err(last());
    }
    let arm = |value: std::time::Duration, interval: std::time::Duration| {
        let timer = libc::itimerval { it_value: timeval(value), it_interval: timeval(interval) };
        // SAFETY: `timer` is a live value; the old value is not asked for.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) }
    };
    // A zero it_value would disarm the timer: at least a microsecond.
    let tick = std::time::Duration::from_millis(10);
    let armed = arm(timeout.max(std::time::Duration::from_micros(1)), tick);
    let result = if armed != 0 {
        Err(last())
    } else {
        loop {
            match call() {
                Ok(()) => break Ok(true),
                Err(Errno::INTR) if std::time::Instant::now() >= deadline => break Ok(false),
                Err(Errno::INTR) => {}
                Err(e) => break Err(e),
            }
        }
    };
    arm(std::time::Duration::ZERO, std::time::Duration::ZERO);
    // SAFETY: restores the disposition saved above.
    unsafe { libc::sigaction(libc::SIGALRM, &previous, std::ptr::null_mut()) };
    result
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
    let forward = match Forward::new() {
        Ok(forward) => forward,
        Err(e) => {
            eprintln!("lockyard: cannot set up signal forwarding: {e}");
            return 71;
        }
    };
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => return cannot_run(command.get_program(), &e),
    };
    started(child.id());
    let status = forward.until_exit(&mut child);
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

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT, caught and passed on to the
/// command. The handlers set a flag per signal and write a byte to a
/// socket; the main thread waits in `poll` on that socket and on a pidfd
/// of the command, so no thread is started for the forwarding (a thread
/// was a sixth of an uncontended `lockyard run`).
struct Forward {
    wake: std::os::unix::net::UnixStream,
    caught: Vec<(i32, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl Forward {
    const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

    fn new() -> std::io::Result<Self> {
        let (wake, waker) = std::os::unix::net::UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let mut forward = Forward { wake, caught: Vec::new(), ids: Vec::new() };
        for signal in Self::SIGNALS {
            let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            forward.ids.push(signal_hook::flag::register(signal, std::sync::Arc::clone(&flag))?);
            forward.ids.push(signal_hook::low_level::pipe::register(signal, waker.try_clone()?)?);
            forward.caught.push((signal, flag));
        }
        Ok(forward)
    }

    /// Forward signals to `child` until it exits; its status.
    fn until_exit(self, child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
        use rustix::event::{PollFd, PollFlags};
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let Some(pidfd) =
            pid.and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        else {
            // A kernel before 5.3: look at the child between signals.
            return self.until_exit_polling(child);
        };
        loop {
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN), PollFd::new(&self.wake, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            self.pass_on(child);
            if !fds[0].revents().is_empty() {
                return child.wait();
            }
        }
    }

    fn until_exit_polling(
        self,
        child: &mut std::process::Child,
    ) -> std::io::Result<std::process::ExitStatus> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let tick = Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            let mut fds = [PollFd::new(&self.wake, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&tick)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            self.pass_on(child);
        }
    }

    /// Send `child` every signal caught since the last call.
    fn pass_on(&self, child: &std::process::Child) {
        use std::io::Read;
        let mut drain = [0u8; 64];
        while (&self.wake).read(&mut drain).is_ok_and(|n| n > 0) {}
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        for (signal, flag) in &self.caught {
            if flag.swap(false, std::sync::atomic::Ordering::SeqCst)
                && let (Some(pid), Some(signal)) = (pid, rustix::process::Signal::from_named_raw(*signal))
            {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
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
        anyhow::Context::context(inherit([guard.as_fd()]), "cannot hand the pidfile's lock to the command")?;
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
