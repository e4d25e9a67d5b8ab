//! Discovery: the topology as sysfs describes it, and the CPUs this
//! process may use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockyard_procfs::CpuList;

use crate::{Cpu, Llc, Node, Topology};

impl Topology {
    /// Read the topology of the system whose root is `root` (`/` for this
    /// host).
    pub fn read(root: impl AsRef<Path>) -> Topology {
        let root = root.as_ref();
        let cpu_dir = root.join("sys/devices/system/cpu");
        let online = match CpuList::read_from(cpu_dir.join("online")) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "no online CPU list; using every cpuN directory");
                numbered(&cpu_dir, "cpu").into_iter().collect()
            }
        };
        let isolated = optional_list(&cpu_dir.join("isolated"));
        let nodes = read_nodes(&root.join("sys/devices/system/node"));
        let mut llcs: BTreeMap<u32, Llc> = BTreeMap::new();
        let mut cpus = Vec::new();
        for id in online.iter() {
            let dir = cpu_dir.join(format!("cpu{id}"));
            let topology = dir.join("topology");
            let llc = read_llc(&dir.join("cache"), id);
            let llc_key = llc.as_ref().map(|l| l.key);
            if let Some(llc) = llc {
                llcs.entry(llc.key).or_insert(llc);
            }
            cpus.push(Cpu {
                id,
                core: number(&topology.join("core_id")),
                package: number(&topology.join("physical_package_id")),
                smt_siblings: list_or(&topology.join("thread_siblings_list"), id),
                llc: llc_key,
                node: nodes.iter().find(|n| n.cpus.contains(id)).map(|n| n.id),
            });
        }
        Topology { online, isolated, cpus, llcs: llcs.into_values().collect(), nodes }
    }

    /// The CPUs this process may run on: its affinity mask, within the
    /// online CPUs, within its cgroup's `cpuset.cpus.effective` when that
    /// is readable (cgroup v2).
    pub fn allowed(&self) -> CpuList {
        let mut allowed = self.online.clone();
        match rustix::thread::sched_getaffinity(None) {
            Ok(set) => {
                let mask: CpuList = self.online.iter().filter(|&cpu| set.is_set(cpu as usize)).collect();
                allowed = allowed.intersection(&mask);
            }
            Err(e) => tracing::warn!(error = %e, "sched_getaffinity failed; assuming every online CPU"),
        }
        if let Some(cpuset) = cgroup_cpuset() {
            allowed = allowed.intersection(&cpuset);
        }
        allowed
    }
}

/// `cpuset.cpus.effective` of this process's cgroup v2, if readable.
fn cgroup_cpuset() -> Option<CpuList> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file =
        PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')).join("cpuset.cpus.effective");
    let list = CpuList::read_from(&file).ok()?;
    // An empty effective set means the controller is not enabled here.
    (!list.is_empty()).then_some(list)
}

/// The LLC of the CPU whose cache directory is `cache`.
fn read_llc(cache: &Path, cpu: u32) -> Option<Llc> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        tracing::warn!(cpu, "no cache directory; its LLC is unknown");
        return None;
    };
    let mut best: Option<(u8, PathBuf, String)> = None;
    for entry in entries.flatten() {
        let index = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("index") {
            continue;
        }
        let kind = text(&index.join("type")).unwrap_or_default();
        if kind != "Unified" && kind != "Data" {
            continue;
        }
        let Some(level) = number(&index.join("level")).and_then(|l| u8::try_from(l).ok()) else {
            tracing::warn!(cpu, index = %index.display(), "cache index without a level; ignored");
            continue;
        };
        if best.as_ref().is_none_or(|(l, _, _)| level > *l) {
            best = Some((level, index, kind));
        }
    }
    let Some((level, index, kind)) = best else {
        tracing::warn!(cpu, "no data or unified cache listed; its LLC is unknown");
        return None;
    };
    let cpus = list_or(&index.join("shared_cpu_list"), cpu);
    let size_bytes = text(&index.join("size")).and_then(|s| {
        let parsed = parse_size(&s);
        if parsed.is_none() {
            tracing::warn!(cpu, size = %s, "unreadable cache size");
        }
        parsed
    });
    Some(Llc {
        key: cpus.first().unwrap_or(cpu),
        id: number(&index.join("id")),
        level,
        kind,
        size_bytes,
        cpus,
    })
}

fn read_nodes(dir: &Path) -> Vec<Node> {
    let ids = numbered(dir, "node");
    let with_memory = CpuList::read_from(dir.join("has_memory")).ok();
    let mut nodes = Vec::new();
    for &id in &ids {
        let node_dir = dir.join(format!("node{id}"));
        let cpus = optional_list(&node_dir.join("cpulist"));
        let distances = match text(&node_dir.join("distance")) {
            Some(row) => {
                let values: Vec<u32> = row.split_whitespace().filter_map(|d| d.parse().ok()).collect();
                if values.len() != ids.len() {
                    tracing::warn!(node = id, row = %row, "distance row does not match the node count");
                }
                ids.iter().copied().zip(values).collect()
            }
            None => {
                tracing::warn!(node = id, "no distance row");
                BTreeMap::new()
            }
        };
        let has_memory = with_memory.as_ref().is_none_or(|m| m.contains(id));
        nodes.push(Node { id, memory_only: cpus.is_empty() && has_memory, cpus, distances });
    }
    nodes
}

/// The numbers N of `{prefix}N` entries in `dir`, ascending.
fn numbered(dir: &Path, prefix: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

fn text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn number(path: &Path) -> Option<u32> {
    let value = text(path)?;
    // Some architectures print -1 for "unknown" (core_id, package id).
    value.parse().ok()
}

fn optional_list(path: &Path) -> CpuList {
    match std::fs::read(path) {
        Ok(bytes) => CpuList::parse(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable CPU list; taken as empty");
            CpuList::new()
        }),
        Err(_) => CpuList::new(),
    }
}

/// A CPU list, or just `cpu` when it is missing or unreadable.
fn list_or(path: &Path, cpu: u32) -> CpuList {
    let list = optional_list(path);
    if list.is_empty() { std::iter::once(cpu).collect() } else { list }
}

/// Cache sizes as sysfs prints them: `32K`, `1024K`, `32768K`, `2M`.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn cache_sizes_parse_as_sysfs_prints_them() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }
}
