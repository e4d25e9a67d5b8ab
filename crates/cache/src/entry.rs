//! What an entry holds about itself (`entry.json`) and the canonical walk
//! that digests and syncs its content.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use serde::{Deserialize, Serialize};

use crate::dirfd;
use crate::error::{CacheError, CorruptReason};

/// Name of the metadata file inside every entry (reserved: a build that
/// writes it fails).
pub const METADATA: &str = "entry.json";

/// The metadata layout this crate writes; newer ones are reported as
/// [`CorruptReason::SchemaFromTheFuture`].
pub const SCHEMA: u32 = 1;

/// The contents of `entry.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EntryMeta {
    /// Layout version, [`SCHEMA`].
    pub schema: u32,
    /// The entry's key.
    pub key: String,
    /// When it was published, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Total bytes of its regular files.
    pub size: u64,
    /// How many regular files and symlinks it holds.
    pub files: u64,
    /// BLAKE3 of the canonical walk, hex.
    pub digest: String,
    /// Whatever the build function returned.
    pub user: serde_json::Value,
}

/// Size, file count and digest of a directory tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walked {
    pub(crate) size: u64,
    pub(crate) files: u64,
    pub(crate) digest: String,
}

/// What a walk in canonical order tells: each item once, parents before
/// children, names sorted bytewise (depth first), paths relative to the
/// top. The digest ([`Digest`]), the tree writer behind `put` and pull,
/// and the archive packer behind push are its visitors.
pub(crate) trait Visit {
    /// A directory.
    fn dir(&mut self, rel: &Path) -> Result<(), CacheError>;
    /// A symlink and its target (never followed).
    fn symlink(&mut self, rel: &Path, target: &OsStr) -> Result<(), CacheError>;
    /// A regular file of `len` bytes: `data` yields them, and a visitor
    /// reads exactly `len` (`path` names the source in messages).
    fn file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut Source<'_>,
        path: &Path,
    ) -> Result<(), CacheError>;
}

/// The digest of a tree in canonical order. Per item it takes its type,
/// its relative path, and then for a file the executable bit, the length
/// and the bytes, for a symlink its target.
#[derive(Default)]
pub(crate) struct Digest {
    hasher: blake3::Hasher,
    size: u64,
    files: u64,
    dirs: u64,
}

impl Digest {
    pub(crate) fn dir(&mut self, rel: &Path) {
        self.item(b'd', rel);
        self.dirs += 1;
    }

    pub(crate) fn symlink(&mut self, rel: &Path, target: &OsStr) {
        self.item(b'l', rel);
        self.hasher.update(target.as_bytes());
        self.hasher.update(b"\0");
        self.files += 1;
    }

    /// Start a file; its bytes follow through [`Digest::data`].
    pub(crate) fn file(&mut self, rel: &Path, exec: bool, len: u64) {
        self.item(b'f', rel);
        self.hasher.update(&[u8::from(exec)]);
        self.hasher.update(&len.to_le_bytes());
        self.size += len;
        self.files += 1;
    }

    pub(crate) fn data(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Bytes, files (and symlinks) and directories so far.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (self.size, self.files, self.dirs)
    }

    pub(crate) fn finish(&self) -> Walked {
        Walked { size: self.size, files: self.files, digest: self.hasher.finalize().to_hex().to_string() }
    }

    fn item(&mut self, kind: u8, rel: &Path) {
        self.hasher.update(&[kind]);
        self.hasher.update(rel.as_os_str().as_bytes());
        self.hasher.update(b"\0");
    }
}

impl Visit for Digest {
    fn dir(&mut self, rel: &Path) -> Result<(), CacheError> {
        Digest::dir(self, rel);
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &OsStr) -> Result<(), CacheError> {
        Digest::symlink(self, rel, target);
        Ok(())
    }

    fn file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut Source<'_>,
        path: &Path,
    ) -> Result<(), CacheError> {
        Digest::file(self, rel, exec, len);
        let data: &mut dyn Read = data;
        let mut buf = vec![0u8; COPY_BUF];
        let mut seen = 0u64;
        while seen < len {
            let want = buf.len().min(usize::try_from(len - seen).unwrap_or(usize::MAX));
            let n = data.read(&mut buf[..want]).map_err(|e| CacheError::io(path, "read", e))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            self.hasher.update(&buf[..n]);
        }
        Ok(())
    }
}

/// The buffer each copy or hash of file data goes through.
pub(crate) const COPY_BUF: usize = 256 * 1024;

/// Digest the directory `dir` (a readable descriptor, named `path` in
/// messages) in canonical order, skipping the top-level `entry.json`;
/// with `sync`, `fsync` every file and directory on the way (children
/// before their directory). `progress` is told the bytes of every chunk
/// read, as it is read.
pub(crate) fn walk(
    dir: impl AsFd,
    path: &Path,
    sync: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Walked, CacheError> {
    let mut digest = Digest::default();
    visit(dir, path, Walk { sync, skip_metadata: true }, &mut digest, progress)?;
    Ok(digest.finish())
}

/// How [`visit`] walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// `fsync` every file and directory on the way.
    pub(crate) sync: bool,
    /// Leave out the top-level `entry.json` (an entry's own metadata).
    pub(crate) skip_metadata: bool,
}

/// Walk the directory `dir` (named `path` in messages) in canonical
/// order (names sorted bytewise, depth first), telling `visitor` of each
/// item.
///
/// Every name is opened relative to its directory's descriptor and
/// symlinks are never followed; other file types (FIFOs, devices,
/// sockets) are refused, as no reader could copy them. A file whose size
/// changes while it is read fails the walk.
///
/// The walk is iterative and holds one directory descriptor at a time
/// (leaving a directory by `..`, checked to be the one it came from), so
/// no depth of tree overflows the stack or the descriptor table.
pub(crate) fn visit(
    dir: impl AsFd,
    path: &Path,
    how: Walk,
    visitor: &mut dyn Visit,
    progress: &mut dyn FnMut(u64),
) -> Result<(), CacheError> {
    Walker { how, visitor, progress }.walk_tree(dir.as_fd(), path)
}

struct Walker<'a> {
    how: Walk,
    visitor: &'a mut dyn Visit,
    progress: &'a mut dyn FnMut(u64),
}

/// A directory being walked: its identity and the names still to visit,
/// sorted so the smallest is last.
struct Level {
    id: (u64, u64),
    todo: Vec<std::ffi::OsString>,
}

fn sorted_names(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<std::ffi::OsString>, CacheError> {
    let mut names = dirfd::names(dir, path)?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

impl Walker<'_> {
    fn walk_tree(&mut self, top: BorrowedFd<'_>, top_path: &Path) -> Result<(), CacheError> {
        let mut todo = sorted_names(top, top_path)?;
        if self.how.skip_metadata {
            todo.retain(|name| name != METADATA);
        }
        let mut levels = vec![Level { id: dirfd::identity(top, top_path)?, todo }];
        // `None` while at the top, which the caller owns.
        let mut cur: Option<std::os::fd::OwnedFd> = None;
        let mut path = top_path.to_owned();
        let mut rel = PathBuf::new();
        while let Some(level) = levels.last_mut() {
            let dir = cur.as_ref().map_or(top, AsFd::as_fd);
            if let Some(name) = level.todo.pop() {
                let child_path = path.join(&name);
                let child_rel = rel.join(&name);
                let st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| CacheError::io(&child_path, "stat", e))?;
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        self.visitor.dir(&child_rel)?;
                        let child = dirfd::open_dir(dir, name.as_os_str())
                            .map_err(|e| CacheError::io(&child_path, "open", e))?;
                        let id = dirfd::identity(&child, &child_path)?;
                        let todo = sorted_names(child.as_fd(), &child_path)?;
                        levels.push(Level { id, todo });
                        cur = Some(child);
                        path = child_path;
                        rel = child_rel;
                    }
                    FileType::Symlink => {
                        let target = rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new())
                            .map_err(|e| CacheError::io(&child_path, "readlink", e))?;
                        self.visitor.symlink(&child_rel, OsStr::from_bytes(target.as_bytes()))?;
                    }
                    FileType::RegularFile => self.file(dir, &name, &child_path, &child_rel)?,
                    _ => return Err(refused(child_path)),
                }
                continue;
            }
            if self.how.sync {
                rustix::fs::fsync(dir).map_err(|e| CacheError::io(&path, "fsync", e))?;
            }
            levels.pop();
            let Some(up) = levels.last() else { break };
            cur = if levels.len() == 1 { None } else { Some(dirfd::parent(dir, up.id, &path)?) };
            path.pop();
            rel.pop();
        }
        Ok(())
    }

    fn file(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path, rel: &Path) -> Result<(), CacheError> {
        let fd = dirfd::open_file(dir, name).map_err(|e| CacheError::io(path, "open", e))?;
        // What was opened is what counts: the name may have been swapped.
        let st = rustix::fs::fstat(&fd).map_err(|e| CacheError::io(path, "stat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refused(path.to_owned()));
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        let exec = st.st_mode & 0o111 != 0;
        let file = std::fs::File::from(fd);
        let mut source = Source { file: &file, seen: 0, progress: &mut *self.progress };
        if self.how.sync && len >= OVERLAP_SYNC_FROM {
            // Write back while we read: the disk and the CPU each take
            // about as long on a large file, so doing both at once almost
            // halves a publish.
            std::thread::scope(|scope| {
                let syncing = scope.spawn(|| file.sync_all());
                let visited = self.visitor.file(rel, exec, len, &mut source, path);
                let synced = syncing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                visited?;
                synced.map_err(|e| CacheError::io(path, "fsync", e))
            })?;
        } else {
            self.visitor.file(rel, exec, len, &mut source, path)?;
            if self.how.sync {
                file.sync_all().map_err(|e| CacheError::io(path, "fsync", e))?;
            }
        }
        // The visitor read `len` bytes; anything more, or less, means the
        // file changed under us and nothing trustworthy can be said.
        let mut probe = [0u8; 1];
        let more = (&file).read(&mut probe).map_err(|e| CacheError::io(path, "read", e))?;
        if source.seen != len || more != 0 {
            return Err(CacheError::io(path, "read", std::io::Error::other("file changed while read")));
        }
        Ok(())
    }
}

/// A file being read by a visitor: counts what it reads and reports it.
pub(crate) struct Source<'a> {
    file: &'a std::fs::File,
    seen: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl Source<'_> {
    /// The file itself, at the position reading has reached, for a
    /// visitor that moves its bytes without reading them (which then
    /// reports them with [`Source::consumed`]).
    pub(crate) fn file(&self) -> &std::fs::File {
        self.file
    }

    /// `n` more bytes were taken from the file without [`Read`].
    pub(crate) fn consumed(&mut self, n: u64) {
        self.seen += n;
        (self.progress)(n);
    }
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.seen += n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Files at least this large are synced on a thread of their own while
/// they are read; below it a thread costs more than it saves.
const OVERLAP_SYNC_FROM: u64 = 8 << 20;

fn refused(path: PathBuf) -> CacheError {
    CacheError::Refused { path, what: "a FIFO, socket or device node in an entry".to_owned() }
}

/// Read and check an entry's `entry.json`.
pub(crate) fn read_meta(entry: impl AsFd, key: &str) -> Result<EntryMeta, CorruptReason> {
    match dirfd::open_file(entry, METADATA) {
        Ok(fd) => read_meta_from(&fd, key),
        Err(Errno::NOENT) => Err(CorruptReason::MissingMetadata),
        Err(_) => Err(CorruptReason::Unreadable),
    }
}

/// The largest `entry.json` read: this crate writes a few hundred bytes
/// plus the build's own metadata.
pub(crate) const MAX_METADATA: usize = 4 << 20;

/// Read and check an opened `entry.json`.
pub(crate) fn read_meta_from(file: impl AsFd, key: &str) -> Result<EntryMeta, CorruptReason> {
    // Plain reads into spare capacity: the file is small, and
    // `read_to_end` would first ask its size and position (two more
    // syscalls on every lookup).
    let mut bytes = Vec::with_capacity(1024);
    loop {
        if bytes.len() > MAX_METADATA {
            // Not what this crate writes; and a huge file must not be read
            // into memory to find that out.
            return Err(CorruptReason::Malformed);
        }
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity());
        }
        match rustix::io::read(&file, rustix::buffer::spare_capacity(&mut bytes)) {
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => {}
            // Also what a directory planted as `entry.json` gives.
            Err(_) => return Err(CorruptReason::Unreadable),
        }
    }
    parse_meta(&bytes, key)
}

/// Parse and check the bytes of an `entry.json` for `key`.
pub(crate) fn parse_meta(bytes: &[u8], key: &str) -> Result<EntryMeta, CorruptReason> {
    if bytes.len() > MAX_METADATA {
        return Err(CorruptReason::Malformed);
    }
    let meta: EntryMeta = match serde_json::from_slice(bytes) {
        Ok(meta) => meta,
        Err(_) => {
            // A newer layout is not malformed: say which it is.
            #[derive(Deserialize)]
            struct Version {
                schema: u32,
            }
            return Err(match serde_json::from_slice::<Version>(bytes) {
                Ok(v) if v.schema > SCHEMA => CorruptReason::SchemaFromTheFuture,
                _ => CorruptReason::Malformed,
            });
        }
    };
    if meta.schema > SCHEMA {
        return Err(CorruptReason::SchemaFromTheFuture);
    }
    if meta.key != key {
        return Err(CorruptReason::Malformed);
    }
    Ok(meta)
}
