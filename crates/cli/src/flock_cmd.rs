//! `lockyard run`: util-linux flock(1), with holders named on conflict.
//! The command line is [`lockyard_cli::flock_args`]; this is what it
//! does: open (or borrow) the lock target, lock it, run the command, and
//! exit as flock(1) exits.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lockyard::flock::{
    ByteRange, FsPolicy, LockError, LockKind, LockMode, LockOptions, Wait, lock_descriptor,
    lock_descriptor_queued, unlock_descriptor,
};
use lockyard_cli::flock_args::{self, Action, FlockArgs, Op, Program, Target, UsageError};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::exit::Exit;
use crate::run::{inherit, spawn_with_and_wait};

/// `sysexits.h` codes, as flock(1) uses them.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOINPUT: u8 = 66;
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_CANTCREAT: u8 = 73;

/// Run `lockyard run ARGS` (or `flock ARGS`, as `prog`).
pub(crate) fn run(args: &[OsString], prog: &str) -> Exit {
    let args = match flock_args::parse(args) {
        Ok(Action::Run(args)) => args,
        Ok(Action::Help) => {
            println!("{}", flock_args::HELP.replace("lockyard run", &invocation(prog)));
            return Exit::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("{prog} from lockyard {}", env!("CARGO_PKG_VERSION"));
            return Exit::SUCCESS;
        }
        Err(UsageError(message)) => {
            eprintln!("{prog}: {message}");
            eprintln!("Try '{} --help' for more information.", invocation(prog));
            return Exit::status(EX_USAGE);
        }
    };
    match locked_run(&args, prog) {
        Ok(exit) | Err(exit) => exit,
    }
}

/// `lockyard run`, or `flock` when lockyard runs under that name.
fn invocation(prog: &str) -> String {
    if prog == "flock" { prog.to_owned() } else { format!("{prog} run") }
}

fn locked_run(args: &FlockArgs, prog: &str) -> Result<Exit, Exit> {
    // The descriptor: one we open (closed when we exit, the command's
    // copy keeping the lock), or one inherited, locked in place.
    let opened: Option<OwnedFd>;
    let fd: BorrowedFd<'_> = match &args.target {
        Target::Path(path) => {
            let write = args.fcntl && args.op == Op::Exclusive;
            opened = Some(open_target(path, write).map_err(|e| open_failed(prog, path, e))?);
            opened.as_ref().map(AsFd::as_fd).expect("just opened")
        }
        Target::Fd(number) => {
            opened = None;
            match crate::run::inherited_fd(*number) {
                Some(fd) => fd,
                None => {
                    eprintln!("{prog}: {number}: {}", errno_message(Errno::BADF));
                    return Err(Exit::status(EX_DATAERR));
                }
            }
        }
    };
    let options = lock_options(args);
    let started = Instant::now();
    match args.op {
        Op::Unlock => {
            let kind = if args.fcntl { LockKind::Ofd } else { LockKind::Flock };
            unlock_descriptor(fd, kind, ByteRange::new(args.start, args.length))
                .map_err(|e| lock_failed(prog, args, &e))?;
        }
        Op::Shared | Op::Exclusive => {
            let locked = match (args.timeout, &opened) {
                _ if args.nonblock => lock_descriptor(fd, &options, &Wait::timeout(Duration::ZERO)),
                // No limit: block in the kernel's queue, as flock(1) does.
                (None, _) => lock_descriptor(fd, &options, &Wait::default()),
                // Ours alone: wait in the kernel's queue on a thread; a
                // lock it takes after we gave up goes when we exit.
                // A duplicate goes to the waiting thread, against the
                // function's rule of one descriptor per description: safe
                // here because lockyard exits on a timeout, closing both.
                (Some(timeout), Some(ours)) => match ours.try_clone() {
                    Ok(copy) => lock_descriptor_queued(copy, &options, timeout).map(|(_, kind)| kind),
                    Err(e) => Err(LockError::Io { path: std::path::PathBuf::new(), op: "dup", source: e }),
                },
                // The shell's descriptor: a lock taken after we gave up
                // would stay with it, so the wait must end in this thread:
                // a flock interrupted by a timer, as flock(1) waits.
                (Some(timeout), None) if !args.fcntl && !timeout.is_zero() => {
                    lock_interrupted(fd, args.op, timeout)
                }
                // Byte ranges (--fcntl): the library's wait, which can stop.
                (Some(timeout), None) => lock_descriptor(fd, &options, &Wait::timeout(timeout)),
            };
            locked.map_err(|e| lock_failed(prog, args, &e))?;
        }
    }
    if args.verbose {
        let took = started.elapsed();
        println!("{prog}: getting lock took {}.{:06} seconds", took.as_secs(), took.subsec_micros());
    }
    let Some(program) = &args.program else {
        return Ok(Exit::SUCCESS);
    };
    let argv = match program {
        Program::Argv(argv) => argv.clone(),
        Program::Shell(command) => vec![shell(), "-c".into(), command.clone()],
    };
    if args.verbose {
        println!("{prog}: executing {}", argv[0].to_string_lossy());
    }
    let _ = std::io::stdout().flush();
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    match (&opened, args.close) {
        // Ours is close-on-exec: hand it over unless -o.
        (Some(fd), false) => {
            if let Err(e) = inherit([fd.as_fd()]) {
                eprintln!("{prog}: {}: {}", fd.as_raw_fd(), io_message(&e));
                return Err(Exit::status(EX_OSERR));
            }
        }
        (Some(_), true) => {}
        (None, close) => {
            // Inherited from the shell: the command gets it unless -o.
            if close && let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC) {
                eprintln!("{prog}: {}: {}", fd.as_raw_fd(), errno_message(e));
                return Err(Exit::status(EX_OSERR));
            }
        }
    }
    let cannot_run = |program: &OsStr, e: &std::io::Error| {
        eprintln!(
            "{prog}: failed to execute {}: {}",
            crate::escape(&program.to_string_lossy()),
            io_message(e)
        );
        if e.raw_os_error() == Some(Errno::NOMEM.raw_os_error()) { EX_OSERR } else { EX_UNAVAILABLE }
    };
    if args.no_fork {
        use std::os::unix::process::CommandExt;
        let e = command.exec();
        return Err(Exit::status(cannot_run(&argv[0], &e)));
    }
    // Our copy closes when we exit, without unlocking: whatever the
    // command left running keeps the lock it inherited, as with flock(1).
    Ok(spawn_with_and_wait(command, Command::spawn, |_| {}, cannot_run))
}

/// flock(2) `fd` in mode `op`, waiting in the kernel's queue for at most
/// `timeout` ([`crate::run::with_alarm`]).
fn lock_interrupted(fd: BorrowedFd<'_>, op: Op, timeout: Duration) -> Result<LockKind, LockError> {
    let started = Instant::now();
    let path = || std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
    let operation = if op == Op::Shared {
        rustix::fs::FlockOperation::LockShared
    } else {
        rustix::fs::FlockOperation::LockExclusive
    };
    match crate::run::with_alarm(timeout, || rustix::fs::flock(fd, operation)) {
        Ok(true) => Ok(LockKind::Flock),
        Ok(false) => {
            let path = path();
            let holders = lockyard::flock::holders_of(&path).unwrap_or_default();
            Err(LockError::Timeout { path, waited: started.elapsed(), holders })
        }
        Err(e) => Err(LockError::Io { path: path(), op: "flock", source: e.into() }),
    }
}

/// The kind, mode and range to lock with. flock(1) locks on any
/// filesystem, so no filesystem is refused here.
fn lock_options(args: &FlockArgs) -> LockOptions {
    let options = LockOptions::new()
        .kind(if args.fcntl { LockKind::Ofd } else { LockKind::Flock })
        .mode(if args.op == Op::Shared { LockMode::Shared } else { LockMode::Exclusive })
        .fs_policy(FsPolicy::allow_all());
    if args.fcntl { options.range(ByteRange::new(args.start, args.length)) } else { options }
}

/// The shell for `-c`: `$SHELL` as flock(1) takes it, else `/bin/sh`.
fn shell() -> OsString {
    std::env::var_os("SHELL").filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into())
}

/// Report a failed lock call as flock(1) does and choose the exit code:
/// the conflict code for a busy lock or a wait that ran out (with
/// `--verbose`, what flock(1) says and then who holds it), else 65 (71
/// for `ENOLCK`/`ENOMEM`).
fn lock_failed(prog: &str, args: &FlockArgs, err: &LockError) -> Exit {
    match err {
        LockError::Contended { holders, .. } | LockError::Timeout { holders, .. } => {
            if args.verbose {
                let timed_out = matches!(err, LockError::Timeout { .. });
                eprintln!(
                    "{prog}: {}",
                    if timed_out { "timeout while waiting to get lock" } else { "failed to get lock" }
                );
                if !holders.is_empty() {
                    eprintln!("{prog}: held by {}", crate::escape(&holders.to_string()));
                }
            }
            Exit::status(args.conflict_exit_code)
        }
        LockError::Io { source, .. } => {
            let name = match &args.target {
                Target::Path(path) => crate::escape(&path.to_string_lossy()).into_owned(),
                Target::Fd(number) => number.to_string(),
            };
            eprintln!("{prog}: {name}: {}", io_message(source));
            let oserr =
                [Errno::NOLCK, Errno::NOMEM].iter().any(|e| source.raw_os_error() == Some(e.raw_os_error()));
            Exit::status(if oserr { EX_OSERR } else { EX_DATAERR })
        }
        other => {
            eprintln!("{prog}: {}", crate::escape(&other.to_string()));
            Exit::status(EX_DATAERR)
        }
    }
}

/// An I/O error as strerror words it, without Rust's ` (os error N)`.
fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// An errno as strerror words it.
fn errno_message(e: Errno) -> String {
    io_message(&std::io::Error::from(e))
}

/// Report a lock file that cannot be opened, with flock(1)'s exit codes.
fn open_failed(prog: &str, path: &Path, e: OpenError) -> Exit {
    let shown = crate::escape(&path.to_string_lossy()).into_owned();
    match e {
        OpenError::ForeignLink { owner } => {
            eprintln!(
                "{prog}: cannot open lock file {shown}: refusing to follow a symbolic link of uid {owner} in a \
                 sticky world-writable directory (the link protected_symlinks refuses)"
            );
            Exit::status(EX_NOINPUT)
        }
        OpenError::Os(errno) => {
            eprintln!("{prog}: cannot open lock file {shown}: {}", errno_message(errno));
            Exit::status(match errno {
                Errno::NOMEM | Errno::MFILE | Errno::NFILE => EX_OSERR,
                Errno::ROFS | Errno::NOSPC => EX_CANTCREAT,
                _ => EX_NOINPUT,
            })
        }
    }
}

/// Why a lock target could not be opened.
#[derive(Debug, Clone, Copy)]
enum OpenError {
    /// A symbolic link lockyard will not follow (see [`open_target`]).
    ForeignLink { owner: u32 },
    /// What the kernel said.
    Os(Errno),
}

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        OpenError::Os(e)
    }
}

/// Open a lock target as flock(1) does, minus what would let another
/// user steer it:
///
/// - read-only (flock(2) needs no write access; write-only for an
///   exclusive `--fcntl` lock, which needs it), so read-only files,
///   other users' lock files and `0555` scripts lock fine;
/// - an existing file or directory is opened without `O_CREAT`, which the
///   kernel's `protected_regular` rule would refuse for another user's
///   file in a sticky directory; a missing one is created `0666` less the
///   umask (`O_EXCL`, retried if someone else creates it first);
/// - a symbolic link is followed unless it lies in a sticky
///   world-writable directory and belongs to neither us nor the
///   directory's owner (the link the kernel's `protected_symlinks`
///   refuses, refused here whatever that sysctl says);
/// - `O_NONBLOCK` while opening, so a FIFO or a serial line cannot hang
///   the open, cleared after.
fn open_target(path: &Path, write: bool) -> Result<OwnedFd, OpenError> {
    match open_at(rustix::fs::CWD, path, write) {
        // Deeper than PATH_MAX: a lock can be taken there one directory
        // at a time (lockyard's lock files can be), so take it so here.
        Err(OpenError::Os(Errno::NAMETOOLONG)) => {
            let (dir, name) = walk_to_parent(path)?;
            open_at(dir.as_fd(), Path::new(&name), write)
        }
        other => other,
    }
}

/// [`open_target`] of `path` relative to `dir`.
fn open_at(dir: BorrowedFd<'_>, path: &Path, write: bool) -> Result<OwnedFd, OpenError> {
    let access = if write { OFlags::WRONLY } else { OFlags::RDONLY };
    let flags = access | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let open = |flags: OFlags, mode: u32| rustix::fs::openat(dir, path, flags, Mode::from(mode));
    for _ in 0..8 {
        let opened = match open(flags | OFlags::NOFOLLOW, 0) {
            Err(Errno::LOOP) => {
                check_link(dir, path)?;
                match open(flags, 0) {
                    // A dangling link: create what it names, as flock(1) would.
                    Err(Errno::NOENT) => open(flags | OFlags::CREATE, 0o666),
                    other => other,
                }
            }
            // O_WRONLY on a directory: a directory locks read-only.
            Err(Errno::ISDIR) => open(flags.difference(access) | OFlags::RDONLY, 0),
            Err(Errno::NOENT) => {
                match open(flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW, 0o666) {
                    Err(Errno::EXIST) => continue,
                    other => other,
                }
            }
            other => other,
        };
        let fd = opened?;
        let status = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, status.difference(OFlags::NONBLOCK))?;
        return Ok(fd);
    }
    Err(OpenError::Os(Errno::AGAIN))
}

/// The parent directory of `path`, opened one component at a time
/// (`O_PATH`, symbolic links followed as path resolution follows them),
/// and the last component.
fn walk_to_parent(path: &Path) -> Result<(OwnedFd, OsString), OpenError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = rustix::fs::open(start, flags, Mode::empty())?;
    let mut parts: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            std::path::Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect();
    let name = parts.pop().ok_or(OpenError::Os(Errno::INVAL))?.to_owned();
    for part in parts {
        dir = rustix::fs::openat(&dir, part, flags, Mode::empty())?;
    }
    Ok((dir, name))
}

/// Refuse the symbolic link at `path` (relative to `dir`) if the kernel's
/// `protected_symlinks` rule would: it sits in a sticky world-writable
/// directory, and belongs to neither the caller nor the directory's owner.
fn check_link(dir: BorrowedFd<'_>, path: &Path) -> Result<(), OpenError> {
    use rustix::fs::AtFlags;
    let link = rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let holder = rustix::fs::statat(dir, parent, AtFlags::empty())?;
    let sticky_world_writable = holder.st_mode & 0o1002 == 0o1002;
    let me = rustix::process::geteuid().as_raw();
    if sticky_world_writable && link.st_uid != me && link.st_uid != holder.st_uid {
        return Err(OpenError::ForeignLink { owner: link.st_uid });
    }
    Ok(())
}
