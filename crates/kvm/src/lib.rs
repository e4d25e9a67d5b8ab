//! KVM preflight and kernel-image resolution, for test harnesses that boot
//! VMs on a shared host.
//!
//! Before booting, a harness wants two answers in milliseconds: can this
//! user use KVM (and if not, is it host pressure to skip on, or a
//! misconfiguration to fail on), and which kernel image will it boot.
//!
//! # Preflight
//!
//! [`Preflight::run`] checks, in order, stopping at the first failure:
//!
//! 1. **device**: the path (default `/dev/kvm`) must be the KVM character
//!    device, 10:232. It is `stat`ed before it is opened, so a regular
//!    file, FIFO or another device is named as such and never opened.
//!    Then it must open read-write. Failures are typed:
//!    [`PreflightError::Absent`] (with what `/sys/module` and the CPU
//!    flags say), [`PreflightError::NotKvm`],
//!    [`PreflightError::PermissionDenied`] (with the device's group and
//!    whether we are in it), [`PreflightError::Transient`] for `ENOMEM`,
//!    `EBUSY`, `EMFILE`, `ENFILE`, `EAGAIN` (with a [`HostSnapshot`]), and
//!    [`PreflightError::Other`] naming the errno.
//! 2. **api version**: `KVM_GET_API_VERSION` must be 12.
//! 3. **create vm**: `KVM_CREATE_VM` must succeed (a device that opens
//!    but cannot create VMs fails here; host pressure is again
//!    transient).
//! 4. **capabilities**: each requested `KVM_CHECK_EXTENSION` is reported,
//!    a warning when absent.
//!
//! [`PreflightError::is_transient`] tells "skip and retry" from "fail"
//! without matching message text. The ioctls live in one small module.
//!
//! # Kernel images
//!
//! A [`Resolver`] tries its [`Source`]s in order: an explicit image (a
//! missing or unbootable one is an error, never a fallback), a lockyard
//! cache entry (whose reader lock the result then holds), kernel build
//! trees, and the installed kernel of a release. Every candidate is
//! opened and its header checked ([`image`]); the result, or
//! [`ResolveError::Unavailable`], lists every candidate passed over with
//! why.
//!
//! The library reads no environment variables: device paths, cache roots
//! and search directories are values from the caller.
//!
//! # Features
//!
//! `resolve` (on by default) is kernel resolution, which builds on
//! lockyard-cache. Without it (`default-features = false`) the crate is
//! preflight and image inspection alone, and compiles no cache.
//!
//! # Example
//!
//! Check KVM, skipping on host pressure rather than failing, then find
//! the kernel to boot:
//!
//! ```
//! # #[cfg(feature = "resolve")] {
//! use lockyard_kvm::{Preflight, ResolveError, Resolver, Source};
//!
//! let report = Preflight::new().run();
//! match report.error() {
//!     None => println!("KVM works: {} checks passed", report.checks.len()),
//!     Some(e) if e.is_transient() => println!("host busy, skip this run: {e}"),
//!     Some(e) => println!("no KVM here: {e}; {}", e.remedy()),
//! }
//! let release = lockyard_kvm::running_release();
//! match Resolver::new().source(Source::Installed { root: "/".into(), release }).resolve() {
//!     Ok(found) => println!("boot {}", found.path.display()),
//!     Err(ResolveError::Unavailable { tried }) => println!("no bootable image ({} tried)", tried.len()),
//!     Err(e) => return Err(e.into()),
//! }
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod caps;
mod host;
pub mod image;
#[cfg(feature = "resolve")]
pub mod kernels;
mod preflight;
#[cfg(feature = "resolve")]
mod resolve;
mod spec;
mod sys;

pub use host::HostSnapshot;
pub use image::{Arch, ImageInfo, Rejection};
pub use preflight::{
    API_VERSION, Absence, Access, Capability, Check, DEFAULT_DEVICE, KVM_DEVICE, Preflight, PreflightError,
    Report, Status, open,
};
#[cfg(feature = "resolve")]
pub use resolve::{
    Candidate, ENTRY_IMAGES, ResolveError, Resolved, Resolver, Source, SourceKind, running_release,
};
pub use spec::{KernelSpec, SpecError};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
