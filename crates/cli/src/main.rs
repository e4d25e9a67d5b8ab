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

use crate::exit::{Exit, Outcome};
use serde::Serialize;

mod cache_cmd;
mod exit;
mod flock_cmd;
mod kvm_cmd;
mod run;
mod topo_cmd;
mod watch;

fn main() -> ExitCode {
    init_logging();
    // Installed (or linked) as `flock`, lockyard is flock(1).
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name().is_some_and(|name| name == "flock") {
        return ExitCode::from(flock_cmd::run(&args.collect::<Vec<_>>(), "flock").code());
    }
    // `run` reads its own command line (flock_args), so it need not wait
    // for clap to build the whole command's: a lock taken in a tight
    // shell loop starts as fast as flock(1).
    let rest: Vec<std::ffi::OsString> = args.collect();
    if rest.first().is_some_and(|a| a == "run") {
        return ExitCode::from(flock_cmd::run(&rest[1..], "lockyard").code());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage = err.use_stderr();
            let _ = err.print();
            return if usage { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    exit::finish(match cli.command {
        Command::Locks(args) => locks(&args),
        Command::Who(args) => who(&args),
        Command::Run(args) => Ok(flock_cmd::run(&args.args, "lockyard")),
        Command::Pidfile(PidfileCommand::Status { path, json }) => pidfile_status(&path, json),
        Command::Pidfile(PidfileCommand::Claim { path, command, close, wait }) => {
            run::pidfile_claim(&path, &command, close, wait)
        }
        Command::Cache(args) => cache_cmd::cache(&args),
        Command::Topo(args) => topo_cmd::topo(&args),
        Command::Reserve(args) => topo_cmd::reserve(&args),
        Command::Preflight(args) => kvm_cmd::preflight(&args),
        Command::Kernel(args) => kvm_cmd::kernel(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lockyard", &mut std::io::stdout());
            Ok(Exit::SUCCESS)
        }
    })
}

/// `LOCKYARD_LOG` (a tracing filter) when set; otherwise only the
/// remote cache's warnings, which say that the command went on without it.
fn init_logging() {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match std::env::var("LOCKYARD_LOG") {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .try_init();
        }
        Err(_) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("lockyard_cache::remote=warn"))
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .without_time()
                .with_target(false)
                .try_init();
        }
    }
}

/// `text` with control characters escaped, for stderr and tables.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    table::escape(text, false)
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

/// The layout version of every JSON document lockyard prints.
pub(crate) const SCHEMA: u32 = lockyard::flock::listing::SCHEMA;

/// Print a report: as JSON with `json`, else as its text.
fn print_report<T: Serialize + std::fmt::Display>(report: &T, json: bool) -> Result<()> {
    if json { print_json(report) } else { emit(&report.to_string()) }
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    emit(&text)
}

const LOCK_COLUMNS: [&str; 11] =
    ["COMMAND", "PID", "KIND", "MODE", "START", "END", "PATH", "BLOCKED", "DEVICE", "INODE", "HOLDERS"];
const DEFAULT_LOCK_COLUMNS: [&str; 8] = ["COMMAND", "PID", "KIND", "MODE", "START", "END", "PATH", "BLOCKED"];

fn locks(args: &LocksArgs) -> Outcome {
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
    warn_if_nested_pid_namespace();
    let frame = || -> Result<watch::Frame> {
        let listing = listing::list(&options).context("cannot list locks")?;
        warn_skipped(&listing.skipped);
        if args.json {
            watch::json(&listing, args.watch.is_some())
        } else {
            Ok(watch::Frame::Text(render_locks(&listing, &columns, args)))
        }
    };
    if let Some(interval) = args.watch {
        return watch::watch(interval, frame);
    }
    watch::print(frame()?)?;
    Ok(Exit::SUCCESS)
}

fn render_locks(listing: &Listing, columns: &[String], args: &LocksArgs) -> String {
    use std::borrow::Cow;
    let pids = |procs: &[listing::Process]| -> Cow<'_, str> {
        match procs {
            [] => Cow::Borrowed(""),
            _ => procs
                .iter()
                .map(|p| p.pid.map_or("?".to_owned(), |p| p.to_string()))
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        }
    };
    // Most rows share a few pids and words: spelled once each, borrowed
    // by every row (10,000 rows are 100,000 cells).
    let pid_text: std::collections::HashMap<u32, String> =
        listing.locks.iter().filter_map(|l| l.pid).map(|p| (p, p.to_string())).collect();
    // Each distinct kind and mode in upper case, once (lslocks's spelling).
    let shouted: &std::collections::HashMap<&str, String> = &listing
        .locks
        .iter()
        .flat_map(|l| [&*l.kind, &*l.mode])
        .map(|word| (word, word.to_ascii_uppercase()))
        .collect();
    let number = |n: u64| -> Cow<'_, str> { if n == 0 { Cow::Borrowed("0") } else { n.to_string().into() } };
    // Names known to be valid (checked by the caller), resolved once.
    let names: Vec<&'static str> = columns
        .iter()
        .map(|c| LOCK_COLUMNS.iter().find(|n| **n == c.as_str()).copied().unwrap_or("?"))
        .collect();
    // One vector of cells, row after row: a vector per row would be
    // 10,000 more allocations.
    let cells: Vec<Cow<'_, str>> = listing
        .locks
        .iter()
        .flat_map(|lock| {
            // The recorded pid, as lslocks shows it; the holders where
            // asked for, or where none is recorded (an OFD lock found by
            // --pid).
            let by_holders = (listing.exact || lock.pid.is_none()) && !lock.holders.is_empty();
            let (pid, command): (Cow<'_, str>, Option<&str>) = if by_holders {
                (pids(&lock.holders), lock.holders[0].command.as_deref())
            } else {
                (
                    lock.pid.map_or(Cow::Borrowed("-1"), |p| Cow::Borrowed(&pid_text[&p])),
                    lock.command.as_deref(),
                )
            };
            names.iter().map(move |&name| -> Cow<'_, str> {
                match name {
                    "COMMAND" => command.unwrap_or_default().into(),
                    "PID" => pid.clone(),
                    "KIND" => Cow::Borrowed(&shouted[&*lock.kind]),
                    "MODE" => Cow::Borrowed(&shouted[&*lock.mode]),
                    "START" => number(lock.start),
                    "END" => lock.end.map_or(Cow::Borrowed("EOF"), number),
                    "PATH" => lock
                        .path
                        .as_deref()
                        .map_or_else(|| format!("{}:{}", lock.device, lock.inode).into(), table::escape_path),
                    "BLOCKED" => pids(&lock.blocked),
                    "DEVICE" => lock.device.as_str().into(),
                    "INODE" => lock.inode.to_string().into(),
                    "HOLDERS" => pids(&lock.holders),
                    _ => Cow::Borrowed(""),
                }
            })
        })
        .collect();
    let rows: Vec<&[Cow<'_, str>]> = cells.chunks(names.len().max(1)).collect();
    let columns: Vec<Column> =
        names.iter().map(|&name| Column { name, flexible: matches!(name, "COMMAND" | "PATH") }).collect();
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

fn who(args: &WhoArgs) -> Outcome {
    let snapshot = Snapshot::read().context("cannot read /proc")?;
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
    let answers =
        if exact { snapshot.exact_holders(&found).context("cannot attribute the holders")? } else { cheap };
    let mut answers =
        lockyard::flock::holders::confirm_unheld(&found, answers).context("cannot read /proc")?.into_iter();
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
    print_report(&WhoReport { schema: SCHEMA, exact, files }, args.json)?;
    if !any_held {
        warn_if_nested_pid_namespace();
    }
    Ok(if any_error { Exit::FAILED } else { Exit::answer(any_held) })
}

impl std::fmt::Display for WhoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for file in self.files.iter().filter(|f| f.error.is_none()) {
            let path = table::escape_path(&file.path);
            if file.holders.is_empty() && file.waiters.is_empty() {
                writeln!(f, "{path}: not held")?;
            }
            for h in &file.holders {
                writeln!(f, "{path}: held by {}", escape(&h.to_string()))?;
            }
            for w in &file.waiters {
                writeln!(f, "{path}: {}", escape(&w.to_string()))?;
            }
        }
        Ok(())
    }
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
    /// The pid written in the file, whatever it is (for the text).
    #[serde(skip)]
    recorded: Option<u32>,
    command: Option<String>,
    start_time: Option<u64>,
}

fn pidfile_status(path: &std::path::Path, json: bool) -> Outcome {
    // Reading writes nothing, so any directory will do, as for `who`.
    let options = lockyard::flock::LockOptions::new().trust(lockyard::flock::DirTrust::any_owner());
    let state = Pidfile::with_options(path, options).read().context("cannot read pidfile")?;
    let (name, claimant) = match &state {
        PidfileState::NotExist => ("missing", None),
        PidfileState::Unclaimed(_) => ("unclaimed", None),
        PidfileState::ClaimedBy(who) => ("claimed", Some(who)),
        _ => ("unknown", None),
    };
    let report = PidfileReport {
        schema: SCHEMA,
        path: path.to_owned(),
        state: name,
        pid: claimant.map(|c| c.pid),
        recorded_pid: claimant.and_then(|c| c.recorded.filter(|&r| r != c.pid)),
        recorded: claimant.and_then(|c| c.recorded),
        command: claimant.and_then(|c| c.cmdline.clone()),
        start_time: claimant.and_then(|c| c.start_time),
    };
    print_report(&report, json)?;
    Ok(Exit::answer(claimant.is_some()))
}

impl std::fmt::Display for PidfileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = table::escape_path(&self.path);
        match (self.state, self.pid) {
            ("missing", _) => writeln!(f, "{shown}: no such pidfile"),
            (_, None) => writeln!(f, "{shown}: unclaimed"),
            (_, Some(pid)) => {
                write!(
                    f,
                    "{shown}: claimed by pid {pid} ({})",
                    escape(self.command.as_deref().unwrap_or("?"))
                )?;
                match self.recorded {
                    Some(recorded) if recorded != pid => {
                        write!(f, "; the file names pid {recorded}, which does not hold the claim")?;
                    }
                    None => f.write_str("; the file names no pid")?,
                    Some(_) => {}
                }
                writeln!(f)
            }
        }
    }
}
