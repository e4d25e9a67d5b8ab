//! Every lock on the host with its path, holders and waiters: what
//! `lockyard locks` prints.
//!
//! One reading of mountinfo and `/proc/locks`, then one pass over the
//! descriptors of the processes that matter, reading each descriptor's
//! fdinfo once: its `lock:` lines say which locks it carries, and its
//! `/proc/PID/fd` link says where the file is. The cost grows with the
//! number of locks plus the number of descriptors scanned, never with
//! their product (lslocks rescans every descriptor for every lock).
//!
//! By default only the processes `/proc/locks` names are scanned, and all
//! others only if some lock still has no path (OFD locks record pid -1; a
//! flock inherited by a child records its exited parent). With `exact`
//! every process is scanned and each lock is attributed to the processes
//! that hold a descriptor carrying it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use lockyard_procfs::{Cmdline, LockKey, LockRecord, RecordKind};

use crate::error::LockError;
use crate::holders::{Snapshot, descriptors, fdinfo, processes};

/// How many characters of a command line are kept.
const COMMAND_WIDTH: usize = 200;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Attribute locks through fdinfo (see the module docs).
    pub exact: bool,
    /// Only locks held (or recorded) by these pids.
    pub pids: Vec<u32>,
    /// Only locks on these files.
    pub paths: Vec<PathBuf>,
    /// Only locks of these kinds.
    pub kinds: Vec<RecordKind>,
}

/// A process involved in a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    pub kind: String,
    /// `read` or `write` (or the kernel's word in lower case for leases).
    pub mode: String,
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
    /// Processes holding a descriptor that carries the lock (exact mode;
    /// empty otherwise).
    pub holders: Vec<Process>,
    /// Processes blocked waiting for this lock.
    pub blocked: Vec<Process>,
    #[cfg_attr(feature = "serde", serde(skip))]
    key: LockKey,
}

/// The result of [`list`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Listing {
    /// Always 1 for this layout.
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
    let mut found: HashMap<LockKey, Found> = HashMap::new();
    if options.exact {
        scan(processes()?.into_iter(), &keys, &mut found)?;
    } else {
        scan(recorded.iter().copied(), &keys, &mut found)?;
        if keys.iter().any(|k| found.get(k).is_none_or(|f| f.path.is_none())) {
            scan(processes()?.into_iter().filter(|p| !recorded.contains(p)), &keys, &mut found)?;
        }
    }

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
        let holders = if options.exact {
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
            kind: record.kind_name().into_owned(),
            mode: record.mode_str().to_ascii_lowercase(),
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
    Ok(Listing { schema: 1, exact: options.exact, locks, skipped: snapshot.skipped().to_vec() })
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

/// Read the fdinfo of every descriptor of `pids`, recording which carry
/// locks on `keys` and where their files are.
fn scan(
    pids: impl Iterator<Item = u32>,
    keys: &HashSet<LockKey>,
    found: &mut HashMap<LockKey, Found>,
) -> Result<(), LockError> {
    if keys.is_empty() {
        return Ok(());
    }
    for pid in pids {
        for fd in descriptors(pid)? {
            let Some(info) = fdinfo(pid, fd)? else { continue };
            for record in info.locks {
                let Some(key) = record.key().filter(|k| keys.contains(k)) else { continue };
                let slot = found.entry(key).or_default();
                if slot.path.is_none() {
                    slot.path = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
                }
                slot.carriers.push((pid, fd, record));
            }
        }
    }
    Ok(())
}

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
