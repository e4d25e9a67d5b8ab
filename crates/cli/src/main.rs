//! The `lockyard` command. Errors become one sentence and a hint on stderr
//! and an exit status documented in docs/cli.md; never a panic for a
//! user's mistake.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use lockyard::flock::listing::{self, ListOptions, Listing};
use lockyard::flock::{Holder, LockError, Pidfile, PidfileState, Snapshot};
use lockyard_cli::cli::{Cli, Command, LocksArgs, PidfileCommand, WhoArgs};
use lockyard_cli::table::{self, Column, Style};
use serde::Serialize;

mod cache_cmd;
mod kvm_cmd;
mod run;
mod topo_cmd;

/// `sysexits.h` code for bad usage, as flock(1) uses it.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage = err.use_stderr();
            let _ = err.print();
            // Bad usage of `run` exits 64 like flock(1); elsewhere 2.
            let run = std::env::args().nth(1).as_deref() == Some("run");
            return if !usage {
                ExitCode::SUCCESS
            } else if run {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::from(2)
            };
        }
    };
    match cli.command {
        Command::Locks(args) => report(locks(&args), 0),
        Command::Who(args) => who(&args),
        Command::Run(args) => run::run(&args),
        Command::Pidfile(PidfileCommand::Status { path, json }) => pidfile_status(&path, json),
        Command::Pidfile(PidfileCommand::Claim { path, command, close, wait }) => {
            run::pidfile_claim(&path, &command, close, wait)
        }
        Command::Cache(args) => cache_cmd::cache(&args),
        Command::Topo(args) => report(topo_cmd::topo(&args), 0),
        Command::Reserve(args) => topo_cmd::reserve(&args),
        Command::Preflight(args) => kvm_cmd::preflight(&args),
        Command::Kernel(args) => kvm_cmd::kernel(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lockyard", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn init_logging() {
    if let Ok(filter) = std::env::var("LOCKYARD_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init();
    }
}

/// Print an error as `lockyard: <sentence>` plus a hint; exit 2.
fn report(result: Result<()>, ok: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(ok),
        Err(err) => {
            eprintln!("lockyard: {}", sentence(&err));
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

/// The error and its causes as one line, each cause once: errors that
/// already print their source (`path: op: cause`) are not followed by the
/// cause again. Escaped for the terminal ([`escape`]).
fn sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    escape(&text).into_owned()
}

/// `text` with control characters escaped, for stderr and tables.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    table::escape(text, false)
}

fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let io = err.chain().find_map(|e| e.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        return match io.kind() {
            std::io::ErrorKind::NotFound => Some("check the path; lockyard only inspects existing files"),
            std::io::ErrorKind::PermissionDenied => {
                Some("run as the file's owner, or as root to see everything")
            }
            _ => None,
        };
    }
    None
}

fn stdout_width() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&stdout).ok().map(|w| usize::from(w.ws_col)).filter(|&w| w > 0)
}

/// Write `text` to stdout; a reader that went away (`| head`) is not an
/// error.
fn emit(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    emit(&text)
}

const LOCK_COLUMNS: [&str; 11] =
    ["COMMAND", "PID", "KIND", "MODE", "START", "END", "PATH", "BLOCKED", "DEVICE", "INODE", "HOLDERS"];
const DEFAULT_LOCK_COLUMNS: [&str; 8] = ["COMMAND", "PID", "KIND", "MODE", "START", "END", "PATH", "BLOCKED"];

fn locks(args: &LocksArgs) -> Result<()> {
    let columns: Vec<String> = if args.output.is_empty() {
        DEFAULT_LOCK_COLUMNS.iter().map(|c| (*c).to_owned()).collect()
    } else {
        args.output.iter().map(|c| c.trim().to_ascii_uppercase()).collect()
    };
    if let Some(bad) = columns.iter().find(|c| !LOCK_COLUMNS.contains(&c.as_str())) {
        anyhow::bail!("unknown column {bad:?}; the columns are {}", LOCK_COLUMNS.join(", "));
    }
    let options = ListOptions {
        exact: args.exact,
        pids: args.pids.clone(),
        paths: args.paths.clone(),
        kinds: args.kinds.iter().map(|k| k.0).collect(),
    };
    let listing = listing::list(&options).context("cannot list locks")?;
    warn_if_nested_pid_namespace();
    warn_skipped(&listing.skipped);
    if args.json {
        return print_json(&listing);
    }
    emit(&render_locks(&listing, &columns, args))
}

fn render_locks(listing: &Listing, columns: &[String], args: &LocksArgs) -> String {
    let pids = |procs: &[listing::Process]| {
        procs.iter().map(|p| p.pid.map_or("?".to_owned(), |p| p.to_string())).collect::<Vec<_>>().join(",")
    };
    let rows: Vec<Vec<String>> = listing
        .locks
        .iter()
        .map(|lock| {
            let (pid, command) = if listing.exact && !lock.holders.is_empty() {
                (pids(&lock.holders), lock.holders[0].command.clone())
            } else {
                (lock.pid.map_or("-1".to_owned(), |p| p.to_string()), lock.command.clone())
            };
            columns
                .iter()
                .map(|column| match column.as_str() {
                    "COMMAND" => command.clone().unwrap_or_default(),
                    "PID" => pid.clone(),
                    "KIND" => lock.kind.to_ascii_uppercase(),
                    "MODE" => lock.mode.to_ascii_uppercase(),
                    "START" => lock.start.to_string(),
                    "END" => lock.end.map_or("EOF".to_owned(), |e| e.to_string()),
                    "PATH" => lock
                        .path
                        .as_deref()
                        .map_or_else(|| format!("{}:{}", lock.device, lock.inode), table::escape_path),
                    "BLOCKED" => pids(&lock.blocked),
                    "DEVICE" => lock.device.clone(),
                    "INODE" => lock.inode.to_string(),
                    "HOLDERS" => pids(&lock.holders),
                    _ => String::new(),
                })
                .collect()
        })
        .collect();
    let columns: Vec<Column> = columns
        .iter()
        .map(|c| {
            let name = LOCK_COLUMNS.iter().find(|n| **n == c.as_str()).copied().unwrap_or("?");
            Column { name, flexible: matches!(name, "COMMAND" | "PATH") }
        })
        .collect();
    table::render(
        &columns,
        &rows,
        Style { noheadings: args.noheadings, raw: args.raw, width: stdout_width() },
    )
}

/// One file's answer in `lockyard who --json`.
#[derive(Serialize)]
struct WhoFile {
    #[serde(serialize_with = "lockyard::flock::json::path")]
    path: std::path::PathBuf,
    device: Option<String>,
    inode: Option<u64>,
    key_source: Option<lockyard::flock::KeySource>,
    holders: Vec<Holder>,
    waiters: Vec<Holder>,
    error: Option<String>,
}

#[derive(Serialize)]
struct WhoReport {
    schema: u32,
    exact: bool,
    files: Vec<WhoFile>,
}

fn who(args: &WhoArgs) -> ExitCode {
    let snapshot = match Snapshot::read() {
        Ok(s) => s,
        Err(e) => return report(Err(e).context("cannot read /proc"), 0),
    };
    warn_skipped(snapshot.skipped());
    let mut files = Vec::new();
    let mut ids = Vec::new();
    for path in &args.paths {
        let id = snapshot.file_id(path);
        if let Err(e) = &id {
            eprintln!("lockyard: {}", escape(&e.to_string()));
            if matches!(e, LockError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound) {
                eprintln!("hint: check the path; `who` asks about existing files");
            }
        }
        ids.push(id);
    }
    // Exact attribution when asked, or when /proc/locks cannot name a
    // holder (OFD locks record -1; inherited flocks record a dead pid).
    let found: Vec<_> = ids.iter().filter_map(|i| i.as_ref().ok().copied()).collect();
    let cheap: Vec<_> = found.iter().map(|id| snapshot.holders(id.key)).collect();
    let unnamed = cheap
        .iter()
        .flat_map(lockyard::flock::Holders::holding)
        .any(|h| h.pid.is_none_or(|p| h.cmdline.is_none() && !alive(p)));
    let exact = args.exact || unnamed;
    let answers = if exact {
        match snapshot.exact_holders(&found) {
            Ok(answers) => answers,
            Err(e) => return report(Err(e).context("cannot attribute the holders"), 0),
        }
    } else {
        cheap
    };
    let mut answers = match lockyard::flock::holders::confirm_unheld(&found, answers) {
        Ok(answers) => answers.into_iter(),
        Err(e) => return report(Err(e).context("cannot read /proc"), 0),
    };
    let mut any_error = false;
    let mut any_held = false;
    for (path, id) in args.paths.iter().zip(&ids) {
        let shown = path.clone();
        match id {
            Err(e) => {
                any_error = true;
                files.push(WhoFile {
                    path: shown,
                    device: None,
                    inode: None,
                    key_source: None,
                    holders: Vec::new(),
                    waiters: Vec::new(),
                    error: Some(e.to_string()),
                });
            }
            Ok(id) => {
                let holders = answers.next().unwrap_or_default();
                any_held |= holders.holding().next().is_some();
                files.push(WhoFile {
                    path: shown,
                    device: Some(format!("{:02x}:{:02x}", id.key.device.major, id.key.device.minor)),
                    inode: Some(id.key.inode),
                    key_source: Some(id.source),
                    holders: holders.holding().cloned().collect(),
                    waiters: holders.waiting().cloned().collect(),
                    error: None,
                });
            }
        }
    }
    if args.json {
        if let Err(e) = print_json(&WhoReport { schema: 1, exact, files }) {
            return report(Err(e), 0);
        }
    } else {
        let mut text = String::new();
        let mut line = |line: String| {
            text.push_str(&escape(&line));
            text.push('\n');
        };
        for file in files.iter().filter(|f| f.error.is_none()) {
            if file.holders.is_empty() && file.waiters.is_empty() {
                line(format!("{}: not held", table::escape_path(&file.path)));
            }
            for h in &file.holders {
                line(format!("{}: held by {h}", table::escape_path(&file.path)));
            }
            for w in &file.waiters {
                line(format!("{}: {w}", table::escape_path(&file.path)));
            }
        }
        if let Err(e) = emit(&text) {
            return report(Err(e), 0);
        }
    }
    if !any_held {
        warn_if_nested_pid_namespace();
    }
    ExitCode::from(if any_error {
        2
    } else if any_held {
        0
    } else {
        1
    })
}

/// The kernel hides locks of processes outside our pid namespace, so a
/// "not held" from in here may be wrong; say so rather than mislead.
fn warn_if_nested_pid_namespace() {
    if lockyard::flock::in_initial_pid_namespace() == Some(false) {
        eprintln!(
            "lockyard: note: this process is in a nested pid namespace; the kernel does not show \
             flock or POSIX locks held by processes outside it"
        );
    }
}

/// Say on stderr which lines of /proc were skipped as malformed: the
/// answer is from the others.
fn warn_skipped(skipped: &[String]) {
    for line in skipped {
        eprintln!("lockyard: warning: skipped {}; the answer is from the other lines", escape(line));
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[derive(Serialize)]
struct PidfileReport {
    schema: u32,
    #[serde(serialize_with = "lockyard::flock::json::path")]
    path: std::path::PathBuf,
    state: &'static str,
    pid: Option<u32>,
    /// The pid written in the file, when it differs from `pid`.
    recorded_pid: Option<u32>,
    command: Option<String>,
    start_time: Option<u64>,
}

fn pidfile_status(path: &std::path::Path, json: bool) -> ExitCode {
    // Reading writes nothing, so any directory will do, as for `who`.
    let options = lockyard::flock::LockOptions::new().trust(lockyard::flock::DirTrust::any_owner());
    let state = match Pidfile::with_options(path, options).read() {
        Ok(state) => state,
        Err(e) => return report(Err(e).context("cannot read pidfile"), 0),
    };
    let (name, claimant) = match &state {
        PidfileState::NotExist => ("missing", None),
        PidfileState::Unclaimed(_) => ("unclaimed", None),
        PidfileState::ClaimedBy(who) => ("claimed", Some(who)),
        _ => ("unknown", None),
    };
    let shown = table::escape_path(path);
    if json {
        let report_json = PidfileReport {
            schema: 1,
            path: path.to_owned(),
            state: name,
            pid: claimant.map(|c| c.pid),
            recorded_pid: claimant.and_then(|c| c.recorded.filter(|&r| r != c.pid)),
            command: claimant.and_then(|c| c.cmdline.clone()),
            start_time: claimant.and_then(|c| c.start_time),
        };
        if let Err(e) = print_json(&report_json) {
            return report(Err(e), 0);
        }
    } else {
        let text = match claimant {
            Some(c) => {
                let mut line = format!(
                    "{shown}: claimed by pid {} ({})",
                    c.pid,
                    escape(c.cmdline.as_deref().unwrap_or("?"))
                );
                match c.recorded {
                    Some(recorded) if recorded != c.pid => line
                        .push_str(&format!("; the file names pid {recorded}, which does not hold the claim")),
                    None => line.push_str("; the file names no pid"),
                    Some(_) => {}
                }
                line + "\n"
            }
            None if name == "missing" => format!("{shown}: no such pidfile\n"),
            None => format!("{shown}: unclaimed\n"),
        };
        if let Err(e) = emit(&text) {
            return report(Err(e), 0);
        }
    }
    ExitCode::from(if claimant.is_some() { 0 } else { 1 })
}
