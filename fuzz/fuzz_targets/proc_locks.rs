//! Arbitrary bytes as /proc/locks: never panic; the fast path and the
//! general per-line parser agree on every line; records print back to
//! lines that parse to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::{LockRecord, ProcLocks};

fuzz_target!(|data: &[u8]| {
    let Ok(locks) = ProcLocks::parse(data) else { return };
    let lines = data.strip_suffix(b"\n").unwrap_or(data).split(|&b| b == b'\n');
    let mut count = 0;
    for ((line_no, line), record) in lines.enumerate().zip(locks.iter()) {
        count += 1;
        let general = LockRecord::parse_line(line, line_no + 1).expect("the general parser accepts the line");
        assert_same(record, &general);
        let printed = record.to_string();
        let again = LockRecord::parse_line(printed.as_bytes(), 1).expect("a printed record parses");
        assert_same(record, &again);
        if let Some(blocker) = record.blocker() {
            assert!(blocker < locks.len());
            assert_eq!(locks.records()[blocker].depth() + 1, record.depth());
        }
    }
    assert_eq!(count, locks.len(), "one record per line");
});

/// Everything but the blocker, which only the whole-file parse can know.
fn assert_same(a: &LockRecord, b: &LockRecord) {
    assert_eq!(
        (a.ordinal(), a.depth(), a.kind_str(), a.qualifier_str(), a.mode_str()),
        (b.ordinal(), b.depth(), b.kind_str(), b.qualifier_str(), b.mode_str())
    );
    assert_eq!((a.pid(), a.key(), a.start(), a.end()), (b.pid(), b.key(), b.start(), b.end()));
}
