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

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::io::Read;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, preflight, resolve);
criterion_main!(benches);
