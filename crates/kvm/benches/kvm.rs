//! lockyard-kvm's two answers, warm, against the bare system calls under
//! them.
//!
//! `cargo bench -p lockyard-kvm --bench kvm`; results and ratios in
//! docs/benchmarks.md.
//!
//! - `preflight`: a full [`Preflight::run`] of /dev/kvm (stat, open, API
//!   version, `KVM_CREATE_VM`, one capability) against a bare `open` +
//!   `close` of the device. Skipped where there is no /dev/kvm.
//! - `resolve`: a [`Resolver`] walking an installed-kernel fixture whose
//!   first two candidates are missing and third is a bzImage (header and
//!   version string read), against a bare `open` + 4 KiB read of the same
//!   file.
//! - `kernel_cache`: [`Source::Kernels`] resolving a release and config
//!   from a cache of 100 stored kernels (90 of other releases, 9 of this
//!   release built from other configs and newer than the one wanted, so
//!   passed over as stale), against the cache's own `lookup` of the
//!   wanted entry by its exact key.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::io::Read;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lockyard_cache::{Cache, CacheOptions};
use lockyard_kvm::kernels::{StoreKernel, config_fingerprint};
use lockyard_kvm::{Capability, Preflight, Resolver, Source};

fn preflight(c: &mut Criterion) {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("preflight: skipped, no /dev/kvm here");
        return;
    }
    let mut group = c.benchmark_group("preflight");
    let preflight = Preflight::new().capability(Capability::parse("USER_MEMORY").expect("known"));
    group.bench_function("lockyard_preflight", |b| {
        b.iter(|| assert!(black_box(preflight.run()).passed()));
    });
    group.bench_function("open_close", |b| {
        b.iter(|| drop(black_box(std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm"))));
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("lockyard-bench-kvm-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("boot")).expect("fixture");
    let image = lockyard_test_support::images::bzimage(0x020F, "6.1.0-bench #1 SMP");
    let path = dir.join("boot/vmlinuz");
    std::fs::write(&path, &image).expect("image");
    let resolver = Resolver::new()
        .arch(lockyard_kvm::Arch::X86_64)
        .source(Source::Installed { root: dir.clone(), release: "6.1.0-bench".to_owned() });
    let mut group = c.benchmark_group("resolve");
    group.bench_function("lockyard_resolve", |b| {
        b.iter(|| black_box(resolver.resolve().expect("resolved")));
    });
    group.bench_function("open_read_4k", |b| {
        let mut buf = [0u8; 4096];
        b.iter(|| {
            let mut file = std::fs::File::open(&path).expect("open");
            black_box(file.read(&mut buf).expect("read"));
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn kernel_cache(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("lockyard-bench-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("fixture");
    let cache = Cache::open(dir.join("cache"), CacheOptions::new()).expect("cache");
    let config = |n: usize| format!("CONFIG_BENCH={n}\n");
    let store = |version: &str, n: usize| {
        let image = dir.join("bzImage");
        std::fs::write(&image, lockyard_test_support::images::bzimage(0x020F, version)).expect("image");
        let config_path = dir.join("config");
        std::fs::write(&config_path, config(n)).expect("config");
        StoreKernel::image(&image).config(&config_path).store(&cache).expect("store").key
    };
    // Oldest first: the wanted kernel, then its stale rebuilds, then
    // kernels of other releases.
    let wanted = store("6.14.2", 0);
    for n in 1..10 {
        store("6.14.2", n);
    }
    for n in 0..90 {
        store(&format!("6.{}.{}", 1 + n / 10, n % 10), 0);
    }
    let resolver = Resolver::new()
        .arch(lockyard_kvm::Arch::X86_64)
        .version("6.14.2")
        .config(config_fingerprint(config(0).as_bytes()))
        .source(Source::Kernels(cache.clone()));
    let resolved = resolver.resolve().expect("resolved");
    assert!(resolved.path.starts_with(cache.entry_path(&wanted)), "{resolved:?}");
    assert_eq!(resolved.passed_over.len(), 9);
    drop(resolved);
    let mut group = c.benchmark_group("kernel_cache");
    group.bench_function("lockyard_resolve_100", |b| {
        b.iter(|| black_box(resolver.resolve().expect("resolved")));
    });
    group.bench_function("cache_lookup_one", |b| {
        b.iter(|| black_box(cache.lookup(&wanted).expect("lookup").expect("there")));
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, preflight, resolve, kernel_cache);
criterion_main!(benches);
