//! The kernel cache: storing images under derived keys with their
//! metadata, listing them, and resolving by version past stale, foreign
//! and corrupt entries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockyard_cache::{Cache, CacheOptions, Wait};
use lockyard_kvm::kernels::{self, KernelMeta, Origin, StoreError, StoreKernel, config_fingerprint};
use lockyard_kvm::{Arch, KernelSpec, Rejection, ResolveError, Resolver, Source, SourceKind};
use lockyard_test_support::Scratch;
use lockyard_test_support::images::{arm64_image, bzimage};

const CONFIG_A: &str = "# Compiler: gcc 12\nCONFIG_SMP=y\n# CONFIG_DEBUG_INFO is not set\n";
const CONFIG_B: &str = "CONFIG_SMP=y\nCONFIG_DEBUG_INFO=y\n";

fn host() -> Arch {
    Arch::host().expect("x86_64 or aarch64")
}

/// A bootable image for `arch` of `version` (arm64 headers carry none).
fn image(arch: Arch, version: &str) -> Vec<u8> {
    match arch {
        Arch::X86_64 => bzimage(0x020F, version),
        _ => arm64_image(),
    }
}

fn other(arch: Arch) -> Arch {
    if arch == Arch::X86_64 { Arch::Aarch64 } else { Arch::X86_64 }
}

fn write(dir: &Scratch, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, bytes).expect("write");
    path
}

fn cache(dir: &Scratch) -> Cache {
    Cache::open(dir.path("cache"), CacheOptions::new().wait(Wait::timeout(Duration::from_millis(500))))
        .expect("cache")
}

/// Store an image of `arch` and `version` built from `config`.
fn store(dir: &Scratch, cache: &Cache, arch: Arch, version: &str, config: Option<&str>) -> String {
    let name = format!("in/{version}-{arch}-{}", config.map_or(0, str::len));
    let mut request = StoreKernel::image(write(dir, &name, &image(arch, version))).version(version);
    if let Some(config) = config {
        request = request.config(write(dir, &format!("{name}.config"), config.as_bytes()));
    }
    let stored = request.store(cache).expect("store");
    stored.key
}

fn by_version(cache: &Cache, version: &str) -> Resolver {
    Resolver::new().version(version).source(Source::Kernels(cache.clone()))
}

#[test]
fn a_stored_kernel_is_listed_and_found_by_version_with_its_lock_held() {
    let dir = Scratch::new("kernels-store");
    let cache = cache(&dir);
    let key = store(&dir, &cache, host(), "6.14.2", Some(CONFIG_A));
    let fingerprint = config_fingerprint(CONFIG_A.as_bytes());
    assert_eq!(key, format!("kernel-6.14.2-{}-{}", host(), &fingerprint[..12]));

    let listed = kernels::kernels(&cache).expect("list");
    assert_eq!(listed.kernels.len(), 1);
    let meta = &listed.kernels[0].meta;
    assert_eq!(
        (meta.version.as_str(), meta.arch, meta.config.as_deref()),
        ("6.14.2", host(), Some(&*fingerprint))
    );
    assert!(matches!(meta.origin, Origin::Image { .. }));
    assert!(cache.entry_path(&key).join("config").is_file(), "the config is kept beside the image");

    let spec = KernelSpec::parse("6.14.2").expect("spec");
    let resolved =
        Resolver::for_spec(&spec, Some(cache.clone()), dir.path("no-root")).resolve().expect("found");
    assert_eq!(resolved.source, SourceKind::Cache);
    assert_eq!(resolved.path, cache.entry_path(&key).join(&meta.image));
    assert!(resolved.guard.is_some(), "the entry stays read-locked while the VM boots");

    // Another release is not a candidate, and says nothing.
    let err = by_version(&cache, "6.14.20").resolve().expect_err("no 6.14.20");
    assert!(matches!(&err, ResolveError::Unavailable { tried } if tried.is_empty()), "{err}");
}

#[test]
fn newest_first_and_a_stale_config_or_wrong_arch_is_passed_over_with_why() {
    let dir = Scratch::new("kernels-stale");
    let cache = cache(&dir);
    let old = store(&dir, &cache, host(), "6.14.2", Some(CONFIG_A));
    std::thread::sleep(Duration::from_millis(5));
    let stale = store(&dir, &cache, host(), "6.14.2", Some(CONFIG_B));
    std::thread::sleep(Duration::from_millis(5));
    let foreign = store(&dir, &cache, other(host()), "6.14.2", None);

    let listed = kernels::kernels(&cache).expect("list");
    let keys: Vec<&str> = listed.kernels.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, [&*foreign, &*stale, &*old], "newest first");

    // Without a config, the newest of this architecture.
    let resolved = by_version(&cache, "6.14.2").resolve().expect("found");
    assert!(resolved.path.starts_with(cache.entry_path(&stale)), "{resolved:?}");
    assert!(matches!(resolved.passed_over[0].reason, Rejection::WrongArch { .. }), "{resolved:?}");

    // With config A, the config-B kernel is stale.
    let wanted = config_fingerprint(CONFIG_A.as_bytes());
    let resolved = by_version(&cache, "6.14.2").config(&wanted).resolve().expect("found");
    assert!(resolved.path.starts_with(cache.entry_path(&old)), "{resolved:?}");
    let reasons: Vec<&Rejection> = resolved.passed_over.iter().map(|c| &c.reason).collect();
    assert!(matches!(reasons[..], [Rejection::WrongArch { .. }, Rejection::Stale { .. }]), "{reasons:?}");
    assert!(resolved.passed_over[1].reason.to_string().contains("another kernel config"));
}

#[test]
fn a_corrupt_entry_never_stops_the_search() {
    let dir = Scratch::new("kernels-corrupt");
    let cache = cache(&dir);
    let good = store(&dir, &cache, host(), "6.14.2", None);
    std::thread::sleep(Duration::from_millis(5));
    let bad_image = store(&dir, &cache, host(), "6.14.2", Some(CONFIG_A));
    std::thread::sleep(Duration::from_millis(5));
    let bad_meta = store(&dir, &cache, host(), "6.14.2", Some(CONFIG_B));

    // One entry's image is garbage, another's entry.json is.
    let meta_of = |key: &str| {
        kernels::kernels(&cache)
            .expect("list")
            .kernels
            .into_iter()
            .find(|k| k.key == key)
            .expect("listed")
            .meta
    };
    let image_name = meta_of(&bad_image).image;
    clobber(&cache.entry_path(&bad_image).join(image_name), b"not a kernel");
    clobber(&cache.entry_path(&bad_meta).join("entry.json"), b"{ truncated");

    let listed = kernels::kernels(&cache).expect("list");
    assert_eq!(listed.corrupt.len(), 1, "{listed:?}");
    assert_eq!(listed.corrupt[0].key, bad_meta);

    let resolved = by_version(&cache, "6.14.2").resolve().expect("the good one is still found");
    assert!(resolved.path.starts_with(cache.entry_path(&good)), "{resolved:?}");
    assert!(
        matches!(resolved.passed_over[..], [ref c] if matches!(c.reason, Rejection::Truncated { .. })),
        "{resolved:?}"
    );

    // Once nothing good is left, every bad entry is named, corrupt ones too.
    drop(resolved);
    assert!(cache.remove(&good).expect("remove"));
    let err = by_version(&cache, "6.14.2").resolve().expect_err("nothing good");
    let ResolveError::Unavailable { tried } = &err else { panic!("{err}") };
    assert!(tried.iter().any(|c| matches!(c.reason, Rejection::CorruptEntry { .. })), "{err}");
    assert!(err.to_string().contains("corrupt cache entry"), "{err}");

    // An exact key that is corrupt is passed over too, not an error.
    let err = Resolver::new()
        .source(Source::Cache { cache: cache.clone(), key: bad_meta.clone() })
        .resolve()
        .expect_err("corrupt");
    assert!(err.is_unavailable(), "{err}");
}

/// Replace a file of a published entry (made read-only by the cache).
fn clobber(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).expect("clobber");
}

#[test]
fn storing_checks_the_image_its_release_and_its_companions() {
    let dir = Scratch::new("kernels-checks");
    let cache = cache(&dir);
    if host() == Arch::X86_64 {
        let path = write(&dir, "bz", &image(Arch::X86_64, "6.14.2"));
        let err = StoreKernel::image(&path).version("6.1.0").store(&cache).expect_err("mismatch");
        assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err}");
    }
    let arm = write(&dir, "Image", &arm64_image());
    let err = StoreKernel::image(&arm).store(&cache).expect_err("no version");
    assert!(matches!(err, StoreError::NoVersion { .. }), "{err}");

    let err =
        StoreKernel::image(write(&dir, "junk", b"junk")).version("1.0").store(&cache).expect_err("junk");
    assert!(matches!(err, StoreError::Image { reason: Rejection::Truncated { .. }, .. }), "{err}");

    let good = write(&dir, "good", &image(host(), "6.14.2"));
    let err = StoreKernel::image(&good)
        .version("6.14.2")
        .config(write(&dir, "not-a-config", b"hello\n"))
        .store(&cache)
        .expect_err("not a config");
    assert!(matches!(err, StoreError::File { .. }), "{err}");

    // A FIFO as the vmlinux is refused, not waited on.
    let fifo = dir.path("fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o644.into(), 0).expect("mkfifo");
    let err = StoreKernel::image(&good).version("6.14.2").vmlinux(&fifo).store(&cache).expect_err("fifo");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(kernels::kernels(&cache).expect("list").kernels.is_empty(), "nothing stored by a failed store");
}

#[test]
fn a_build_tree_is_stored_with_its_vmlinux_and_config() {
    let dir = Scratch::new("kernels-tree");
    let cache = cache(&dir);
    let tree = dir.path("linux");
    write(&dir, &format!("linux/{}", host().build_tree_image()), &image(host(), "6.15.0-rc1"));
    write(&dir, "linux/vmlinux", b"\x7fELF symbols");
    write(&dir, "linux/.config", CONFIG_A.as_bytes());
    let err = StoreKernel::tree(dir.path("empty")).expect_err("no image");
    assert!(matches!(err, StoreError::NotBuilt { .. }), "{err}");

    let stored = StoreKernel::tree(&tree).expect("tree").version("6.15.0-rc1").store(&cache).expect("store");
    let meta: &KernelMeta = &stored.meta;
    assert!(matches!(&meta.origin, Origin::Tree { path } if path.ends_with("linux")), "{meta:?}");
    assert!(meta.vmlinux);
    assert_eq!(meta.config.as_deref(), Some(&*config_fingerprint(CONFIG_A.as_bytes())));
    assert_eq!(std::fs::read(stored.guard.path().join("vmlinux")).expect("vmlinux"), b"\x7fELF symbols");
}
