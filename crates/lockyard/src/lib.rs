//! lockyard: crash-safe locks for processes sharing one Linux host.
//!
//! This crate re-exports the library crates, each usable alone, and adds
//! nothing of its own:
//!
//! - [`procfs`] (`lockyard-procfs`): parsers for mountinfo, `/proc/locks`,
//!   fdinfo, cmdline and CPU lists.
//! - [`flock`] (`lockyard-flock`): hardened lock files, flock/OFD locks,
//!   prompt cancellable waits, exact holders, pidfiles, the host-wide lock
//!   listing.
//! - [`cache`] (`lockyard-cache`): crash-safe shared on-disk cache; its
//!   remote tier on S3 or a shared directory comes with the `remote`
//!   feature.
//! - [`kvm`] (`lockyard-kvm`): KVM preflight and kernel-image resolution.
//! - [`topo`] (`lockyard-topo`): host CPU topology and reservations.
//!
//! The `lockyard` command is the `lockyard-cli` package; depending on this
//! crate compiles none of it.
//!
//! ```
//! use lockyard::flock::{LockFile, LockOptions};
//!
//! let dir = std::env::temp_dir().join(format!("lockyard-facade-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let file = LockFile::with_options(dir.join("job.lock"), LockOptions::new().exclusive())?;
//! let held = file.try_lock()?.expect("nobody else holds it");
//! drop(held);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub use lockyard_cache as cache;
pub use lockyard_flock as flock;
pub use lockyard_kvm as kvm;
pub use lockyard_procfs as procfs;
pub use lockyard_topo as topo;
