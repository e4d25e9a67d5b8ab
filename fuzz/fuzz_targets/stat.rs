//! Arbitrary bytes as /proc/PID/stat: never panic (the command name may
//! hold spaces and parentheses).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::ProcessStat;

fuzz_target!(|data: &[u8]| {
    if let Ok(stat) = ProcessStat::parse(data) {
        let _ = stat.comm();
    }
});
