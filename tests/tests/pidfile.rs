//! Pidfiles across processes.

#![allow(clippy::print_stderr)]

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
    let mut claimant = pidfile_holder(&path);
    let PidfileState::ClaimedBy(who) = Pidfile::new(&path).read().expect("read") else {
        panic!("not claimed")
    };
    assert_eq!(who.pid, claimant.pid());
    claimant.kill();
    eventually("the claimant to be reaped", || std::fs::metadata(format!("/proc/{}", who.pid)).is_err());
    let err = who.signal(Signal::TERM).expect_err("nobody to signal");
    assert!(!err.is_busy(), "{err}");
}

#[test]
fn the_claimant_is_the_lock_holder_whatever_pid_the_file_names() {
    let dir = Scratch::new("pidfile-liar");
    let path = dir.path("liar.pid");
    // A supervisor (us) holds the claim on behalf of a child: the holder
    // is us, the file names the child.
    let child = spawn("sleep", &["60"]);
    let guard = Pidfile::new(&path).claim_for(child.pid()).expect("claim");
    let PidfileState::ClaimedBy(who) = Pidfile::new(&path).read().expect("read") else {
        panic!("not claimed")
    };
    assert_eq!(who.pid, std::process::id(), "the process holding the lock");
    assert_eq!(who.recorded, Some(child.pid()));
    // An impossible pid, and an unrelated live process (pid 1), in the
    // file: still the real holder is named.
    for lie in ["4294967295\n", "1\n", "garbage"] {
        std::fs::write(&path, lie).expect("overwrite");
        let PidfileState::ClaimedBy(who) = Pidfile::new(&path).read().expect("read") else {
            panic!("not claimed")
        };
        assert_eq!(who.pid, std::process::id(), "{lie:?}");
    }
    drop(guard);
}

#[test]
fn a_claim_never_writes_through_a_hard_link() {
    if !common::is_root() {
        lockyard_test_support::skip(
            "linking another file into a sticky directory as an attacker needs root here",
        );
        return;
    }
    // /tmp-like: world-writable and sticky. With fs.protected_hardlinks=0
    // (the kernel default) any user may link a file of root's there.
    let dir = Scratch::new("pidfile-hardlink");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).expect("chmod");
    let victim = dir.path("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::fs::hard_link(&victim, dir.path("daemon.pid")).expect("link");
    let err = Pidfile::new(dir.path("daemon.pid")).claim().expect_err("refused");
    assert!(
        matches!(err, LockError::Refused { found: lockyard_flock::Found::HardLinked { links: 2 }, .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious\n", "not truncated");
}

/// A helper process that has claimed the pidfile at `path`.
fn pidfile_holder(path: &std::path::Path) -> common::Proc {
    helper(&["--pidfile", path.to_str().expect("utf-8")])
}

#[test]
fn claim_wait_takes_over_when_the_previous_instance_exits_and_times_out_otherwise() {
    use lockyard_flock::Wait;
    use std::time::Duration;
    let dir = Scratch::new("pidfile-claim-wait");
    let path = dir.path("daemon.pid");
    let p = path.to_str().expect("utf-8");
    let old = helper(&["--pidfile", p]);
    let err = Pidfile::new(&path).claim_wait(7, &Wait::timeout(Duration::from_millis(50))).expect_err("held");
    let LockError::Timeout { holders, .. } = &err else { panic!("{err:?}") };
    assert_eq!(holders.holding().next().and_then(|h| h.pid), Some(old.pid()));

    let waiter = std::thread::spawn(move || {
        Pidfile::new(&path).claim_wait(7, &Wait::timeout(Duration::from_secs(30)))
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(old.finish().success());
    let guard = waiter.join().expect("join").expect("claimed once the old instance let go");
    assert_eq!(std::fs::read_to_string(dir.path("daemon.pid")).expect("read"), "7\n");
    drop(guard);
}
