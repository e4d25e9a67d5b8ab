//! Parsers for the `/proc` files that describe locks and mounts.
//!
//! `lockyard-procfs` turns the kernel's text into typed records and does
//! nothing else: bytes in, records out. Every type is read the same way:
//!
//! - `parse(bytes)`: bytes you have (fixtures, fuzzing, another host's
//!   files); `parse_lenient` where one bad line should not lose the rest;
//! - `read()`: the one file of the running system (`/proc/locks`,
//!   `/proc/self/mountinfo`);
//! - `read_pid(pid)` (`read_fd(pid, fd)` for fdinfo): the file of one
//!   process;
//! - `read_from(path)`: any path (a copy, a sysfs CPU list).
//!
//! | file | type |
//! |---|---|
//! | `/proc/self/mountinfo`, `/proc/PID/mountinfo` | [`MountInfo`], [`MountEntry`] |
//! | `/proc/locks` | [`ProcLocks`], [`LockRecord`], [`LockKey`] |
//! | `/proc/PID/fdinfo/FD` | [`FdInfo`] |
//! | `/proc/PID/cmdline` | [`Cmdline`] |
//! | `/proc/PID/stat` (pid, state, parent, start time) | [`ProcessStat`] |
//! | `/proc`, `/proc/PID/fd` (processes, descriptors) | [`pids`], [`Descriptors`] |
//! | CPU lists (`0-3,8`) in sysfs and `status` | [`CpuList`] |
//!
//! ```
//! use lockyard_procfs::{LockKey, MountInfo, ProcLocks};
//!
//! let mounts = MountInfo::parse(b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")?;
//! let locks = ProcLocks::parse(b"1: FLOCK  ADVISORY  WRITE 1632 fe:00:10010710 0 EOF\n")?;
//!
//! // The file's mount gives the device /proc/locks uses; its inode the rest.
//! let root = mounts.by_id(27).expect("mount 27 is listed");
//! let key = LockKey::new(root.device, 10010710);
//! assert_eq!(key.to_string(), "fe:00:10010710");
//! assert_eq!(locks.on(key).count(), 1);
//! # Ok::<(), lockyard_procfs::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - Paths stay bytes (`&Path`, `&OsStr`); nothing is decoded lossily
//!   except in explicitly display-oriented methods such as
//!   [`Cmdline::display`].
//! - Malformed input returns an [`Error`] naming the file, the line and
//!   what was wrong; no input makes a parser panic (fuzzed and
//!   property-tested).
//! - Lock kinds, modes and mountinfo optional fields that a future kernel
//!   may add are kept as `Other` values rather than rejected.
//! - With the `serde` feature, every record implements `Serialize`; paths
//!   serialize as strings when they are UTF-8 and as byte arrays otherwise.

#![warn(missing_docs)]

mod cmdline;
mod cpulist;
mod digits;
mod error;
mod fdinfo;
mod locks;
mod mountinfo;
mod process;
#[cfg(feature = "serde")]
mod serde_bytes;
mod stat;

pub use cmdline::Cmdline;
pub use cpulist::CpuList;
pub use error::{Error, Reason, Shown};
pub use fdinfo::FdInfo;
pub use locks::{Device, LockKey, LockRecord, ProcLocks, RecordKind, RecordMode, RecordQualifier};
pub use mountinfo::{MountEntry, MountInfo, OptionalField, Options};
pub use process::{Descriptors, OpenFile, pids};
pub use stat::ProcessStat;

use std::path::Path;

/// Lines of a /proc file with their 0-based index; a missing final newline
/// is tolerated and a final empty line is not a line.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        Some(line)
    })
    .enumerate()
}

/// Read a whole /proc file with plain `read` calls. Procfs reports a size
/// of 0, so `read_to_end`'s size probe (`statx` + `lseek` per file) buys
/// nothing; skipping it matters when thousands of fdinfo files are read.
fn read_all(path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::read(path, e))?;
    process::read_to_end(file).map_err(|e| Error::read(path, e))
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
