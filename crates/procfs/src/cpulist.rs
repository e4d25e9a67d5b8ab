//! CPU lists as sysfs and `/proc/PID/status` print them: `0-3,8,10-11`.
//!
//! Used by `/sys/devices/system/cpu/online`, `isolated`, cache
//! `shared_cpu_list`, NUMA node `cpulist`, cgroup `cpuset.cpus.effective`
//! and `Cpus_allowed_list`. An empty list (an empty file, or just a
//! newline) is valid: nothing is isolated. Ranges must be ascending
//! (`3-1` is refused); overlapping or unordered items are merged, as the
//! kernel's own parser does. The kernel's stride syntax (`0-15:2/4`, only
//! seen on the boot command line) is not accepted.

use std::fmt;
use std::str::FromStr;

use crate::digits;
use crate::error::{Error, invalid};

const FORMAT: &str = "cpu list";

/// A set of CPU numbers, kept as sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuList {
    ranges: Vec<(u32, u32)>,
}

impl CpuList {
    /// The highest CPU number accepted; Linux supports at most 8192 CPUs
    /// today, and a bound keeps a fuzzed `0-4294967295` from meaning four
    /// billion CPUs.
    pub const MAX_CPU: u32 = (1 << 20) - 1;

    /// The empty list.
    pub const fn new() -> Self {
        CpuList { ranges: Vec::new() }
    }

    /// Parse a CPU list; surrounding whitespace (sysfs's trailing newline)
    /// is ignored.
    ///
    /// # Errors
    /// [`Error::Parse`] for an empty item (`1,,2`), a non-number, a
    /// descending range, or a CPU above [`CpuList::MAX_CPU`].
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let text = bytes.trim_ascii();
        let mut ranges = Vec::new();
        if text.is_empty() {
            return Ok(CpuList { ranges });
        }
        for item in text.split(|&b| b == b',') {
            let (first, last) = match item.iter().position(|&b| b == b'-') {
                Some(dash) => (&item[..dash], &item[dash + 1..]),
                None => (item, item),
            };
            let cpu = |digits: &[u8]| {
                digits::dec_u32(digits).filter(|&n| n <= Self::MAX_CPU).ok_or_else(|| {
                    invalid(FORMAT, 1, "cpu", item, "a CPU number or an ascending range like 0-3")
                })
            };
            let (first, last) = (cpu(first)?, cpu(last)?);
            if first > last {
                return Err(invalid(FORMAT, 1, "cpu range", item, "an ascending range like 0-3"));
            }
            ranges.push((first, last));
        }
        Ok(Self::normalized(ranges))
    }

    /// Read a file holding a CPU list, such as
    /// `/sys/devices/system/cpu/online`.
    ///
    /// # Errors
    /// [`Error::Read`] or [`Error::Parse`].
    pub fn read_from(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::parse(&crate::read_all(path)?).map_err(|e| e.in_file(path))
    }

    fn normalized(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        CpuList { ranges: merged }
    }

    /// The set as inclusive `(first, last)` ranges, ascending.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Every CPU, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&(first, last)| first..=last)
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, last)| last < cpu);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= cpu)
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|&(first, last)| (last - first) as usize + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The lowest CPU.
    pub fn first(&self) -> Option<u32> {
        self.ranges.first().map(|r| r.0)
    }

    /// CPUs in both sets.
    #[must_use]
    pub fn intersection(&self, other: &CpuList) -> CpuList {
        let (mut a, mut b) = (self.ranges.iter().peekable(), other.ranges.iter().peekable());
        let mut out = Vec::new();
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            let (first, last) = (x.0.max(y.0), x.1.min(y.1));
            if first <= last {
                out.push((first, last));
            }
            if x.1 < y.1 {
                a.next();
            } else {
                b.next();
            }
        }
        CpuList { ranges: out }
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self::normalized(iter.into_iter().map(|cpu| (cpu, cpu)).collect())
    }
}

impl FromStr for CpuList {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s.as_bytes())
    }
}

/// Formats in the kernel's canonical form: ascending, ranges collapsed,
/// no spaces; the empty set is the empty string.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(first, last)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for CpuList {
    /// Serializes as the canonical string, `"0-3,8"`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
