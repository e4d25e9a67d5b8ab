//! Parser throughput on large inputs, against the `procfs` crate in the
//! same run.
//!
//! `cargo bench -p lockyard-procfs --bench parsers`; results and ratios are
//! recorded in docs/benchmarks.md. The inputs are synthetic but shaped like
//! the kernel's output (see tests/fixtures for real samples): a 100k-line
//! /proc/locks with waiters, OFD and POSIX ranges, and a 10k-line mountinfo
//! with escapes, optional fields and long overlay options.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lockyard_procfs::{Cmdline, CpuList, FdInfo, MountInfo, ProcLocks};
use procfs::FromBufRead;

fn proc_locks_text(lines: usize) -> String {
    let mut text = String::with_capacity(lines * 56);
    let mut ordinal = 0;
    let mut i = 0;
    while i < lines {
        ordinal += 1;
        let inode = 10_000_000 + i;
        let pid = 1000 + i % 30_000;
        match i % 10 {
            0..=5 => writeln!(text, "{ordinal}: FLOCK  ADVISORY  WRITE {pid} fe:00:{inode} 0 EOF"),
            6 => writeln!(text, "{ordinal}: OFDLCK ADVISORY  READ -1 00:2c:{inode} 0 EOF"),
            7 => writeln!(text, "{ordinal}: POSIX  ADVISORY  WRITE {pid} 103:02:{inode} 4096 8191"),
            _ => {
                writeln!(text, "{ordinal}: FLOCK  ADVISORY  WRITE {pid} fe:00:{inode} 0 EOF").unwrap();
                i += 1;
                writeln!(text, "{ordinal}: -> FLOCK  ADVISORY  READ {} fe:00:{inode} 0 EOF", pid + 1)
            }
        }
        .unwrap();
        i += 1;
    }
    text
}

fn mountinfo_text(lines: usize) -> String {
    let mut text = String::with_capacity(lines * 160);
    for i in 0..lines {
        let id = 100 + i;
        match i % 5 {
            0 => writeln!(
                text,
                "{id} 27 0:{} / /run/user/1000/doc/with\\040space/{i} rw,nosuid,nodev,relatime shared:{i} - tmpfs tmpfs rw,size=1024k,mode=700",
                40 + i % 200
            ),
            1 => writeln!(
                text,
                "{id} 27 0:{} /@snapshots/{i} /srv/snap/{i} rw,relatime master:3 - btrfs /dev/nvme0n1p2 rw,ssd,space_cache=v2,subvolid={i},subvol=/@snapshots/{i}",
                26
            ),
            2 => writeln!(
                text,
                "{id} 27 0:{} / /var/lib/docker/overlay2/{i:064x}/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABCDEFGHIJ:/var/lib/docker/overlay2/l/KLMNOPQRST,upperdir=/var/lib/docker/overlay2/{i:064x}/diff,workdir=/var/lib/docker/overlay2/{i:064x}/work",
                300 + i % 1000
            ),
            3 => writeln!(text, "{id} 27 254:0 /home/u/src/{i} /mnt/bind/{i} rw,relatime - ext4 /dev/vda rw,discard"),
            _ => writeln!(text, "{id} 27 0:{} / /sys/fs/cgroup/unit{i} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw", 30),
        }
        .unwrap();
    }
    text
}

fn proc_locks(c: &mut Criterion) {
    let text = proc_locks_text(100_000);
    let bytes = text.as_bytes();
    let mut group = c.benchmark_group("proc_locks_100k");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("lockyard_procfs", |b| b.iter(|| ProcLocks::parse(black_box(bytes)).unwrap()));
    group.bench_function("procfs_crate", |b| {
        b.iter(|| procfs::Locks::from_buf_read(black_box(bytes)).unwrap());
    });
    group.finish();
}

fn mountinfo(c: &mut Criterion) {
    let text = mountinfo_text(10_000);
    let bytes = text.as_bytes();
    let mut group = c.benchmark_group("mountinfo_10k");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("lockyard_procfs", |b| b.iter(|| MountInfo::parse(black_box(bytes)).unwrap()));
    group.bench_function("procfs_crate", |b| {
        b.iter(|| procfs::process::MountInfos::from_buf_read(black_box(bytes)).unwrap());
    });
    group.finish();
}

fn small_files(c: &mut Criterion) {
    let fdinfo = b"pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t10010710\nlock:\t1: FLOCK  ADVISORY  WRITE 1632 fe:00:10010710 0 EOF\n";
    let cmdline = b"/usr/bin/python3\0-m\0pytest\0-x\0tests/test_locks.py\0";
    let cpus = b"0-3,8,10-11,16-31,33,35,37,39,64-127\n";
    let mut group = c.benchmark_group("small_files");
    group.bench_function("fdinfo", |b| b.iter(|| FdInfo::parse(black_box(fdinfo)).unwrap()));
    group.bench_function("cmdline_display_40", |b| {
        b.iter(|| Cmdline::parse(black_box(cmdline)).unwrap().display(40));
    });
    group.bench_function("cpu_list", |b| b.iter(|| CpuList::parse(black_box(cpus)).unwrap()));
    group.finish();
}

criterion_group!(benches, proc_locks, mountinfo, small_files);
criterion_main!(benches);
