//! The `lockyard` command on every filesystem of the matrix: a `flock(1)`
//! holder on tmpfs, ext4, btrfs (and a subvolume), xfs, overlayfs (upper
//! and lower layer), a bind mount, a mount stacked over another and a
//! mount point with a space and a newline; `who` must name the holder and
//! `locks` the file's path. FUSE (bindfs) must be refused, naming FUSE.
//!
//! Root only. The mounts live in a private mount namespace kept alive by a
//! `sleep`; every command runs in it through `nsenter`, so the host's mount
//! table is never touched and the checks stay in Rust.

#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// The mounts of the matrix (shared with `tests/tests/filesystems.rs`),
/// then a word to say they are ready and a sleep that keeps the namespace.
const SETUP: &str =
    concat!(include_str!("../../../tests/fs-matrix-setup.sh"), "echo ready\nexec sleep 600\n");

/// Files to lock, relative to the scratch directory, one per case.
const CASES: &[&str] = &[
    "tmpfs/a.lock",
    "ext4/a.lock",
    "btrfs/a.lock",
    "btrfs/sub/b.lock",
    "xfs/a.lock",
    "merged/in-upper.lock",
    "merged/in-lower.lock",
    "bind/a.lock",
    "stack/a.lock",
    "odd name\nx/a.lock",
];

fn missing_capability() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root".to_owned());
    }
    for tool in ["unshare", "nsenter", "flock", "mkfs.btrfs", "mkfs.xfs", "mkfs.ext4", "bindfs", "losetup"] {
        let found = Command::new("sh")
            .args(["-c", &format!("export PATH=\"$PATH:/usr/sbin:/sbin\"; command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed (`cargo xtask deps` installs it, as root)"));
        }
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control)".to_owned());
    }
    None
}

/// A process group killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

/// A command run in the namespace of `ns` (the kept-alive `sleep`).
fn inside(ns: u32, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.arg("-t").arg(ns.to_string()).arg("-m").arg("--").arg(program);
    command
}

fn lockyard(ns: u32, args: &[&str]) -> Output {
    inside(ns, LOCKYARD).args(args).output().expect("run lockyard")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn who_and_locks_name_holder_and_path_on_every_filesystem() {
    if let Some(why) = missing_capability() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = std::env::temp_dir().join(format!("lockyard-cli-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut keeper = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", SETUP])
        .current_dir(&dir)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare");
    let stdout = BufReader::new(keeper.stdout.take().expect("stdout"));
    let keeper = Group(keeper);
    // Setup tools may chat on stdout; the script's last word before it sleeps
    // is `ready`.
    let ready = stdout.lines().map_while(Result::ok).any(|line| line == "ready");
    assert!(ready, "mount setup failed (see stderr)");
    // `exec sleep` keeps the pid: the namespace is the keeper's.
    let ns = keeper.0.id();

    for case in CASES {
        let path: PathBuf = dir.join(case);
        let p = path.to_str().expect("utf-8");
        // -o: flock(1) holds the lock itself, not the sleep it starts.
        let holder = Group(
            inside(ns, "flock")
                .args(["-o", p, "sleep", "60"])
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("flock"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while lockyard(ns, &["who", p]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "{case:?}: flock(1) never held the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        let who = json(&lockyard(ns, &["who", "--json", p]));
        let pids: Vec<&Value> =
            who["files"][0]["holders"].as_array().expect("holders").iter().map(|h| &h["pid"]).collect();
        assert_eq!(pids, [&Value::from(holder.0.id())], "{case:?}: {who}");
        assert_eq!(who["files"][0]["key_source"], "mount_id", "{case:?}: {who}");

        let locks = json(&lockyard(ns, &["locks", "--json", "--path", p]));
        let found: Vec<(&Value, &Value)> =
            locks["locks"].as_array().expect("locks").iter().map(|l| (&l["path"], &l["pid"])).collect();
        assert_eq!(found, [(&Value::from(p), &Value::from(holder.0.id()))], "{case:?}: {locks}");
        eprintln!("ok: {case:?}: who names pid {}, locks shows the path", holder.0.id());
        drop(holder);
    }

    // Many locks in one directory: `locks` names the first through the
    // holder's descriptor and the rest from one listing of the directory,
    // trusting entries' inode numbers only on filesystems where that is
    // exact; on btrfs and overlayfs each name is checked. Every path must
    // be the file's own, a locked directory's too.
    let mut dirs: Vec<PathBuf> =
        CASES.iter().map(|c| dir.join(c).parent().expect("parent").to_path_buf()).collect();
    dirs.dedup();
    for parent in &dirs {
        let mut expected: Vec<String> = Vec::new();
        let mut script = String::new();
        for i in 0..6 {
            let name = if i == 5 { "many-d.lockdir".to_owned() } else { format!("many-{i}.lock") };
            let path = parent.join(&name);
            // Made inside the namespace: the mounts are only there.
            let make = if i == 5 { "mkdir -p" } else { "touch" };
            let fd = 3 + i;
            script.push_str(&format!("{make} \"$1/{name}\"; exec {fd}<\"$1/{name}\"; flock -x {fd}; "));
            expected.push(path.to_str().expect("utf-8").to_owned());
        }
        script.insert_str(0, "set -e; ");
        script.push_str("echo locked; exec sleep 60");
        let mut holder = inside(ns, "sh")
            .args(["-c", &script, "sh", parent.to_str().expect("utf-8")])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("holder");
        let mut said = String::new();
        BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut said).expect("read");
        let holder = Group(holder);
        assert_eq!(said.trim(), "locked", "{parent:?}: the holder could not lock");
        // By path: /proc/locks records the flock(1) processes, long gone.
        let mut args = vec!["locks", "--json"];
        for path in &expected {
            args.extend(["--path", path]);
        }
        let locks = json(&lockyard(ns, &args));
        let mut found: Vec<String> = locks["locks"]
            .as_array()
            .expect("locks")
            .iter()
            .map(|l| l["path"].as_str().unwrap_or("(none)").to_owned())
            .collect();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "{parent:?}: {locks}");
        eprintln!("ok: {parent:?}: {} locks in one directory, each with its own path", found.len());
        drop(holder);
    }

    // `run` is flock(1): it locks on FUSE as flock(1) does (the library's
    // lock files refuse FUSE by default; `run`'s operator chose the path).
    let fuse = dir.join("fuse/in-lower.lock");
    let out = lockyard(ns, &["run", "-n", fuse.to_str().expect("utf-8"), "true"]);
    assert!(out.status.success(), "run on bindfs: {out:?}");

    drop(keeper);
    let _ = std::fs::remove_dir_all(&dir);
}
