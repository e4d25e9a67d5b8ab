//! Test helper for the filesystem matrix, run inside a private mount
//! namespace by `tests/filesystems.rs`.
//!
//! `lockyard-test-fscheck held PATH`: a holder child locks PATH; the
//! holders of PATH, found through its mount id, must name that child.
//! `lockyard-test-fscheck refused PATH NAME`: locking PATH must fail with
//! `UnsupportedFilesystem` naming NAME.
//! `lockyard-test-fscheck pair A B`: two children lock A and B, two files
//! whose /proc/locks keys coincide (same inode number in two btrfs
//! subvolumes); exact attribution must still tell their holders apart.
//! Prints one line per check; exits 1 with a reason on failure.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use lockyard_flock::{KeySource, LockError, LockFile, Snapshot};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["held", path] => held(Path::new(path)),
        ["refused", path, name] => refused(Path::new(path), name),
        ["pair", a, b] => pair(Path::new(a), Path::new(b)),
        _ => Err("usage: lockyard-test-fscheck held PATH | refused PATH NAME | pair A B".to_owned()),
    };
    match result {
        Ok(line) => {
            println!("ok: {line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("FAIL: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Start the holder helper on `path` and wait until it holds the lock.
fn spawn_holder(path: &Path) -> Result<std::process::Child, String> {
    let holder_exe =
        std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("lockyard-test-holder");
    let mut child = Command::new(holder_exe)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn holder: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("locked") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{}: holder did not lock: {line:?}", path.display()));
    }
    Ok(child)
}

fn pair(a: &Path, b: &Path) -> Result<String, String> {
    let mut first = spawn_holder(a)?;
    let mut second = match spawn_holder(b) {
        Ok(child) => child,
        Err(e) => {
            let _ = first.kill();
            let _ = first.wait();
            return Err(e);
        }
    };
    let outcome = (|| {
        let snapshot = Snapshot::read().map_err(|e| e.to_string())?;
        let id = |p: &Path| snapshot.file_id(p).map_err(|e| e.to_string());
        let ids = [id(a)?, id(b)?];
        if ids[0].key != ids[1].key {
            return Err(format!("expected {} and {} to share a /proc/locks key", a.display(), b.display()));
        }
        let exact = snapshot.exact_holders(&ids);
        let pids = |i: usize| exact[i].holding().filter_map(|h| h.pid).collect::<Vec<_>>();
        if pids(0) != [first.id()] || pids(1) != [second.id()] {
            return Err(format!(
                "exact holders {:?} / {:?}, expected [{}] / [{}]",
                pids(0),
                pids(1),
                first.id(),
                second.id()
            ));
        }
        Ok(format!(
            "{} and {} share key {}; exact holders tell them apart",
            a.display(),
            b.display(),
            ids[0].key
        ))
    })();
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome
}

fn held(path: &Path) -> Result<String, String> {
    let mut child = spawn_holder(path)?;
    let outcome = (|| {
        let snapshot = Snapshot::read().map_err(|e| e.to_string())?;
        let id = snapshot.file_id(path).map_err(|e| e.to_string())?;
        if id.source != KeySource::MountId {
            return Err(format!("{}: key found by {:?}, not by mount id", path.display(), id.source));
        }
        let holders = snapshot.holders(id.key);
        let pids: Vec<_> = holders.holding().filter_map(|h| h.pid).collect();
        if pids != [child.id()] {
            return Err(format!(
                "{}: key {} holders {pids:?}, expected [{}]",
                path.display(),
                id.key,
                child.id()
            ));
        }
        let stat_dev = lockyard_flock::procfs::Device::from_dev_t(id.st_dev);
        Ok(format!(
            "{}: holder {} found under {} (stat says {stat_dev}{})",
            path.display(),
            child.id(),
            id.key,
            if stat_dev == id.key.device { "" } else { ", which /proc/locks does not use" }
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn refused(path: &Path, name: &str) -> Result<String, String> {
    let file = LockFile::new(path).map_err(|e| e.to_string())?;
    match file.try_lock() {
        Err(err @ LockError::UnsupportedFilesystem { fs, .. }) if fs.name == name => {
            Ok(format!("{}: refused: {err}", path.display()))
        }
        Err(other) => Err(format!("{}: expected {name} to be refused, got: {other}", path.display())),
        Ok(_) => Err(format!("{}: locked on a filesystem that should be refused", path.display())),
    }
}
