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

#![warn(missing_docs)]

pub mod cgroup;
mod discover;
mod plan;
mod reserve;
mod sys;

use std::collections::BTreeMap;

use lockyard_procfs::CpuList;
use serde::{Deserialize, Serialize};

pub use cgroup::{CgroupParent, CgroupSweep, Cpuset, EnforceError, Hierarchy};
/// How waits are given, from lockyard-flock (re-exported so this crate is
/// usable alone).
pub use lockyard_flock::{CancelToken, Wait};
pub use reserve::{Amount, MemPolicy, Mode, Placement, Request, Reservation, ReserveError, Reserver, Smt};

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
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
