//! Processes holding many flocks, for benchmarks (the flock and lockyard
//! command benches).
//!
//! The bench executable re-runs itself with `LOCKYARD_BENCH_HOLD` set to
//! become a holder of at most 15,000 locks, to stay under common descriptor
//! limits; [`child_mode`] must be the first thing its `main` calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::fs::{FlockOperation, Mode, OFlags};

const PER_CHILD: usize = 15_000;

/// A fresh directory on tmpfs for lock files.
pub fn lock_dir(name: &str) -> PathBuf {
    let dir = Path::new("/dev/shm").join(format!("lockyard-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Children holding `count` flocks on files `dir/NNNNNN.lock`.
#[derive(Debug)]
pub struct Held {
    /// The holder processes, each holding its share of the locks.
    pub children: Vec<Child>,
    dir: PathBuf,
}

impl Held {
    /// Start holders of `count` flocks and wait until all are held.
    pub fn new(count: usize) -> Self {
        let dir = lock_dir(&format!("held{count}"));
        let exe = std::env::current_exe().expect("exe");
        let mut children = Vec::new();
        for start in (0..count).step_by(PER_CHILD) {
            let end = (start + PER_CHILD).min(count);
            let mut child = Command::new(&exe)
                .env("LOCKYARD_BENCH_HOLD", format!("{}:{start}:{end}", dir.display()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn holder");
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("ready");
            assert_eq!(line.trim(), "ready", "holder failed");
            children.push(child);
        }
        Held { children, dir }
    }

    /// The first of the held files.
    pub fn target(&self) -> PathBuf {
        self.dir.join(format!("{:06}.lock", 0))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Child mode: lock files `start..end` in `dir`, say so, wait for stdin.
fn hold(spec: &str) {
    let mut parts = spec.rsplitn(3, ':');
    let end: usize = parts.next().and_then(|s| s.parse().ok()).expect("end");
    let start: usize = parts.next().and_then(|s| s.parse().ok()).expect("start");
    let dir = PathBuf::from(parts.next().expect("dir"));
    let mut fds = Vec::with_capacity(end - start);
    for i in start..end {
        let fd = rustix::fs::open(
            dir.join(format!("{i:06}.lock")),
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from(0o644),
        )
        .expect("open");
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).expect("flock");
        fds.push(fd);
    }
    #[allow(clippy::print_stdout)] // The parent reads it.
    {
        println!("ready");
    }
    std::io::stdout().flush().expect("flush");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// If this process was started as a holder, hold until stdin closes and
/// return `true`.
pub fn child_mode() -> bool {
    match std::env::var_os("LOCKYARD_BENCH_HOLD") {
        Some(spec) => {
            hold(spec.to_str().expect("utf-8 spec"));
            true
        }
        None => false,
    }
}
