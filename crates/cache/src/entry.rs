//! What an entry holds about itself (`entry.json`) and the canonical walk
//! that digests and syncs its content.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

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
pub(crate) struct Walked {
    pub(crate) size: u64,
    pub(crate) files: u64,
    pub(crate) digest: String,
}

/// Digest `dir` in a canonical order (names sorted bytewise, depth first),
/// skipping the top-level `entry.json`; with `sync`, `fsync` every file
/// and directory on the way (children before their directory).
///
/// Per item the digest takes its type, its path relative to `dir`, and
/// then for a file the executable bit, the length and the bytes, for a
/// symlink its target. Symlinks are never followed; other file types
/// (FIFOs, devices, sockets) are refused, as no reader could copy them.
pub(crate) fn walk(dir: &Path, sync: bool) -> Result<Walked, CacheError> {
    let mut hasher = blake3::Hasher::new();
    let mut walked = Walked { size: 0, files: 0, digest: String::new() };
    walk_into(dir, Path::new(""), sync, &mut hasher, &mut walked)?;
    walked.digest = hasher.finalize().to_hex().to_string();
    Ok(walked)
}

fn walk_into(
    root: &Path,
    rel: &Path,
    sync: bool,
    hasher: &mut blake3::Hasher,
    walked: &mut Walked,
) -> Result<(), CacheError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| CacheError::io(&dir, "list", e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| CacheError::io(&dir, "list", e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        if rel.as_os_str().is_empty() && name == METADATA {
            continue;
        }
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| CacheError::io(&path, "stat", e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            item(hasher, b'd', &rel_path);
            walk_into(root, &rel_path, sync, hasher, walked)?;
        } else if kind.is_symlink() {
            item(hasher, b'l', &rel_path);
            let target = std::fs::read_link(&path).map_err(|e| CacheError::io(&path, "readlink", e))?;
            hasher.update(target.as_os_str().as_bytes());
            hasher.update(b"\0");
            walked.files += 1;
        } else if kind.is_file() {
            item(hasher, b'f', &rel_path);
            hasher.update(&[u8::from(meta.mode() & 0o111 != 0)]);
            hasher.update(&meta.len().to_le_bytes());
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc_flags())
                .open(&path)
                .map_err(|e| CacheError::io(&path, "open", e))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut seen = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(|e| CacheError::io(&path, "read", e))?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
                hasher.update(&buf[..n]);
            }
            if seen != meta.len() {
                // Changed under us: nothing trustworthy can be said.
                return Err(CacheError::io(&path, "read", std::io::Error::other("file changed while read")));
            }
            if sync {
                file.sync_all().map_err(|e| CacheError::io(&path, "fsync", e))?;
            }
            walked.size += meta.len();
            walked.files += 1;
        } else {
            return Err(CacheError::Refused {
                path,
                what: "a FIFO, socket or device node in an entry".to_owned(),
            });
        }
    }
    if sync {
        sync_dir(&dir)?;
    }
    Ok(())
}

fn item(hasher: &mut blake3::Hasher, kind: u8, rel: &Path) {
    hasher.update(&[kind]);
    hasher.update(rel.as_os_str().as_bytes());
    hasher.update(b"\0");
}

fn libc_flags() -> i32 {
    libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY
}

/// `fsync` a directory, so the names in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| CacheError::io(dir, "open", e))?;
    rustix::fs::fsync(&fd).map_err(|e| CacheError::io(dir, "fsync", e))
}

/// Read and check an entry's `entry.json`.
pub(crate) fn read_meta(entry: &Path, key: &str) -> Result<EntryMeta, CorruptReason> {
    let bytes = match std::fs::read(entry.join(METADATA)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CorruptReason::MissingMetadata),
        Err(_) => return Err(CorruptReason::Unreadable),
    };
    let meta: EntryMeta = match serde_json::from_slice(&bytes) {
        Ok(meta) => meta,
        Err(_) => {
            // A newer layout is not malformed: say which it is.
            #[derive(Deserialize)]
            struct Version {
                schema: u32,
            }
            return Err(match serde_json::from_slice::<Version>(&bytes) {
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
