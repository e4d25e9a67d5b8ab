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

use crate::digits;
use crate::error::{Error, invalid, missing};

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
        Some(Device {
            major: digits::dec_u32(&bytes[..colon])?,
            minor: digits::dec_u32(&bytes[colon + 1..])?,
        })
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
        let major = digits::hex_u32(parts.next()?)?;
        let minor = digits::hex_u32(parts.next()?)?;
        let inode = digits::dec_u64(parts.next()?)?;
        Some(LockKey::new(Device::new(major, minor), inode))
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}:{}", self.device.major, self.device.minor, self.inode)
    }
}

/// Defines a one-byte enum of the kernel's words for a column, with an
/// `Other` variant for words a future kernel may add.
macro_rules! column {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        #[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A word this crate does not know yet; the record keeps the
            /// text (see [`LockRecord`]'s `*_str` methods).
            Other,
        }

        impl $name {
            fn parse(token: &[u8]) -> Self {
                match token {
                    $($word => $name::$variant,)*
                    _ => $name::Other,
                }
            }

            /// The kernel's word, or `None` for [`Self::Other`].
            pub fn as_str(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some(
                        // The words are ASCII literals.
                        match std::str::from_utf8($word) { Ok(s) => s, Err(_) => "" }
                    ),)*
                    $name::Other => None,
                }
            }
        }
    };
}

column! {
    /// Which mechanism took the lock.
    RecordKind {
        /// `flock(2)`: whole file, owned by the open file description.
        Flock = b"FLOCK",
        /// Process-associated `fcntl(F_SETLK)` byte-range lock.
        Posix = b"POSIX",
        /// Open-file-description `fcntl(F_OFD_SETLK)` byte-range lock.
        Ofd = b"OFDLCK",
        /// A lease (`F_SETLEASE`) or pNFS layout.
        Lease = b"LEASE",
        /// An NFS server delegation.
        Delegation = b"DELEG",
        /// A transient mandatory-locking access check (kernels before 5.15).
        Access = b"ACCESS",
    }
}

column! {
    /// The second column: enforcement for locks, state for leases.
    RecordQualifier {
        /// `ADVISORY`: every lock on kernels since 5.15.
        Advisory = b"ADVISORY",
        /// `MANDATORY`: mandatory locking (removed in 5.15).
        Mandatory = b"MANDATORY",
        /// `*NOINODE*`: a POSIX lock whose inode is gone.
        NoInode = b"*NOINODE*",
        /// `ACTIVE`: a lease not being broken.
        Active = b"ACTIVE",
        /// `BREAKING`: a lease being broken.
        Breaking = b"BREAKING",
        /// `BREAKER`: the placeholder of a process breaking a lease.
        Breaker = b"BREAKER",
    }
}

column! {
    /// Shared or exclusive.
    RecordMode {
        /// `READ`: shared.
        Read = b"READ",
        /// `WRITE`: exclusive.
        Write = b"WRITE",
        /// `UNLCK`: a lease being broken to nothing.
        Unlocked = b"UNLCK",
        /// `NONE`: printed by some kernels for leases with no type.
        None = b"NONE",
    }
}

impl RecordKind {
    /// Whether the kernel prints a byte range for this kind (the fcntl
    /// kinds); other kinds always show `0 EOF`.
    pub fn has_range(self) -> bool {
        matches!(self, RecordKind::Posix | RecordKind::Ofd | RecordKind::Access)
    }

    /// The lower-case name lockyard shows and accepts (`flock`, `posix`,
    /// `ofd`, `lease`, `delegation`, `access`), or `None` for
    /// [`Self::Other`], whose record keeps the kernel's word
    /// ([`LockRecord::kind_name`]).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            RecordKind::Flock => "flock",
            RecordKind::Posix => "posix",
            RecordKind::Ofd => "ofd",
            RecordKind::Lease => "lease",
            RecordKind::Delegation => "delegation",
            RecordKind::Access => "access",
            RecordKind::Other => return None,
        })
    }

    /// The kind whose [`Self::name`] is `name` (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        const KNOWN: [RecordKind; 6] = [
            RecordKind::Flock,
            RecordKind::Posix,
            RecordKind::Ofd,
            RecordKind::Lease,
            RecordKind::Delegation,
            RecordKind::Access,
        ];
        KNOWN.into_iter().find(|k| k.name().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// One line of `/proc/locks`, or one `lock:` line of fdinfo.
///
/// Kept to 64 bytes (a 100k-line /proc/locks is 6 MB of records, not 15):
/// the fields are read through methods, and the text of words this crate
/// does not know is kept aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    ordinal: u64,
    /// Index of the blocking line, `NO_BLOCKER` for none.
    blocker: u32,
    pid: i32,
    key: LockKey,
    start: u64,
    /// Inclusive end, `EOF` for "to the end of the file".
    end: u64,
    depth: u16,
    kind: RecordKind,
    qualifier: RecordQualifier,
    mode: RecordMode,
    has_key: bool,
    unknown: Option<Box<UnknownWords>>,
}

/// The printed words of columns whose value is `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct UnknownWords {
    kind: Box<str>,
    qualifier: Box<str>,
    mode: Box<str>,
}

/// A lock's identity apart from its ordinal, to find a granted lock
/// listed twice ([`ProcLocks::parse_lenient`]).
struct Identity<'a>(&'a LockRecord);

impl Identity<'_> {
    #[allow(clippy::type_complexity)] // A tuple, compared and hashed whole.
    fn fields(
        &self,
    ) -> (i32, LockKey, u64, u64, RecordKind, RecordQualifier, RecordMode, Option<&UnknownWords>) {
        let r = self.0;
        (r.pid, r.key, r.start, r.end, r.kind, r.qualifier, r.mode, r.unknown.as_deref())
    }
}

impl PartialEq for Identity<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for Identity<'_> {}

impl std::hash::Hash for Identity<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fields().hash(state);
    }
}

const NO_BLOCKER: u32 = u32::MAX;
/// The kernel prints `EOF` for `OFFSET_MAX` (`i64::MAX`), so no real end
/// offset reaches `u64::MAX`.
const EOF: u64 = u64::MAX;

impl LockRecord {
    /// The ordinal the kernel printed; a waiter repeats its blocker's.
    pub fn ordinal(&self) -> u64 {
        self.ordinal
    }

    /// How deep in a waiter chain this line is: 0 for a granted lock, 1 for
    /// a waiter on it, 2 for a waiter on that waiter.
    pub fn depth(&self) -> u32 {
        u32::from(self.depth)
    }

    /// Whether this line is a waiter blocked on another lock.
    pub fn is_waiter(&self) -> bool {
        self.depth > 0
    }

    /// For a waiter, the index (in the same listing) of the line it is
    /// blocked on. `None` for granted locks, and for a waiter whose blocker
    /// was not in the listing (the file changed while it was read).
    pub fn blocker(&self) -> Option<usize> {
        (self.blocker != NO_BLOCKER).then_some(self.blocker as usize)
    }

    /// Which mechanism took the lock.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// Advisory/mandatory, or the lease state.
    pub fn qualifier(&self) -> RecordQualifier {
        self.qualifier
    }

    /// Shared or exclusive.
    pub fn mode(&self) -> RecordMode {
        self.mode
    }

    /// The kind as the kernel printed it, known or not.
    pub fn kind_str(&self) -> &str {
        self.kind.as_str().or(self.unknown.as_ref().map(|u| &*u.kind)).unwrap_or_default()
    }

    /// The kind's lower-case name: [`RecordKind::name`], or the kernel's
    /// word in lower case for a kind this crate does not know.
    pub fn kind_name(&self) -> std::borrow::Cow<'static, str> {
        match self.kind.name() {
            Some(name) => name.into(),
            None => self.kind_str().to_ascii_lowercase().into(),
        }
    }

    /// The qualifier as the kernel printed it, known or not.
    pub fn qualifier_str(&self) -> &str {
        self.qualifier.as_str().or(self.unknown.as_ref().map(|u| &*u.qualifier)).unwrap_or_default()
    }

    /// The mode as the kernel printed it, known or not.
    pub fn mode_str(&self) -> &str {
        self.mode.as_str().or(self.unknown.as_ref().map(|u| &*u.mode)).unwrap_or_default()
    }

    /// The mode in lower case, as lslocks shows it (`read`, `write`, or the
    /// kernel's word).
    pub fn mode_name(&self) -> std::borrow::Cow<'static, str> {
        match self.mode {
            RecordMode::Read => "read".into(),
            RecordMode::Write => "write".into(),
            RecordMode::Unlocked => "unlck".into(),
            RecordMode::None => "none".into(),
            RecordMode::Other => self.mode_str().to_ascii_lowercase().into(),
        }
    }

    /// The pid the kernel recorded: `-1` for OFD locks, `0` for an owner
    /// outside the reader's pid namespace. See [`LockRecord::pid_hint`].
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The recorded pid if it names a process in the reader's pid namespace
    /// (not `-1` or `0`). A hint only: see the module docs.
    pub fn pid_hint(&self) -> Option<u32> {
        u32::try_from(self.pid).ok().filter(|&p| p > 0)
    }

    /// The locked file, or `None` when the kernel printed `<none>:0` (the
    /// lock has no inode).
    pub fn key(&self) -> Option<LockKey> {
        self.has_key.then_some(self.key)
    }

    /// First locked byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Last locked byte, inclusive; `None` for `EOF` (to the end of the
    /// file, however it grows).
    pub fn end(&self) -> Option<u64> {
        (self.end != EOF).then_some(self.end)
    }

    /// Parse one line (without the newline, and for fdinfo without the
    /// `lock:\t` prefix). [`LockRecord::blocker`] is left `None`;
    /// [`ProcLocks::parse`] ties waiters to their blockers.
    ///
    /// # Errors
    /// [`Error::Parse`] if a field is missing or malformed.
    pub fn parse_line(line: &[u8], line_no: usize) -> Result<Self, Error> {
        parse_line(line, line_no, FORMAT)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for LockRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("LockRecord", 10)?;
        s.serialize_field("ordinal", &self.ordinal)?;
        s.serialize_field("depth", &self.depth)?;
        s.serialize_field("blocker", &self.blocker())?;
        s.serialize_field("kind", self.kind_str())?;
        s.serialize_field("qualifier", self.qualifier_str())?;
        s.serialize_field("mode", self.mode_str())?;
        s.serialize_field("pid", &self.pid)?;
        s.serialize_field("key", &self.key())?;
        s.serialize_field("start", &self.start)?;
        s.serialize_field("end", &self.end())?;
        s.end()
    }
}

pub(crate) fn parse_line(line: &[u8], line_no: usize, format: &'static str) -> Result<LockRecord, Error> {
    match parse_common(line) {
        Some((record, used)) if used == line.len() => Ok(record),
        _ => parse_any(line, line_no, format),
    }
}

/// The lines that make up nearly all of a real /proc/locks (granted or
/// waiting flock, POSIX and OFD locks), parsed without building errors:
/// `None` sends the line to [`parse_any`], which accepts every form and
/// explains what is wrong with a bad one. Whatever this accepts,
/// `parse_any` parses the same way (a property test checks it).
///
/// `line` may run on past the line; the second value is how much was
/// used, the newline included. Finding the newline as part of the parse
/// saves a separate pass over the file.
#[inline(always)]
fn parse_common(line: &[u8]) -> Option<(LockRecord, usize)> {
    let (ordinal, len) = digits::leading_dec(line)?;
    let rest = line[len..].strip_prefix(b": ")?;
    let (depth, rest) = match rest.strip_prefix(b"-> ") {
        Some(after) => (1, after),
        None => (0, rest),
    };
    let (kind, rest) = if let Some(after) = rest.strip_prefix(b"FLOCK  ADVISORY  ") {
        (RecordKind::Flock, after)
    } else if let Some(after) = rest.strip_prefix(b"POSIX  ADVISORY  ") {
        (RecordKind::Posix, after)
    } else {
        (RecordKind::Ofd, rest.strip_prefix(b"OFDLCK ADVISORY  ")?)
    };
    let mut pos = line.len() - rest.len();
    let (mode, skip) = if rest.starts_with(b"WRITE ") {
        (RecordMode::Write, 6)
    } else if rest.starts_with(b"READ ") {
        (RecordMode::Read, 5)
    } else {
        return None;
    };
    pos += skip;
    let negative = line.get(pos) == Some(&b'-');
    pos += usize::from(negative);
    let (magnitude, len) = digits::leading_dec(&line[pos..])?;
    pos += len;
    let pid = i32::try_from(magnitude).ok()?;
    let pid = if negative { -pid } else { pid };
    pos = expect(line, pos, b' ')?;
    let (major, len) = digits::leading_hex(&line[pos..])?;
    pos = expect(line, pos + len, b':')?;
    let (minor, len) = digits::leading_hex(&line[pos..])?;
    pos = expect(line, pos + len, b':')?;
    let (inode, len) = digits::leading_dec(&line[pos..])?;
    pos = expect(line, pos + len, b' ')?;
    let (start, len) = digits::leading_dec(&line[pos..])?;
    pos = expect(line, pos + len, b' ')?;
    let (end, len) = match line[pos..].strip_prefix(b"EOF") {
        Some(_) => (EOF, 3),
        None => digits::leading_dec(&line[pos..]).filter(|&(end, _)| end != EOF)?,
    };
    pos += len;
    let used = match line.get(pos) {
        None => pos,
        Some(b'\n') => pos + 1,
        Some(_) => return None,
    };
    let record = LockRecord {
        ordinal,
        blocker: NO_BLOCKER,
        pid,
        key: LockKey::new(Device::new(major, minor), inode),
        start,
        end,
        depth,
        kind,
        qualifier: RecordQualifier::Advisory,
        mode,
        has_key: true,
        unknown: None,
    };
    Some((record, used))
}

/// The position after `byte` if `line[pos]` is `byte`.
#[inline]
fn expect(line: &[u8], pos: usize, byte: u8) -> Option<usize> {
    (line.get(pos) == Some(&byte)).then_some(pos + 1)
}

/// Every line form, with an error that says what is wrong.
fn parse_any(line: &[u8], line_no: usize, format: &'static str) -> Result<LockRecord, Error> {
    let mut cur = Cursor { line, pos: 0, line_no, format };
    let ordinal = cur.number("ordinal", "a number followed by `:`")?;
    cur.expect(b':', "ordinal", "a number followed by `:`")?;

    // `N: -> KIND` for a waiter; the spaces before `->` give its depth.
    let spaces = cur.spaces();
    let mut depth = 0;
    if cur.rest().starts_with(b"->") {
        depth = u16::try_from(spaces).unwrap_or(u16::MAX);
        cur.pos += 2;
        cur.spaces();
    }
    // A second arrow where the kind belongs: no kernel writes that, and a
    // kind spelled `->` would print back as a waiter's arrow.
    if cur.rest().starts_with(b"->") {
        return Err(cur.invalid_at(cur.pos, "kind", "a lock kind such as FLOCK after at most one `->`"));
    }

    let words = [cur.word("kind")?, cur.word("qualifier")?, cur.word("mode")?];
    let (kind, qualifier, mode) =
        (RecordKind::parse(words[0]), RecordQualifier::parse(words[1]), RecordMode::parse(words[2]));
    let unknown = (kind == RecordKind::Other
        || qualifier == RecordQualifier::Other
        || mode == RecordMode::Other)
        .then(|| {
            let text = |w: &[u8]| String::from_utf8_lossy(w).into();
            Box::new(UnknownWords { kind: text(words[0]), qualifier: text(words[1]), mode: text(words[2]) })
        });
    let negative = cur.rest().first() == Some(&b'-');
    cur.pos += usize::from(negative);
    let magnitude = cur.number("pid", "a decimal number")?;
    let pid = i64::try_from(magnitude)
        .ok()
        .map(|m| if negative { -m } else { m })
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| cur.invalid_at(cur.pos - 1, "pid", "a decimal number"))?;
    cur.spaces();

    let key = if cur.rest().starts_with(b"<none>") {
        cur.word("device:inode")?;
        None
    } else {
        let key_start = cur.pos;
        let bad_key = |cur: &Cursor<'_>| cur.invalid_at(key_start, "device:inode", "MAJ:MIN:INODE");
        let major = cur.hex().ok_or_else(|| bad_key(&cur))?;
        cur.expect(b':', "device:inode", "MAJ:MIN:INODE").map_err(|_| bad_key(&cur))?;
        let minor = cur.hex().ok_or_else(|| bad_key(&cur))?;
        cur.expect(b':', "device:inode", "MAJ:MIN:INODE").map_err(|_| bad_key(&cur))?;
        let inode = cur.number("device:inode", "MAJ:MIN:INODE").map_err(|_| bad_key(&cur))?;
        if cur.spaces() == 0 {
            return Err(bad_key(&cur));
        }
        Some(LockKey::new(Device::new(major, minor), inode))
    };
    let start = cur.number("start", "a decimal offset")?;
    cur.spaces();
    let end = if cur.rest().starts_with(b"EOF") {
        cur.pos += 3;
        EOF
    } else {
        let at = cur.pos;
        match cur.number("end", "a decimal offset or EOF")? {
            EOF => return Err(cur.invalid_at(at, "end", "a decimal offset or EOF")),
            end => end,
        }
    };
    if cur.pos < line.len() {
        return Err(cur.invalid_at(cur.pos, "end", "the end of the line"));
    }
    Ok(LockRecord {
        ordinal,
        blocker: NO_BLOCKER,
        pid,
        key: key.unwrap_or(LockKey::new(Device::new(0, 0), 0)),
        start,
        end,
        depth,
        kind,
        qualifier,
        mode,
        has_key: key.is_some(),
        unknown,
    })
}

/// A position in one line of `/proc/locks` grammar.
struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
    line_no: usize,
    format: &'static str,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        self.line.get(self.pos..).unwrap_or_default()
    }

    /// Skip the padding between columns; how many bytes were skipped.
    fn spaces(&mut self) -> usize {
        let n = self.rest().iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        self.pos += n;
        n
    }

    /// The next column, and the padding after it.
    fn word(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let rest = self.rest();
        let len = rest.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(rest.len());
        if len == 0 {
            return Err(missing(self.format, self.line_no, field));
        }
        self.pos += len;
        self.spaces();
        Ok(&rest[..len])
    }

    fn number(&mut self, field: &'static str, expected: &'static str) -> Result<u64, Error> {
        match digits::leading_dec(self.rest()) {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None if self.rest().is_empty() => Err(missing(self.format, self.line_no, field)),
            None => Err(self.invalid_at(self.pos, field, expected)),
        }
    }

    /// A hex number (a device's major or minor), at most eight digits.
    fn hex(&mut self) -> Option<u32> {
        let (value, len) = digits::leading_hex(self.rest())?;
        self.pos += len;
        Some(value)
    }

    fn expect(&mut self, byte: u8, field: &'static str, expected: &'static str) -> Result<(), Error> {
        if self.rest().first() == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.invalid_at(self.pos.saturating_sub(1), field, expected))
        }
    }

    /// An error quoting the column that starts at `at`.
    fn invalid_at(&self, at: usize, field: &'static str, expected: &'static str) -> Error {
        let from = self.line[..at.min(self.line.len())]
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .map_or(0, |p| p + 1);
        let tail = &self.line[from..];
        let len = tail.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(tail.len());
        invalid(self.format, self.line_no, field, &tail[..len], expected)
    }
}

impl fmt::Display for LockRecord {
    /// Formats the line as the kernel prints it (column padding included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.ordinal)?;
        if self.depth > 0 {
            write!(f, "{:>width$} ", "->", width = usize::from(self.depth) + 1)?;
        }
        let (kind, qualifier) = (self.kind_str(), self.qualifier_str());
        match self.kind {
            RecordKind::Posix => write!(f, "POSIX  {qualifier:<9} ")?,
            // Padding to 9 and then a space, not to 10: an unknown word
            // longer than the column must still end before the mode.
            RecordKind::Flock | RecordKind::Lease | RecordKind::Delegation => {
                write!(f, "{kind:<5}  {qualifier:<9} ")?;
            }
            _ => write!(f, "{kind} {qualifier:<9} ")?,
        }
        write!(f, "{} {} ", self.mode_str(), self.pid)?;
        match self.key() {
            Some(key) => write!(f, "{key} ")?,
            None => f.write_str("<none>:0 ")?,
        }
        match self.end() {
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
        let mut first = None;
        let locks = Self::parse_with(bytes, &mut |e| {
            first.get_or_insert(e);
            false
        });
        match first {
            Some(e) => Err(e),
            None => Ok(locks),
        }
    }

    /// Parse the contents of `/proc/locks` as a live reader must take
    /// them: the kernel generates the file a page at a time, so under lock
    /// churn one read can show a lock twice (the list moved between two
    /// pages) or not at all. A granted lock repeated with nothing but its
    /// ordinal changed is kept once (with its waiters); a malformed line is
    /// skipped (waiters after it are left unlinked) and handed back, so
    /// one bad line cannot hide every other lock. Missing locks cannot be
    /// seen in one read: callers confirm a "not held" by reading again.
    pub fn parse_lenient(bytes: &[u8]) -> (Self, Vec<Error>) {
        let mut skipped = Vec::new();
        let locks = Self::parse_with(bytes, &mut |e| {
            skipped.push(e);
            true
        });
        (locks.merged(), skipped)
    }

    /// The parser: `bad` is told each malformed line and says whether to
    /// go on.
    fn parse_with(bytes: &[u8], bad: &mut dyn FnMut(Error) -> bool) -> Self {
        let mut records = Vec::with_capacity(bytes.len() / 48 + 1);
        // Index of the latest line at each depth, to tie waiters to the
        // line they wait on.
        let mut latest: Vec<u32> = Vec::new();
        let mut rest = bytes;
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            // Not `parse_line`: moving a record through a `Result` with
            // the large error type costs more than the parse itself.
            let (mut record, used) = match parse_common(rest) {
                Some(found) => found,
                None => {
                    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    let line = &rest[..end];
                    rest = &rest[(end + 1).min(rest.len())..];
                    match parse_any(line, line_no, FORMAT) {
                        Ok(record) => (record, 0),
                        Err(e) => {
                            if !bad(e) {
                                break;
                            }
                            latest.clear();
                            continue;
                        }
                    }
                }
            };
            rest = &rest[used..];
            let depth = usize::from(record.depth);
            if depth > 0 {
                record.blocker = latest
                    .get(depth - 1)
                    .copied()
                    .filter(|&b| {
                        records.get(b as usize).is_some_and(|r: &LockRecord| r.ordinal == record.ordinal)
                    })
                    .unwrap_or(NO_BLOCKER);
            }
            latest.truncate(depth);
            if latest.len() == depth {
                // More than 4 billion locks cannot fit in memory anyway.
                latest.push(u32::try_from(records.len()).unwrap_or(u32::MAX));
            }
            records.push(record);
        }
        ProcLocks { records }
    }

    /// These records with every repeated granted lock (same owner, kind,
    /// mode, file and range; any ordinal) kept once, its repeat's waiters
    /// dropped with it.
    fn merged(self) -> Self {
        // Which granted lines repeat an earlier one; nearly always none,
        // and then the records are kept as they are.
        let mut repeats = vec![false; self.records.len()];
        let mut seen =
            <foldhash::HashSet<Identity<'_>> as foldhash::HashSetExt>::with_capacity(self.records.len());
        for (i, record) in self.records.iter().enumerate() {
            if record.depth == 0 {
                repeats[i] = !seen.insert(Identity(record));
            }
        }
        drop(seen);
        if !repeats.contains(&true) {
            return self;
        }
        let mut index = vec![NO_BLOCKER; self.records.len()];
        let mut records = Vec::with_capacity(self.records.len());
        let mut dropping = false;
        for (i, mut record) in self.records.into_iter().enumerate() {
            if record.depth == 0 {
                dropping = repeats[i];
            }
            if dropping {
                continue;
            }
            if let Some(b) = record.blocker() {
                record.blocker = index[b];
            }
            index[i] = u32::try_from(records.len()).unwrap_or(u32::MAX);
            records.push(record);
        }
        ProcLocks { records }
    }

    /// Read and parse `/proc/locks`.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::Parse`].
    pub fn read() -> Result<Self, Error> {
        Self::read_from(Self::PATH)
    }

    /// Read `/proc/locks` and parse it as [`ProcLocks::parse_lenient`]
    /// does.
    ///
    /// # Errors
    /// [`Error::Read`] only: malformed lines are returned, not fatal.
    pub fn read_lenient() -> Result<(Self, Vec<Error>), Error> {
        let (locks, skipped) = Self::parse_lenient(&crate::read_all(Self::PATH)?);
        Ok((locks, skipped.into_iter().map(|e| e.in_file(Self::PATH)).collect()))
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
        self.records.iter().filter(move |r| r.has_key && r.key == key)
    }

    /// The waiters blocked directly on the line at `index`. Scans every
    /// line: to group all waiters, walk [`ProcLocks::records`] once and use
    /// [`LockRecord::blocker`] instead.
    pub fn waiters_of(&self, index: usize) -> impl Iterator<Item = &LockRecord> {
        self.records.iter().filter(move |r| r.blocker() == Some(index))
    }
}

impl<'a> IntoIterator for &'a ProcLocks {
    type Item = &'a LockRecord;
    type IntoIter = std::slice::Iter<'a, LockRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_live_read_skips_a_bad_line_and_keeps_a_repeated_lock_once() {
        // As one read under churn can come out: lock 2 printed again (as
        // 3, with its waiter) after the list moved between two pages, and
        // one garbled line.
        let text = b"1: FLOCK  ADVISORY  WRITE 100 00:2d:7 0 EOF\n\
2: POSIX  ADVISORY  WRITE 200 00:2d:8 0 9\n\
2: -> POSIX  ADVISORY  WRITE 201 00:2d:8 0 9\n\
garbage that is no lock\n\
3: POSIX  ADVISORY  WRITE 200 00:2d:8 0 9\n\
3: -> POSIX  ADVISORY  WRITE 201 00:2d:8 0 9\n\
4: OFDLCK ADVISORY  READ -1 00:2d:9 0 EOF\n";
        assert!(ProcLocks::parse(text).is_err(), "the strict parser still refuses");
        let (locks, skipped) = ProcLocks::parse_lenient(text);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().contains("line 4"), "{}", skipped[0]);
        let seen: Vec<(u64, i32, bool)> =
            locks.iter().map(|r| (r.ordinal(), r.pid(), r.is_waiter())).collect();
        assert_eq!(seen, [(1, 100, false), (2, 200, false), (2, 201, true), (4, -1, false)]);
        assert_eq!(locks.records()[2].blocker(), Some(1), "the kept waiter still points at its lock");
    }

    proptest! {
        /// The fast path is an optimization only: where it accepts a line,
        /// the general parser must read the same record.
        #[test]
        fn fast_path_agrees_with_the_general_parser(
            line in "[0-9]{1,7}: (-> )?(FLOCK  ADVISORY  |POSIX  ADVISORY  |OFDLCK ADVISORY  )(READ|WRITE) -?[0-9]{1,11} [0-9a-f]{1,9}:[0-9a-f]{1,9}:[0-9]{1,21} [0-9]{1,21} (EOF|[0-9]{1,21})\n?",
        ) {
            let general = parse_any(line.trim_end().as_bytes(), 1, FORMAT).ok();
            let fast = parse_common(line.as_bytes()).map(|(record, used)| {
                assert_eq!(used, line.len());
                record
            });
            prop_assert_eq!(fast.as_ref(), general.as_ref());
        }

        #[test]
        fn fast_path_refuses_what_it_does_not_fully_check(line in "[ -~]{0,80}") {
            if let Some((record, used)) = parse_common(line.as_bytes()) {
                let general = parse_any(&line.as_bytes()[..used], 1, FORMAT);
                prop_assert_eq!(Some(record), general.ok());
            }
        }
    }

    #[test]
    fn fast_path_handles_the_kernels_common_lines() {
        for line in [
            &b"1: FLOCK  ADVISORY  READ 1633 fe:00:10010711 0 EOF"[..],
            b"2: POSIX  ADVISORY  READ 1638 fe:00:10010711 100 EOF\n",
            b"3: OFDLCK ADVISORY  WRITE -1 fe:00:10010712 0 9",
            b"4: -> FLOCK  ADVISORY  WRITE 1637 fe:00:10010710 0 EOF",
        ] {
            let (record, used) = parse_common(line).expect("fast path");
            assert_eq!(used, line.len());
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            assert_eq!(Some(record), parse_any(text, 1, FORMAT).ok());
        }
        // Deeper waiters and leases take the general path.
        assert!(parse_common(b"3:  -> FLOCK  ADVISORY  WRITE 3912 fe:00:1 0 EOF").is_none());
        assert!(parse_common(b"6: LEASE  ACTIVE    READ 4029 fe:00:1 0 EOF").is_none());
        assert!(parse_common(b"1: FLOCK  ADVISORY  READ 1 fe:00:1 0 EOFX").is_none());
    }

    #[test]
    fn an_unknown_word_wider_than_its_column_still_prints_apart() {
        // Found by the proc_locks fuzz target: a 15-byte qualifier ran
        // into the mode, and the printed line no longer parsed.
        let line = b"3: FLOCK  ADVISORY_PLUS  READ 3914 fe:00:10010897 0 EOF";
        let record = parse_any(line, 1, FORMAT).expect("parse");
        let printed = record.to_string();
        assert_eq!(printed, "3: FLOCK  ADVISORY_PLUS READ 3914 fe:00:10010897 0 EOF");
        assert_eq!(parse_any(printed.as_bytes(), 1, FORMAT).expect("reparse"), record);
        let known = parse_any(b"1: FLOCK  ADVISORY  READ 1 fe:00:1 0 EOF", 1, FORMAT).expect("known");
        assert_eq!(known.to_string(), "1: FLOCK  ADVISORY  READ 1 fe:00:1 0 EOF");
    }
}
