//! Pidfiles across processes.

mod common;

use common::{Scratch, eventually, helper, spawn};
use lockyard_flock::{LockError, Pidfile, PidfileState, Signal};

#[test]
fn claim_writes_our_pid_and_excludes_a_second_claimant() {
    let dir = Scratch::new("pidfile-claim");
    let path = dir.path("daemon.pid");
    let guard = Pidfile::new(&path).claim().expect("claim");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), format!("{}\n", std::process::id()));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockyard-test-holder"))
        .args(["--pidfile", path.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("second claimant");
    assert_eq!(out.status.code(), Some(3), "a second claim must fail while we hold it");

    let err = Pidfile::new(&path).claim().expect_err("claimed");
    let LockError::Contended { holders, .. } = &err else { panic!("{err:?}") };
    assert_eq!(holders.holding().next().and_then(|h| h.pid), Some(std::process::id()));
    drop(guard);
    assert!(path.exists(), "a released pidfile is never removed");
}

#[test]
fn a_claim_outlasts_a_readers_probe_of_the_lock() {
    let dir = Scratch::new("pidfile-probe");
    let path = dir.path("daemon.pid");
    drop(Pidfile::new(&path).claim().expect("create it"));
    // A status reader holds the lock for the moment of its probe.
    let PidfileState::Unclaimed(probe) = Pidfile::new(&path).read().expect("read") else {
        panic!("unclaimed")
    };
    let claimer = {
        let path = path.clone();
        std::thread::spawn(move || Pidfile::new(&path).claim().map(drop))
    };
    std::thread::sleep(lockyard_flock::PROBE_GRACE / 4);
    drop(probe);
    claimer.join().expect("thread").expect("the claim waits out a probe instead of failing");
}

#[test]
fn read_reports_the_claimant_then_unclaimed_after_it_dies() {
    let dir = Scratch::new("pidfile-read");
    let path = dir.path("svc.pid");
    let mut claimant = pidfile_holder(&path);

    match Pidfile::new(&path).read().expect("read") {
        PidfileState::ClaimedBy(who) => {
            assert_eq!(who.pid, claimant.pid());
            assert!(who.start_time.is_some());
            assert!(who.cmdline.as_deref().is_some_and(|c| c.contains("lockyard-test-holder")));
        }
        other => panic!("expected ClaimedBy, got {other:?}"),
    }
    claimant.kill();
    match Pidfile::new(&path).read().expect("read") {
        PidfileState::Unclaimed(guard) => {
            // Holding the guard keeps anyone else from claiming meanwhile.
            assert!(Pidfile::new(&path).claim().is_err());
            drop(guard);
        }
        other => panic!("expected Unclaimed, got {other:?}"),
    }
    assert!(path.exists());
}

#[test]
fn read_of_a_missing_pidfile_creates_nothing() {
    let dir = Scratch::new("pidfile-missing");
    let path = dir.path("none.pid");
    assert!(matches!(Pidfile::new(&path).read().expect("read"), PidfileState::NotExist));
    assert!(!path.exists());
    let missing_dir = dir.path("no-such-dir/x.pid");
    assert!(matches!(Pidfile::new(&missing_dir).read().expect("read"), PidfileState::NotExist));
}

#[test]
fn signal_reaches_a_live_claimant() {
    let dir = Scratch::new("pidfile-signal");
    let path = dir.path("sig.pid");
    let mut claimant = pidfile_holder(&path);
    let PidfileState::ClaimedBy(who) = Pidfile::new(&path).read().expect("read") else {
        panic!("not claimed")
    };
    who.signal(Signal::TERM).expect("signal");
    let status = claimant.child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
}

#[test]
fn signal_after_the_claimant_exited_sends_nothing() {
    let dir = Scratch::new("pidfile-stale");
    let path = dir.path("stale.pid");
    // We hold the claim on behalf of a child, as `lockyard pidfile claim`
    // does; then the child exits while the claim is still held.
    let mut child = spawn("sleep", &["60"]);
    let guard = Pidfile::new(&path).claim_for(child.pid()).expect("claim");
    let PidfileState::ClaimedBy(who) = Pidfile::new(&path).read().expect("read") else {
        panic!("not claimed")
    };
    assert_eq!(who.pid, child.pid());
    child.kill();
    eventually("the child to be reaped", || std::fs::metadata(format!("/proc/{}", who.pid)).is_err());
    let err = who.signal(Signal::TERM).expect_err("nobody to signal");
    assert!(!err.is_busy(), "{err}");
    drop(guard);
}

/// A helper process that has claimed the pidfile at `path`.
fn pidfile_holder(path: &std::path::Path) -> common::Proc {
    helper(&["--pidfile", path.to_str().expect("utf-8")])
}
