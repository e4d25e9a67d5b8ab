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

/// The kernel `cargo xtask kernel-fixture` unpacks (Debian's cloud kernel).
fn fixture_kernel() -> Option<PathBuf> {
    let boot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kernel-fixture/root/boot");
    std::fs::read_dir(boot)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
}

/// What the guest runs as init: cgroup v2 only (`cgroup_no_v1=all`), two
/// CPUs on two NUMA nodes. It prints `KEY=value` lines the test reads.
const GUEST_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
# A line of its own after the firmware's terminal escapes.
echo
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "CONTROLLERS=$(cat /sys/fs/cgroup/cgroup.controllers)"
lockyard reserve --enforce --cpus 1 -v -- sh -c '
    echo "INSIDE=$(grep Cpus_allowed_list /proc/self/status | cut -f2)"
    echo "CGROUP=$(cat /proc/self/cgroup)"
    for cpu in 0 1; do taskset -p -c $cpu $$ >/dev/null 2>&1; echo "TASKSET_$cpu=$?"; done
    echo "AFTER=$(grep Cpus_allowed_list /proc/self/status | cut -f2)"' 2>&1
echo "STATUS=$?"
echo "LEFT=$(ls /sys/fs/cgroup/lockyard 2>/dev/null | grep lockyard- | tr '\n' ' ')"
# Two NUMA nodes, one CPU each: a two-CPU reservation spills (and says
# so); --node 1 with --membind keeps CPU and memory on node 1.
echo "NODES=$(ls -d /sys/devices/system/node/node* | wc -l)"
echo "SPILL=$(lockyard reserve --cpus 2 -v -- true 2>&1 | grep -c 'spans NUMA nodes')"
lockyard reserve --enforce --node 1 --cpus 1 --membind -- sh -c '
    echo "NODE1_CPUS=$(grep Cpus_allowed_list /proc/self/status | cut -f2)"
    echo "NODE1_MEMS=$(grep Mems_allowed_list /proc/self/status | cut -f2)"
    echo "NODE1_BOUND=$(grep -c bind:1 /proc/self/numa_maps)"' 2>&1
# A supervisor killed while its command runs: the sweep keeps the busy
# cgroup, then removes it once the command is gone.
lockyard reserve --enforce --cpus 1 -- sleep 600 &
supervisor=$!
sleep 2
kill -9 $supervisor
orphan=$(ls -d /sys/fs/cgroup/lockyard/lockyard-* 2>/dev/null | head -n1)
lockyard topo --sweep >/dev/null 2>&1
[ -d "$orphan" ] && echo "BUSY_KEPT=yes" || echo "BUSY_KEPT=no"
kill -9 $(cat "$orphan/cgroup.procs") 2>/dev/null
sleep 1
lockyard topo --sweep >/dev/null 2>&1
[ -d "$orphan" ] && echo "SWEPT=no" || echo "SWEPT=yes"
echo "ORPHAN=$orphan"
echo DONE
poweroff -f
"#;

/// cgroup v2, for real: this project's CI hosts bind cpuset to v1, so the
/// v2 path runs in a small VM (QEMU, software emulation, Debian's kernel,
/// busybox and this build of lockyard in an initramfs).
#[test]
fn enforcement_works_on_cgroup_v2_in_a_vm() {
    let tools = ["qemu-system-x86_64", "busybox", "cpio", "strip", "ldd"];
    if let Some(tool) = tools.iter().find(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map_or(true, |o| !o.status.success())
    }) {
        lockyard_test_support::skip(&format!("needs {tool} (cargo xtask ci installs it)"));
        return;
    }
    let Some(kernel) = fixture_kernel() else {
        lockyard_test_support::skip(
            "no Debian kernel fixture (cargo xtask kernel-fixture, as cargo xtask ci does)",
        );
        return;
    };
    let dir = Scratch::new("cgroup-v2-vm");
    let root = dir.0.join("root");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    let busybox = text(&Command::new("sh").args(["-c", "command -v busybox"]).output().expect("sh").stdout);
    std::fs::copy(busybox.trim(), root.join("bin/busybox")).expect("busybox");
    let stripped = Command::new("strip").arg("-o").arg(root.join("bin/lockyard")).arg(LOCKYARD).status();
    assert!(stripped.expect("strip").success());
    // The binary's shared libraries, where the loader will look for them.
    let libs = Command::new("ldd").arg(LOCKYARD).output().expect("ldd");
    for lib in text(&libs.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("a directory")).expect("mkdir");
        std::fs::copy(lib, &to).expect("copy a library");
    }
    std::fs::write(root.join("init"), GUEST_INIT).expect("init");
    std::fs::set_permissions(root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let initrd = dir.0.join("initrd.cpio");
    let packed = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet > \"$0\"")
        .arg(&initrd)
        .current_dir(&root)
        .status()
        .expect("cpio");
    assert!(packed.success());
    let vm = Command::new("timeout")
        .arg("300")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "768"])
        .args([
            "-object",
            "memory-backend-ram,id=m0,size=384M",
            "-object",
            "memory-backend-ram,id=m1,size=384M",
        ])
        .args(["-numa", "node,nodeid=0,cpus=0,memdev=m0", "-numa", "node,nodeid=1,cpus=1,memdev=m1"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet cgroup_no_v1=all rdinit=/init panic=-1"])
        .stdin(Stdio::null())
        .output()
        .expect("qemu");
    let console = text(&vm.stdout);
    let value = |key: &str| {
        console
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(&format!("{key}=")).map(str::trim))
            .unwrap_or_else(|| panic!("the guest did not report {key}:\n{console}\n{}", text(&vm.stderr)))
            .to_owned()
    };
    assert!(console.lines().any(|l| l.trim_end() == "DONE"), "the guest ran to the end:\n{console}");
    assert!(value("CONTROLLERS").contains("cpuset"), "{console}");
    assert!(console.contains("enforced by the cgroup v2 cgroup"), "{console}");
    let inside = value("INSIDE");
    assert!(inside == "0" || inside == "1", "one CPU inside: {console}");
    assert!(value("CGROUP").starts_with("0::/lockyard"), "{console}");
    let (mine, other) = if inside == "0" { ("TASKSET_0", "TASKSET_1") } else { ("TASKSET_1", "TASKSET_0") };
    assert_eq!(value(mine), "0", "its own CPU may be asked for: {console}");
    assert_ne!(value(other), "0", "a CPU outside the reservation is refused: {console}");
    assert_eq!(value("AFTER"), inside, "{console}");
    assert_eq!(value("STATUS"), "0", "{console}");
    assert_eq!(value("LEFT"), "", "the cgroup went with the command: {console}");
    assert!(value("ORPHAN").contains("lockyard-"), "the killed supervisor left its cgroup: {console}");
    assert_eq!(value("BUSY_KEPT"), "yes", "{console}");
    assert_eq!(value("SWEPT"), "yes", "{console}");
    assert_eq!(value("NODES"), "2", "{console}");
    assert_eq!(value("SPILL"), "1", "a reservation across nodes is warned about: {console}");
    assert_eq!(value("NODE1_CPUS"), "1", "{console}");
    assert_eq!(value("NODE1_MEMS"), "1", "the cpuset's memory is node 1's: {console}");
    assert_ne!(value("NODE1_BOUND"), "0", "memory bound to node 1: {console}");
}
