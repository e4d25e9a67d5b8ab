//! lockyard-cache across real processes: writers SIGKILLed at every step
//! of a store, single-flight `ensure` among 8 processes, a builder killed
//! mid-build, `sweep` against a live writer in another pid namespace, and
//! `clean` around a reader in another process.

#![allow(clippy::print_stderr)]

mod common;

use lockyard_cache::Wait;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{Proc, Scratch, missing_pid_namespaces};
use lockyard_cache::{Cache, CacheOptions, Clean};

const HELPER: &str = env!("CARGO_BIN_EXE_lockyard-test-cache");

fn helper(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(HELPER);
    command.arg(root).args(args).process_group(0);
    command
}

/// Start a helper with piped stdin/stdout.
fn start(mut command: Command) -> (Proc, BufReader<ChildStdout>) {
    let mut child: Child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn helper");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stdin: Option<ChildStdin> = child.stdin.take();
    (Proc { child, stdin }, stdout)
}

fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read helper");
    line.trim().to_owned()
}

fn cache(root: &Path) -> Cache {
    Cache::open(root, CacheOptions::new().wait(Wait::timeout(Duration::from_secs(20)))).expect("open cache")
}

fn data(cache: &Cache, key: &str) -> Option<String> {
    let guard = cache.lookup(key).expect("lookup")?;
    Some(std::fs::read_to_string(guard.path().join("data")).expect("read data"))
}

fn staging_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root.join(".staging")).expect("list staging").next().is_none()
}

#[test]
fn a_writer_killed_at_any_step_leaves_the_old_or_the_new_entry() {
    for two_renames in [false, true] {
        for step in ["staging", "mid-write", "built", "synced", "displaced", "published"] {
            if step == "displaced" && !two_renames {
                continue;
            }
            let dir = Scratch::new(&format!("cache-crash-{step}-{two_renames}"));
            let root = dir.path("cache");
            let first = helper(&root, &["store", "k", "old content"]).output().expect("store");
            assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

            let mut args = vec!["store", "k", "new content", "--die-at", step];
            if two_renames {
                args.push("--two-renames");
            }
            let status = helper(&root, &args).status().expect("store and die");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{step}: the writer was to be killed"
            );

            let cache = cache(&root);
            let seen = data(&cache, "k");
            let expected: &[Option<&str>] = match step {
                "published" => &[Some("new content")],
                // Between the fallback's two renames the key is missing.
                "displaced" => &[None],
                _ => &[Some("old content")],
            };
            assert!(expected.contains(&seen.as_deref()), "{step} (two renames: {two_renames}): saw {seen:?}");
            if seen.is_some() {
                cache.verify("k").expect("the surviving entry verifies");
            }
            let swept = cache.sweep().expect("sweep");
            assert!(!swept.removed.is_empty() && swept.kept.is_empty(), "{step}: {swept:?}");
            assert!(staging_is_empty(&root), "{step}: debris left after sweep");
            let ensured = cache.ensure("k", |d| {
                std::fs::write(d.join("data"), "rebuilt")?;
                Ok(serde_json::Value::Null)
            });
            assert!(ensured.is_ok(), "{step}: {ensured:?}");
        }
    }
}

#[test]
fn eight_processes_ensure_one_key_and_only_one_builds() {
    let dir = Scratch::new("cache-single-flight");
    let root = dir.path("cache");
    let count = dir.path("builds");
    let count = count.to_str().expect("utf-8");
    let children: Vec<_> = (0..8)
        .map(|_| {
            start({
                let mut c = helper(&root, &["ensure", "shared", count]);
                c.stdin(Stdio::null());
                c
            })
        })
        .collect();
    let mut digests = Vec::new();
    for (proc, mut out) in children {
        digests.push(read_line(&mut out));
        assert!(proc.finish().success());
    }
    let builds = std::fs::read_to_string(dir.path("builds")).expect("build log");
    assert_eq!(builds.lines().count(), 1, "{builds}");
    assert!(digests.iter().all(|d| d.starts_with("digest ") && *d == digests[0]), "{digests:?}");
}

#[test]
fn a_waiter_builds_when_the_builder_is_killed() {
    let dir = Scratch::new("cache-takeover");
    let root = dir.path("cache");
    let count = dir.path("builds");
    let count = count.to_str().expect("utf-8");
    let (mut builder, mut builder_out) = start(helper(&root, &["ensure", "k", count, "--block"]));
    assert_eq!(read_line(&mut builder_out), "building");
    let (waiter, mut waiter_out) = start(helper(&root, &["ensure", "k", count]));
    // Let the waiter reach its wait on the build lock, then kill the builder.
    common::eventually("the waiter to wait on the build lock", || {
        std::fs::read_dir(format!("/proc/{}/fd", waiter.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.ends_with(".locks/k.build")))
    });
    builder.kill();
    assert!(read_line(&mut waiter_out).starts_with("digest "));
    assert!(waiter.finish().success());
    let builds = std::fs::read_to_string(dir.path("builds")).expect("build log");
    assert_eq!(builds.lines().count(), 2, "killed build and the waiter's: {builds}");
    let cache = cache(&root);
    assert_eq!(data(&cache, "k").as_deref(), Some(&*format!("built by {}", waiter_pid_from(&builds))));
    cache.sweep().expect("sweep");
    assert!(staging_is_empty(&root));
}

/// The pid of the second (successful) build in the build log.
fn waiter_pid_from(builds: &str) -> String {
    builds.lines().nth(1).and_then(|l| l.rsplit(' ').next()).expect("second build").to_owned()
}

#[test]
fn sweep_keeps_a_live_writer_whose_pid_matches_dead_debris() {
    if let Some(why) = missing_pid_namespaces() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = Scratch::new("cache-pidns-sweep");
    let root = dir.path("cache");
    let count = dir.path("builds");
    let mut command = Command::new("unshare");
    command
        .args(["-p", "-f", "--mount-proc", HELPER])
        .arg(&root)
        .args(["ensure", "k"])
        .arg(&count)
        .arg("--block")
        .process_group(0);
    let (writer, mut out) = start(command);
    assert_eq!(read_line(&mut out), "building");
    // The live writer is pid 1 in its namespace, and says so in its name.
    let staging = root.join(".staging");
    let live: Vec<String> = std::fs::read_dir(&staging)
        .expect("staging")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].starts_with("k.1."), "{live:?}");
    // A dead writer's debris with the same pid number.
    let dead = "k.1.00000000deadbeef";
    std::fs::create_dir(staging.join(dead)).expect("debris");
    std::fs::write(staging.join(dead).join("half"), b"half written").expect("debris file");
    std::fs::write(staging.join(format!("{dead}.lock")), b"").expect("debris lock");
    // A stray file with no lock beside it is debris too.
    std::fs::write(staging.join("stray"), b"?").expect("stray");

    let report = cache(&root).sweep().expect("sweep");
    assert_eq!(report.removed, [dead, "stray"], "{report:?}");
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert_eq!(report.kept.0[0].name, live[0]);
    assert!(staging.join(&live[0]).exists(), "the live writer's staging was swept");

    assert!(writer.finish().success());
    assert!(read_line(&mut out).starts_with("digest "));
    assert!(cache(&root).lookup("k").expect("lookup").is_some());
}

#[test]
fn clean_skips_an_entry_a_reader_holds_and_names_the_reader() {
    let dir = Scratch::new("cache-clean-busy");
    let root = dir.path("cache");
    let cache = cache(&root);
    for key in ["held", "free"] {
        let stored = cache.store(key, |d| {
            std::fs::write(d.join("data"), key)?;
            Ok(serde_json::Value::Null)
        });
        drop(stored.expect("store"));
    }
    let (reader, mut out) = start(helper(&root, &["hold", "held"]));
    assert_eq!(read_line(&mut out), "ready");
    let report = cache.clean(Clean::All).expect("clean");
    assert_eq!(report.removed, ["free"]);
    assert_eq!(report.busy.len(), 1);
    let (key, holders) = (&report.busy.0[0].name, &report.busy.0[0].holders);
    assert_eq!(key, "held");
    assert!(holders.holding().any(|h| h.pid == Some(reader.pid())), "{holders}");
    assert_eq!(data(&cache, "held").as_deref(), Some("held"));
    assert!(reader.finish().success());
    assert!(read_line(&mut out).starts_with("digest "));
    assert_eq!(cache.clean(Clean::All).expect("clean again").removed, ["held"]);
    assert!(cache.list().expect("list").is_empty());
}
