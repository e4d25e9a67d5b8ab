//! `/proc/PID/mountinfo`: one line per mount in the process's namespace.
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)       (7)   (8) (9)   (10)         (11)
//! ```
//!
//! (1) mount id, (2) parent id, (3) `major:minor` of the superblock (in
//! decimal, unlike `/proc/locks`), (4) root of the mount within its
//! filesystem, (5) mount point, (6) per-mount options, (7) zero or more
//! optional fields ended by (8) a lone `-`, (9) filesystem type, (10) mount
//! source, (11) per-superblock options. Fields are separated by exactly one
//! space; the kernel writes space, tab, newline and backslash inside a field
//! as `\ooo` octal escapes, which [`MountEntry`] decodes. Paths stay bytes:
//! a mount point need not be UTF-8.
//!
//! The `major:minor` here is the superblock's `s_dev`, the very number
//! `/proc/locks` prints, which is why lock holders are matched through
//! mountinfo and not through `stat().st_dev` (btrfs subvolumes, overlayfs
//! and some bind mounts report a different, anonymous device to `stat`).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::digits;
use crate::error::{Error, invalid, missing};
use crate::locks::Device;

const FORMAT: &str = "mountinfo";

/// All mounts of one mount namespace, in the kernel's order (parents before
/// children; of mounts stacked on one mount point, the topmost last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MountInfo {
    entries: Vec<MountEntry>,
}

/// One line of mountinfo.
///
/// The textual fields live in one buffer per entry (parsing a 10k-line
/// file makes one allocation per line, not ten); the accessors hand out
/// borrowed views.
#[derive(Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount (reusable after unmount). The same id
    /// `statx(STATX_MNT_ID)` and fdinfo's `mnt_id:` report.
    pub mount_id: u64,
    /// Id of the parent mount, or of itself for the root of the namespace
    /// (or a parent outside this process's view).
    pub parent_id: u64,
    /// The superblock's device, as `/proc/locks` reports it.
    pub device: Device,
    text: Box<[u8]>,
    ends: [u32; FIELDS],
}

// Positions of the packed textual fields in `MountEntry::text`.
const ROOT: usize = 0;
const MOUNT_POINT: usize = 1;
const MOUNT_OPTIONS: usize = 2;
const OPTIONAL: usize = 3;
const FS_TYPE: usize = 4;
const SOURCE: usize = 5;
const SUPER_OPTIONS: usize = 6;
const FIELDS: usize = 7;

impl MountInfo {
    /// The calling process's mount table.
    pub const SELF_PATH: &'static str = "/proc/self/mountinfo";

    /// Parse the contents of a mountinfo file.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the first malformed line. Optional fields
    /// this crate does not know are kept, not rejected.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut entries = Vec::with_capacity(bytes.len() / 96 + 1);
        for (index, line) in crate::lines(bytes) {
            entries.push(MountEntry::parse_line(line, index + 1)?);
        }
        Ok(MountInfo { entries })
    }

    /// Parse a mountinfo file as a live reader must: a malformed line is
    /// skipped and handed back, so one odd mount (a kernel printing a
    /// field this crate does not expect) cannot hide every other one.
    pub fn parse_lenient(bytes: &[u8]) -> (Self, Vec<Error>) {
        let mut entries = Vec::with_capacity(bytes.len() / 96 + 1);
        let mut skipped = Vec::new();
        for (index, line) in crate::lines(bytes) {
            match MountEntry::parse_line(line, index + 1) {
                Ok(entry) => entries.push(entry),
                Err(e) => skipped.push(e),
            }
        }
        (MountInfo { entries }, skipped)
    }

    /// Read and parse a mountinfo file, such as [`MountInfo::SELF_PATH`].
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, [`Error::Parse`] naming
    /// the path and line otherwise.
    pub fn read_from(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&crate::read_all(path)?).map_err(|e| e.in_file(path))
    }

    /// Read the calling process's mount table.
    ///
    /// # Errors
    /// As [`MountInfo::read_from`].
    pub fn read() -> Result<Self, Error> {
        Self::read_from(Self::SELF_PATH)
    }

    /// Read the calling process's mount table, parsed as
    /// [`MountInfo::parse_lenient`] does.
    ///
    /// # Errors
    /// [`Error::Read`] only: malformed lines are returned, not fatal.
    pub fn read_lenient() -> Result<(Self, Vec<Error>), Error> {
        let (mounts, skipped) = Self::parse_lenient(&crate::read_all(Self::SELF_PATH)?);
        Ok((mounts, skipped.into_iter().map(|e| e.in_file(Self::SELF_PATH)).collect()))
    }

    /// Read the mount table of process `pid`, which is that of its mount
    /// namespace.
    ///
    /// # Errors
    /// As [`MountInfo::read_from`]; [`Error::is_not_found`] if the process
    /// is gone.
    pub fn read_pid(pid: u32) -> Result<Self, Error> {
        Self::read_from(format!("/proc/{pid}/mountinfo"))
    }

    /// Every mount, in the kernel's order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// Iterate over every mount, in the kernel's order.
    pub fn iter(&self) -> std::slice::Iter<'_, MountEntry> {
        self.entries.iter()
    }

    /// Number of mounts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (it never is for a live process).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The mount with this id: the exact way to find a file's mount, given
    /// the id from `statx(STATX_MNT_ID)` or fdinfo's `mnt_id:`.
    pub fn by_id(&self, mount_id: u64) -> Option<&MountEntry> {
        self.entries.iter().find(|e| e.mount_id == mount_id)
    }

    /// Every mount of the filesystem with this superblock device (a
    /// filesystem bind-mounted in several places has several).
    pub fn by_device(&self, device: Device) -> impl Iterator<Item = &MountEntry> {
        self.entries.iter().filter(move |e| e.device == device)
    }

    /// The mount whose mount point is the longest whole-component prefix of
    /// `path`; of mounts stacked on the same mount point the last listed
    /// (the topmost) wins.
    ///
    /// This is a fallback for when the mount id is not available: it looks
    /// only at strings, so `path` must be absolute and free of symlinks,
    /// `.` and `..` (canonicalize it first), and a mount hidden by a later
    /// mount on one of its ancestors is still found.
    pub fn covering(&self, path: impl AsRef<Path>) -> Option<&MountEntry> {
        let path = path.as_ref().as_os_str().as_bytes();
        let mut best: Option<&MountEntry> = None;
        for entry in &self.entries {
            let point = entry.field(MOUNT_POINT);
            if covers(point, path) && best.is_none_or(|b| point.len() >= b.field(MOUNT_POINT).len()) {
                best = Some(entry);
            }
        }
        best
    }
}

/// A cursor over the single-space-separated fields of one line.
struct Fields<'a> {
    line: &'a [u8],
    /// Start of the next field; past the end once the last one was taken.
    pos: usize,
    line_no: usize,
}

impl<'a> Fields<'a> {
    fn next(&mut self, name: &'static str) -> Result<&'a [u8], Error> {
        let rest = self.line.get(self.pos..).ok_or_else(|| missing(FORMAT, self.line_no, name))?;
        let len = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    fn number(&mut self, name: &'static str) -> Result<u64, Error> {
        let field = self.next(name)?;
        digits::dec_u64(field).ok_or_else(|| invalid(FORMAT, self.line_no, name, field, "a decimal number"))
    }
}

/// Whether mount point `point` is `path` or a whole-component prefix of it.
fn covers(point: &[u8], path: &[u8]) -> bool {
    let point = match point {
        b"/" => b"".as_slice(),
        p => p.strip_suffix(b"/").unwrap_or(p),
    };
    if !path.starts_with(b"/") {
        return false;
    }
    match path.strip_prefix(point) {
        Some(rest) => rest.is_empty() || rest[0] == b'/',
        None => false,
    }
}

impl<'a> IntoIterator for &'a MountInfo {
    type Item = &'a MountEntry;
    type IntoIter = std::slice::Iter<'a, MountEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl MountEntry {
    /// Parse a single mountinfo line (without its newline); `line_no` is
    /// only used in errors.
    ///
    /// # Errors
    /// [`Error::Parse`] if a field is missing or malformed.
    pub fn parse_line(line: &[u8], line_no: usize) -> Result<Self, Error> {
        let mut fields = Fields { line, pos: 0, line_no };
        let mount_id = fields.number("mount id")?;
        let parent_id = fields.number("parent id")?;
        let dev_field = fields.next("major:minor")?;
        let device = Device::parse_decimal(dev_field).ok_or_else(|| {
            invalid(FORMAT, line_no, "major:minor", dev_field, "two decimal numbers joined by `:`")
        })?;
        let root = fields.next("root")?;
        let mount_point = fields.next("mount point")?;
        let mount_options = fields.next("mount options")?;

        // Optional fields run up to the lone `-`; their raw text is kept
        // with the single spaces between them.
        let optional_start = fields.pos;
        let mut optional_end = optional_start;
        loop {
            let field = fields.next("separator `-`")?;
            if field == b"-" {
                break;
            }
            optional_end = fields.pos - 1;
        }
        let optional = &line[optional_start..optional_end.max(optional_start)];
        let fs_type = fields.next("filesystem type")?;
        let source = fields.next("mount source")?;
        let super_options = fields.next("super options")?;
        if fields.pos <= line.len() {
            let extra = &line[fields.pos..];
            return Err(invalid(FORMAT, line_no, "super options", extra, "the end of the line"));
        }

        // Decoding only shrinks a field, so this is exact unless there are
        // escapes, and `into_boxed_slice` below does not reallocate.
        let raw = [root, mount_point, mount_options, optional, fs_type, source, super_options];
        let mut text = Vec::with_capacity(raw.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; FIELDS];
        let mut push = |index: usize, raw: &[u8], decode: bool| {
            if decode {
                digits::unescape_into(raw, &mut text);
            } else {
                text.extend_from_slice(raw);
            }
            // A line longer than 4 GiB cannot come from the kernel; the cast
            // saturating is harmless because lines that long are refused by
            // the reader long before.
            ends[index] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        };
        push(ROOT, root, true);
        push(MOUNT_POINT, mount_point, true);
        push(MOUNT_OPTIONS, mount_options, false);
        push(OPTIONAL, optional, false);
        push(FS_TYPE, fs_type, true);
        push(SOURCE, source, true);
        push(SUPER_OPTIONS, super_options, false);
        Ok(MountEntry { mount_id, parent_id, device, text: text.into_boxed_slice(), ends })
    }

    fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        &self.text[start..self.ends[index] as usize]
    }

    /// The directory of the filesystem that is mounted here (`/` unless this
    /// is a bind mount of a subdirectory or a btrfs subvolume), decoded.
    pub fn root(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.field(ROOT)))
    }

    /// Where the filesystem is mounted, relative to the reading process's
    /// root, decoded.
    pub fn mount_point(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.field(MOUNT_POINT)))
    }

    /// Filesystem type, such as `ext4` or `fuse.bindfs`, decoded.
    pub fn fs_type(&self) -> &OsStr {
        OsStr::from_bytes(self.field(FS_TYPE))
    }

    /// Mount source (a device path, a server, or free text like `tmpfs`),
    /// decoded.
    pub fn source(&self) -> &OsStr {
        OsStr::from_bytes(self.field(SOURCE))
    }

    /// Per-mount options (`rw`, `nosuid`, `relatime`, ...).
    pub fn mount_options(&self) -> Options<'_> {
        Options(self.field(MOUNT_OPTIONS))
    }

    /// Per-superblock options (`rw`, `subvol=/@`, `size=4k`, ...).
    pub fn super_options(&self) -> Options<'_> {
        Options(self.field(SUPER_OPTIONS))
    }

    /// The optional fields that describe mount propagation.
    pub fn optional_fields(&self) -> impl Iterator<Item = OptionalField<'_>> {
        self.field(OPTIONAL).split(|&b| b == b' ').filter(|f| !f.is_empty()).map(OptionalField::parse)
    }

    /// Whether the mount is read-only (per-mount `ro`).
    pub fn is_read_only(&self) -> bool {
        self.mount_options().contains("ro")
    }

    /// Format this entry back into a mountinfo line, escaped as the kernel
    /// does, without the trailing newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 48);
        out.extend_from_slice(format!("{} {} {} ", self.mount_id, self.parent_id, self.device).as_bytes());
        const PATH_SPECIAL: &[u8] = b" \t\n";
        digits::escape_into(self.field(ROOT), PATH_SPECIAL, &mut out);
        out.push(b' ');
        digits::escape_into(self.field(MOUNT_POINT), PATH_SPECIAL, &mut out);
        out.push(b' ');
        out.extend_from_slice(self.field(MOUNT_OPTIONS));
        out.push(b' ');
        if !self.field(OPTIONAL).is_empty() {
            out.extend_from_slice(self.field(OPTIONAL));
            out.push(b' ');
        }
        out.extend_from_slice(b"- ");
        digits::escape_into(self.field(FS_TYPE), PATH_SPECIAL, &mut out);
        out.push(b' ');
        digits::escape_into(self.field(SOURCE), PATH_SPECIAL, &mut out);
        out.push(b' ');
        out.extend_from_slice(self.field(SUPER_OPTIONS));
        out
    }
}

impl fmt::Debug for MountEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountEntry")
            .field("mount_id", &self.mount_id)
            .field("parent_id", &self.parent_id)
            .field("device", &self.device)
            .field("root", &self.root())
            .field("mount_point", &self.mount_point())
            .field("mount_options", &self.mount_options())
            .field("optional_fields", &self.optional_fields().collect::<Vec<_>>())
            .field("fs_type", &self.fs_type())
            .field("source", &self.source())
            .field("super_options", &self.super_options())
            .finish()
    }
}

/// A comma-separated option list as the kernel printed it.
///
/// Splitting happens before decoding, because newer kernels escape a comma
/// inside an option value (an overlayfs `lowerdir=` path, say) as `\054`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Options<'a>(&'a [u8]);

impl<'a> Options<'a> {
    /// The list exactly as printed, escapes included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Iterate over `(name, value)` pairs, decoded; `value` is `None` for
    /// flags like `ro`.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'a, OsStr>, Option<Cow<'a, OsStr>>)> + 'a {
        self.0.split(|&b| b == b',').filter(|o| !o.is_empty()).map(|option| {
            let (name, value) = match option.iter().position(|&b| b == b'=') {
                Some(eq) => (&option[..eq], Some(&option[eq + 1..])),
                None => (option, None),
            };
            (decode(name), value.map(decode))
        })
    }

    /// Whether an option with this name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|(n, _)| n == OsStr::new(name))
    }

    /// The value of the first option with this name (`None` if the option
    /// is absent or has no value).
    pub fn get(&self, name: &str) -> Option<Cow<'a, OsStr>> {
        self.iter().find(|(n, _)| n == OsStr::new(name)).and_then(|(_, v)| v)
    }
}

fn decode(bytes: &[u8]) -> Cow<'_, OsStr> {
    match digits::unescape(bytes) {
        Cow::Borrowed(b) => Cow::Borrowed(OsStr::from_bytes(b)),
        Cow::Owned(v) => Cow::Owned(std::os::unix::ffi::OsStringExt::from_vec(v)),
    }
}

impl fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.0))
    }
}

/// A propagation field from mountinfo's optional fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionalField<'a> {
    /// `shared:N`: a member of peer group N.
    Shared(u64),
    /// `master:N`: a slave of peer group N.
    Master(u64),
    /// `propagate_from:N`: receives from peer group N (the closest dominant
    /// group visible in this namespace).
    PropagateFrom(u64),
    /// `unbindable`.
    Unbindable,
    /// A field this crate does not know, as printed; future kernels may add
    /// more.
    Other(&'a [u8]),
}

impl<'a> OptionalField<'a> {
    fn parse(field: &'a [u8]) -> Self {
        let tagged = |tag: &[u8]| field.strip_prefix(tag).and_then(digits::dec_u64);
        if let Some(n) = tagged(b"shared:") {
            OptionalField::Shared(n)
        } else if let Some(n) = tagged(b"master:") {
            OptionalField::Master(n)
        } else if let Some(n) = tagged(b"propagate_from:") {
            OptionalField::PropagateFrom(n)
        } else if field == b"unbindable" {
            OptionalField::Unbindable
        } else {
            OptionalField::Other(field)
        }
    }
}

impl fmt::Display for OptionalField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionalField::Shared(n) => write!(f, "shared:{n}"),
            OptionalField::Master(n) => write!(f, "master:{n}"),
            OptionalField::PropagateFrom(n) => write!(f, "propagate_from:{n}"),
            OptionalField::Unbindable => f.write_str("unbindable"),
            OptionalField::Other(raw) => f.write_str(&String::from_utf8_lossy(raw)),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for MountEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use crate::serde_bytes::Bytes;
        use serde::ser::SerializeStruct;
        let optional: Vec<String> = self.optional_fields().map(|f| f.to_string()).collect();
        let mut s = serializer.serialize_struct("MountEntry", 11)?;
        s.serialize_field("mount_id", &self.mount_id)?;
        s.serialize_field("parent_id", &self.parent_id)?;
        s.serialize_field("major", &self.device.major)?;
        s.serialize_field("minor", &self.device.minor)?;
        s.serialize_field("root", &Bytes(self.field(ROOT)))?;
        s.serialize_field("mount_point", &Bytes(self.field(MOUNT_POINT)))?;
        s.serialize_field("mount_options", &Bytes(self.field(MOUNT_OPTIONS)))?;
        s.serialize_field("optional_fields", &optional)?;
        s.serialize_field("fs_type", &Bytes(self.field(FS_TYPE)))?;
        s.serialize_field("source", &Bytes(self.field(SOURCE)))?;
        s.serialize_field("super_options", &Bytes(self.field(SUPER_OPTIONS)))?;
        s.end()
    }
}
