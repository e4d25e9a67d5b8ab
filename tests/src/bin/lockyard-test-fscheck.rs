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
//! `lockyard-test-fscheck pidns-inside FLOCK OFD INNER`, run inside a new
//! pid namespace by `tests/pid_namespaces.rs` while processes outside hold
//! a flock lock on FLOCK and an OFD lock on OFD: checks what can and
//! cannot be seen from in here, and that a holder of INNER started in here
//! is named by its pid in this namespace.
//! `lockyard-test-fscheck cache ROOT`: a lockyard-cache at ROOT stores,
//! replaces (by exchange, and by the two-rename fallback), reads, verifies
//! and sweeps on this filesystem.
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
        ["pidns-inside", flock, ofd, inner] => pidns_inside(Path::new(flock), Path::new(ofd), Path::new(inner)),
        ["cache", root] => cache(Path::new(root)),
        _ => Err(
            "usage: lockyard-test-fscheck held PATH | refused PATH NAME | pair A B | pidns-inside FLOCK OFD INNER"
                .to_owned(),
        ),
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
        let exact = snapshot.exact_holders(&ids).map_err(|e| e.to_string())?;
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

fn pidns_inside(flock: &Path, ofd: &Path, inner: &Path) -> Result<String, String> {
    if lockyard_flock::in_initial_pid_namespace() != Some(false) {
        return Err("expected to run in a nested pid namespace".to_owned());
    }
    let mut child = spawn_holder(inner)?;
    let outcome = (|| {
        let snapshot = Snapshot::read().map_err(|e| e.to_string())?;
        let id = |p: &Path| snapshot.file_id(p).map_err(|e| e.to_string());
        let ids = [id(flock)?, id(ofd)?, id(inner)?];
        let cheap: Vec<_> = ids.iter().map(|id| snapshot.holders(id.key)).collect();
        let exact = snapshot.exact_holders(&ids).map_err(|e| e.to_string())?;
        // The outside flock holder is not shown at all, yet the kernel
        // still enforces its lock.
        if !cheap[0].is_empty() || !exact[0].is_empty() {
            return Err(format!("outside flock holder visible: {} / {}", cheap[0], exact[0]));
        }
        match LockFile::new(flock).and_then(|f| f.try_lock()) {
            Ok(None) => {}
            Ok(Some(_)) => return Err("took a lock that is held outside".to_owned()),
            Err(e) => return Err(e.to_string()),
        }
        // The outside OFD lock is listed (pid -1) but nobody here holds it.
        let ofd_pids: Vec<_> = cheap[1].holding().map(|h| h.pid).collect();
        if ofd_pids != [None] || !exact[1].is_empty() {
            return Err(format!("outside OFD holder: cheap {}, exact {}", cheap[1], exact[1]));
        }
        // Our own holder is named by its pid in this namespace.
        let pids: Vec<_> = cheap[2].holding().filter_map(|h| h.pid).collect();
        let exact_pids: Vec<_> = exact[2].holding().filter_map(|h| h.pid).collect();
        if pids != [child.id()] || exact_pids != [child.id()] {
            return Err(format!("inner holder {pids:?} / {exact_pids:?}, expected [{}]", child.id()));
        }
        Ok(format!(
            "inside: outside flock hidden but enforced, outside OFD listed without a pid, inner holder {}",
            child.id()
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn cache(root: &Path) -> Result<String, String> {
    use lockyard_cache::{Cache, CacheOptions};
    let put = |cache: &Cache, text: &'static str| {
        cache
            .store("entry", |dir| {
                std::fs::write(dir.join("data"), text)?;
                std::os::unix::fs::symlink("data", dir.join("link"))?;
                Ok(serde_json::Value::Null)
            })
            .map_err(|e| e.to_string())
    };
    let read = |cache: &Cache| -> Result<String, String> {
        let guard = cache.lookup("entry").map_err(|e| e.to_string())?.ok_or("entry missing")?;
        std::fs::read_to_string(guard.path().join("data")).map_err(|e| e.to_string())
    };
    let cache = Cache::open(root, CacheOptions::new()).map_err(|e| e.to_string())?;
    drop(put(&cache, "one")?);
    drop(put(&cache, "two")?);
    if read(&cache)? != "two" {
        return Err(format!("{}: exchange did not replace the entry", root.display()));
    }
    let fallback = Cache::open(root, CacheOptions::new().force_two_renames()).map_err(|e| e.to_string())?;
    drop(put(&fallback, "three")?);
    if read(&cache)? != "three" {
        return Err(format!("{}: the two-rename fallback did not replace the entry", root.display()));
    }
    cache.verify("entry").map_err(|e| e.to_string())?;
    let swept = cache.sweep().map_err(|e| e.to_string())?;
    if !swept.removed.is_empty() || !swept.kept.is_empty() {
        return Err(format!("{}: debris after clean stores: {swept:?}", root.display()));
    }
    Ok(format!("{}: cache stores, replaces (exchange and two renames), verifies", root.display()))
}
