#![allow(clippy::print_stderr, clippy::print_stdout)] // xtask talks to the developer by design.

//! Developer tasks: `cargo xtask <task>`.
//!
//! `ci` is what `.ci/run` and a developer run before pushing, and all a
//! newcomer needs: it first makes sure the tools the tests use are there
//! (installing them when it runs as root, naming what is missing
//! otherwise), then runs each step in order, stops at the first failing
//! step with a line naming it, and ends with `N passed, N failed, N
//! skipped` for the test step. A skipped test fails the run unless
//! `--allow-skip` is given: on CI nothing may skip.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One CI step: a name for the log and the command to run. Adding a step
/// to CI is adding a line to [`ci_steps`].
struct Step {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const fn cargo(name: &'static str, args: &'static [&'static str]) -> Step {
    Step { name, program: "cargo", args, env: &[] }
}

fn ci_steps() -> Vec<Step> {
    vec![
        cargo("format", &["fmt", "--all", "--check"]),
        cargo("format (fuzz targets)", &["fmt", "--all", "--check", "--manifest-path", "fuzz/Cargo.toml"]),
        cargo(
            "clippy",
            &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
        ),
        cargo("kernel fixture", &["run", "--quiet", "--package", "xtask", "--", "kernel-fixture"]),
        cargo("test", &["test", "--workspace", "--all-features", "--no-fail-fast"]),
        Step {
            env: &[("RUSTDOCFLAGS", "-D warnings")],
            ..cargo("doc", &["doc", "--workspace", "--no-deps", "--all-features"])
        },
        cargo("bench smoke", &["bench", "--workspace", "--", "--test"]),
        cargo("stress", &["run", "--quiet", "--package", "xtask", "--", "stress"]),
        cargo("fuzz smoke", &["run", "--quiet", "--package", "xtask", "--", "fuzz", "--seconds", "30"]),
        cargo("man page", &["run", "--quiet", "--package", "xtask", "--", "man"]),
        // util-linux's own flock(1) tests, against flock(1) (to prove the
        // harness) and against lockyard run.
        cargo("flock(1) suite", &["run", "--quiet", "--package", "xtask", "--", "flock-suite"]),
        // The MSRV (workspace `rust-version`) is the toolchain every step
        // above ran on: rust-toolchain.toml pins it, and this step fails
        // if the two part ways.
        cargo("msrv", &["run", "--quiet", "--package", "xtask", "--", "msrv"]),
        // What crates.io would get: each published crate packaged alone
        // and built from its package (no file from outside it).
        cargo("package", &["run", "--quiet", "--package", "xtask", "--", "package"]),
    ]
}

/// A util-linux release whose flock(1) tests are run, from Debian's
/// archive (a registry CI reaches), checked by its digest.
struct Suite {
    /// The tarball's top directory.
    name: &'static str,
    url: &'static str,
    sha256: &'static str,
    /// Whether the system's flock(1) (2.38 on these machines) runs it too.
    with_system_flock: bool,
}

const SUITES: [Suite; 2] = [
    // Run against the system's flock(1) as well, which proves the harness.
    Suite {
        name: "util-linux-2.38.1",
        url: "http://deb.debian.org/debian/pool/main/u/util-linux/util-linux_2.38.1.orig.tar.xz",
        sha256: "60492a19b44e6cf9a3ddff68325b333b8b52b6c59ce3ebd6a0ecaa4c5117e84f",
        with_system_flock: true,
    },
    // The newest release the archive has: adds the --fcntl cases, which
    // flock(1) 2.38 predates, so only lockyard runs it.
    Suite {
        name: "util-linux-2.41",
        url: "http://deb.debian.org/debian/pool/main/u/util-linux/util-linux_2.41.orig.tar.xz",
        sha256: "81ee93b3cfdfeb7d7c4090cedeba1d7bbce9141fd0b501b686b3fe475ddca4c6",
        with_system_flock: false,
    },
];

/// Run util-linux's flock(1) test suites (`tests/ts/misc/flock`) with
/// lockyard installed as `flock` (the name under which it is flock(1)),
/// and the oldest also with the system's flock(1), which proves the
/// harness.
fn flock_suite() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/util-linux");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(&cargo).args(["build", "--quiet", "--package", "lockyard-cli"]).status()?;
    if !built.success() {
        bail!("cannot build lockyard ({built})");
    }
    let which = |cmd: &str| -> Result<PathBuf> {
        let path = env::var_os("PATH").unwrap_or_default();
        env::split_paths(&path)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow::anyhow!("{cmd} is not installed (cargo xtask deps)"))
    };
    for suite in &SUITES {
        let tests = fetch_tests(&dir, suite)?;
        let mut programs = vec![("lockyard", root.join("target/debug/lockyard"))];
        if suite.with_system_flock {
            programs.insert(0, ("flock(1)", which("flock")?));
        }
        for (name, flock) in programs {
            let build = dir.join(format!(
                "build-{}-{}",
                suite.name,
                if name == "lockyard" { "lockyard" } else { "flock" }
            ));
            if build.exists() {
                std::fs::remove_dir_all(&build)?;
            }
            std::fs::create_dir_all(&build)?;
            std::os::unix::fs::symlink(&flock, build.join("flock"))?;
            std::os::unix::fs::symlink(which("lslocks")?, build.join("lslocks"))?;
            let out = Command::new("bash")
                .arg(tests.join("tests/ts/misc/flock"))
                .arg(format!("--srcdir={}", tests.display()))
                .arg(format!("--builddir={}", build.display()))
                .current_dir(tests.join("tests"))
                .output()
                .context("cannot run the flock test suite")?;
            let report = String::from_utf8_lossy(&out.stdout);
            eprint!("{report}");
            if !out.status.success() || !report.contains("OK (all") {
                let diffs = build.join("tests/diff/misc");
                for diff in std::fs::read_dir(&diffs).into_iter().flatten().flatten() {
                    if let Ok(text) = std::fs::read_to_string(diff.path()) {
                        eprintln!("{text}");
                    }
                }
                bail!("util-linux {}'s flock tests failed against {name} ({})", suite.name, flock.display());
            }
            eprintln!("xtask flock-suite: every case of {} passed against {name}", suite.name);
        }
    }
    Ok(())
}

/// The unpacked `tests/` of `suite`, downloaded and checked on first use.
fn fetch_tests(dir: &Path, suite: &Suite) -> Result<PathBuf> {
    let tarball = dir.join(format!("{}.orig.tar.xz", suite.name));
    if !tarball.exists() {
        let partial = dir.join("download.partial");
        let status = Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(&partial)
            .arg(suite.url)
            .status()
            .context("cannot run curl")?;
        if !status.success() {
            bail!("cannot download {} ({status})", suite.url);
        }
        let sum = Command::new("sha256sum").arg(&partial).output().context("cannot run sha256sum")?;
        let digest = String::from_utf8_lossy(&sum.stdout);
        if digest.split_whitespace().next() != Some(suite.sha256) {
            bail!("{} does not have the expected digest ({digest})", suite.url);
        }
        std::fs::rename(&partial, &tarball)?;
    }
    let tests = dir.join(suite.name);
    if !tests.join("tests/ts/misc/flock").exists() {
        let status = Command::new("tar")
            .arg("xf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir)
            .arg(format!("{}/tests", suite.name))
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            bail!("cannot unpack {} ({status})", tarball.display());
        }
    }
    Ok(tests)
}

/// Package every published crate and build each from its package alone.
/// Cargo verifies each against the others' packages through a temporary
/// registry, and takes a registry's crates to be immutable: it unpacks
/// each version once under `$CARGO_HOME/registry/src/` and builds it
/// once. So both the unpacked sources of earlier runs and the build are
/// made afresh, or an earlier package of the same version would stand in
/// for this tree's.
fn package() -> Result<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/package-verify");
    if target.exists() {
        std::fs::remove_dir_all(&target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let sources = cargo_home.map(|h| h.join("registry/src"));
    for registry in sources.iter().flat_map(std::fs::read_dir).flatten().flatten() {
        // Only cargo's local registries, never crates.io's unpacked sources.
        if registry.file_name().to_string_lossy().starts_with("index.") {
            continue;
        }
        for unpacked in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
            if unpacked.file_name().to_string_lossy().starts_with("lockyard") {
                std::fs::remove_dir_all(unpacked.path())
                    .with_context(|| format!("cannot remove {}", unpacked.path().display()))?;
            }
        }
    }
    let status = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .env("CARGO_TARGET_DIR", &target)
        .args(["package", "--workspace", "--allow-dirty", "--offline"])
        .args(["--exclude", "xtask", "--exclude", "lockyard-tests", "--exclude", "lockyard-test-support"])
        .status()
        .context("cannot run cargo package")?;
    if !status.success() {
        bail!("cargo package failed ({status})");
    }
    Ok(())
}

/// Check that the toolchain running now is the workspace's MSRV.
fn msrv() -> Result<()> {
    let declared = env!("CARGO_PKG_RUST_VERSION");
    let output = Command::new("rustc").arg("--version").output().context("cannot run rustc")?;
    let version = String::from_utf8_lossy(&output.stdout);
    let running = version.split_whitespace().nth(1).unwrap_or_default();
    let matches =
        running == declared || running.strip_prefix(declared).is_some_and(|rest| rest.starts_with('.'));
    if !matches {
        bail!(
            "the workspace declares rust-version {declared}, but CI builds with rustc {running}: \
             pin the MSRV in rust-toolchain.toml, or raise rust-version to what the code needs"
        );
    }
    eprintln!("xtask msrv: building with rustc {running}, the declared rust-version {declared}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(&args[1..]),
        Some("man") => man(),
        Some("stress") => stress(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("kernel-fixture") => kernel_fixture(),
        Some("msrv") => msrv(),
        Some("package") => package(),
        Some("flock-suite") => flock_suite(),
        Some("deps") => deps().and_then(|missing| {
            if missing.is_empty() {
                Ok(())
            } else {
                bail!("missing {} (run as root to install)", missing.join(", "))
            }
        }),
        Some("help" | "--help" | "-h") | None => {
            usage();
            Ok(())
        }
        Some(other) => {
            usage();
            Err(anyhow::anyhow!("unknown task `{other}`"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() {
    eprintln!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         ci      [--allow-skip]  install what the tests need (as root; else name what is missing), then\n          \
         format check, clippy, tests, docs, bench smoke, stress, fuzz smoke, the man page, the MSRV\n          \
         check and packaging; stops at the first failure and ends with\n          \
         `N passed, N failed, N skipped`; a skip fails the run unless --allow-skip\n  \
         deps    install (as root) or list what the tests need\n  \
         stress  [--long]  the stress and crash campaign (docs/reliability.md); --long is 32 processes, 10x rounds\n  \
         fuzz    [--seconds N] [TARGET...]  run the lockyard-procfs fuzz targets, N seconds each (default 60)\n  \
         man     write the lockyard(1) man page to target/man/lockyard.1\n  \
         msrv    fail unless rustc is the workspace's rust-version\n  \
         package package every published crate and build each from its package\n  \
         flock-suite  run util-linux 2.38.1's flock tests against flock(1) and lockyard run, and 2.41's against lockyard\n  \
         kernel-fixture  download and unpack Debian's cloud kernel into target/kernel-fixture (for lockyard-kvm's tests)"
    );
}

fn ci(args: &[String]) -> Result<()> {
    let allow_skip = match args {
        [] => false,
        [flag] if flag == "--allow-skip" => true,
        _ => bail!("usage: cargo xtask ci [--allow-skip]"),
    };
    let started = Instant::now();
    let missing = deps()?;
    if !missing.is_empty() && !allow_skip {
        bail!(
            "missing {}: run `cargo xtask ci` as root to install them, install them yourself, or pass \
             --allow-skip to run without (the tests that need them are then skipped and counted)",
            missing.join(", ")
        );
    }
    let mut tally = None;
    for step in ci_steps() {
        if step.name == "test" {
            let counted = run_tests(&step)?;
            eprintln!("xtask ci: {counted}");
            if counted.failed > 0 {
                bail!("step `test` failed: {counted}; rerun: cargo test --workspace --all-features");
            }
            if counted.skipped > 0 && !allow_skip {
                bail!(
                    "{} skipped (listed above); on CI nothing may skip. Install what they need (as root, \
                     `cargo xtask ci` does), or pass --allow-skip",
                    counted.skipped
                );
            }
            tally = Some(counted);
        } else {
            run(&step)?;
        }
    }
    eprintln!("xtask ci: all steps passed in {:.0?}", started.elapsed());
    if let Some(counted) = tally {
        eprintln!("{counted}");
    }
    Ok(())
}

/// A command the tests run, and the Debian package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("flock", "util-linux"),
    ("lslocks", "util-linux"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("prlimit", "util-linux"),
    ("nsenter", "util-linux"),
    ("script", "bsdutils"),
    ("losetup", "mount"),
    ("python3", "python3"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("btrfs", "btrfs-progs"),
    ("mkfs.xfs", "xfsprogs"),
    ("bindfs", "bindfs"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
    ("curl", "curl"),
    ("sha256sum", "coreutils"),
    ("bash", "bash"),
    ("pkill", "procps"),
    // The cgroup v2 enforcement test boots a VM: QEMU, with busybox and a
    // stripped lockyard (and the libraries ldd names) in an initramfs.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("strip", "binutils"),
    ("ldd", "libc-bin"),
    ("timeout", "coreutils"),
];

/// The S3 server the remote cache's tests start (pinned: its behaviour,
/// such as conditional writes, is what the tests rely on).
const MOTO: &str = "moto[server]==5.2.1";

/// Make sure every tool the tests use is here: as root, install the
/// Debian packages of the missing ones; cargo-fuzz (from crates.io) is
/// installed for any user. Returns what is still missing.
fn deps() -> Result<Vec<String>> {
    let on_path = |cmd: &str| {
        let path = env::var_os("PATH").unwrap_or_default();
        env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).any(|dir| dir.join(cmd).is_file())
    };
    let missing_tools = || TOOLS.iter().filter(|(cmd, _)| !on_path(cmd)).copied().collect::<Vec<_>>();
    let mut missing = missing_tools();
    if !missing.is_empty() && is_root() {
        let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        packages.sort_unstable();
        packages.dedup();
        eprintln!("xtask deps: installing {}", packages.join(" "));
        let apt = |args: &[&str]| {
            Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status()
        };
        apt(&["update", "-q"]).context("run apt-get update")?;
        let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
        install.extend(&packages);
        let status = apt(&install).context("run apt-get install")?;
        if !status.success() {
            bail!("apt-get install {} failed ({status})", packages.join(" "));
        }
        missing = missing_tools();
    }
    let mut still: Vec<String> =
        missing.iter().map(|(cmd, package)| format!("{cmd} (Debian: {package})")).collect();
    let fuzz =
        || Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !fuzz() {
        eprintln!("xtask deps: installing cargo-fuzz");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--quiet"])
            .status()
            .context("run cargo install")?;
        if !status.success() || !fuzz() {
            still.push("cargo-fuzz (cargo install cargo-fuzz --locked)".to_owned());
        }
    }
    // The remote cache's tests run against moto's S3 server, and tamper
    // with its objects through boto3 (a dependency of moto).
    let moto = || {
        Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !moto() {
        eprintln!("xtask deps: installing {MOTO} from PyPI");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MOTO])
            .status()
            .context("run pip")?;
        if !status.success() || !moto() {
            still.push(format!("moto's S3 server (python3 -m pip install '{MOTO}')"));
        }
    }
    if still.is_empty() {
        eprintln!("xtask deps: all {} tools the tests use are here, cargo-fuzz and moto", TOOLS.len());
    }
    Ok(still)
}

/// What the test step counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    passed: u64,
    failed: u64,
    skipped: u64,
    ignored: u64,
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Run the test step, copying its output through, and count: libtest's
/// `test result:` lines give passed and failed; the tests that skipped
/// (see lockyard-test-support) are read back from the skip log and
/// printed with their reasons. A skipped test returned early, so libtest
/// counted it as passed: it is moved from passed to skipped.
fn run_tests(step: &Step) -> Result<Counted> {
    use std::io::BufRead;
    eprintln!("xtask ci: step `{}`: {} {}", step.name, step.program, step.args.join(" "));
    let started = Instant::now();
    let log = workspace_root()?.join("target/xtask/skips.log");
    std::fs::create_dir_all(log.parent().context("log dir")?)?;
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new(step.program)
        .args(step.args)
        .envs(step.env.iter().copied())
        .env("LOCKYARD_SKIP_LOG", &log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("step `{}`: cannot start {}", step.name, step.program))?;
    let mut counted = Counted::default();
    let stdout = child.stdout.take().context("test output")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("read test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split(['.', ';']) {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => counted.passed += n,
                    "failed" => counted.failed += n,
                    "ignored" => counted.ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("wait for the tests")?;
    let skips = std::fs::read_to_string(&log).unwrap_or_default();
    for line in skips.lines() {
        let (test, reason) = line.split_once('\t').unwrap_or((line, ""));
        eprintln!("xtask ci: skipped {test}: {reason}");
        counted.skipped += 1;
    }
    counted.passed = counted.passed.saturating_sub(counted.skipped);
    if counted.ignored > 0 {
        eprintln!(
            "xtask ci: {} ignored on purpose (#[ignore]: tools run by hand, not tests)",
            counted.ignored
        );
    }
    if !status.success() && counted.failed == 0 {
        bail!(
            "step `test` failed ({status}) before any test failed: a build error? rerun: {} {}",
            step.program,
            step.args.join(" ")
        );
    }
    eprintln!("xtask ci: step `{}` done in {:.1?}", step.name, started.elapsed());
    Ok(counted)
}

/// A real distribution kernel for lockyard-kvm's resolver test: Debian's
/// `linux-image-cloud-*` metapackage names the versioned image package it
/// depends on; that package is fetched with `apt-get download` and
/// unpacked with `dpkg-deb -x` into `target/kernel-fixture/root`. Done
/// once (kept across runs). Where apt cannot fetch it (not Debian, no
/// mirror), it says so and the test skips with the same reason.
fn kernel_fixture() -> Result<()> {
    let dir = workspace_root()?.join("target/kernel-fixture");
    let root = dir.join("root");
    let boot = root.join("boot");
    let have = |boot: &std::path::Path| {
        std::fs::read_dir(boot).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
        })
    };
    if have(&boot) {
        eprintln!("xtask kernel-fixture: already in {}", root.display());
        return Ok(());
    }
    let output = |program: &str, args: &[&str]| -> Option<String> {
        let out = Command::new(program).args(args).current_dir(&dir).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let Some(arch) = output("dpkg", &["--print-architecture"]) else {
        eprintln!("xtask kernel-fixture: skipped: no dpkg here (not Debian); the real-kernel test will skip");
        return Ok(());
    };
    let meta = format!("linux-image-cloud-{}", arch.trim());
    let depends = |meta: &str| {
        output("apt-cache", &["depends", "--important", meta])?.lines().find_map(|line| {
            let dep = line.trim().strip_prefix("Depends:")?.trim();
            dep.starts_with("linux-image-").then(|| dep.to_owned())
        })
    };
    let mut package = depends(&meta);
    if package.is_none() && is_root() {
        // A fresh machine may have no package lists yet.
        let _ = output("apt-get", &["update", "-q"]);
        package = depends(&meta);
    }
    let Some(package) = package else {
        eprintln!("xtask kernel-fixture: skipped: apt does not know {meta}; the real-kernel test will skip");
        return Ok(());
    };
    eprintln!("xtask kernel-fixture: downloading {package} (the image {meta} depends on)");
    if output("apt-get", &["download", "-q", &package]).is_none() {
        eprintln!(
            "xtask kernel-fixture: skipped: `apt-get download {package}` failed; the real-kernel test will skip"
        );
        return Ok(());
    }
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status().context("run dpkg-deb")?;
    if !status.success() || !have(&boot) {
        bail!("dpkg-deb -x {} left no boot/vmlinuz-* in {}", deb.display(), root.display());
    }
    // Only the image is needed; the modules are most of the package.
    let _ = std::fs::remove_dir_all(root.join("lib/modules"));
    let _ = std::fs::remove_dir_all(root.join("usr/lib/modules"));
    std::fs::remove_file(&deb)?;
    eprintln!("xtask kernel-fixture: unpacked into {}", root.display());
    Ok(())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Write the man page generated from the command's clap definition.
fn man() -> Result<()> {
    use clap::CommandFactory;
    let dir = workspace_root()?.join("target/man");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let command = lockyard_cli::cli::Cli::command();
    // lockyard(1), plus lockyard-locks(1) and friends for the subcommands.
    let mut pages = vec![("lockyard".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("lockyard-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page_command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(page_command).render(&mut page).context("render man page")?;
        std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!("xtask man: wrote {}/lockyard*.1", dir.display());
    Ok(())
}

fn workspace_root() -> Result<&'static std::path::Path> {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")
}

/// The stress and crash campaign, built in release mode so its latency
/// figures mean what docs/reliability.md says they mean.
fn stress(args: &[String]) -> Result<()> {
    let long = match args {
        [] => false,
        [flag] if flag == "--long" => true,
        _ => bail!("usage: cargo xtask stress [--long]"),
    };
    let mut command = Command::new("cargo");
    command.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "lockyard-tests",
        "--bin",
        "lockyard-stress",
        "--",
    ]);
    command.arg("all");
    if long {
        command.arg("--long");
    }
    let status = command.current_dir(workspace_root()?).status().context("cannot start cargo")?;
    if !status.success() {
        bail!("stress campaign failed ({status})");
    }
    Ok(())
}

/// Every cargo-fuzz target in `fuzz/`, each paired with the files that
/// seed its corpus: fixtures of the procfs tests and `fuzz/seeds/TARGET/`.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("mountinfo", "mountinfo-"),
    ("proc_locks", "locks-"),
    ("fdinfo", "fdinfo-"),
    ("cmdline", ""),
    ("cpulist", ""),
    ("stat", ""),
];

/// Run the fuzz targets for a while each, with corpora kept under
/// `target/fuzz/corpus` so runs build on each other.
///
/// cargo-fuzz needs nightly-only rustc flags (`-Zsanitizer`); this machine
/// has one pinned stable toolchain, so the build opts in with
/// `RUSTC_BOOTSTRAP=1` for the fuzz crate alone.
fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = 60u32;
    let mut chosen = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = rest.next().context("--seconds needs a number")?;
                seconds = value.parse().with_context(|| format!("--seconds {value}: not a number"))?;
            }
            name if FUZZ_TARGETS.iter().any(|(t, _)| *t == name) => chosen.push(name),
            other => bail!(
                "unknown fuzz argument `{other}`; targets: {}",
                FUZZ_TARGETS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let root = workspace_root()?;
    let probe = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !probe.is_ok_and(|out| out.status.success()) {
        bail!(
            "cargo-fuzz is not installed: `cargo install cargo-fuzz --locked` (`cargo xtask ci` does this)"
        );
    }
    let fuzz_cargo = || {
        let mut command = Command::new("cargo");
        command.current_dir(root).env("RUSTC_BOOTSTRAP", "1").args(["fuzz"]);
        command
    };
    let status = fuzz_cargo().args(["build", "--fuzz-dir", "fuzz"]).status().context("cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    let mut summary = Vec::new();
    for &(target, fixture_prefix) in FUZZ_TARGETS {
        if !chosen.is_empty() && !chosen.contains(&target) {
            continue;
        }
        let corpus = root.join("target/fuzz/corpus").join(target);
        seed_corpus(root, target, fixture_prefix, &corpus)?;
        let log_path = root.join("target/fuzz").join(format!("{target}.log"));
        let log =
            std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        eprintln!("xtask fuzz: {target} for {seconds} s (log: {})", log_path.display());
        let status = fuzz_cargo()
            .args(["run", "--fuzz-dir", "fuzz", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("cargo fuzz run")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
            bail!(
                "fuzz target {target} failed ({status}); the crashing input is under fuzz/artifacts/{target}/"
            );
        }
        // libFuzzer ends with "Done N runs in S second(s)".
        let runs = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Done ")?.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let entries = std::fs::read_dir(&corpus).map_or(0, Iterator::count);
        summary
            .push(format!("{target}: {runs} executions in {seconds} s, corpus {entries} inputs, no crash"));
    }
    for line in summary {
        eprintln!("xtask fuzz: {line}");
    }
    Ok(())
}

/// Copy the seed files of `target` into its corpus directory.
fn seed_corpus(
    root: &std::path::Path,
    target: &str,
    fixture_prefix: &str,
    corpus: &std::path::Path,
) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("create {}", corpus.display()))?;
    let mut seeds = Vec::new();
    if !fixture_prefix.is_empty() {
        let fixtures = root.join("crates/procfs/tests/fixtures");
        for entry in std::fs::read_dir(&fixtures).with_context(|| format!("list {}", fixtures.display()))? {
            let path = entry?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(fixture_prefix)) {
                seeds.push(path);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("fuzz/seeds").join(target)) {
        seeds.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    for seed in seeds {
        let name = format!("seed-{}", seed.file_name().and_then(|n| n.to_str()).unwrap_or("input"));
        std::fs::copy(&seed, corpus.join(name)).with_context(|| format!("copy {}", seed.display()))?;
    }
    Ok(())
}

fn run(step: &Step) -> Result<()> {
    eprintln!("xtask ci: step `{}`: {} {}", step.name, step.program, step.args.join(" "));
    let started = Instant::now();
    let status = Command::new(step.program)
        .args(step.args)
        .envs(step.env.iter().copied())
        .status()
        .with_context(|| format!("step `{}`: cannot start {}", step.name, step.program))?;
    if !status.success() {
        bail!("step `{}` failed ({status}); rerun: {} {}", step.name, step.program, step.args.join(" "));
    }
    eprintln!("xtask ci: step `{}` passed in {:.1?}", step.name, started.elapsed());
    Ok(())
}
