//! Scaffolding shared by lockyard's tests (not published).
//!
//! **Skips are counted.** A test that cannot run here (it needs root,
//! `/dev/kvm`, a tool) calls [`skip`] with the reason and returns. The
//! reason goes to stderr, and, when `cargo xtask ci` runs the tests, into
//! the file named by [`SKIP_LOG`], from which xtask prints every skip and
//! counts them in its closing `N passed, N failed, N skipped` line; on CI
//! a skip fails the run unless `--allow-skip` was given. So no test can
//! skip silently.

#![warn(missing_docs)]
#![allow(clippy::print_stderr)] // Telling the developer why a test skipped is the point.

pub mod held;
pub mod images;
pub mod s3;

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG: &str = "LOCKYARD_SKIP_LOG";

/// Record that the running test skips, and why. The caller returns right
/// after.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        // One write per line, O_APPEND: lines from parallel tests and
        // processes do not interleave.
        let line = format!("{test}\t{}\n", reason.replace(['\n', '\t'], " "));
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("cannot record the skip in {}: {e}", PathBuf::from(log).display());
        }
    }
}

/// `len` bytes no compressor can shrink (xorshift64), the same on every
/// call: for archives whose size must follow their content's.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// Whether the tests run as root (many hostile-user tests need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A scratch directory under the system's temporary directory, named
/// after the test and this process, removed (with what is in it) on
/// drop. A leftover of an earlier run of the same name is removed first.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `$TMPDIR/lockyard-{name}-{pid}`, empty, its path canonical (so
    /// paths the kernel reports for files in it compare equal).
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lockyard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir.canonicalize().expect("a canonical scratch path"))
    }

    /// `name` inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every name under `dir`, recursively and sorted, with the content of
/// each file (`None` for a directory): what "left untouched" is checked
/// against.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                todo.push(path.clone());
                out.push((path, None));
            } else {
                out.push((path.clone(), std::fs::read(&path).ok()));
            }
        }
    }
    out.sort();
    out
}
