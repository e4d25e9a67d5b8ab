//! `/proc/PID/cmdline`: the arguments a process was started with.
//!
//! The kernel shows the process's argument area: each argument ended by a
//! NUL. It is empty for kernel threads and for zombies, which is why
//! [`Cmdline::parse`] returns `None` for it rather than an empty list. A
//! process may also overwrite its arguments (`setproctitle`), leaving one
//! long argument padded with NULs; the display form drops that padding.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

use crate::error::Error;

/// A non-empty command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cmdline {
    /// The raw bytes without the final NUL.
    raw: Box<[u8]>,
}

impl Cmdline {
    /// Parse the contents of a cmdline file; `None` if it is empty.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let raw = bytes.strip_suffix(b"\0").unwrap_or(bytes);
        (!bytes.is_empty()).then(|| Cmdline { raw: raw.into() })
    }

    /// Read `/proc/PID/cmdline`; `Ok(None)` for kernel threads and zombies.
    ///
    /// # Errors
    /// [`Error::Read`]; [`Error::is_not_found`] if the process is gone.
    pub fn read_pid(pid: u32) -> Result<Option<Self>, Error> {
        Ok(Self::parse(&crate::read_all(format!("/proc/{pid}/cmdline"))?))
    }

    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl Iterator<Item = &OsStr> {
        self.raw.split(|&b| b == 0).map(OsStr::from_bytes)
    }

    /// `argv[0]`.
    pub fn program(&self) -> &OsStr {
        self.args().next().unwrap_or_default()
    }

    /// The arguments joined by NULs, as the kernel showed them minus the
    /// final NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// A one-line rendering for tables and messages, at most `width`
    /// characters: arguments joined by spaces, trailing empty arguments
    /// (title padding) dropped, control characters escaped (`\n`, `\x1b`)
    /// so a hostile command line cannot forge terminal output, invalid
    /// UTF-8 replaced, and a final `…` when something was cut.
    pub fn display(&self, width: usize) -> String {
        let used = self.raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&self.raw[..used]);
        let mut out = String::with_capacity(text.len().min(width.saturating_mul(4)));
        let mut chars = 0;
        let mut escaped = String::new();
        for c in text.chars() {
            escaped.clear();
            match c {
                '\0' => escaped.push(' '),
                '\n' => escaped.push_str("\\n"),
                '\t' => escaped.push_str("\\t"),
                '\\' => escaped.push('\\'),
                c if c.is_control() => {
                    let _ = write!(escaped, "\\x{:02x}", u32::from(c));
                }
                c => escaped.push(c),
            }
            let n = escaped.chars().count();
            if chars + n > width {
                return truncate_with_ellipsis(out, chars, width);
            }
            out.push_str(&escaped);
            chars += n;
        }
        out
    }
}

/// `out` holds `chars` characters and the next piece would pass `width`:
/// make room for the ellipsis and add it.
fn truncate_with_ellipsis(mut out: String, mut chars: usize, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    while chars > width - 1 {
        out.pop();
        chars -= 1;
    }
    out.push('…');
    out
}

#[cfg(feature = "serde")]
impl serde::Serialize for Cmdline {
    /// Serializes as the list of arguments (strings where valid UTF-8).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.args().map(|a| crate::serde_bytes::Bytes(a.as_bytes())))
    }
}
