//! lockyard-procfs against locks taken by real peers: util-linux `flock(1)`
//! and python `fcntl`, in other processes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{Scratch, spawn};
use lockyard_procfs::{FdInfo, LockKey, MountInfo, ProcLocks, RecordKind, RecordMode};

/// The /proc/locks key of `path`, from its mount id (via fdinfo) and inode.
fn key_of(path: &Path) -> LockKey {
    let file = std::fs::File::open(path).expect("open");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let info = FdInfo::read_fd(std::process::id(), u32::try_from(fd).expect("fd")).expect("fdinfo");
    let mounts = MountInfo::read().expect("mountinfo");
    let mount = mounts.by_id(info.mnt_id.expect("mnt_id")).expect("mount listed");
    LockKey::new(mount.device, file.metadata().expect("stat").ino())
}

fn wait_for_locks(key: LockKey, count: usize) -> ProcLocks {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let locks = ProcLocks::read().expect("/proc/locks");
        if locks.on(key).count() >= count {
            return locks;
        }
        assert!(Instant::now() < deadline, "{count} locks on {key} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn flock_holder_and_waiter_are_parsed_with_pids() {
    let dir = Scratch::new("procfs-flock");
    let file = dir.path("a.lock");
    std::fs::write(&file, b"").expect("create");
    let path = file.to_str().expect("utf-8 path");
    let holder = spawn("flock", &["-x", path, "sleep", "60"]);
    let key = key_of(&file);
    wait_for_locks(key, 1);
    let waiter = spawn("flock", &["-s", path, "true"]);
    let locks = wait_for_locks(key, 2);

    let on: Vec<_> = locks.on(key).collect();
    assert_eq!(on.len(), 2, "{on:?}");
    let granted = on.iter().find(|r| !r.is_waiter()).expect("granted lock");
    assert_eq!((granted.kind(), granted.mode()), (RecordKind::Flock, RecordMode::Write));
    assert_eq!(granted.pid_hint(), Some(holder.pid()));
    let queued = on.iter().find(|r| r.is_waiter()).expect("waiter");
    assert_eq!(queued.mode(), RecordMode::Read);
    assert_eq!(queued.pid_hint(), Some(waiter.pid()));
    let blocker = &locks.records()[queued.blocker().expect("tied to its blocker")];
    assert_eq!(blocker.pid_hint(), Some(holder.pid()));
}

#[test]
fn ofd_lock_from_python_shows_pid_minus_one_and_its_range() {
    let dir = Scratch::new("procfs-ofd");
    let file = dir.path("ofd.lock");
    std::fs::write(&file, b"").expect("create");
    let script = format!(
        "import fcntl, struct, time\n\
         f = open({:?}, 'r+')\n\
         F_OFD_SETLK = 37\n\
         fcntl.fcntl(f, F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 100, 50, 0))\n\
         time.sleep(60)\n",
        file.to_str().expect("utf-8 path")
    );
    let _holder = spawn("python3", &["-c", &script]);
    let key = key_of(&file);
    let locks = wait_for_locks(key, 1);
    let ofd = locks.on(key).next().expect("ofd lock");
    assert_eq!(ofd.kind(), RecordKind::Ofd);
    assert_eq!(ofd.pid(), -1);
    assert_eq!((ofd.start(), ofd.end()), (100, Some(149)));
}
