//! lockyard-flock against the raw syscalls and the tools it replaces.
//!
//! `cargo bench -p lockyard-flock --bench flock`; results and ratios in
//! docs/benchmarks.md.
//!
//! - `acquire_release`: an uncontended exclusive lock taken and released
//!   through [`LockFile`] (hardened open and `fstat` checks, the fstatfs
//!   policy once per device, the inode check, release by close) against
//!   the bare `open + flock + close`.
//! - `holders_10k` / `holders_100k`: who holds one file among 10,000 and
//!   100,000 held locks, with `holders_of` (reads mountinfo and
//!   /proc/locks, parses, resolves the key), against reading /proc/locks
//!   alone (the kernel's generation of the text is the floor) and running
//!   `cat /proc/locks`. `lslocks -p PID` is far slower (minutes at 10k
//!   locks) and is timed once when `LOCKYARD_BENCH_LSLOCKS=1`.
//!
//! The locks are held by child processes (see `held.rs`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use lockyard_flock::{LockFile, holders_of};
use rustix::fs::{FlockOperation, Mode, OFlags};

use lockyard_test_support::held;

use held::{Held, lock_dir};

fn acquire_release(c: &mut Criterion) {
    let dir = lock_dir("acquire");
    let path = dir.join("a.lock");
    let file = LockFile::new(&path).expect("lock file");
    drop(file.try_lock().expect("create"));
    let mut group = c.benchmark_group("acquire_release");
    group.bench_function("lockyard_try_lock", |b| {
        b.iter(|| drop(black_box(file.try_lock().expect("try").expect("free"))));
    });
    group.bench_function("raw_open_flock_close", |b| {
        b.iter(|| {
            let fd: OwnedFd =
                rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC | OFlags::CREATE, Mode::from(0o644))
                    .expect("open");
            rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).expect("flock");
            drop(black_box(fd));
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn holders(c: &mut Criterion, count: usize) {
    let held = Held::new(count);
    let target = held.target();
    let expected_pid = held.children[0].id();
    assert_eq!(
        holders_of(&target).expect("holders").holding().next().and_then(|h| h.pid),
        Some(expected_pid),
        "the bench must find the real holder"
    );
    let mut group = c.benchmark_group(format!("holders_{}k", count / 1000));
    group.sample_size(10).measurement_time(Duration::from_secs(if count > 50_000 { 20 } else { 5 }));
    group.bench_function("lockyard_holders_of", |b| {
        b.iter(|| black_box(holders_of(&target).expect("holders")));
    });
    group.bench_function("read_proc_locks", |b| {
        b.iter(|| black_box(std::fs::read("/proc/locks").expect("read")));
    });
    group.bench_function("cat_proc_locks", |b| {
        b.iter(|| {
            let out = Command::new("cat").arg("/proc/locks").stdout(Stdio::piped()).output().expect("cat");
            black_box(out.stdout.len())
        });
    });
    group.finish();
    if std::env::var_os("LOCKYARD_BENCH_LSLOCKS").is_some() {
        let started = Instant::now();
        let out = Command::new("lslocks").args(["-p", &expected_pid.to_string()]).output().expect("lslocks");
        assert!(out.status.success());
        println!("holders_{}k/lslocks_p_pid: one run took {:.1?}", count / 1000, started.elapsed());
    }
}

fn holders_10k(c: &mut Criterion) {
    holders(c, 10_000);
}

fn holders_100k(c: &mut Criterion) {
    holders(c, 100_000);
}

criterion_group!(benches, acquire_release, holders_10k, holders_100k);
criterion_group!(smoke, acquire_release, holders_10k);

fn main() {
    if held::child_mode() {
        return;
    }
    // CI's smoke run (`--test`) checks that every benchmark works; the
    // 100k case only adds minutes of setup to that.
    if std::env::args().any(|a| a == "--test") {
        smoke();
    } else {
        benches();
    }
    Criterion::default().configure_from_args().final_summary();
}
