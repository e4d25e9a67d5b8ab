//! The remote tier against a local S3 server (moto, as in the tests),
//! compared in the same run with opendal alone moving the same bytes:
//!
//! - **push**: `Cache::push` of a one-file entry (pack as tar + zstd while
//!   reading and digesting, multipart upload, manifest) against opendal's
//!   writer streaming the same file up in the same 8 MiB parts, and against
//!   that followed by a second, manifest-sized object (a push's two
//!   requests);
//! - **pull**: `Cache::pull` into an empty cache (download, unpack, digest,
//!   fsync, publish) against opendal's reader streaming the object into a
//!   file that is then fsynced;
//! - **local hit**: opening a cache with a remote set and finding the entry
//!   locally, against the same without a remote: what a remote costs a
//!   command that never needs it.
//!
//! Each side runs in a child process of its own (the S3 settings are
//! passed in its environment) and reports its median time and its peak
//! RSS (VmHWM). `cargo bench -p lockyard-cache --features remote --bench
//! remote`; `-- --test` (CI's smoke run) moves 1 MiB once each way.

#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockyard_cache::{Cache, CacheOptions, Remote};
use lockyard_test_support::incompressible;
use lockyard_test_support::s3::Moto;

const BUCKET: &str = "lockyard-bench";
const PART: usize = 8 << 20;
/// As the cache does: one part on the wire while the next is handled.
const IN_FLIGHT: usize = 2;
/// About the size of a manifest the cache writes.
const MANIFEST_BYTES: usize = 300;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let smoke = args.iter().any(|a| a == "--test");
    let dir = std::env::temp_dir().join(format!("lockyard-bench-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    assert!(Moto::available(), "needs moto's S3 server (cargo xtask deps installs it)");
    let server = Moto::start(&dir, BUCKET);
    let sizes: &[(usize, &str, usize)] =
        if smoke { &[(1 << 20, "1MiB", 1)] } else { &[(1 << 20, "1MiB", 31), (256 << 20, "256MiB", 5)] };
    println!("| entry | op | lockyard | opendal alone | ratio | lockyard peak RSS | opendal peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for &(size, label, rounds) in sizes {
        let case = dir.join(label);
        std::fs::create_dir_all(case.join("src")).expect("mkdir");
        // Incompressible, as built artefacts mostly are once compressed.
        std::fs::write(case.join("src/data"), incompressible(size)).expect("write");
        let run = |op: &str| -> (Duration, u64) {
            let out = Command::new(std::env::current_exe().expect("self"))
                .args(["--child", op, &case.display().to_string(), &rounds.to_string(), label])
                .env("AWS_ENDPOINT_URL", server.endpoint())
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "k")
                .env("AWS_SECRET_ACCESS_KEY", "s")
                .stderr(Stdio::inherit())
                .output()
                .expect("child");
            assert!(out.status.success(), "{op} failed");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut words = text.split_whitespace().map(|w| w.parse::<u64>().expect("a number"));
            (Duration::from_nanos(words.next().expect("time")), words.next().expect("rss"))
        };
        // The order matters: pulls read what pushes wrote.
        let push = run("push");
        let put = run("anchor-put");
        let put_both = run("anchor-put-both");
        let pull = run("pull");
        let get = run("anchor-get");
        let hit = run("hit");
        let hit_alone = run("anchor-hit");
        for (op, ours, theirs) in [
            ("push", push, put),
            ("push (anchor: archive + manifest)", push, put_both),
            ("pull", pull, get),
            ("local hit, remote set (anchor: no remote)", hit, hit_alone),
        ] {
            println!(
                "| {label} | {op} | {:.1?} | {:.1?} | **{:.2}x** | {} MiB | {} MiB |",
                ours.0,
                theirs.0,
                ours.0.as_secs_f64() / theirs.0.as_secs_f64(),
                ours.1 >> 10,
                theirs.1 >> 10
            );
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One side of one comparison, `rounds` times: prints the median in ns
/// and this process's peak RSS in KiB.
fn child(args: &[String]) {
    let [op, case, rounds, label] = args else { panic!("--child OP CASE ROUNDS LABEL") };
    let case = PathBuf::from(case);
    let rounds: usize = rounds.parse().expect("rounds");
    let remote = |prefix: String| {
        Remote::open(&format!("s3://{BUCKET}/{label}/{prefix}"), Duration::from_secs(60)).expect("remote")
    };
    let local = Cache::open(case.join("local"), CacheOptions::new()).expect("cache");
    if op == "push" {
        drop(local.put("k", case.join("src"), ()).expect("put"));
    }
    let mut times = Vec::new();
    for round in 0..rounds {
        let started;
        match op.as_str() {
            "push" => {
                let cache =
                    Cache::open(case.join("local"), CacheOptions::new().remote(remote(format!("r{round}"))))
                        .expect("cache");
                started = Instant::now();
                cache.push("k").expect("push").expect("an entry");
            }
            "pull" => {
                let cache = Cache::open(
                    case.join(format!("pulled{round}")),
                    CacheOptions::new().remote(remote(format!("r{round}"))).require_remote(true),
                )
                .expect("cache");
                started = Instant::now();
                drop(cache.pull("k").expect("pull").expect("on the remote"));
            }
            "anchor-put" => {
                let op = remote(format!("a{round}"));
                started = Instant::now();
                anchor_put(&op, &case.join("src/data"));
            }
            "anchor-put-both" => {
                let op = remote(format!("b{round}"));
                started = Instant::now();
                anchor_put(&op, &case.join("src/data"));
                // A manifest's worth of bytes, written after, as a push does.
                op.operator()
                    .expect("operator")
                    .write("manifest", vec![b'm'; MANIFEST_BYTES])
                    .expect("write");
            }
            "hit" | "anchor-hit" => {
                started = Instant::now();
                let mut options = CacheOptions::new();
                if op == "hit" {
                    options = options.remote(remote(format!("r{round}")));
                }
                let cache = Cache::open(case.join("local"), options).expect("cache");
                drop(cache.lookup("k").expect("lookup").expect("a hit"));
            }
            "anchor-get" => {
                let op = remote(format!("a{round}"));
                started = Instant::now();
                anchor_get(&op, &case.join(format!("got{round}")));
            }
            other => panic!("unknown op {other}"),
        }
        times.push(started.elapsed());
    }
    times.sort();
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM");
    println!("{} {hwm}", times[times.len() / 2].as_nanos());
}

/// opendal alone: stream a file up in 8 MiB parts.
fn anchor_put(remote: &Remote, file: &Path) {
    let op = remote.operator().expect("operator");
    let options =
        opendal::options::WriteOptions { chunk: Some(PART), concurrent: IN_FLIGHT, ..Default::default() };
    let mut writer = op.writer_options("object", options).expect("writer").into_std_write();
    let mut source = std::fs::File::open(file).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n]).expect("write");
    }
    writer.close().expect("close");
}

/// opendal alone: stream the object down into a file, and sync it.
fn anchor_get(remote: &Remote, file: &Path) {
    let op = remote.operator().expect("operator");
    let length = op.stat("object").expect("stat").content_length();
    let options =
        opendal::options::ReaderOptions { chunk: Some(PART), concurrent: IN_FLIGHT, ..Default::default() };
    let mut reader =
        op.reader_options("object", options).and_then(|r| r.into_std_read(0..length)).expect("reader");
    let mut out = std::fs::File::create(file).expect("create");
    std::io::copy(&mut reader, &mut out).expect("copy");
    out.sync_all().expect("fsync");
}
