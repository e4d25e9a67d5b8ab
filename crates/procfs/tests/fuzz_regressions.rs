//! Inputs the fuzzers found, kept so the bugs they showed stay fixed.

use lockyard_procfs::{LockRecord, ProcLocks};

/// The whole-file parser and the per-line parser must agree on every line.
fn agree(data: &[u8]) {
    let Ok(locks) = ProcLocks::parse(data) else { return };
    let lines = data.strip_suffix(b"\n").unwrap_or(data).split(|&b| b == b'\n');
    for ((line_no, line), record) in lines.enumerate().zip(locks.iter()) {
        let general = LockRecord::parse_line(line, line_no + 1).expect("the general parser accepts the line");
        assert_eq!(
            (record.ordinal(), record.depth(), record.kind_str(), record.qualifier_str(), record.mode_str()),
            (
                general.ordinal(),
                general.depth(),
                general.kind_str(),
                general.qualifier_str(),
                general.mode_str()
            ),
            "line {}: {:?}",
            line_no + 1,
            String::from_utf8_lossy(line)
        );
        // And a record prints back to a line that parses the same.
        let printed = record.to_string();
        let again = LockRecord::parse_line(printed.as_bytes(), 1).expect("a printed record parses");
        assert_eq!(
            (record.depth(), record.kind_str(), record.qualifier_str(), record.mode_str(), record.pid()),
            (again.depth(), again.kind_str(), again.qualifier_str(), again.mode_str(), again.pid()),
            "{printed:?}"
        );
    }
}

#[test]
fn an_arrow_without_a_space_after_the_colon() {
    agree(include_bytes!("fixtures/fuzz/proc_locks-arrow-after-colon"));
}
