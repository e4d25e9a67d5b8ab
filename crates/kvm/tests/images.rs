//! Kernel images by header, and the resolution chain: synthetic images of
//! every shape, the cache source's reader lock, and (when `cargo xtask ci`
//! has fetched it) a real Debian kernel.

#![allow(clippy::print_stderr)]

use lockyard_cache::Wait;
use lockyard_test_support::Scratch;
use lockyard_test_support::images::{arm64_image, bzimage};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockyard_cache::{Cache, CacheError, CacheOptions};
use lockyard_kvm::image::inspect;
use lockyard_kvm::{Arch, Rejection, ResolveError, Resolver, Source, SourceKind};

/// Write `bytes` to `rel` under the scratch directory, making its parents.
fn write(dir: &Scratch, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, bytes).expect("write");
    path
}

/// A bootable synthetic image for `host`.
fn image_for(host: Arch, version: &str) -> Vec<u8> {
    match host {
        Arch::X86_64 => bzimage(0x020F, version),
        Arch::Aarch64 => arm64_image(),
        other => panic!("no synthetic image for {other:?}"),
    }
}

#[test]
fn bzimages_of_several_protocols_report_their_version() {
    let dir = Scratch::new("bz");
    for (protocol, text) in [(0x020F, "2.15"), (0x020C, "2.12"), (0x0206, "2.06"), (0x0200, "2.00")] {
        let path = write(&dir, &format!("bz-{text}"), &bzimage(protocol, "6.6.7-test (me@host) #1 SMP"));
        let info = inspect(&path).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(info.format, "bzImage");
        assert_eq!(info.arch, Arch::X86_64);
        assert_eq!(info.boot_protocol.as_deref(), Some(text));
        assert_eq!(info.version.as_deref(), Some("6.6.7-test"));
        assert_eq!(info.version_string.as_deref(), Some("6.6.7-test (me@host) #1 SMP"));
    }
    let old = write(&dir, "bz-1.x", &bzimage(0x0104, "ancient"));
    assert_eq!(inspect(&old), Err(Rejection::OldBootProtocol { protocol: "1.04".to_owned() }));
}

/// What a VMM that loads bzImages directly needs: LOADED_HIGH always, a
/// 64-bit entry where the protocol (2.12+) can say so.
#[test]
fn bzimages_a_64_bit_vmm_cannot_load_are_rejected_by_name() {
    use lockyard_test_support::images::{LOADED_HIGH, XLF_KERNEL_64, bzimage_with};
    let dir = Scratch::new("bz-flags");
    let low = write(&dir, "low", &bzimage_with(0x020F, "6.6.7", 0, XLF_KERNEL_64));
    assert_eq!(inspect(&low), Err(Rejection::NotLoadedHigh));
    let no64 = write(&dir, "no64", &bzimage_with(0x020F, "6.6.7", LOADED_HIGH, 0));
    assert_eq!(inspect(&no64), Err(Rejection::No64BitEntry));
    // Before 2.12 the header cannot say; the image is taken.
    let older = write(&dir, "older", &bzimage_with(0x020A, "3.2.0", LOADED_HIGH, 0));
    assert!(inspect(&older).is_ok());
    // Both passed over, each with its reason, in a chain.
    write(&dir, "tree/boot/vmlinuz-a", &bzimage_with(0x020F, "6.6.7", 0, XLF_KERNEL_64));
    write(&dir, "tree/boot/vmlinuz-b", &bzimage_with(0x020F, "6.6.7", LOADED_HIGH, 0));
    let err = Resolver::new()
        .arch(Arch::X86_64)
        .source(Source::BuildTrees(vec![dir.0.join("tree")]))
        .resolve()
        .expect_err("nothing bootable");
    let ResolveError::Unavailable { tried } = err else { panic!("{err}") };
    let reasons: Vec<&Rejection> = tried.iter().map(|c| &c.reason).collect();
    assert!(
        reasons.contains(&&Rejection::NotLoadedHigh) && reasons.contains(&&Rejection::No64BitEntry),
        "{tried:?}"
    );
}

/// A requested version is compared with each image's own header: the
/// installed `/boot/vmlinuz` of another release is passed over, not
/// returned.
#[test]
fn a_requested_version_passes_over_images_of_other_releases() {
    if Arch::host() != Some(Arch::X86_64) {
        lockyard_test_support::skip("the synthetic images here are x86 bzImages");
        return;
    }
    let dir = Scratch::new("version");
    write(&dir, "root/boot/vmlinuz", &bzimage(0x020F, "6.1.0-28-cloud-amd64 (debian) #1 SMP"));
    let resolver = |version: &str| {
        Resolver::new()
            .version(version)
            .source(Source::Installed { root: dir.0.join("root"), release: version.to_owned() })
            .resolve()
    };
    let err = resolver("6.14.2").expect_err("no 6.14.2 here");
    let ResolveError::Unavailable { tried } = err else { panic!("{err}") };
    let mismatch =
        Rejection::VersionMismatch { wanted: "6.14.2".into(), found: "6.1.0-28-cloud-amd64".into() };
    assert!(tried.iter().any(|c| c.reason == mismatch), "{tried:?}");
    assert!(mismatch.to_string().contains("not the requested 6.14.2"));
    let found = resolver("6.1.0").expect("6.1.0 matches its local suffix");
    assert_eq!(found.image.version.as_deref(), Some("6.1.0-28-cloud-amd64"));
    // An image whose header names no release cannot be the one asked for.
    let arm = write(&dir, "arm/Image", &arm64_image());
    let err = Resolver::new()
        .arch(Arch::Aarch64)
        .version("6.1.0")
        .source(Source::Image(arm))
        .resolve()
        .expect_err("unknown version");
    assert!(matches!(err, ResolveError::Image { reason: Rejection::VersionUnknown { .. }, .. }), "{err}");
}

#[test]
fn every_other_shape_is_rejected_with_its_reason() {
    let dir = Scratch::new("shapes");
    let arm = write(&dir, "Image", &arm64_image());
    let info = inspect(&arm).expect("arm64 Image");
    assert_eq!((info.format, info.arch, info.version), ("Image", Arch::Aarch64, None));

    let elf = write(&dir, "vmlinux", b"\x7fELF\x02\x01\x01\0rest of an ELF header");
    let err = inspect(&elf).expect_err("ELF");
    assert_eq!(err, Rejection::Elf);
    assert!(err.to_string().contains("bzImage"), "the hint names what to pass: {err}");

    let gz = write(&dir, "vmlinuz.gz", b"\x1f\x8b\x08\0compressed");
    assert!(matches!(inspect(&gz), Err(Rejection::Compressed { compression: "gzip", .. })));

    let full = bzimage(0x020F, "6.6.7");
    let cut = write(&dir, "cut-payload", &full[..full.len() - 100]);
    assert!(matches!(inspect(&cut), Err(Rejection::Truncated { .. })), "{:?}", inspect(&cut));
    let cut = write(&dir, "cut-header", &full[..0x100]);
    assert!(matches!(inspect(&cut), Err(Rejection::Truncated { .. })), "{:?}", inspect(&cut));

    let garbage = write(&dir, "garbage", &[0x42; 8192]);
    assert_eq!(inspect(&garbage), Err(Rejection::UnknownFormat));
    assert_eq!(inspect(&dir.0.join("nothing")), Err(Rejection::Missing));
    assert!(matches!(inspect(&dir.0), Err(Rejection::NotAFile { .. })));
}

#[test]
fn the_chain_is_tried_in_order_and_names_everything_passed_over() {
    let dir = Scratch::new("chain");
    let host = Arch::host().expect("x86_64 or aarch64");
    let good = image_for(host, "6.9.0-tree");
    // A build tree with only a vmlinux, then one with the image.
    write(&dir, "tree-a/vmlinux", b"\x7fELF....");
    let tree = dir.0.join("tree-b");
    let built = write(&dir, &format!("tree-b/{}", host.build_tree_image()), &good);
    // An installed root whose vmlinuz is an ELF.
    write(&dir, "root/boot/vmlinuz-6.9.0", b"\x7fELF....");

    let installed = Source::Installed { root: dir.0.join("root"), release: "6.9.0".to_owned() };
    let resolved = Resolver::new()
        .source(installed.clone())
        .source(Source::BuildTrees(vec![dir.0.join("tree-a"), tree]))
        .resolve()
        .expect("found in the second tree");
    assert_eq!(resolved.path, built);
    assert_eq!(resolved.source, SourceKind::BuildTree);
    let passed: Vec<(PathBuf, Rejection)> =
        resolved.passed_over.iter().map(|c| (c.path.clone(), c.reason.clone())).collect();
    assert_eq!(
        passed,
        [
            (dir.0.join("root/lib/modules/6.9.0/vmlinuz"), Rejection::Missing),
            (dir.0.join("root/boot/vmlinuz-6.9.0"), Rejection::Elf),
            (dir.0.join("root/boot/vmlinuz"), Rejection::Missing),
            (dir.0.join("tree-a").join(host.build_tree_image()), Rejection::Missing),
        ]
    );

    let err = Resolver::new().source(installed).resolve().expect_err("nothing bootable");
    let ResolveError::Unavailable { tried } = &err else { panic!("{err}") };
    assert_eq!(tried.len(), 3);
    let text = err.to_string();
    assert!(text.contains("boot/vmlinuz-6.9.0 (installed kernel): an ELF vmlinux"), "{text}");

    // An explicit image that is missing is the operator's mistake, even
    // when a later source would have found something.
    let err = Resolver::new()
        .source(Source::Image(dir.0.join("typo")))
        .source(Source::BuildTrees(vec![dir.0.join("tree-b")]))
        .resolve()
        .expect_err("explicit missing");
    assert!(matches!(err, ResolveError::Image { reason: Rejection::Missing, .. }), "{err}");
}

#[test]
fn a_cached_image_is_found_by_version_and_its_guard_blocks_a_replace() {
    let dir = Scratch::new("cache");
    let host = Arch::host().expect("x86_64 or aarch64");
    let name = if host == Arch::X86_64 { "bzImage" } else { "Image" };
    let good = image_for(host, "6.10.0-cached");
    let cache =
        Cache::open(dir.0.join("cache"), CacheOptions::new().wait(Wait::timeout(Duration::from_millis(200))))
            .expect("cache");
    drop(
        cache
            .store("6.10.0-cached", |d| {
                std::fs::write(d.join(name), &good)?;
                Ok(serde_json::Value::Null)
            })
            .expect("store"),
    );
    let resolver = Resolver::new()
        .source(Source::Cache { cache: cache.clone(), key: "6.10.0-missing".to_owned() })
        .source(Source::Cache { cache: cache.clone(), key: "6.10.0-cached".to_owned() });
    let resolved = resolver.resolve().expect("cached");
    assert_eq!(resolved.source, SourceKind::Cache);
    assert_eq!(resolved.path, cache.entry_path("6.10.0-cached").join(name));
    assert!(
        matches!(&resolved.passed_over[0].reason, Rejection::NotCached { key } if key == "6.10.0-missing")
    );
    if host == Arch::X86_64 {
        assert_eq!(resolved.image.version.as_deref(), Some("6.10.0-cached"));
    }
    assert!(resolved.guard.is_some());

    // While the VM would boot from it, a writer cannot replace it.
    let writer =
        Cache::open(cache.root(), CacheOptions::new().wait(Wait::timeout(Duration::from_millis(100))))
            .expect("open");
    let err = writer.store("6.10.0-cached", |_| Ok(serde_json::Value::Null)).expect_err("held by the guard");
    assert!(matches!(err, CacheError::Timeout { .. }), "{err}");
    drop(resolved);
    drop(writer.store("6.10.0-cached", |_| Ok(serde_json::Value::Null)).expect("free once dropped"));
}

/// The Debian kernel `cargo xtask ci` downloads and unpacks (see
/// `xtask kernel-fixture`): `target/kernel-fixture/root/boot/vmlinuz-*`.
fn debian_kernel() -> Option<(PathBuf, String)> {
    let boot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kernel-fixture/root/boot");
    std::fs::read_dir(&boot).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let release = name.strip_prefix("vmlinuz-")?.to_owned();
        Some((boot.join(name), release))
    })
}

#[test]
fn a_real_debian_kernel_is_found_with_its_version() {
    let Some((path, release)) = debian_kernel() else {
        lockyard_test_support::skip(
            "no Debian kernel fixture (run `cargo xtask kernel-fixture`, as `cargo xtask ci` does)",
        );
        return;
    };
    let info = inspect(&path).expect("a real bzImage, loadable by a 64-bit VMM");
    assert_eq!(info.format, "bzImage");
    assert_eq!(info.relocatable, Some(true), "{info:?}");
    assert_eq!(info.version.as_deref(), Some(release.as_str()), "{info:?}");
    let root = path.parent().and_then(Path::parent).expect("root");
    let resolved = Resolver::new()
        .arch(Arch::X86_64)
        .version(release.clone())
        .source(Source::Installed { root: root.to_owned(), release: release.clone() })
        .resolve()
        .expect("resolved");
    assert_eq!(resolved.path, path);
    assert_eq!(resolved.passed_over.len(), 1, "lib/modules/{release}/vmlinuz is absent in the package");
    // The unpacked package as a search directory: found in its boot/.
    let searched = Resolver::new()
        .arch(Arch::X86_64)
        .source(Source::BuildTrees(vec![root.to_owned()]))
        .resolve()
        .expect("found by searching");
    assert_eq!(searched.path, path);
    assert_eq!(searched.image.version.as_deref(), Some(release.as_str()));
}

#[test]
fn a_fifo_candidate_is_passed_over_without_hanging() {
    let dir = Scratch::new("fifo");
    let host = Arch::host().expect("x86_64 or aarch64");
    std::fs::create_dir_all(dir.0.join("root/boot")).expect("boot");
    let fifo = dir.0.join("root/boot/vmlinuz-6.9.0");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    // Nobody ever writes to it: a blocking open would wait forever.
    assert!(matches!(inspect(&fifo), Err(Rejection::NotAFile { .. })));
    let good = image_for(host, "6.9.0-tree");
    let built = write(&dir, &format!("tree/{}", host.build_tree_image()), &good);
    let resolved = Resolver::new()
        .source(Source::Installed { root: dir.0.join("root"), release: "6.9.0".to_owned() })
        .source(Source::BuildTrees(vec![dir.0.join("tree")]))
        .resolve()
        .expect("the FIFO is passed over");
    assert_eq!(resolved.path, built);
    assert!(
        resolved.passed_over.iter().any(|c| c.path == fifo && matches!(c.reason, Rejection::NotAFile { .. }))
    );
}
