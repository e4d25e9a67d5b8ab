//! Preflight against this host's real /dev/kvm, and each errno class
//! through paths made to fail that way.

#![allow(clippy::print_stderr)]

use lockyard_test_support::Scratch;
use std::path::Path;

use lockyard_kvm::{Capability, Preflight, PreflightError, Status};

fn failure(device: &Path) -> PreflightError {
    let report = Preflight::new().device(device).run();
    assert!(!report.passed());
    assert_eq!(report.checks.last().expect("a check").status, Status::Fail);
    report.error().expect("an error").clone()
}

#[test]
fn the_real_device_passes_with_api_12_and_a_vm() {
    if !Path::new("/dev/kvm").exists() {
        lockyard_test_support::skip("this machine has no /dev/kvm");
        return;
    }
    let report = Preflight::new()
        .capability(Capability::parse("KVM_CAP_USER_MEMORY").expect("known"))
        .capability(Capability::parse("irqchip").expect("case and prefix are optional"))
        .run();
    assert!(report.passed(), "{report:?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["device", "api version", "create vm", "capability USER_MEMORY", "capability IRQCHIP"]);
    assert_eq!(report.checks[1].value, Some(12));
    assert!(report.checks.iter().all(|c| c.status == Status::Pass), "{report:?}");
}

#[test]
fn capabilities_are_parsed_by_name_or_number() {
    assert_eq!(Capability::parse("9").expect("number").name(), "NR_VCPUS");
    assert_eq!(Capability::parse("kvm_cap_nr_vcpus").expect("name").name(), "NR_VCPUS");
    assert_eq!(Capability::parse("100000").expect("unknown numbers are fine").name(), "100000");
    let err = Capability::parse("NO_SUCH_THING").expect_err("unknown name");
    assert!(matches!(err, PreflightError::UnknownCapability { .. }), "{err}");
}

#[test]
fn each_wrong_kind_of_path_is_named_and_never_opened() {
    let dir = Scratch::new("paths");
    let err = failure(&dir.0.join("missing"));
    assert!(matches!(err, PreflightError::Absent { .. }), "{err}");
    assert!(!err.is_transient());

    let file = dir.0.join("file");
    std::fs::write(&file, "").expect("file");
    let err = failure(&file);
    assert!(matches!(&err, PreflightError::NotKvm { found, .. } if found == "a regular file"), "{err}");

    let fifo = dir.0.join("fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).expect("mkfifo");
    // A FIFO opened for reading would block forever: returning at all
    // shows it was not opened.
    let err = failure(&fifo);
    assert!(matches!(&err, PreflightError::NotKvm { found, .. } if found == "a FIFO"), "{err}");

    let err = failure(Path::new("/dev/null"));
    assert!(matches!(&err, PreflightError::NotKvm { found, .. } if found == "character device 1:3"), "{err}");
    assert!(err.to_string().contains("10:232"), "{err}");

    let err = failure(&dir.0);
    assert!(matches!(&err, PreflightError::NotKvm { found, .. } if found == "a directory"), "{err}");
}

#[test]
fn a_kvm_node_made_with_mknod_works_like_the_real_one() {
    if !Path::new("/dev/kvm").exists() || !rustix::process::geteuid().is_root() {
        lockyard_test_support::skip("needs /dev/kvm and root (to mknod)");
        return;
    }
    let dir = Scratch::new("mknod");
    let node = dir.0.join("kvm");
    let dev = rustix::fs::makedev(10, 232);
    rustix::fs::mknodat(rustix::fs::CWD, &node, rustix::fs::FileType::CharacterDevice, 0o600.into(), dev)
        .expect("mknod");
    let report = Preflight::new().device(&node).run();
    if report.error().is_some_and(|e| matches!(e, PreflightError::PermissionDenied { .. })) {
        lockyard_test_support::skip("the temporary directory is mounted nodev");
        return;
    }
    assert!(report.passed(), "{report:?}");
}
