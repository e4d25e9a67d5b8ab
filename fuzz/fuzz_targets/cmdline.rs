//! Arbitrary bytes as /proc/PID/cmdline: never panic, and the display
//! form never exceeds its width or carries a control character.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockyard_procfs::Cmdline;

fuzz_target!(|data: &[u8]| {
    let Some(cmdline) = Cmdline::parse(data) else { return };
    let _ = cmdline.program();
    let _ = cmdline.args().count();
    for width in [0, 1, 3, 16, 80, usize::MAX] {
        let shown = cmdline.display(width);
        assert!(shown.chars().count() <= width, "{shown:?} wider than {width}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
});
