//! `lockyard preflight` and `lockyard kernel` as a harness or an operator
//! runs them: real /dev/kvm, an unprivileged user, a starved fd table,
//! images on disk and in the cache.

#![allow(clippy::print_stdout)]

use lockyard_test_support::Scratch;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const LOCKYARD: &str = env!("CARGO_BIN_EXE_lockyard");

fn run(prefix: &[&str], args: &[&str]) -> Output {
    let (program, rest) = match prefix.split_first() {
        Some((program, rest)) => (*program, rest.iter().copied().chain([LOCKYARD]).collect::<Vec<_>>()),
        None => (LOCKYARD, Vec::new()),
    };
    Command::new(program).args(rest).args(args).stdin(Stdio::null()).output().expect("run")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn preflight_passes_on_this_host_and_fails_on_the_wrong_device() {
    if !Path::new("/dev/kvm").exists() {
        lockyard_test_support::skip("this machine has no /dev/kvm");
        return;
    }
    let out = run(&[], &["preflight", "--cap", "IRQCHIP"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let lines = text(&out.stdout);
    assert!(lines.starts_with("PASS  device: /dev/kvm"), "{lines}");
    assert!(lines.contains("PASS  api version: 12\n"), "{lines}");
    assert!(lines.contains("PASS  create vm"), "{lines}");
    assert!(lines.contains("PASS  capability IRQCHIP: supported"), "{lines}");

    let report = json(&run(&[], &["preflight", "--json"]));
    assert_eq!(report["schema"], 1);
    assert_eq!(report["passed"], true);
    assert_eq!(report["checks"][1]["value"], 12);
    assert_eq!(report["failure"], Value::Null);

    let out = run(&[], &["preflight", "--device", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("FAIL  device: /dev/null: character device 1:3"),
        "{}",
        text(&out.stdout)
    );

    let out = run(&[], &["preflight", "--cap", "NOT_A_CAPABILITY"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown KVM capability"), "{}", text(&out.stderr));
}

#[test]
fn an_unprivileged_user_is_told_about_the_group() {
    if !Path::new("/dev/kvm").exists() || !rustix::process::geteuid().is_root() || !have("setpriv") {
        lockyard_test_support::skip("needs /dev/kvm, root (to mknod and drop privileges) and setpriv");
        return;
    }
    let dir = Scratch::new("unpriv");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let node = dir.0.join("kvm");
    let dev = rustix::fs::makedev(10, 232);
    rustix::fs::mknodat(rustix::fs::CWD, &node, rustix::fs::FileType::CharacterDevice, 0o660.into(), dev)
        .expect("mknod");
    std::os::unix::fs::chown(&node, Some(0), Some(65533)).expect("chown");
    // mknod's mode went through the umask.
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o660)).expect("chmod");
    let device = node.to_str().expect("utf-8");
    let drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let out = run(&drop, &["preflight", "--device", device, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["failure"], "permission_denied");
    assert_eq!(report["transient"], false);
    let detail = report["checks"][0]["detail"].as_str().expect("detail").to_owned();
    assert!(detail.contains("mode 0660"), "{detail}");
    assert!(detail.contains("is not in group"), "{detail}");
    assert!(detail.contains("usermod -aG"), "{detail}");
    let remedy = report["checks"][0]["remedy"].as_str().expect("a failure has a remedy");
    // The group has no name here, so its number is what usermod gets.
    assert!(remedy.contains("usermod -aG 65533 "), "{remedy}");
}

#[test]
fn a_starved_fd_table_is_transient_not_a_misconfiguration() {
    if !Path::new("/dev/kvm").exists() || !have("prlimit") {
        lockyard_test_support::skip("needs /dev/kvm and prlimit");
        return;
    }
    // Four descriptors: stdio and /dev/kvm; KVM_CREATE_VM then has none.
    let out = run(&["prlimit", "--nofile=4"], &["preflight", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["failure"], "transient", "{report}");
    assert_eq!(report["transient"], true);
    assert!(
        report["checks"].as_array().expect("checks").last().expect("last")["detail"]
            .as_str()
            .expect("detail")
            .contains("EMFILE")
    );
}

fn bzimage(version: &str) -> Vec<u8> {
    lockyard_test_support::images::bzimage(0x020F, version)
}

#[test]
fn kernel_resolves_in_order_and_says_what_it_passed_over() {
    if !cfg!(target_arch = "x86_64") {
        lockyard_test_support::skip("the synthetic images here are x86 bzImages");
        return;
    }
    let dir = Scratch::new("kernel");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("boot")).expect("root");
    std::fs::write(root.join("boot/vmlinuz-6.7.0-x"), b"\x7fELF.....").expect("elf");
    let tree = dir.0.join("linux");
    std::fs::create_dir_all(tree.join("arch/x86/boot")).expect("tree");
    std::fs::write(tree.join("arch/x86/boot/bzImage"), bzimage("6.8.0-tree #1")).expect("image");
    let root_arg = root.to_str().expect("utf-8");
    let tree_arg = tree.to_str().expect("utf-8");

    let out =
        run(&[], &["kernel", "--root", root_arg, "--release", "6.7.0-x", "--search", tree_arg, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let found = json(&out);
    assert_eq!(found["found"], true);
    assert_eq!(found["source"], "build_tree");
    assert_eq!(found["image"]["version"], "6.8.0-tree");
    assert_eq!(found["passed_over"].as_array().expect("list").len(), 0, "build trees come before installed");

    let out = run(&[], &["kernel", "--root", root_arg, "--release", "6.7.0-x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("vmlinuz-6.7.0-x (installed kernel): an ELF vmlinux"), "{err}");
    assert!(err.contains("boot/vmlinuz (installed kernel): missing"), "{err}");

    // An unpacked kernel package as a search directory.
    let out = run(&[], &["kernel", "--root", root_arg, "--release", "none", "--search", root_arg, "--json"]);
    assert_eq!(out.status.code(), Some(1), "only an ELF there: {}", text(&out.stderr));
    std::fs::write(root.join("boot/vmlinuz-6.7.1-y"), bzimage("6.7.1-y")).expect("image");
    let found =
        json(&run(&[], &["kernel", "--root", root_arg, "--release", "none", "--search", root_arg, "--json"]));
    assert_eq!(found["path"], root.join("boot/vmlinuz-6.7.1-y").to_str().expect("utf-8"));
    assert_eq!(found["image"]["version"], "6.7.1-y");

    // A requested version is checked against each image's header: the
    // installed /boot/vmlinuz of another release is passed over, named.
    std::fs::write(root.join("boot/vmlinuz"), bzimage("6.1.0-28-cloud-amd64")).expect("image");
    let cache = dir.0.join("cache");
    let out = run(
        &[],
        &["kernel", "--root", root_arg, "--version", "6.14.2", "--cache-dir", cache.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("kernel 6.1.0-28-cloud-amd64, not the requested 6.14.2"), "{err}");

    // A spec (argument, or $LOCKYARD_KERNEL): a build tree alone.
    let found = json(&run(&[], &["kernel", tree_arg, "--json"]));
    assert_eq!(
        (found["outcome"].as_str(), found["image"]["version"].as_str()),
        (Some("found"), Some("6.8.0-tree"))
    );
    let env = format!("LOCKYARD_KERNEL={tree_arg}");
    let found = json(&run(&["env", &env], &["kernel", "--json"]));
    assert_eq!(found["image"]["version"], "6.8.0-tree", "{found}");
    // A malformed spec is a mistake (a harness fails), not "no kernel".
    let out = run(&[], &["kernel", "two words", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(json(&out)["outcome"], "misconfigured");
    assert!(text(&out.stderr).contains("expected a path"), "{}", text(&out.stderr));
    // --search is exclusive; --fallback adds the installed kernel.
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).expect("empty");
    let empty_arg = empty.to_str().expect("utf-8");
    let searched = ["kernel", "--root", root_arg, "--release", "6.7.1-y", "--search", empty_arg, "--json"];
    let out = run(&[], &searched);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(json(&out)["outcome"], "unavailable");
    let found = json(&run(&[], &[&searched[..], &["--fallback"]].concat()));
    assert_eq!(found["path"], root.join("boot/vmlinuz-6.7.1-y").to_str().expect("utf-8"), "{found}");

    let missing = dir.0.join("typo");
    let out = run(&[], &["kernel", "--image", missing.to_str().expect("utf-8"), "--search", tree_arg]);
    assert_eq!(out.status.code(), Some(2), "an explicit image that is missing is an error");
    assert!(text(&out.stderr).contains("missing"), "{}", text(&out.stderr));

    // Stored in the kernel cache: found by version, with the entry's path.
    let cache = dir.0.join("cache");
    let cache_arg = cache.to_str().expect("utf-8");
    let src = dir.0.join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("bzImage"), bzimage("6.9.1-cached")).expect("image");
    std::fs::write(src.join("a.config"), "CONFIG_SMP=y\n").expect("config");
    std::fs::write(src.join("b.config"), "CONFIG_SMP=n\n").expect("config");
    let image_arg = src.join("bzImage");
    let image_arg = image_arg.to_str().expect("utf-8");
    let a_config = src.join("a.config");
    let a_config = a_config.to_str().expect("utf-8");
    let b_config = src.join("b.config");
    let b_config = b_config.to_str().expect("utf-8");
    let out = run(
        &[],
        &[
            "kernel",
            "store",
            image_arg,
            "--config",
            a_config,
            "--git",
            "abc",
            "--cache-dir",
            cache_arg,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stored = json(&out);
    let key = stored["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("kernel-6.9.1-cached-x86_64-"), "{stored}");
    assert_eq!(stored["origin"]["commit"], "abc", "{stored}");

    let listed = json(&run(&[], &["kernel", "list", "--cache-dir", cache_arg, "--json"]));
    assert_eq!(listed["kernels"][0]["key"], key.as_str(), "{listed}");
    assert_eq!(listed["kernels"][0]["version"], "6.9.1-cached", "{listed}");
    let table = text(&run(&[], &["kernel", "list", "--cache-dir", cache_arg]).stdout);
    assert!(table.starts_with("KEY") && table.contains(&key), "{table}");

    let by_version = ["kernel", "--version", "6.9.1-cached", "--cache-dir", cache_arg, "--root", root_arg];
    let out = run(&[], &by_version);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(&format!("image:    {}", cache.join(&key).join("bzImage").display())), "{shown}");
    assert!(shown.contains("version:  6.9.1-cached\n"), "{shown}");
    assert!(shown.contains("source:   cache\n"), "{shown}");
    // The same as a spec, and by its exact key.
    let found =
        json(&run(&[], &["kernel", "6.9.1-cached", "--cache-dir", cache_arg, "--root", root_arg, "--json"]));
    assert_eq!(found["source"], "cache", "{found}");
    let found = json(&run(&[], &["kernel", &format!("key:{key}"), "--cache-dir", cache_arg, "--json"]));
    assert_eq!(found["source"], "cache", "{found}");

    // Built from another config: stale, passed over with why.
    let out = run(&[], &[&by_version[..], &["--config", b_config, "--json"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["outcome"], "unavailable", "{report}");
    assert_eq!(report["passed_over"][0]["reason"]["kind"], "stale", "{report}");
    let found = json(&run(&[], &[&by_version[..], &["--config", a_config, "--json"]].concat()));
    assert_eq!(found["outcome"], "found", "{found}");

    // Not a bootable image: refused before the cache is touched.
    let out = run(&[], &["kernel", "store", a_config, "--cache-dir", cache_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn with_no_source_the_trees_of_a_kernel_developer_come_first() {
    if !cfg!(target_arch = "x86_64") {
        lockyard_test_support::skip("the synthetic images here are x86 bzImages");
        return;
    }
    let dir = Scratch::new("kernel-probes");
    let work = dir.0.join("work");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("boot")).expect("root");
    std::fs::write(root.join("boot/vmlinuz"), bzimage("6.1.0-installed")).expect("installed");
    let root_arg = root.to_str().expect("utf-8");
    let kernel = |cwd: &Path| {
        let out = Command::new(LOCKYARD)
            .args(["kernel", "--root", root_arg, "--release", "6.1.0-installed", "--json"])
            .current_dir(cwd)
            .env_remove("LOCKYARD_KERNEL")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        json(&out)
    };
    // ./linux without build artifacts is not a tree: the installed kernel,
    // and the source directory is not even named.
    std::fs::create_dir_all(work.join("linux/kernel")).expect("source only");
    let found = kernel(&work);
    assert_eq!(found["source"], "installed", "{found}");
    assert!(!found.to_string().contains("/linux"), "{found}");

    // ../linux with a built image: found from a sibling directory.
    let sibling = dir.0.join("sibling");
    std::fs::create_dir_all(&sibling).expect("sibling");
    std::fs::create_dir_all(dir.0.join("linux/arch/x86/boot")).expect("tree");
    std::fs::write(dir.0.join("linux/arch/x86/boot/bzImage"), bzimage("6.15.0-parent")).expect("image");
    let found = kernel(&sibling);
    assert_eq!(
        (found["source"].as_str(), found["image"]["version"].as_str()),
        (Some("build_tree"), Some("6.15.0-parent")),
        "{found}"
    );

    // ./linux, once built, comes before ../linux.
    std::fs::create_dir_all(work.join("linux/arch/x86/boot")).expect("tree");
    std::fs::write(work.join("linux/arch/x86/boot/bzImage"), bzimage("6.16.0-here")).expect("image");
    let found = kernel(&work);
    assert_eq!(found["image"]["version"], "6.16.0-here", "{found}");

    // /lib/modules/RELEASE/build under --root, after them.
    let build = root.join("lib/modules/6.1.0-installed/build/arch/x86/boot");
    std::fs::create_dir_all(&build).expect("modules build");
    std::fs::write(build.join("bzImage"), bzimage("6.1.0-installed")).expect("image");
    let found = kernel(&sibling);
    assert_eq!(found["image"]["version"], "6.15.0-parent", "{found}");
    std::fs::remove_dir_all(dir.0.join("linux")).expect("rm");
    let found = kernel(&sibling);
    assert_eq!(found["source"], "build_tree", "{found}");
    assert!(found["path"].as_str().expect("path").contains("lib/modules/6.1.0-installed/build"), "{found}");
}
