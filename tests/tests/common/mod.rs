//! Helpers shared by the multi-process tests.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub use lockyard_test_support::{Scratch, is_root};

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Close the child's stdin (the holder helper then releases and exits)
    /// and wait for it.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait")
    }

    /// Kill the child and everything it started (its process group:
    /// `flock(1)` forks its command, which would otherwise outlive it).
    pub fn kill(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start `program` in a process group of its own, with stdin piped (so it
/// can be told to finish) and no stdout (a leftover child must not hold the
/// test harness's pipe open).
pub fn spawn(program: &str, args: &[&str]) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdin = child.stdin.take();
    Proc { child, stdin }
}

/// Start the holder helper on lock file `path` and wait until it reports
/// the lock taken.
pub fn hold(path: &Path, args: &[&str]) -> Proc {
    let path = path.to_str().expect("utf-8 path");
    helper(&[&[path], args].concat())
}

/// Start the holder helper with `args` and wait until it reports the lock
/// (or pidfile) taken.
pub fn helper(args: &[&str]) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockyard-test-holder"))
        .process_group(0)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read holder");
    let proc = Proc { child, stdin };
    assert!(line.starts_with("locked "), "holder did not lock {args:?}: {line:?}");
    proc
}

/// Poll `condition` every 5 ms for up to 10 s; a test timeout, not a
/// performance assertion.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Why this machine cannot run a holder in a new pid namespace
/// (`unshare -p -f --mount-proc` needs root), or `None` if it can.
pub fn missing_pid_namespaces() -> Option<String> {
    if !is_root() {
        return Some("needs root to create a pid namespace".to_owned());
    }
    match Command::new("unshare").args(["-p", "-f", "--mount-proc", "true"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("unshare -p failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

/// Make `symlink` (the link itself) belong to `nobody` (65534), as if
/// another user had planted it.
pub fn give_link_to_nobody(symlink: &Path) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        symlink,
        Some(rustix::fs::Uid::from_raw(65534)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("chown link");
}
