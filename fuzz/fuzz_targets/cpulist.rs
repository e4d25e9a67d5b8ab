//! Arbitrary bytes as a kernel CPU list: never panic, and a parsed list
//! prints back to a list that parses to the same CPUs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::CpuList;

fuzz_target!(|data: &[u8]| {
    let Ok(cpus) = CpuList::parse(data) else { return };
    let printed = cpus.to_string();
    let again = CpuList::parse(printed.as_bytes()).expect("a printed list parses");
    assert_eq!(again, cpus, "round trip through {printed:?}");
    assert_eq!(cpus.iter().count(), cpus.len());
});
