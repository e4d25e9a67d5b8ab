//! `lockyard cache` as a shell or CI job uses it: real processes, real
//! exit codes, the JSON documented in docs/cli.md.

#![allow(clippy::print_stdout)]

use lockyard_test_support::Scratch;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

/// `lockyard cache --dir ROOT ARGS...`, stdin closed (not a terminal).
fn cache(root: &Path, args: &[&str]) -> Output {
    Command::new(LOCKYARD)
        .arg("cache")
        .arg("--dir")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lockyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

#[test]
fn put_list_show_verify_and_a_tampered_entry() {
    let dir = Scratch::new("put");
    let root = dir.path("root");
    let src = dir.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("src");
    std::fs::write(src.join("data"), "hello").expect("data");
    std::os::unix::fs::symlink("../data", src.join("sub/link")).expect("link");

    let put = cache(&root, &["put", "img", src.to_str().expect("utf-8")]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert_eq!(text(&put.stdout).trim(), root.join("img").display().to_string());
    assert_eq!(std::fs::read_link(root.join("img/sub/link")).expect("copied link"), Path::new("../data"));

    let listed = json(&cache(&root, &["list", "--json"]));
    assert_eq!(listed["schema"], 1);
    assert_eq!(listed["entries"][0]["state"], "valid");
    assert_eq!(listed["entries"][0]["key"], "img");
    assert_eq!(listed["entries"][0]["size"], 5);

    let shown = json(&cache(&root, &["show", "img", "--json"]));
    assert_eq!(shown["meta"]["files"], 2);
    assert_eq!(shown["meta"]["user"]["source"], src.display().to_string());
    assert_eq!(shown["path"], root.join("img").display().to_string());
    let missing = cache(&root, &["show", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing.stderr));

    let intact = cache(&root, &["verify", "--json"]);
    assert_eq!(intact.status.code(), Some(0));
    assert_eq!(json(&intact)["entries"][0]["state"], "intact");
    std::fs::write(root.join("img/data"), "HELLO").expect("tamper");
    let tampered = cache(&root, &["verify", "img", "--json"]);
    assert_eq!(tampered.status.code(), Some(1));
    assert_eq!(json(&tampered)["entries"][0]["reason"], "digest_mismatch");
    assert_eq!(cache(&root, &["verify", "nope"]).status.code(), Some(1));

    // Bad input: exit 2 with the rule broken.
    let bad = cache(&root, &["put", "../escape", src.to_str().expect("utf-8")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("invalid cache key"), "{}", text(&bad.stderr));
    let not_dir = cache(&root, &["put", "k", src.join("data").to_str().expect("utf-8")]);
    assert_eq!(not_dir.status.code(), Some(2));
    assert!(text(&not_dir.stderr).contains("not a directory"));
}

#[test]
fn ensure_builds_once_across_concurrent_callers_and_passes_statuses_through() {
    let dir = Scratch::new("ensure");
    let root = dir.path("root");
    let count = dir.path("builds");
    // Slow enough that the callers overlap; counted with O_APPEND.
    let build = format!(
        "echo noise; echo built >> {}; sleep 0.5; echo payload > \"$LOCKYARD_STAGING/f\"",
        count.display()
    );
    let callers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(LOCKYARD)
                .arg("cache")
                .arg("--dir")
                .arg(&root)
                .args(["ensure", "k", "--build", &build])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for caller in callers {
        let out = caller.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", text(&out.stderr));
        // The build's stdout went to stderr: stdout is just the path.
        assert_eq!(text(&out.stdout), format!("{}\n", root.join("k").display()));
    }
    assert_eq!(std::fs::read_to_string(&count).expect("count"), "built\n", "exactly one build");

    // COMMAND runs with the entry, and its status comes back.
    let with = cache(
        &root,
        &["ensure", "k", "--build", "exit 1", "--", "sh", "-c", "cat \"$LOCKYARD_ENTRY/f\"; exit 7"],
    );
    assert_eq!(with.status.code(), Some(7), "{}", text(&with.stderr));
    assert_eq!(text(&with.stdout), "payload\n");

    // A failing build publishes nothing, and its status comes back.
    let failed = cache(&root, &["ensure", "other", "--build", "touch \"$LOCKYARD_STAGING/half\"; exit 3"]);
    assert_eq!(failed.status.code(), Some(3));
    assert!(text(&failed.stderr).contains("nothing was published"), "{}", text(&failed.stderr));
    assert!(!root.join("other").exists());
    assert_eq!(std::fs::read_dir(root.join(".staging")).expect("staging").count(), 0, "no debris");
}

#[test]
fn clean_lists_first_and_needs_yes_without_a_terminal() {
    let dir = Scratch::new("clean");
    let root = dir.path("root");
    for key in ["a", "b", "c"] {
        let out = cache(&root, &["ensure", key, "--build", "echo data > \"$LOCKYARD_STAGING/f\""]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let dry = cache(&root, &["clean", "--keep", "1", "--dry-run"]);
    assert!(dry.status.success());
    assert!(text(&dry.stdout).contains("would remove 2 entries"), "{}", text(&dry.stdout));

    let refused = cache(&root, &["clean", "--all"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("--yes"), "{}", text(&refused.stderr));
    assert_eq!(json(&cache(&root, &["list", "--json"]))["entries"].as_array().map(Vec::len), Some(3));

    // An entry in use is skipped and its holder named.
    let mut reader = Command::new(LOCKYARD)
        .arg("cache")
        .arg("--dir")
        .arg(&root)
        .args(["ensure", "a", "--build", "false", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("reader");
    let lock = root.join(".locks/a.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Command::new(LOCKYARD).arg("who").arg(&lock).output().expect("who").status.code() != Some(0) {
        assert!(std::time::Instant::now() < deadline, "the reader never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cleaned = cache(&root, &["clean", "--all", "--yes"]);
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(cleaned.status.success(), "{}", text(&cleaned.stderr));
    let out = text(&cleaned.stdout);
    assert!(out.contains("removed 2 entries"), "{out}");
    assert!(out.contains(&format!("kept a: in use, held by pid={}", reader.id())), "{out}");

    for bad in [&["clean", "--older-than", "soon"][..], &["clean", "--max-size", "lots"], &["clean"]] {
        assert_eq!(cache(&root, bad).status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn no_usable_home_means_no_default_root() {
    let out = Command::new(LOCKYARD)
        .args(["cache", "list"])
        .env_remove("LOCKYARD_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", "/")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--dir"), "{}", text(&out.stderr));
}

/// `COMMAND` run with its stdin, stdout and stderr on a pseudo-terminal,
/// through util-linux `script`; everything it drew, or `None` without
/// `script`.
fn on_a_terminal(command: &str) -> Option<String> {
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    assert!(output.status.success(), "{command}: {}", text(&output.stderr));
    Some(text(&output.stdout))
}

#[test]
fn progress_is_drawn_on_a_terminal_and_nowhere_else() {
    let dir = Scratch::new("progress");
    let root = dir.path("root");
    let src = dir.path("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("blob"), vec![1u8; 8 << 20]).expect("blob");
    assert!(cache(&root, &["put", "img", src.to_str().expect("utf-8")]).status.success());

    let piped = cache(&root, &["verify"]);
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert_eq!(text(&piped.stdout), "img: intact (8.0 MiB)\n");
    assert!(piped.stderr.is_empty(), "no bar into a pipe: {}", text(&piped.stderr));

    let base = format!("{LOCKYARD} cache --dir {}", root.display());
    let Some(drawn) = on_a_terminal(&format!("{base} verify")) else {
        lockyard_test_support::skip("the terminal half needs util-linux script(1)");
        return;
    };
    assert!(drawn.contains("verifying img ["), "{drawn}");
    assert!(drawn.contains("img: intact"), "{drawn}");
    let drawn = on_a_terminal(&format!("{base} clean --all --yes")).expect("script");
    assert!(drawn.contains("removing 1 entry"), "{drawn}");
    assert!(drawn.contains("removed 1 entry"), "{drawn}");
}
