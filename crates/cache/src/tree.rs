//! Writing an entry's tree into a staging slot in one pass: each item is
//! created, its bytes written, digested and synced as it arrives, so
//! publishing never reads the data back. Behind `put` (a directory walked
//! in canonical order) and pulling an archive.
//!
//! Items must come in the walk's canonical order, each inside a directory
//! that came before it; anything else is refused, which also refuses an
//! archive naming one path twice. Paths are relative and plain: no `..`,
//! no `.`, no root. Symlinks may not point outside the tree. Files get
//! mode 0644, or 0755 when executable (the only permission the digest
//! records), directories 0755, all less the umask.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::METADATA;
use crate::entry::{Digest, Source, Visit, Walked};
use crate::error::CacheError;

/// How deep a written tree may go: each level holds a directory
/// descriptor until it is complete and synced.
pub(crate) const MAX_DEPTH: usize = 256;

/// Files at least this large are hashed on a second thread while they
/// are written, and written back while they are copied.
const OVERLAP_FROM: u64 = 8 << 20;
/// Ask for writeback after this many bytes of a large file.
const WRITEBACK_EVERY: u64 = 16 << 20;
/// The chunk a file is copied in: large enough that a thread per chunk
/// costs little.
const CHUNK: usize = 1 << 20;
/// The chunk an in-kernel copy moves before it is digested.
const KERNEL_CHUNK: usize = 8 << 20;

/// Why an in-kernel copy stopped.
enum CopyError {
    /// The kernel cannot copy between these files; nothing was copied.
    Unsupported,
    /// The source ended before its length.
    Short,
    Io(std::io::Error),
    Sync(std::io::Error),
}

/// A thread that writes a large file back to disk while it is still
/// being copied, so the final fsync finds little left to do.
struct Writeback<'s> {
    request: std::sync::mpsc::SyncSender<()>,
    syncer: std::thread::ScopedJoinHandle<'s, rustix::io::Result<()>>,
    since: u64,
}

impl<'s> Writeback<'s> {
    fn start(scope: &'s std::thread::Scope<'s, '_>, file: &'s std::fs::File) -> Self {
        let (request, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let syncer = scope.spawn(move || {
            while requests.recv().is_ok() {
                rustix::fs::fdatasync(file)?;
            }
            rustix::fs::fsync(file)
        });
        Writeback { request, syncer, since: 0 }
    }

    /// `n` more bytes were written: ask for writeback every
    /// [`WRITEBACK_EVERY`].
    fn wrote(&mut self, n: u64) {
        self.since += n;
        if self.since >= WRITEBACK_EVERY {
            self.since = 0;
            // Full: a writeback is under way and will see this too.
            let _ = self.request.try_send(());
        }
    }

    /// The final fsync, once every requested writeback is done.
    fn finish(self) -> rustix::io::Result<()> {
        drop(self.request);
        self.syncer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

fn join(handle: std::thread::ScopedJoinHandle<'_, std::io::Result<()>>) -> std::io::Result<()> {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What a written tree may hold at most (an archive's manifest says).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) size: u64,
    pub(crate) files: u64,
    pub(crate) dirs: u64,
}

impl Limits {
    pub(crate) const NONE: Limits = Limits { size: u64::MAX, files: u64::MAX, dirs: u64::MAX };
}

pub(crate) struct TreeWriter<'a> {
    top: BorrowedFd<'a>,
    top_path: &'a Path,
    /// The directories below the top still being filled, outermost first.
    open: Vec<(PathBuf, OwnedFd)>,
    last: Option<PathBuf>,
    digest: Digest,
    limits: Limits,
    buf: Vec<u8>,
}

impl<'a> TreeWriter<'a> {
    /// Write into the empty directory `top` (named `top_path` in
    /// messages).
    pub(crate) fn new(top: BorrowedFd<'a>, top_path: &'a Path, limits: Limits) -> Self {
        TreeWriter {
            top,
            top_path,
            open: Vec::new(),
            last: None,
            digest: Digest::default(),
            limits,
            buf: vec![0; CHUNK],
        }
    }

    /// Check `rel`'s place in the order, close the directories it is not
    /// in, and return its name; its directory is then
    /// [`TreeWriter::innermost`].
    fn place<'r>(&mut self, rel: &'r Path) -> Result<&'r OsStr, CacheError> {
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        let Some(name) = rel.file_name().filter(|_| plain) else {
            return Err(self.reject(rel, "not a plain relative path"));
        };
        if rel == Path::new(METADATA) {
            return Err(self.reject(rel, "a name the cache reserves for the entry's metadata"));
        }
        if self.last.as_deref().is_some_and(|last| rel <= last) {
            return Err(self.reject(rel, "out of order or repeated"));
        }
        self.last = Some(rel.to_owned());
        let parent = rel.parent().unwrap_or(Path::new(""));
        while let Some((dir, _)) = self.open.last() {
            if dir == parent {
                break;
            }
            self.close_innermost()?;
        }
        if self.open.is_empty() && !parent.as_os_str().is_empty() {
            return Err(self.reject(rel, "its directory does not come before it"));
        }
        Ok(name)
    }

    /// The directory being filled.
    fn innermost(&self) -> BorrowedFd<'_> {
        self.open.last().map_or(self.top, |(_, fd)| fd.as_fd())
    }

    /// Sync and close the innermost open directory: nothing more goes in.
    fn close_innermost(&mut self) -> Result<(), CacheError> {
        if let Some((rel, fd)) = self.open.pop() {
            rustix::fs::fsync(&fd).map_err(|e| CacheError::io(self.top_path.join(rel), "fsync", e))?;
        }
        Ok(())
    }

    fn count(&mut self, rel: &Path, len: u64) -> Result<(), CacheError> {
        let (size, files, _) = self.digest.counts();
        if files >= self.limits.files || len > self.limits.size.saturating_sub(size) {
            return Err(self.reject(rel, "more than the manifest declares"));
        }
        Ok(())
    }

    fn reject(&self, rel: &Path, why: &str) -> CacheError {
        CacheError::Rejected { path: self.top_path.join(rel), reason: why.to_owned() }
    }

    /// Make the directory `rel`.
    pub(crate) fn dir(&mut self, rel: &Path) -> Result<(), CacheError> {
        if self.digest.counts().2 >= self.limits.dirs {
            return Err(self.reject(rel, "more than the manifest declares"));
        }
        let name = self.place(rel)?;
        if self.open.len() >= MAX_DEPTH {
            return Err(self.reject(rel, "nested too deep"));
        }
        let parent = self.innermost();
        let path = || self.top_path.join(rel);
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))
            .map_err(|e| CacheError::io(path(), "create", e))?;
        let fd = crate::dirfd::open_dir(parent, name).map_err(|e| CacheError::io(path(), "open", e))?;
        self.open.push((rel.to_owned(), fd));
        self.digest.dir(rel);
        Ok(())
    }

    /// Make the symlink `rel` to `target`, which must stay inside the tree.
    pub(crate) fn symlink(&mut self, rel: &Path, target: &OsStr) -> Result<(), CacheError> {
        if !stays_inside(rel, Path::new(target)) {
            return Err(self.reject(rel, "a symlink pointing outside the entry"));
        }
        self.count(rel, 0)?;
        let name = self.place(rel)?;
        rustix::fs::symlinkat(target, self.innermost(), name)
            .map_err(|e| CacheError::io(self.top_path.join(rel), "create", e))?;
        self.digest.symlink(rel, target);
        Ok(())
    }

    /// Write the file `rel` from exactly `len` bytes of `data`, and sync it.
    pub(crate) fn file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut dyn Read,
        source: &Path,
    ) -> Result<(), CacheError> {
        let (file, path) = self.create(rel, exec, len)?;
        if len < OVERLAP_FROM {
            self.copy(&file, len, data, (rel, source, &path), false, |_| {})?;
            return file.sync_all().map_err(|e| CacheError::io(&path, "fsync", e));
        }
        self.copy_large(&file, len, data, (rel, source, &path))
    }

    /// Copy a large file: hash each chunk on a thread while it is
    /// written, and have the disk write back what is written so far on
    /// another, so the final fsync finds little left to do. Run one after
    /// the other, the three take about as long as each other.
    fn copy_large(
        &mut self,
        file: &std::fs::File,
        len: u64,
        data: &mut dyn Read,
        names: (&Path, &Path, &Path),
    ) -> Result<(), CacheError> {
        std::thread::scope(|scope| {
            let mut writeback = Writeback::start(scope, file);
            let copied = self.copy(file, len, data, names, true, |n| writeback.wrote(n));
            let synced = writeback.finish();
            copied?;
            synced.map_err(|e| CacheError::io(names.2, "fsync", e))
        })
    }

    /// Copy `len` bytes from `data` into `file` and digest them, hashing
    /// each chunk on a thread of its own while it is written if
    /// `parallel`; `written` is told each chunk's length. `names` are the
    /// item's relative path, the source's and the file's, for messages.
    fn copy(
        &mut self,
        mut file: &std::fs::File,
        len: u64,
        data: &mut dyn Read,
        names: (&Path, &Path, &Path),
        parallel: bool,
        mut written: impl FnMut(u64),
    ) -> Result<(), CacheError> {
        use std::io::Write;
        let (rel, source, path) = names;
        let mut left = len;
        while left > 0 {
            let want = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => return Err(self.reject(rel, "shorter than its declared size")),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CacheError::io(source, "read", e)),
            };
            let chunk = &self.buf[..n];
            let wrote = if parallel {
                let digest = &mut self.digest;
                std::thread::scope(|scope| {
                    scope.spawn(|| digest.data(chunk));
                    file.write_all(chunk)
                })
            } else {
                self.digest.data(chunk);
                file.write_all(chunk)
            };
            wrote.map_err(|e| CacheError::io(path, "write", e))?;
            written(n as u64);
            left -= n as u64;
        }
        Ok(())
    }

    /// Create the file `rel` (read-write: a copy made in the kernel is
    /// digested by reading it back) and start its digest.
    fn create(&mut self, rel: &Path, exec: bool, len: u64) -> Result<(std::fs::File, PathBuf), CacheError> {
        self.count(rel, len)?;
        let name = self.place(rel)?;
        let path = self.top_path.join(rel);
        let fd = rustix::fs::openat(
            self.innermost(),
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(if exec { 0o755 } else { 0o644 }),
        )
        .map_err(|e| CacheError::io(&path, "create", e))?;
        self.digest.file(rel, exec, len);
        Ok((std::fs::File::from(fd), path))
    }

    /// Copy a large file of the walked source with `copy_file_range`: the
    /// bytes never cross into user space (on a filesystem with reflinks
    /// they are not even copied). Each chunk is then digested by reading
    /// it back from the page cache, on a second thread while the next
    /// chunk is copied; the copy is ours, in our locked staging slot, so
    /// what is digested is what is published. Where the kernel cannot
    /// copy between these files (another filesystem before Linux 5.3,
    /// FUSE, some overlayfs), the bytes are read and written instead.
    fn copy_in_kernel(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        source: &mut Source<'_>,
        path: &Path,
    ) -> Result<(), CacheError> {
        use std::os::unix::fs::FileExt;
        let (file, target) = self.create(rel, exec, len)?;
        // One digesting thread at a time, each joined before the next
        // starts: the lock only hands the digest and buffer over.
        let hashed = std::sync::Mutex::new((&mut self.digest, &mut self.buf));
        let outcome = std::thread::scope(|scope| {
            let (file, hashed) = (&file, &hashed);
            let mut writeback = Writeback::start(scope, file);
            let copied = (|| {
                let mut done = 0u64;
                let mut hashing: Option<std::thread::ScopedJoinHandle<'_, std::io::Result<()>>> = None;
                while done < len {
                    let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(KERNEL_CHUNK);
                    let n = match rustix::fs::copy_file_range(source.file(), None, file, None, want) {
                        Ok(0) => return Err(CopyError::Short),
                        Ok(n) => n,
                        Err(Errno::INTR) => continue,
                        Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS | Errno::PERM)
                            if done == 0 =>
                        {
                            return Err(CopyError::Unsupported);
                        }
                        Err(e) => return Err(CopyError::Io(e.into())),
                    };
                    source.consumed(n as u64);
                    if let Some(previous) = hashing.take() {
                        join(previous).map_err(CopyError::Io)?;
                    }
                    let (from, to) = (done, done + n as u64);
                    hashing = Some(scope.spawn(move || {
                        let mut guard = hashed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let (digest, buf) = &mut *guard;
                        let mut at = from;
                        while at < to {
                            let want = usize::try_from(to - at).unwrap_or(usize::MAX).min(buf.len());
                            let got = file.read_at(&mut buf[..want], at)?;
                            if got == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                            digest.data(&buf[..got]);
                            at += got as u64;
                        }
                        Ok(())
                    }));
                    done += n as u64;
                    writeback.wrote(n as u64);
                }
                match hashing.take() {
                    Some(last) => join(last).map_err(CopyError::Io),
                    None => Ok(()),
                }
            })();
            let synced = writeback.finish();
            copied?;
            synced.map_err(|e| CopyError::Sync(e.into()))
        });
        match outcome {
            Ok(()) => Ok(()),
            // Nothing was copied: read and write instead, into the file
            // already made (its digest item is already taken).
            Err(CopyError::Unsupported) => self.copy_large(&file, len, source, (rel, path, &target)),
            Err(CopyError::Short) => Err(self.reject(rel, "shorter than its declared size")),
            Err(CopyError::Io(e)) => Err(CacheError::io(path, "copy", e)),
            Err(CopyError::Sync(e)) => Err(CacheError::io(&target, "fsync", e)),
        }
    }

    /// Sync every directory still open, then the top; the tree's size,
    /// file count and digest, and its number of directories.
    pub(crate) fn finish(mut self) -> Result<(Walked, u64), CacheError> {
        while !self.open.is_empty() {
            self.close_innermost()?;
        }
        rustix::fs::fsync(self.top).map_err(|e| CacheError::io(self.top_path, "fsync", e))?;
        Ok((self.digest.finish(), self.digest.counts().2))
    }
}

impl Visit for TreeWriter<'_> {
    fn dir(&mut self, rel: &Path) -> Result<(), CacheError> {
        TreeWriter::dir(self, rel)
    }

    fn symlink(&mut self, rel: &Path, target: &OsStr) -> Result<(), CacheError> {
        TreeWriter::symlink(self, rel, target)
    }

    fn file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut Source<'_>,
        path: &Path,
    ) -> Result<(), CacheError> {
        if len < OVERLAP_FROM {
            return TreeWriter::file(self, rel, exec, len, data, path);
        }
        self.copy_in_kernel(rel, exec, len, data, path)
    }
}

/// Whether a symlink at `link` (relative to the tree's top) pointing at
/// `target` resolves inside the tree. `..` may only lead the target: it
/// then climbs real directories of the tree, never more of them than are
/// above the link. After a name, `..` is refused, since the name may be
/// another symlink (say, to `.`) under which `..` climbs further than its
/// spelling says. Names can only lead down, through directories or
/// symlinks that are themselves checked so.
pub(crate) fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.as_os_str().as_bytes().contains(&0) {
        return false;
    }
    let mut above = link.components().count().saturating_sub(1);
    let mut descending = false;
    for part in target.components() {
        match part {
            Component::Normal(_) => descending = true,
            Component::CurDir => {}
            Component::ParentDir if !descending && above > 0 => above -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::stays_inside;
    use std::path::Path;

    #[test]
    fn symlinks_must_stay_inside() {
        let inside = |link: &str, target: &str| stays_inside(Path::new(link), Path::new(target));
        assert!(inside("a", "b"));
        assert!(inside("d/a", "../b"));
        assert!(inside("d/e/a", "../../b/./c"));
        assert!(!inside("a", "../b"));
        assert!(!inside("d/a", "../../b"));
        assert!(!inside("a", "/etc/passwd"));
        assert!(!inside("a", ""));
        // Down then out again still ends outside.
        assert!(!inside("a", "x/../../y"));
        // `x` may be a symlink to `.`: `..` after a name is refused.
        assert!(!inside("d/a", "x/../b"));
    }
}
