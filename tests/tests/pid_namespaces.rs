//! Holders across pid namespaces (`unshare -p -f --mount-proc`, root).
//!
//! From the host, a holder inside a namespace is named by its host pid
//! (the kernel translates `/proc/locks` pids into the reader's namespace).
//! From inside, the kernel hides flock and POSIX locks of outside owners,
//! still enforces them, and lists outside OFD locks without a pid:
//! `lockyard-test-fscheck pidns-inside` checks that view from in there.

#![allow(clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{Proc, Scratch, hold, missing_pid_namespaces};
use lockyard_flock::{holders_of, holders_of_many, in_initial_pid_namespace};

/// The children of `pid` (its first thread's, which is where a
/// single-threaded `unshare` forks).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The `NSpid:` line of a process: its pid in each namespace, outermost
/// first.
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    line.split_whitespace().skip(1).filter_map(|p| p.parse().ok()).collect()
}

#[test]
fn a_holder_inside_a_pid_namespace_is_named_by_its_host_pid() {
    if let Some(why) = missing_pid_namespaces() {
        lockyard_test_support::skip(&why);
        return;
    }
    assert_eq!(in_initial_pid_namespace(), Some(true), "the test runs on the host");
    let dir = Scratch::new("pidns-host");
    let path = dir.path("inside.lock");
    let mut child = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", env!("CARGO_BIN_EXE_lockyard-test-holder")])
        .arg(&path)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let unshare = Proc { child, stdin };
    // In its own namespace the holder is pid 1.
    assert_eq!(line.trim(), "locked 1");
    let host_pid = children(unshare.pid()).into_iter().next().expect("unshare's child");
    assert_eq!(ns_pids(host_pid), [host_pid, 1]);

    let holders = holders_of(&path).expect("holders");
    let pids: Vec<_> = holders.holding().map(|h| h.pid).collect();
    assert_eq!(pids, [Some(host_pid)], "{holders}");
    let holder = holders.holding().next().expect("holder");
    assert!(holder.cmdline.as_deref().is_some_and(|c| c.contains("lockyard-test-holder")), "{holder}");

    let exact = holders_of_many(&[&path], true).expect("exact").remove(0).1.expect("exact holders");
    let exact_pids: Vec<_> = exact.holding().map(|h| h.pid).collect();
    assert_eq!(exact_pids, [Some(host_pid)], "{exact}");
    drop(unshare);
}

#[test]
fn inside_a_pid_namespace_outside_holders_are_hidden_but_enforced() {
    if let Some(why) = missing_pid_namespaces() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = Scratch::new("pidns-inside");
    let (flock, ofd, inner) = (dir.path("flock.lock"), dir.path("ofd.lock"), dir.path("inner.lock"));
    let _flock_holder = hold(&flock, &["flock"]);
    let _ofd_holder = hold(&ofd, &["ofd"]);
    let out = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", env!("CARGO_BIN_EXE_lockyard-test-fscheck"), "pidns-inside"])
        .args([&flock, &ofd, &inner])
        .output()
        .expect("run fscheck");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
