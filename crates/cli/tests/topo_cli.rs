//! `lockyard topo` against this host, with a reservation lock held by
//! util-linux flock(1).

#![allow(clippy::print_stdout)]

use std::process::{Command, Stdio};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

#[test]
fn topo_maps_this_host_and_names_who_holds_a_cpu() {
    let dir = std::env::temp_dir().join(format!("lockyard-topo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("lock dir");
    let topo = |json: bool| {
        let mut command = Command::new(LOCKYARD);
        command.args(["topo", "--lock-dir"]).arg(&dir);
        if json {
            command.arg("--json");
        }
        let out = command.output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let view: Value = serde_json::from_str(&topo(true)).expect("json");
    assert_eq!(view["schema"], 1);
    assert!(view["held"].as_object().expect("held").is_empty(), "{view}");
    let cpu = view["topology"]["cpus"][0]["id"].as_u64().expect("a cpu");
    let llc = view["topology"]["cpus"][0]["llc"].as_u64();

    let lock = dir.join(format!("cpu-{cpu}.lock"));
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("flock(1)");
    // flock(1) creates and locks the file before it runs sleep.
    let held = (0..200).find_map(|_| {
        let view: Value = serde_json::from_str(&topo(true)).expect("json");
        let holders = view["held"][format!("cpu-{cpu}")].clone();
        if holders.is_null() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            None
        } else {
            Some(holders)
        }
    });
    let text = topo(false);
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    let _ = std::fs::remove_dir_all(&dir);

    let held = held.expect("the held CPU shows up");
    assert_eq!(held[0]["pid"].as_u64(), Some(u64::from(holder.id())), "{held}");
    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("cpu-{cpu} "))).expect("cpu line");
    assert!(line.contains(&format!("held by pid={}", holder.id())), "{text}");
    if let Some(llc) = llc {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(&format!("llc-{llc} "))).expect("llc line");
        assert!(line.ends_with(": free"), "only the CPU is held: {text}");
    }
}

#[test]
fn reserve_pins_the_command_holds_for_its_life_and_passes_its_status() {
    let dir = std::env::temp_dir().join(format!("lockyard-reserve-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reserve = |args: &[&str]| {
        let mut command = Command::new(LOCKYARD);
        command.args(["reserve", "--lock-dir"]).arg(&dir).args(args);
        command
    };
    let out = reserve(&[
        "--cpus",
        "1",
        "--",
        "sh",
        "-c",
        "echo $LOCKYARD_CPUS $LOCKYARD_JOBS; grep Cpus_allowed_list /proc/self/status; exit 3",
    ])
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(3), "the command's status: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let (cpus, jobs) = lines.next().expect("env line").split_once(' ').expect("two words");
    assert_eq!(jobs, "1");
    let allowed = lines.next().expect("status line").split_whitespace().last().expect("list");
    assert_eq!(allowed, cpus, "the command runs on exactly the reserved CPUs");

    // Hold one CPU's worth in the background; a second -n reservation of
    // everything conflicts and names the holder.
    let mut holder = reserve(&["--cpus", "1", "--", "sleep", "30"]).spawn().expect("holder");
    let online: usize = {
        let view: Value = serde_json::from_slice(
            &Command::new(LOCKYARD).args(["topo", "--json"]).output().expect("topo").stdout,
        )
        .expect("json");
        view["topology"]["cpus"].as_array().expect("cpus").len()
    };
    let all = online.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = reserve(&["-n", "--cpus", &all, "--", "true"]).output().expect("run");
        if out.status.code() == Some(1) || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(&format!("pid={}", holder.id())), "{err}");

    // A waiter gets everything once the holder is gone.
    let waiter = reserve(&["--cpus", &all, "--", "true"]).spawn().expect("waiter");
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SIGTERM is forwarded to the command; its death ends the reservation.
    let pid = rustix::process::Pid::from_raw(i32::try_from(holder.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    assert_eq!(holder.wait().expect("reap").code(), Some(128 + 15), "killed by the forwarded SIGTERM");
    let status = waiter.wait_with_output().expect("waiter").status;
    assert!(status.success());

    let out = reserve(&["--cpus", "100000", "--", "true"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "can never fit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowed to this process"));

    // A share of the allowed CPUs: rounded up, at least one.
    let jobs = |share: &str| {
        let out = reserve(&["--cpus", share, "--", "sh", "-c", "echo $LOCKYARD_JOBS"]).output().expect("run");
        assert!(out.status.success(), "{share}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().expect("jobs")
    };
    let every = jobs("100%");
    assert_eq!(jobs("50%"), every.div_ceil(2));
    assert_eq!(jobs("1%"), 1);
    for bad in ["0%", "101%", "half"] {
        let out = reserve(&["--cpus", bad, "--", "true"]).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_share_one_sticky_lock_directory() {
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !rustix::process::geteuid().is_root() || !setpriv {
        lockyard_test_support::skip("needs root and setpriv to act as two users");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lockyard-reserve-users-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", LOCKYARD];
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Root makes the shared directory (1777, whatever the umask) ...
    let made = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--lock-dir"])
        .arg(&dir)
        .args(["--", "true"])
        .output()
        .expect("reserve as root");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let meta = std::fs::metadata(&dir).expect("dir");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o1777, "sticky and world-writable whatever the umask");
    assert_eq!(meta.uid(), 0);
    // ... nobody reserves every CPU in it, using root's lock file and
    // making the others ...
    let online = std::fs::read_dir("/sys/devices/system/cpu")
        .expect("sysfs")
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().strip_prefix("cpu").is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    let first = Command::new("setpriv")
        .args(as_nobody)
        .args(["reserve", "--cpus", &online.to_string(), "--lock-dir"])
        .arg(&dir)
        .args(["--", "true"])
        .output()
        .expect("reserve as nobody");
    assert!(first.status.success(), "nobody could not reserve: {}", String::from_utf8_lossy(&first.stderr));
    for lock in std::fs::read_dir(&dir).expect("dir").flatten() {
        let meta = lock.metadata().expect("lock");
        if meta.uid() == 65534 {
            assert_eq!(meta.permissions().mode() & 0o777, 0o666, "{:?}", lock.path());
        }
    }
    // ... and root then uses nobody's lock files rather than refusing them.
    let second = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", &online.to_string(), "--lock-dir"])
        .arg(&dir)
        .args(["--", "true"])
        .output()
        .expect("reserve as root");
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lock_directory_another_user_made_is_refused() {
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !rustix::process::geteuid().is_root() || !setpriv {
        lockyard_test_support::skip("needs root and setpriv to act as two users");
        return;
    }
    let base = std::env::temp_dir().join(format!("lockyard-reserve-squat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base).expect("base");
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).expect("chmod");
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    // Squatted: nobody made the directory, and could unlink lock files in
    // it under a root reservation.
    let squatted = base.join("squatted");
    let made = Command::new("setpriv").args(as_nobody).args(["mkdir", "-m", "1777"]).arg(&squatted).status();
    assert!(made.expect("mkdir").success());
    let out = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--lock-dir"])
        .arg(&squatted)
        .args(["--", "true"])
        .output()
        .expect("reserve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("owned by another user") && stderr.contains("uid 65534"), "{stderr}");
    assert_eq!(std::fs::read_dir(&squatted).expect("dir").count(), 0, "no lock file made in it");
    // A foreign symlink where the directory should be: refused, and
    // nothing created at its target.
    let target = base.join("target");
    let link = base.join("link");
    let planted =
        Command::new("setpriv").args(as_nobody).arg("ln").arg("-s").arg(&target).arg(&link).status();
    assert!(planted.expect("ln").success());
    let out = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--lock-dir"])
        .arg(&link)
        .args(["--", "true"])
        .output()
        .expect("reserve");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!target.exists(), "the symlink's target was created");
    // World-writable without the sticky bit: anyone could swap lock files.
    let open = base.join("open");
    std::fs::create_dir(&open).expect("open");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let out = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--lock-dir"])
        .arg(&open)
        .args(["--", "true"])
        .output()
        .expect("reserve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writable by every user"), "{stderr}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn reserve_reports_what_it_chose_as_json_and_in_words() {
    let dir = std::env::temp_dir().join(format!("lockyard-topo-report-{}", std::process::id()));
    let out = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--json", "--verbose", "--lock-dir"])
        .arg(&dir)
        .args(["--", "sh", "-c", "echo \"$LOCKYARD_CPUS\""])
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    let chosen: Value = serde_json::from_str(lines.next().expect("the report")).expect("json");
    let cpus = lines.next().expect("the command's output");
    assert_eq!(chosen["schema"], 1);
    assert_eq!(chosen["cpus"], cpus, "{chosen}");
    assert_eq!(chosen["jobs"], 1);
    assert_eq!(chosen["mode"], "exclusive-cpu");
    let nodes = chosen["nodes"].as_array().expect("nodes");
    assert_eq!(chosen["numa_spill"], nodes.len() > 1, "{chosen}");
    assert_eq!(chosen["cgroup"], Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("lockyard: reserved cpus {cpus} (1 jobs, exclusive-cpu)")), "{stderr}");
}

#[test]
fn membind_and_interleave_set_the_commands_memory_policy() {
    let dir = std::env::temp_dir().join(format!("lockyard-topo-membind-{}", std::process::id()));
    for (flag, word) in [("--membind", "bind"), ("--interleave", "interleave")] {
        let out = Command::new(LOCKYARD)
            .args(["reserve", "--cpus", "1", flag, "--json", "--lock-dir"])
            .arg(&dir)
            .args(["--", "head", "-1", "/proc/self/numa_maps"])
            .output()
            .expect("run");
        if out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("nodes are unknown")
        {
            lockyard_test_support::skip("sysfs lists no NUMA node for this host's CPUs");
            return;
        }
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let mut lines = stdout.lines();
        let chosen: Value = serde_json::from_str(lines.next().expect("report")).expect("json");
        let node = chosen["nodes"][0].as_u64().expect("a node");
        let maps = lines.next().expect("numa_maps");
        // One CPU is on one node: the policy names exactly it.
        assert!(maps.split_whitespace().any(|w| w == format!("{word}:{node}")), "{flag}: {maps}");
    }
    let plain = Command::new(LOCKYARD)
        .args(["reserve", "--cpus", "1", "--lock-dir"])
        .arg(&dir)
        .args(["--", "head", "-1", "/proc/self/numa_maps"])
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    let maps = String::from_utf8_lossy(&plain.stdout);
    assert!(maps.contains(" default "), "without a flag the policy is left alone: {maps}");
}

#[test]
fn watch_streams_json_frames_and_stops_on_sigterm_or_a_closed_pipe() {
    use std::io::{BufRead, BufReader, Read};
    let dir = std::env::temp_dir().join(format!("lockyard-topo-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("lock dir");
    // A held CPU lock shows in every frame, with pid, command and since.
    let lock = dir.join("cpu-0.lock");
    let mut holder = Command::new("flock").arg(&lock).args(["sleep", "30"]).spawn().expect("flock(1)");
    let mut watcher = Command::new(LOCKYARD)
        .args(["topo", "--watch", "100ms", "--json", "--lock-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    let mut frames = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut seen = None;
    for _ in 0..100 {
        let frame: Value =
            serde_json::from_str(&frames.next().expect("a frame").expect("read")).expect("json");
        assert_eq!(frame["schema"], 1);
        let cpu0 =
            frame["locks"]["cpus"].as_array().expect("cpus").iter().find(|c| c["name"] == "cpu-0").cloned();
        let cpu0 = cpu0.expect("cpu-0 is listed");
        if let Some(held) = cpu0["holders"].as_array().and_then(|h| h.first()).cloned() {
            seen = Some(held);
            break;
        }
    }
    let started = std::time::Instant::now();
    let pid = rustix::process::Pid::from_raw(i32::try_from(watcher.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = watcher.wait().expect("reap");
    let took = started.elapsed();
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    let held = seen.expect("the held lock appeared in a frame");
    assert_eq!(held["pid"].as_u64(), Some(u64::from(holder.id())), "{held}");
    assert!(held["command"].as_str().is_some_and(|c| c.contains("flock")), "{held}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let since = held["since"].as_u64().expect("since");
    assert!(since <= now && now - since < 120, "since {since}, now {now}");
    assert_eq!(status.code(), Some(0), "SIGTERM ends the watch cleanly");
    // Not a timing test (the machine is shared): a watch that ignored the
    // signal until its next frame, or forever, would show here.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    println!("watch stopped {took:?} after SIGTERM");

    // A reader that goes away ends it quietly.
    let mut watcher = Command::new(LOCKYARD)
        .args(["locks", "--watch", "50ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    let mut first = String::new();
    BufReader::new(watcher.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    let _: Value = serde_json::from_str(&first).expect("json");
    let status = watcher.wait().expect("exits once its reader is gone");
    let mut stderr = String::new();
    watcher.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    let out = Command::new(LOCKYARD).args(["topo", "--watch", "0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than zero"));
    let _ = std::fs::remove_dir_all(&dir);
}
