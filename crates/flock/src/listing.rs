//! Every lock on the host with its path, holders and waiters: what
//! `lockyard locks` prints.
//!
//! One reading of mountinfo and `/proc/locks`, then one pass over the
//! descriptors of the processes that matter (the walk
//! [`crate::Snapshot::exact_holders`] uses too). The cost grows with the
//! number of locks plus the number of descriptors scanned, never with
//! their product (lslocks rescans every descriptor for every lock).
//!
//! By default only the processes `/proc/locks` names are scanned, and all
//! others only if some lock still has no path (OFD locks record pid -1; a
//! flock inherited by a child records its exited parent). A descriptor's
//! file is matched to a lock by `statx` where that is exact, by its
//! fdinfo's `lock:` lines where it is not; the first locked file found in
//! a directory has that directory listed for the others, and the walk
//! ends once every lock has a path. A directory entry's inode number is
//! taken as the lock's file only where it cannot mean another file (a
//! regular file, not a mount point, on tmpfs, ext2/3/4 or xfs in a
//! directory that reports its superblock's device); elsewhere (btrfs,
//! overlayfs, network and FUSE filesystems) each candidate is `statx`ed.
//! A path is then a name that reaches the locked file from this process,
//! or the holder's own link target (`... (deleted)` for a file since
//! removed).
//!
//! With `exact` every process is scanned and each lock is attributed to
//! the processes that hold a descriptor whose fdinfo carries it.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt, HashSet};
use lockyard_procfs::{Cmdline, Device, LockKey, LockRecord, MountInfo, RecordKind};

use crate::error::LockError;
use crate::holders::{Snapshot, or_pass, scan_descriptors};

/// The layout version of [`Listing`] (its `schema` field), which
/// `lockyard`'s other JSON documents share.
pub const SCHEMA: u32 = 1;

/// How many characters of a command line are kept.
const COMMAND_WIDTH: usize = 200;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Attribute locks through fdinfo (see the module docs).
    pub exact: bool,
    /// Only locks held (or recorded) by these pids. Filtering by pid
    /// attributes every lock through fdinfo, as `exact` does, so that an
    /// OFD lock (which records no pid) is found by its holder's.
    pub pids: Vec<u32>,
    /// Only locks on these files.
    pub paths: Vec<PathBuf>,
    /// Only locks of these kinds.
    pub kinds: Vec<RecordKind>,
}

/// A process involved in a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Process {
    /// Its pid, `null` when unknown (an OFD lock outside exact mode).
    pub pid: Option<u32>,
    /// Its command line, `null` if unreadable or empty.
    pub command: Option<String>,
    /// The descriptor carrying the lock (exact mode only).
    pub fd: Option<u32>,
}

/// One granted lock.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LockRow {
    /// `flock`, `posix`, `ofd`, `lease`, `delegation`, `access`, or the
    /// kernel's word in lower case.
    pub kind: Cow<'static, str>,
    /// `read` or `write` (or the kernel's word in lower case for leases).
    pub mode: Cow<'static, str>,
    /// First locked byte.
    pub start: u64,
    /// Last locked byte; `null` for to the end of the file.
    pub end: Option<u64>,
    /// The superblock device as /proc/locks prints it (`fe:00`).
    pub device: String,
    /// Inode number.
    pub inode: u64,
    /// Path of the file as a holder opened it; `null` if no descriptor
    /// carrying the lock could be inspected. In JSON, a string, or the
    /// bytes when not UTF-8 ([`crate::json`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::json::opt_path"))]
    pub path: Option<PathBuf>,
    /// The pid /proc/locks records (`null` for OFD locks: -1).
    pub pid: Option<u32>,
    /// Command line of `pid`.
    pub command: Option<String>,
    /// Processes holding a descriptor that carries the lock (exact mode,
    /// or when filtering by pid; empty otherwise).
    pub holders: Vec<Process>,
    /// Processes blocked waiting for this lock.
    pub blocked: Vec<Process>,
    #[cfg_attr(feature = "serde", serde(skip))]
    key: LockKey,
}

/// The result of [`list`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Listing {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Whether holders were attributed exactly.
    pub exact: bool,
    /// The locks, in /proc/locks order.
    pub locks: Vec<LockRow>,
    /// Malformed lines of /proc/locks or mountinfo that were skipped (each
    /// with its file, line and reason); empty when every line parsed.
    pub skipped: Vec<String>,
}

/// What the descriptor scan found about one key.
#[derive(Default)]
struct Found {
    path: Option<PathBuf>,
    /// `(pid, fd, record)` for every descriptor carrying a lock on the key.
    carriers: Vec<(u32, u32, LockRecord)>,
}

/// List the host's locks.
///
/// # Errors
/// If /proc cannot be read, or a `paths` entry cannot be examined.
pub fn list(options: &ListOptions) -> Result<Listing, LockError> {
    let snapshot = Snapshot::read()?;
    let wanted_keys: Option<HashSet<LockKey>> = if options.paths.is_empty() {
        None
    } else {
        Some(options.paths.iter().map(|p| snapshot.file_id(p).map(|id| id.key)).collect::<Result<_, _>>()?)
    };
    let records = snapshot.locks().records();
    let mut commands = CommandCache::default();

    let keep = |r: &LockRecord| {
        !r.is_waiter()
            && r.key().is_some_and(|k| wanted_keys.as_ref().is_none_or(|w| w.contains(&k)))
            && (options.kinds.is_empty() || options.kinds.contains(&r.kind()))
    };
    let granted: Vec<usize> = (0..records.len()).filter(|&i| keep(&records[i])).collect();
    let keys: HashSet<LockKey> = granted.iter().filter_map(|&i| records[i].key()).collect();

    // Scan the recorded pids first; everyone if exact, or if a lock still
    // has no path.
    let recorded: HashSet<u32> = granted.iter().filter_map(|&i| records[i].pid_hint()).collect();
    // Filtering by pid needs to know who holds the locks no pid is
    // recorded for (OFD locks, flocks inherited from an exited parent).
    let exact = options.exact || !options.pids.is_empty();
    let mut search = Search::new(&keys, &snapshot);
    if exact {
        search.scan(lockyard_procfs::pids()?, true)?;
    } else {
        search.scan(recorded.iter().copied(), false)?;
        if search.missing > 0 {
            let others = lockyard_procfs::pids()?.into_iter().filter(|p| !recorded.contains(p));
            search.scan(others, false)?;
        }
    }
    let found = search.found;

    // Waiters by the line they wait on, in one pass (asking ProcLocks per
    // lock would rescan every line for every lock).
    let mut waiters: HashMap<usize, Vec<&LockRecord>> = HashMap::new();
    for record in records {
        if let Some(blocker) = record.blocker() {
            waiters.entry(blocker).or_default().push(record);
        }
    }

    let mut locks = Vec::with_capacity(granted.len());
    for &index in &granted {
        let record = &records[index];
        let key = record.key().expect("kept records have keys");
        let entry = found.get(&key);
        let pid = record.pid_hint();
        let holders = if exact {
            entry
                .map(|f| {
                    f.carriers
                        .iter()
                        .filter(|(_, _, r)| same_lock(r, record))
                        .map(|&(pid, fd, _)| Process {
                            pid: Some(pid),
                            command: commands.get(pid),
                            fd: Some(fd),
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let blocked = waiters
            .get(&index)
            .into_iter()
            .flatten()
            .map(|w| Process {
                pid: w.pid_hint(),
                command: w.pid_hint().and_then(|p| commands.get(p)),
                fd: None,
            })
            .collect();
        locks.push(LockRow {
            kind: record.kind_name(),
            mode: record.mode_name(),
            start: record.start(),
            end: record.end(),
            device: format!("{:02x}:{:02x}", key.device.major, key.device.minor),
            inode: key.inode,
            path: entry.and_then(|f| f.path.clone()),
            pid,
            command: pid.and_then(|p| commands.get(p)),
            holders,
            blocked,
            key,
        });
    }
    if !options.pids.is_empty() {
        locks.retain(|row| {
            options.pids.iter().any(|p| row.pid == Some(*p) || row.holders.iter().any(|h| h.pid == Some(*p)))
        });
    }
    Ok(Listing { schema: SCHEMA, exact: options.exact, locks, skipped: snapshot.skipped().to_vec() })
}

impl LockRow {
    /// The /proc/locks key of the locked file.
    pub fn key(&self) -> LockKey {
        self.key
    }
}

/// Whether an fdinfo `lock:` line is the same lock as a /proc/locks line.
fn same_lock(a: &LockRecord, b: &LockRecord) -> bool {
    a.key() == b.key()
        && a.kind() == b.kind()
        && a.mode() == b.mode()
        && a.start() == b.start()
        && a.end() == b.end()
        && a.pid() == b.pid()
}

/// What the scans are looking for, and what they found.
struct Search<'a> {
    keys: &'a HashSet<LockKey>,
    /// The inode numbers of `keys`, to pass over most files unexamined.
    inodes: HashSet<u64>,
    mounts: &'a MountInfo,
    /// The superblock device of each mount in this mount namespace, by id.
    devices: HashMap<u64, Device>,
    found: HashMap<LockKey, Found>,
    /// Keys still without a path.
    missing: usize,
    /// Directories already listed by [`Search::sweep`].
    swept: HashSet<PathBuf>,
}

impl<'a> Search<'a> {
    fn new(keys: &'a HashSet<LockKey>, snapshot: &'a Snapshot) -> Self {
        Search {
            keys,
            inodes: keys.iter().map(|k| k.inode).collect(),
            mounts: snapshot.mounts(),
            devices: snapshot.mounts().iter().map(|m| (m.mount_id, m.device)).collect(),
            found: HashMap::with_capacity(keys.len()),
            missing: keys.len(),
            swept: HashSet::default(),
        }
    }

    /// The key of a file from its `statx`, where that is unambiguous: its
    /// mount is in this mount namespace, and `stat` reports the
    /// superblock's own device. Where it does not (btrfs subvolumes, some
    /// overlayfs setups), two files can share a key, and only a
    /// descriptor's fdinfo says which one is locked.
    fn key_of(&self, mount_id: Option<u64>, dev: u64, ino: u64) -> Option<LockKey> {
        let device = *self.devices.get(&mount_id?)?;
        (rustix::fs::makedev(device.major, device.minor) == dev).then(|| LockKey::new(device, ino))
    }

    /// Record `path` for `key` unless it has one.
    fn set_path(
        &mut self,
        key: LockKey,
        path: impl FnOnce() -> Result<Option<PathBuf>, LockError>,
    ) -> Result<(), LockError> {
        let slot = self.found.entry(key).or_default();
        if slot.path.is_none() {
            slot.path = path()?;
            if slot.path.is_some() {
                self.missing -= 1;
            }
        }
        Ok(())
    }

    /// Look through the descriptors of `pids` for files locked under the
    /// keys: the path of each (from the first descriptor found open on
    /// it) and, with `exact`, every descriptor whose fdinfo carries a lock
    /// on it.
    ///
    /// A descriptor's key comes from `statx` (its mount id gives the
    /// device /proc/locks prints, its inode the rest). Where that is not
    /// certain ([`Search::key_of`]: the mount is in another mount
    /// namespace, the kernel predates `STATX_MNT_ID`, or the filesystem
    /// reports another device than its superblock's), its fdinfo names the
    /// keys instead. Without `exact`, the first path found in a
    /// directory has the directory swept for the other locked files
    /// ([`Search::sweep`]), and the scan stops once every key has a path.
    fn scan(&mut self, pids: impl IntoIterator<Item = u32>, exact: bool) -> Result<(), LockError> {
        // A copy: the walk lends `self` to the closure (a table copy, cheap
        // next to the walk).
        let inodes = self.inodes.clone();
        scan_descriptors(pids, &inodes, |descriptors, fd, file| {
            if let (false, Some(key)) = (exact, self.key_of(file.mount_id, file.dev, file.ino)) {
                if self.keys.contains(&key) && self.found.get(&key).is_none_or(|f| f.path.is_none()) {
                    self.set_path(key, || or_pass(descriptors.link(fd)))?;
                    let dir = self.found[&key].path.as_deref().and_then(Path::parent).map(Path::to_path_buf);
                    if let Some(dir) = dir {
                        self.sweep(&dir)?;
                    }
                }
                return Ok(if self.missing == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                });
            }
            let Some(info) = or_pass(descriptors.fdinfo(fd))? else { return Ok(ControlFlow::Continue(())) };
            for record in info.locks {
                let Some(key) = record.key().filter(|k| self.keys.contains(k)) else { continue };
                self.set_path(key, || or_pass(descriptors.link(fd)))?;
                if exact {
                    self.found.entry(key).or_default().carriers.push((descriptors.pid(), fd, record));
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Give every locked file still without a path that has a name in
    /// `dir` that name, from one listing of the directory. Lock files
    /// gather in a few directories, so this turns a `statx` and a
    /// `readlink` through `/proc` per lock into a directory read.
    ///
    /// An entry's inode number alone names the locked file where nothing
    /// can make the same number mean another file
    /// ([`Search::trusts_entries`]): the entry is a regular file, not a
    /// mount point, in a directory of a filesystem whose files all report
    /// the superblock's device and whose directory entries carry the
    /// inode's own number. Any other entry with a locked inode number gets
    /// one `statx`, which checks the device too. A name found this way is
    /// one that reaches the locked file from this process's mount
    /// namespace; nothing found is no error (the directory may be gone,
    /// unreadable, or another namespace's).
    fn sweep(&mut self, dir: &Path) -> Result<(), LockError> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
        if self.missing == 0 || !self.swept.insert(dir.to_owned()) {
            return Ok(());
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::open(dir, flags, Mode::empty()) else { return Ok(()) };
        let trusted = self.trusts_entries(&fd, dir);
        let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) else { return Ok(()) };
        let mut unsure = Vec::new();
        while let Some(Ok(entry)) = entries.read() {
            if !self.inodes.contains(&entry.ino()) {
                continue;
            }
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            match &trusted {
                Some((device, covered))
                    if entry.file_type() == FileType::RegularFile && !covered.contains(name) =>
                {
                    let key = LockKey::new(*device, entry.ino());
                    if self.keys.contains(&key) {
                        self.set_path(key, || Ok(Some(dir.join(name))))?;
                    }
                }
                _ => unsure.push(entry.file_name().to_owned()),
            }
        }
        let mask = StatxFlags::INO | StatxFlags::MNT_ID;
        for name in unsure {
            let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
            let Ok(stx) = rustix::fs::statx(&fd, &name, flags, mask) else { continue };
            let mount = (stx.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(stx.stx_mnt_id);
            let dev = rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor);
            let Some(key) = self.key_of(mount, dev, stx.stx_ino).filter(|k| self.keys.contains(k)) else {
                continue;
            };
            let path = dir.join(OsStr::from_bytes(name.to_bytes()));
            self.set_path(key, || Ok(Some(path)))?;
        }
        Ok(())
    }

    /// Whether the entries of the directory `fd` (at `dir`) can be trusted
    /// by inode number alone, and if so, the device /proc/locks prints for
    /// its files and the names in it that something is mounted on.
    ///
    /// Only filesystems in [`PLAIN_FILESYSTEMS`] qualify, and only when the
    /// directory reports its superblock's device and its mount is in this
    /// mount namespace. Elsewhere an entry's number can stand for another
    /// file: btrfs numbers inodes per subvolume, and overlayfs can report
    /// a lower layer's numbers and devices.
    fn trusts_entries(&self, fd: &rustix::fd::OwnedFd, dir: &Path) -> Option<(Device, HashSet<&'a OsStr>)> {
        use rustix::fs::{AtFlags, StatxFlags};
        let flags = AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC;
        let stx = rustix::fs::statx(fd, "", flags, StatxFlags::INO | StatxFlags::MNT_ID).ok()?;
        if stx.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
            return None;
        }
        let mount = self.mounts.by_id(stx.stx_mnt_id)?;
        let dev = rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor);
        let plain = PLAIN_FILESYSTEMS.iter().any(|t| mount.fs_type() == *t);
        if !plain || rustix::fs::makedev(mount.device.major, mount.device.minor) != dev {
            return None;
        }
        let mounts: &'a MountInfo = self.mounts;
        let covered = mounts
            .iter()
            .filter(|m| m.mount_point().parent() == Some(dir))
            .filter_map(|m| m.mount_point().file_name());
        Some((mount.device, covered.collect()))
    }
}

/// Filesystems whose files all report the superblock's device and whose
/// directory entries carry each inode's own number, so that a directory
/// entry's number names one file ([`Search::trusts_entries`]).
const PLAIN_FILESYSTEMS: &[&str] = &["tmpfs", "ext2", "ext3", "ext4", "xfs"];

/// Command lines, each read once.
#[derive(Default)]
struct CommandCache(HashMap<u32, Option<String>>);

impl CommandCache {
    fn get(&mut self, pid: u32) -> Option<String> {
        self.0
            .entry(pid)
            .or_insert_with(|| Cmdline::read_pid(pid).ok().flatten().map(|c| c.display(COMMAND_WIDTH)))
            .clone()
    }
}
