//! `lockyard topo`: the host's CPUs, LLCs and nodes, with the holders of
//! their reservation locks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::process::Command;

use anyhow::Context;
use lockyard::flock::Holders;
use lockyard::topo::{
    Amount, CgroupParent, Cpu, Llc, MemPolicy, Mode, Placement, Request, Reserver, Smt, Topology, Wait,
    cpu_lock_name,
};
use lockyard_cli::cli::{ReserveArgs, ReserveMode};
use lockyard_cli::units::format_size;
use serde::Serialize;

use crate::exit::{Exit, Outcome};
use crate::watch::Frame;
use crate::{SCHEMA, emit, print_json};

/// The reservation lock directory: the flag, `LOCKYARD_LOCK_DIR`, the FHS
/// lock directory where the host has one, else `/tmp/lockyard`.
pub(crate) fn lock_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_owned();
    }
    if let Some(dir) = std::env::var_os("LOCKYARD_LOCK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if Path::new("/run/lock").is_dir() {
        return PathBuf::from("/run/lock/lockyard");
    }
    PathBuf::from("/tmp/lockyard")
}

#[derive(Serialize)]
struct TopoReport<'a> {
    schema: u32,
    lock_dir: String,
    allowed: String,
    topology: &'a Topology,
    /// Every CPU's and LLC's reservation lock, with its node and holders.
    locks: Locks,
    /// Lock name to its holders, for the held ones only.
    held: BTreeMap<String, Holders>,
}

#[derive(Serialize)]
struct Locks {
    cpus: Vec<LockView>,
    llcs: Vec<LockView>,
}

/// The cgroup parent `--cgroup-parent` names, or the default.
fn cgroup_parent(dir: Option<&Path>) -> Result<CgroupParent, lockyard::topo::EnforceError> {
    match dir {
        Some(dir) => CgroupParent::at(dir),
        None => CgroupParent::discover(),
    }
}

pub(crate) fn topo(args: &lockyard_cli::cli::TopoArgs) -> Outcome {
    let dir = lock_dir(args.lock_dir.as_deref());
    if args.sweep {
        let parent = cgroup_parent(args.cgroup_parent.as_deref())?;
        let topology = Topology::read(Path::new("/"));
        let allowed = topology.allowed();
        let swept = Reserver::new(&dir, topology, &allowed)?.sweep_cgroups(&parent)?;
        if args.json {
            #[derive(Serialize)]
            struct Swept<'a> {
                schema: u32,
                parent: String,
                #[serde(flatten)]
                swept: &'a lockyard::topo::CgroupSweep,
            }
            print_json(&Swept {
                schema: SCHEMA,
                parent: parent.path().display().to_string(),
                swept: &swept,
            })?;
            return Ok(Exit::SUCCESS);
        }
        let mut text = String::new();
        for (what, paths) in
            [("removed", &swept.removed), ("kept, still running", &swept.busy), ("kept, in use", &swept.live)]
        {
            for path in paths {
                text.push_str(&format!("{what}: {}\n", lockyard_cli::table::escape_path(path)));
            }
        }
        if text.is_empty() {
            text = format!("no reservation cgroups in {}\n", lockyard_cli::table::escape_path(parent.path()));
        }
        emit(&text)?;
        return Ok(Exit::SUCCESS);
    }
    let (json, watching) = (args.json, args.watch.is_some());
    let frame = move || topo_frame(&dir, json, watching);
    match args.watch {
        Some(interval) => crate::watch::watch(interval, frame),
        None => {
            crate::watch::print(frame()?)?;
            Ok(Exit::SUCCESS)
        }
    }
}

/// One per-CPU or per-LLC reservation lock in `topo --json`.
#[derive(Serialize)]
struct LockView {
    /// `cpu-N` or `llc-K`.
    name: String,
    /// The CPU's, or the LLC's lowest CPU's, NUMA node.
    node: Option<u32>,
    /// The lock file.
    lock: String,
    /// Who holds it: pid, command, and since when the process runs (Unix
    /// seconds).
    holders: Vec<HolderView>,
}

#[derive(Serialize)]
struct HolderView {
    pid: Option<u32>,
    command: Option<String>,
    since: Option<u64>,
    mode: Option<lockyard::flock::LockMode>,
}

/// The topology map (text) or report (JSON) as it is now.
fn topo_frame(dir: &Path, json: bool, watching: bool) -> anyhow::Result<Frame> {
    let topology = Topology::read(Path::new("/"));
    let names: Vec<String> = topology
        .cpus
        .iter()
        .map(|c| cpu_lock_name(c.id))
        .chain(topology.llcs.iter().map(Llc::lock_name))
        .collect();
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(format!("{n}.lock"))).collect();
    // One read of /proc for the whole view; a lock file that does not
    // exist has never been used, so nobody holds it.
    let found = lockyard::flock::holders_of_many(&paths, false)?;
    let held: BTreeMap<String, Holders> = names
        .into_iter()
        .zip(found)
        .filter_map(|(name, (_, holders))| {
            holders.ok().filter(|h| h.holding().next().is_some()).map(|h| (name, h))
        })
        .collect();
    let allowed = topology.allowed();
    if json {
        let boot = boot_time();
        let view = |name: String, node: Option<u32>| {
            let holders = held.get(&name).map_or_else(Vec::new, |h| {
                h.holding()
                    .map(|holder| HolderView {
                        pid: holder.pid,
                        command: holder.cmdline.clone(),
                        since: holder.start_time.zip(boot).map(|(ticks, boot)| boot + ticks / clock_ticks()),
                        mode: holder.mode,
                    })
                    .collect()
            });
            LockView { lock: dir.join(format!("{name}.lock")).display().to_string(), name, node, holders }
        };
        let cpus: Vec<LockView> = topology.cpus.iter().map(|c| view(cpu_lock_name(c.id), c.node)).collect();
        let llcs: Vec<LockView> = topology
            .llcs
            .iter()
            .map(|l| view(l.lock_name(), topology.cpu(l.key).and_then(|c| c.node)))
            .collect();
        let report = TopoReport {
            schema: SCHEMA,
            lock_dir: dir.display().to_string(),
            allowed: allowed.to_string(),
            topology: &topology,
            locks: Locks { cpus, llcs },
            held,
        };
        return crate::watch::json(&report, watching);
    }
    let none = |s: String| if s.is_empty() { "none".to_owned() } else { s };
    let mut out = format!(
        "{} CPUs online ({}), {} allowed here ({}), isolated: {}\nreservation locks in {}\n",
        topology.online.len(),
        topology.online,
        allowed.len(),
        allowed,
        none(topology.isolated.to_string()),
        dir.display()
    );
    let state = |name: &str| match held.get(name) {
        Some(holders) => format!("held by {holders}"),
        None => "free".to_owned(),
    };
    let node_of_llc = |llc: &Llc| topology.cpu(llc.key).and_then(|c| c.node);
    for node in &topology.nodes {
        let distances: Vec<String> = node.distances.iter().map(|(n, d)| format!("{n}:{d}")).collect();
        let kind = if node.memory_only { "memory only" } else { "cpus" };
        out.push_str(&format!(
            "node {}: {kind} {}, distances {}\n",
            node.id,
            if node.memory_only { String::new() } else { node.cpus.to_string() },
            none(distances.join(" "))
        ));
        if !node.memory_only {
            for llc in topology.llcs.iter().filter(|l| node_of_llc(l) == Some(node.id)) {
                out.push_str(&llc_lines(&topology, llc, &state));
            }
        }
    }
    let unplaced: Vec<&Llc> = topology.llcs.iter().filter(|l| node_of_llc(l).is_none()).collect();
    if !unplaced.is_empty() {
        out.push_str("no NUMA node:\n");
        for llc in unplaced {
            out.push_str(&llc_lines(&topology, llc, &state));
        }
    }
    let loose: Vec<&Cpu> = topology.cpus.iter().filter(|c| c.llc.is_none()).collect();
    if !loose.is_empty() {
        out.push_str("CPUs whose LLC sysfs does not describe:\n");
        for cpu in loose {
            out.push_str(&cpu_line(cpu, &state));
        }
    }
    Ok(Frame::Text(out))
}

/// Boot time, Unix seconds (`btime` of /proc/stat).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// Clock ticks per second, the unit of a process's start time.
fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

fn llc_lines(topology: &Topology, llc: &Llc, state: &dyn Fn(&str) -> String) -> String {
    let name = llc.lock_name();
    let size = llc.size_bytes.map_or_else(|| "size unknown".to_owned(), format_size);
    let mut out = format!("  {name:<8} L{} {size}, cpus {}: {}\n", llc.level, llc.cpus, state(&name));
    for cpu in topology.cpus.iter().filter(|c| c.llc == Some(llc.key)) {
        out.push_str(&cpu_line(cpu, state));
    }
    out
}

fn cpu_line(cpu: &Cpu, state: &dyn Fn(&str) -> String) -> String {
    let name = cpu_lock_name(cpu.id);
    let field = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    format!(
        "    {name:<8} core {}, package {}, smt {}: {}\n",
        field(cpu.core),
        field(cpu.package),
        cpu.smt_siblings,
        state(&name)
    )
}

/// What `reserve --verbose`/`--json` says was chosen.
#[derive(Serialize)]
struct Chosen<'a> {
    schema: u32,
    cpus: String,
    jobs: usize,
    mode: String,
    llcs: Vec<String>,
    nodes: &'a [u32],
    /// Set when the CPUs span several NUMA nodes (memory is then remote
    /// for some of them).
    numa_spill: bool,
    cgroup: Option<String>,
}

/// Say what was reserved: with `--json` one line on stdout before the
/// command's output, with `--verbose` a few on stderr, and a warning on
/// stderr in both when the reservation spans NUMA nodes.
fn report(args: &ReserveArgs, reservation: &lockyard::topo::Reservation) -> anyhow::Result<()> {
    if !args.json && !args.verbose {
        return Ok(());
    }
    let chosen = Chosen {
        schema: SCHEMA,
        cpus: reservation.cpus().to_string(),
        jobs: reservation.jobs(),
        mode: reservation.mode().to_string(),
        llcs: reservation.llcs().iter().map(|k| format!("llc-{k}")).collect(),
        nodes: reservation.nodes(),
        numa_spill: reservation.nodes().len() > 1,
        cgroup: reservation.cpuset().map(|c| c.path().display().to_string()),
    };
    if args.json {
        let mut line = serde_json::to_string(&chosen)?;
        line.push('\n');
        emit(&line)?;
    }
    if args.verbose {
        let nodes: Vec<String> = chosen.nodes.iter().map(ToString::to_string).collect();
        let mut text = format!(
            "lockyard: reserved cpus {} ({} jobs, {}), {}, node {}\n",
            chosen.cpus,
            chosen.jobs,
            chosen.mode,
            chosen.llcs.join(","),
            if nodes.is_empty() { "unknown".to_owned() } else { nodes.join(",") },
        );
        if let Some(cpuset) = reservation.cpuset() {
            text.push_str(&format!(
                "lockyard: enforced by the {} cgroup {}\n",
                cpuset.hierarchy(),
                lockyard_cli::table::escape_path(cpuset.path())
            ));
        }
        eprint!("{text}");
    }
    if chosen.numa_spill {
        eprintln!(
            "lockyard: warning: the reservation spans NUMA nodes {:?}; memory is remote for some of its CPUs \
             (--node N keeps it on one)",
            chosen.nodes
        );
    }
    Ok(())
}

pub(crate) fn reserve(args: &ReserveArgs) -> Outcome {
    let amount = match (args.cpus, args.llcs) {
        (Some(cpus), None) => cpus,
        (None, Some(n)) => Amount::Llcs(n),
        _ => unreachable!("clap requires exactly one of --cpus and --llcs"),
    };
    let mode = match args.mode {
        ReserveMode::ExclusiveLlc => Mode::ExclusiveLlc,
        ReserveMode::ExclusiveCpu => Mode::ExclusiveCpu,
        ReserveMode::Shared => Mode::Shared,
    };
    let mut request = Request::new(amount).mode(mode);
    if let Some(node) = args.node {
        request = request.node(node);
    }
    if args.spread {
        request = request.placement(Placement::Spread);
    }
    if args.smt_apart {
        request = request.smt(Smt::Apart);
    }
    // Without -w, as long as it takes (like flock(1)).
    let wait = args.wait.map_or_else(Wait::default, Wait::timeout);
    let topology = Topology::read(Path::new("/"));
    let allowed = topology.allowed();
    let dir = lock_dir(args.lock_dir.as_deref());
    let reserver = Reserver::new(&dir, topology, &allowed)?;
    let mut reservation =
        if args.nonblock { reserver.reserve(&request) } else { reserver.reserve_wait(&request, &wait) }?;
    if args.enforce {
        let parent =
            cgroup_parent(args.cgroup_parent.as_deref()).context("cannot enforce the reservation")?;
        reserver.enforce(&mut reservation, &parent).context("cannot enforce the reservation")?;
    }
    if args.membind {
        reservation.set_memory_policy(MemPolicy::Bind);
    } else if args.interleave {
        reservation.set_memory_policy(MemPolicy::Interleave);
    }
    tracing::info!(%reservation, "reserved");
    report(args, &reservation)?;
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("LOCKYARD_CPUS", reservation.cpus().to_string())
        .env("LOCKYARD_JOBS", reservation.jobs().to_string());
    if !args.close {
        crate::run::inherit(reservation.lock_fds())
            .context("cannot hand the reservation's locks to the command")?;
    }
    let code =
        crate::run::spawn_with_and_wait(command, |c| reservation.spawn(c), |_| {}, crate::run::cannot_run);
    if args.close {
        drop(reservation);
    } else {
        // Processes COMMAND left running keep the CPUs they inherited.
        drop(reservation.into_fds());
    }
    Ok(code)
}
