//! `lockyard run` against util-linux flock(1), whole processes, same run:
//!
//! - **uncontended**: `X F true`, one after another;
//! - **contended loop**: four shell loops, each taking the same lock 100
//!   times around `true`;
//! - **explicit-unlock hand-off**: a holder takes the lock on a descriptor,
//!   a waiter `X F sleep 0.05` queues behind it, the holder unlocks without
//!   closing (as `flock -u` does) and watches the waiter's own
//!   `/proc/PID/fdinfo/FD` until its lock shows. Not /proc/locks: each
//!   read of it takes the kernel's file-lock rwsem for writing (which waits
//!   for an RCU grace period, milliseconds), and every lock operation on
//!   the host, the waiter's among them, waits for that: polling it made
//!   both programs' hand-off look like 10 ms. Waiters blocking in the
//!   kernel's queue are woken at once; a polling wait notices an unlock
//!   without a close only on a retry.
//!
//! `cargo bench -p lockyard-cli --bench run`; `-- --test` (CI's smoke run)
//! does a few rounds of each.

#![allow(clippy::print_stdout)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// The two programs compared: argv prefixes before `FILE COMMAND`.
fn programs() -> [(&'static str, Vec<String>); 2] {
    [("flock(1)", vec!["flock".to_owned()]), ("lockyard run", vec![LOCKYARD.to_owned(), "run".to_owned()])]
}

fn run_once(prefix: &[String], file: &Path, command: &[&str]) -> std::process::Output {
    Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(file)
        .args(command)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

/// `X F true` one after another, the two programs alternating so that
/// drift in the machine's load touches both alike.
fn uncontended(dir: &Path, rounds: usize) {
    let file = dir.join("uncontended.lock");
    let programs = programs();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, prefix)) in programs.iter().enumerate() {
            let started = Instant::now();
            assert!(run_once(prefix, &file, &["true"]).status.success());
            times[i].push(started.elapsed());
        }
    }
    let mut medians = Vec::new();
    for (i, (name, _)) in programs.iter().enumerate() {
        times[i].sort();
        let median = times[i][times[i].len() / 2];
        println!("uncontended {name:<13} median {median:>10.3?} over {rounds} runs");
        medians.push(median);
    }
    println!("uncontended ratio lockyard/flock {:.2}", medians[1].as_secs_f64() / medians[0].as_secs_f64());
}

/// Four shell loops cycling the same lock; every acquisition's wait as
/// `--verbose` reports it, so a starved waiter shows as the longest one.
fn contended(dir: &Path, per_loop: usize) {
    let file = dir.join("contended.lock");
    let mut totals = Vec::new();
    for (name, prefix) in programs() {
        let script = format!(
            "for l in 1 2 3 4; do (for i in $(seq {per_loop}); do {} --verbose \"$F\" true || exit 1; done) & done; wait",
            prefix.join(" ")
        );
        let started = Instant::now();
        let out = Command::new("bash").arg("-c").arg(&script).env("F", &file).output().expect("bash");
        let total = started.elapsed();
        assert!(out.status.success(), "{out:?}");
        let mut waits: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("getting lock took ").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        assert_eq!(waits.len(), 4 * per_loop, "every acquisition reports its wait");
        waits.sort_by(f64::total_cmp);
        println!(
            "contended   {name:<13} 4 loops x {per_loop}: {total:>10.3?}; longest single wait {:.1} ms",
            waits[waits.len() - 1] * 1000.0
        );
        totals.push(total);
    }
    println!("contended ratio lockyard/flock {:.2}", totals[1].as_secs_f64() / totals[0].as_secs_f64());
}

/// How long after an explicit unlock a queued waiter holds the lock: the
/// holder unlocks without closing (as `flock -u` does), then reads
/// /proc/locks until the waiter's lock shows (a read costs tens of
/// microseconds and perturbs nobody, unlike probing with a lock).
fn handoff(dir: &Path, rounds: usize) {
    let file = dir.join("handoff.lock");
    std::fs::write(&file, b"").expect("lock file");
    let target = std::fs::canonicalize(&file).expect("lock file path");
    let variants: [(&str, Vec<&str>); 3] = [
        ("flock(1)", vec!["flock"]),
        ("lockyard run", vec![LOCKYARD, "run"]),
        ("lockyard run -w 60", vec![LOCKYARD, "run", "-w", "60"]),
    ];
    for (name, prefix) in variants {
        let mut latencies = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let holder = std::fs::File::open(&file).expect("lock file");
            rustix::fs::flock(holder.as_fd(), rustix::fs::FlockOperation::LockExclusive).expect("hold");
            let mut waiter = Command::new(prefix[0])
                .args(&prefix[1..])
                .arg(&file)
                .args(["sleep", "0.05"])
                .stdin(Stdio::null())
                .spawn()
                .expect("waiter");
            // Let the waiter queue up behind us.
            std::thread::sleep(Duration::from_millis(30));
            let fdinfo = lock_fdinfo(waiter.id(), &target);
            let unlocked = Instant::now();
            rustix::fs::flock(holder.as_fd(), rustix::fs::FlockOperation::Unlock).expect("unlock");
            let taken = loop {
                // A granted lock shows in its holder's fdinfo; a blocked
                // request does not.
                if std::fs::read_to_string(&fdinfo).is_ok_and(|info| info.contains("lock:")) {
                    break unlocked.elapsed();
                }
                assert!(
                    unlocked.elapsed() < Duration::from_secs(10),
                    "{name}: the waiter never took the lock"
                );
            };
            latencies.push(taken);
            assert!(waiter.wait().expect("waiter").success());
            drop(holder);
        }
        latencies.sort_unstable();
        let at = |p: f64| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let i = ((latencies.len() - 1) as f64 * p).round() as usize;
            latencies[i]
        };
        println!(
            "hand-off    {name:<19} p50 {:>10.3?} p99 {:>10.3?} max {:>10.3?} over {rounds} explicit unlocks",
            at(0.5),
            at(0.99),
            latencies[latencies.len() - 1],
        );
    }
}

/// The fdinfo file of the descriptor through which process `pid` has
/// `target` open (the waiter's lock descriptor).
fn lock_fdinfo(pid: u32, target: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|link| link == target) {
                    return PathBuf::from(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()));
                }
            }
        }
        assert!(Instant::now() < deadline, "pid {pid} never opened {}", target.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let dir: PathBuf = std::env::temp_dir().join(format!("lockyard-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    if smoke {
        uncontended(&dir, 3);
        contended(&dir, 2);
        handoff(&dir, 2);
    } else {
        uncontended(&dir, 301);
        contended(&dir, 100);
        handoff(&dir, 200);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
