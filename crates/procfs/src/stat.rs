//! `/proc/PID/stat`: the fields that identify a process over time.
//!
//! ```text
//! 1632 (flock) S 1210 1632 1210 34816 1632 4194304 ... 22: starttime ...
//! ```
//!
//! The command name (`comm`, field 2) is in parentheses and may itself
//! contain spaces and parentheses, so it runs to the *last* `)`. Field 22,
//! `starttime`, is when the process started, in clock ticks since boot: a
//! pid and its start time together name one process for the life of the
//! system, which is how a recycled pid is told apart from the original.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::digits;
use crate::error::{Error, invalid, missing};

const FORMAT: &str = "stat";

/// The identifying fields of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ProcessStat {
    /// Process id (in the pid namespace of the reader's /proc mount).
    pub pid: u32,
    /// Process state (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// Start time in clock ticks after boot (`sysconf(_SC_CLK_TCK)`, 100 on
    /// every Linux build in practice).
    pub start_time: u64,
    #[cfg_attr(feature = "serde", serde(skip))]
    comm: Box<[u8]>,
}

impl ProcessStat {
    /// Parse the contents of a stat file.
    ///
    /// # Errors
    /// [`Error::Parse`] if the line is truncated or a field is malformed.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let open = memchr::memchr(b'(', line).ok_or_else(|| missing(FORMAT, 1, "comm"))?;
        let close =
            memchr::memrchr(b')', line).filter(|&c| c > open).ok_or_else(|| missing(FORMAT, 1, "comm"))?;
        let pid_field = line[..open].trim_ascii();
        let pid = digits::dec_u32(pid_field)
            .ok_or_else(|| invalid(FORMAT, 1, "pid", pid_field, "a decimal pid"))?;
        let mut fields = line[close + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty());
        // Fields 3.. follow the command name; `nth` counts from field 3.
        let state_field = fields.next().ok_or_else(|| missing(FORMAT, 1, "state"))?;
        let state = match state_field {
            [c] if c.is_ascii_alphabetic() => char::from(*c),
            _ => return Err(invalid(FORMAT, 1, "state", state_field, "one letter")),
        };
        let ppid_field = fields.next().ok_or_else(|| missing(FORMAT, 1, "ppid"))?;
        let ppid = digits::dec_u32(ppid_field)
            .ok_or_else(|| invalid(FORMAT, 1, "ppid", ppid_field, "a decimal pid"))?;
        let start_field = fields.nth(17).ok_or_else(|| missing(FORMAT, 1, "starttime"))?;
        let start_time = digits::dec_u64(start_field)
            .ok_or_else(|| invalid(FORMAT, 1, "starttime", start_field, "a decimal tick count"))?;
        Ok(ProcessStat { pid, state, ppid, start_time, comm: line[open + 1..close].into() })
    }

    /// Read `/proc/PID/stat`.
    ///
    /// # Errors
    /// [`Error::Read`] ([`Error::is_not_found`] if the process is gone) or
    /// [`Error::Parse`].
    pub fn read_pid(pid: u32) -> Result<Self, Error> {
        let path = format!("/proc/{pid}/stat");
        Self::parse(&crate::read_all(&path)?).map_err(|e| e.in_file(path))
    }

    /// The command name (the executable's name, at most 15 bytes, or what
    /// the process set with `prctl(PR_SET_NAME)`).
    pub fn comm(&self) -> &OsStr {
        OsStr::from_bytes(&self.comm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_line() {
        let line = b"1632 (flock) S 1210 1632 1210 34816 1632 4194304 110 0 0 0 0 0 0 0 20 0 1 0 4017 2363392 224 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let stat = ProcessStat::parse(line).expect("parse");
        assert_eq!((stat.pid, stat.state, stat.ppid, stat.start_time), (1632, 'S', 1210, 4017));
        assert_eq!(stat.comm(), "flock");
    }

    #[test]
    fn comm_may_hold_spaces_and_parentheses() {
        let line = b"77 (a) b (c)) Z 1 77 77 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0";
        let stat = ProcessStat::parse(line).expect("parse");
        assert_eq!((stat.pid, stat.state, stat.start_time), (77, 'Z', 999));
        assert_eq!(stat.comm(), "a) b (c)");
    }

    #[test]
    fn truncated_lines_are_errors() {
        assert!(ProcessStat::parse(b"77 (a) S 1 2 3").is_err());
        assert!(ProcessStat::parse(b"77 a S").is_err());
        assert!(ProcessStat::parse(b"x (a) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5").is_err());
    }

    #[test]
    fn live_stat_of_this_process() {
        let stat = ProcessStat::read_pid(std::process::id()).expect("read");
        assert_eq!(stat.pid, std::process::id());
        assert!(stat.start_time > 0);
    }
}
