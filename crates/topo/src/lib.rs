//! The host's CPU topology, read from sysfs, and the stable names of the
//! lock files that reserve its CPUs and last-level caches.
//!
//! Benchmarks, test VMs and builds sharing a host must not share CPUs or
//! last-level caches (LLCs) unless they mean to. This crate answers what
//! there is: online CPUs with their core, package, SMT siblings, LLC and
//! NUMA node; each LLC's level, size and CPUs; each node's CPUs and
//! distances; isolated CPUs; and which CPUs this process may use. A
//! [`Reserver`] then reserves CPUs or whole LLCs with kernel locks named
//! below (modes, placement, acquisition order and fairness: see
//! [`Reserver`]'s module docs in `docs/topology.md`).
//!
//! # Discovery
//!
//! [`Topology::read`] reads `{root}/sys/devices/system/{cpu,node}`, the
//! root injectable so tests use fixtures. A CPU's LLC is its cache index
//! with the highest `level` among those of type `Unified` or `Data`
//! (instruction caches never count). Missing or odd files (a CPU without
//! `cache/`, an unparsable size, a node without `distance`) are tolerated
//! with a `tracing` warning and leave the field empty: a partial view
//! beats a panic or a refusal.
//!
//! # Lock names
//!
//! A reservation lock file must mean the same resource to every process,
//! whatever its affinity mask. ktstr named LLC files by an LLC's position
//! in its own list of LLCs, built from the CPUs it was allowed: two
//! processes with different masks could number the same LLC differently
//! and both "reserve" it. Here:
//!
//! - a CPU is `cpu-{id}`, its kernel number;
//! - an LLC is `llc-{key}`, its key being the lowest CPU in its
//!   `shared_cpu_list` as sysfs reports it for the whole host (not the
//!   CPUs one process may use). Its sysfs `id` is reported but not used
//!   in the name: not every architecture provides it.
//!
//! Both are properties of the host, read the same way by every process.
//! The one event that renames an LLC is its lowest CPU going offline.
//!
//! # Example
//!
//! Reserve two CPUs of this host (here in a private lock directory; on a
//! shared host, one root-owned sticky directory all users share), run a
//! command pinned to them, and release them when done:
//!
//! ```
//! use std::path::Path;
//! use std::process::Command;
//! use lockyard_topo::{Amount, Request, Reserver, Topology};
//!
//! let topology = Topology::read(Path::new("/"));
//! let allowed = topology.allowed();
//! let dir = std::env::temp_dir().join(format!("lockyard-topo-doc-{}", std::process::id()));
//! let reserver = Reserver::new(&dir, topology, &allowed)?;
//! let cpus = allowed.len().min(2);
//! let reservation = reserver.reserve(&Request::new(Amount::Cpus(cpus)))?;
//! assert_eq!(reservation.cpus().len(), cpus);
//! let status = reservation.spawn(Command::new("true").env("MAKEFLAGS", format!("-j{}", reservation.jobs())))?.wait()?;
//! assert!(status.success());
//! drop(reservation); // the CPUs are free again
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod reserve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockyard_procfs::CpuList;
use serde::{Deserialize, Serialize};

/// How waits are given, from lockyard-flock (re-exported so this crate is
/// usable alone).
pub use lockyard_flock::{CancelToken, Wait};
pub use reserve::{Amount, Mode, Placement, Request, Reservation, ReserveError, Reserver, Smt};

/// One online CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cpu {
    /// The kernel's CPU number.
    pub id: u32,
    /// `topology/core_id`.
    pub core: Option<u32>,
    /// `topology/physical_package_id` (the socket).
    pub package: Option<u32>,
    /// `topology/thread_siblings_list`: the CPUs of its core, itself included.
    pub smt_siblings: CpuList,
    /// The key of its LLC ([`Llc::key`]).
    pub llc: Option<u32>,
    /// Its NUMA node.
    pub node: Option<u32>,
}

/// A last-level cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Llc {
    /// Its identity: the lowest CPU sharing it.
    pub key: u32,
    /// The cache's sysfs `id`, where the architecture provides one.
    pub id: Option<u32>,
    /// Its level (3 for an L3).
    pub level: u8,
    /// `Unified` or `Data`.
    pub kind: String,
    /// Its size in bytes, if sysfs says.
    pub size_bytes: Option<u64>,
    /// The CPUs sharing it (`shared_cpu_list`).
    pub cpus: CpuList,
}

impl Llc {
    /// The name of its reservation lock file.
    pub fn lock_name(&self) -> String {
        format!("llc-{}", self.key)
    }
}

/// The name of CPU `id`'s reservation lock file.
pub fn cpu_lock_name(id: u32) -> String {
    format!("cpu-{id}")
}

/// A NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Node {
    /// The node number.
    pub id: u32,
    /// Its CPUs (empty for a memory-only node).
    pub cpus: CpuList,
    /// Distance to each node by node number (10 is local).
    pub distances: BTreeMap<u32, u32>,
    /// Whether it has memory and no CPUs (CXL or HBM expanders, some
    /// virtual machines).
    pub memory_only: bool,
}

/// The host's CPU topology: a plain value, so tests can build and compare
/// fixtures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Topology {
    /// Online CPUs.
    pub online: CpuList,
    /// CPUs isolated from the scheduler (`isolcpus=`).
    pub isolated: CpuList,
    /// Every online CPU, ascending.
    pub cpus: Vec<Cpu>,
    /// Every LLC of an online CPU, by key.
    pub llcs: Vec<Llc>,
    /// NUMA nodes, by number (none where the kernel has no NUMA support).
    pub nodes: Vec<Node>,
}

impl Topology {
    /// Read the topology of the system whose root is `root` (`/` for this
    /// host).
    pub fn read(root: &Path) -> Topology {
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

    /// A made-up host: `nodes` NUMA nodes (distance 10 local, 21 remote),
    /// each of `llcs_per_node` LLCs of `cpus_per_llc` CPUs numbered in
    /// order, SMT pairs (CPUs 2k and 2k+1 one core) when `smt`. For tests
    /// and benchmarks of reservation logic at sizes this host lacks.
    pub fn synthetic(nodes: u32, llcs_per_node: u32, cpus_per_llc: u32, smt: bool) -> Topology {
        let total = nodes * llcs_per_node * cpus_per_llc;
        let per_node = llcs_per_node * cpus_per_llc;
        let mut topology = Topology { online: (0..total).collect(), ..Topology::default() };
        for id in 0..total {
            let llc = id / cpus_per_llc * cpus_per_llc;
            let node = id / per_node;
            let core = if smt { id / 2 } else { id };
            let smt_siblings =
                if smt { [core * 2, core * 2 + 1].into_iter().collect() } else { [id].into_iter().collect() };
            topology.cpus.push(Cpu {
                id,
                core: Some(core),
                package: Some(node),
                smt_siblings,
                llc: Some(llc),
                node: Some(node),
            });
            if id == llc {
                topology.llcs.push(Llc {
                    key: llc,
                    id: Some(llc / cpus_per_llc),
                    level: 3,
                    kind: "Unified".to_owned(),
                    size_bytes: Some(32 << 20),
                    cpus: (llc..llc + cpus_per_llc).collect(),
                });
            }
        }
        for id in 0..nodes {
            topology.nodes.push(Node {
                id,
                cpus: (id * per_node..(id + 1) * per_node).collect(),
                distances: (0..nodes).map(|n| (n, if n == id { 10 } else { 21 })).collect(),
                memory_only: false,
            });
        }
        topology
    }

    /// The CPU `id`, if online.
    pub fn cpu(&self, id: u32) -> Option<&Cpu> {
        self.cpus.binary_search_by_key(&id, |c| c.id).ok().map(|i| &self.cpus[i])
    }

    /// The LLC whose key is `key`.
    pub fn llc(&self, key: u32) -> Option<&Llc> {
        self.llcs.binary_search_by_key(&key, |l| l.key).ok().map(|i| &self.llcs[i])
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
