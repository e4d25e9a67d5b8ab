//! `lockyard run`'s command line, parsed the way util-linux flock(1)
//! parses its own, so scripts written for one work with the other.
//!
//! flock(1) uses `getopt_long` in POSIX mode: options come first and the
//! first operand ends them (what follows is the command's, options and
//! all); short options cluster (`-nx`, `-w5`); long options take `=VALUE`
//! or the next word, and any unambiguous prefix names one (`--excl`,
//! `--time`, `--conf`); a later option overrides an earlier one (`-s -x`
//! is exclusive), and `-n` beside `-w` means not to wait. `-c`/`--command`
//! is not an option but a marker: `flock FILE -c 'CMD'`, or `flock --fd N
//! -c 'CMD'`. A bare number as the only operand is a descriptor to lock
//! in place (`flock -n 9`).
//!
//! The forms:
//!
//! ```text
//! lockyard run [OPTIONS] FILE|DIRECTORY COMMAND [ARGUMENT...]
//! lockyard run [OPTIONS] FILE|DIRECTORY -c COMMAND
//! lockyard run [OPTIONS] NUMBER
//! lockyard run [OPTIONS] --fd NUMBER -c COMMAND
//! lockyard run [OPTIONS] --fd NUMBER COMMAND [ARGUMENT...]
//! ```

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

/// The help `lockyard run --help` prints.
pub const HELP: &str = "\
Usage:
 lockyard run [options] <file>|<directory> <command> [<argument>...]
 lockyard run [options] <file>|<directory> -c <command>
 lockyard run [options] <file descriptor number>
 lockyard run [options] --fd <file descriptor number> -c <command>
 lockyard run [options] --fd <file descriptor number> <command> [<argument>...]

Run a command while holding a lock, or lock a descriptor the shell holds.
A drop-in for util-linux flock(1): same options, forms and exit codes.

Options:
 -s, --shared             get a shared lock
 -x, --exclusive          get an exclusive lock (default)
 -u, --unlock             remove a lock
 -n, --nb, --nonblocking  fail rather than wait
 -w, --timeout <secs>     wait for a limited amount of time (0: do not wait)
 -E, --conflict-exit-code <number>  exit code after conflict or timeout (default 1)
 -o, --close              close file descriptor before running command
 -c, --command <command>  run a single command string through $SHELL (else /bin/sh)
 -F, --no-fork            execute command without forking
     --wait <secs>        same as --timeout
     --fcntl              use fcntl(F_OFD_SETLK) rather than flock()
     --start <offset>     starting offset for lock (implies --fcntl)
     --length <number>    number of bytes to lock (implies --fcntl; 0: to the end)
     --fd <number>        use the file descriptor number to wrap the
                          lock around the command execution
     --verbose            say how long getting the lock took, what runs, and
                          on conflict who holds the lock
 -h, --help               display this help
 -V, --version            display version

A new lock file is created with mode 0666 less the umask, so others can lock
it too; an existing one needs only read access, and a directory works as a
lock. Symbolic links are followed, except a link in a sticky world-writable
directory (such as /tmp) owned by neither you nor the directory's owner: the
link the kernel's protected_symlinks rule refuses, refused here whatever the
sysctl says.

Unlike flock(1), lockyard forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the
command, so stopping lockyard stops what it runs (see docs/cli.md,
\"Differences from flock(1)\").

Exit status: the command's (128+N if killed by signal N); the conflict exit
code (-E) if the lock is busy or the wait times out; 64 for bad usage;
65 if the lock call fails; 66 if the lock file cannot be opened (73 on a
read-only or full filesystem); 69 if the command cannot be run; 71 when out
of memory or descriptors.";

/// Which lock operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `-s`.
    Shared,
    /// `-x` (the default).
    Exclusive,
    /// `-u`.
    Unlock,
}

/// What to lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file or directory, opened by lockyard.
    Path(PathBuf),
    /// A descriptor this process inherited, locked in place.
    Fd(i32),
}

/// What to run under the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A program and its arguments.
    Argv(Vec<OsString>),
    /// A command string for the shell (`-c`).
    Shell(OsString),
}

/// A parsed `lockyard run` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlockArgs {
    /// Lock, share or unlock.
    pub op: Op,
    /// Fail rather than wait (`-n`, or `-w 0`).
    pub nonblock: bool,
    /// Wait at most this long (`-w`); `None`: as long as it takes.
    pub timeout: Option<Duration>,
    /// The exit status for a busy lock or a wait that ran out.
    pub conflict_exit_code: u8,
    /// Do not hand the lock descriptor to the command (`-o`).
    pub close: bool,
    /// Replace lockyard by the command (`-F`).
    pub no_fork: bool,
    /// Report timing, the command and holders (`--verbose`).
    pub verbose: bool,
    /// Open-file-description `fcntl` locks rather than `flock`.
    pub fcntl: bool,
    /// First byte of an `fcntl` lock.
    pub start: u64,
    /// Bytes of an `fcntl` lock; 0 to the end of the file.
    pub length: u64,
    /// What to lock.
    pub target: Target,
    /// What to run, if anything.
    pub program: Option<Program>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
    /// Lock (and run).
    Run(FlockArgs),
}

/// A usage error, worded as flock(1) words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Shared,
    Exclusive,
    Unlock,
    Nonblock,
    Timeout,
    ConflictExitCode,
    Close,
    NoFork,
    Verbose,
    Fcntl,
    Start,
    Length,
    Fd,
    Kind,
    Help,
    Version,
}

impl Opt {
    fn takes_value(self) -> bool {
        matches!(self, Opt::Timeout | Opt::ConflictExitCode | Opt::Start | Opt::Length | Opt::Fd | Opt::Kind)
    }
}

/// flock(1)'s long options, and lockyard's earlier spellings (`nonblock`,
/// `read`, `write`, `kind`).
const LONG: &[(&str, Opt)] = &[
    ("shared", Opt::Shared),
    ("read", Opt::Shared),
    ("exclusive", Opt::Exclusive),
    ("write", Opt::Exclusive),
    ("unlock", Opt::Unlock),
    ("nonblocking", Opt::Nonblock),
    ("nonblock", Opt::Nonblock),
    ("nb", Opt::Nonblock),
    ("timeout", Opt::Timeout),
    ("wait", Opt::Timeout),
    ("conflict-exit-code", Opt::ConflictExitCode),
    ("close", Opt::Close),
    ("no-fork", Opt::NoFork),
    ("verbose", Opt::Verbose),
    ("fcntl", Opt::Fcntl),
    ("start", Opt::Start),
    ("length", Opt::Length),
    ("fd", Opt::Fd),
    ("kind", Opt::Kind),
    ("help", Opt::Help),
    ("version", Opt::Version),
];

fn short(c: char) -> Option<Opt> {
    Some(match c {
        's' => Opt::Shared,
        'e' | 'x' => Opt::Exclusive,
        'u' => Opt::Unlock,
        'n' => Opt::Nonblock,
        'o' => Opt::Close,
        'F' => Opt::NoFork,
        'w' => Opt::Timeout,
        'E' => Opt::ConflictExitCode,
        'h' | '?' => Opt::Help,
        'V' => Opt::Version,
        _ => return None,
    })
}

fn is_command_marker(arg: &OsStr) -> bool {
    arg == "-c" || arg == "--command"
}

/// A long option by name or unambiguous prefix, as `getopt_long` finds
/// it: an exact match wins; prefixes naming one option (under any of its
/// spellings) select it; others are ambiguous.
fn long(name: &str) -> Result<Opt, UsageError> {
    if let Some(&(_, opt)) = LONG.iter().find(|(n, _)| *n == name) {
        return Ok(opt);
    }
    let matches: Vec<&(&str, Opt)> = LONG.iter().filter(|(n, _)| n.starts_with(name)).collect();
    match matches.as_slice() {
        [] => Err(UsageError(format!("unrecognized option '--{name}'"))),
        [(_, opt), rest @ ..] if rest.iter().all(|(_, o)| o == opt) => Ok(*opt),
        _ => {
            let names: Vec<String> = matches.iter().map(|(n, _)| format!("'--{n}'")).collect();
            Err(UsageError(format!("option '--{name}' is ambiguous; possibilities: {}", names.join(" "))))
        }
    }
}

/// Parse the arguments after `run` (or after `flock` when lockyard runs
/// under that name).
///
/// # Errors
/// A [`UsageError`] for what flock(1) refuses: unknown or ambiguous
/// options, missing or malformed values, missing operands, `-c` with
/// more than one command word, `--no-fork` with `--close`.
pub fn parse(args: &[OsString]) -> Result<Action, UsageError> {
    let mut parsed = Settings::default();
    let mut index = 0;
    let mut command_marker = false;
    while index < args.len() {
        let arg = &args[index];
        let bytes = arg.as_encoded_bytes();
        if arg == "--" {
            index += 1;
            break;
        }
        if is_command_marker(arg) {
            // `-c` before the operands: the next word is the command, and
            // it must be the last (the `--fd N -c CMD` form).
            command_marker = true;
            index += 1;
            break;
        }
        if let Some(rest) = bytes.strip_prefix(b"--") {
            let text = std::str::from_utf8(rest)
                .map_err(|_| UsageError(format!("unrecognized option '{}'", arg.to_string_lossy())))?;
            let (name, inline) = match text.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (text, None),
            };
            let opt = long(name)?;
            let value =
                if opt.takes_value() {
                    match inline {
                        Some(value) => Some(OsString::from(value)),
                        None => {
                            index += 1;
                            Some(args.get(index).cloned().ok_or_else(|| {
                                UsageError(format!("option '--{name}' requires an argument"))
                            })?)
                        }
                    }
                } else if inline.is_some() {
                    return Err(UsageError(format!("option '--{name}' doesn't allow an argument")));
                } else {
                    None
                };
            if let Some(action) = parsed.apply(opt, value.as_deref())? {
                return Ok(action);
            }
            index += 1;
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            let cluster = &bytes[1..];
            let mut at = 0;
            while at < cluster.len() {
                let c = char::from(cluster[at]);
                let Some(opt) = short(c) else {
                    return Err(UsageError(format!("invalid option -- '{}'", c.escape_default())));
                };
                at += 1;
                let value = if opt.takes_value() {
                    let value = if at < cluster.len() {
                        OsString::from_vec(cluster[at..].to_vec())
                    } else {
                        index += 1;
                        args.get(index)
                            .cloned()
                            .ok_or_else(|| UsageError(format!("option requires an argument -- '{c}'")))?
                    };
                    at = cluster.len();
                    Some(value)
                } else {
                    None
                };
                if let Some(action) = parsed.apply(opt, value.as_deref())? {
                    return Ok(action);
                }
            }
            index += 1;
            continue;
        }
        break;
    }
    let operands = &args[index..];
    parsed.finish(operands, command_marker)
}

#[derive(Debug)]
struct Settings {
    op: Op,
    nonblock: bool,
    timeout: Option<Duration>,
    conflict_exit_code: u8,
    close: bool,
    no_fork: bool,
    verbose: bool,
    fcntl: bool,
    start: u64,
    length: u64,
    fd: Option<i32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            op: Op::Exclusive,
            nonblock: false,
            timeout: None,
            conflict_exit_code: 1,
            close: false,
            no_fork: false,
            verbose: false,
            fcntl: false,
            start: 0,
            length: 0,
            fd: None,
        }
    }
}

fn number<T: std::str::FromStr>(value: &OsStr, what: &str) -> Result<T, UsageError> {
    value
        .to_str()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| UsageError(format!("{what}: '{}'", value.to_string_lossy())))
}

impl Settings {
    /// Apply one option; `Some` for one that ends parsing (help, version).
    fn apply(&mut self, opt: Opt, value: Option<&OsStr>) -> Result<Option<Action>, UsageError> {
        let value = || value.unwrap_or_default();
        match opt {
            Opt::Shared => self.op = Op::Shared,
            Opt::Exclusive => self.op = Op::Exclusive,
            Opt::Unlock => self.op = Op::Unlock,
            Opt::Nonblock => self.nonblock = true,
            Opt::Timeout => {
                let text = value().to_string_lossy().into_owned();
                let wait = crate::units::parse_wait(&text)
                    .map_err(|_| UsageError(format!("invalid timeout: '{text}'")))?;
                self.timeout = Some(wait);
            }
            Opt::ConflictExitCode => {
                self.conflict_exit_code = number(value(), "invalid exit code (allowed values: 0-255)")?;
            }
            Opt::Close => self.close = true,
            Opt::NoFork => self.no_fork = true,
            Opt::Verbose => self.verbose = true,
            Opt::Fcntl => self.fcntl = true,
            Opt::Start => {
                let text = value().to_string_lossy().into_owned();
                self.start = crate::units::parse_size(&text)
                    .map_err(|_| UsageError(format!("invalid as start offset: '{text}'")))?;
                self.fcntl = true;
            }
            Opt::Length => {
                let text = value().to_string_lossy().into_owned();
                self.length = crate::units::parse_size(&text)
                    .map_err(|_| UsageError(format!("invalid as length of lock range: '{text}'")))?;
                self.fcntl = true;
            }
            Opt::Fd => self.fd = Some(number(value(), "invalid file descriptor")?),
            Opt::Kind => match value().to_str() {
                Some("ofd" | "fcntl") => self.fcntl = true,
                Some("flock") => self.fcntl = false,
                _ => {
                    return Err(UsageError(format!(
                        "invalid lock kind '{}' (allowed: flock, ofd)",
                        value().to_string_lossy()
                    )));
                }
            },
            Opt::Help => return Ok(Some(Action::Help)),
            Opt::Version => return Ok(Some(Action::Version)),
        }
        Ok(None)
    }

    fn finish(self, operands: &[OsString], command_marker: bool) -> Result<Action, UsageError> {
        if self.no_fork && self.close {
            return Err(UsageError("the --no-fork and --close options are incompatible".to_owned()));
        }
        let (target, program) = if command_marker {
            // `--fd N -c CMD`, or `-c CMD` with no other operand.
            let [command] = operands else {
                return Err(UsageError("-c requires exactly one command argument".to_owned()));
            };
            let Some(fd) = self.fd else {
                return Err(UsageError("missing file descriptor, file or directory".to_owned()));
            };
            (Target::Fd(fd), Some(Program::Shell(command.clone())))
        } else if let Some(fd) = self.fd {
            match operands {
                [] => return Err(UsageError("missing command".to_owned())),
                [marker, rest @ ..] if is_command_marker(marker) => match rest {
                    [command] => (Target::Fd(fd), Some(Program::Shell(command.clone()))),
                    _ => {
                        return Err(UsageError(format!(
                            "{} requires exactly one command argument",
                            marker.to_string_lossy()
                        )));
                    }
                },
                argv => (Target::Fd(fd), Some(Program::Argv(argv.to_vec()))),
            }
        } else {
            match operands {
                [] => return Err(UsageError("missing file descriptor, file or directory".to_owned())),
                [fd] => (Target::Fd(number(fd, "invalid file descriptor")?), None),
                [path, marker, rest @ ..] if is_command_marker(marker) => match rest {
                    [command] => (Target::Path(PathBuf::from(path)), Some(Program::Shell(command.clone()))),
                    _ => {
                        return Err(UsageError(format!(
                            "{} requires exactly one command argument",
                            marker.to_string_lossy()
                        )));
                    }
                },
                // `FILE -- COMMAND`: lockyard's earlier form. flock(1) would
                // try to run `--`, so no script that works with it has one.
                [path, dashes, argv @ ..] if dashes == "--" && !argv.is_empty() => {
                    (Target::Path(PathBuf::from(path)), Some(Program::Argv(argv.to_vec())))
                }
                [path, argv @ ..] => (Target::Path(PathBuf::from(path)), Some(Program::Argv(argv.to_vec()))),
            }
        };
        if let Target::Fd(fd) = target
            && fd < 0
        {
            return Err(UsageError(format!("invalid file descriptor: '{fd}'")));
        }
        // `-w 0` is `-n` (an itimer of zero would be no timer at all).
        let nonblock = self.nonblock || self.timeout.is_some_and(|t| t.is_zero());
        Ok(Action::Run(FlockArgs {
            op: self.op,
            nonblock,
            timeout: self.timeout.filter(|t| !t.is_zero()),
            conflict_exit_code: self.conflict_exit_code,
            close: self.close,
            no_fork: self.no_fork,
            verbose: self.verbose,
            fcntl: self.fcntl,
            start: self.start,
            length: self.length,
            target,
            program,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> FlockArgs {
        match parse(&args.iter().map(OsString::from).collect::<Vec<_>>()) {
            Ok(Action::Run(args)) => args,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match parse(&args.iter().map(OsString::from).collect::<Vec<_>>()) {
            Err(UsageError(message)) => message,
            other => panic!("{args:?} should be refused: {other:?}"),
        }
    }

    fn argv(words: &[&str]) -> Option<Program> {
        Some(Program::Argv(words.iter().map(OsString::from).collect()))
    }

    #[test]
    fn the_forms_of_flock1() {
        let a = run(&["/tmp/l", "echo", "-n", "hi"]);
        assert_eq!((a.target, a.program), (Target::Path("/tmp/l".into()), argv(&["echo", "-n", "hi"])));
        let a = run(&["-x", "/tmp/l", "-c", "echo hi"]);
        assert_eq!(a.program, Some(Program::Shell("echo hi".into())));
        let a = run(&["-n", "9"]);
        assert_eq!((a.target, a.program, a.nonblock), (Target::Fd(9), None, true));
        let a = run(&["--fd", "10", "--command", "true"]);
        assert_eq!((a.target, a.program), (Target::Fd(10), Some(Program::Shell("true".into()))));
        let a = run(&["--fd", "10", "true", "x"]);
        assert_eq!((a.target, a.program), (Target::Fd(10), argv(&["true", "x"])));
        let a = run(&["--exclusive", "--close", "--fd", "10", "--command", "cmd"]);
        assert!(a.close);
        let a = run(&["--", "/tmp/l", "true"]);
        assert_eq!(a.target, Target::Path("/tmp/l".into()));
        // A directory, `.`, is a target like any path.
        let a = run(&["--shared", "--fcntl", "--start", "1", "--length", "2", "--no-fork", ".", "-c", "cat"]);
        assert_eq!((a.op, a.fcntl, a.start, a.length, a.no_fork), (Op::Shared, true, 1, 2, true));
    }

    #[test]
    fn clusters_values_abbreviations_and_overrides() {
        let a = run(&["-nw5", "-E", "123", "f", "true"]);
        assert_eq!((a.nonblock, a.timeout, a.conflict_exit_code), (true, Some(Duration::from_secs(5)), 123));
        let a = run(&["-w", "0.5", "-E123", "f", "true"]);
        assert_eq!((a.timeout, a.conflict_exit_code), (Some(Duration::from_millis(500)), 123));
        let a = run(&["--excl", "--time=2", "--conf", "7", "--nonblock", "f", "true"]);
        assert_eq!(
            (a.op, a.timeout, a.conflict_exit_code, a.nonblock),
            (Op::Exclusive, Some(Duration::from_secs(2)), 7, true)
        );
        assert_eq!(run(&["-s", "-x", "f", "true"]).op, Op::Exclusive, "the last one wins");
        assert_eq!(run(&["-x", "-s", "f", "true"]).op, Op::Shared);
        assert_eq!(run(&["--nb", "-e", "f", "true"]).op, Op::Exclusive);
        assert_eq!(run(&["-u", "9"]).op, Op::Unlock);
        let zero = run(&["--wait", "0", "f", "true"]);
        assert_eq!((zero.nonblock, zero.timeout), (true, None), "-w 0 is -n");
        assert!(run(&["--verbose", "--nonblocking", "f", "true"]).verbose);
        assert!(run(&["--kind", "ofd", "f", "true"]).fcntl, "lockyard's earlier spelling");
        // The first operand ends the options: the command's own flags are its own.
        assert_eq!(run(&["f", "ls", "-n"]).program, argv(&["ls", "-n"]));
        // lockyard's earlier `FILE -- COMMAND` still works.
        assert_eq!(run(&["f", "--", "ls", "--"]).program, argv(&["ls", "--"]));
    }

    #[test]
    fn what_flock1_refuses_is_refused() {
        assert!(usage(&["--bogus", "f", "true"]).contains("unrecognized option '--bogus'"));
        assert!(usage(&["-q", "f", "true"]).contains("invalid option -- 'q'"));
        assert!(usage(&["--no", "f", "true"]).contains("ambiguous"));
        assert!(usage(&["-w"]).contains("requires an argument"));
        assert!(usage(&["-w", "soon", "f", "true"]).contains("invalid timeout"));
        assert!(usage(&["-E", "256", "f", "true"]).contains("invalid exit code"));
        assert!(usage(&["-F", "-o", "f", "true"]).contains("incompatible"));
        assert!(usage(&[]).contains("missing file descriptor"));
        assert!(usage(&["notanumber"]).contains("invalid file descriptor"));
        assert!(usage(&["f", "-c", "a", "b"]).contains("exactly one command"));
        assert!(usage(&["--fd", "3"]).contains("missing command"));
        assert!(usage(&["--shared=yes", "f", "true"]).contains("doesn't allow an argument"));
        assert_eq!(parse(&["--help".into()]), Ok(Action::Help));
        assert_eq!(parse(&["-V".into()]), Ok(Action::Version));
    }
}
