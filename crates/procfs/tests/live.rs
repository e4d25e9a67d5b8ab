//! Parse this machine's own files: whatever the kernel prints today must
//! parse, and must agree with what the process knows about itself.

use std::os::unix::fs::MetadataExt;

use lockyard_procfs::{Cmdline, CpuList, FdInfo, MountInfo, ProcLocks};

#[test]
fn live_mountinfo_parses_and_contains_the_root() {
    let mounts = MountInfo::read().expect("/proc/self/mountinfo");
    assert!(!mounts.is_empty());
    let root = mounts.covering("/").expect("something is mounted on /");
    assert_eq!(root.mount_point(), std::path::Path::new("/"));
    let same = MountInfo::read_pid(std::process::id()).expect("/proc/PID/mountinfo");
    assert_eq!(mounts, same);
}

#[test]
fn live_locks_parse() {
    // Whatever the host holds right now; the content is checked by the
    // multi-process tests in the workspace's tests/ package.
    ProcLocks::read().expect("/proc/locks");
}

#[test]
fn live_fdinfo_names_the_mount_of_an_open_file() {
    let path = std::env::current_exe().expect("current exe");
    let file = std::fs::File::open(&path).expect("open self");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let info = FdInfo::read_fd(std::process::id(), u32::try_from(fd).expect("fd")).expect("fdinfo");
    assert!(info.is_cloexec(), "std opens with O_CLOEXEC");
    assert_eq!(info.ino, Some(file.metadata().expect("stat").ino()));
    let mounts = MountInfo::read().expect("mountinfo");
    let mount = mounts.by_id(info.mnt_id.expect("mnt_id on any kernel since 3.15")).expect("listed");
    let canonical = path.canonicalize().expect("canonicalize");
    assert!(canonical.starts_with(mount.mount_point()), "{canonical:?} under {:?}", mount.mount_point());
}

#[test]
fn live_cmdline_of_this_test() {
    let cmd = Cmdline::read_pid(std::process::id()).expect("read").expect("non-empty");
    let exe = std::env::args_os().next().expect("argv[0]");
    assert_eq!(cmd.program(), exe);
    let kthreadd = Cmdline::read_pid(2);
    if let Ok(cmd) = kthreadd {
        // pid 2 is kthreadd on a host, an ordinary process in a container.
        if std::fs::read_link("/proc/2/exe").is_err() {
            assert_eq!(cmd, None, "kernel threads have an empty cmdline");
        }
    }
}

#[test]
fn live_cpu_lists_parse() {
    let online = CpuList::read_from("/sys/devices/system/cpu/online").expect("online");
    assert!(!online.is_empty());
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let allowed =
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
    let allowed: CpuList = allowed.parse().expect("allowed");
    assert!(!allowed.intersection(&online).is_empty());
}
