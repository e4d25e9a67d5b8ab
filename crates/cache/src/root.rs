//! Which roots are adopted: the marker, and the layout made inside an
//! adopted root (see [`Cache::open`]).

use super::*;

/// Check that the root `dir` is a cache (see [`Cache::open`]); with
/// `write`, make an empty (or legacy) one a cache and set up what is
/// missing inside it.
pub(crate) fn adopt(dir: &LockDir, root: &Path, write: bool) -> Result<(), CacheError> {
    let mut names = dirfd::names(dir, root)?;
    if names.iter().any(|n| n == MARKER) {
        let path = root.join(MARKER);
        if !dirfd::stat(dir, MARKER, &path)?.is_some_and(|st| dirfd::is_regular(&st)) {
            return Err(CacheError::Refused {
                path,
                what: "something other than a file as the cache's marker".into(),
            });
        }
    } else if names.is_empty() || is_legacy(dir, &names) {
        if !write {
            return if names.is_empty() {
                Err(CacheError::NotACache { path: root.to_owned(), reason: NotACache::Empty })
            } else {
                Ok(())
            };
        }
        // First, so that a root set up halfway is still recognised.
        create_file(dir, MARKER, MARKER_CONTENT, &root.join(MARKER))?;
    } else {
        names.sort();
        let count = names.len();
        let shown = names.iter().take(4).map(|n| n.to_string_lossy().into_owned()).collect();
        return Err(CacheError::NotACache {
            path: root.to_owned(),
            reason: NotACache::Foreign { shown, count },
        });
    }
    if write {
        create_file(dir, TAG, TAG_CONTENT, &root.join(TAG))?;
        for name in [LOCKS_DIR, STAGING_DIR] {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(CacheError::io(root.join(name), "create", e)),
            }
        }
    }
    Ok(())
}

/// A root made by lockyard-cache before it wrote [`MARKER`]: its own
/// `CACHEDIR.TAG`, byte for byte, and a `.locks` directory.
pub(crate) fn is_legacy(dir: &LockDir, names: &[std::ffi::OsString]) -> bool {
    if !names.iter().any(|n| n == LOCKS_DIR) {
        return false;
    }
    let Ok(fd) = dirfd::open_file(dir, TAG) else { return false };
    if !rustix::fs::fstat(&fd).is_ok_and(|st| dirfd::is_regular(&st)) {
        return false;
    }
    let mut buf = [0u8; 512];
    rustix::io::read(&fd, &mut buf).is_ok_and(|n| &buf[..n] == TAG_CONTENT.as_bytes())
}

/// Create the file `name` in `dir` holding `content`, unless it exists.
pub(crate) fn create_file(dir: &LockDir, name: &str, content: &str, path: &Path) -> Result<(), CacheError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => {
            use std::io::Write;
            std::fs::File::from(fd)
                .write_all(content.as_bytes())
                .map_err(|e| CacheError::io(path, "write", e))
        }
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(CacheError::io(path, "create", e)),
    }
}
