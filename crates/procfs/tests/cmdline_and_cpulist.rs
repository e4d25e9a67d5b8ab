//! Command lines and CPU lists.

use std::ffi::OsStr;

use lockyard_procfs::{Cmdline, CpuList, Error, Reason};

#[test]
fn cmdline_splits_nul_terminated_arguments() {
    let cmd = Cmdline::parse(b"flock\0-x\0/tmp/a b\0sleep\0\0").expect("non-empty");
    let args: Vec<&OsStr> = cmd.args().collect();
    assert_eq!(args, ["flock", "-x", "/tmp/a b", "sleep", ""]);
    assert_eq!(cmd.program(), "flock");
    assert_eq!(cmd.display(100), "flock -x /tmp/a b sleep");
}

#[test]
fn empty_cmdline_is_a_distinct_case() {
    assert_eq!(Cmdline::parse(b""), None);
    let only_nul = Cmdline::parse(b"\0").expect("one empty argument");
    assert_eq!(only_nul.args().count(), 1);
    assert_eq!(only_nul.display(10), "");
}

#[test]
fn cmdline_display_truncates_with_an_ellipsis() {
    let cmd = Cmdline::parse(b"python3\0-c\0import time; time.sleep(1000)\0").expect("non-empty");
    assert_eq!(cmd.display(10), "python3 -…");
    assert_eq!(cmd.display(10).chars().count(), 10);
    assert_eq!(cmd.display(1), "…");
    assert_eq!(cmd.display(0), "");
    let exact = cmd.display(usize::MAX);
    assert_eq!(cmd.display(exact.chars().count()), exact);
}

#[test]
fn cmdline_display_escapes_control_characters_and_bad_utf8() {
    let cmd = Cmdline::parse(b"evil\n\x1b[31mred\0\xff\xfe\0").expect("non-empty");
    assert_eq!(cmd.display(100), "evil\\n\\x1b[31mred \u{fffd}\u{fffd}");
    // An escape sequence is never cut in half.
    assert_eq!(cmd.display(7), "evil\\n…");
    assert_eq!(cmd.display(8), "evil\\n…");
}

#[test]
fn cmdline_display_drops_setproctitle_padding() {
    let mut raw = b"nginx: worker process".to_vec();
    raw.extend_from_slice(&[0; 40]);
    let cmd = Cmdline::parse(&raw).expect("non-empty");
    assert_eq!(cmd.display(80), "nginx: worker process");
}

#[test]
fn cmdline_keeps_non_utf8_arguments_exact() {
    let cmd = Cmdline::parse(b"/bin/x\0\xff\0").expect("non-empty");
    let args: Vec<&[u8]> = cmd.args().map(std::os::unix::ffi::OsStrExt::as_bytes).collect();
    assert_eq!(args, [&b"/bin/x"[..], b"\xff"]);
}

#[test]
fn cpulist_parses_sysfs_forms() {
    let online: CpuList = "0-3,8,10-11\n".parse().expect("parse");
    assert_eq!(online.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 8, 10, 11]);
    assert_eq!(online.len(), 7);
    assert!(online.contains(8) && !online.contains(9) && online.contains(11) && !online.contains(12));
    assert_eq!(online.to_string(), "0-3,8,10-11");
    assert_eq!(online.first(), Some(0));
    assert!(CpuList::parse(b"\n").expect("empty isolated file").is_empty());
    assert_eq!(CpuList::parse(b"").expect("empty").to_string(), "");
}

#[test]
fn cpulist_merges_unordered_and_overlapping_items() {
    let list: CpuList = "8,0-2,1-4,5,7".parse().expect("parse");
    assert_eq!(list.to_string(), "0-5,7-8");
    assert_eq!(list.ranges(), [(0, 5), (7, 8)]);
    let collected: CpuList = [3, 1, 2, 9].into_iter().collect();
    assert_eq!(collected.to_string(), "1-3,9");
}

#[test]
fn cpulist_rejects_malformed_ranges() {
    for bad in ["3-1", "1,,2", "-2", "1-", "a", "0-15:2/4", " 1, 2", "1048576", "0-4294967295", "1 2"] {
        let err = CpuList::parse(bad.as_bytes()).expect_err(bad);
        assert!(
            matches!(&err, Error::Parse { line: 1, reason: Reason::InvalidField { .. }, .. }),
            "{bad}: {err:?}"
        );
    }
    let err = CpuList::parse(b"0-3,7-5").expect_err("descending");
    assert_eq!(
        err.to_string(),
        "cpu list: line 1: field `cpu range` is \"7-5\", expected an ascending range like 0-3"
    );
}

#[test]
fn cpulist_intersection() {
    let a: CpuList = "0-7,16-23".parse().expect("a");
    let b: CpuList = "4-19".parse().expect("b");
    assert_eq!(a.intersection(&b).to_string(), "4-7,16-19");
    assert!(a.intersection(&CpuList::new()).is_empty());
}
