//! The filesystem matrix: locks and holders on tmpfs, ext4, btrfs (with a
//! subvolume), xfs, overlayfs (upper and lower layer), a bind mount, a
//! mount stacked over another, a mount point with a space and a newline in
//! its name, and FUSE (bindfs), which must be refused. On btrfs, two files
//! with the same inode number in two subvolumes share a /proc/locks key;
//! exact attribution must tell their holders apart. A lockyard-cache on
//! tmpfs, ext4, btrfs, xfs and overlayfs stores, replaces (exchange and
//! the two-rename fallback), verifies and sweeps.
//!
//! Needs root, loop devices and the mkfs tools (`cargo xtask deps` installs
//! them); runs in a private mount namespace (`unshare -m`) so nothing leaks
//! into the host's mounts. Skips, saying why, where a capability is absent.

#![allow(clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{Scratch, is_root};

/// The mounts of the matrix, shared with the command's own matrix test.
const SETUP: &str = include_str!("../fs-matrix-setup.sh");

fn missing_capability() -> Option<String> {
    if !is_root() {
        return Some("needs root".to_owned());
    }
    for tool in ["unshare", "mkfs.btrfs", "mkfs.xfs", "mkfs.ext4", "bindfs", "losetup"] {
        if Command::new("sh")
            .args(["-c", &format!("export PATH=\"$PATH:/usr/sbin:/sbin\"; command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("{tool} is not installed (`cargo xtask deps` installs it, as root)"));
        }
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control)".to_owned());
    }
    None
}

#[test]
fn locks_and_holders_on_every_filesystem() {
    if let Some(why) = missing_capability() {
        lockyard_test_support::skip(&why);
        return;
    }
    let dir = Scratch::new("fs-matrix");
    let check = env!("CARGO_BIN_EXE_lockyard-test-fscheck");
    let script = format!(
        r#"
cd {dir}
check={check}
{SETUP}
$check held tmpfs/a.lock
$check held ext4/a.lock
$check held btrfs/a.lock
$check held btrfs/sub/a.lock
$check held xfs/a.lock
$check held merged/in-upper.lock
$check held merged/in-lower.lock
$check held bind/a.lock
$check held stack/a.lock
$check held "odd name
x/a.lock"
$check pair btrfs/a.lock btrfs/sub/a.lock
$check refused fuse/in-lower.lock FUSE
$check cache tmpfs/cache
$check cache ext4/cache
$check cache btrfs/sub/cache
$check cache xfs/cache
$check cache merged/cache
fusermount -u fuse 2>/dev/null || umount fuse
"#,
        dir = dir.0.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "filesystem matrix failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok: ")).count(), 17, "{stdout}");
    // btrfs is the case where stat's device is not the lock's device.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("btrfs/sub/a.lock") && l.contains("which /proc/locks does not use")),
        "{stdout}"
    );
}
