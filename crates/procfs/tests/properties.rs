//! Property tests: formatting then parsing gives back what was formatted,
//! and no input makes a parser panic.

use std::os::unix::ffi::OsStrExt;

use lockyard_procfs::{
    Cmdline, CpuList, Device, FdInfo, LockKey, LockRecord, MountInfo, ProcLocks, RecordKind, RecordMode,
    RecordQualifier,
};
use proptest::prelude::*;

/// The kernel's mountinfo escaping of a path or source.
fn mangle(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b" \t\n\\".contains(&b) {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// Path-like bytes heavy in the characters that need escaping, and not
/// always UTF-8.
fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"abc/._-".to_vec()),
        1 => prop::sample::select(b" \t\n\\#,=".to_vec()),
        1 => 1u8..=255,
    ];
    prop::collection::vec(byte, 1..24).prop_map(|mut v| {
        v.insert(0, b'/');
        v
    })
}

fn options() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z]{1,6}(=[a-z0-9/]{1,5})?", 1..5).prop_map(|v| v.join(","))
}

#[derive(Debug, Clone)]
struct Mount {
    id: u64,
    parent: u64,
    device: Device,
    root: Vec<u8>,
    point: Vec<u8>,
    options: String,
    optional: Vec<String>,
    fs_type: String,
    source: Vec<u8>,
    super_options: String,
}

fn mount() -> impl Strategy<Value = Mount> {
    (
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        (path_bytes(), path_bytes(), options()),
        prop::collection::vec("(shared|master|propagate_from):[1-9][0-9]{0,3}|unbindable", 0..3),
        ("[a-z0-9]{1,8}(\\.[a-z]{1,5})?", prop_oneof![path_bytes(), Just(Vec::new())], options()),
    )
        .prop_map(
            |(
                (id, parent, major, minor),
                (root, point, options),
                optional,
                (fs_type, source, super_options),
            )| {
                Mount {
                    id,
                    parent,
                    device: Device::new(major, minor),
                    root,
                    point,
                    options,
                    optional,
                    fs_type,
                    source,
                    super_options,
                }
            },
        )
}

impl Mount {
    fn line(&self) -> Vec<u8> {
        let mut line = format!("{} {} {} ", self.id, self.parent, self.device).into_bytes();
        line.extend(mangle(&self.root));
        line.push(b' ');
        line.extend(mangle(&self.point));
        line.push(b' ');
        line.extend(self.options.as_bytes());
        for field in &self.optional {
            line.push(b' ');
            line.extend(field.as_bytes());
        }
        line.extend(b" - ");
        line.extend(self.fs_type.as_bytes());
        line.push(b' ');
        line.extend(mangle(&self.source));
        line.push(b' ');
        line.extend(self.super_options.as_bytes());
        line
    }
}

fn lock_record() -> impl Strategy<Value = LockRecord> {
    let kind = prop_oneof![
        Just(RecordKind::Flock),
        Just(RecordKind::Posix),
        Just(RecordKind::Ofd),
        Just(RecordKind::Lease)
    ];
    (
        kind,
        prop_oneof![Just(RecordMode::Read), Just(RecordMode::Write), Just(RecordMode::Unlocked)],
        (1u64..100_000, any::<i32>(), prop::option::of((any::<u32>(), any::<u32>(), any::<u64>()))),
        (any::<u64>(), prop::option::of(any::<u64>())),
    )
        .prop_map(|(kind, mode, (ordinal, pid, key), (start, end))| {
            let qualifier = match kind {
                RecordKind::Lease => RecordQualifier::Breaking,
                _ => RecordQualifier::Advisory,
            };
            let text = format!(
                "{ordinal}: {} {} {} {pid} {} {start} {}",
                kind.as_str().expect("known"),
                qualifier.as_str().expect("known"),
                mode.as_str().expect("known"),
                key.map_or("<none>:0".to_owned(), |(major, minor, inode)| {
                    LockKey::new(Device::new(major, minor), inode).to_string()
                }),
                end.map_or("EOF".to_owned(), |e| e.to_string())
            );
            LockRecord::parse_line(text.as_bytes(), 1).expect("generated line parses")
        })
}

proptest! {
    #[test]
    fn mountinfo_round_trips(mounts in prop::collection::vec(mount(), 1..8)) {
        let mut text = Vec::new();
        for m in &mounts {
            text.extend(m.line());
            text.push(b'\n');
        }
        let parsed = MountInfo::parse(&text).expect("generated mountinfo parses");
        prop_assert_eq!(parsed.len(), mounts.len());
        for (entry, m) in parsed.iter().zip(&mounts) {
            prop_assert_eq!(entry.mount_id, m.id);
            prop_assert_eq!(entry.parent_id, m.parent);
            prop_assert_eq!(entry.device, m.device);
            prop_assert_eq!(entry.root().as_os_str().as_bytes(), &m.root[..]);
            prop_assert_eq!(entry.mount_point().as_os_str().as_bytes(), &m.point[..]);
            prop_assert_eq!(entry.mount_options().as_bytes(), m.options.as_bytes());
            prop_assert_eq!(entry.optional_fields().map(|f| f.to_string()).collect::<Vec<_>>(), m.optional.clone());
            prop_assert_eq!(entry.fs_type().as_bytes(), m.fs_type.as_bytes());
            prop_assert_eq!(entry.source().as_bytes(), &m.source[..]);
            prop_assert_eq!(entry.super_options().as_bytes(), m.super_options.as_bytes());
            prop_assert_eq!(entry.to_line(), m.line());
        }
    }

    #[test]
    fn covering_matches_a_component_wise_reference(
        points in prop::collection::vec("(/[ab]{1,2}){0,3}", 1..8),
        path in "(/[ab]{1,2}){0,4}",
    ) {
        let mut text = String::new();
        for (i, point) in points.iter().enumerate() {
            let point = if point.is_empty() { "/" } else { point };
            text.push_str(&format!("{} 1 0:{i} / {point} rw - tmpfs t rw\n", i + 1));
        }
        let mounts = MountInfo::parse(text.as_bytes()).expect("parse");
        let path = if path.is_empty() { "/".to_owned() } else { path };
        let components = |p: &str| p.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let target = components(&path);
        // Reference: the longest mount point whose components prefix the
        // path's; the later one on a tie.
        let expected = mounts
            .iter()
            .filter(|m| target.starts_with(&components(m.mount_point().to_str().expect("ascii"))))
            .max_by_key(|m| (components(m.mount_point().to_str().expect("ascii")).len(), m.mount_id))
            .map(|m| m.mount_id);
        prop_assert_eq!(mounts.covering(&path).map(|m| m.mount_id), expected);
    }

    #[test]
    fn lock_records_round_trip_through_display(records in prop::collection::vec(lock_record(), 0..16)) {
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        let parsed = ProcLocks::parse(text.as_bytes()).expect("formatted records parse");
        prop_assert_eq!(parsed.records(), &records[..]);
    }

    #[test]
    fn lock_key_round_trips(major in any::<u32>(), minor in any::<u32>(), inode in any::<u64>()) {
        let key = LockKey::new(Device::new(major, minor), inode);
        prop_assert_eq!(LockKey::parse(key.to_string().as_bytes()), Some(key));
    }

    #[test]
    fn cpulist_round_trips(cpus in prop::collection::btree_set(0u32..300, 0..64)) {
        let list: CpuList = cpus.iter().copied().collect();
        let parsed: CpuList = list.to_string().parse().expect("formatted list parses");
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), cpus.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(parsed.len(), cpus.len());
        for cpu in 0..300 {
            prop_assert_eq!(parsed.contains(cpu), cpus.contains(&cpu));
        }
    }

    #[test]
    fn cpulist_intersection_matches_sets(
        a in prop::collection::btree_set(0u32..100, 0..40),
        b in prop::collection::btree_set(0u32..100, 0..40),
    ) {
        let (la, lb): (CpuList, CpuList) = (a.iter().copied().collect(), b.iter().copied().collect());
        let expected: Vec<u32> = a.intersection(&b).copied().collect();
        prop_assert_eq!(la.intersection(&lb).iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn cmdline_display_never_exceeds_width(raw in prop::collection::vec(any::<u8>(), 0..200), width in 0usize..60) {
        if let Some(cmd) = Cmdline::parse(&raw) {
            let shown = cmd.display(width);
            prop_assert!(shown.chars().count() <= width);
            prop_assert!(!shown.chars().any(char::is_control));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = MountInfo::parse(&raw);
        let _ = ProcLocks::parse(&raw);
        let _ = FdInfo::parse(&raw);
        let _ = CpuList::parse(&raw);
        let _ = Cmdline::parse(&raw).map(|c| c.display(40));
    }

    #[test]
    fn near_valid_lines_never_panic(
        line in "[0-9]{1,3}:( {1,3}->)? (FLOCK|POSIX|OFDLCK|LEASE|X) +(ADVISORY|ACTIVE|\\*NOINODE\\*) +(READ|WRITE) -?[0-9]{1,12} [0-9a-f:<>none]{0,14} [0-9-]{0,21} (EOF|[0-9]{0,21})",
        mount in "[0-9 ]{0,8}[0-9]{1,3}:[0-9]{1,3} [/a-z\\\\0-7 ]{0,12} (- )?[a-z ]{0,10}",
        cpus in "[0-9,\\- ]{0,16}",
    ) {
        let _ = ProcLocks::parse(line.as_bytes());
        let _ = FdInfo::parse(format!("pos:\t0\nflags:\t0\nlock:\t{line}\n").as_bytes());
        let _ = MountInfo::parse(mount.as_bytes());
        let _ = CpuList::parse(cpus.as_bytes());
    }
}
