//! Reservation planning and acquisition at scale, and hand-off latency.
//!
//! `cargo bench -p lockyard-topo --bench reserve`; results in
//! docs/benchmarks.md.
//!
//! - `plan_acquire/{llcs}`: `reserve` of 1 CPU (plan from one /proc/locks
//!   snapshot, then the tries) and its release, on a synthetic host of
//!   8-CPU LLCs, while half of the CPUs are held through other open file
//!   descriptions (the same /proc/locks load other processes would add).
//!   32 LLCs is the 256-CPU host; 8 and 64 show how it scales.
//! - `plan_acquire/per_file_scan/{llcs}`: the anchor, ktstr's way of
//!   learning which lock files are held: one read of /proc/locks per lock
//!   file, searched for that file's inode.
//! - `enforce`: `reserve` of 1 CPU of this host and its release, plain
//!   and with [`Reserver::enforce`] (a cpuset cgroup made, filled and
//!   removed). Root and a cpuset hierarchy only; said and skipped
//!   otherwise.
//! - hand-off latency (printed, not a criterion group): a `reserve_wait`er
//!   blocked behind a holder, timed from the holder's release to the
//!   waiter's return, p50 and p99 over many rounds.

#![allow(clippy::print_stdout)]

use lockyard_topo::Wait;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use lockyard_topo::{Amount, Request, Reserver, Topology};

fn lock_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("lockyard-bench-reserve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn plan_acquire(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_acquire");
    for llcs in [8u32, 32, 64] {
        let dir = lock_dir(&format!("plan-{llcs}"));
        let topology = Topology::synthetic(1, llcs, 8, false);
        let all = topology.online.clone();
        let holder = Reserver::new(&dir, topology.clone(), &all).expect("reserver");
        let half = usize::try_from(llcs * 4).expect("fits");
        let held = holder.reserve(&Request::new(Amount::Cpus(half))).expect("half");
        let reserver = Reserver::new(&dir, topology, &all).expect("reserver");
        group.bench_function(BenchmarkId::from_parameter(llcs), |b| {
            b.iter(|| drop(black_box(reserver.reserve(&Request::new(Amount::Cpus(1))).expect("one"))));
        });
        let files: Vec<PathBuf> =
            std::fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok().map(|e| e.path())).collect();
        group.bench_function(BenchmarkId::new("per_file_scan", llcs), |b| {
            b.iter(|| {
                let mut found = 0;
                for file in &files {
                    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(file).expect("stat"));
                    let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
                    found += usize::from(locks.contains(&format!(":{ino} ")));
                }
                black_box(found)
            });
        });
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

fn handoff(rounds: usize) {
    let dir = lock_dir("handoff");
    let topology = Topology::synthetic(1, 4, 8, false);
    let all = topology.online.clone();
    let reserver = Reserver::new(&dir, topology, &all).expect("reserver");
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let held = reserver.reserve(&Request::new(Amount::Cpus(32))).expect("all");
        let waiter = {
            let reserver = reserver.clone();
            std::thread::spawn(move || {
                let got = reserver
                    .reserve_wait(&Request::new(Amount::Cpus(8)), &Wait::timeout(Duration::from_secs(10)));
                let reservation = got.expect("handed off");
                let woke = Instant::now();
                drop(reservation);
                woke
            })
        };
        // Let the waiter reach its blocking wait.
        std::thread::sleep(Duration::from_millis(5));
        let released = Instant::now();
        drop(held);
        let woke = waiter.join().expect("waiter");
        latencies.push(woke.saturating_duration_since(released));
    }
    latencies.sort();
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    println!(
        "reserve_wait hand-off over {rounds} rounds: p50 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(99),
        at(100)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn enforce(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        println!("enforce: skipped (needs root to create cgroups)");
        return;
    }
    let parent = match lockyard_topo::CgroupParent::discover() {
        Ok(parent) => parent,
        Err(e) => {
            println!("enforce: skipped ({e})");
            return;
        }
    };
    let dir = lock_dir("enforce");
    let topology = Topology::read(Path::new("/"));
    let allowed = topology.allowed();
    let reserver = Reserver::new(&dir, topology, &allowed).expect("reserver");
    let request = Request::new(Amount::Cpus(1));
    let mut group = c.benchmark_group("enforce");
    group.bench_function("reserve", |b| {
        b.iter(|| drop(black_box(reserver.reserve(&request).expect("reserve"))));
    });
    group.bench_function("reserve_enforce", |b| {
        b.iter(|| {
            let mut reservation = reserver.reserve(&request).expect("reserve");
            reserver.enforce(&mut reservation, &parent).expect("enforce");
            drop(black_box(reservation));
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, plan_acquire, enforce);

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    benches();
    handoff(if smoke { 5 } else { 300 });
    Criterion::default().configure_from_args().final_summary();
}
