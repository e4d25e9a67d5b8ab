//! The `lockyard` command against real holders: util-linux `flock(1)`,
//! python `fcntl` OFD locks, and `lslocks` as the reference.

// Tests that need root say why they skip on stderr.
#![allow(clippy::print_stderr)]

use lockyard_test_support::Scratch;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// A background process (and its process group) killed on drop.
struct Bg(Child);

impl Bg {
    fn spawn(program: &str, args: &[&str]) -> Bg {
        Bg(Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn wait_code(&mut self) -> Option<i32> {
        self.0.wait().expect("wait").code()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

fn lockyard(args: &[&str]) -> Output {
    Command::new(LOCKYARD).args(args).output().expect("run lockyard")
}

fn json(out: &Output) -> Value {
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn held(path: &Path) -> bool {
    lockyard(&["who", path.to_str().expect("utf-8")]).status.code() == Some(0)
}

#[test]
fn locks_lists_a_flock1_holder_with_its_path() {
    let dir = Scratch::new("locks");
    let file = dir.path("a.lock");
    let p = file.to_str().expect("utf-8");
    let holder = Bg::spawn("flock", &["-x", p, "sleep", "60"]);
    wait_until("flock(1) to lock", || held(&file));

    let doc = json(&lockyard(&["locks", "--path", p, "--json"]));
    assert_eq!(doc["schema"], 1);
    let locks = doc["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 1, "{doc}");
    let lock = &locks[0];
    assert_eq!(lock["kind"], "flock");
    assert_eq!(lock["mode"], "write");
    assert_eq!(lock["pid"], holder.pid());
    assert_eq!(lock["path"], p);
    assert_eq!(lock["start"], 0);
    assert!(lock["end"].is_null());
    assert!(lock["command"].as_str().is_some_and(|c| c.starts_with("flock")));

    let out = lockyard(&["locks", "--pid", &holder.pid().to_string()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("COMMAND") && h.contains("PATH")), "{text}");
    let row = lines.next().expect("one row");
    assert!(row.contains("FLOCK") && row.contains("WRITE") && row.contains(p), "{row}");

    let raw = lockyard(&[
        "locks",
        "--pid",
        &holder.pid().to_string(),
        "-o",
        "pid,kind,path",
        "--noheadings",
        "--raw",
    ]);
    assert_eq!(String::from_utf8_lossy(&raw.stdout), format!("{} FLOCK {p}\n", holder.pid()));
}

#[test]
fn locks_resolves_ofd_paths_and_exact_names_the_holder() {
    let dir = Scratch::new("ofd");
    let file = dir.path("ofd.lock");
    std::fs::write(&file, b"").expect("create");
    let p = file.to_str().expect("utf-8");
    let script = format!(
        "import fcntl, struct, time\nf = open({p:?}, 'r+')\n\
         fcntl.fcntl(f, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 10, 5, 0))\ntime.sleep(60)\n"
    );
    let python = Bg::spawn("python3", &["-c", &script]);
    wait_until("python to lock", || {
        json(&lockyard(&["locks", "--path", p, "--json"]))["locks"].as_array().is_some_and(|l| !l.is_empty())
    });
    let doc = json(&lockyard(&["locks", "--path", p, "--json"]));
    let lock = &doc["locks"][0];
    assert_eq!((lock["kind"].as_str(), lock["mode"].as_str()), (Some("ofd"), Some("read")));
    assert!(lock["pid"].is_null(), "/proc/locks records -1 for OFD locks: {lock}");
    assert_eq!(lock["path"], p, "the path is resolved even for OFD locks");
    assert_eq!((lock["start"].as_u64(), lock["end"].as_u64()), (Some(10), Some(14)));

    let exact = json(&lockyard(&["locks", "--path", p, "--json", "--exact"]));
    assert_eq!(exact["exact"], true);
    assert_eq!(exact["locks"][0]["holders"][0]["pid"], python.pid());

    // `who` switches to exact attribution by itself for OFD locks.
    let who = json(&lockyard(&["who", p, "--json"]));
    assert_eq!(who["files"][0]["holders"][0]["pid"], python.pid());

    // So does `locks --pid` (as util-linux's range-lock test asks of
    // lslocks): the OFD lock is found by its holder's pid, and shown with it.
    let pid = python.pid().to_string();
    let raw = lockyard(&["locks", "--pid", &pid, "--noheadings", "--raw", "-o", "pid,start,end,path"]);
    assert_eq!(String::from_utf8_lossy(&raw.stdout), format!("{pid} 10 14 {p}\n"));
}

#[test]
fn who_exit_status_tells_held_free_and_error() {
    let dir = Scratch::new("who");
    let file = dir.path("w.lock");
    let free = dir.path("free.lock");
    std::fs::write(&free, b"").expect("create");
    let p = file.to_str().expect("utf-8");
    let holder = Bg::spawn("flock", &["-s", p, "sleep", "60"]);
    wait_until("flock(1) to lock", || held(&file));

    let out = lockyard(&["who", p]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("pid={}", holder.pid())) && text.contains("shared flock"), "{text}");
    assert_eq!(lockyard(&["who", free.to_str().expect("utf-8")]).status.code(), Some(1));

    let missing = lockyard(&["who", "/nonexistent/lockyard.lock"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("/nonexistent/lockyard.lock") && err.contains("hint:") && !err.contains("panicked"),
        "{err}"
    );

    let doc = json(&lockyard(&["who", p, free.to_str().expect("utf-8"), "--json"]));
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["files"][0]["holders"][0]["mode"], "shared");
    assert_eq!(doc["files"][1]["holders"].as_array().map(Vec::len), Some(0));
}

#[test]
fn run_interoperates_with_flock1_both_ways() {
    let dir = Scratch::new("run");
    let file = dir.path("r.lock");
    let p = file.to_str().expect("utf-8");
    {
        let _theirs = Bg::spawn("flock", &["-x", p, "sleep", "60"]);
        wait_until("flock(1) to lock", || held(&file));
        assert_eq!(lockyard(&["run", "-n", p, "--", "true"]).status.code(), Some(1));
        assert_eq!(lockyard(&["run", "-n", "-E", "7", p, "true"]).status.code(), Some(7));
        assert_eq!(lockyard(&["run", "-w", "0.2", p, "--", "true"]).status.code(), Some(1));
        let verbose = lockyard(&["run", "-n", "--verbose", p, "--", "true"]);
        assert!(String::from_utf8_lossy(&verbose.stderr).contains("pid="), "{verbose:?}");
    }
    wait_until("release", || !held(&file));
    assert_eq!(lockyard(&["run", p, "--", "sh", "-c", "exit 3"]).status.code(), Some(3));
    assert_eq!(lockyard(&["run", p, "-c", "exit 4"]).status.code(), Some(4));

    let ours = Bg::spawn(LOCKYARD, &["run", "-s", p, "--", "sleep", "60"]);
    wait_until("lockyard run to lock", || held(&file));
    let status = Command::new("flock").args(["-n", "-x", p, "true"]).status().expect("flock(1)");
    assert_eq!(status.code(), Some(1), "flock(1) must see lockyard's lock");
    let status = Command::new("flock").args(["-n", "-s", p, "true"]).status().expect("flock(1)");
    assert!(status.success(), "a shared lock admits flock(1) readers");
    drop(ours);
}

#[test]
fn run_forwards_sigterm_and_reports_the_signal() {
    let dir = Scratch::new("signal");
    let file = dir.path("s.lock");
    let p = file.to_str().expect("utf-8");
    let mut child = Command::new(LOCKYARD).args(["run", p, "--", "sleep", "60"]).spawn().expect("spawn");
    wait_until("lockyard run to lock", || held(&file));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + 15), "sleep got the forwarded SIGTERM: {status:?}");
    assert!(status.signal().is_none());
    assert!(!held(&file));
}

#[test]
fn run_reports_usage_and_refusals_with_flock1_codes() {
    let dir = Scratch::new("usage");
    let p = dir.path("u.lock");
    let out = lockyard(&["run", p.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = lockyard(&["run", "--no-such-flag", "x"]);
    assert_eq!(out.status.code(), Some(64));
    let out = lockyard(&["run", dir.path("missing/u.lock").to_str().expect("utf-8"), "--", "true"]);
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open lock file"), "{out:?}");
    let out = lockyard(&["locks", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn pidfile_claim_and_status() {
    let dir = Scratch::new("pidfile");
    let file = dir.path("d.pid");
    let p = file.to_str().expect("utf-8");
    assert_eq!(lockyard(&["pidfile", "status", p]).status.code(), Some(1));
    let claim = Bg::spawn(LOCKYARD, &["pidfile", "claim", p, "--", "sleep", "60"]);
    wait_until("the claim", || lockyard(&["pidfile", "status", p]).status.code() == Some(0));
    // lockyard writes its own pid with the claim, then the command's once
    // it has started.
    let mut doc = Value::Null;
    wait_until("the command's pid", || {
        doc = json(&lockyard(&["pidfile", "status", p, "--json"]));
        doc["pid"].as_u64() != Some(u64::from(claim.pid()))
    });
    assert_eq!(doc["state"], "claimed");
    assert!(doc["command"].as_str().is_some_and(|c| c.starts_with("sleep")), "{doc}");
    assert_eq!(lockyard(&["pidfile", "claim", p, "--", "true"]).status.code(), Some(1));
    let waited = lockyard(&["pidfile", "claim", "-w", "0.2", p, "--", "true"]);
    assert_eq!(waited.status.code(), Some(1), "still claimed when the wait ran out");
    assert!(String::from_utf8_lossy(&waited.stderr).contains("within"), "{waited:?}");
    let mut next = Bg::spawn(LOCKYARD, &["pidfile", "claim", "-w", "30", p, "--", "true"]);
    drop(claim);
    assert_eq!(next.wait_code(), Some(0), "the waiting claim runs once the first one ends");
    wait_until("release", || lockyard(&["pidfile", "status", p]).status.code() == Some(1));
    assert!(file.exists());
}

#[test]
fn locks_agrees_with_lslocks() {
    let dir = Scratch::new("lslocks");
    let file = dir.path("l.lock");
    let p = file.to_str().expect("utf-8");
    let holder = Bg::spawn("flock", &["-s", p, "sleep", "60"]);
    wait_until("flock(1) to lock", || held(&file));
    let out = Command::new("lslocks")
        .args(["--json", "-o", "PID,TYPE,MODE,PATH", "-p", &holder.pid().to_string()])
        .output()
        .expect("lslocks");
    let theirs: Value = serde_json::from_slice(&out.stdout).expect("lslocks json");
    let theirs = &theirs["locks"][0];
    let ours = json(&lockyard(&["locks", "--pid", &holder.pid().to_string(), "--json"]));
    let ours = &ours["locks"][0];
    assert_eq!(theirs["pid"].as_u64(), ours["pid"].as_u64());
    assert_eq!(theirs["type"].as_str().map(str::to_ascii_lowercase).as_deref(), ours["kind"].as_str());
    assert_eq!(theirs["mode"].as_str().map(str::to_ascii_lowercase).as_deref(), ours["mode"].as_str());
    assert_eq!(theirs["path"].as_str(), ours["path"].as_str());
}

#[test]
fn completions_are_printed() {
    let out = lockyard(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("lockyard"));
}

#[test]
fn run_lets_the_command_keep_the_lock_unless_close() {
    let dir = Scratch::new("inherit");
    let file = dir.path("i.lock");
    let p = file.to_str().expect("utf-8");
    let pidfile = dir.path("bg.pid");
    let script = format!("sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {}", pidfile.display());

    // Without -o the command inherits the lock, and what it leaves behind
    // keeps it after lockyard exits, as with flock(1).
    assert!(lockyard(&["run", p, "-c", &script]).status.success());
    let bg: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    let kill = |pid: u32| {
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    };
    let doc = json(&lockyard(&["who", p, "--json"]));
    kill(bg);
    assert_eq!(doc["files"][0]["holders"][0]["pid"], bg, "{doc}");

    // With -o it does not.
    wait_until("release", || !held(&file));
    assert!(lockyard(&["run", "-o", p, "-c", &script]).status.success());
    let bg: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    let still = held(&file);
    kill(bg);
    assert!(!still, "-o: the command's leftovers must not hold the lock");
}

#[test]
fn who_names_a_holder_in_a_pid_namespace_and_warns_from_inside_one() {
    if !rustix::process::geteuid().is_root()
        || !Command::new("unshare")
            .args(["-p", "-f", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        lockyard_test_support::skip("needs root and unshare -p to create a pid namespace");
        return;
    }
    let dir = Scratch::new("pidns");
    let file = dir.path("ns.lock");
    let p = file.to_str().expect("utf-8");
    // -o: flock(1) itself holds the lock, not the sleep it starts.
    let outer = Bg::spawn("unshare", &["-p", "-f", "--mount-proc", "flock", "-o", p, "sleep", "60"]);
    wait_until("flock(1) in the namespace to lock", || held(&file));
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", outer.pid())).expect("children");
    let host_pid: u32 = children.split_whitespace().next().expect("child").parse().expect("pid");

    let doc = json(&lockyard(&["who", p, "--json"]));
    assert_eq!(doc["files"][0]["holders"][0]["pid"], host_pid, "{doc}");

    // Inside another namespace the lock is invisible: `who` says so.
    let inside = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", LOCKYARD, "who", p])
        .output()
        .expect("run lockyard in a pid namespace");
    assert_eq!(inside.status.code(), Some(1));
    let err = String::from_utf8_lossy(&inside.stderr);
    assert!(err.contains("nested pid namespace"), "{err}");
}
