//! The command line, as clap types (used by the binary, by completions and
//! by `cargo xtask man`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Crash-safe locks on a shared host, and who holds them.
#[derive(Debug, Parser)]
#[command(
    name = "lockyard",
    version,
    about = "Crash-safe locks on a shared Linux host, and exactly who holds them",
    long_about = "Crash-safe locks on a shared Linux host, and exactly who holds them.\n\n\
        Every lock lockyard takes is a kernel advisory lock, released by the kernel when its \
        holder dies. `lockyard locks` lists every lock on the host with paths and holders \
        (a better lslocks); `lockyard who` answers who holds given files; `lockyard run` \
        runs a command under a lock, compatible with flock(1).",
    after_help = "Environment: LOCKYARD_LOG sets the log filter (RUST_LOG syntax, e.g. LOCKYARD_LOG=debug).\n\
        Exit codes are documented per command and in docs/cli.md."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every lock on the host, with paths, holders and waiters.
    #[command(after_help = "Exit status: 0 on success, 2 on error.")]
    Locks(LocksArgs),
    /// Show who holds, and who waits on, the given files.
    #[command(after_help = "Exit status: 0 if at least one file is held, 1 if none is, 2 on error.")]
    Who(WhoArgs),
    /// Run a command while holding a lock (compatible with flock(1)).
    #[command(
        after_help = "Exit status: the command's (128+N if killed by signal N); the conflict exit code \
        (-E, default 1) if the lock was busy or the wait timed out; 64 for bad usage; 66 if the lock \
        file cannot be opened or is refused; 126/127 if the command cannot be run."
    )]
    Run(RunArgs),
    /// Claim or inspect pidfiles.
    #[command(subcommand)]
    Pidfile(PidfileCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Options of `lockyard locks`.
#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Attribute each lock to the processes holding a descriptor that
    /// carries it (names OFD holders and children that inherited a lock;
    /// reads every process's fdinfo).
    #[arg(long)]
    pub exact: bool,
    /// Only locks held by this pid (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only locks on this file (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only locks of this kind (repeatable).
    #[arg(short, long = "kind", value_enum, value_name = "KIND")]
    pub kinds: Vec<KindFilter>,
    /// Columns to show, comma-separated: COMMAND, PID, KIND, MODE, START, END, PATH, BLOCKED, DEVICE, INODE,
    /// HOLDERS.
    #[arg(short, long, value_name = "LIST", value_delimiter = ',')]
    pub output: Vec<String>,
    /// Do not print the header line.
    #[arg(short = 'n', long)]
    pub noheadings: bool,
    /// Raw output: columns separated by one space, nothing truncated.
    #[arg(short, long)]
    pub raw: bool,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Lock kinds for `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindFilter {
    /// flock(2) locks.
    Flock,
    /// Process-associated fcntl locks.
    Posix,
    /// Open-file-description fcntl locks.
    Ofd,
    /// Leases.
    Lease,
}

/// Options of `lockyard who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The files to ask about.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Attribute through fdinfo even when /proc/locks names a live pid.
    #[arg(long)]
    pub exact: bool,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard run`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Take a shared lock.
    #[arg(short = 's', long, alias = "read", conflicts_with = "exclusive")]
    pub shared: bool,
    /// Take an exclusive lock (the default).
    #[arg(short = 'x', short_alias = 'e', long, alias = "write")]
    pub exclusive: bool,
    /// Fail rather than wait if the lock is busy.
    #[arg(short = 'n', long, alias = "nb", conflicts_with = "timeout")]
    pub nonblock: bool,
    /// Fail if the lock is not acquired within SECS seconds (fractions
    /// allowed; 0 means --nonblock).
    #[arg(short = 'w', long, alias = "wait", value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Exit status when the lock is busy or the wait times out.
    #[arg(short = 'E', long, value_name = "N", default_value_t = 1)]
    pub conflict_exit_code: u8,
    /// Which lock: flock (like flock(1)) or ofd (like bwrap --lock-file).
    #[arg(long, value_enum, default_value = "flock")]
    pub kind: RunKind,
    /// Do not let the command inherit the lock descriptor (so processes it
    /// leaves behind do not keep the lock).
    #[arg(short = 'o', long)]
    pub close: bool,
    /// Run COMMAND with `sh -c`.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    pub shell_command: Option<String>,
    /// On conflict or timeout, say who holds the lock.
    #[arg(long)]
    pub verbose: bool,
    /// The lock file (created if missing, never removed).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The command and its arguments.
    #[arg(value_name = "COMMAND", allow_hyphen_values = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// Lock kinds for `run --kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunKind {
    /// flock(2).
    Flock,
    /// Open-file-description fcntl locks.
    Ofd,
}

/// `lockyard pidfile` subcommands.
#[derive(Debug, Subcommand)]
pub enum PidfileCommand {
    /// Hold the pidfile for COMMAND's lifetime, with COMMAND's pid in it.
    #[command(
        trailing_var_arg = true,
        after_help = "Exit status: COMMAND's; 1 if the pidfile is claimed by another process; 2 on error."
    )]
    Claim {
        /// The pidfile (created if missing, never removed).
        path: PathBuf,
        /// The command and its arguments.
        #[arg(required = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Say whether the pidfile is claimed, and by whom.
    #[command(after_help = "Exit status: 0 if claimed, 1 if unclaimed or missing, 2 on error.")]
    Status {
        /// The pidfile.
        path: PathBuf,
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
}
