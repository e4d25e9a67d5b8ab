//! What the host says when KVM is missing, denied or short of resources:
//! read for messages only, never to decide.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use crate::preflight::{Absence, Access};

/// Why the device is missing, as far as `/sys/module` and `/proc/cpuinfo`
/// can say.
pub(crate) fn absence() -> Absence {
    let mut modules: Vec<String> = std::fs::read_dir("/sys/module")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name == "kvm" || name.starts_with("kvm_"))
        .collect();
    modules.sort();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })
        .map(|value| value.split_whitespace().collect())
        .unwrap_or_default();
    let cpu_flag = ["vmx", "svm"].into_iter().find(|f| flags.contains(f)).map(str::to_owned);
    Absence { modules, cpu_flag, guest: flags.contains(&"hypervisor") }
}

/// The device's ownership and ours.
pub(crate) fn access(device: &std::fs::Metadata) -> Access {
    let uid = rustix::process::geteuid().as_raw();
    let gid = device.gid();
    let in_group = rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid));
    Access {
        mode: device.mode(),
        owner: device.uid(),
        gid,
        group: name_of("/etc/group", gid),
        uid,
        user: name_of("/etc/passwd", uid),
        in_group,
    }
}

/// The name of `id` in a `name:x:id:...` database file.
fn name_of(database: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(database).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

/// Load, memory and open files, for a "try later" message.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct HostSnapshot {
    /// One-minute load average.
    pub load1: Option<f64>,
    /// `MemAvailable`, KiB.
    pub mem_available_kib: Option<u64>,
    /// Open files on the host (`/proc/sys/fs/file-nr`).
    pub files_open: Option<u64>,
    /// The host's limit (`fs.file-max`).
    pub files_max: Option<u64>,
    /// Descriptors this process has open.
    pub fds_open: Option<u64>,
    /// This process's soft `RLIMIT_NOFILE`.
    pub fds_max: Option<u64>,
}

impl HostSnapshot {
    /// Read it now (each field is `None` where it could not be read).
    pub fn take() -> Self {
        let read = |path| std::fs::read_to_string(path).ok();
        let load1 = read("/proc/loadavg").and_then(|s| s.split_whitespace().next()?.parse().ok());
        let mem_available_kib = read("/proc/meminfo").and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("MemAvailable:")?.split_whitespace().next()?.parse().ok())
        });
        let file_nr: Vec<u64> = read("/proc/sys/fs/file-nr")
            .map(|s| s.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        let fds_open = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        let fds_max = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        HostSnapshot {
            load1,
            mem_available_kib,
            files_open: file_nr.first().copied(),
            files_max: file_nr.get(2).copied(),
            fds_open,
            fds_max,
        }
    }
}

impl fmt::Display for HostSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = || "?".to_owned();
        write!(
            f,
            "load {}, {} MiB available, {}/{} files open on the host, {}/{} in this process",
            self.load1.map_or_else(unknown, |l| format!("{l:.2}")),
            self.mem_available_kib.map_or_else(unknown, |k| (k / 1024).to_string()),
            self.files_open.map_or_else(unknown, |n| n.to_string()),
            self.files_max.map_or_else(unknown, |n| n.to_string()),
            self.fds_open.map_or_else(unknown, |n| n.to_string()),
            self.fds_max.map_or_else(unknown, |n| n.to_string()),
        )
    }
}
