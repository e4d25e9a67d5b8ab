//! Reliability campaign driver: mutual exclusion under stress and holders
//! killed at random points. `cargo xtask stress` runs `all`; `--long` is
//! the bigger run behind `cargo xtask stress --long`. docs/reliability.md
//! explains what each part proves and keeps the last figures.
//!
//! Every part runs real processes (this binary re-executed as a hidden
//! `worker`) on lock files in a fresh directory, and checks an invariant
//! that a broken lock would violate, not a count the lock itself reports:
//!
//! - `exclusion`: inside the critical section each worker creates a marker
//!   with `O_EXCL` (fails if anyone else is inside) and increments a
//!   counter file by read, yield, write (loses an update on any overlap).
//! - `mixed`: writers as above and also check that no reader marker
//!   exists; readers create their own marker and check that no writer
//!   marker exists and that the counter does not move while they read.
//!   The largest number of readers seen together shows that shared locks
//!   really share.
//! - `crash`: workers take and release locks on several files at random,
//!   and the driver SIGKILLs them at random instants, noting where each
//!   one was. After each kill it checks that no holders listing names the
//!   dead pid; at the end, that every lock can be taken and that no lock
//!   file was deleted or replaced.
//!
//! The exit status is 1 when any check failed, so CI fails with it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use lockyard_cache::Wait;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use lockyard_flock::{LockFile, LockKind, LockMode, LockOptions, Snapshot};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// How long a worker waits for a lock before it calls the run broken:
/// far above any hand-off, so only a lost wake-up or a leaked lock trips it.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Stress and crash tests for lockyard-flock (see docs/reliability.md)")]
struct Cli {
    #[command(subcommand)]
    part: Part,
}

#[derive(Subcommand)]
enum Part {
    /// Every part, as `cargo xtask stress` runs them.
    All {
        /// The long run: 32 processes and ten times the rounds and kills.
        #[arg(long)]
        long: bool,
    },
    /// N processes take one exclusive lock M times each.
    Exclusion(Load),
    /// Readers (shared) and writers (exclusive) on one lock.
    Mixed(Load),
    /// Holders SIGKILLed at random points.
    Crash(CrashLoad),
    /// Cache soak: stores, lookups, ensures, cleans and sweeps at once.
    Cache(CacheLoad),
    /// One worker process (started by the other parts).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Worker processes.
    #[arg(long, default_value_t = 16)]
    procs: usize,
    /// Acquisitions per worker.
    #[arg(long, default_value_t = 300)]
    rounds: usize,
    /// Lock kind.
    #[arg(long, value_enum, default_value_t = Kind::Flock)]
    kind: Kind,
    /// Take no lock at all: the negative control, which must report
    /// violations (otherwise the checks could not see a broken lock).
    #[arg(long)]
    unlocked: bool,
}

#[derive(clap::Args, Clone)]
struct CrashLoad {
    /// Worker processes alive at any time.
    #[arg(long, default_value_t = 8)]
    procs: usize,
    /// SIGKILLs to deliver.
    #[arg(long, default_value_t = 300)]
    kills: usize,
    /// Lock files (half exist from the start, half are created by workers).
    #[arg(long, default_value_t = 6)]
    files: usize,
    /// Random seed (printed, so a failing run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(clap::Args, Clone)]
struct CacheLoad {
    /// Worker processes.
    #[arg(long, default_value_t = 6)]
    procs: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Flock,
    Ofd,
}

impl Kind {
    fn lock_kind(self) -> LockKind {
        match self {
            Kind::Flock => LockKind::Flock,
            Kind::Ofd => LockKind::Ofd,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Flock => "flock",
            Kind::Ofd => "ofd",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Exclusive,
    Reader,
    Writer,
    Crash,
    Cache,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long, value_enum)]
    role: Role,
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    rounds: usize,
    #[arg(long, default_value_t = 0)]
    slot: u64,
    #[arg(long, default_value_t = 0)]
    files: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    unlocked: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.part {
        Part::Worker(args) => return worker(&args),
        Part::All { long } => all(long),
        Part::Exclusion(load) => exclusion(&load, false).map(|r| r.ok()),
        Part::Mixed(load) => exclusion(&load, true).map(|r| r.ok()),
        Part::Crash(load) => crash(&load).map(|r| r.ok()),
        Part::Cache(load) => cache_soak(&load),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("lockyard-stress: FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lockyard-stress: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn all(long: bool) -> Result<bool> {
    let (procs, rounds, kills) = if long { (32, 3000, 3000) } else { (16, 300, 300) };
    let started = Instant::now();
    let mut ok = true;
    for mixed in [false, true] {
        for kind in [Kind::Flock, Kind::Ofd] {
            ok &= exclusion(&Load { procs, rounds, kind, unlocked: false }, mixed)?.ok();
        }
    }
    let control = exclusion(&Load { procs, rounds: 100, kind: Kind::Flock, unlocked: true }, false)?;
    if control.ok() {
        println!(
            "  the unlocked control saw no violation: the checks are blind, so the runs above prove nothing"
        );
        ok = false;
    }
    ok &= crash(&CrashLoad { procs: procs / 2, kills, files: 6, seed: None })?.ok();
    ok &= cache_soak(&CacheLoad { procs: 6, seconds: if long { 60 } else { 8 } })?;
    println!("all parts {} in {:.1?}", if ok { "passed" } else { "FAILED" }, started.elapsed());
    Ok(ok)
}

/// A fresh directory for one part, removed afterwards unless it failed.
struct Workdir(PathBuf);

impl Workdir {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lockyard-stress-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Workdir(dir))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------
// Mutual exclusion

struct ExclusionReport {
    violations: u64,
}

impl ExclusionReport {
    fn ok(&self) -> bool {
        self.violations == 0
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    acquisitions: u64,
    violations: u64,
    max_readers: u64,
    latencies_ns: Vec<u64>,
}

fn exclusion(load: &Load, mixed: bool) -> Result<ExclusionReport> {
    let name = match (mixed, load.unlocked) {
        (_, true) => "control without a lock",
        (true, false) => "mixed",
        (false, false) => "exclusion",
    };
    let work = Workdir::new(&format!("{}-{}", if mixed { "mixed" } else { "exclusion" }, load.kind.name()))?;
    std::fs::write(work.0.join("counter"), [0u8; 16]).map_err(|e| format!("counter: {e}"))?;
    let started = Instant::now();
    let mut children = Vec::new();
    let mut writer_rounds = 0;
    for i in 0..load.procs {
        // One writer in four in the mixed run, so readers overlap.
        let role = match (mixed, i % 4) {
            (false, _) => Role::Exclusive,
            (true, 0) => Role::Writer,
            (true, _) => Role::Reader,
        };
        if role != Role::Reader {
            writer_rounds += load.rounds;
        }
        let mut command = worker_command(role, load.kind, &work.0);
        command.arg("--rounds").arg(load.rounds.to_string());
        if load.unlocked {
            command.arg("--unlocked");
        }
        children.push(spawn(command)?);
    }
    let mut total = Tally::default();
    for tally in collect(children)?.iter().map(|out| parse_tally(out)) {
        total.acquisitions += tally.acquisitions;
        total.violations += tally.violations;
        total.max_readers = total.max_readers.max(tally.max_readers);
        total.latencies_ns.extend(tally.latencies_ns);
    }
    let (counter, _) = read_state(&work.0)?;
    let lost = (writer_rounds as u64).saturating_sub(counter);
    if counter != writer_rounds as u64 {
        println!("  counter is {counter}, expected {writer_rounds}: updates were lost or doubled");
    }
    let violations = total.violations + lost + u64::from(counter > writer_rounds as u64);
    let elapsed = started.elapsed();
    println!(
        "{name} {kind}: {procs} processes, {acq} critical sections in {elapsed:.2?} ({rate:.0}/s), violations {violations}{readers}",
        kind = if load.unlocked { "(must see violations)" } else { load.kind.name() },
        procs = load.procs,
        acq = total.acquisitions,
        rate = total.acquisitions as f64 / elapsed.as_secs_f64(),
        readers =
            if mixed { format!(", up to {} readers together", total.max_readers) } else { String::new() },
    );
    if !mixed && !load.unlocked {
        let lat = &mut total.latencies_ns;
        lat.sort_unstable();
        if !lat.is_empty() {
            println!(
                "  hand-off latency over {} contended acquisitions: p50 {} p90 {} p99 {} max {}",
                lat.len(),
                micros(percentile(lat, 50.0)),
                micros(percentile(lat, 90.0)),
                micros(percentile(lat, 99.0)),
                micros(*lat.last().unwrap_or(&0)),
            );
        }
    }
    if mixed && total.max_readers < 2 {
        // Not a safety violation, but the run proved nothing about sharing.
        println!("  warning: readers never overlapped; shared locks were not exercised");
    }
    Ok(ExclusionReport { violations })
}

fn micros(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1000.0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn worker_command(role: Role, kind: Kind, dir: &Path) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lockyard-stress"));
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--role")
        .arg(role_name(role))
        .arg("--kind")
        .arg(kind.name())
        .arg("--dir")
        .arg(dir);
    command
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Exclusive => "exclusive",
        Role::Reader => "reader",
        Role::Writer => "writer",
        Role::Crash => "crash",
        Role::Cache => "cache",
    }
}

fn spawn(mut command: Command) -> Result<Child> {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    command.spawn().map_err(|e| format!("spawn worker: {e}"))
}

/// Start the workers together (closing their stdin is the starting gun)
/// and read what each one printed; an error if any of them failed.
fn collect(mut children: Vec<Child>) -> Result<Vec<String>> {
    for child in &mut children {
        drop(child.stdin.take());
    }
    let mut outputs = Vec::new();
    let mut failed = None;
    for mut child in children {
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        if !status.success() {
            failed = Some(format!("worker {} {status}", child.id()));
        }
        outputs.push(out);
    }
    match failed {
        Some(failure) => Err(failure),
        None => Ok(outputs),
    }
}

fn parse_tally(out: &str) -> Tally {
    let mut tally = Tally::default();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default();
        let mut numbers = words.filter_map(|w| w.parse::<u64>().ok());
        match key {
            "acquisitions" => tally.acquisitions = numbers.next().unwrap_or(0),
            "violations" => tally.violations = numbers.next().unwrap_or(0),
            "max-readers" => tally.max_readers = numbers.next().unwrap_or(0),
            "latencies" => tally.latencies_ns.extend(numbers),
            _ => {}
        }
    }
    tally
}

/// The shared counter and the time of the last exclusive release.
fn read_state(dir: &Path) -> Result<(u64, u64)> {
    let bytes = std::fs::read(dir.join("counter")).map_err(|e| format!("counter: {e}"))?;
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok((word(0), word(8)))
}

// ---------------------------------------------------------------------
// Workers

fn worker(args: &WorkerArgs) -> ExitCode {
    // Wait for the starting gun (the driver closes our stdin).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let result = match args.role {
        Role::Crash => crash_worker(args),
        Role::Cache => cache_worker(args),
        role => contend(args, role),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker {}: {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

fn contend(args: &WorkerArgs, role: Role) -> Result<()> {
    let dir =
        rustix::fs::open(&args.dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open {}: {e}", args.dir.display()))?;
    let state = rustix::fs::openat(&dir, "counter", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("open counter: {e}"))?;
    let mode = if role == Role::Reader { LockMode::Shared } else { LockMode::Exclusive };
    let options = LockOptions::new().kind(args.kind.lock_kind()).mode(mode);
    let file = LockFile::with_options(args.dir.join("the.lock"), options).map_err(|e| e.to_string())?;
    let my_marker = format!("reader.{}", std::process::id());
    let mut tally = Tally::default();
    for _ in 0..args.rounds {
        let waited_from = now_ns();
        let guard = if args.unlocked {
            None
        } else {
            Some(file.lock_timeout(WAIT_LIMIT).map_err(|e| e.to_string())?)
        };
        let acquired = now_ns();
        tally.acquisitions += 1;
        let (counter, released) = load_state(&state)?;
        if released > waited_from {
            // We were already waiting when the previous writer let go.
            tally.latencies_ns.push(acquired.saturating_sub(released));
        }
        match role {
            Role::Reader => {
                let marker = create_marker(&dir, &my_marker)?;
                tally.violations += u64::from(!marker || exists(&dir, "writer")?);
                tally.max_readers = tally.max_readers.max(count_readers(&dir)?);
                std::thread::yield_now();
                let (again, _) = load_state(&state)?;
                tally.violations += u64::from(again != counter || exists(&dir, "writer")?);
                remove_marker(&dir, &my_marker)?;
            }
            _ => {
                let marker = create_marker(&dir, "writer")?;
                tally.violations += u64::from(!marker);
                if role == Role::Writer {
                    tally.violations += count_readers(&dir)?;
                }
                // Read, let someone else run, write: any overlap loses an update.
                std::thread::yield_now();
                if marker {
                    remove_marker(&dir, "writer")?;
                }
                store_state(&state, counter + 1, now_ns())?;
            }
        }
        drop(guard);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "acquisitions {}", tally.acquisitions);
    let _ = writeln!(out, "violations {}", tally.violations);
    let _ = writeln!(out, "max-readers {}", tally.max_readers);
    let _ = write!(out, "latencies");
    for ns in &tally.latencies_ns {
        let _ = write!(out, " {ns}");
    }
    let _ = writeln!(out);
    Ok(())
}

fn load_state(fd: &OwnedFd) -> Result<(u64, u64)> {
    let mut buf = [0u8; 16];
    let n = rustix::io::pread(fd, &mut buf, 0).map_err(|e| format!("read counter: {e}"))?;
    if n != buf.len() {
        return Err(format!("counter file is {n} bytes"));
    }
    let (a, b) = buf.split_at(8);
    Ok((
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        u64::from_le_bytes(b.try_into().unwrap_or_default()),
    ))
}

fn store_state(fd: &OwnedFd, counter: u64, released: u64) -> Result<()> {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&counter.to_le_bytes());
    buf[8..].copy_from_slice(&released.to_le_bytes());
    let n = rustix::io::pwrite(fd, &buf, 0).map_err(|e| format!("write counter: {e}"))?;
    if n == buf.len() { Ok(()) } else { Err(format!("short counter write: {n}")) }
}

/// Create a marker with `O_EXCL`: false when it already existed.
fn create_marker(dir: &OwnedFd, name: &str) -> Result<bool> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from(0o644)) {
        Ok(_) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(format!("create marker {name}: {e}")),
    }
}

fn remove_marker(dir: &OwnedFd, name: &str) -> Result<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| format!("remove marker {name}: {e}"))
}

fn exists(dir: &OwnedFd, name: &str) -> Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(format!("stat {name}: {e}")),
    }
}

fn count_readers(dir: &OwnedFd) -> Result<u64> {
    let entries = rustix::fs::Dir::read_from(dir).map_err(|e| format!("list: {e}"))?;
    let mut readers = 0;
    for entry in entries {
        let entry = entry.map_err(|e| format!("list: {e}"))?;
        readers += u64::from(entry.file_name().to_bytes().starts_with(b"reader."));
    }
    Ok(readers)
}

// ---------------------------------------------------------------------
// Crashes

/// Where a worker was when it was killed, as it wrote it to its byte of
/// the shared `phases` file.
const PHASES: [&str; 5] = ["idle", "opening and trying", "waiting", "holding", "releasing"];

struct CrashReport {
    failures: Vec<String>,
}

impl CrashReport {
    fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

fn lock_name(i: usize) -> String {
    format!("crash-{i}.lock")
}

/// Files with an even index are flock locks, odd ones OFD locks.
fn crash_kind(i: usize) -> LockKind {
    if i.is_multiple_of(2) { LockKind::Flock } else { LockKind::Ofd }
}

fn crash(load: &CrashLoad) -> Result<CrashReport> {
    let work = Workdir::new("crash")?;
    let seed = load.seed.unwrap_or_else(|| now_ns() ^ u64::from(std::process::id()));
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    // Half the files exist from the start, so their identity is known.
    let mut identities = BTreeMap::new();
    for i in (0..load.files).step_by(2) {
        let path = work.0.join(lock_name(i));
        std::fs::write(&path, b"").map_err(|e| format!("create {}: {e}", path.display()))?;
        identities.insert(i, identity(&path)?);
    }
    std::fs::write(work.0.join("phases"), vec![0u8; load.procs]).map_err(|e| format!("phases: {e}"))?;
    let phases = std::fs::File::open(work.0.join("phases")).map_err(|e| format!("phases: {e}"))?;

    let start = |slot: usize, rng: &mut fastrand::Rng| -> Result<Child> {
        let mut command = worker_command(Role::Crash, Kind::Flock, &work.0);
        command.arg("--slot").arg(slot.to_string()).arg("--files").arg(load.files.to_string());
        command.arg("--seed").arg(rng.u64(..).to_string());
        let mut child = spawn(command)?;
        drop(child.stdin.take());
        Ok(child)
    };
    let mut workers = (0..load.procs).map(|slot| start(slot, &mut rng)).collect::<Result<Vec<_>>>()?;
    let paths: Vec<PathBuf> = (0..load.files).map(|i| work.0.join(lock_name(i))).collect();
    let mut failures = Vec::new();
    let mut by_phase = [0u64; PHASES.len()];
    let mut listings = 0u64;
    for kill in 0..load.kills {
        std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
        // Every other kill is aimed at a phase, round robin, so the short
        // ones (opening, releasing) are hit too, not only the long ones.
        let aim = (kill % 2 == 1).then(|| u8::try_from(1 + kill / 2 % 4).unwrap_or(1));
        let (slot, phase) = pick_victim(&phases, workers.len(), aim, &mut rng);
        let victim = &mut workers[slot];
        let pid = victim.id();
        let _ = victim.kill();
        let status = victim.wait().map_err(|e| format!("wait: {e}"))?;
        if status.code().is_some() {
            failures.push(format!("worker {pid} exited on its own ({status}) before it was killed"));
        }
        by_phase[usize::from(phase).min(PHASES.len() - 1)] += 1;
        // Its locks went with it: no listing may name it now.
        listings += 1;
        if let Some(failure) = names_pid(&paths, pid)? {
            failures.push(failure);
        }
        workers[slot] = start(slot, &mut rng)?;
    }
    for mut worker in workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }

    // Afterwards: every lock file is where it was and can be taken.
    for (i, path) in paths.iter().enumerate() {
        match identities.get(&i) {
            Some(&before) if identity(path)? != before => {
                failures.push(format!("{} was replaced during the run", path.display()));
            }
            _ => {}
        }
        if !path.exists() {
            // Workers may not have reached a file that had to be created.
            continue;
        }
        let options = LockOptions::new().kind(crash_kind(i)).must_exist();
        match LockFile::with_options(path, options).and_then(|f| f.try_lock()) {
            Ok(Some(_)) => {}
            Ok(None) => failures.push(format!("{} is still locked after every holder died", path.display())),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    let leftovers: Vec<OsString> = std::fs::read_dir(&work.0)
        .map_err(|e| format!("list: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|name| name != "phases" && !(0..load.files).any(|i| *name == *lock_name(i)))
        .collect();
    if !leftovers.is_empty() {
        failures.push(format!("unexpected files in the lock directory: {leftovers:?}"));
    }
    let created = paths.iter().enumerate().filter(|(i, p)| i % 2 == 1 && p.exists()).count();

    println!(
        "crash: {kills} SIGKILLs in {elapsed:.2?} (seed {seed}): {phases}; {listings} holder listings after kills; \
         {files} lock files ({created} of {made} created by workers), failures {failed}",
        kills = load.kills,
        elapsed = started.elapsed(),
        phases = PHASES.iter().zip(by_phase).map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", "),
        files = load.files,
        made = load.files / 2,
        failed = failures.len(),
    );
    for failure in &failures {
        println!("  {failure}");
    }
    Ok(CrashReport { failures })
}

/// A worker to kill and the phase it was in: one seen in phase `aim`
/// when that happens within 50 ms of watching, else a random one.
fn pick_victim(
    phases: &std::fs::File,
    workers: usize,
    aim: Option<u8>,
    rng: &mut fastrand::Rng,
) -> (usize, u8) {
    let mut seen = vec![0u8; workers];
    let deadline = Instant::now() + Duration::from_millis(50);
    loop {
        let _ = rustix::io::pread(phases, &mut seen, 0);
        match aim {
            Some(aim) if Instant::now() < deadline => {
                if let Some(slot) = seen.iter().position(|&p| p == aim) {
                    return (slot, aim);
                }
            }
            _ => {
                let slot = rng.usize(0..workers);
                return (slot, seen[slot]);
            }
        }
    }
}

/// `(device, inode)` of a file, to tell a replaced file from the original.
fn identity(path: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// A failure message if a holders listing (cheap or exact) names `pid`.
fn names_pid(paths: &[PathBuf], pid: u32) -> Result<Option<String>> {
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    let snapshot = Snapshot::read().map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for path in &existing {
        match snapshot.file_id(path) {
            Ok(id) => files.push(id),
            Err(e) => return Err(e.to_string()),
        }
    }
    let cheap = files.iter().map(|id| snapshot.holders(id.key));
    let exact = snapshot.exact_holders(&files).map_err(|e| e.to_string())?;
    for (holders, path) in cheap.chain(exact).zip(existing.iter().cycle()) {
        if holders.0.iter().any(|h| h.pid == Some(pid)) {
            return Ok(Some(format!("{} lists dead pid {pid} as a holder: {holders}", path.display())));
        }
    }
    Ok(None)
}

fn crash_worker(args: &WorkerArgs) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let phases = std::fs::OpenOptions::new()
        .write(true)
        .open(args.dir.join("phases"))
        .map_err(|e| format!("phases: {e}"))?;
    let set_phase = |phase: u8| {
        let _ = rustix::io::pwrite(phases.as_fd(), &[phase], args.slot);
    };
    loop {
        set_phase(0);
        std::thread::sleep(Duration::from_micros(rng.u64(0..500)));
        let i = rng.usize(0..args.files);
        let mode = if rng.u8(0..3) == 0 { LockMode::Shared } else { LockMode::Exclusive };
        let options = LockOptions::new().kind(crash_kind(i)).mode(mode);
        let file = LockFile::with_options(args.dir.join(lock_name(i)), options).map_err(|e| e.to_string())?;
        set_phase(1);
        let guard = match file.try_lock().map_err(|e| e.to_string())? {
            Some(guard) => guard,
            None => {
                set_phase(2);
                file.lock_timeout(WAIT_LIMIT).map_err(|e| e.to_string())?
            }
        };
        set_phase(3);
        std::thread::sleep(Duration::from_micros(rng.u64(0..2000)));
        set_phase(4);
        drop(guard);
    }
}

// ---------------------------------------------------------------------
// Cache soak

const CACHE_KEYS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// Several processes store, look up, ensure, clean and sweep a few keys
/// of one cache at once. Readers check, while holding their guard, that
/// the entry is complete (its payload matches what its metadata says) and
/// stays so; every other failure than "busy" counts too.
fn cache_soak(load: &CacheLoad) -> Result<bool> {
    let work = Workdir::new("cache")?;
    let started = Instant::now();
    let mut children = Vec::new();
    for slot in 0..load.procs {
        let mut command = worker_command(Role::Cache, Kind::Flock, &work.0);
        command
            .arg("--rounds")
            .arg(load.seconds.to_string())
            .arg("--seed")
            .arg((now_ns() + slot as u64).to_string());
        children.push(spawn(command)?);
    }
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for out in collect(children)? {
        for line in out.lines() {
            if let Some((name, n)) = line.rsplit_once(' ') {
                *totals.entry(name.to_owned()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    // Afterwards: nothing half-made, nothing left in staging.
    let cache = lockyard_cache::Cache::open(work.0.join("cache"), lockyard_cache::CacheOptions::new())
        .map_err(|e| e.to_string())?;
    let swept = cache.sweep().map_err(|e| e.to_string())?;
    let mut failures =
        totals.get("violations").copied().unwrap_or(0) + totals.get("errors").copied().unwrap_or(0);
    failures += (swept.removed.len() + swept.kept.len()) as u64;
    for key in CACHE_KEYS {
        if let Err(e) = cache.verify(key) {
            println!("  {key}: {e}");
            failures += 1;
        }
    }
    let shown: Vec<String> = totals.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "cache soak: {} processes for {:.1?}: {}; debris after the run {}, failures {failures}",
        load.procs,
        started.elapsed(),
        shown.join(", "),
        swept.removed.len() + swept.kept.len(),
    );
    Ok(failures == 0)
}

fn cache_worker(args: &WorkerArgs) -> Result<()> {
    use lockyard_cache::{Cache, CacheError, CacheOptions, Clean};
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let cache = Cache::open(
        args.dir.join("cache"),
        CacheOptions::new().wait(Wait::timeout(Duration::from_millis(500))),
    )
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(args.rounds as u64);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let build = |len: usize| {
        move |dir: &Path| -> lockyard_cache::BuildResult {
            let payload = vec![b'x'; len];
            std::fs::write(dir.join("payload"), &payload)?;
            Ok(serde_json::json!({ "len": len }))
        }
    };
    while Instant::now() < deadline {
        let key = CACHE_KEYS[rng.usize(..CACHE_KEYS.len())];
        let op = rng.u8(0..20);
        let outcome: std::result::Result<&str, CacheError> = match op {
            0..=8 => cache.lookup(key).map(|found| match found {
                Some(guard) => {
                    let ok = entry_is_whole(&guard) && {
                        std::thread::sleep(Duration::from_micros(rng.u64(0..2000)));
                        entry_is_whole(&guard)
                    };
                    if ok { "lookups" } else { "violations" }
                }
                None => "misses",
            }),
            9..=12 => cache
                .ensure(key, build(rng.usize(1..65536)))
                .map(|g| if entry_is_whole(&g) { "ensures" } else { "violations" }),
            13..=16 => cache
                .store(key, build(rng.usize(1..65536)))
                .map(|g| if entry_is_whole(&g) { "stores" } else { "violations" }),
            17 => cache.clean(Clean::KeepNewest(2)).map(|_| "cleans"),
            18 => cache.clean(Clean::All).map(|_| "full cleans"),
            _ => cache.sweep().map(|_| "sweeps"),
        };
        let counted = match outcome {
            Ok(what) => what,
            Err(e) if e.is_busy() => "busy",
            Err(e) => {
                eprintln!("cache worker {}: {e}", std::process::id());
                "errors"
            }
        };
        *counts.entry(counted).or_default() += 1;
    }
    let mut out = std::io::stdout().lock();
    for (name, n) in counts {
        let _ = writeln!(out, "{name} {n}");
    }
    Ok(())
}

/// The entry's payload has the length its metadata recorded.
fn entry_is_whole(guard: &lockyard_cache::EntryGuard) -> bool {
    let expected = guard.meta().user["len"].as_u64();
    let actual = std::fs::metadata(guard.path().join("payload")).ok().map(|m| m.len());
    expected.is_some() && expected == actual
}
