//! The three KVM ioctls preflight needs, and the only unsafe code in the
//! crate. Each takes a descriptor borrowed for the call, so it is open
//! throughout; none passes a pointer.
//!
//! Not rust-vmm's `kvm-ioctls`: preflight opens the device itself (after
//! checking what the path is, and without blocking on a node swapped in
//! since), and `kvm-ioctls` only adopts a descriptor it did not open
//! through an `unsafe` `from_raw_fd`, so one unsafe call would replace
//! these three while the crate gained `kvm-bindings` and `vmm-sys-util`
//! for three argument-less requests.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

/// `_IO(KVMIO, n)` with `KVMIO = 0xAE`: no direction bits, no size.
const fn kvm_io(nr: libc::Ioctl) -> libc::Ioctl {
    (0xAE << 8) | nr
}

const KVM_GET_API_VERSION: libc::Ioctl = kvm_io(0x00);
const KVM_CREATE_VM: libc::Ioctl = kvm_io(0x01);
const KVM_CHECK_EXTENSION: libc::Ioctl = kvm_io(0x03);

fn result(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(ret)
    }
}

/// `KVM_GET_API_VERSION`: 12 on every kernel since 2.6.22.
pub(crate) fn api_version(kvm: BorrowedFd<'_>) -> Result<i32, Errno> {
    // SAFETY: the request takes no argument (the 0 is ignored) and writes
    // no memory; `kvm` is a live descriptor for the whole call.
    result(unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) })
}

/// `KVM_CREATE_VM` with the default machine type; the VM is closed when
/// the returned descriptor drops.
pub(crate) fn create_vm(kvm: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: the argument is the machine type by value (0: default), no
    // memory is passed; `kvm` is live for the call.
    let fd = result(unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) })?;
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns; it is wrapped exactly once, here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `KVM_CHECK_EXTENSION`: 0 if `cap` is unsupported, else a positive
/// value (often 1; for some capabilities a count or limit).
pub(crate) fn check_extension(kvm: BorrowedFd<'_>, cap: u32) -> Result<i32, Errno> {
    // SAFETY: the argument is the capability number by value; no memory
    // is passed; `kvm` is live for the call.
    result(unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CHECK_EXTENSION, libc::c_ulong::from(cap)) })
}
