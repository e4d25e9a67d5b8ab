//! `/proc/locks`: every file lock and lease on the host.
//!
//! ```text
//! 1: FLOCK  ADVISORY  READ 1633 fe:00:10010711 0 EOF
//! 2: POSIX  ADVISORY  READ 1638 fe:00:10010711 100 EOF
//! 3: OFDLCK ADVISORY  WRITE -1 fe:00:10010712 0 9
//! 4: FLOCK  ADVISORY  WRITE 1632 fe:00:10010710 0 EOF
//! 4: -> FLOCK  ADVISORY  WRITE 1637 fe:00:10010710 0 EOF
//! ```
//!
//! Each line is an ordinal, the lock's kind (`FLOCK`, `POSIX`, `OFDLCK`,
//! `LEASE`, `DELEG`, historically `ACCESS`), a qualifier (`ADVISORY` or
//! `MANDATORY` for locks, the lease state for leases), the mode, the pid
//! the kernel recorded, `MAJ:MIN:INODE` (major and minor in hex, inode in
//! decimal) and the byte range (`EOF` for "to the end of the file").
//!
//! Lines with `->` are waiters blocked on the lock above them: they repeat
//! that lock's ordinal, and a waiter that itself blocks others is followed
//! by its own waiters one space deeper. [`LockRecord::blocker`] ties each
//! waiter to the line it waits on.
//!
//! The pid is only a hint. It is `-1` for OFD locks, which belong to an
//! open file description rather than a process; it is the pid that took a
//! `flock`, which may have exited while a forked child still holds the
//! descriptor; and it is `0` for a holder outside the reader's pid
//! namespace. The exact holders are found through `/proc/PID/fdinfo`
//! (see [`crate::FdInfo`]).

use std::fmt;
use std::path::Path;

use crate::error::{Error, invalid, missing};
use crate::scan;

const FORMAT: &str = "/proc/locks";

/// A device number split the way the kernel prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Device {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl Device {
    /// A device from its major and minor numbers.
    pub const fn new(major: u32, minor: u32) -> Self {
        Device { major, minor }
    }

    /// Split a `dev_t` as returned by `stat(2)` (glibc's encoding).
    pub const fn from_dev_t(dev: u64) -> Self {
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
        Device { major: major as u32, minor: minor as u32 }
    }

    /// Parse mountinfo's decimal `major:minor`.
    pub(crate) fn parse_decimal(bytes: &[u8]) -> Option<Self> {
        let colon = bytes.iter().position(|&b| b == b':')?;
        Some(Device { major: scan::dec_u32(&bytes[..colon])?, minor: scan::dec_u32(&bytes[colon + 1..])? })
    }
}

/// Formats as mountinfo does: decimal `major:minor`.
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// The kernel's identity of a locked file: its superblock's device and its
/// inode number.
///
/// Formats exactly as `/proc/locks` prints it (`fe:00:10010711`: major and
/// minor as at least two hex digits, inode in decimal), so a needle can be
/// compared with the kernel's text directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LockKey {
    /// The superblock's device (mountinfo's `major:minor`, not always
    /// `stat().st_dev`).
    pub device: Device,
    /// The inode number.
    pub inode: u64,
}

impl LockKey {
    /// A key from its parts.
    pub const fn new(device: Device, inode: u64) -> Self {
        LockKey { device, inode }
    }

    /// Parse the `MAJ:MIN:INODE` text of `/proc/locks`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut parts = bytes.splitn(3, |&b| b == b':');
        let major = scan::hex_u32(parts.next()?)?;
        let minor = scan::hex_u32(parts.next()?)?;
        let inode = scan::dec_u64(parts.next()?)?;
        Some(LockKey::new(Device::new(major, minor), inode))
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}:{}", self.device.major, self.device.minor, self.inode)
    }
}

/// Which mechanism took the lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LockKind {
    /// `flock(2)`: whole file, owned by the open file description.
    Flock,
    /// Process-associated `fcntl(F_SETLK)` byte-range lock.
    Posix,
    /// Open-file-description `fcntl(F_OFD_SETLK)` byte-range lock.
    Ofd,
    /// A lease (`F_SETLEASE`) or pNFS layout.
    Lease,
    /// An NFS server delegation.
    Delegation,
    /// A transient mandatory-locking access check (kernels before 5.15).
    Access,
    /// Something this crate does not know yet, as printed.
    Other(Box<str>),
}

impl LockKind {
    fn parse(token: &[u8]) -> Self {
        match token {
            b"FLOCK" => LockKind::Flock,
            b"POSIX" => LockKind::Posix,
            b"OFDLCK" => LockKind::Ofd,
            b"LEASE" => LockKind::Lease,
            b"DELEG" => LockKind::Delegation,
            b"ACCESS" => LockKind::Access,
            other => LockKind::Other(String::from_utf8_lossy(other).into()),
        }
    }

    /// The kernel's word for this kind.
    pub fn as_str(&self) -> &str {
        match self {
            LockKind::Flock => "FLOCK",
            LockKind::Posix => "POSIX",
            LockKind::Ofd => "OFDLCK",
            LockKind::Lease => "LEASE",
            LockKind::Delegation => "DELEG",
            LockKind::Access => "ACCESS",
            LockKind::Other(s) => s,
        }
    }

    /// Whether the kernel prints a byte range for this kind (the fcntl
    /// kinds); other kinds always show `0 EOF`.
    pub fn has_range(&self) -> bool {
        matches!(self, LockKind::Posix | LockKind::Ofd | LockKind::Access)
    }
}

/// The second column: enforcement for locks, state for leases.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LockQualifier {
    /// `ADVISORY`: every lock on kernels since 5.15.
    Advisory,
    /// `MANDATORY`: mandatory locking (removed in 5.15).
    Mandatory,
    /// `*NOINODE*`: a POSIX lock whose inode is gone.
    NoInode,
    /// `ACTIVE`: a lease not being broken.
    Active,
    /// `BREAKING`: a lease being broken.
    Breaking,
    /// `BREAKER`: the placeholder of a process breaking a lease.
    Breaker,
    /// Something this crate does not know yet, as printed (`UNKNOWN` among
    /// them).
    Other(Box<str>),
}

impl LockQualifier {
    fn parse(token: &[u8]) -> Self {
        match token {
            b"ADVISORY" => LockQualifier::Advisory,
            b"MANDATORY" => LockQualifier::Mandatory,
            b"*NOINODE*" => LockQualifier::NoInode,
            b"ACTIVE" => LockQualifier::Active,
            b"BREAKING" => LockQualifier::Breaking,
            b"BREAKER" => LockQualifier::Breaker,
            other => LockQualifier::Other(String::from_utf8_lossy(other).into()),
        }
    }

    /// The kernel's word for this qualifier.
    pub fn as_str(&self) -> &str {
        match self {
            LockQualifier::Advisory => "ADVISORY",
            LockQualifier::Mandatory => "MANDATORY",
            LockQualifier::NoInode => "*NOINODE*",
            LockQualifier::Active => "ACTIVE",
            LockQualifier::Breaking => "BREAKING",
            LockQualifier::Breaker => "BREAKER",
            LockQualifier::Other(s) => s,
        }
    }
}

/// Shared or exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LockMode {
    /// `READ`: shared.
    Read,
    /// `WRITE`: exclusive.
    Write,
    /// `UNLCK`: a lease being broken to nothing.
    Unlocked,
    /// `NONE`: printed by some kernels for leases with no type.
    None,
    /// Something this crate does not know yet, as printed.
    Other(Box<str>),
}

impl LockMode {
    fn parse(token: &[u8]) -> Self {
        match token {
            b"READ" => LockMode::Read,
            b"WRITE" => LockMode::Write,
            b"UNLCK" => LockMode::Unlocked,
            b"NONE" => LockMode::None,
            other => LockMode::Other(String::from_utf8_lossy(other).into()),
        }
    }

    /// The kernel's word for this mode.
    pub fn as_str(&self) -> &str {
        match self {
            LockMode::Read => "READ",
            LockMode::Write => "WRITE",
            LockMode::Unlocked => "UNLCK",
            LockMode::None => "NONE",
            LockMode::Other(s) => s,
        }
    }
}

/// One line of `/proc/locks`, or one `lock:` line of fdinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LockRecord {
    /// The ordinal the kernel printed; a waiter repeats its blocker's.
    pub ordinal: u64,
    /// How deep in a waiter chain this line is: 0 for a granted lock, 1 for
    /// a waiter on it, 2 for a waiter on that waiter.
    pub depth: u32,
    /// For a waiter, the index (in the same listing) of the line it is
    /// blocked on. `None` for granted locks, and for a waiter whose blocker
    /// was not in the listing (the file changed between reads).
    pub blocker: Option<usize>,
    /// Which mechanism took the lock.
    pub kind: LockKind,
    /// Advisory/mandatory, or the lease state.
    pub qualifier: LockQualifier,
    /// Shared or exclusive.
    pub mode: LockMode,
    /// The pid the kernel recorded: `-1` for OFD locks, `0` for an owner
    /// outside the reader's pid namespace. See [`LockRecord::pid_hint`].
    pub pid: i32,
    /// The locked file, or `None` when the kernel printed `<none>:0` (the
    /// lock has no inode).
    pub key: Option<LockKey>,
    /// First locked byte.
    pub start: u64,
    /// Last locked byte, inclusive; `None` for `EOF` (to the end of the
    /// file, however it grows).
    pub end: Option<u64>,
}

impl LockRecord {
    /// Whether this line is a waiter blocked on another lock.
    pub fn is_waiter(&self) -> bool {
        self.depth > 0
    }

    /// The recorded pid if it names a process in the reader's pid namespace
    /// (not `-1` or `0`). A hint only: see the module docs.
    pub fn pid_hint(&self) -> Option<u32> {
        u32::try_from(self.pid).ok().filter(|&p| p > 0)
    }

    /// Parse one line (without the newline, and for fdinfo without the
    /// `lock:\t` prefix). `blocker` is left `None`; [`ProcLocks::parse`]
    /// fills it in.
    ///
    /// # Errors
    /// [`Error::Parse`] if a field is missing or malformed.
    pub fn parse_line(line: &[u8], line_no: usize) -> Result<Self, Error> {
        parse_line(line, line_no, FORMAT)
    }
}

pub(crate) fn parse_line(line: &[u8], line_no: usize, format: &'static str) -> Result<LockRecord, Error> {
    let mut tokens = Tokens { rest: line, format, line_no };
    let bad = |name, value: &[u8], expected| invalid(format, line_no, name, value, expected);

    let ordinal_field = tokens.need("ordinal")?;
    let ordinal = ordinal_field
        .strip_suffix(b":")
        .and_then(scan::dec_u64)
        .ok_or_else(|| bad("ordinal", ordinal_field, "a number followed by `:`"))?;

    // `N: -> KIND` for a waiter; the spaces before `->` give its depth.
    let spaces = tokens.rest.iter().take_while(|&&b| b == b' ').count();
    let mut kind_field = tokens.need("kind")?;
    let mut depth = 0;
    if kind_field == b"->" {
        depth = u32::try_from(spaces).unwrap_or(u32::MAX);
        kind_field = tokens.need("kind")?;
    }
    let kind = LockKind::parse(kind_field);
    let qualifier = LockQualifier::parse(tokens.need("qualifier")?);
    let mode = LockMode::parse(tokens.need("mode")?);
    let pid_field = tokens.need("pid")?;
    let pid = scan::dec_i32(pid_field).ok_or_else(|| bad("pid", pid_field, "a decimal number"))?;
    let key_field = tokens.need("device:inode")?;
    let key = if key_field.starts_with(b"<none>") {
        None
    } else {
        Some(LockKey::parse(key_field).ok_or_else(|| bad("device:inode", key_field, "MAJ:MIN:INODE"))?)
    };
    let start_field = tokens.need("start")?;
    let start = scan::dec_u64(start_field).ok_or_else(|| bad("start", start_field, "a decimal offset"))?;
    let end_field = tokens.need("end")?;
    let end = match end_field {
        b"EOF" => None,
        digits => Some(scan::dec_u64(digits).ok_or_else(|| bad("end", digits, "a decimal offset or EOF"))?),
    };
    if let Some(extra) = tokens.next() {
        return Err(bad("end", extra, "the end of the line"));
    }
    Ok(LockRecord { ordinal, depth, blocker: None, kind, qualifier, mode, pid, key, start, end })
}

/// Space-separated tokens; runs of spaces count as one separator, as the
/// kernel pads its columns.
struct Tokens<'a> {
    rest: &'a [u8],
    format: &'static str,
    line_no: usize,
}

impl<'a> Tokens<'a> {
    /// The next token, which must be there.
    fn need(&mut self, name: &'static str) -> Result<&'a [u8], Error> {
        self.next().ok_or_else(|| missing(self.format, self.line_no, name))
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ' && b != b'\t')?;
        let rest = &self.rest[start..];
        let len = rest.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(rest.len());
        self.rest = &rest[len..];
        Some(&rest[..len])
    }
}

impl fmt::Display for LockRecord {
    /// Formats the line as the kernel prints it (column padding included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.ordinal)?;
        if self.depth > 0 {
            write!(f, "{:>width$} ", "->", width = self.depth as usize + 1)?;
        }
        match &self.kind {
            LockKind::Posix => f.write_str("POSIX ")?,
            LockKind::Flock | LockKind::Lease => write!(f, "{}  ", self.kind.as_str())?,
            LockKind::Delegation => f.write_str("DELEG  ")?,
            other => f.write_str(other.as_str())?,
        }
        match &self.kind {
            LockKind::Flock | LockKind::Lease | LockKind::Delegation => {
                write!(f, "{:<10}", self.qualifier.as_str())?;
            }
            _ => write!(f, " {:<9} ", self.qualifier.as_str())?,
        }
        write!(f, "{} {} ", self.mode.as_str(), self.pid)?;
        match &self.key {
            Some(key) => write!(f, "{key} ")?,
            None => f.write_str("<none>:0 ")?,
        }
        match self.end {
            Some(end) => write!(f, "{} {end}", self.start),
            None => write!(f, "{} EOF", self.start),
        }
    }
}

/// The parsed contents of `/proc/locks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct ProcLocks {
    records: Vec<LockRecord>,
}

impl ProcLocks {
    /// Where the kernel publishes the host's locks.
    pub const PATH: &'static str = "/proc/locks";

    /// Parse the contents of `/proc/locks`.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the first malformed line. Unknown kinds,
    /// qualifiers and modes are kept as `Other`, not rejected.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut records = Vec::with_capacity(bytes.len() / 48 + 1);
        // Index of the latest line at each depth, to tie waiters to the
        // line they wait on.
        let mut latest: Vec<usize> = Vec::new();
        for (index, line) in crate::lines(bytes) {
            let mut record = parse_line(line, index + 1, FORMAT)?;
            let depth = record.depth as usize;
            if depth > 0 {
                record.blocker = latest
                    .get(depth - 1)
                    .copied()
                    .filter(|&b| records.get(b).is_some_and(|r: &LockRecord| r.ordinal == record.ordinal));
            }
            latest.truncate(depth);
            if latest.len() == depth {
                latest.push(records.len());
            }
            records.push(record);
        }
        Ok(ProcLocks { records })
    }

    /// Read and parse `/proc/locks`.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::Parse`].
    pub fn read() -> Result<Self, Error> {
        Self::read_from(Self::PATH)
    }

    /// Read and parse a file in the format of `/proc/locks`.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::Parse`].
    pub fn read_from(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&crate::read_all(path)?).map_err(|e| e.in_file(path))
    }

    /// Every line, granted locks and waiters, in the kernel's order.
    pub fn records(&self) -> &[LockRecord] {
        &self.records
    }

    /// Iterate over every line.
    pub fn iter(&self) -> std::slice::Iter<'_, LockRecord> {
        self.records.iter()
    }

    /// Number of lines, waiters included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no lock is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Granted locks and waiters on one file.
    pub fn on(&self, key: LockKey) -> impl Iterator<Item = &LockRecord> {
        self.records.iter().filter(move |r| r.key == Some(key))
    }

    /// The waiters blocked directly on the line at `index`.
    pub fn waiters_of(&self, index: usize) -> impl Iterator<Item = &LockRecord> {
        self.records.iter().filter(move |r| r.blocker == Some(index))
    }
}

impl<'a> IntoIterator for &'a ProcLocks {
    type Item = &'a LockRecord;
    type IntoIter = std::slice::Iter<'a, LockRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}
