//! The parsers against real-shaped samples (see `fixtures/README.md`).

use std::ffi::OsStr;
use std::path::Path;

use lockyard_procfs::{
    Device, Error, FdInfo, LockKey, MountInfo, OptionalField, ProcLocks, Reason, RecordKind, RecordMode,
    RecordQualifier,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shapes() -> MountInfo {
    MountInfo::parse(&fixture("mountinfo-shapes.txt")).expect("shapes parse")
}

#[test]
fn mountinfo_fields_of_a_btrfs_subvolume() {
    let mounts = shapes();
    let home = mounts.by_id(30).expect("mount 30");
    assert_eq!(home.parent_id, 29);
    assert_eq!(home.device, Device::new(0, 26));
    assert_eq!(home.root(), Path::new("/@home"));
    assert_eq!(home.mount_point(), Path::new("/srv/home"));
    assert_eq!(home.fs_type(), "btrfs");
    assert_eq!(home.source(), "/dev/nvme0n1p2");
    assert_eq!(home.optional_fields().collect::<Vec<_>>(), [OptionalField::Shared(2)]);
    assert_eq!(home.super_options().get("subvol").as_deref(), Some(OsStr::new("/@home")));
    assert_eq!(home.super_options().get("subvolid").as_deref(), Some(OsStr::new("257")));
    assert!(home.super_options().contains("ssd"));
    assert!(home.mount_options().contains("relatime"));
    assert!(!home.is_read_only());
}

#[test]
fn mountinfo_decodes_escaped_space_and_newline() {
    let mounts = shapes();
    let odd = mounts.by_id(63).expect("mount 63");
    assert_eq!(odd.mount_point(), Path::new("/tmp/fx/sp ace\nnl"));
    assert_eq!(odd.source(), "my tmp");
    let tab = mounts.by_id(86).expect("mount 86");
    assert_eq!(tab.source(), "tab\tand\\back");
}

#[test]
fn mountinfo_keeps_malformed_escapes_literally() {
    let odd = shapes().by_id(87).cloned().expect("mount 87");
    assert_eq!(odd.root().as_os_str(), r"/dir\9bad\40");
    assert_eq!(odd.mount_point().as_os_str(), r"/tmp/fx/odd\");
    assert_eq!(odd.fs_type(), "fuse.bindfs");
}

#[test]
fn mountinfo_optional_fields_known_and_unknown() {
    let mounts = shapes();
    let fields: Vec<_> = mounts.by_id(86).expect("mount 86").optional_fields().collect();
    assert_eq!(
        fields,
        [
            OptionalField::Shared(5),
            OptionalField::Master(3),
            OptionalField::PropagateFrom(2),
            OptionalField::Other(b"x-future:7"),
        ]
    );
    assert_eq!(
        mounts.by_id(70).expect("mount 70").optional_fields().collect::<Vec<_>>(),
        [OptionalField::Unbindable]
    );
    assert_eq!(mounts.by_id(22).expect("mount 22").optional_fields().count(), 0);
    assert!(mounts.by_id(85).expect("mount 85").is_read_only());
}

#[test]
fn mountinfo_bind_mount_root_is_the_source_directory() {
    let bind = shapes().by_id(67).cloned().expect("mount 67");
    assert_eq!(bind.root(), Path::new("/tmp/fx/lower"));
    assert_eq!(bind.device, Device::new(254, 0));
}

#[test]
fn mountinfo_lines_format_back_exactly() {
    for name in ["mountinfo-shapes.txt", "mountinfo-host.txt"] {
        let bytes = fixture(name);
        let mounts = MountInfo::parse(&bytes).expect("parse");
        let lines: Vec<&[u8]> = bytes.strip_suffix(b"\n").unwrap_or(&bytes).split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), mounts.len());
        for (entry, line) in mounts.iter().zip(lines) {
            // Malformed escapes are decoded literally and so re-escaped;
            // every kernel-made line must come back byte for byte.
            if entry.mount_id != 87 {
                assert_eq!(String::from_utf8_lossy(&entry.to_line()), String::from_utf8_lossy(line));
            }
        }
    }
}

#[test]
fn covering_prefers_longest_whole_component_prefix() {
    let mounts = shapes();
    let id = |path: &str| mounts.covering(path).map(|m| m.mount_id);
    assert_eq!(id("/srv/home/user/file"), Some(30));
    assert_eq!(id("/srv/home"), Some(30));
    assert_eq!(id("/srv/homework"), Some(29), "a partial component is not a prefix");
    assert_eq!(id("/srv"), Some(29));
    assert_eq!(id("/etc/passwd"), Some(27));
    assert_eq!(id("/"), Some(27));
    assert_eq!(id("/proc/locks"), Some(22));
    assert_eq!(id("/tmp/fx/sp ace\nnl/x"), Some(63));
    assert_eq!(id("relative/path"), None);
}

#[test]
fn covering_picks_the_topmost_of_stacked_mounts() {
    let mounts = shapes();
    assert_eq!(mounts.covering("/tmp/fx/stack/file").map(|m| m.mount_id), Some(69));
}

#[test]
fn by_device_finds_every_bind_of_a_filesystem() {
    let mounts = shapes();
    let ids: Vec<u64> = mounts.by_device(Device::new(254, 0)).map(|m| m.mount_id).collect();
    assert_eq!(ids, [27, 67]);
}

#[test]
fn mountinfo_errors_name_the_line_and_field() {
    let bad = b"27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 zz / /x rw - tmpfs t rw\n";
    let err = MountInfo::parse(bad).expect_err("bad device");
    let Error::Parse { line, reason, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*line, 2);
    assert!(matches!(reason, Reason::InvalidField { field: "major:minor", .. }), "{reason:?}");
    assert_eq!(
        err.to_string(),
        "mountinfo: line 2: field `major:minor` is \"zz\", expected two decimal numbers joined by `:`"
    );

    for (text, field) in [
        (&b"27 1 254:0 / / rw ext4 /dev/vda rw"[..], "separator `-`"),
        (b"27 1 254:0 / / rw -", "filesystem type"),
        (b"27", "parent id"),
    ] {
        let err = MountInfo::parse(text).expect_err("truncated");
        assert!(matches!(&err, Error::Parse { reason: Reason::MissingField(f), .. } if *f == field), "{err}");
    }
    assert!(MountInfo::parse(b"27 1 254:0 / / rw - ext4 /dev/vda rw extra").is_err());
}

#[test]
fn read_errors_name_the_real_path() {
    let dir = std::env::temp_dir().join(format!("lockyard-procfs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("mountinfo");
    std::fs::write(&file, b"not a mount line\n").expect("write");
    let err = MountInfo::read_from(&file).expect_err("malformed");
    assert!(err.to_string().starts_with(&format!("{}: line 1:", file.display())), "{err}");
    let missing = MountInfo::read_from(dir.join("absent")).expect_err("absent");
    assert!(missing.is_not_found());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn locks_every_kind_qualifier_and_mode() {
    let locks = ProcLocks::parse(&fixture("locks-shapes.txt")).expect("parse");
    let r = locks.records();
    assert_eq!(r.len(), 16);
    assert_eq!(r[0].kind(), RecordKind::Posix);
    assert_eq!(r[0].qualifier(), RecordQualifier::Advisory);
    assert_eq!(r[0].mode(), RecordMode::Write);
    assert_eq!(r[0].pid(), 3769);
    assert_eq!(r[0].key(), Some(LockKey::new(Device::new(0xfe, 0), 382_079)));
    assert_eq!((r[0].start(), r[0].end()), (0, None));
    assert_eq!((r[1].start(), r[1].end()), (5, Some(14)));

    let ofd = &r[7];
    assert_eq!(ofd.kind(), RecordKind::Ofd);
    assert_eq!(ofd.pid(), -1);
    assert_eq!(ofd.pid_hint(), None);
    assert_eq!((ofd.start(), ofd.end()), (0, Some(9)));

    assert_eq!(r[8].key().map(|k| k.device), Some(Device::new(0, 0x2c)));
    assert_eq!((r[9].kind(), r[9].qualifier()), (RecordKind::Lease, RecordQualifier::Active));
    assert_eq!((r[10].qualifier(), r[10].mode()), (RecordQualifier::Breaking, RecordMode::Unlocked));
    assert_eq!((r[11].qualifier(), r[11].key()), (RecordQualifier::Breaker, None));
    assert_eq!(r[12].kind(), RecordKind::Delegation);
    assert_eq!(r[12].pid_hint(), None, "pid 0: owner outside our pid namespace");
    assert_eq!(r[12].key(), Some(LockKey::new(Device::new(0x103, 2), 1_181_425)));
    assert_eq!(r[13].qualifier(), RecordQualifier::Mandatory);
    assert_eq!(r[13].end(), Some(9_223_372_036_854_775_806));
    assert_eq!(r[14].kind(), RecordKind::Access);
    assert_eq!(r[15].kind(), RecordKind::Other);
    assert_eq!(r[15].qualifier(), RecordQualifier::Other);
    assert_eq!(r[15].mode(), RecordMode::Other);
    assert_eq!((r[15].kind_str(), r[15].qualifier_str(), r[15].mode_str()), ("FANCY", "FUTURE", "SHINY"));
    assert_eq!((r[14].kind_str(), r[14].mode_str()), ("ACCESS", "READ"));
}

#[test]
fn waiters_are_tied_to_the_lock_they_wait_on() {
    let locks = ProcLocks::parse(&fixture("locks-shapes.txt")).expect("parse");
    let r = locks.records();
    let chain: Vec<_> = r[2..7].iter().map(|w| (w.pid(), w.depth(), w.blocker())).collect();
    assert_eq!(
        chain,
        [(3907, 0, None), (3910, 1, Some(2)), (3912, 2, Some(3)), (3914, 3, Some(4)), (3915, 1, Some(2))]
    );
    let direct: Vec<i32> = locks.waiters_of(2).map(lockyard_procfs::LockRecord::pid).collect();
    assert_eq!(direct, [3910, 3915]);
    assert_eq!(r[11].blocker(), Some(10), "lease breaker waits on the lease");
    assert!(r.iter().filter(|l| !l.is_waiter()).all(|l| l.blocker().is_none()));
}

#[test]
fn a_waiter_without_its_blocker_is_kept_untied() {
    let locks = ProcLocks::parse(b"3: -> FLOCK  ADVISORY  WRITE 3910 fe:00:1 0 EOF\n").expect("parse");
    assert_eq!((locks.records()[0].depth(), locks.records()[0].blocker()), (1, None));
    let other_ordinal = ProcLocks::parse(
        b"2: FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF\n3: -> FLOCK  ADVISORY  WRITE 2 fe:00:1 0 EOF\n",
    )
    .expect("parse");
    assert_eq!(other_ordinal.records()[1].blocker(), None);
}

#[test]
fn lock_key_formats_like_the_kernel() {
    assert_eq!(LockKey::new(Device::new(0xfe, 0), 10).to_string(), "fe:00:10");
    assert_eq!(LockKey::new(Device::new(0x103, 0x2c), 7).to_string(), "103:2c:7");
    assert_eq!(LockKey::parse(b"103:2c:7"), Some(LockKey::new(Device::new(0x103, 0x2c), 7)));
    assert_eq!(LockKey::parse(b"103:2c"), None);
    assert_eq!(Device::from_dev_t(0xfe00).to_string(), "254:0");
    assert_eq!(Device::from_dev_t((259 << 8) | 3), Device::new(259, 3));
}

#[test]
fn locks_lines_format_back_exactly() {
    let bytes = fixture("locks-shapes.txt");
    let locks = ProcLocks::parse(&bytes).expect("parse");
    let text = String::from_utf8(bytes).expect("utf-8");
    // The invented kind on the last line has no known column layout; every
    // kernel-made line must come back as printed.
    for (record, line) in locks.iter().zip(text.lines()).take(15) {
        assert_eq!(record.to_string(), line);
    }
}

#[test]
fn locks_errors_name_the_line() {
    let err = ProcLocks::parse(
        b"1: FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF\n2: FLOCK  ADVISORY  WRITE x fe:00:1 0 EOF\n",
    )
    .expect_err("bad pid");
    assert_eq!(err.to_string(), "/proc/locks: line 2: field `pid` is \"x\", expected a decimal number");
    for bad in [
        &b"1 FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF"[..],
        b"1: FLOCK  ADVISORY  WRITE 1 fe:00 0 EOF",
        b"1: FLOCK  ADVISORY  WRITE 1 fe:00:1 0",
        b"1: FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF x",
        b"1: FLOCK  ADVISORY  WRITE 1 fe:00:1 -1 EOF",
        b"1: ->",
    ] {
        assert!(ProcLocks::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    assert!(ProcLocks::parse(b"").expect("empty").is_empty());
}

#[test]
fn fdinfo_of_a_flock_holder() {
    let info = FdInfo::parse(&fixture("fdinfo-flock.txt")).expect("parse");
    assert_eq!((info.pos, info.flags, info.mnt_id, info.ino), (0, 0o2100002, Some(27), Some(10_010_710)));
    assert!(info.is_cloexec());
    assert_eq!(info.locks.len(), 1);
    assert_eq!(info.locks[0].kind(), RecordKind::Flock);
    assert_eq!(info.locks[0].key(), Some(LockKey::new(Device::new(0xfe, 0), 10_010_710)));
}

#[test]
fn fdinfo_with_several_ranges_and_foreign_keys() {
    let info = FdInfo::parse(&fixture("fdinfo-posix-ranges.txt")).expect("parse");
    assert!(!info.is_cloexec());
    let ranges: Vec<_> = info.locks.iter().map(|l| (l.mode(), l.start(), l.end())).collect();
    assert_eq!(ranges, [(RecordMode::Write, 0, Some(9)), (RecordMode::Read, 100, None)]);

    let eventfd = FdInfo::parse(&fixture("fdinfo-eventfd.txt")).expect("parse");
    assert!(eventfd.locks.is_empty());
    assert_eq!(eventfd.mnt_id, Some(15));
}

#[test]
fn fdinfo_from_old_kernels_and_bad_values() {
    let old = FdInfo::parse(b"pos:\t0\nflags:\t02\n").expect("pre-3.15 fdinfo");
    assert_eq!((old.mnt_id, old.ino), (None, None));
    let err = FdInfo::parse(b"pos:\t0\nflags:\t09\n").expect_err("bad octal");
    assert!(err.to_string().contains("line 2: field `flags`"), "{err}");
    assert!(FdInfo::parse(b"flags:\t02\n").is_err(), "pos is required");
    let err = FdInfo::parse(b"pos:\t0\nflags:\t02\nlock:\t1: FLOCK\n").expect_err("bad lock");
    assert!(err.to_string().starts_with("fdinfo: line 3"), "{err}");
}

#[test]
fn a_lenient_mountinfo_read_skips_only_the_bad_line() {
    let text = b"27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 zz / /x rw - tmpfs t rw\n29 27 0:30 / /tmp rw - tmpfs tmpfs rw\n";
    let (mounts, skipped) = MountInfo::parse_lenient(text);
    assert_eq!(mounts.iter().map(|m| m.mount_id).collect::<Vec<_>>(), [27, 29]);
    assert_eq!(skipped.len(), 1);
    assert!(matches!(skipped[0], Error::Parse { line: 2, .. }), "{:?}", skipped[0]);
}
