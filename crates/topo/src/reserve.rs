//! Reserving CPUs and whole LLCs with kernel locks.
//!
//! # Locks per mode
//!
//! | mode | each chosen LLC's `llc-K` | each chosen CPU's `cpu-C` |
//! |---|---|---|
//! | [`Mode::ExclusiveLlc`] (benchmarks) | exclusive | — (the LLC lock keeps everyone out) |
//! | [`Mode::ExclusiveCpu`] (default) | shared | exclusive |
//! | [`Mode::Shared`] (a CPU budget) | shared | — |
//!
//! So a benchmark's LLC excludes every other reservation touching it;
//! jobs share an LLC but never a CPU; budget jobs share CPUs and LLCs
//! with each other and with exclusive-CPU jobs, never with a benchmark.
//!
//! # Acquisition
//!
//! A plan is made from one snapshot of `/proc/locks` (one read, plus a
//! `statx` of each lock file to learn its identity), then every lock of the
//! plan is tried without blocking in one canonical order: LLC locks by
//! ascending key, then CPU locks by ascending number. A busy lock releases
//! everything taken so far and the plan is remade from a fresh snapshot,
//! a bounded number of times. No reserver ever blocks while holding a
//! resource lock, so no set of reservers can deadlock.
//!
//! # Waiting and fairness
//!
//! [`Reserver::reserve_wait`] adds a gate, `gate.lock`. Every attempt
//! first takes the gate shared for the moment of its tries. A waiter whose
//! attempt fails takes the gate exclusively, which holds back every new
//! attempt, picks the set of resources with the fewest busy ones, and
//! blocks on their locks one at a time in the canonical order (the
//! lockyard-flock wait: woken by the release, no polling). Holders release
//! without needing the gate, so this cannot deadlock either, and a large
//! request cannot be starved by a stream of small ones: once it waits at
//! the gate, no new reservation is granted until it has what it needs.
//! Waiters queue on the gate among themselves in the kernel's order, which
//! is not strictly FIFO.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lockyard_flock::{
    Busy, DirTrust, LockDir, LockError, LockFile, LockGuard, LockMode, LockOptions, Snapshot, Wait,
};
use lockyard_procfs::{CpuList, LockKey};

use crate::cgroup::{CgroupParent, CgroupSweep, Cpuset, EnforceError};
use crate::plan::{self, Plan, Use};
use crate::{Llc, Topology, cpu_lock_name};

/// How reserved resources are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mode {
    /// Whole LLCs nobody else uses (benchmarks).
    ExclusiveLlc,
    /// CPUs nobody else uses, in LLCs other jobs may share.
    #[default]
    ExclusiveCpu,
    /// A budget of CPUs in whole LLCs, shared with other budget and
    /// exclusive-CPU jobs, never with a benchmark.
    Shared,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::ExclusiveLlc => "exclusive-llc",
            Mode::ExclusiveCpu => "exclusive-cpu",
            Mode::Shared => "shared",
        })
    }
}

/// How many of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Amount {
    /// This many CPUs.
    Cpus(usize),
    /// This share, in percent (1 to 100), of the CPUs this process may
    /// use (on the requested node, if any), rounded up and at least one: a
    /// build's budget that scales with the host (ktstr's default is 30%).
    CpuPercent(u32),
    /// This many whole LLCs (every allowed CPU in them).
    Llcs(usize),
}

impl Amount {
    /// The CPUs a percentage of `available` comes to: rounded up, at
    /// least one (of none, none).
    pub fn percent_of(percent: u32, available: usize) -> usize {
        let share = (available as u128 * u128::from(percent)).div_ceil(100);
        usize::try_from(share).unwrap_or(usize::MAX).max(usize::from(available > 0))
    }
}

/// Where to put a reservation among LLCs already in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Prefer LLCs other jobs already share, keeping idle LLCs whole for
    /// benchmarks.
    #[default]
    Consolidate,
    /// Prefer idle LLCs, for the least interference.
    Spread,
}

/// How to treat SMT siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Smt {
    /// Siblings of one core next to each other (fewest cores).
    #[default]
    Together,
    /// One CPU per core before any second sibling (most cores).
    Apart,
}

/// What to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// How many of what.
    pub amount: Amount,
    /// How they are shared.
    pub mode: Mode,
    /// Only on this NUMA node.
    pub node: Option<u32>,
    /// Among LLCs in use.
    pub placement: Placement,
    /// SMT siblings.
    pub smt: Smt,
}

impl Request {
    /// `amount` in the default mode (exclusive CPUs), anywhere allowed.
    pub fn new(amount: Amount) -> Self {
        Request {
            amount,
            mode: Mode::default(),
            node: None,
            placement: Placement::default(),
            smt: Smt::default(),
        }
    }

    /// In this mode.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Only on this node.
    #[must_use]
    pub fn node(mut self, node: u32) -> Self {
        self.node = Some(node);
        self
    }

    /// With this placement policy.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// With this SMT policy.
    #[must_use]
    pub fn smt(mut self, smt: Smt) -> Self {
        self.smt = smt;
        self
    }
}

/// Why a reservation was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// The request can never be met on this host with these CPUs.
    #[error("cannot reserve {wanted}: {why}")]
    Impossible {
        /// The request, in words.
        wanted: String,
        /// Why not.
        why: String,
    },
    /// Everything that would do is in use now.
    #[error("cannot reserve {wanted} now: {}", busy_list(busy))]
    Busy {
        /// The request, in words.
        wanted: String,
        /// Each busy resource's lock name with its holders.
        busy: Busy,
    },
    /// A wait ran out.
    #[error("cannot reserve {wanted} within {waited:.1?}: {}", busy_list(busy))]
    Timeout {
        /// The request, in words.
        wanted: String,
        /// How long was waited.
        waited: Duration,
        /// What was still busy.
        busy: Busy,
    },
    /// The wait was cancelled.
    #[error("reserving {wanted}: cancelled")]
    Cancelled {
        /// The request, in words.
        wanted: String,
    },
    /// A lock file could not be opened or locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The lock directory could not be prepared.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// For `io::Result` code: `?` turns a [`ReserveError`] into an
/// [`std::io::Error`] of the matching kind, the error kept inside: busy is
/// `WouldBlock`, a timeout `TimedOut`, a cancelled wait `Interrupted`, a
/// request that can never fit `InvalidInput`, lock and I/O errors their
/// own kind.
impl From<ReserveError> for std::io::Error {
    fn from(err: ReserveError) -> Self {
        std::io::Error::new(err.io_kind(), err)
    }
}

impl ReserveError {
    /// The [`std::io::ErrorKind`] this error stands for.
    pub fn io_kind(&self) -> std::io::ErrorKind {
        use std::io::ErrorKind;
        match self {
            ReserveError::Impossible { .. } => ErrorKind::InvalidInput,
            ReserveError::Busy { .. } => ErrorKind::WouldBlock,
            ReserveError::Timeout { .. } => ErrorKind::TimedOut,
            ReserveError::Cancelled { .. } => ErrorKind::Interrupted,
            ReserveError::Lock(e) => e.io_kind(),
            ReserveError::Io { source, .. } => source.kind(),
        }
    }

    /// Whether other processes hold what was asked for: busy now, or
    /// still busy when a wait ran out, as [`LockError::is_busy`] means it
    /// (not a request that can never fit, a broken lock directory, or a
    /// cancelled wait).
    pub fn is_busy(&self) -> bool {
        matches!(self, ReserveError::Busy { .. } | ReserveError::Timeout { .. })
    }
}

fn busy_list(busy: &Busy) -> String {
    if busy.is_empty() { "contended while trying".to_owned() } else { busy.to_string() }
}

/// Attempts at a plan before giving up as busy: each failed one re-reads
/// /proc/locks, so a later plan sees who took what meanwhile.
const ATTEMPTS: usize = 4;

/// Reserves resources of one topology in one lock directory.
#[derive(Debug, Clone)]
pub struct Reserver {
    dir: LockDir,
    topology: Topology,
    allowed: CpuList,
}

impl Reserver {
    /// Reserve from `topology`, within `allowed` (usually
    /// [`Topology::allowed`]), with lock files in `dir`. The directory is
    /// created world-writable and sticky (mode 1777, like `/tmp`) if
    /// missing, so every user of the host coordinates through it; lock
    /// files are made 0666 whatever the umask.
    ///
    /// The directory, and every one on the way to it, must belong to the
    /// caller or root ([`DirTrust::private`]): the owner of a lock
    /// directory can unlink the lock files in it and so hand the same CPUs
    /// to two reservations. For several users to share reservations, root
    /// creates the directory (`install -d -o root -m 1777 DIR`, or a
    /// tmpfiles.d line); one that another user created is refused.
    ///
    /// # Errors
    /// The directory cannot be created or is refused by lockyard-flock's
    /// hardening ([`lockyard_flock::LockError::Untrusted`] for a directory
    /// of another user).
    pub fn new(dir: impl AsRef<Path>, topology: Topology, allowed: &CpuList) -> Result<Self, ReserveError> {
        let dir = LockDir::create(dir, 0o1777, &DirTrust::private())?;
        let allowed = allowed.intersection(&topology.online);
        Ok(Reserver { dir, topology: with_every_cpu_in_an_llc(topology), allowed })
    }

    /// The topology reserved from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Enforce `reservation` with a cpuset cgroup below `parent` holding
    /// exactly its CPUs and their memory nodes, so that what
    /// [`Reservation::spawn`] starts cannot widen its affinity (see
    /// [`crate::cgroup`]). Orphaned cgroups below `parent` are swept first.
    /// The cgroup is removed when the reservation is dropped.
    ///
    /// # Errors
    /// [`EnforceError`]: no usable cpuset hierarchy, no permission, or the
    /// CPUs or nodes not in the parent's cpuset.
    pub fn enforce(&self, reservation: &mut Reservation, parent: &CgroupParent) -> Result<(), EnforceError> {
        match crate::cgroup::sweep(parent, &self.dir) {
            Ok(swept) if !swept.removed.is_empty() => {
                tracing::info!(removed = swept.removed.len(), "swept orphaned reservation cgroups");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sweep orphaned reservation cgroups"),
        }
        let cpuset = Cpuset::create(parent, &self.dir, &reservation.cpus, &reservation.nodes)?;
        reservation.cpuset = Some(cpuset);
        Ok(())
    }

    /// Remove the reservation cgroups below `parent` whose creator is gone
    /// (recognised by the lock it held in this lock directory, never by
    /// pid or age); those whose processes still run are kept.
    ///
    /// # Errors
    /// `parent` cannot be listed, or an orphan cannot be removed.
    pub fn sweep_cgroups(&self, parent: &CgroupParent) -> Result<CgroupSweep, EnforceError> {
        crate::cgroup::sweep(parent, &self.dir)
    }

    /// Reserve now, without waiting: all or nothing.
    ///
    /// # Errors
    /// [`ReserveError::Impossible`] at once if the request can never fit;
    /// [`ReserveError::Busy`] naming the holders if it does not fit now.
    pub fn reserve(&self, request: &Request) -> Result<Reservation, ReserveError> {
        let request = &self.budget(request)?;
        self.check_possible(request)?;
        let gate = self.file("gate", LockMode::Shared)?;
        // A waiter holding the gate goes first.
        let Some(_gate) = gate.try_lock()? else {
            return Err(ReserveError::Busy {
                wanted: describe(request),
                busy: self.dir.holders(&["gate".to_owned()]),
            });
        };
        self.attempt(request)
    }

    /// Reserve, waiting until it can be had (see the module docs for the
    /// fairness policy), as `wait` says: at most its timeout (none for
    /// [`Wait::default`]), and until its token, if any, is cancelled. Do
    /// not call it while holding a reservation: a waiter at the gate may
    /// be waiting for that one.
    ///
    /// # Errors
    /// [`ReserveError::Impossible`] at once; [`ReserveError::Timeout`] or
    /// [`ReserveError::Cancelled`].
    pub fn reserve_wait(&self, request: &Request, wait: &Wait) -> Result<Reservation, ReserveError> {
        let request = &self.budget(request)?;
        self.check_possible(request)?;
        let started = Instant::now();
        let deadline = wait.deadline_from(started);
        let wait = || wait.until(deadline);
        let stopped = |e: LockError, busy: Vec<String>| match e {
            LockError::Timeout { .. } => ReserveError::Timeout {
                wanted: describe(request),
                waited: started.elapsed(),
                busy: self.dir.holders(&busy),
            },
            LockError::Cancelled { .. } => ReserveError::Cancelled { wanted: describe(request) },
            e => ReserveError::Lock(e),
        };
        // The quick way, behind any waiter.
        {
            let _gate =
                self.file("gate", LockMode::Shared)?.lock_with(&wait()).map_err(|e| stopped(e, vec![]))?;
            match self.attempt(request) {
                Err(ReserveError::Busy { .. }) => {}
                other => return other,
            }
        }
        // Our turn at the gate: nobody new gets anything until we do.
        let _gate =
            self.file("gate", LockMode::Exclusive)?.lock_with(&wait()).map_err(|e| stopped(e, vec![]))?;
        let plan = self.plan(request, &self.usage()?, true)?;
        let mut guards = Vec::with_capacity(plan.locks.len());
        for (name, mode) in &plan.locks {
            let guard =
                self.file(name, *mode)?.lock_with(&wait()).map_err(|e| stopped(e, vec![name.clone()]))?;
            guards.push(guard);
        }
        Ok(self.reservation(request, &plan, guards))
    }

    /// The CPUs a request may draw on: the allowed ones, on its node if
    /// it names one.
    fn pool(&self, request: &Request) -> Result<CpuList, ReserveError> {
        match request.node {
            Some(node) => match self.topology.nodes.iter().find(|n| n.id == node) {
                Some(node) => Ok(self.allowed.intersection(&node.cpus)),
                None => Err(ReserveError::Impossible {
                    wanted: describe(request),
                    why: format!("there is no NUMA node {node}"),
                }),
            },
            None => Ok(self.allowed.clone()),
        }
    }

    /// The request with a percentage turned into its number of CPUs.
    fn budget(&self, request: &Request) -> Result<Request, ReserveError> {
        let Amount::CpuPercent(percent) = request.amount else { return Ok(*request) };
        if !(1..=100).contains(&percent) {
            return Err(ReserveError::Impossible {
                wanted: describe(request),
                why: "a share of the CPUs is 1% to 100%".to_owned(),
            });
        }
        let cpus = Amount::percent_of(percent, self.pool(request)?.len());
        Ok(Request { amount: Amount::Cpus(cpus), ..*request })
    }

    fn check_possible(&self, request: &Request) -> Result<(), ReserveError> {
        let impossible = |why: String| Err(ReserveError::Impossible { wanted: describe(request), why });
        let pool = self.pool(request)?;
        let llcs = self.topology.llcs.iter().filter(|l| !l.cpus.intersection(&pool).is_empty()).count();
        let place = request.node.map_or_else(String::new, |n| format!(" on node {n}"));
        match request.amount {
            Amount::Cpus(0) | Amount::Llcs(0) => impossible("nothing was asked for".to_owned()),
            Amount::Cpus(n) if n > pool.len() => impossible(format!(
                "only {} CPUs{place} are allowed to this process ({})",
                pool.len(),
                self.allowed
            )),
            Amount::Llcs(n) if n > llcs => {
                impossible(format!("only {llcs} LLCs{place} have CPUs allowed to this process"))
            }
            _ => Ok(()),
        }
    }

    /// Plan and try, a bounded number of times.
    fn attempt(&self, request: &Request) -> Result<Reservation, ReserveError> {
        let mut last_busy = Busy::default();
        for _ in 0..ATTEMPTS {
            let usage = self.usage()?;
            let plan = match self.plan(request, &usage, false) {
                Ok(plan) => plan,
                Err(ReserveError::Busy { busy, .. }) => {
                    last_busy = busy;
                    break;
                }
                Err(e) => return Err(e),
            };
            let mut guards = Vec::with_capacity(plan.locks.len());
            let mut conflict = None;
            for (name, mode) in &plan.locks {
                match self.file(name, *mode)?.try_lock()? {
                    Some(guard) => guards.push(guard),
                    None => {
                        conflict = Some(name.clone());
                        break;
                    }
                }
            }
            match conflict {
                None => return Ok(self.reservation(request, &plan, guards)),
                // Someone took it since the snapshot: let go, look again.
                Some(name) => {
                    drop(guards);
                    last_busy = self.dir.holders(&[name]);
                }
            }
        }
        Err(ReserveError::Busy { wanted: describe(request), busy: last_busy })
    }

    fn file(&self, name: &str, mode: LockMode) -> Result<LockFile, ReserveError> {
        // Every user's reservations live side by side in this directory.
        let options = LockOptions::new().mode(mode).permissions(0o666).allow_foreign_owner();
        Ok(self.dir.lock_file(name, options)?)
    }

    /// How every LLC and CPU is held now, from one snapshot of /proc/locks:
    /// one pass over its records, then one `statx` per lock file (a scan
    /// of the records per file would make planning quadratic).
    fn usage(&self) -> Result<Use, ReserveError> {
        let snapshot = Snapshot::read()?;
        let mut by_key: HashMap<LockKey, (bool, usize)> = HashMap::new();
        for record in snapshot.locks().records() {
            if let (false, Some(key)) = (record.is_waiter(), record.key()) {
                let entry = by_key.entry(key).or_default();
                entry.0 |= record.mode() == lockyard_procfs::RecordMode::Write;
                entry.1 += 1;
            }
        }
        let held = |name: &str| -> (bool, usize) {
            let Ok(id) = snapshot.file_id(&self.dir.lock_path(name)) else { return (false, 0) };
            by_key.get(&id.key).copied().unwrap_or_default()
        };
        let llc = self.topology.llcs.iter().map(|l| held(&l.lock_name())).collect();
        let cpu = self.allowed.iter().map(|c| (c, held(&cpu_lock_name(c)).1 > 0)).collect();
        Ok(Use { llc, cpu })
    }

    /// Choose resources (see [`plan::plan`]); too few is busy.
    fn plan(&self, request: &Request, usage: &Use, ignore_busy: bool) -> Result<Plan, ReserveError> {
        plan::plan(&self.topology, &self.allowed, usage, request, ignore_busy)
            .ok_or_else(|| self.busy(request, usage))
    }

    fn busy(&self, request: &Request, usage: &Use) -> ReserveError {
        let mut names: Vec<String> = Vec::new();
        for (i, llc) in self.topology.llcs.iter().enumerate() {
            if usage.llc[i].1 > 0 {
                names.push(llc.lock_name());
            }
        }
        names.extend(usage.cpu.iter().filter(|(_, held)| **held).map(|(c, _)| cpu_lock_name(*c)));
        names.sort();
        ReserveError::Busy { wanted: describe(request), busy: self.dir.holders(&names) }
    }

    fn reservation(&self, request: &Request, plan: &Plan, guards: Vec<LockGuard>) -> Reservation {
        let llcs: Vec<u32> = plan.llcs.iter().map(|&i| self.topology.llcs[i].key).collect();
        let cpus: CpuList = plan.cpus.iter().copied().collect();
        let mut nodes: Vec<u32> =
            plan.cpus.iter().filter_map(|&c| self.topology.cpu(c).and_then(|cpu| cpu.node)).collect();
        nodes.sort_unstable();
        nodes.dedup();
        Reservation { mode: request.mode, cpus, llcs, nodes, guards, cpuset: None, memory: None }
    }
}

/// A CPU whose LLC sysfs does not describe would never be reservable, as
/// plans are made of LLCs: give each such CPU an LLC of its own, named by
/// its number like any LLC (no real LLC has it as its lowest CPU, since it
/// is in none).
fn with_every_cpu_in_an_llc(mut topology: Topology) -> Topology {
    let mut added = false;
    for cpu in &mut topology.cpus {
        if cpu.llc.is_none() {
            cpu.llc = Some(cpu.id);
            topology.llcs.push(Llc {
                key: cpu.id,
                id: None,
                level: 0,
                kind: "unknown".to_owned(),
                size_bytes: None,
                cpus: std::iter::once(cpu.id).collect(),
            });
            added = true;
        }
    }
    if added {
        topology.llcs.sort_by_key(|l| l.key);
    }
    topology
}

fn describe(request: &Request) -> String {
    let what = match request.amount {
        Amount::Cpus(n) => format!("{n} CPU{}", if n == 1 { "" } else { "s" }),
        Amount::CpuPercent(p) => format!("{p}% of the CPUs"),
        Amount::Llcs(n) => format!("{n} LLC{}", if n == 1 { "" } else { "s" }),
    };
    let node = request.node.map_or_else(String::new, |n| format!(" on node {n}"));
    format!("{what}{node} ({})", request.mode)
}

/// Reserved resources, released when dropped (or when the process dies).
#[must_use = "the resources are released as soon as the reservation is dropped"]
#[derive(Debug)]
pub struct Reservation {
    mode: Mode,
    cpus: CpuList,
    llcs: Vec<u32>,
    nodes: Vec<u32>,
    guards: Vec<LockGuard>,
    /// Declared after the guards: the cgroup goes first when dropped.
    cpuset: Option<Cpuset>,
    memory: Option<MemPolicy>,
}

/// Where a reservation's command may allocate memory: among the NUMA
/// nodes of the reserved CPUs (`set_mempolicy(2)`, as `numactl
/// --membind`/`--interleave` does, inherited by everything it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemPolicy {
    /// Only on those nodes (`MPOL_BIND`).
    Bind,
    /// Spread page by page over those nodes (`MPOL_INTERLEAVE`).
    Interleave,
}

impl Reservation {
    /// The CPUs to run on.
    pub fn cpus(&self) -> &CpuList {
        &self.cpus
    }

    /// The keys of the LLCs involved (held exclusively in
    /// [`Mode::ExclusiveLlc`], shared otherwise).
    pub fn llcs(&self) -> &[u32] {
        &self.llcs
    }

    /// The NUMA nodes of the CPUs.
    pub fn nodes(&self) -> &[u32] {
        &self.nodes
    }

    /// The mode it was made in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A job count for `make -jN`: one per CPU.
    pub fn jobs(&self) -> usize {
        self.cpus.len()
    }

    /// The descriptors of the reservation's locks. A child that inherits
    /// them (see [`Reservation::into_fds`]) keeps the reservation held
    /// until it and everything it started have exited, even if this
    /// process dies first.
    pub fn lock_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.guards.iter().map(AsFd::as_fd)
    }

    /// The locks' descriptors, closed without unlocking, for a program
    /// that handed them to a child: dropping the [`Reservation`] instead
    /// would release the CPUs for every copy at once, under a child that
    /// may still run. The kernel drops each lock with its last copy.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.guards.into_iter().map(LockGuard::into_fd).collect()
    }

    /// Have what [`Reservation::spawn`] starts allocate memory only on, or
    /// interleaved over, the NUMA nodes of the reserved CPUs. (With
    /// [`Reserver::enforce`], the cgroup's `cpuset.mems` already confines
    /// it to them; the policy then says how to use them.)
    pub fn set_memory_policy(&mut self, policy: MemPolicy) {
        self.memory = Some(policy);
    }

    /// The cpuset cgroup enforcing it, if [`Reserver::enforce`] made one.
    pub fn cpuset(&self) -> Option<&Cpuset> {
        self.cpuset.as_ref()
    }

    /// Pin the calling thread to the reserved CPUs; threads it creates
    /// from now on inherit that. (Other threads keep their affinity: for a
    /// whole process, [`Cpuset::join_current`] on an enforced reservation.)
    ///
    /// # Errors
    /// `sched_setaffinity` failed (the CPUs are not all allowed here).
    pub fn pin_current(&self) -> std::io::Result<()> {
        rustix::thread::sched_setaffinity(None, &self.cpu_set())?;
        Ok(())
    }

    fn cpu_set(&self) -> rustix::thread::CpuSet {
        let mut set = rustix::thread::CpuSet::new();
        for cpu in self.cpus.iter() {
            set.set(cpu as usize);
        }
        set
    }

    /// Spawn `command` pinned to the reserved CPUs. The child inherits the
    /// spawning thread's affinity, so that thread is pinned for the spawn
    /// and restored after it. With a cpuset ([`Reserver::enforce`]), the
    /// child also joins the cgroup before it execs, through a hook this
    /// adds to `command` (it keeps the cgroup's `cgroup.procs` open for as
    /// long as `command` lives).
    ///
    /// # Errors
    /// Setting the affinity, joining the cgroup or spawning failed.
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<std::process::Child> {
        if let Some(cpuset) = &self.cpuset {
            crate::sys::join_cgroup_on_exec(command, std::sync::Arc::clone(cpuset.procs()));
        }
        if let Some(policy) = self.memory {
            if self.nodes.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the reserved CPUs' NUMA nodes are unknown (sysfs lists none), so memory cannot be bound to them",
                ));
            }
            let mode = match policy {
                MemPolicy::Bind => crate::sys::MPOL_BIND,
                MemPolicy::Interleave => crate::sys::MPOL_INTERLEAVE,
            };
            crate::sys::mempolicy_on_exec(command, mode, &self.nodes);
        }
        let before = rustix::thread::sched_getaffinity(None)?;
        rustix::thread::sched_setaffinity(None, &self.cpu_set())?;
        let spawned = command.spawn();
        let restored = rustix::thread::sched_setaffinity(None, &before);
        let child = spawned?;
        restored?;
        Ok(child)
    }
}

impl fmt::Display for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let llcs: Vec<String> = self.llcs.iter().map(|k| format!("llc-{k}")).collect();
        let nodes: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        write!(
            f,
            "cpus {} ({} jobs), {} {}, node {}",
            self.cpus,
            self.jobs(),
            llcs.join(","),
            if self.mode == Mode::ExclusiveLlc { "exclusive" } else { "shared" },
            if nodes.is_empty() { "?".to_owned() } else { nodes.join(",") },
        )?;
        write!(f, " [{}]", self.mode)
    }
}
