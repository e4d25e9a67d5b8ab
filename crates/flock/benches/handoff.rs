//! Hand-off latency: how long after a holder releases a lock does a waiter
//! own it?
//!
//! `cargo bench -p lockyard-flock --bench handoff` (200 hand-offs per case;
//! `-- --test` runs 5, as CI's smoke run does). Prints p50/p90/p99/max per
//! case; results in docs/benchmarks.md.
//!
//! - `lockyard_close`: the holder drops its [`LockGuard`] (unlock + close);
//!   the waiter is in [`LockFile::lock_timeout`], woken by inotify.
//! - `lockyard_unlock_only`: the holder unlocks with `flock(LOCK_UN)` and
//!   keeps the descriptor open; no inotify event, so the waiter notices on
//!   its capped backoff.
//! - `queued_unlock_only`: the same unlock, the waiter in
//!   [`lockyard_flock::lock_descriptor_queued`] (blocked in the kernel on
//!   a thread of its own, with a timeout).
//! - `kernel_blocking_flock`: the anchor, a waiter blocked in `flock(2)`
//!   itself, woken by the kernel (what lockyard cannot use because it
//!   cannot be cancelled without signals).
//!
//! Holder and waiter are threads with separate open file descriptions, for
//! which flock behaves exactly as between processes.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lockyard_flock::LockFile;
use rustix::fs::{FlockOperation, Mode, OFlags};

#[derive(Clone, Copy)]
enum Case {
    LockyardClose,
    LockyardUnlockOnly,
    QueuedUnlockOnly,
    KernelBlocking,
}

fn one_handoff(path: &Path, case: Case) -> Duration {
    let holder = LockFile::new(path).expect("file").try_lock().expect("try").expect("free");
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiter_path = path.to_owned();
    let waiter = std::thread::spawn(move || {
        ready_tx.send(()).expect("send");
        match case {
            Case::KernelBlocking => {
                let fd = rustix::fs::open(&waiter_path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .expect("open");
                rustix::fs::flock(&fd, FlockOperation::LockExclusive).expect("flock");
                Instant::now()
            }
            Case::QueuedUnlockOnly => {
                let fd = rustix::fs::open(&waiter_path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .expect("open");
                let options = lockyard_flock::LockOptions::new().exclusive();
                let locked = lockyard_flock::lock_descriptor_queued(fd, &options, Duration::from_secs(10))
                    .expect("lock");
                let at = Instant::now();
                drop(locked);
                at
            }
            Case::LockyardClose | Case::LockyardUnlockOnly => {
                let file = LockFile::new(&waiter_path).expect("file");
                let guard = file.lock_timeout(Duration::from_secs(10)).expect("lock");
                let at = Instant::now();
                drop(guard);
                at
            }
        }
    });
    ready_rx.recv().expect("ready");
    // Let the waiter reach its wait (and, for lockyard, settle into the
    // longest backoff interval, the worst case for an unlock without close).
    std::thread::sleep(Duration::from_millis(40));
    let released = Instant::now();
    match case {
        Case::LockyardUnlockOnly | Case::QueuedUnlockOnly => {
            rustix::fs::flock(&holder, FlockOperation::Unlock).expect("unlock");
            let acquired = waiter.join().expect("join");
            drop(holder);
            return acquired.saturating_duration_since(released);
        }
        Case::LockyardClose | Case::KernelBlocking => drop(holder),
    }
    waiter.join().expect("join").saturating_duration_since(released)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let rounds = if smoke { 5 } else { 200 };
    let dir = Path::new("/dev/shm").join(format!("lockyard-handoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("handoff.lock");
    println!("hand-off latency over {rounds} hand-offs (release -> waiter owns the lock)");
    println!("{:<24} {:>10} {:>10} {:>10} {:>10}", "case", "p50", "p90", "p99", "max");
    for (name, case) in [
        ("lockyard_close", Case::LockyardClose),
        ("lockyard_unlock_only", Case::LockyardUnlockOnly),
        ("queued_unlock_only", Case::QueuedUnlockOnly),
        ("kernel_blocking_flock", Case::KernelBlocking),
    ] {
        let mut samples: Vec<Duration> = (0..rounds).map(|_| one_handoff(&path, case)).collect();
        samples.sort();
        println!(
            "{name:<24} {:>10.3?} {:>10.3?} {:>10.3?} {:>10.3?}",
            percentile(&samples, 0.50),
            percentile(&samples, 0.90),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
