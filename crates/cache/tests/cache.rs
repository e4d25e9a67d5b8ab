//! lockyard-cache in one process: layout, keys, publish and replace,
//! metadata and verification, corrupt entries, planted symlinks, clean
//! policies. Multi-process and crash tests are in `tests/tests/cache_processes.rs`.

#![allow(clippy::print_stderr)]

use lockyard_cache::Wait;
use lockyard_test_support::{Scratch, tree};
use std::path::Path;
use std::time::Duration;

use lockyard_cache::{
    BuildResult, Cache, CacheError, CacheOptions, Clean, CorruptReason, ForeignReason, KeyError, Listed,
    NotACache,
};

fn open(dir: &Scratch) -> Cache {
    Cache::open(dir.0.join("c"), CacheOptions::new().wait(Wait::timeout(Duration::from_millis(300))))
        .expect("open")
}

fn writes(text: &'static str) -> impl FnOnce(&Path) -> BuildResult {
    move |dir| {
        std::fs::write(dir.join("data"), text)?;
        std::fs::create_dir(dir.join("nested"))?;
        std::os::unix::fs::symlink("../data", dir.join("nested/link"))?;
        Ok(serde_json::json!({ "text": text }))
    }
}

fn staging_is_empty(cache: &Cache) -> bool {
    std::fs::read_dir(cache.root().join(".staging")).expect("staging").next().is_none()
}

#[test]
fn store_publishes_an_entry_with_its_metadata_and_a_cachedir_tag() {
    let dir = Scratch::new("store");
    let cache = open(&dir);
    assert!(cache.lookup("k").expect("lookup").is_none());
    let stored = cache.store("k", writes("hello")).expect("store");
    assert_eq!(stored.meta().size, 5);
    assert_eq!(stored.meta().files, 2, "data and the symlink");
    assert_eq!(stored.meta().user["text"], "hello");
    assert_eq!(stored.path(), cache.entry_path("k"));
    drop(stored);
    let found = cache.lookup("k").expect("lookup").expect("present");
    assert_eq!(std::fs::read_to_string(found.path().join("data")).expect("data"), "hello");
    assert!(found.path().join("entry.json").exists());
    drop(found);
    let tag = std::fs::read_to_string(cache.root().join("CACHEDIR.TAG")).expect("tag");
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
    assert!(cache.lock_path("k").exists());
    assert!(staging_is_empty(&cache));
    assert_eq!(cache.verify("k").expect("verify").expect("present").key, "k");
}

#[test]
fn replacing_swaps_the_whole_entry_and_waits_for_readers() {
    let dir = Scratch::new("replace");
    let cache = open(&dir);
    drop(cache.store("k", writes("one")).expect("store"));
    let reader = cache.lookup("k").expect("lookup").expect("present");
    // A reader's guard keeps the entry: the replacement times out, and
    // leaves nothing behind.
    let err = cache.store("k", writes("two")).expect_err("blocked by the reader");
    assert!(matches!(err, CacheError::Timeout { .. }) && err.is_busy(), "{err}");
    assert_eq!(std::fs::read_to_string(reader.path().join("data")).expect("data"), "one");
    assert!(staging_is_empty(&cache));
    drop(reader);
    let replaced = cache.store("k", writes("two")).expect("replace");
    assert_eq!(std::fs::read_to_string(replaced.path().join("data")).expect("data"), "two");
    drop(replaced);
    cache.verify("k").expect("verifies");
    assert!(staging_is_empty(&cache), "the displaced entry was deleted");
}

#[test]
fn the_two_rename_fallback_replaces_too() {
    let dir = Scratch::new("fallback");
    let cache = Cache::open(dir.0.join("c"), CacheOptions::new().force_two_renames()).expect("open");
    drop(cache.store("k", writes("one")).expect("store"));
    let replaced = cache.store("k", writes("two")).expect("replace");
    assert_eq!(std::fs::read_to_string(replaced.path().join("data")).expect("data"), "two");
    drop(replaced);
    assert!(staging_is_empty(&cache));
}

#[test]
fn bad_keys_are_refused_with_the_rule_they_break() {
    let dir = Scratch::new("keys");
    let cache = open(&dir);
    for (key, rule) in [
        ("", KeyError::Empty),
        ("a/b", KeyError::Slash),
        ("..", KeyError::DotName),
        (".locks", KeyError::LeadingDot),
        ("a\nb", KeyError::Control),
    ] {
        match cache.lookup(key) {
            Err(CacheError::InvalidKey { reason, .. }) => assert_eq!(reason, rule, "{key:?}"),
            other => panic!("{key:?}: {other:?}"),
        }
    }
    let err = cache.store(&"x".repeat(201), writes("x")).expect_err("too long");
    assert!(err.to_string().contains("longer than 200 bytes"), "{err}");
}

#[test]
fn a_failed_build_publishes_nothing_and_leaves_no_debris() {
    let dir = Scratch::new("failed-build");
    let cache = open(&dir);
    let err = cache.store("k", |d| {
        std::fs::write(d.join("partial"), "x")?;
        Err::<(), _>("compiler crashed".into())
    });
    assert!(matches!(err, Err(CacheError::Build { .. })), "{err:?}");
    assert!(cache.lookup("k").expect("lookup").is_none());
    assert!(staging_is_empty(&cache));
    let err = cache.store("k", |d| {
        std::fs::write(d.join("entry.json"), "{}")?;
        Ok(serde_json::Value::Null)
    });
    assert!(err.is_err_and(|e| e.to_string().contains("reserves")));
    assert!(staging_is_empty(&cache));
}

#[test]
fn tampering_and_corruption_are_reported_by_kind() {
    let dir = Scratch::new("corrupt");
    let cache = open(&dir);
    drop(cache.store("tampered", writes("original")).expect("store"));
    std::fs::write(cache.entry_path("tampered").join("data"), "modified").expect("tamper");
    match cache.verify("tampered") {
        Err(CacheError::Corrupt { reason: CorruptReason::DigestMismatch, .. }) => {}
        other => panic!("{other:?}"),
    }
    std::fs::create_dir(cache.entry_path("no-meta")).expect("mkdir");
    std::fs::create_dir(cache.entry_path("garbled")).expect("mkdir");
    std::fs::write(cache.entry_path("garbled").join("entry.json"), "not json").expect("write");
    std::fs::create_dir(cache.entry_path("future")).expect("mkdir");
    std::fs::write(cache.entry_path("future").join("entry.json"), r#"{"schema": 99}"#).expect("write");
    let outside = dir.0.join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, cache.entry_path("planted")).expect("symlink");

    let listed = cache.list().expect("list");
    let reason = |key: &str| {
        listed.iter().find(|l| l.key() == key).map(|l| match l {
            Listed::Corrupt { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    };
    let foreign = |key: &str| {
        listed.iter().find_map(|l| match l {
            Listed::Foreign { key: k, reason } if k == key => Some(*reason),
            _ => None,
        })
    };
    // No publish makes a directory without entry.json, nor a symlink.
    assert_eq!(foreign("no-meta"), Some(ForeignReason::NoMetadata));
    assert_eq!(foreign("planted"), Some(ForeignReason::NotADirectory));
    assert_eq!(reason("garbled"), Some(Some(CorruptReason::Malformed)));
    assert_eq!(reason("future"), Some(Some(CorruptReason::SchemaFromTheFuture)));
    assert_eq!(reason("tampered"), Some(None), "list does not rehash");
    assert!(matches!(listed[0], Listed::Valid { .. }), "valid entries first: {listed:?}");
    assert!(matches!(
        cache.lookup("planted"),
        Err(CacheError::Corrupt { reason: CorruptReason::NotADirectory, .. })
    ));

    // Clean removes the corrupt ones, leaves the foreign ones, and never
    // follows the planted link.
    std::fs::write(outside.join("precious"), "keep").expect("write");
    let plan = cache.plan_clean(Clean::KeepNewest(10)).expect("plan");
    assert_eq!(plan.foreign.len(), 2, "{plan:?}");
    let report = cache.clean(Clean::KeepNewest(10)).expect("clean");
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, ["future", "garbled"], "{report:?}");
    assert!(cache.entry_path("no-meta").is_dir(), "a directory without entry.json is not ours to remove");
    assert!(cache.entry_path("planted").is_symlink());
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("outside intact"), "keep");
    // Named explicitly, foreign items go (the link, not its target).
    assert!(cache.remove("no-meta").expect("remove"));
    assert!(cache.remove("planted").expect("remove"));
    assert!(!cache.remove("planted").expect("gone already"));
    assert!(!cache.entry_path("no-meta").exists());
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("outside intact"), "keep");
    for own in [".locks", ".staging", ".lockyard-cache", "CACHEDIR.TAG", "..", "a/b"] {
        assert!(matches!(cache.remove(own), Err(CacheError::InvalidKey { .. })), "{own}");
    }
}

#[test]
fn planted_internal_directories_are_refused() {
    let dir = Scratch::new("planted");
    let outside = dir.0.join("outside");
    std::fs::create_dir(&outside).expect("outside");
    for internal in [".locks", ".staging"] {
        let root = dir.0.join(format!("c{internal}"));
        std::fs::create_dir(&root).expect("root");
        std::fs::write(root.join(".lockyard-cache"), "lockyard-cache 1\n").expect("marker");
        std::os::unix::fs::symlink(&outside, root.join(internal)).expect("plant");
        let err = Cache::open(&root, CacheOptions::new()).expect_err("refused");
        assert!(matches!(err, CacheError::Refused { .. }), "{err}");
        assert!(err.to_string().contains(internal), "{err}");
    }
    assert!(std::fs::read_dir(&outside).expect("outside").next().is_none(), "nothing written outside");
}

#[test]
fn planted_symlinks_are_never_followed() {
    let dir = Scratch::new("symlinks");
    let outside = dir.0.join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("secret"), "keep me").expect("secret");
    let cache = open(&dir);
    drop(cache.store("good", writes("fine")).expect("store"));

    // As an entry: reported foreign, never read through.
    std::os::unix::fs::symlink(&outside, cache.root().join("evil")).expect("plant entry");
    let err = cache.lookup("evil").expect_err("a symlinked entry is corrupt");
    assert!(matches!(err, CacheError::Corrupt { reason: CorruptReason::NotADirectory, .. }), "{err}");
    assert!(
        cache
            .list()
            .expect("list")
            .contains(&Listed::Foreign { key: "evil".to_owned(), reason: ForeignReason::NotADirectory })
    );
    // As `entry.json` inside an entry: not followed to the outside file.
    let inner = cache.entry_path("good").join("entry.json");
    std::fs::rename(&inner, dir.0.join("saved.json")).expect("move metadata");
    std::os::unix::fs::symlink(outside.join("secret"), &inner).expect("plant metadata");
    let err = cache.lookup("good").expect_err("a symlinked entry.json is not read");
    assert!(matches!(err, CacheError::Corrupt { reason: CorruptReason::Unreadable, .. }), "{err}");
    // As staging debris with no lock: the link goes, its target stays.
    std::os::unix::fs::symlink(&outside, cache.root().join(".staging/x.1.0")).expect("plant debris");
    assert_eq!(cache.sweep().expect("sweep").removed, ["x.1.0"]);

    let report = cache.clean(Clean::All).expect("clean");
    assert_eq!(report.removed, ["good"], "{report:?}");
    assert!(cache.root().join("evil").is_symlink(), "a planted link is reported, not removed");
    assert_eq!(std::fs::read_to_string(outside.join("secret")).expect("outside intact"), "keep me");
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1, "nothing written outside");
}

#[test]
fn a_root_reached_through_a_foreign_symlink_in_a_sticky_directory_is_refused() {
    if !rustix::process::geteuid().is_root() {
        lockyard_test_support::skip("planting another user's symlink needs root");
        return;
    }
    let dir = Scratch::new("foreign");
    let sticky = dir.0.join("tmp");
    std::fs::create_dir(&sticky).expect("sticky");
    std::fs::set_permissions(&sticky, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).expect("chmod");
    let target = dir.0.join("target");
    std::fs::create_dir(&target).expect("target");
    let link = sticky.join("cache");
    std::os::unix::fs::symlink(&target, &link).expect("plant");
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    let err = Cache::open(&link, CacheOptions::new()).expect_err("refused");
    assert!(matches!(err, CacheError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("uid 65534"), "{err}");
    assert!(std::fs::read_dir(&target).expect("target").next().is_none(), "nothing made in the target");
}

#[test]
fn clean_policies_pick_by_age_use_and_size() {
    let dir = Scratch::new("policies");
    let cache = open(&dir);
    for key in ["a", "b", "c", "d"] {
        drop(cache.store(key, writes("0123456789")).expect("store"));
    }
    // Use a and b again, so c and d are the least recently used.
    std::thread::sleep(Duration::from_millis(20));
    drop(cache.lookup("a").expect("lookup"));
    drop(cache.lookup("b").expect("lookup"));
    let report = cache.clean(Clean::MaxBytes(25)).expect("clean by size");
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, ["c", "d"], "{report:?}");
    assert_eq!(report.freed, 20);

    let report = cache.clean(Clean::KeepNewest(1)).expect("keep newest");
    assert_eq!(report.removed, ["a"], "b is newer: {report:?}");

    assert!(cache.clean(Clean::UnusedFor(Duration::from_secs(3600))).expect("unused").removed.is_empty());
    std::thread::sleep(Duration::from_millis(20));
    let report = cache.clean(Clean::UnusedFor(Duration::from_millis(10))).expect("unused");
    assert_eq!(report.removed, ["b"]);
    assert!(cache.list().expect("list").is_empty());
    assert!(cache.lock_path("a").exists(), "lock files are never deleted");
}

#[test]
fn a_planned_clean_removes_only_what_the_plan_saw_unchanged() {
    let dir = Scratch::new("planned");
    let cache = open(&dir);
    for key in ["used", "replaced", "idle"] {
        drop(cache.store(key, writes("0123456789")).expect("store"));
    }
    std::thread::sleep(Duration::from_millis(20));
    let plan = cache.plan_clean(Clean::UnusedFor(Duration::from_millis(10))).expect("plan");
    let mut planned: Vec<&str> = plan.victims.iter().map(|v| v.key.as_str()).collect();
    planned.sort_unstable();
    assert_eq!(planned, ["idle", "replaced", "used"]);
    assert_eq!(plan.bytes(), 30);
    assert_eq!(cache.list().expect("list").len(), 3, "planning removes nothing");

    // Between plan and execution: one entry is used, one replaced.
    drop(cache.lookup("used").expect("lookup"));
    drop(cache.store("replaced", writes("new content")).expect("replace"));
    let report = cache.clean_planned(&plan).expect("clean");
    assert_eq!(report.removed, ["idle"], "{report:?}");
    let mut changed = report.changed.clone();
    changed.sort();
    assert_eq!(changed, ["replaced", "used"]);
    assert!(cache.lookup("used").expect("lookup").is_some());
    assert!(cache.lookup("idle").expect("lookup").is_none());
}

#[test]
fn an_unbounded_wait_is_accepted() {
    let dir = Scratch::new("unbounded");
    let cache =
        Cache::open(dir.0.join("c"), CacheOptions::new().wait(Wait::timeout(Duration::MAX))).expect("open");
    drop(cache.store("k", writes("x")).expect("store"));
    assert!(cache.lookup("k").expect("lookup").is_some());
    assert_eq!(cache.clean(Clean::All).expect("clean").removed, ["k"]);
}

#[test]
fn progress_is_told_every_byte_verified_and_every_victim_cleaned() {
    let dir = Scratch::new("progress");
    let cache = open(&dir);
    let big = vec![7u8; 600 * 1024];
    drop(
        cache
            .store("big", move |d| {
                std::fs::write(d.join("a"), &big)?;
                std::fs::write(d.join("b"), b"tail")?;
                Ok(serde_json::Value::Null)
            })
            .expect("store"),
    );
    drop(cache.store("small", writes("x")).expect("store"));
    let mut chunks = Vec::new();
    let meta = cache.verify_with("big", |n| chunks.push(n)).expect("verify").expect("present");
    assert_eq!(chunks.iter().sum::<u64>(), meta.size);
    assert!(chunks.len() >= 3, "told as it reads, not once at the end: {chunks:?}");

    let plan = cache.plan_clean(Clean::All).expect("plan");
    let mut told = Vec::new();
    let report = cache.clean_planned_with(&plan, |victim| told.push(victim.key.clone())).expect("clean");
    told.sort();
    assert_eq!(told, ["big", "small"]);
    assert_eq!(report.removed.len(), 2);
}

#[test]
fn a_directory_that_is_not_a_cache_is_refused_and_left_untouched() {
    let dir = Scratch::new("not-a-cache");
    let project = dir.0.join("project");
    std::fs::create_dir_all(project.join("src/deep")).expect("tree");
    std::fs::write(project.join("README"), "mine").expect("file");
    std::fs::write(project.join("src/main.rs"), "fn main() {}").expect("file");
    std::fs::create_dir(project.join("empty-dir")).expect("dir");
    let before = tree(&project);
    for options in [CacheOptions::new(), CacheOptions::new().read_only()] {
        match Cache::open(&project, options) {
            Err(CacheError::NotACache { reason: NotACache::Foreign { shown, count }, .. }) => {
                assert_eq!(count, 3);
                assert_eq!(shown, ["README", "empty-dir", "src"]);
            }
            other => panic!("{other:?}"),
        }
    }
    let err = Cache::open(&project, CacheOptions::new()).expect_err("refused");
    assert!(err.to_string().contains("not a lockyard cache"), "{err}");
    assert_eq!(tree(&project), before, "nothing written, nothing removed");
}

#[test]
fn read_only_opens_create_nothing() {
    let dir = Scratch::new("read-only");
    let missing = dir.0.join("missing");
    assert!(matches!(
        Cache::open(&missing, CacheOptions::new().read_only()),
        Err(CacheError::NotACache { reason: NotACache::Missing, .. })
    ));
    assert!(!missing.exists());
    let empty = dir.0.join("empty");
    std::fs::create_dir(&empty).expect("empty");
    assert!(matches!(
        Cache::open(&empty, CacheOptions::new().read_only()),
        Err(CacheError::NotACache { reason: NotACache::Empty, .. })
    ));
    assert_eq!(std::fs::read_dir(&empty).expect("empty").count(), 0);

    // A real cache, opened read-only: lookups of unknown keys leave no
    // lock file behind, and nothing can be stored.
    let root = dir.0.join("c");
    drop(Cache::open(&root, CacheOptions::new()).expect("create").store("k", writes("x")).expect("store"));
    let before = tree(&root);
    let cache = Cache::open(&root, CacheOptions::new().read_only()).expect("read-only");
    assert!(cache.inspect("other").expect("inspect").is_none());
    assert!(cache.inspect("k").expect("inspect").is_some());
    assert_eq!(cache.list().expect("list").len(), 1);
    assert!(matches!(cache.store("n", writes("y")), Err(CacheError::ReadOnly { .. })));
    assert!(matches!(cache.clean(Clean::All), Err(CacheError::ReadOnly { .. })));
    assert_eq!(tree(&root), before);
}

#[test]
fn an_empty_directory_is_adopted_with_a_marker_and_a_legacy_root_keeps_working() {
    let dir = Scratch::new("adopt");
    let empty = dir.0.join("empty");
    std::fs::create_dir(&empty).expect("empty");
    drop(Cache::open(&empty, CacheOptions::new()).expect("adopted"));
    assert!(empty.join(".lockyard-cache").is_file());
    assert!(empty.join("CACHEDIR.TAG").is_file());
    // A root an earlier lockyard-cache made: its own tag and .locks, no
    // marker. It is recognised, and the marker is added.
    let legacy = dir.0.join("legacy");
    std::fs::create_dir(&legacy).expect("legacy");
    std::fs::copy(empty.join("CACHEDIR.TAG"), legacy.join("CACHEDIR.TAG")).expect("tag");
    std::fs::create_dir(legacy.join(".locks")).expect("locks");
    std::fs::create_dir(legacy.join("old-entry")).expect("entry");
    drop(Cache::open(&legacy, CacheOptions::new()).expect("legacy adopted"));
    assert!(legacy.join(".lockyard-cache").is_file());
    // Someone else's CACHEDIR.TAG (cargo's target/) is not ours.
    let target = dir.0.join("target");
    std::fs::create_dir_all(target.join(".locks")).expect("target");
    std::fs::write(target.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n# cargo\n")
        .expect("tag");
    assert!(matches!(Cache::open(&target, CacheOptions::new()), Err(CacheError::NotACache { .. })));
    assert!(!target.join(".lockyard-cache").exists());
}

/// Make a chain of `depth` nested directories `d/d/d/...` in `top`, one
/// descriptor at a time (the path is far longer than PATH_MAX).
fn deep_chain(top: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut cur = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("top");
    for _ in 0..depth {
        rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        cur = rustix::fs::openat(&cur, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open");
    }
    rustix::fs::mkdirat(&cur, "bottom", Mode::from_raw_mode(0o755)).expect("bottom");
}

#[test]
fn a_tree_of_any_depth_is_digested_verified_and_removed() {
    // On a thread with a small stack: one frame per level would overflow
    // it long before this depth; the walks use none.
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(deep_tree_round_trip)
        .expect("thread")
        .join()
        .expect("no overflow");
}

fn deep_tree_round_trip() {
    const DEPTH: usize = 5_000;
    let dir = Scratch::new("deep");
    let cache = open(&dir);
    let stored = cache
        .store("deep", |staging| {
            deep_chain(staging, DEPTH);
            Ok(serde_json::Value::Null)
        })
        .expect("store a deep tree");
    drop(stored);
    assert!(cache.verify("deep").expect("verify").is_some());
    // Debris of the same depth, from a writer that died: swept.
    let debris = cache.root().join(".staging/deep.1.0");
    std::fs::create_dir(&debris).expect("debris");
    deep_chain(&debris, DEPTH);
    assert_eq!(cache.sweep().expect("sweep").removed, ["deep.1.0"]);
    assert_eq!(cache.clean(Clean::All).expect("clean").removed, ["deep"]);
    assert!(!cache.entry_path("deep").exists());
}

#[test]
fn a_root_of_another_user_or_writable_by_all_is_not_trusted() {
    let dir = Scratch::new("untrusted-root");
    // Writable by everyone, not sticky: anyone could swap entries.
    let open_to_all = dir.0.join("open");
    std::fs::create_dir(&open_to_all).expect("dir");
    std::fs::set_permissions(&open_to_all, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let err = Cache::open(&open_to_all, CacheOptions::new()).expect_err("refused");
    assert!(matches!(&err, CacheError::Lock(lockyard_flock::LockError::Untrusted { .. })), "{err}");
    assert!(err.to_string().contains("0777"), "{err}");
    assert_eq!(std::fs::read_dir(&open_to_all).expect("dir").count(), 0, "nothing written");
    if !rustix::process::geteuid().is_root() {
        lockyard_test_support::skip("a directory of another user needs root to make");
        return;
    }
    // Pre-created by another user (uid 65534) with a planted entry.
    let squatted = dir.0.join("squatted");
    std::fs::create_dir(&squatted).expect("dir");
    std::fs::write(squatted.join(".lockyard-cache"), "lockyard-cache 1\n").expect("marker");
    std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).expect("chown");
    let err = Cache::open(&squatted, CacheOptions::new()).expect_err("refused");
    assert!(err.to_string().contains("owned by another user") && err.to_string().contains("65534"), "{err}");
    // Trust by group is an explicit opt-in.
    let cache = Cache::open(&squatted, CacheOptions::new().trust(lockyard_flock::DirTrust::group(65534)));
    assert!(cache.is_ok(), "{:?}", cache.err());
}

/// A source tree with what `put` keeps: nested directories, an
/// executable, symlinks inside the tree, names that sort around `/`.
fn source_tree(top: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(top.join("a/b")).expect("mkdir");
    std::fs::create_dir_all(top.join("a-b")).expect("mkdir");
    std::fs::write(top.join("a/b/data"), vec![7u8; 300_000]).expect("write");
    std::fs::write(top.join("a-b/x"), "x").expect("write");
    std::fs::write(top.join("run"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(top.join("run"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("../run", top.join("a/up")).expect("symlink");
    std::os::unix::fs::symlink("b/data", top.join("a/down")).expect("symlink");
}

#[test]
fn put_copies_in_one_pass_with_the_digest_a_store_gets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("put");
    let cache = open(&dir);
    let src = dir.0.join("src");
    source_tree(&src);
    let put = cache.put("k", &src, serde_json::json!({ "from": "put" })).expect("put");
    let copied = cache
        .store("k2", |staging| {
            std::fs::remove_dir(staging)?;
            let ok = std::process::Command::new("cp").arg("-a").arg(&src).arg(staging).status()?;
            assert!(ok.success());
            Ok(())
        })
        .expect("store");
    assert_eq!(put.meta().digest, copied.meta().digest, "one pass digests as the walk does");
    assert_eq!((put.meta().size, put.meta().files), (300_000 + 1 + 10, 5));
    assert_eq!(put.meta().user["from"], "put");
    let mode = |p: &str| std::fs::metadata(put.path().join(p)).expect("stat").permissions().mode() & 0o111;
    assert_ne!(mode("run"), 0, "the executable bit is kept");
    assert_eq!(mode("a-b/x"), 0);
    assert_eq!(std::fs::read_link(put.path().join("a/up")).expect("link"), Path::new("../run"));
    drop((put, copied));
    assert_eq!(cache.verify("k").expect("verify").expect("present").key, "k");
    assert!(staging_is_empty(&cache));
}

#[test]
fn put_refuses_what_an_entry_cannot_hold_and_publishes_nothing() {
    let dir = Scratch::new("put-refused");
    let cache = open(&dir);
    let refused = |name: &str, make: &dyn Fn(&Path)| {
        let src = dir.0.join(name);
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("ok"), "fine").expect("write");
        make(&src);
        let err = cache.put(name, &src, ()).expect_err(name);
        assert!(matches!(err, CacheError::Rejected { .. } | CacheError::Refused { .. }), "{name}: {err}");
        assert!(cache.lookup(name).expect("lookup").is_none(), "{name}: nothing published");
        assert!(staging_is_empty(&cache), "{name}: no debris");
        err.to_string()
    };
    let out =
        refused("escape", &|src| std::os::unix::fs::symlink("../../etc/passwd", src.join("l")).expect("ln"));
    assert!(out.contains("outside the entry"), "{out}");
    let out = refused("absolute", &|src| std::os::unix::fs::symlink("/etc", src.join("l")).expect("ln"));
    assert!(out.contains("outside the entry"), "{out}");
    let out = refused("meta", &|src| std::fs::write(src.join("entry.json"), "{}").expect("write"));
    assert!(out.contains("reserves"), "{out}");
    let out = refused("fifo", &|src| {
        rustix::fs::mknodat(rustix::fs::CWD, src.join("p"), rustix::fs::FileType::Fifo, 0o644.into(), 0)
            .expect("mkfifo");
    });
    assert!(out.contains("FIFO"), "{out}");
}

/// The remote tier through a shared directory (`file://`): what one
/// cache stores, another finds by a plain lookup.
#[cfg(feature = "remote")]
#[test]
fn a_directory_remote_shares_entries_between_two_roots() {
    use lockyard_cache::{Pushed, Remote};
    let dir = Scratch::new("remote-dir");
    std::fs::create_dir(dir.0.join("shared")).expect("mkdir");
    let url = format!("file://{}", dir.0.join("shared").display());
    let with_remote = |name: &str| {
        let remote = Remote::open(&url, Duration::from_secs(10)).expect("remote");
        Cache::open(dir.0.join(name), CacheOptions::new().remote(remote).require_remote(true)).expect("open")
    };
    let (a, b) = (with_remote("a"), with_remote("b"));
    let stored = a.store("k", writes("shared")).expect("store pushes");
    let digest = stored.meta().digest.clone();
    drop(stored);
    assert_eq!(a.push("k").expect("push"), Some(Pushed::Present));
    // A push that died between archive and manifest: the next push of the
    // same build reuses the archive and writes the manifest.
    let archive = dir.0.join(format!("shared/v1/k/{digest}.tar.zst"));
    let archive_size = std::fs::metadata(&archive).expect("the archive").len();
    std::fs::remove_file(dir.0.join("shared/v1/k/manifest.json")).expect("remove the manifest");
    assert_eq!(a.push("k").expect("push"), Some(Pushed::Uploaded { archive_size }));
    let found = b.lookup("k").expect("lookup").expect("pulled on a miss");
    assert_eq!(found.meta().digest, digest);
    assert_eq!(found.meta().user["text"], "shared");
    assert_eq!(std::fs::read_to_string(found.path().join("data")).expect("data"), "shared");
    assert_eq!(std::fs::read_link(found.path().join("nested/link")).expect("link"), Path::new("../data"));
    drop(found);
    assert_eq!(b.verify("k").expect("verify").expect("present").digest, digest);
    let listed = Remote::open(&url, Duration::from_secs(10)).expect("remote").list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.as_ref().expect("a manifest").digest, digest);
    assert!(b.pull("missing").expect("pull").is_none());
    assert!(staging_is_empty(&b));
}

/// Two hosts racing one key: the second's upload loses at the manifest,
/// keeps the first's build, and removes the archive it sent, which no
/// manifest names.
#[cfg(feature = "remote")]
#[test]
fn a_push_that_loses_the_key_removes_its_archive() {
    use lockyard_cache::{Pushed, Remote};
    let dir = Scratch::new("remote-race");
    let shared = dir.0.join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    let url = format!("file://{}", shared.display());
    let with_remote = |name: &str| {
        let remote = Remote::open(&url, Duration::from_secs(10)).expect("remote");
        Cache::open(dir.0.join(name), CacheOptions::new().remote(remote).require_remote(true)).expect("open")
    };
    let (a, b) = (with_remote("a"), with_remote("b"));
    let first = a.store("k", writes("first")).expect("store").meta().digest.clone();
    // b built the key on its own (it never looked at the remote).
    let b_local = Cache::open(dir.0.join("b"), CacheOptions::new()).expect("open");
    let second = b_local.store("k", writes("second")).expect("store").meta().digest.clone();
    assert_ne!(first, second);
    assert_eq!(b.push("k").expect("push"), Some(Pushed::Kept { digest: first.clone() }));
    let mut names: Vec<String> = std::fs::read_dir(shared.join("v1/k"))
        .expect("the key's objects")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, [format!("{first}.tar.zst"), "manifest.json".to_owned()]);
    let pulled = with_remote("c").lookup("k").expect("lookup").expect("pulled");
    assert_eq!(pulled.meta().digest, first);
}

/// Large files take `put`'s in-kernel copy (digested by reading the copy
/// back): the digest must still be the walk's, byte for byte.
#[test]
fn put_copies_large_files_in_the_kernel_with_the_same_digest() {
    let dir = Scratch::new("put-large");
    let cache = open(&dir);
    let src = dir.0.join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    let big: Vec<u8> =
        (0..(20u32 << 20) + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("d/big"), &big).expect("write");
    std::fs::write(src.join("small"), "s").expect("write");
    let put = cache.put("k", &src, ()).expect("put");
    assert_eq!(put.meta().size, big.len() as u64 + 1);
    assert_eq!(std::fs::read(put.path().join("d/big")).expect("read"), big);
    let stored = cache
        .store("k2", |staging| {
            std::fs::create_dir(staging.join("d"))?;
            std::fs::write(staging.join("d/big"), &big)?;
            std::fs::write(staging.join("small"), "s")?;
            Ok(())
        })
        .expect("store");
    assert_eq!(put.meta().digest, stored.meta().digest);
    drop((put, stored));
    assert_eq!(cache.verify("k").expect("verify").expect("present").key, "k");
}
