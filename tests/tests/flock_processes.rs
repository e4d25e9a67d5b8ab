//! lockyard-flock across real processes: our own holder helper, util-linux
//! `flock(1)` and python `fcntl`.

// Tests that need root say why they skip on stderr.
#![allow(clippy::print_stderr)]

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Scratch, eventually, give_link_to_nobody, hold, is_root, spawn};
use lockyard_flock::procfs::FdInfo;
use lockyard_flock::{
    Attribution, ByteRange, CancelToken, Found, FsPolicy, FsType, LockError, LockFile, LockKind, LockMode,
    LockOptions, RecordKind, Snapshot, Wait, holders_of, holders_of_many,
};

fn exclusive(path: &Path) -> LockFile {
    LockFile::new(path).expect("lock file")
}

fn shared(path: &Path) -> LockFile {
    LockFile::with_options(path, LockOptions::new().shared()).expect("lock file")
}

#[test]
fn shared_readers_coexist_and_exclude_a_writer() {
    let dir = Scratch::new("flock-shared");
    let path = dir.path("readers.lock");
    let first = hold(&path, &["flock", "shared"]);
    let second = hold(&path, &["flock", "shared"]);
    let mine = shared(&path).try_lock().expect("try").expect("a third reader gets in");
    assert_eq!(mine.mode(), LockMode::Shared);
    assert!(exclusive(&path).try_lock().expect("try").is_none(), "a writer must wait for readers");

    let holders = holders_of(&path).expect("holders");
    let mut pids: Vec<u32> = holders.holding().filter_map(|h| h.pid).collect();
    pids.sort_unstable();
    let mut expected = vec![first.pid(), second.pid(), std::process::id()];
    expected.sort_unstable();
    assert_eq!(pids, expected);
    assert!(holders.holding().all(|h| h.mode == Some(LockMode::Shared) && h.kind == RecordKind::Flock));
}

#[test]
fn exclusive_lock_excludes_other_process_and_names_it() {
    let dir = Scratch::new("flock-exclusive");
    let path = dir.path("x.lock");
    let holder = hold(&path, &["flock", "exclusive"]);
    let file = exclusive(&path);
    assert!(file.try_lock().expect("try").is_none());
    let err = file.try_lock_or_holders().expect_err("contended");
    let LockError::Contended { holders, .. } = &err else { panic!("{err:?}") };
    let named: Vec<_> = holders.holding().collect();
    assert_eq!(named.len(), 1, "{holders}");
    assert_eq!(named[0].pid, Some(holder.pid()));
    assert_eq!(named[0].mode, Some(LockMode::Exclusive));
    assert!(named[0].start_time.is_some());
    assert!(named[0].cmdline.as_deref().is_some_and(|c| c.contains("lockyard-test-holder")));
    let message = err.to_string();
    assert!(message.contains(&format!("pid={}", holder.pid())), "{message}");
    assert!(message.contains("x.lock"), "{message}");
    assert!(err.is_busy());
}

#[test]
fn a_killed_holder_releases_its_lock() {
    let dir = Scratch::new("flock-killed");
    let path = dir.path("k.lock");
    let mut holder = hold(&path, &["ofd", "exclusive"]);
    let file = LockFile::with_options(&path, LockOptions::new().kind(LockKind::Ofd)).expect("file");
    assert!(file.try_lock().expect("try").is_none());
    let waiter = std::thread::spawn(move || file.lock_timeout(Duration::from_secs(20)).map(|g| g.kind()));
    std::thread::sleep(Duration::from_millis(50));
    holder.kill();
    assert_eq!(waiter.join().expect("join").expect("acquired after the kill"), LockKind::Ofd);
    assert!(path.exists(), "the lock file is never removed");
}

#[test]
fn timeout_names_the_holder_and_cancel_stops_the_wait() {
    let dir = Scratch::new("flock-timeout");
    let path = dir.path("t.lock");
    let holder = hold(&path, &["flock", "exclusive"]);
    let file = exclusive(&path);
    let err = file.lock_timeout(Duration::from_millis(50)).expect_err("held");
    let LockError::Timeout { holders, waited, .. } = &err else { panic!("{err:?}") };
    assert!(*waited >= Duration::from_millis(50));
    assert_eq!(holders.holding().next().and_then(|h| h.pid), Some(holder.pid()));

    let token = CancelToken::new().expect("token");
    let canceller = token.clone();
    let wait = Wait::default().cancel(token);
    let waiting = std::thread::spawn(move || file.lock_with(&wait).map(drop));
    std::thread::sleep(Duration::from_millis(30));
    canceller.cancel();
    let err = waiting.join().expect("join").expect_err("cancelled");
    assert!(matches!(err, LockError::Cancelled { .. }), "{err:?}");
}

#[test]
fn an_unrepresentable_timeout_means_no_limit() {
    // `Instant + Duration::MAX` overflows; the wait must not panic but
    // wait as long as it takes.
    let dir = Scratch::new("flock-max-timeout");
    let path = dir.path("m.lock");
    let mut holder = hold(&path, &["flock", "exclusive"]);
    let file = exclusive(&path);
    let waiting = std::thread::spawn(move || file.lock_timeout(Duration::MAX).map(drop));
    std::thread::sleep(Duration::from_millis(30));
    holder.kill();
    waiting.join().expect("no panic").expect("acquired after the holder died");
}

#[test]
fn waiter_wakes_on_explicit_unlock_without_close() {
    // `flock -u` style release raises no inotify event; the capped backoff
    // must still notice it.
    let dir = Scratch::new("flock-unlock");
    let path = dir.path("u.lock");
    let holder = exclusive(&path);
    let mut guard = holder.try_lock().expect("try").expect("free");
    let file = exclusive(&path);
    let waiting = std::thread::spawn(move || file.lock_timeout(Duration::from_secs(20)).map(drop));
    std::thread::sleep(Duration::from_millis(30));
    // Downgrade-then-release through the guard keeps the descriptor open.
    guard.set_mode(LockMode::Shared).expect("downgrade");
    rustix::fs::flock(&guard, rustix::fs::FlockOperation::Unlock).expect("unlock");
    waiting.join().expect("join").expect("acquired after unlock");
    drop(guard);
}

#[test]
fn lock_interoperates_with_util_linux_flock() {
    let dir = Scratch::new("flock-util-linux");
    let path = dir.path("interop.lock");
    let p = path.to_str().expect("utf-8");
    let guard = exclusive(&path).try_lock().expect("try").expect("free");
    let status = Command::new("flock").args(["-n", p, "true"]).status().expect("flock(1)");
    assert_eq!(status.code(), Some(1), "flock(1) must see our lock");
    drop(guard);
    let status = Command::new("flock").args(["-n", p, "true"]).status().expect("flock(1)");
    assert!(status.success());

    let theirs = spawn("flock", &["-x", p, "sleep", "60"]);
    eventually("flock(1) to lock", || !holders_of(&path).expect("holders").is_empty());
    assert!(exclusive(&path).try_lock().expect("try").is_none());
    let holders = holders_of(&path).expect("holders");
    assert_eq!(holders.holding().next().and_then(|h| h.pid), Some(theirs.pid()));
}

#[test]
fn ofd_holder_from_python_is_found_only_by_exact_attribution() {
    let dir = Scratch::new("flock-ofd-python");
    let path = dir.path("ofd.lock");
    std::fs::write(&path, b"").expect("create");
    let script = format!(
        "import fcntl, struct, time\n\
         f = open({:?}, 'r+')\n\
         fcntl.fcntl(f, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))\n\
         time.sleep(60)\n",
        path.to_str().expect("utf-8")
    );
    let python = spawn("python3", &["-c", &script]);
    eventually("python to lock", || !holders_of(&path).expect("holders").is_empty());

    let snapshot = Snapshot::read().expect("snapshot");
    let id = snapshot.file_id(&path).expect("id");
    let cheap = snapshot.holders(id.key);
    assert_eq!(cheap.0.len(), 1);
    assert_eq!((cheap.0[0].pid, cheap.0[0].kind), (None, RecordKind::Ofd), "/proc/locks records pid -1");

    let exact = snapshot.exact_holders(&[id]).expect("scan /proc");
    let holder = &exact[0].0[0];
    assert_eq!((holder.pid, holder.attribution), (Some(python.pid()), Attribution::Exact));
    assert!(holder.cmdline.as_deref().is_some_and(|c| c.contains("python")));
    // flock and fcntl locks are independent on Linux: peers must agree on a kind.
    assert!(exclusive(&path).try_lock().expect("try").is_some(), "a flock does not see an OFD lock");
    let ofd =
        LockFile::with_options(&path, LockOptions::new().kind(LockKind::Ofd).range(ByteRange::new(10, 5)))
            .expect("file");
    assert!(ofd.try_lock().expect("try").is_none());
}

#[test]
fn posix_holder_from_python_is_recorded_with_its_pid_and_range() {
    let dir = Scratch::new("flock-posix-python");
    let path = dir.path("posix.lock");
    std::fs::write(&path, b"").expect("create");
    let script = format!(
        "import fcntl, time\n\
         f = open({:?}, 'r+')\n\
         fcntl.lockf(f, fcntl.LOCK_SH, 100, 50)\n\
         time.sleep(60)\n",
        path.to_str().expect("utf-8")
    );
    let python = spawn("python3", &["-c", &script]);
    eventually("python to lock", || !holders_of(&path).expect("holders").is_empty());
    let holders = holders_of(&path).expect("holders");
    let holder = &holders.0[0];
    assert_eq!(
        (holder.pid, holder.kind, holder.mode),
        (Some(python.pid()), RecordKind::Posix, Some(LockMode::Shared))
    );
    assert_eq!((holder.start, holder.end), (50, Some(149)));

    // Bytes outside the range are free; inside, a writer is refused.
    let range = |start, len| {
        LockFile::with_options(
            &path,
            LockOptions::new().kind(LockKind::Ofd).range(ByteRange::new(start, len)),
        )
        .expect("file")
    };
    assert!(range(0, 50).try_lock().expect("try").is_some());
    assert!(range(120, 10).try_lock().expect("try").is_none());
}

#[test]
fn a_forked_childs_inherited_lock_is_attributed_to_the_child() {
    let dir = Scratch::new("flock-fork");
    let path = dir.path("fork.lock");
    let p = path.to_str().expect("utf-8");
    // flock(1) takes the lock, its shell forks a long sleep that inherits
    // the descriptor and exits; flock(1) then exits too.
    let pidfile = dir.path("child.pid");
    let status = Command::new("flock")
        .args([
            "-x",
            p,
            "sh",
            "-c",
            &format!("sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {}", pidfile.display()),
        ])
        .status()
        .expect("flock(1)");
    assert!(status.success());
    let child: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    let _reap = scopeguard_kill(child);

    let snapshot = Snapshot::read().expect("snapshot");
    let id = snapshot.file_id(&path).expect("id");
    let recorded = snapshot.holders(id.key);
    assert_ne!(recorded.0[0].pid, Some(child), "/proc/locks records the exited flock(1)");
    let exact = snapshot.exact_holders(&[id]).expect("scan /proc");
    let pids: Vec<_> = exact[0].holding().map(|h| h.pid).collect();
    assert_eq!(pids, [Some(child)]);
    assert!(exclusive(&path).try_lock().expect("try").is_none());
}

/// Kill `pid` when dropped.
fn scopeguard_kill(pid: u32) -> impl Drop {
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(self.0).unwrap_or(0)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    Kill(pid)
}

#[test]
fn lock_descriptors_are_close_on_exec() {
    let dir = Scratch::new("flock-cloexec");
    let path = dir.path("c.lock");
    let guard = exclusive(&path).try_lock().expect("try").expect("free");
    let fd = u32::try_from(guard.as_raw_fd()).expect("fd");
    let info = FdInfo::read_fd(std::process::id(), fd).expect("fdinfo");
    assert!(info.is_cloexec(), "flags {:o}", info.flags);
}

#[test]
fn symlink_to_a_victim_is_refused_and_the_victim_untouched() {
    let dir = Scratch::new("flock-symlink");
    let victim = dir.path("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.path("planted.lock");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let err = LockFile::with_options(&link, LockOptions::new().permissions(0o666))
        .expect("dir")
        .try_lock()
        .expect_err("symlink refused");
    assert!(matches!(err, LockError::Refused { found: Found::Symlink, .. }), "{err:?}");
    assert!(err.to_string().contains("planted.lock"), "{err}");
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    assert_eq!(std::fs::metadata(&victim).expect("stat").mode() & 0o777, 0o600);
    assert!(holders_of(&victim).expect("holders").is_empty(), "the victim was not locked");
}

#[test]
fn fifo_socket_and_directory_are_refused_without_blocking() {
    let dir = Scratch::new("flock-fifo");
    let fifo = dir.path("fifo.lock");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o644), 0)
        .expect("mkfifo");
    let err = exclusive(&fifo).try_lock().expect_err("fifo refused");
    assert!(matches!(err, LockError::Refused { found: Found::Fifo, .. }), "{err:?}");

    let socket_path = dir.path("sock.lock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind");
    let err = exclusive(&socket_path).try_lock().expect_err("socket refused");
    assert!(matches!(err, LockError::Refused { found: Found::Socket, .. }), "{err:?}");

    std::fs::create_dir(dir.path("d.lock")).expect("mkdir");
    let err = exclusive(&dir.path("d.lock")).try_lock().expect_err("directory refused");
    assert!(matches!(err, LockError::Refused { found: Found::Directory, .. }), "{err:?}");
}

#[test]
fn foreign_file_in_a_sticky_directory_is_refused() {
    if !is_root() {
        lockyard_test_support::skip("needs root to create a file owned by another user");
        return;
    }
    let dir = Scratch::new("flock-sticky");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let path = dir.path("foreign.lock");
    std::fs::write(&path, b"theirs").expect("create");
    rustix::fs::chown(&path, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown nobody");
    let err = exclusive(&path).try_lock().expect_err("foreign file refused");
    assert!(matches!(err, LockError::Refused { found: Found::ForeignFile { uid: 65534 }, .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read"), b"theirs");
    // Unless the directory is meant to be shared by every user.
    let shared = LockFile::with_options(&path, LockOptions::new().allow_foreign_owner()).expect("file");
    drop(shared.try_lock().expect("accepted when allowed").expect("free"));
    assert_eq!(std::fs::read(&path).expect("read"), b"theirs", "still never truncated");
    // A symlink stays refused even then.
    std::os::unix::fs::symlink("/etc/passwd", dir.path("planted.lock")).expect("symlink");
    let planted = LockFile::with_options(dir.path("planted.lock"), LockOptions::new().allow_foreign_owner());
    let err = planted.expect("file").try_lock().expect_err("symlink refused");
    assert!(matches!(err, LockError::Refused { found: Found::Symlink, .. }), "{err:?}");

    // A foreign symlink to a directory in the sticky directory is not
    // followed to find the lock directory either.
    let target = Scratch::new("flock-sticky-target");
    let link = dir.path("lockdir");
    std::os::unix::fs::symlink(&target.0, &link).expect("symlink");
    give_link_to_nobody(&link);
    let err = LockFile::new(link.join("a.lock")).expect_err("foreign symlink refused");
    assert!(matches!(err, LockError::Refused { found: Found::ForeignSymlink { uid: 65534 }, .. }), "{err:?}");
    assert!(!target.path("a.lock").exists());
}

/// What must not change about a file an attacker points a lock path at.
fn fingerprint(path: &Path) -> (Vec<u8>, u32, u32, i64, i64, u64) {
    let meta = std::fs::symlink_metadata(path).expect("stat victim");
    let content = std::fs::read(path).expect("read victim");
    (content, meta.mode(), meta.uid(), meta.mtime(), meta.mtime_nsec(), meta.ino())
}

#[test]
fn planted_symlinks_in_a_sticky_directory_are_refused_and_targets_untouched() {
    if !is_root() {
        lockyard_test_support::skip("needs root to plant files and links owned by another user");
        return;
    }
    let dir = Scratch::new("flock-planted");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let victims = Scratch::new("flock-planted-victims");
    let root_file = victims.path("root-owned");
    std::fs::write(&root_file, b"root's").expect("root victim");
    let foreign_file = victims.path("nobody-owned");
    std::fs::write(&foreign_file, b"nobody's").expect("foreign victim");
    std::fs::set_permissions(&foreign_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    rustix::fs::chown(&foreign_file, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown nobody");

    for victim in [&root_file, &foreign_file] {
        let link = dir.path("victim.lock");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(victim, &link).expect("plant symlink");
        give_link_to_nobody(&link);
        let before = fingerprint(victim);
        for kind in [LockKind::Flock, LockKind::Ofd] {
            let options = LockOptions::new().kind(kind).permissions(0o666);
            let err = LockFile::with_options(&link, options).expect("dir").try_lock().expect_err("refused");
            assert!(
                matches!(
                    err,
                    LockError::Refused { found: Found::Symlink | Found::ForeignSymlink { .. }, .. }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("victim.lock"), "{err}");
        }
        assert_eq!(fingerprint(victim), before, "{} was touched", victim.display());
        assert!(holders_of(victim).expect("holders").is_empty(), "{} was locked", victim.display());
    }
}

#[test]
fn the_var_run_symlink_to_run_keeps_working() {
    let is_link = std::fs::symlink_metadata("/var/run").is_ok_and(|m| m.file_type().is_symlink());
    if !is_root() || !is_link {
        lockyard_test_support::skip("needs root and /var/run as a symlink (to /run)");
        return;
    }
    let name = format!("lockyard-test-{}.lock", std::process::id());
    let path = Path::new("/var/run").join(&name);
    let guard = exclusive(&path).try_lock().expect("lock under /var/run").expect("free");
    let target = std::fs::canonicalize("/var/run").expect("resolve /var/run").join(&name);
    assert!(target.exists(), "{} was not created", target.display());
    drop(guard);
    std::fs::remove_file(&target).expect("clean up");
}

#[test]
fn a_lock_dir_makes_lock_files_that_share_its_hardened_directory() {
    let dir = Scratch::new("flock-lockdir");
    let locks = lockyard_flock::LockDir::open(&dir.0).expect("open dir");
    for bad in ["", ".", "..", "a/b"] {
        let err = locks.file(bad, LockOptions::new()).expect_err("one component");
        assert!(matches!(err, LockError::InvalidPath { .. }), "{bad:?}: {err}");
    }
    let file = locks.file("x.lock", LockOptions::new()).expect("file");
    assert_eq!(file.path(), dir.path("x.lock"));
    let guard = file.try_lock().expect("try").expect("free");
    assert_eq!(holders_of(dir.path("x.lock")).expect("holders").holding().count(), 1);
    drop(guard);
    // A planted symlink is refused through a LockDir as through a path.
    std::os::unix::fs::symlink("/etc/passwd", dir.path("planted.lock")).expect("symlink");
    let err = locks.file("planted.lock", LockOptions::new()).expect("file").try_lock().expect_err("refused");
    assert!(matches!(err, LockError::Refused { found: Found::Symlink, .. }), "{err:?}");

    // Subdirectories: one component, never through a symlink, directories only.
    std::fs::create_dir(dir.path("sub")).expect("mkdir");
    let sub = locks.subdir("sub").expect("a real subdirectory");
    assert_eq!(sub.path(), dir.path("sub"));
    drop(sub.file("y.lock", LockOptions::new()).expect("file").try_lock().expect("try").expect("free"));
    assert!(dir.path("sub/y.lock").exists());
    std::os::unix::fs::symlink(dir.path("sub"), dir.path("linked")).expect("symlink");
    let err = locks.subdir("linked").expect_err("a symlink is refused");
    assert!(matches!(err, LockError::Refused { found: Found::Symlink, .. }), "{err:?}");
    let err = locks.subdir("x.lock").expect_err("a file is refused");
    assert!(matches!(err, LockError::Refused { .. }), "{err:?}");
    let err = locks.subdir("a/b").expect_err("one component");
    assert!(matches!(err, LockError::InvalidPath { .. }), "{err:?}");
}

#[test]
fn root_owned_symlinked_directory_is_followed() {
    // Like /var/run -> /run: a symlink owned by us (or root) is fine.
    let dir = Scratch::new("flock-dirlink");
    std::fs::create_dir(dir.path("real")).expect("mkdir");
    std::os::unix::fs::symlink(dir.path("real"), dir.path("alias")).expect("symlink");
    let guard = exclusive(&dir.path("alias/x.lock")).try_lock().expect("try").expect("free");
    assert!(dir.path("real/x.lock").exists());
    drop(guard);
}

#[test]
fn permissions_are_applied_regardless_of_umask_only_on_creation() {
    let dir = Scratch::new("flock-perms");
    let path = dir.path("shared.lock");
    let old = rustix::process::umask(rustix::fs::Mode::from(0o077));
    let guard =
        LockFile::with_options(&path, LockOptions::new().permissions(0o666)).expect("file").try_lock();
    rustix::process::umask(old);
    drop(guard.expect("try").expect("free"));
    assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o666);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    drop(LockFile::with_options(&path, LockOptions::new().permissions(0o666)).expect("file").try_lock());
    assert_eq!(
        std::fs::metadata(&path).expect("stat").mode() & 0o777,
        0o640,
        "existing files keep their mode"
    );
}

#[test]
fn a_replaced_lock_file_is_detected_and_the_new_one_locked() {
    let dir = Scratch::new("flock-replaced");
    let path = dir.path("r.lock");
    let first = exclusive(&path).try_lock().expect("try").expect("free");
    let file = exclusive(&path);
    let waiting = std::thread::spawn(move || {
        let guard = file.lock_timeout(Duration::from_secs(20)).expect("acquired");
        std::fs::metadata(format!("/proc/self/fd/{}", guard.as_raw_fd())).expect("stat fd").ino()
    });
    std::thread::sleep(Duration::from_millis(50));
    // The file is replaced under the waiter: a new file, locked by someone
    // else, renamed over it (atomically, so the path is never empty and the
    // waiter cannot simply create a fresh file of its own).
    let staged = dir.path("r.lock.new");
    let second = exclusive(&staged).try_lock().expect("try").expect("new file is free");
    std::fs::rename(&staged, &path).expect("rename over");
    let new_inode = std::fs::metadata(&path).expect("stat").ino();
    drop(first);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished(), "the waiter must not settle for the replaced inode");
    drop(second);
    assert_eq!(waiting.join().expect("join"), new_inode);
}

#[test]
fn refused_filesystem_is_named_in_the_error() {
    // /dev/shm is tmpfs everywhere; refuse tmpfs to see the fstatfs check.
    let tmpfs = FsType { magic: 0x0102_1994, name: "tmpfs" };
    let path = Path::new("/dev/shm").join(format!("lockyard-policy-{}.lock", std::process::id()));
    let file = LockFile::with_options(&path, LockOptions::new().fs_policy(FsPolicy::default().refuse(tmpfs)))
        .expect("file");
    let err = file.try_lock().expect_err("refused");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(err, LockError::UnsupportedFilesystem { fs, .. } if fs == tmpfs), "{err:?}");
    assert!(err.to_string().contains("tmpfs"), "{err}");
}

#[test]
fn upgrade_and_downgrade_with_ofd_locks() {
    let dir = Scratch::new("flock-upgrade");
    let path = dir.path("u.lock");
    let file = LockFile::with_options(&path, LockOptions::new().kind(LockKind::Ofd).shared()).expect("file");
    let mut guard = file.try_lock().expect("try").expect("free");
    let reader = hold(&path, &["ofd", "shared"]);
    let err = guard.set_mode(LockMode::Exclusive).expect_err("another reader blocks the upgrade");
    assert!(matches!(err, LockError::Contended { .. }), "{err:?}");
    assert_eq!(guard.mode(), LockMode::Shared, "fcntl conversion failed atomically");
    assert!(reader.finish().success());
    guard.set_mode(LockMode::Exclusive).expect("upgrade");
    assert_eq!(guard.mode(), LockMode::Exclusive);
    // OFD locks of two open file descriptions conflict even in one process.
    let other = LockFile::with_options(&path, LockOptions::new().kind(LockKind::Ofd).shared()).expect("file");
    assert!(other.try_lock().expect("try").is_none());
    guard.set_mode(LockMode::Shared).expect("downgrade");
    assert!(other.try_lock().expect("try").is_some(), "a reader fits after the downgrade");
}

#[test]
fn dropping_a_guard_releases_even_a_shared_descriptor() {
    // A copy of the descriptor, as a child forked by any thread holds until
    // it execs; the drop must not wait for it.
    let dir = Scratch::new("flock-drop-shared");
    let path = dir.path("g.lock");
    let guard = exclusive(&path).try_lock().expect("try").expect("free");
    let copy = rustix::io::fcntl_dupfd_cloexec(&guard, 0).expect("dup");
    drop(guard);
    assert!(exclusive(&path).try_lock().expect("try").is_some(), "the drop unlocked the shared description");
    drop(copy);

    let guard = exclusive(&path).try_lock().expect("try").expect("free");
    let copy = rustix::io::fcntl_dupfd_cloexec(&guard, 0).expect("dup");
    guard.unlock().expect("unlock");
    assert!(exclusive(&path).try_lock().expect("try").is_some());
    drop(copy);
}

#[test]
fn into_fd_hands_over_the_lock_without_unlocking() {
    let dir = Scratch::new("flock-into-fd");
    let path = dir.path("h.lock");
    let fd = exclusive(&path).try_lock().expect("try").expect("free").into_fd();
    let copy = rustix::io::fcntl_dupfd_cloexec(&fd, 0).expect("dup");
    drop(fd);
    assert!(exclusive(&path).try_lock().expect("try").is_none(), "the copy still holds the flock");
    drop(copy);
    // Released once the last copy is closed (a child forked meanwhile by
    // another test thread may hold one until it execs).
    eventually("the last copy to close", || exclusive(&path).try_lock().expect("try").is_some());
}

#[test]
fn batch_holders_answer_each_path_with_one_read() {
    let dir = Scratch::new("flock-batch");
    let (a, b, free) = (dir.path("a.lock"), dir.path("b.lock"), dir.path("free.lock"));
    let holder_a = hold(&a, &["flock", "exclusive"]);
    let holder_b = hold(&b, &["ofd", "shared"]);
    std::fs::write(&free, b"").expect("create");
    let missing = dir.path("missing.lock");
    for exact in [false, true] {
        let answers = holders_of_many(&[&a, &b, &free, &missing], exact).expect("batch");
        let pids = |i: usize| -> Vec<Option<u32>> {
            answers[i].1.as_ref().expect("answer").holding().map(|h| h.pid).collect()
        };
        assert_eq!(pids(0), [Some(holder_a.pid())], "exact={exact}");
        // /proc/locks records -1 for OFD locks; only exact mode names them.
        assert_eq!(pids(1), [if exact { Some(holder_b.pid()) } else { None }], "exact={exact}");
        assert!(pids(2).is_empty());
        assert!(answers[3].1.is_err(), "a missing file is an error for that path only");
    }
}

#[test]
fn directories_of_other_users_or_writable_by_all_are_not_trusted() {
    use lockyard_flock::{DirTrust, LockDir, Untrusted};
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("flock-trust");
    let open = dir.path("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = LockDir::open(&open).expect_err("0777 without the sticky bit");
    assert!(
        matches!(err, LockError::Untrusted { why: Untrusted::WritableByOthers, mode: 0o777, .. }),
        "{err}"
    );
    // Through a path, for a lock file in it, too; and a deeper directory
    // is refused for the sake of the one on the way.
    std::fs::create_dir(open.join("inner")).expect("inner");
    let err = LockFile::new(open.join("inner/x.lock")).expect_err("an ancestor writable by all");
    assert!(matches!(&err, LockError::Untrusted { dir, .. } if dir.ends_with("open")), "{err}");
    // flock(1)'s stance, opted into, accepts it ...
    assert!(LockDir::open_with(&open, &DirTrust::any_owner()).is_ok());
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    assert!(LockDir::open(&open).is_ok(), "sticky, like /tmp");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let err = LockDir::open(&open).expect_err("group-writable");
    assert!(matches!(err, LockError::Untrusted { why: Untrusted::WritableByGroup, .. }), "{err}");
    let gid = std::fs::metadata(&open).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).expect("gid");
    assert!(LockDir::open_with(&open, &DirTrust::group(gid)).is_ok(), "a group trusted on purpose");

    if !rustix::process::geteuid().is_root() {
        lockyard_test_support::skip("directories and links of another user need root to make");
        return;
    }
    let theirs = dir.path("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let err = LockDir::open(&theirs).expect_err("another user's");
    assert!(matches!(err, LockError::Untrusted { why: Untrusted::ForeignOwner, uid: 65534, .. }), "{err}");
    assert!(err.to_string().contains("install -d -o root -m 1777"), "{err}");
    // In a world-writable directory that is not sticky, another user's
    // symlink is not followed, whatever the trust.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = open.join("link");
    std::os::unix::fs::symlink("/etc", &link).expect("link");
    rustix::fs::chownat(
        rustix::fs::CWD,
        &link,
        Some(rustix::process::Uid::from_raw(65534)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("lchown");
    let err = LockFile::with_options(link.join("x.lock"), LockOptions::new().trust(DirTrust::any_owner()))
        .expect_err("foreign link");
    assert!(matches!(err, LockError::Refused { found: Found::ForeignSymlink { uid: 65534 }, .. }), "{err}");
}

#[test]
fn create_makes_missing_directories_with_the_mode_asked_for() {
    use lockyard_flock::{DirTrust, LockDir};
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("flock-create");
    let deep = dir.path("a/b/locks");
    let made = LockDir::create(&deep, 0o1777, &DirTrust::private()).expect("create");
    assert_eq!(std::fs::metadata(&deep).expect("made").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(made.path(), deep);
    // Existing: kept as it is.
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    LockDir::create(&deep, 0o1777, &DirTrust::private()).expect("open existing");
    assert_eq!(std::fs::metadata(&deep).expect("kept").permissions().mode() & 0o7777, 0o755);
    // Where a file sits, nothing is created.
    std::fs::write(dir.path("file"), "").expect("file");
    assert!(LockDir::create(dir.path("file/locks"), 0o755, &DirTrust::private()).is_err());
}

/// The listing names each locked file right however its name changed:
/// many locks in one directory (found by listing the directory), one
/// renamed after it was locked, one deleted (only the holder's descriptor
/// knows it, as `(deleted)`), one in another directory, and an unlocked
/// file with a locked one's former name.
#[test]
fn the_listing_names_every_locked_file_after_renames_and_deletions() {
    let dir = Scratch::new("listing-names");
    let other = Scratch::new("listing-names-other");
    let names: Vec<String> = (0..40).map(|i| format!("{i:03}.lock")).collect();
    let mut paths: Vec<std::path::PathBuf> = names.iter().map(|n| dir.path(n)).collect();
    paths.push(other.path("elsewhere.lock"));
    let list =
        paths.iter().map(|p| format!("{:?}", p.to_str().expect("utf-8"))).collect::<Vec<_>>().join(",");
    let script = format!(
        "import fcntl, sys\n\
         fs = [open(p, 'w') for p in [{list}]]\n\
         [fcntl.flock(f, fcntl.LOCK_EX) for f in fs]\n\
         print('locked', flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut python = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(python.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("ready");
    assert_eq!(line.trim(), "locked");

    let renamed = dir.path("renamed.lock");
    std::fs::rename(&paths[1], &renamed).expect("rename");
    std::fs::write(&paths[1], b"").expect("an unlocked file under the old name");
    let deleted_ino = std::fs::metadata(&paths[2]).expect("stat").ino();
    std::fs::remove_file(&paths[2]).expect("delete");

    let options = lockyard_flock::listing::ListOptions { pids: vec![python.id()], ..Default::default() };
    let listing = lockyard_flock::listing::list(&options).expect("list");
    assert_eq!(listing.locks.len(), paths.len(), "{listing:?}");
    for row in &listing.locks {
        let path = row.path.as_deref().unwrap_or_else(|| panic!("no path for {row:?}"));
        if row.inode == deleted_ino {
            assert!(path.to_string_lossy().ends_with(" (deleted)"), "{path:?}");
            continue;
        }
        assert_eq!(std::fs::metadata(path).expect("named file exists").ino(), row.inode, "{path:?}");
        assert_ne!(path, paths[1], "the unlocked file under the old name");
    }
    assert!(listing.locks.iter().any(|r| r.path.as_deref() == Some(renamed.as_path())));
    assert!(listing.locks.iter().any(|r| r.path.as_deref() == Some(paths[40].as_path())));
    drop(python.stdin.take());
    python.wait().expect("python exits");
}

/// A descriptor the caller opened (as a shell's `exec 9>file`) is locked
/// in place: contended and timed-out attempts name the holder, and the
/// lock stays with the descriptor after `into_fd`.
#[test]
fn an_already_open_descriptor_is_locked_in_place() {
    use lockyard_flock::LockGuard;
    let dir = Scratch::new("flock-lock-fd");
    let path = dir.path("fd.lock");
    let open = || std::os::fd::OwnedFd::from(std::fs::File::create(&path).expect("open"));
    let holder = hold(&path, &[]);

    let err =
        LockGuard::lock_fd(open(), &LockOptions::new(), &Wait::timeout(Duration::ZERO)).expect_err("held");
    let LockError::Contended { holders, path: named } = &err else { panic!("{err:?}") };
    assert_eq!(named, &path, "named by its /proc/self/fd link");
    assert_eq!(holders.holding().next().and_then(|h| h.pid), Some(holder.pid()));
    let err = LockGuard::lock_fd(open(), &LockOptions::new(), &Wait::timeout(Duration::from_millis(30)))
        .expect_err("still held");
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");

    let fd = open();
    let waiting = std::thread::spawn(move || LockGuard::lock_fd(fd, &LockOptions::new(), &Wait::default()));
    assert!(holder.finish().success());
    let guard = waiting.join().expect("join").expect("locked after the holder let go");
    let kept = guard.into_fd();
    assert!(
        LockFile::new(&path).expect("file").try_lock().expect("try").is_none(),
        "kept with the descriptor"
    );
    drop(kept);
    assert!(LockFile::new(&path).expect("file").try_lock().expect("try").is_some());
}

#[test]
fn a_queued_wait_takes_an_unlock_in_place_and_never_keeps_a_lock_it_gave_up_on() {
    use std::os::fd::OwnedFd;
    let dir = Scratch::new("flock-queued");
    let path = dir.path("queued.lock");
    let open = || -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("open")
            .into()
    };
    let holder = open();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).expect("hold");
    let options = LockOptions::new().exclusive();

    // Given up on: Timeout naming the holder (this process).
    let err = lockyard_flock::lock_descriptor_queued(open(), &options, Duration::from_millis(100))
        .expect_err("held");
    match &err {
        LockError::Timeout { holders, .. } => {
            assert!(holders.holding().any(|h| h.pid == Some(std::process::id())), "{err}");
        }
        other => panic!("not a timeout: {other}"),
    }
    // The abandoned wait gets the lock once it is free, and lets it go at
    // once (its descriptor closes): a third description can take it.
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::Unlock).expect("unlock in place");
    let third = open();
    eventually("the abandoned wait to let go", || {
        rustix::fs::flock(&third, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    });
    rustix::fs::flock(&third, rustix::fs::FlockOperation::Unlock).expect("unlock");

    // Waiting: an unlock without a close hands it over.
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).expect("hold again");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::Unlock).expect("unlock in place");
        holder
    });
    let (locked, kind) = lockyard_flock::lock_descriptor_queued(open(), &options, Duration::from_secs(10))
        .expect("handed over");
    assert_eq!(kind, LockKind::Flock);
    let holder = release.join().expect("join");
    assert!(
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err(),
        "the waiter's description holds it now"
    );
    drop(locked);
}
