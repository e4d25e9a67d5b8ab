//! `lockyard reserve --enforce` for real: the command runs in a cpuset
//! cgroup it cannot leave, the cgroup goes when it exits, and the cgroup
//! of a killed supervisor is swept by the lock its creator held.
//!
//! Root only, on a host with a cpuset hierarchy (v1, as on this project's
//! CI machines, or v2 from the root cgroup) and at least two CPUs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockyard_test_support::Scratch;
use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

fn missing_capability() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root to create cgroups".to_owned());
    }
    let cpus = rustix::thread::sched_getaffinity(None).map(|s| s.count()).unwrap_or(0);
    if cpus < 2 {
        return Some(format!(
            "needs two CPUs to have one outside the reservation (this process may use {cpus})"
        ));
    }
    if let Err(e) = lockyard::topo::CgroupParent::discover() {
        return Some(format!("no cpuset cgroup here: {e}"));
    }
    None
}

fn lockyard(args: &[&str]) -> Output {
    Command::new(LOCKYARD).args(args).stdin(Stdio::null()).output().expect("run lockyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sweep(locks: &Path) -> Value {
    let out = lockyard(&["topo", "--sweep", "--json", "--lock-dir", locks.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn listed(report: &Value, field: &str, cgroup: &Path) -> bool {
    report[field].as_array().expect("list").iter().any(|p| p.as_str() == cgroup.to_str())
}

/// The cpuset cgroup directory of `pid`, from its /proc/PID/cgroup and
/// the mount table (v1 cpuset, or v2).
fn cgroup_dir(pid: u32) -> PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let mounts = lockyard::procfs::MountInfo::read().expect("mountinfo");
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) =
            (fields.next(), fields.next().expect("list"), fields.next().expect("path"));
        let mount = if controllers.split(',').any(|c| c == "cpuset") {
            mounts.iter().find(|m| m.fs_type() == "cgroup" && m.super_options().contains("cpuset"))
        } else if controllers.is_empty() {
            mounts.iter().find(|m| m.fs_type() == "cgroup2")
        } else {
            None
        };
        if let Some(mount) = mount.filter(|_| path.contains("lockyard-")) {
            return mount.mount_point().join(path.trim_start_matches('/'));
        }
    }
    panic!("pid {pid} is in no lockyard cgroup: {own}");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_enforced_command_cannot_leave_its_cpus_and_its_cgroup_goes_with_it() {
    if let Some(why) = missing_capability() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = Scratch::new("enforce");
    let locks = dir.path("locks");
    let locks_arg = locks.to_str().expect("utf-8");
    let report = dir.path("report");
    // The command reports its cgroup and allowed CPUs, then tries to
    // widen its affinity to every CPU the test may use.
    let all = rustix::thread::sched_getaffinity(None).expect("affinity");
    let every: Vec<String> = (0..1024).filter(|&c| all.is_set(c)).map(|c| c.to_string()).collect();
    let script = format!(
        "grep Cpus_allowed_list /proc/self/status > {r}; cat /proc/self/cgroup >> {r}; \
         for c in {list}; do [ \"$c\" != \"$LOCKYARD_CPUS\" ] && other=$c && break; done; \
         taskset -pc $other $$ >/dev/null 2>&1; echo outside=$? >> {r}; \
         taskset -pc {every} $$ >/dev/null 2>&1; echo widen=$? >> {r}; \
         grep Cpus_allowed_list /proc/self/status >> {r}",
        r = report.display(),
        list = every.join(" "),
        every = every.join(","),
    );
    let out = lockyard(&[
        "reserve",
        "--cpus",
        "1",
        "--enforce",
        "--lock-dir",
        locks_arg,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = std::fs::read_to_string(&report).expect("report");
    let allowed: Vec<&str> = seen.lines().filter(|l| l.starts_with("Cpus_allowed_list")).collect();
    assert_eq!(allowed.len(), 2, "{seen}");
    assert_eq!(allowed[0], allowed[1], "the affinity could not be widened: {seen}");
    assert!(!allowed[0].contains(',') && !allowed[0].contains('-'), "one CPU: {seen}");
    let cgroup_line = seen.lines().find(|l| l.contains("lockyard-")).expect("in a lockyard cgroup");
    // A CPU outside the reservation is refused (EINVAL: taskset fails);
    // a wider request is clipped to the cpuset (the affinity after it is
    // unchanged, checked above).
    assert!(seen.contains("outside=1\n"), "{seen}");
    assert!(seen.contains("widen="), "{seen}");

    // The cgroup is gone once the command has exited.
    let path = cgroup_line.splitn(3, ':').nth(2).expect("path");
    let gone = ["/sys/fs/cgroup/cpuset", "/sys/fs/cgroup"]
        .iter()
        .map(|m| Path::new(m).join(path.trim_start_matches('/')))
        .all(|p| !p.exists());
    assert!(gone, "{path} is left behind");
}

#[test]
fn a_killed_supervisors_cgroup_is_swept_once_nothing_runs_in_it() {
    if let Some(why) = missing_capability() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = Scratch::new("enforce-sweep");
    let locks = dir.path("locks");
    let locks_arg = locks.to_str().expect("utf-8");
    let pidfile = dir.path("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut supervisor: Child = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--enforce", "--lock-dir", locks_arg, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("reserve");
    wait_for("the command to start", || std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')));
    let command: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    let cgroup = cgroup_dir(command);

    // Its creator lives: kept.
    let report = sweep(&locks);
    assert!(listed(&report, "live", &cgroup), "{report}");
    // A sweep from another lock directory has no say over it.
    let report = sweep(&dir.path("other-locks"));
    assert!(!listed(&report, "removed", &cgroup) && cgroup.exists(), "{report}");

    // The supervisor is killed; its command still runs in the cgroup: kept.
    supervisor.kill().expect("SIGKILL");
    supervisor.wait().expect("reap");
    let report = sweep(&locks);
    assert!(listed(&report, "busy", &cgroup), "{report}");
    assert!(cgroup.exists());

    // Once the command is gone too, the orphan is removed.
    let pid = rustix::process::Pid::from_raw(i32::try_from(command).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the command");
    wait_for("the command to die", || !Path::new(&format!("/proc/{command}")).exists());
    let report = sweep(&locks);
    assert!(listed(&report, "removed", &cgroup), "{report}");
    assert!(!cgroup.exists(), "{} is left behind", cgroup.display());
}
