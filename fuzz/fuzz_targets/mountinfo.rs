//! Arbitrary bytes as /proc/PID/mountinfo: never panic, and every entry
//! that parsed prints back to a line that parses to the same entry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::{MountEntry, MountInfo};

fuzz_target!(|data: &[u8]| {
    let Ok(mounts) = MountInfo::parse(data) else { return };
    for entry in mounts.iter() {
        let line = entry.to_line();
        let again = MountEntry::parse_line(&line, 1).expect("a printed entry parses");
        assert_eq!(&again, entry, "round trip through {:?}", String::from_utf8_lossy(&line));
        let _ = mounts.covering(entry.mount_point());
        let _ = mounts.by_device(entry.device).count();
    }
});
