//! lockyard-cache against the plain filesystem work it wraps.
//!
//! `cargo bench -p lockyard-cache --bench cache`; results and ratios in
//! docs/benchmarks.md.
//!
//! - `lookup_hit`: `lookup` of a present entry (shared lock, metadata
//!   read and parse, last-use stamp) and dropping the guard, against a
//!   bare `stat` of the entry plus `open` of a file in it.
//! - `publish_1MiB` / `publish_256MiB`: `store` of one file of that size
//!   (write, digest, fsync of every file and directory, rename, root
//!   fsync, staging clean-up), against writing the same bytes, `fsync`ing
//!   them and renaming into place by hand, and against `cp -r` of a
//!   prepared tree followed by `sync`; `lockyard_put` copies that tree in
//!   with `Cache::put` (one pass: read, digest, write, fsync).
//! - `list_10k` / `sweep_10k`: `list` over 10,000 entries, `sweep` of
//!   10,000 dead staging slots (a lock file and a directory each, as a
//!   killed writer leaves them).
//!
//! Roots are on /dev/shm (tmpfs) for lookup, list and sweep, so setup is
//! quick, and in the target directory (the disk) for publish.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group};
use lockyard_cache::{Cache, CacheOptions};

fn scratch(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(format!("lockyard-bench-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

fn disk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

fn tmpfs() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() }
}

fn lookup_hit(c: &mut Criterion) {
    let dir = scratch(&tmpfs(), "lookup");
    let cache = Cache::open(dir.join("c"), CacheOptions::new()).expect("open");
    drop(
        cache
            .store("k", |d| {
                std::fs::write(d.join("data"), b"hello")?;
                Ok(serde_json::json!({ "version": "6.18" }))
            })
            .expect("store"),
    );
    let entry = cache.entry_path("k");
    let mut group = c.benchmark_group("lookup_hit");
    group.bench_function("lockyard_lookup", |b| {
        b.iter(|| drop(black_box(cache.lookup("k").expect("lookup").expect("hit"))));
    });
    group.bench_function("stat_and_open", |b| {
        b.iter(|| {
            black_box(std::fs::symlink_metadata(&entry).expect("stat"));
            drop(black_box(std::fs::File::open(entry.join("data")).expect("open")));
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn publish(c: &mut Criterion, size: usize, label: &str) {
    let dir = scratch(&disk(), label);
    let cache = Cache::open(dir.join("c"), CacheOptions::new()).expect("open");
    let payload = vec![0x5a_u8; size];
    let source = dir.join("source");
    std::fs::create_dir(&source).expect("source");
    std::fs::write(source.join("data"), &payload).expect("source data");
    let mut group = c.benchmark_group(label);
    group.sample_size(10).measurement_time(Duration::from_secs(if size > 1 << 20 { 40 } else { 5 }));
    group.bench_function("lockyard_store", |b| {
        b.iter(|| {
            drop(black_box(
                cache
                    .store("k", |d| {
                        std::fs::write(d.join("data"), &payload)?;
                        Ok(serde_json::Value::Null)
                    })
                    .expect("store"),
            ));
        });
    });
    // The same bytes copied in from a directory: one pass, digested and
    // synced as they are written (what `lockyard cache put` does).
    group.bench_function("lockyard_put", |b| {
        b.iter(|| drop(black_box(cache.put("k", &source, ()).expect("put"))));
    });
    let by_hand = dir.join("by-hand");
    group.bench_function("write_fsync_rename", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&by_hand);
            },
            |()| {
                let tmp = dir.join("by-hand.tmp");
                std::fs::create_dir(&tmp).expect("mkdir");
                let mut file = std::fs::File::create(tmp.join("data")).expect("create");
                file.write_all(&payload).expect("write");
                file.sync_all().expect("fsync");
                std::fs::File::open(&tmp).and_then(|d| d.sync_all()).expect("fsync dir");
                std::fs::rename(&tmp, &by_hand).expect("rename");
                std::fs::File::open(&dir).and_then(|d| d.sync_all()).expect("fsync root");
            },
            BatchSize::PerIteration,
        );
    });
    // The same bytes as one cacache blob (SHA-256 content address plus an
    // index entry). cacache does not fsync, so this anchor is the cost of
    // its hashing and layout, not of durability.
    let cacache_dir = dir.join("cacache");
    group.bench_function("cacache_write_sync", |b| {
        b.iter(|| black_box(cacache::write_sync(&cacache_dir, "k", &payload).expect("cacache write")));
    });
    let copy = dir.join("copy");
    group.bench_function("cp_r_and_sync", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&copy);
            },
            |()| {
                let status = Command::new("sh")
                    .arg("-c")
                    .arg(format!("cp -r '{}' '{}' && sync", source.display(), copy.display()))
                    .status()
                    .expect("cp");
                assert!(status.success());
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn publish_1mib(c: &mut Criterion) {
    publish(c, 1 << 20, "publish_1MiB");
}

fn publish_256mib(c: &mut Criterion) {
    publish(c, 256 << 20, "publish_256MiB");
}

fn list_10k(c: &mut Criterion) {
    let dir = scratch(&tmpfs(), "list");
    let cache = Cache::open(dir.join("c"), CacheOptions::new()).expect("open");
    for i in 0..10_000 {
        drop(
            cache
                .store(&format!("entry-{i}"), |d| {
                    std::fs::write(d.join("data"), b"x")?;
                    Ok(serde_json::Value::Null)
                })
                .expect("store"),
        );
    }
    let mut group = c.benchmark_group("list_10k");
    group.sample_size(10);
    group.bench_function("lockyard_list", |b| {
        b.iter(|| assert_eq!(black_box(cache.list().expect("list")).len(), 10_000));
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn sweep_10k(c: &mut Criterion) {
    let dir = scratch(&tmpfs(), "sweep");
    let cache = Cache::open(dir.join("c"), CacheOptions::new()).expect("open");
    let staging = cache.root().join(".staging");
    let mut group = c.benchmark_group("sweep_10k");
    group.sample_size(10);
    group.bench_function("lockyard_sweep", |b| {
        b.iter_batched(
            || {
                for i in 0..10_000 {
                    let name = format!("k{i}.4242.{i:016x}");
                    std::fs::create_dir(staging.join(&name)).expect("debris dir");
                    std::fs::write(staging.join(&name).join("half"), b"x").expect("debris file");
                    std::fs::write(staging.join(format!("{name}.lock")), b"").expect("debris lock");
                }
            },
            |()| assert_eq!(black_box(cache.sweep().expect("sweep")).removed.len(), 10_000),
            BatchSize::PerIteration,
        );
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, lookup_hit, publish_1mib, publish_256mib, list_10k, sweep_10k);
criterion_group!(smoke, lookup_hit, publish_1mib, list_10k, sweep_10k);

fn main() {
    // CI's smoke run (`--test`) checks that every benchmark works; the
    // 256 MiB publish only adds disk traffic to that.
    if std::env::args().any(|a| a == "--test") {
        smoke();
    } else {
        benches();
    }
    Criterion::default().configure_from_args().final_summary();
}
