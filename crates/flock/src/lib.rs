//! Lock files and pidfiles that survive crashes, and the answer to "who
//! holds this?".
//!
//! Every lock here is a kernel advisory lock, which the kernel drops when
//! its holder dies: a crash, a SIGKILL or an OOM kill never leaves anything
//! locked. On top of that the crate keeps the invariants that make lock
//! files trustworthy on a shared host:
//!
//! - **Hardened opens** ([`LockFile`]): relative to a directory descriptor,
//!   never through a symlink, never a FIFO, device or another user's file
//!   in a world-writable directory; `O_CLOEXEC` always, so no lock leaks
//!   into an `exec`ed stranger.
//! - **Never unlink.** Removing a lock file lets two processes each lock a
//!   different inode under the same name. Lock files are never removed,
//!   and after locking, the path is checked to still name the locked inode
//!   (a tmp cleaner may have removed it); if not, the lock is retaken.
//! - **Prompt, bounded waits** ([`Wait`], [`CancelToken`]): a waiter wakes
//!   when the holder closes its descriptor, not after a fixed poll period,
//!   and every wait can time out or be cancelled. No signal handlers.
//! - **Reliable filesystems only** ([`FsPolicy`]): NFS, SMB, CephFS, AFS,
//!   FUSE and other filesystems where locks may silently not exclude are
//!   refused, by `fstatfs` on the locked descriptor.
//! - **Exact holders** ([`holders_of`], [`Snapshot`]): the kernel's
//!   `MAJ:MIN:INODE` is resolved through the file's mount id, which is right
//!   on btrfs, overlayfs and bind mounts where `st_dev` is not; holders can
//!   be attributed through fdinfo, which names OFD holders and children that
//!   inherited a lock.
//! - **Pidfiles** ([`Pidfile`]): the claim is the lock, the pid a label;
//!   never removed; a claimant is signalled through a pidfd only after its
//!   start time proves it is still the process that was read.
//!
//! ```
//! use std::time::Duration;
//! use lockyard_flock::{LockFile, LockOptions};
//!
//! let dir = std::env::temp_dir().join(format!("lockyard-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let file = LockFile::with_options(dir.join("build.lock"), LockOptions::new().exclusive())?;
//! let guard = file.lock_timeout(Duration::from_secs(5))?;
//! // A second attempt sees the lock held.
//! assert!(file.try_lock()?.is_none());
//! drop(guard);
//! assert!(file.try_lock()?.is_some());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
// Values bound only to be logged are unused when logging is compiled out.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

/// Diagnostics through `tracing` with the `tracing` feature (on by
/// default); compiled out without it, for users who want no logging
/// dependency. Every argument is a plain value, so nothing is lost
/// but the message.
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!($($arg)*);
    }};
}

mod error;
mod fs_policy;
pub mod holders;
#[cfg(feature = "serde")]
pub mod json;
pub mod listing;
mod lock;
mod open;
mod pidfile;
mod sys;
mod wait;

pub use error::{Found, LockError, Untrusted};
pub use fs_policy::{FsPolicy, FsType};
pub use holders::{
    Attribution, FileId, Holder, Holders, KeySource, PathHolders, Snapshot, holders_of, holders_of_many,
    in_initial_pid_namespace,
};
pub use lock::{
    Busy, BusyLock, ByteRange, LockDir, LockFile, LockGuard, LockKind, LockMode, LockOptions, Wait,
    lock_descriptor, lock_descriptor_queued, unlock_descriptor,
};
pub use open::DirTrust;
pub use pidfile::{Claimant, PROBE_GRACE, Pidfile, PidfileGuard, PidfileState};
pub use wait::CancelToken;

/// Signals for [`Claimant::signal`].
pub use rustix::process::Signal;

/// The `/proc` parsers this crate builds on.
pub use lockyard_procfs as procfs;
/// The mechanism of a lock as `/proc/locks` shows it ([`Holder::kind`]).
pub use lockyard_procfs::RecordKind;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
