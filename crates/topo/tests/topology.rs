//! Topology discovery against sysfs fixtures.
//!
//! `tests/fixtures/sysfs/vm-2cpu` is a capture of the 2-CPU VM CI runs on.
//! The other fixtures there are written by the `build_*` functions below
//! (the 128-CPU one is 1,000 files: nobody should edit it by hand), and a
//! test checks that the committed trees are exactly what the builders
//! write; `cargo test -p lockyard-topo --test topology -- --ignored
//! regenerate` rewrites them. Each holds the files the kernel provides: `online`, `isolated`, per CPU
//! `topology/{core_id,physical_package_id,thread_siblings_list}` and
//! `cache/indexN/{level,type,id,size,shared_cpu_list}`, per node
//! `cpulist` and `distance`, and `node/has_memory`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockyard_procfs::CpuList;
use lockyard_topo::{Topology, cpu_lock_name};

/// A sysfs tree being written; removed on drop unless it is a committed
/// fixture being regenerated.
struct Sysfs(PathBuf, bool);

/// One cache index: level, type, id, size, shared CPUs.
type Cache<'a> = (u8, &'a str, Option<u32>, &'a str, &'a str);

impl Sysfs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lockyard-topo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture");
        Sysfs(dir, false)
    }

    fn file(&self, rel: &str, content: &str) -> &Self {
        let path = self.0.join("sys/devices/system").join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, format!("{content}\n")).expect("write");
        self
    }

    fn cpu(&self, id: u32, core: u32, package: u32, siblings: &str, caches: &[Cache<'_>]) -> &Self {
        let dir = format!("cpu/cpu{id}");
        self.file(&format!("{dir}/topology/core_id"), &core.to_string());
        self.file(&format!("{dir}/topology/physical_package_id"), &package.to_string());
        self.file(&format!("{dir}/topology/thread_siblings_list"), siblings);
        for (index, (level, kind, cache_id, size, shared)) in caches.iter().enumerate() {
            let index = format!("{dir}/cache/index{index}");
            self.file(&format!("{index}/level"), &level.to_string());
            self.file(&format!("{index}/type"), kind);
            if let Some(cache_id) = cache_id {
                self.file(&format!("{index}/id"), &cache_id.to_string());
            }
            self.file(&format!("{index}/size"), size);
            self.file(&format!("{index}/shared_cpu_list"), shared);
        }
        self
    }

    fn node(&self, id: u32, cpus: &str, distance: &str) -> &Self {
        self.file(&format!("node/node{id}/cpulist"), cpus);
        self.file(&format!("node/node{id}/distance"), distance)
    }
}

impl Drop for Sysfs {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs")
}

/// The topology of the committed fixture `name`.
fn fixture(name: &str) -> Topology {
    Topology::read(fixtures_dir().join(name))
}

/// Every file under `dir`, relative, with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read fixture").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let content = std::fs::read(&path).expect("read fixture file");
                files.insert(path.strip_prefix(dir).expect("under").to_owned(), content);
            }
        }
    }
    files
}

#[test]
fn the_committed_fixtures_are_what_the_builders_write() {
    for (name, build) in FIXTURES {
        let fresh = Sysfs::new(&format!("drift-{name}"));
        build(&fresh);
        assert!(
            tree(&fresh.0) == tree(&fixtures_dir().join(name)),
            "tests/fixtures/sysfs/{name} differs from its builder; run \
             `cargo test -p lockyard-topo --test topology -- --ignored regenerate`"
        );
    }
}

#[test]
#[ignore = "rewrites the committed fixtures under tests/fixtures/sysfs"]
fn regenerate_fixtures() {
    for (name, build) in FIXTURES {
        let dir = fixtures_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        build(&Sysfs(dir, true));
    }
}

fn list(text: &str) -> CpuList {
    text.parse().expect("cpu list")
}

fn keys(topology: &Topology) -> Vec<u32> {
    topology.llcs.iter().map(|l| l.key).collect()
}

fn l1(shared: &str) -> [Cache<'_>; 2] {
    [(1, "Data", None, "32K", shared), (1, "Instruction", None, "32K", shared)]
}

/// Writes one fixture tree.
type Builder = fn(&Sysfs);

const FIXTURES: &[(&str, Builder)] = &[
    ("smt", build_smt),
    ("numa", build_numa),
    ("many", build_many),
    ("hybrid", build_hybrid),
    ("memnode", build_memnode),
    ("offline", build_offline),
    ("odd", build_odd),
    ("bare", build_bare),
];

fn build_smt(fx: &Sysfs) {
    fx.file("cpu/online", "0-7").node(0, "0-7", "10");
    for cpu in 0..8 {
        let core = cpu % 4;
        let siblings = format!("{core},{}", core + 4);
        let [d, i] = l1(&siblings);
        fx.cpu(
            cpu,
            core,
            0,
            &siblings,
            &[d, i, (2, "Unified", Some(core), "1024K", &siblings), (3, "Unified", Some(0), "16384K", "0-7")],
        );
    }
}

fn build_numa(fx: &Sysfs) {
    fx.file("cpu/online", "0-7").node(0, "0-3", "10 21").node(1, "4-7", "21 10");
    for cpu in 0..8 {
        let (package, shared) = if cpu < 4 { (0, "0-3") } else { (1, "4-7") };
        fx.cpu(cpu, cpu % 4, package, &cpu.to_string(), &[(3, "Unified", Some(package), "8192K", shared)]);
    }
}

fn build_many(fx: &Sysfs) {
    fx.file("cpu/online", "0-127").node(0, "0-127", "10");
    for cpu in 0..128 {
        let ccx = cpu / 8;
        let shared = format!("{}-{}", ccx * 8, ccx * 8 + 7);
        fx.cpu(cpu, cpu, 0, &cpu.to_string(), &[(3, "Unified", Some(ccx), "32768K", &shared)]);
    }
}

fn build_hybrid(fx: &Sysfs) {
    fx.file("cpu/online", "0-7").node(0, "0-7", "10");
    // Big cores 0-3 share an L3; little cores 4-7 stop at a shared L2.
    for cpu in 0..4 {
        fx.cpu(
            cpu,
            cpu,
            0,
            &cpu.to_string(),
            &[(2, "Unified", None, "512K", &cpu.to_string()), (3, "Unified", None, "4096K", "0-3")],
        );
    }
    for cpu in 4..8 {
        fx.cpu(
            cpu,
            cpu,
            0,
            &cpu.to_string(),
            &[(1, "Data", None, "32K", &cpu.to_string()), (2, "Unified", None, "2048K", "4-7")],
        );
    }
}

fn build_memnode(fx: &Sysfs) {
    fx.file("cpu/online", "0-3").file("node/has_memory", "0-1");
    fx.node(0, "0-3", "10 20").node(1, "", "20 10");
    for cpu in 0..4 {
        fx.cpu(cpu, cpu, 0, &cpu.to_string(), &[(3, "Unified", Some(0), "8192K", "0-3")]);
    }
}

fn build_offline(fx: &Sysfs) {
    fx.file("cpu/online", "0-1,3").node(0, "0-1,3", "10");
    for cpu in [0, 1, 3] {
        fx.cpu(cpu, cpu, 0, &cpu.to_string(), &[(3, "Unified", Some(0), "8192K", "0-1,3")]);
    }
    // An offline CPU keeps its directory but loses topology and caches.
    fx.file("cpu/cpu2/online", "0");
}

fn build_odd(fx: &Sysfs) {
    fx.file("cpu/online", "0-2").file("cpu/isolated", "2");
    // cpu0: no cache directory at all; cpu1: only an instruction cache and
    // a garbage size; cpu2: core_id -1, and no node directory anywhere.
    fx.file("cpu/cpu0/topology/core_id", "0");
    fx.cpu(1, 1, 0, "1", &[(1, "Instruction", None, "32K", "1")]);
    fx.cpu(2, 2, 0, "2", &[(3, "Unified", None, "lots", "2")]);
    fx.file("cpu/cpu2/topology/core_id", "-1");
}

fn build_bare(fx: &Sysfs) {
    fx.file("cpu/cpu0/topology/core_id", "0").file("cpu/cpu1/topology/core_id", "1");
}

#[test]
fn this_two_cpu_vm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/vm-2cpu");
    let topology = Topology::read(&root);
    assert_eq!(topology.online, list("0-1"));
    assert!(topology.isolated.is_empty());
    assert_eq!(topology.cpus.len(), 2);
    assert_eq!(keys(&topology), [0]);
    let llc = &topology.llcs[0];
    assert_eq!((llc.level, llc.kind.as_str(), llc.size_bytes), (3, "Unified", Some(32 << 20)));
    assert_eq!(llc.cpus, list("0-1"));
    assert_eq!(llc.lock_name(), "llc-0");
    assert_eq!(topology.nodes.len(), 1);
    assert_eq!(topology.nodes[0].distances, BTreeMap::from([(0, 10)]));
    assert!(topology.cpus.iter().all(|c| c.node == Some(0) && c.llc == Some(0)));
}

#[test]
fn one_socket_with_smt() {
    let topology = fixture("smt");
    assert_eq!(keys(&topology), [0], "one L3 for the socket");
    assert_eq!(topology.cpu(5).expect("cpu 5").smt_siblings, list("1,5"));
    assert_eq!(topology.cpu(5).expect("cpu 5").core, Some(1));
    assert_eq!(topology.llcs[0].size_bytes, Some(16 << 20));
}

#[test]
fn two_sockets_with_numa_distances() {
    let topology = fixture("numa");
    assert_eq!(keys(&topology), [0, 4]);
    assert_eq!(topology.llcs[1].id, Some(1));
    let cpu6 = topology.cpu(6).expect("cpu 6");
    assert_eq!((cpu6.package, cpu6.node, cpu6.llc), (Some(1), Some(1), Some(4)));
    assert_eq!(topology.nodes[1].distances, BTreeMap::from([(0, 21), (1, 10)]));
    assert!(!topology.nodes[0].memory_only);
}

#[test]
fn sixteen_llcs_of_eight_cpus() {
    let topology = fixture("many");
    assert_eq!(keys(&topology), (0..16).map(|c| c * 8).collect::<Vec<_>>());
    let names: Vec<String> = topology.llcs.iter().map(lockyard_topo::Llc::lock_name).collect();
    assert_eq!(names[15], "llc-120");
    assert!(topology.llcs.iter().all(|l| l.cpus.len() == 8));
    assert_eq!(topology.cpu(77).expect("cpu 77").llc, Some(72));
}

#[test]
fn hybrid_cores_with_different_last_level_caches() {
    let topology = fixture("hybrid");
    assert_eq!(keys(&topology), [0, 4]);
    assert_eq!((topology.llcs[0].level, topology.llcs[1].level), (3, 2));
    assert_eq!(topology.llcs[0].id, None, "no id file: none reported, the key still names it");
}

#[test]
fn a_memory_only_node() {
    let topology = fixture("memnode");
    assert_eq!(topology.nodes.len(), 2);
    assert!(topology.nodes[1].memory_only);
    assert!(topology.nodes[1].cpus.is_empty());
    assert!(!topology.nodes[0].memory_only);
    assert!(topology.cpus.iter().all(|c| c.node == Some(0)));
}

#[test]
fn offline_cpus_are_left_out() {
    let topology = fixture("offline");
    assert_eq!(topology.cpus.iter().map(|c| c.id).collect::<Vec<_>>(), [0, 1, 3]);
    assert!(topology.cpu(2).is_none());
    assert_eq!(topology.llcs[0].cpus, list("0-1,3"));
    assert_eq!(cpu_lock_name(3), "cpu-3");
}

#[test]
fn missing_and_odd_entries_are_tolerated() {
    let topology = fixture("odd");
    assert_eq!(topology.cpus.len(), 3);
    assert_eq!(topology.isolated, list("2"));
    let (cpu0, cpu1, cpu2) = (&topology.cpus[0], &topology.cpus[1], &topology.cpus[2]);
    assert_eq!((cpu0.llc, cpu0.package, cpu0.smt_siblings.clone()), (None, None, list("0")));
    assert_eq!(cpu1.llc, None, "an instruction cache is never an LLC");
    assert_eq!((cpu2.llc, cpu2.core, cpu2.node), (Some(2), None, None));
    assert_eq!(topology.llc(2).expect("llc").size_bytes, None);
    assert!(topology.nodes.is_empty());

    // Not even an online list: every cpuN directory counts.
    assert_eq!(fixture("bare").online, list("0-1"));
    // Nothing at all: an empty topology, not a panic.
    assert_eq!(Topology::read(Path::new("/nonexistent")), Topology::default());
}

#[test]
fn this_host_reads_and_this_process_may_use_some_of_it() {
    let topology = Topology::read(Path::new("/"));
    assert!(!topology.cpus.is_empty(), "{topology:?}");
    let allowed = topology.allowed();
    assert!(!allowed.is_empty());
    assert!(allowed.iter().all(|cpu| topology.online.contains(cpu)));
    // The JSON round-trips: the value is what a fixture would hold.
    let json = serde_json::to_string(&topology).expect("serialize");
    assert_eq!(serde_json::from_str::<Topology>(&json).expect("deserialize"), topology);
}
