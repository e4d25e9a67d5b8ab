//! The trust round, from outside: a careless operator, another local user
//! and a killed supervisor against the `lockyard` command (each test names
//! the promise of docs/reliability.md's threat model it holds).

#![allow(clippy::print_stdout)]

use lockyard_test_support::{Scratch, tree};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Start `command` in a process group of its own.
fn spawn_group(command: &mut Command) -> Child {
    command.process_group(0).spawn().expect("spawn")
}

/// Kill `child` and everything in its process group (a holder's command
/// inherits its lock and would otherwise keep it).
fn kill_group(mut child: Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let _ = child.wait();
}

fn lockyard(args: &[&str]) -> Output {
    Command::new(LOCKYARD).args(args).stdin(Stdio::null()).output().expect("run lockyard")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether util-linux flock(1) can take `path` without waiting.
fn free(path: &Path) -> bool {
    let status = Command::new("flock").arg("-n").arg(path).arg("true").status().expect("flock(1)");
    status.success()
}

/// A supervised command and its own child: `lockyard ARGS` whose COMMAND
/// writes its pid to `pid_file` then sleeps. Both are killed on drop.
struct Supervised {
    lockyard: Child,
    command: Option<u32>,
}

impl Supervised {
    /// Start `lockyard` with `args`, then `-- sh -c 'echo $$ >PID; exec sleep 60'`.
    fn start(args: &[&str], dir: &Scratch) -> Self {
        let pid_file = dir.path("command.pid");
        let _ = std::fs::remove_file(&pid_file);
        let script = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
        let lockyard = Command::new(LOCKYARD)
            .args(args)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn lockyard");
        let mut me = Supervised { lockyard, command: None };
        wait_for("the command to start", || {
            std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        });
        me.command = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok());
        me
    }

    /// SIGKILL lockyard alone; its command keeps running.
    fn kill_supervisor(&mut self) {
        self.lockyard.kill().expect("kill lockyard");
        self.lockyard.wait().expect("reap lockyard");
    }

    fn kill_command(&mut self) {
        if let Some(pid) = self.command.take() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            wait_for("the command to exit", || !Path::new(&format!("/proc/{pid}")).exists());
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.lockyard.kill();
        let _ = self.lockyard.wait();
        self.kill_command();
    }
}

#[test]
fn a_killed_pidfile_supervisor_leaves_the_claim_with_its_command() {
    let dir = Scratch::new("pidfile-kill");
    let pidfile = dir.path("daemon.pid");
    let shown = pidfile.to_str().expect("utf-8");
    let mut run = Supervised::start(&["pidfile", "claim", shown], &dir);
    run.kill_supervisor();
    // The daemon still runs: a second one must not start.
    assert!(!free(&pidfile), "the claim was released while its daemon runs");
    let second = lockyard(&["pidfile", "claim", shown, "--", "true"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    let status = lockyard(&["pidfile", "status", shown]);
    let said = text(&status.stdout);
    assert!(said.contains(&format!("claimed by pid {}", run.command.expect("pid"))), "{said}");
    run.kill_command();
    assert!(free(&pidfile), "the claim outlived its daemon");

    // With -o the claim is lockyard's alone, as asked.
    let mut run = Supervised::start(&["pidfile", "claim", "-o", shown], &dir);
    assert!(!free(&pidfile));
    run.kill_supervisor();
    assert!(free(&pidfile), "-o: the claim ends with lockyard");
}

#[test]
fn a_killed_reserve_supervisor_leaves_the_cpus_with_its_command() {
    let dir = Scratch::new("reserve-kill");
    let locks = dir.path("locks");
    let locks = locks.to_str().expect("utf-8");
    let mut run = Supervised::start(&["reserve", "--cpus", "1", "--lock-dir", locks], &dir);
    let lock_files: Vec<PathBuf> =
        std::fs::read_dir(locks).expect("lock dir").flatten().map(|e| e.path()).collect();
    let cpu = lock_files
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("cpu-")))
        .expect("a cpu lock")
        .clone();
    assert!(!free(&cpu));
    run.kill_supervisor();
    assert!(!free(&cpu), "the CPU was released while its command runs");
    run.kill_command();
    assert!(free(&cpu), "the reservation outlived its command");
}

#[test]
fn a_killed_ensure_supervisor_leaves_the_entry_held_for_its_command() {
    let dir = Scratch::new("ensure-kill");
    let root = dir.path("cache");
    let root = root.to_str().expect("utf-8");
    let mut run = Supervised::start(
        &["cache", "--dir", root, "ensure", "k", "--build", "echo x > \"$LOCKYARD_STAGING/f\""],
        &dir,
    );
    run.kill_supervisor();
    let clean = lockyard(&["cache", "--dir", root, "clean", "--all", "--yes"]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(text(&clean.stdout).contains("kept k: in use"), "{}", text(&clean.stdout));
    assert!(Path::new(root).join("k/f").exists(), "the entry was removed under its reader");
    run.kill_command();
    let clean = lockyard(&["cache", "--dir", root, "clean", "--all", "--yes"]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(!Path::new(root).join("k").exists());
}

#[test]
fn cache_commands_on_a_directory_that_is_not_a_cache_touch_nothing() {
    let dir = Scratch::new("not-a-cache");
    let project = dir.path("project");
    std::fs::create_dir_all(project.join("src")).expect("project");
    std::fs::write(project.join("Cargo.toml"), "[package]").expect("file");
    std::fs::write(project.join("src/lib.rs"), "").expect("file");
    let before = tree(&project);
    let shown = project.to_str().expect("utf-8");
    for args in [
        &["clean", "--keep", "1000000", "--yes"][..],
        &["clean", "--all", "--yes"],
        &["list"],
        &["verify"],
        &["show", "src"],
        &["sweep"],
        &["put", "k", "/etc"],
        &["remove", "src"],
    ] {
        let out =
            Command::new(LOCKYARD).args(["cache", "--dir", shown]).args(args).stdin(Stdio::null()).output();
        let out = out.expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("not a lockyard cache"), "{args:?}: {}", text(&out.stderr));
        assert_eq!(tree(&project), before, "{args:?} changed the directory");
    }
    // Read-only commands on a missing root create nothing.
    let missing = dir.path("missing");
    let shown = missing.to_str().expect("utf-8");
    let list = lockyard(&["cache", "--dir", shown, "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let show = lockyard(&["cache", "--dir", shown, "show", "k"]);
    assert_eq!(show.status.code(), Some(1), "{}", text(&show.stderr));
    let verify = lockyard(&["cache", "--dir", shown, "verify", "--json"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(!missing.exists(), "a read-only command created the root");
}

#[test]
fn foreign_items_in_a_cache_are_reported_not_removed_unless_named() {
    let dir = Scratch::new("foreign");
    let root = dir.path("cache");
    let shown = root.to_str().expect("utf-8");
    let src = dir.path("src");
    std::fs::create_dir(&src).expect("src");
    std::fs::write(src.join("f"), "x").expect("file");
    assert!(lockyard(&["cache", "--dir", shown, "put", "k", src.to_str().expect("utf-8")]).status.success());
    std::fs::create_dir(root.join("notes")).expect("foreign dir");
    std::fs::write(root.join("notes/todo"), "mine").expect("foreign file");
    std::fs::write(root.join("stray"), "mine").expect("stray file");
    let list = lockyard(&["cache", "--dir", shown, "list"]);
    assert!(text(&list.stdout).contains("FOREIGN"), "{}", text(&list.stdout));
    let clean = lockyard(&["cache", "--dir", shown, "clean", "--all", "--yes"]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(text(&clean.stdout).contains("leave notes"), "{}", text(&clean.stdout));
    assert!(!root.join("k").exists());
    assert_eq!(std::fs::read_to_string(root.join("notes/todo")).expect("kept"), "mine");
    assert_eq!(std::fs::read_to_string(root.join("stray")).expect("kept"), "mine");
    let remove = lockyard(&["cache", "--dir", shown, "remove", "notes", "stray", "absent"]);
    assert_eq!(remove.status.code(), Some(1), "{}", text(&remove.stderr));
    assert!(!root.join("notes").exists() && !root.join("stray").exists());
}

#[test]
fn verify_reports_every_entry_even_past_one_it_cannot_read() {
    let dir = Scratch::new("verify-fifo");
    let root = dir.path("cache");
    let shown = root.to_str().expect("utf-8");
    let src = dir.path("src");
    std::fs::create_dir(&src).expect("src");
    std::fs::write(src.join("f"), "x").expect("file");
    for key in ["a-fifo", "b-tampered", "c-fine"] {
        assert!(
            lockyard(&["cache", "--dir", shown, "put", key, src.to_str().expect("utf-8")]).status.success()
        );
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("a-fifo/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    std::fs::write(root.join("b-tampered/f"), "y").expect("tamper");
    let out = lockyard(&["cache", "--dir", shown, "verify"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("a-fifo: cannot verify"), "{said}");
    assert!(said.contains("b-tampered: CORRUPT"), "{said}");
    assert!(said.contains("c-fine: intact"), "{said}");
}

#[test]
fn put_of_a_tree_holding_the_cache_is_refused_with_the_reason() {
    let dir = Scratch::new("put-self");
    let root = dir.path("cache");
    let out = lockyard(&[
        "cache",
        "--dir",
        root.to_str().expect("utf-8"),
        "put",
        "k",
        dir.0.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(said.contains("contains the cache root") && !said.contains("build failed"), "{said}");
}

#[test]
fn names_with_newlines_and_escapes_cannot_forge_rows_or_reach_the_terminal() {
    let dir = Scratch::new("forge");
    let evil = dir.path("x\n1 root FLOCK WRITE 0 0 0 shadow\u{1b}[2J");
    std::fs::write(&evil, "").expect("evil name");
    let holder = spawn_group(Command::new("flock").arg(&evil).args(["sleep", "60"]));
    let path = evil.to_str().expect("utf-8");
    wait_for("flock(1) to lock", || !free(&evil));
    let out = lockyard(&["locks", "-r", "--noheadings", "--path", path]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(said.lines().count(), 1, "one lock, one row: {said}");
    assert!(!said.contains('\u{1b}'), "{said:?}");
    let who = lockyard(&["who", path]);
    let said = text(&who.stdout);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("\\x0a1 root") && !said.contains('\u{1b}'), "{said:?}");
    kill_group(holder);
}

#[test]
fn bad_cache_keys_are_refused() {
    let dir = Scratch::new("keys");
    let root = dir.path("cache");
    for key in ["CACHEDIR.TAG", "   ", "a\u{202e}b"] {
        let out = lockyard(&["cache", "--dir", root.to_str().expect("utf-8"), "put", key, "/etc"]);
        assert_eq!(out.status.code(), Some(2), "{key:?}");
        assert!(text(&out.stderr).contains("invalid cache key"), "{key:?}: {}", text(&out.stderr));
    }
}

/// A python process holding flocks on `count` files in `dir` (the first
/// is `held-0`), until its stdin closes.
fn python_holder(dir: &Scratch, count: usize) -> Child {
    let script = format!(
        "import fcntl, os, sys\n\
         fds = []\n\
         for i in range({count}):\n\
         \x20   f = open(os.path.join({dir:?}, 'held-%d' % i), 'w')\n\
         \x20   fcntl.flock(f, fcntl.LOCK_EX)\n\
         \x20   fds.append(f)\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n",
        dir = dir.0.display().to_string()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("ready");
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn who_never_says_not_held_for_a_lock_held_throughout_lock_churn() {
    let dir = Scratch::new("churn");
    let mut holder = python_holder(&dir, 2000);
    // Two processes take and drop 50 locks each all the while, so the
    // kernel's lock list shifts between the pages of each read (measured:
    // about 1% of single reads then miss the lock at `held-1000`).
    let churners: Vec<Child> = (0..2)
        .map(|k| {
            let script = format!(
                "import fcntl, os\n\
                 fs = [open(os.path.join({dir:?}, 'churn-{k}-%d' % i), 'w') for i in range(50)]\n\
                 while True:\n\
                 \x20   for f in fs: fcntl.flock(f, fcntl.LOCK_EX)\n\
                 \x20   for f in fs: fcntl.flock(f, fcntl.LOCK_UN)\n",
                dir = dir.0.display().to_string()
            );
            Command::new("python3").args(["-c", &script]).spawn().expect("churn")
        })
        .collect();
    let target = dir.path("held-1000");
    let mut wrong = 0;
    for _ in 0..300 {
        let out = Command::new(LOCKYARD).arg("who").arg(&target).output().expect("who");
        if out.status.code() != Some(0) {
            wrong += 1;
            println!("{}{}", text(&out.stdout), text(&out.stderr));
        }
    }
    for mut churner in churners {
        let _ = churner.kill();
        let _ = churner.wait();
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(wrong, 0, "a held lock was reported free");
}

#[test]
fn who_out_of_descriptors_fails_rather_than_answering_not_held() {
    let dir = Scratch::new("nofile");
    let mut holder = python_holder(&dir, 1);
    let target = dir.path("held-0");
    for limit in 4..=16 {
        let out = Command::new("prlimit")
            .arg(format!("--nofile={limit}"))
            .args([LOCKYARD, "who", "--exact"])
            .arg(&target)
            .output()
            .expect("prlimit");
        // 127: too few descriptors to even load the program.
        assert!(
            matches!(out.status.code(), Some(0 | 2 | 127)),
            "limit {limit}: exit {:?}: {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        if out.status.code() == Some(0) {
            assert!(text(&out.stdout).contains("held by"), "limit {limit}: {}", text(&out.stdout));
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_lock_in_another_users_directory_works_as_with_flock() {
    if !rustix::process::geteuid().is_root() {
        lockyard_test_support::skip("a directory of another user needs root to make");
        return;
    }
    // `run` takes the path the operator named, as flock(1) does.
    let dir = Scratch::new("run-theirs");
    let theirs = dir.path("theirs");
    std::fs::create_dir(&theirs).expect("dir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let lock = theirs.join("x.lock");
    let out = lockyard(&["run", lock.to_str().expect("utf-8"), "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pidfile_status_names_the_holder_and_says_when_the_file_disagrees() {
    let dir = Scratch::new("status-liar");
    let pidfile = dir.path("d.pid");
    let shown = pidfile.to_str().expect("utf-8");
    let mut run = Supervised::start(&["pidfile", "claim", shown], &dir);
    let command = run.command.expect("pid");
    std::fs::write(&pidfile, "4294967295\n").expect("forge");
    let out = lockyard(&["pidfile", "status", shown]);
    let said = text(&out.stdout);
    assert!(said.contains("the file names pid 4294967295, which does not hold the claim"), "{said}");
    assert!(!said.contains("claimed by pid 4294967295"), "{said}");
    let json = lockyard(&["pidfile", "status", "--json", shown]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["recorded_pid"], 4294967295_u64);
    let pid = value["pid"].as_u64().expect("pid");
    assert!(pid == u64::from(command) || Path::new(&format!("/proc/{pid}")).exists());
    run.kill_command();
}

#[test]
fn a_path_that_is_not_utf8_survives_json_and_prints_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = Scratch::new("non-utf8");
    let name = std::ffi::OsStr::from_bytes(b"lock-\xff");
    let path = dir.0.join(name);
    std::fs::write(&path, "").expect("file");
    let holder = spawn_group(Command::new("flock").arg(&path).args(["sleep", "60"]));
    wait_for("flock(1) to lock", || !free(&path));
    let expected: Vec<serde_json::Value> = path.as_os_str().as_bytes().iter().map(|&b| b.into()).collect();
    let who = Command::new(LOCKYARD).args(["who", "--json"]).arg(&path).output().expect("who");
    let value: serde_json::Value = serde_json::from_slice(&who.stdout).expect("json");
    assert_eq!(value["files"][0]["path"], serde_json::Value::Array(expected.clone()), "{value}");
    let locks =
        Command::new(LOCKYARD).args(["locks", "--json", "--path"]).arg(&path).output().expect("locks");
    let value: serde_json::Value = serde_json::from_slice(&locks.stdout).expect("json");
    assert_eq!(value["locks"][0]["path"], serde_json::Value::Array(expected), "{value}");
    let human = Command::new(LOCKYARD).arg("who").arg(&path).output().expect("who");
    assert!(text(&human.stdout).contains("lock-\\xff: held by"), "{}", text(&human.stdout));
    kill_group(holder);
}

#[test]
fn a_lock_deeper_than_path_max_can_be_asked_about() {
    use rustix::fs::{Mode, OFlags};
    let dir = Scratch::new("long");
    // 24 directories of 200 characters: a path of about 4,900 bytes.
    let part = "d".repeat(200);
    let mut cur = rustix::fs::open(&dir.0, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open");
    let mut long = dir.0.clone();
    for _ in 0..24 {
        rustix::fs::mkdirat(&cur, part.as_str(), Mode::from_raw_mode(0o755)).expect("mkdir");
        cur = rustix::fs::openat(&cur, part.as_str(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .expect("open");
        long.push(&part);
    }
    assert!(long.as_os_str().len() > 4096);
    let lock = long.join("x.lock");
    let pid = long.join("x.pid");
    let run = spawn_group(Command::new(LOCKYARD).arg("run").arg(&lock).args(["sleep", "60"]));
    let claim =
        spawn_group(Command::new(LOCKYARD).args(["pidfile", "claim"]).arg(&pid).args(["--", "sleep", "60"]));
    wait_for("both locks", || {
        let who = Command::new(LOCKYARD).arg("who").arg(&lock).arg(&pid).output().expect("who");
        text(&who.stdout).matches("held by").count() == 2
    });
    let status = Command::new(LOCKYARD).args(["pidfile", "status"]).arg(&pid).output().expect("status");
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("claimed by pid"), "{}", text(&status.stdout));
    kill_group(run);
    kill_group(claim);
}
