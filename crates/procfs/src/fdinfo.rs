//! `/proc/PID/fdinfo/FD`: what the kernel knows about one open descriptor.
//!
//! ```text
//! pos:    0
//! flags:  02100002
//! mnt_id: 27
//! ino:    10010710
//! lock:   1: FLOCK  ADVISORY  WRITE 1632 fe:00:10010710 0 EOF
//! ```
//!
//! (The kernel separates key and value with a tab.) `lock:` lines use the grammar of `/proc/locks` and list the locks owned
//! through this descriptor: every flock and OFD lock of its open file
//! description (so every process sharing the description by `fork` or
//! `SCM_RIGHTS` shows it) and the POSIX locks of this process on the file.
//! That makes fdinfo the one exact source of "who holds this lock".
//! Other keys (eventfd counts, inotify watches, epoll items...) are skipped.

use std::path::Path;

use crate::digits;
use crate::error::{Error, invalid, missing};
use crate::locks::{self, LockRecord};

const FORMAT: &str = "fdinfo";

/// The parsed contents of one fdinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FdInfo {
    /// File offset.
    pub pos: u64,
    /// The open flags (`O_RDWR`, `O_CLOEXEC`, ...) as the kernel keeps them.
    pub flags: u32,
    /// Id of the mount the file was opened through (Linux 3.15+), matching
    /// [`crate::MountEntry::mount_id`].
    pub mnt_id: Option<u64>,
    /// Inode number (Linux 5.10+).
    pub ino: Option<u64>,
    /// Locks owned through this descriptor.
    pub locks: Vec<LockRecord>,
}

impl FdInfo {
    /// `O_CLOEXEC` as fdinfo's `flags:` reports it.
    pub const O_CLOEXEC: u32 = 0o2_000_000;

    /// Parse the contents of an fdinfo file.
    ///
    /// # Errors
    /// [`Error::Parse`] if `pos` or `flags` is missing, or a known key has a
    /// malformed value.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut pos = None;
        let mut flags = None;
        let mut mnt_id = None;
        let mut ino = None;
        let mut lock_lines = Vec::new();
        for (index, line) in crate::lines(bytes) {
            let line_no = index + 1;
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, value) = (&line[..colon], trim(&line[colon + 1..]));
            let number = |parse: fn(&[u8]) -> Option<u64>, field, expected| {
                parse(value).ok_or_else(|| invalid(FORMAT, line_no, field, value, expected))
            };
            match key {
                b"pos" => pos = Some(number(digits::dec_u64, "pos", "a decimal offset")?),
                b"flags" => {
                    flags = Some(
                        digits::oct_u32(value)
                            .ok_or_else(|| invalid(FORMAT, line_no, "flags", value, "octal flags"))?,
                    );
                }
                b"mnt_id" => mnt_id = Some(number(digits::dec_u64, "mnt_id", "a decimal mount id")?),
                b"ino" => ino = Some(number(digits::dec_u64, "ino", "a decimal inode number")?),
                b"lock" => lock_lines.push(locks::parse_line(value, line_no, FORMAT)?),
                _ => {}
            }
        }
        Ok(FdInfo {
            pos: pos.ok_or_else(|| missing(FORMAT, 1, "pos"))?,
            flags: flags.ok_or_else(|| missing(FORMAT, 1, "flags"))?,
            mnt_id,
            ino,
            locks: lock_lines,
        })
    }

    /// Read and parse an fdinfo file.
    ///
    /// # Errors
    /// [`Error::Read`] (check [`Error::is_not_found`]: descriptors close and
    /// processes exit while being inspected) or [`Error::Parse`].
    pub fn read_from(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&crate::read_all(path)?).map_err(|e| e.in_file(path))
    }

    /// Read `/proc/PID/fdinfo/FD`.
    ///
    /// # Errors
    /// As [`FdInfo::read_from`].
    pub fn read_fd(pid: u32, fd: u32) -> Result<Self, Error> {
        Self::read_from(format!("/proc/{pid}/fdinfo/{fd}"))
    }

    /// Whether the descriptor is closed on `exec`.
    pub fn is_cloexec(&self) -> bool {
        self.flags & Self::O_CLOEXEC != 0
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}
