//! Arbitrary bytes as /proc/PID/fdinfo/FD: never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::FdInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = FdInfo::parse(data) {
        let _ = info.is_cloexec();
        for lock in &info.locks {
            let _ = lock.to_string();
        }
    }
});
