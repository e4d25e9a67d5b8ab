//! Enforcing a reservation with a cpuset cgroup.
//!
//! `sched_setaffinity` pins a command, but any of its children may call it
//! again and leave the reserved CPUs. A cpuset cgroup cannot be left that
//! way: the kernel clips every affinity request of its tasks to the
//! cgroup's `cpuset.cpus` (a request with no CPU inside is `EINVAL`), and
//! children are born in their parent's cgroup.
//!
//! [`Reserver::enforce`](crate::Reserver::enforce) makes one cgroup per
//! reservation under a [`CgroupParent`]: named `lockyard-{pid}-{n}`, its
//! `cpuset.cpus` exactly the reserved CPUs and `cpuset.mems` the memory
//! nodes of those CPUs. [`Reservation::spawn`](crate::Reservation::spawn)
//! then starts the command inside it: the child writes `0` ("myself") to
//! the cgroup's `cgroup.procs` between fork and exec, through a descriptor
//! opened beforehand, so nothing it runs ever exists outside. The cgroup is
//! removed when the reservation is dropped, once nothing runs in it.
//!
//! # Hierarchies
//!
//! - **v1** (the `cpuset` controller mounted on its own, as in the hybrid
//!   layout): the parent is `lockyard/` below this process's own cpuset
//!   cgroup, created with its parent's CPUs and memory nodes. Mounts with
//!   `noprefix` name the files `cpus` and `mems`.
//! - **v2**: the parent must be a cgroup with no processes of its own
//!   whose `cgroup.controllers` offers `cpuset` (a delegated subtree, or
//!   `lockyard/` below the root cgroup when this process runs there);
//!   `+cpuset` is written to its `cgroup.subtree_control`. A process in a
//!   non-root cgroup cannot put children below its own cgroup (the kernel
//!   forbids controllers below a cgroup with processes), so there
//!   [`CgroupParent::discover`] fails and names the fix: a delegated
//!   subtree passed as [`CgroupParent::at`], or running as root.
//!
//! # Orphans
//!
//! While its cgroup exists, the creator holds an exclusive lock on
//! `cgroup-{name}.lock` in the reservation lock directory (taken before the
//! cgroup is made, the file removed only after the cgroup is). If it is
//! killed (SIGKILL, OOM), the lock goes with it, and
//! [`Reserver::sweep_cgroups`](crate::Reserver::sweep_cgroups) (run by
//! every enforced reservation, and by `lockyard topo --sweep`) removes
//! each `lockyard-*` cgroup whose lock file is in its lock directory and
//! can be locked (cgroups of other lock directories are not its to
//! judge): never by pid or age,
//! which can be reused or lie. A cgroup whose processes still run (a
//! killed supervisor's command) cannot be removed and is kept.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use lockyard_flock::{LockDir, LockGuard, LockOptions};
use lockyard_procfs::CpuList;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// Names of the cgroups made here start so.
const PREFIX: &str = "lockyard-";

/// The cgroup filesystem's magic numbers (`statfs`).
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Which cgroup hierarchy a cpuset lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Hierarchy {
    /// The v1 `cpuset` hierarchy.
    V1,
    /// The unified v2 hierarchy.
    V2,
}

/// Why a reservation could not be enforced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// No cgroup hierarchy here offers the cpuset controller.
    #[error("no cpuset cgroup is available: {why}")]
    Unavailable {
        /// What was found instead, and what to do.
        why: String,
    },
    /// A cgroup file or directory could not be used.
    #[error("{}: {op}: {source}{}", path.display(), hint(*source))]
    Io {
        /// The cgroup path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system's error.
        #[source]
        source: Errno,
    },
    /// The owner lock could not be taken or made.
    #[error(transparent)]
    Lock(#[from] lockyard_flock::LockError),
}

fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ACCESS | Errno::PERM | Errno::ROFS => {
            "; creating cgroups needs root, or a cgroup v2 subtree delegated to this user (systemd: Delegate=yes)"
        }
        Errno::INVAL => "; the CPUs or memory nodes are not all in the parent cgroup's cpuset",
        _ => "",
    }
}

impl EnforceError {
    fn io(path: impl Into<PathBuf>, op: &'static str, source: Errno) -> Self {
        EnforceError::Io { path: path.into(), op, source }
    }
}

/// Where reservation cgroups are made: a directory of a cgroup
/// filesystem (see the module docs).
#[derive(Debug, Clone)]
pub struct CgroupParent {
    dir: PathBuf,
    hierarchy: Hierarchy,
    /// v1 mounted with `noprefix`: `cpus` rather than `cpuset.cpus`.
    noprefix: bool,
}

impl CgroupParent {
    /// The default parent: on v1, `lockyard/` below this process's cpuset
    /// cgroup (created if missing); on v2, `lockyard/` below the root
    /// cgroup when this process runs in it.
    ///
    /// # Errors
    /// [`EnforceError::Unavailable`] where no hierarchy offers a cpuset
    /// this process may use, naming what to do; [`EnforceError::Io`] if
    /// `lockyard/` cannot be made.
    pub fn discover() -> Result<Self, EnforceError> {
        let mounts = lockyard_procfs::MountInfo::read()
            .map_err(|e| EnforceError::Unavailable { why: format!("cannot read the mount table: {e}") })?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| EnforceError::Unavailable { why: format!("cannot read /proc/self/cgroup: {e}") })?;
        let v1 = mounts.iter().find(|m| m.fs_type() == "cgroup" && m.super_options().contains("cpuset"));
        if let Some(mount) = v1 {
            let path = own_path(&own, |controllers| controllers.split(',').any(|c| c == "cpuset"))
                .ok_or_else(|| EnforceError::Unavailable {
                    why: "/proc/self/cgroup names no cpuset cgroup".into(),
                })?;
            let noprefix = mount.super_options().contains("noprefix");
            let dir = beneath(mount.mount_point(), mount.root(), path)?;
            return CgroupParent { dir, hierarchy: Hierarchy::V1, noprefix }.child_parent();
        }
        let Some(mount) = mounts.iter().find(|m| m.fs_type() == "cgroup2") else {
            return Err(EnforceError::Unavailable {
                why: "neither a v1 cpuset nor a cgroup v2 hierarchy is mounted".into(),
            });
        };
        let path = own_path(&own, str::is_empty).ok_or_else(|| EnforceError::Unavailable {
            why: "/proc/self/cgroup names no v2 cgroup".into(),
        })?;
        let dir = beneath(mount.mount_point(), mount.root(), path)?;
        if dir != mount.mount_point() {
            return Err(EnforceError::Unavailable {
                why: format!(
                    "cgroup v2: this process runs in {path}, and a cgroup holding processes cannot have \
                     cpuset children; pass a delegated subtree without processes as the cgroup parent, \
                     or run as root from the root cgroup"
                ),
            });
        }
        CgroupParent { dir, hierarchy: Hierarchy::V2, noprefix: false }.child_parent()
    }

    /// `dir` as the parent: a v1 cpuset cgroup, or a v2 cgroup (delegated
    /// to this user, with no processes of its own) offering `cpuset`.
    ///
    /// # Errors
    /// [`EnforceError::Unavailable`] if `dir` is not such a cgroup.
    pub fn at(dir: impl Into<PathBuf>) -> Result<Self, EnforceError> {
        let dir = dir.into();
        let fs = rustix::fs::statfs(&dir).map_err(|e| EnforceError::io(&dir, "statfs", e))?;
        #[allow(clippy::useless_conversion)] // f_type's width differs by architecture.
        let magic = i64::from(fs.f_type);
        let parent = match magic {
            CGROUP2_SUPER_MAGIC => CgroupParent { dir, hierarchy: Hierarchy::V2, noprefix: false },
            CGROUP_SUPER_MAGIC if dir.join("cpuset.cpus").exists() => {
                CgroupParent { dir, hierarchy: Hierarchy::V1, noprefix: false }
            }
            CGROUP_SUPER_MAGIC if dir.join("cpus").exists() => {
                CgroupParent { dir, hierarchy: Hierarchy::V1, noprefix: true }
            }
            _ => {
                return Err(EnforceError::Unavailable {
                    why: format!("{} is not a cpuset cgroup (v1) or a cgroup v2 directory", dir.display()),
                });
            }
        };
        parent.prepare()?;
        Ok(parent)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its hierarchy.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// `lockyard/` below this one, made and prepared.
    fn child_parent(&self) -> Result<Self, EnforceError> {
        let dir = self.dir.join("lockyard");
        match rustix::fs::mkdir(&dir, Mode::from(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(EnforceError::io(&dir, "mkdir", e)),
        }
        if self.hierarchy == Hierarchy::V2 {
            self.enable_cpuset()?;
        } else {
            // A new v1 cpuset is empty, and tasks cannot join an empty one:
            // give it what its parent has.
            let child = CgroupParent { dir: dir.clone(), ..self.clone() };
            for file in ["cpus", "mems"] {
                if read(&child.file(file))?.trim().is_empty() {
                    let inherited = read(&self.effective(file))?;
                    write(&child.file(file), inherited.trim())?;
                }
            }
        }
        let parent = CgroupParent { dir, ..self.clone() };
        parent.prepare()?;
        Ok(parent)
    }

    /// Make children of this directory able to take a cpuset.
    fn prepare(&self) -> Result<(), EnforceError> {
        if self.hierarchy == Hierarchy::V2 { self.enable_cpuset() } else { Ok(()) }
    }

    /// v2: offer `cpuset` to the children.
    fn enable_cpuset(&self) -> Result<(), EnforceError> {
        let controllers = read(&self.dir.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "cpuset") {
            return Err(EnforceError::Unavailable {
                why: format!(
                    "{} does not offer the cpuset controller (cgroup.controllers: {}); enable it in the \
                     parent's cgroup.subtree_control, or delegate a subtree that has it",
                    self.dir.display(),
                    controllers.trim()
                ),
            });
        }
        let subtree = self.dir.join("cgroup.subtree_control");
        if !read(&subtree)?.split_whitespace().any(|c| c == "cpuset") {
            write(&subtree, "+cpuset")?;
        }
        Ok(())
    }

    /// The path of a cpuset file (`cpus`, `mems`) of this cgroup.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(if self.noprefix { name.to_owned() } else { format!("cpuset.{name}") })
    }

    /// The effective value of a cpuset file, where the kernel has one.
    fn effective(&self, name: &str) -> PathBuf {
        let effective = self.file(&format!("effective_{name}"));
        if effective.exists() { effective } else { self.file(name) }
    }
}

/// The cgroup path of this process in the hierarchy whose controller
/// list satisfies `controllers`, from `/proc/self/cgroup`.
fn own_path(text: &str, controllers: impl Fn(&str) -> bool) -> Option<&str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, list, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers(list).then_some(path)
    })
}

/// The directory of cgroup `path` (absolute within the hierarchy) where
/// the part of the hierarchy below `root` is mounted at `mount` (a
/// container may see only its own subtree).
fn beneath(mount: &Path, root: &Path, path: &str) -> Result<PathBuf, EnforceError> {
    let below = Path::new(path).strip_prefix(root).map_err(|_| EnforceError::Unavailable {
        why: format!(
            "this process's cgroup {path} is outside the part of the hierarchy mounted at {} ({})",
            mount.display(),
            root.display()
        ),
    })?;
    Ok(mount.join(below))
}

fn read(path: &Path) -> Result<String, EnforceError> {
    std::fs::read_to_string(path).map_err(|e| EnforceError::io(path, "read", errno(&e)))
}

fn write(path: &Path, value: &str) -> Result<(), EnforceError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| EnforceError::io(path, "open", errno(&e)))?;
    file.write_all(value.as_bytes()).map_err(|e| EnforceError::io(path, "write", errno(&e)))
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// A reservation's cpuset cgroup; removed when dropped if nothing runs in
/// it any more (see the module docs).
#[derive(Debug)]
pub struct Cpuset {
    dir: PathBuf,
    hierarchy: Hierarchy,
    /// `cgroup.procs`, open for writing: a child writes `0` to it to join.
    /// Shared with the spawn hooks of the commands started into it, so
    /// the descriptor lives as long as any such command (a hook of a
    /// command spawned again after the cgroup is gone then fails, rather
    /// than writing to whatever file took the number).
    procs: Arc<OwnedFd>,
    /// The owner lock: while held, the cgroup is not an orphan.
    owner: Option<LockGuard>,
    owner_path: PathBuf,
}

impl Cpuset {
    /// Make a cgroup below `parent` holding `cpus` and memory nodes `mems`,
    /// owned through a lock in `locks`.
    pub(crate) fn create(
        parent: &CgroupParent,
        locks: &LockDir,
        cpus: &CpuList,
        mems: &[u32],
    ) -> Result<Self, EnforceError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let options = LockOptions::new().exclusive().permissions(0o644);
        // A name is free when its owner lock can be taken and no cgroup has
        // it: a pid can be reused while an orphan of its earlier owner
        // still runs, and another pid namespace can have the same pid.
        for _ in 0..64 {
            let name = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
            let lock_name = owner_lock(&name);
            // The lock first: a cgroup that exists without it is an orphan
            // to any sweep.
            let Some(owner) = locks.lock_file(&lock_name, options.clone())?.try_lock()? else { continue };
            let owner_path = locks.lock_path(&lock_name);
            let dir = parent.dir.join(&name);
            match rustix::fs::mkdir(&dir, Mode::from(0o755)) {
                Ok(()) => {}
                // An orphan's: leave it, and its lock file, to a sweep.
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&owner_path);
                    return Err(EnforceError::io(&dir, "mkdir", e));
                }
            }
            return match Cpuset::fill(parent, &dir, cpus, mems) {
                Ok(procs) => Ok(Cpuset {
                    dir,
                    hierarchy: parent.hierarchy,
                    procs: Arc::new(procs),
                    owner: Some(owner),
                    owner_path,
                }),
                Err(e) => {
                    let _ = rustix::fs::rmdir(&dir);
                    let _ = std::fs::remove_file(&owner_path);
                    Err(e)
                }
            };
        }
        Err(EnforceError::Unavailable { why: format!("no free cgroup name below {}", parent.dir.display()) })
    }

    fn fill(
        parent: &CgroupParent,
        dir: &Path,
        cpus: &CpuList,
        mems: &[u32],
    ) -> Result<OwnedFd, EnforceError> {
        let child = CgroupParent { dir: dir.to_owned(), ..parent.clone() };
        write(&child.file("cpus"), &cpus.to_string())?;
        let mems = if mems.is_empty() {
            // Nodes unknown (no NUMA in sysfs): whatever the parent has.
            read(&parent.effective("mems"))?.trim().to_owned()
        } else {
            mems.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        write(&child.file("mems"), &mems)?;
        let procs = dir.join("cgroup.procs");
        rustix::fs::open(&procs, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| EnforceError::io(&procs, "open", e))
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its hierarchy.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// `cgroup.procs`, open for writing (`0` moves the writer in).
    pub(crate) fn procs(&self) -> &Arc<OwnedFd> {
        &self.procs
    }

    /// Move the calling process (all its threads) into the cgroup.
    ///
    /// # Errors
    /// The kernel refused the move.
    pub fn join_current(&self) -> std::io::Result<()> {
        rustix::io::write(self.procs.as_fd(), b"0")?;
        Ok(())
    }
}

impl Drop for Cpuset {
    fn drop(&mut self) {
        match rustix::fs::rmdir(&self.dir) {
            // Gone, or still busy: a command's leftovers run in it. It is
            // an orphan once the lock goes, for the next sweep.
            Ok(()) | Err(Errno::NOENT) => {
                let _ = std::fs::remove_file(&self.owner_path);
            }
            Err(e) => tracing::debug!(cgroup = %self.dir.display(), error = %e, "cgroup left for a sweep"),
        }
        drop(self.owner.take());
    }
}

fn owner_lock(cgroup: &str) -> String {
    format!("cgroup-{cgroup}")
}

/// What [`Reserver::sweep_cgroups`](crate::Reserver::sweep_cgroups) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CgroupSweep {
    /// Orphans removed.
    pub removed: Vec<PathBuf>,
    /// Orphans whose processes still run, kept.
    pub busy: Vec<PathBuf>,
    /// Cgroups whose creator still holds them.
    pub live: Vec<PathBuf>,
}

/// Remove the orphaned `lockyard-*` cgroups below `parent`.
pub(crate) fn sweep(parent: &CgroupParent, locks: &LockDir) -> Result<CgroupSweep, EnforceError> {
    let mut report = CgroupSweep::default();
    let entries =
        std::fs::read_dir(&parent.dir).map_err(|e| EnforceError::io(&parent.dir, "read_dir", errno(&e)))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let lock_name = owner_lock(name);
        // Only cgroups whose owner lock is in this lock directory: another
        // directory's are another set of reservations (and their lock
        // file, missing here, says nothing about them). The creator takes
        // the lock before it makes the cgroup and removes the file only
        // after removing the cgroup, so the file exists as long as the
        // cgroup does.
        let options = LockOptions::new().exclusive().must_exist();
        let Ok(file) = locks.lock_file(&lock_name, options) else { continue };
        let Ok(Some(held)) = file.try_lock() else {
            report.live.push(dir);
            continue;
        };
        match rustix::fs::rmdir(&dir) {
            Ok(()) => {
                let _ = std::fs::remove_file(locks.lock_path(&lock_name));
                report.removed.push(dir);
            }
            // Its creator removed it meanwhile.
            Err(Errno::NOENT) => {}
            Err(Errno::BUSY) => report.busy.push(dir),
            Err(e) => {
                drop(held);
                return Err(EnforceError::io(&dir, "rmdir", e));
            }
        }
        drop(held);
    }
    Ok(report)
}

impl std::fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hierarchy::V1 => "cgroup v1 cpuset",
            Hierarchy::V2 => "cgroup v2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_paths_are_read_per_hierarchy() {
        let text = "12:pids:/user.slice\n3:cpuset,cpu:/a/b\n0::/user.slice/session-1.scope\n";
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "cpuset")), Some("/a/b"));
        assert_eq!(own_path(text, str::is_empty), Some("/user.slice/session-1.scope"));
        assert_eq!(own_path("0::/\n", |c| c == "cpuset"), None);
        let mount = Path::new("/sys/fs/cgroup/cpuset");
        let root = Path::new("/");
        assert_eq!(beneath(mount, root, "/").expect("root"), mount);
        assert_eq!(beneath(mount, root, "/a/b").expect("below"), mount.join("a/b"));
        // A container's view: only its subtree is mounted.
        let theirs = Path::new("/docker/abc");
        assert_eq!(beneath(mount, theirs, "/docker/abc").expect("its root"), mount);
        assert_eq!(beneath(mount, theirs, "/docker/abc/x").expect("below"), mount.join("x"));
        assert!(beneath(mount, theirs, "/elsewhere").is_err());
    }
}
