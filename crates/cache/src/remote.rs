//! The remote tier: entries shared between hosts through an object store.
//!
//! A [`Remote`] is an object store reached through opendal: S3 or an
//! S3-compatible server (`s3://BUCKET/PREFIX`), or a directory
//! (`file:///PATH`, for a shared mount). Set on [`CacheOptions::remote`],
//! it makes the local cache a pull-through, push-after-build cache; the
//! local cache stays authoritative and every remote failure is a warning
//! unless [`CacheOptions::require_remote`] is set.
//!
//! # Objects
//!
//! ```text
//! {prefix}/v1/{key}/{digest}.tar.zst   the entry: entry.json, then its tree
//! {prefix}/v1/{key}/manifest.json      Manifest: which archive, and what it must hold
//! ```
//!
//! The archive is a tar stream compressed with zstd: `entry.json` first,
//! then every directory, file and symlink in the walk's canonical order,
//! so the digest is computed while packing and while unpacking, and
//! neither side holds more than a buffer of the entry in memory.
//!
//! # Push
//!
//! With the entry held for reading, the archive is packed straight from
//! it into a multipart upload; if its digest is not the one in
//! `entry.json` the upload is aborted (the local entry is corrupt).
//! Then the manifest is written. Both writes carry `If-None-Match: *`
//! where the service supports it (S3 does), so the first manifest of a key
//! wins; a push that loses deletes its archive, which it created and no
//! manifest names. An entry larger than one part first asks for the
//! manifest and sends nothing if there is one; for a smaller one the
//! question costs as much as the upload. Without conditional writes the
//! manifest is always asked for first, and the last of two racing
//! manifests wins; each names its own archive, so a reader still gets a
//! pair that belongs together. A push that dies between the two writes
//! leaves an archive without a manifest, which no reader trusts and the
//! next push of the same build reuses.
//!
//! # Pull
//!
//! Under the key's build lock (so one process per host downloads): the
//! manifest is read (at most 64 KiB) and checked; exactly the archive
//! length it declares is read, and a shorter object is refused as
//! truncated. The archive is streamed into a staging
//! slot: every path must be plain, relative, in canonical order and
//! inside a directory that came before it; symlinks may not lead out;
//! only directories, regular files and symlinks are accepted; the tree
//! may not hold more bytes, files or directories than the manifest
//! declares. Each file is digested and synced as it is written. Only if
//! the digest, size and file count match the manifest and the archive's
//! own `entry.json` is the slot published, through the same crash-safe
//! rename as a local build. Anything else is [`CacheError::Rejected`]
//! (or [`CacheError::Remote`] for a transport failure) and the slot is
//! discarded; a crash mid-pull leaves debris for [`Cache::sweep`].

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use opendal::ErrorKind;
use opendal::options::{ListOptions, ReaderOptions, WriteOptions};
use opendal_http_transport_reqwest::ReqwestTransport;
use serde::{Deserialize, Serialize};

use super::*;
use crate::entry::{Digest, Visit, Walk};
use crate::tree::{Limits, TreeWriter};

/// The manifest layout this crate writes and reads.
pub const MANIFEST_SCHEMA: u32 = 1;
/// The layout of objects under a remote's prefix.
const LAYOUT: &str = "v1";
const MANIFEST: &str = "manifest.json";
/// The largest manifest read: this crate writes a few hundred bytes.
const MAX_MANIFEST: u64 = 64 << 10;
/// Upload and download in parts of this size (S3's minimum part is 5 MiB).
const CHUNK: usize = 8 << 20;
/// Parts in flight at once: one moves over the network while the next is
/// packed or unpacked.
const IN_FLIGHT: usize = 2;
/// zstd's window, and the largest a pulled archive may ask for: bounds
/// the decoder's memory whatever the archive says.
const WINDOW_LOG: u32 = 23;
const ZSTD_LEVEL: i32 = 3;

/// An object store holding a cache's entries (see the [module
/// docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    url: Arc<str>,
    /// opendal's operator, as configured; the archive upload uses it
    /// directly, since only its writer can abort (see [`Upload`]).
    async_op: opendal::Operator,
    /// Whether writes can be made conditional (`If-None-Match: *`).
    conditional: bool,
    /// Made on first use, so that a command finding its entry locally
    /// starts no thread.
    engine: Arc<OnceLock<Result<Engine, String>>>,
}

/// What a remote's requests run on.
struct Engine {
    /// opendal's I/O runs on this runtime; its one worker thread uploads a
    /// part while the caller's thread packs the next.
    runtime: tokio::runtime::Runtime,
    /// `async_op`, driven from the caller's thread.
    op: opendal::blocking::Operator,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("conditional", &self.conditional).finish()
    }
}

/// What a remote holds for one key: which archive, and what unpacking it
/// must give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Layout version, [`MANIFEST_SCHEMA`].
    pub schema: u32,
    /// The entry's key.
    pub key: String,
    /// The entry's digest, as in its `entry.json`; also the archive's name.
    pub digest: String,
    /// Total bytes of its regular files.
    pub size: u64,
    /// How many regular files and symlinks it holds.
    pub files: u64,
    /// How many directories it holds.
    pub dirs: u64,
    /// The archive's length in bytes.
    pub archive_size: u64,
    /// When the entry was built, ns since the Unix epoch.
    pub created_ns: u64,
}

/// A key [`Remote::list`] found, with its manifest or why it is unusable.
pub type Listed = (String, Result<Manifest, CacheError>);

/// What [`Cache::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pushed {
    /// The entry was uploaded: its archive is this many bytes.
    Uploaded {
        /// The archive's length.
        archive_size: u64,
    },
    /// The remote already holds this very entry (same digest).
    Present,
    /// The remote holds another build of the key, which was kept (the
    /// first writer wins).
    Kept {
        /// The remote build's digest.
        digest: String,
    },
}

impl Pushed {
    /// What a push of `digest` amounts to when the remote holds `there`.
    fn against(there: Manifest, digest: &str) -> Pushed {
        if there.digest == digest { Pushed::Present } else { Pushed::Kept { digest: there.digest } }
    }
}

impl Remote {
    /// Open the remote at `url`: `s3://BUCKET[/PREFIX]` or
    /// `file:///PATH`. Every request, and every wait for data within one,
    /// gives up after `timeout`.
    ///
    /// For S3 the endpoint, region and credentials come from where AWS's
    /// own tools read them: `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
    /// `AWS_PROFILE` and `~/.aws`. A URL carrying a user, password or
    /// query is refused, so credentials never travel in one (nor get
    /// printed with it).
    ///
    /// # Errors
    /// [`CacheError::Remote`] for a URL this crate cannot use.
    pub fn open(url: &str, timeout: Duration) -> Result<Remote, CacheError> {
        // Never echo a user or password given in the URL.
        let shown = match url.split_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => url.to_owned(),
        };
        let bad =
            |why: &str| CacheError::Remote { url: shown.clone(), op: "open", source: why.to_owned().into() };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("not a URL; give s3://BUCKET/PREFIX or file:///PATH"))?;
        if rest.contains(['@', '?', '#']) {
            return Err(bad(
                "a user, password, query or fragment in the URL; credentials and the endpoint come from \
                 the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)",
            ));
        }
        let op = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket; give s3://BUCKET/PREFIX"));
                }
                let builder = opendal::services::S3::default().bucket(bucket).root(&format!("/{prefix}"));
                opendal::Operator::new(builder).map_err(|e| {
                    let hint = if e.to_string().contains("region") {
                        "; set AWS_REGION to the bucket's region (any value for most S3-compatible servers)"
                    } else {
                        ""
                    };
                    bad(&format!("{e}{hint}"))
                })?
            }
            "file" | "fs" => {
                if !rest.starts_with('/') {
                    return Err(bad("a directory must be absolute: file:///PATH"));
                }
                let builder = opendal::services::Fs::default().root(rest);
                opendal::Operator::new(builder).map_err(|e| bad(&e.to_string()))?
            }
            other => {
                return Err(bad(&format!("the scheme {other:?} is not compiled in; s3:// and file:// are")));
            }
        };
        let transport = opendal::HttpTransporter::new(LazyTransport::default());
        let op = op
            .with_context(opendal::OperationContext::new().with_http_transport(transport))
            .layer(opendal::layers::TimeoutLayer::new().with_timeout(timeout).with_io_timeout(timeout));
        let conditional = op.info().capability().write_with_if_not_exists;
        Ok(Remote { url: url.into(), async_op: op, conditional, engine: Arc::default() })
    }

    fn engine(&self) -> Result<&Engine, CacheError> {
        let made = self.engine.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("lockyard-remote")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let op = {
                let _entered = runtime.enter();
                opendal::blocking::Operator::new(self.async_op.clone()).map_err(|e| e.to_string())?
            };
            Ok(Engine { runtime, op })
        });
        made.as_ref().map_err(|why| CacheError::Remote {
            url: self.url.to_string(),
            op: "open",
            source: why.clone().into(),
        })
    }

    /// The blocking operator, for the requests made from this thread.
    fn op(&self) -> Result<&opendal::blocking::Operator, CacheError> {
        self.engine().map(|engine| &engine.op)
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The opendal operator behind it, rooted at the URL's prefix: for
    /// what this crate does not do (and for measuring it against opendal
    /// alone). What it writes outside `v1/` is not the cache's.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if the runtime its requests run on cannot be
    /// started.
    pub fn operator(&self) -> Result<&opendal::blocking::Operator, CacheError> {
        self.op()
    }

    /// The manifest of `key`, `None` if the remote has none.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if the remote fails, [`CacheError::Rejected`]
    /// for a manifest that is not one this crate can trust.
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>, CacheError> {
        check_key(key)?;
        let path = manifest_path(key);
        // One GET, read no further than the cap: a huge object is refused
        // without being held in memory (and without a stat first).
        let reader = match self.op()?.reader(&path).and_then(|r| r.into_std_read(..)) {
            Ok(reader) => reader,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed("read", e)),
        };
        let mut bytes = Vec::new();
        if let Err(e) = reader.take(MAX_MANIFEST + 1).read_to_end(&mut bytes) {
            let not_found =
                e.get_ref().and_then(|i| i.downcast_ref::<opendal::Error>()).map(opendal::Error::kind);
            if not_found == Some(ErrorKind::NotFound) {
                return Ok(None);
            }
            return Err(CacheError::Remote { url: self.url.to_string(), op: "read", source: e.into() });
        }
        let rejected = |why: &str| CacheError::Rejected { path: self.object(&path), reason: why.to_owned() };
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(rejected("a manifest larger than 64 KiB"));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|_| rejected("not a manifest"))?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(rejected(&format!(
                "manifest schema {}; this lockyard reads {MANIFEST_SCHEMA}",
                manifest.schema
            )));
        }
        if manifest.key != key || !is_digest(&manifest.digest) {
            return Err(rejected("a manifest for another key, or without a digest"));
        }
        Ok(Some(manifest))
    }

    /// Every key the remote holds, by its manifest, sorted by key; a
    /// manifest that cannot be read or trusted is listed with the error.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if the remote cannot be listed.
    pub fn list(&self) -> Result<Vec<Listed>, CacheError> {
        let mut keys: Vec<String> = self
            .names(&format!("{LAYOUT}/"))?
            .into_iter()
            .filter_map(|name| name.strip_suffix('/').map(str::to_owned))
            .filter(|key| key::validate(key).is_ok())
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys
            .into_iter()
            .filter_map(|key| match self.manifest(&key) {
                Ok(Some(m)) => Some((key, Ok(m))),
                // An archive whose manifest was never written.
                Ok(None) => None,
                Err(e) => Some((key, Err(e))),
            })
            .collect())
    }

    /// Remove `key` from the remote: its manifest first, so no reader
    /// trusts what follows, then every archive of the key. Only objects
    /// named as this crate names them are touched. Returns how many
    /// objects went, 0 if the remote holds nothing of `key`.
    ///
    /// This is how a bad build is taken back: the first push of a key
    /// wins, so a replacement can be pushed only once the key is gone.
    /// A push of the key racing this may still land after it.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if the remote fails; what was removed
    /// before the failure stays removed.
    pub fn remove(&self, key: &str) -> Result<usize, CacheError> {
        check_key(key)?;
        let dir = format!("{LAYOUT}/{key}/");
        let mut ours: Vec<String> = self
            .names(&dir)?
            .into_iter()
            .filter(|name| name == MANIFEST || name.strip_suffix(".tar.zst").is_some_and(is_digest))
            .map(|name| format!("{dir}{name}"))
            .collect();
        // The manifest first.
        ours.sort_by_key(|path| !path.ends_with(MANIFEST));
        for path in &ours {
            self.op()?.delete(path).map_err(|e| self.failed("delete", e))?;
        }
        Ok(ours.len())
    }

    /// The names directly under `dir` (which ends in `/`), directories
    /// with a trailing `/`; none if it does not exist.
    fn names(&self, dir: &str) -> Result<Vec<String>, CacheError> {
        let options = ListOptions { recursive: false, ..ListOptions::default() };
        let entries = match self.op()?.list_options(dir, options) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list", e)),
        };
        Ok(entries
            .iter()
            .filter_map(|e| e.path().strip_prefix(dir))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The URL of an object, for messages.
    fn object(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("{}/{path}", self.url.trim_end_matches('/')))
    }

    fn failed(&self, op: &'static str, e: opendal::Error) -> CacheError {
        CacheError::Remote { url: self.url.to_string(), op, source: Box::new(e) }
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            if_not_exists: self.conditional,
            chunk: Some(CHUNK),
            concurrent: IN_FLIGHT,
            ..WriteOptions::default()
        }
    }
}

fn manifest_path(key: &str) -> String {
    format!("{LAYOUT}/{key}/{MANIFEST}")
}

fn archive_path(key: &str, digest: &str) -> String {
    format!("{LAYOUT}/{key}/{digest}.tar.zst")
}

/// Whether `s` is a digest as entries record it: 64 lowercase hex digits.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Cache {
    fn remote(&self, op: &'static str) -> Result<&Remote, CacheError> {
        self.options.remote.as_deref().ok_or_else(|| CacheError::Remote {
            url: String::new(),
            op,
            source: "no remote is configured (CacheOptions::remote)".into(),
        })
    }

    /// A remote failure during a lookup, build or store: an error with
    /// [`CacheOptions::require_remote`], else a warning.
    pub(crate) fn remote_failed(&self, e: CacheError) -> Result<(), CacheError> {
        if self.options.require_remote {
            return Err(e);
        }
        tracing::warn!(error = %e, "remote cache unavailable; going on with the local cache");
        Ok(())
    }

    /// A local miss in [`Cache::lookup`]: pull from the remote, if one is
    /// set and no other process of this host is building or pulling the
    /// key (a lookup does not wait for that; `ensure` does).
    pub(crate) fn pull_through(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<EntryGuard>, CacheError> {
        let Some(remote) = self.options.remote.as_deref() else { return Ok(None) };
        if self.options.read_only {
            return Ok(None);
        }
        let options = LockOptions::new().mode(LockMode::Exclusive);
        let build = self.lock_file(&self.locks, &format!("{key}.build"), options)?;
        let Some(_building) = build.try_lock().map_err(|e| CacheError::from_lock(key, e))? else {
            return Ok(None);
        };
        if let Some(found) = self.lookup_until(key, deadline)? {
            return Ok(Some(found));
        }
        self.download_or_warn(remote, key)
    }

    /// [`Cache::download`], with the remote's failures handled as
    /// [`CacheOptions::require_remote`] says.
    pub(crate) fn download_or_warn(
        &self,
        remote: &Remote,
        key: &str,
    ) -> Result<Option<EntryGuard>, CacheError> {
        match self.download(remote, key) {
            Err(e @ (CacheError::Remote { .. } | CacheError::Rejected { .. })) => {
                self.remote_failed(e)?;
                Ok(None)
            }
            other => other,
        }
    }

    /// After a local build or put: push the new entry, if a remote is set.
    pub(crate) fn push_built(&self, guard: EntryGuard) -> Result<EntryGuard, CacheError> {
        let Some(remote) = self.options.remote.as_deref() else { return Ok(guard) };
        match self.push_entry(remote, &guard) {
            Ok(pushed) => tracing::debug!(key = guard.key(), ?pushed, "pushed to the remote cache"),
            Err(e) => self.remote_failed(e)?,
        }
        Ok(guard)
    }

    /// Upload `key`'s entry to the remote ([`CacheOptions::remote`]),
    /// unless the remote holds that key already (see the [remote module
    /// docs](crate::remote)). `Ok(None)` if there is no local entry.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if there is no remote or it fails,
    /// [`CacheError::Corrupt`] if the local entry no longer matches its
    /// digest (nothing is published remotely), and as [`Cache::lookup`].
    pub fn push(&self, key: &str) -> Result<Option<Pushed>, CacheError> {
        check_key(key)?;
        let remote = self.remote("push")?;
        let Some(guard) = self.inspect(key)? else { return Ok(None) };
        self.push_entry(remote, &guard).map(Some)
    }

    /// Push an entry held for reading.
    pub(crate) fn push_entry(&self, remote: &Remote, guard: &EntryGuard) -> Result<Pushed, CacheError> {
        let key = guard.key();
        let meta = guard.meta();
        // Asking first costs a request and saves an upload only if the key
        // is there already, which the conditional manifest write finds out
        // anyway. So ask only when the upload is larger than that request,
        // or when nothing else keeps the first writer's manifest.
        if (meta.size > CHUNK as u64 || !remote.conditional)
            && let Some(there) = remote.manifest(key)?
        {
            return Ok(Pushed::against(there, &meta.digest));
        }
        let Some(dir) = self.entry_dir(key)? else {
            return Err(CacheError::Corrupt {
                path: guard.path.clone(),
                reason: CorruptReason::NotADirectory,
            });
        };
        let archive = archive_path(key, &meta.digest);
        let uploaded = self.upload_archive(remote, guard, &dir, &archive)?;
        let (archive_size, dirs) = match uploaded {
            Some(done) => done,
            // An archive of this digest is there already: most often this
            // very build, pushed before; else a push that died before its
            // manifest, or a racing host with the same bytes.
            None => {
                if let Some(there) = remote.manifest(key)? {
                    return Ok(Pushed::against(there, &meta.digest));
                }
                let size =
                    remote.op()?.stat(&archive).map_err(|e| remote.failed("stat", e))?.content_length();
                let mut digest = Digest::default();
                entry::visit(
                    &dir,
                    &guard.path,
                    Walk { sync: false, skip_metadata: true },
                    &mut digest,
                    &mut |_| {},
                )?;
                (size, digest.counts().2)
            }
        };
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA,
            key: key.to_owned(),
            digest: meta.digest.clone(),
            size: meta.size,
            files: meta.files,
            dirs,
            archive_size,
            created_ns: meta.created_ns,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| CacheError::Remote {
            url: remote.url.to_string(),
            op: "encode",
            source: e.into(),
        })?;
        let options = WriteOptions { chunk: None, ..remote.write_options() };
        match remote.op()?.write_options(&manifest_path(key), bytes, options) {
            Ok(_) => Ok(Pushed::Uploaded { archive_size }),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => match remote.manifest(key)? {
                Some(there) if there.digest != meta.digest => {
                    // Another host won the key while we uploaded. The
                    // archive is ours (its conditional write succeeded) and
                    // no manifest names it: remove it rather than leave it.
                    if uploaded.is_some()
                        && let Err(e) = remote.op()?.delete(&archive)
                    {
                        tracing::warn!(archive, error = %e, "could not remove an archive no manifest names");
                    }
                    Ok(Pushed::Kept { digest: there.digest })
                }
                _ => Ok(Pushed::Present),
            },
            Err(e) => Err(remote.failed("write", e)),
        }
    }

    /// Pack the entry into `archive`: its size and directory count, or
    /// `None` if the object exists already.
    fn upload_archive(
        &self,
        remote: &Remote,
        guard: &EntryGuard,
        dir: &OwnedFd,
        archive: &str,
    ) -> Result<Option<(u64, u64)>, CacheError> {
        let upload = |e: std::io::Error| CacheError::Remote {
            url: remote.url.to_string(),
            op: "upload",
            source: e.into(),
        };
        let runtime = &remote.engine()?.runtime;
        let writer = runtime
            .block_on(remote.async_op.writer_options(archive, remote.write_options()))
            .map_err(|e| remote.failed("upload", e))?;
        let sink = Upload { writer: Some(writer), runtime, bytes: 0 };
        let mut encoder = zstd::Encoder::new(sink, ZSTD_LEVEL).map_err(upload)?;
        encoder.window_log(WINDOW_LOG - 1).map_err(upload)?;
        let mut packer = Packer {
            tar: tar::Builder::new(encoder),
            digest: Digest::default(),
            failed: None,
            url: &remote.url,
        };
        let meta_path = guard.path.join(METADATA);
        let meta = dirfd::open_file(dir, METADATA).map_err(|e| CacheError::io(&meta_path, "open", e))?;
        let mut meta = std::fs::File::from(meta);
        let len = meta.metadata().map_err(|e| CacheError::io(&meta_path, "stat", e))?.len();
        packer.add_file(Path::new(METADATA), false, len, &mut meta, &meta_path)?;
        // entry.json is not part of the digest.
        packer.digest = Digest::default();
        entry::visit(dir, &guard.path, Walk { sync: false, skip_metadata: true }, &mut packer, &mut |_| {})?;
        let walked = packer.digest.finish();
        if walked.digest != guard.meta.digest || walked.size != guard.meta.size {
            // Dropped unfinished: the upload is aborted.
            return Err(CacheError::Corrupt {
                path: guard.path.clone(),
                reason: CorruptReason::DigestMismatch,
            });
        }
        let dirs = packer.digest.counts().2;
        let encoder = packer.tar.into_inner().map_err(upload)?;
        let sink = encoder.finish().map_err(upload)?;
        let bytes = sink.bytes;
        match sink.close() {
            Ok(()) => Ok(Some((bytes, dirs))),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(None),
            Err(e) => Err(remote.failed("upload", e)),
        }
    }

    /// Download `key` from the remote into the local cache, unless it is
    /// there already; `None` if the remote does not hold it either. One
    /// process per host downloads at a time (the key's build lock): the
    /// others wait for it and read what it published.
    ///
    /// # Errors
    /// [`CacheError::Remote`] if there is no remote or it fails,
    /// [`CacheError::Rejected`] for an archive that breaks the rules (see
    /// the [remote module docs](crate::remote)), and as [`Cache::ensure`].
    pub fn pull(&self, key: &str) -> Result<Option<EntryGuard>, CacheError> {
        check_key(key)?;
        let remote = self.remote("pull")?;
        self.writable()?;
        let deadline = self.deadline();
        if let Some(found) = self.lookup_until(key, deadline)? {
            return Ok(Some(found));
        }
        let _building =
            self.lock(&self.locks, &format!("{key}.build"), LockMode::Exclusive, key, deadline)?;
        if let Some(found) = self.lookup_until(key, deadline)? {
            return Ok(Some(found));
        }
        self.download(remote, key)
    }

    /// Download and publish `key`; the caller holds its build lock.
    pub(crate) fn download(&self, remote: &Remote, key: &str) -> Result<Option<EntryGuard>, CacheError> {
        let Some(manifest) = remote.manifest(key)? else { return Ok(None) };
        let archive = archive_path(key, &manifest.digest);
        self.in_staging(key, self.deadline(), |slot| self.unpack(remote, key, &manifest, &archive, slot))
            .map(Some)
    }

    fn unpack(
        &self,
        remote: &Remote,
        key: &str,
        manifest: &Manifest,
        archive: &str,
        slot: &staging::Slot<'_>,
    ) -> Result<EntryGuard, CacheError> {
        let path = slot.path();
        let dir = dirfd::open_dir(&self.staging, slot.name.as_str())
            .map_err(|e| CacheError::io(&path, "open", e))?;
        let options = ReaderOptions { chunk: Some(CHUNK), concurrent: IN_FLIGHT, ..ReaderOptions::default() };
        let gone = || CacheError::Rejected {
            path: remote.object(archive),
            reason: "its manifest names an archive that is not there (`lockyard cache remote remove` \
                     clears the key)"
                .to_owned(),
        };
        // Exactly the declared length is read: a longer object is never
        // read past it, and a shorter one fails the read (opendal checks
        // that a range comes back whole).
        let op = remote.op()?;
        let reader =
            match op.reader_options(archive, options).and_then(|r| r.into_std_read(0..manifest.archive_size))
            {
                Ok(reader) => reader,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone()),
                Err(e) => return Err(remote.failed("download", e)),
            };
        let fetched = Arc::new(std::sync::Mutex::new(None));
        let source = Fetched { inner: reader, failed: Arc::clone(&fetched) };
        let rejected =
            |why: &str| CacheError::Rejected { path: remote.object(archive), reason: why.to_owned() };
        // A transport failure surfaces as a format error further up: say
        // which it was. A short or missing object is told apart from a
        // transport failure by a stat, made only then.
        let explain = |e: CacheError| match fetched.lock().map(|mut f| f.take()) {
            Ok(Some(cause)) => match op.stat(archive).map(|m| m.content_length()) {
                Err(e) if e.kind() == ErrorKind::NotFound => gone(),
                Ok(length) if length < manifest.archive_size => CacheError::Rejected {
                    path: remote.object(archive),
                    reason: format!(
                        "{length} bytes where its manifest says {}: truncated or replaced",
                        manifest.archive_size
                    ),
                },
                _ => CacheError::Remote { url: remote.url.to_string(), op: "download", source: cause.into() },
            },
            _ => e,
        };
        let result = (|| {
            let mut decoder = zstd::Decoder::new(source).map_err(|e| rejected(&format!("not zstd: {e}")))?;
            decoder.window_log_max(WINDOW_LOG).map_err(|e| rejected(&e.to_string()))?;
            let mut tar = tar::Archive::new(decoder);
            let mut members = tar.entries().map_err(|e| rejected(&format!("not a tar stream: {e}")))?;
            let broken = |e: std::io::Error| rejected(&format!("broken archive: {e}"));
            // entry.json comes first.
            let mut first = members.next().ok_or_else(|| rejected("empty archive"))?.map_err(broken)?;
            let is_meta = first.path().is_ok_and(|p| p == Path::new(METADATA))
                && first.header().entry_type().is_file()
                && first.size() <= entry::MAX_METADATA as u64;
            if !is_meta {
                return Err(rejected("its first member is not entry.json"));
            }
            let mut meta_bytes = Vec::new();
            first.read_to_end(&mut meta_bytes).map_err(broken)?;
            let meta = entry::parse_meta(&meta_bytes, key)
                .map_err(|why| rejected(&format!("its entry.json is unusable: {why}")))?;
            let limits = Limits { size: manifest.size, files: manifest.files, dirs: manifest.dirs };
            let mut writer = TreeWriter::new(dir.as_fd(), &path, limits);
            for member in members {
                let mut member = member.map_err(broken)?;
                let rel = member.path().map_err(broken)?.into_owned();
                let kind = member.header().entry_type();
                if kind.is_dir() {
                    writer.dir(&rel)?;
                } else if kind.is_symlink() {
                    let target = member
                        .link_name()
                        .map_err(broken)?
                        .ok_or_else(|| rejected("a symlink without a target"))?;
                    writer.symlink(&rel, target.as_os_str())?;
                } else if kind.is_file() {
                    let exec = member.header().mode().map_err(broken)? & 0o111 != 0;
                    let len = member.size();
                    writer.file(&rel, exec, len, &mut member, &remote.object(archive))?;
                } else {
                    return Err(CacheError::Rejected {
                        path: path.join(&rel),
                        reason: "a hard link, device, FIFO or other special member".to_owned(),
                    });
                }
            }
            let (walked, _) = writer.finish()?;
            let declared = (&manifest.digest, manifest.size, manifest.files);
            if (&walked.digest, walked.size, walked.files) != declared {
                return Err(rejected(
                    "its content does not match its manifest's digest, size and file count",
                ));
            }
            if (&meta.digest, meta.size, meta.files) != declared {
                return Err(rejected("its entry.json does not match its manifest"));
            }
            Ok((dir, walked, meta))
        })();
        let (dir, walked, meta) = result.map_err(explain)?;
        self.seal_and_publish(key, slot, &dir, walked, meta.user, meta.created_ns)
    }
}

/// Packs the walked entry into a tar stream, digesting as it goes.
struct Packer<'u, W: Write> {
    tar: tar::Builder<W>,
    url: &'u str,
    digest: Digest,
    /// A read of the entry that failed, to report as such rather than
    /// as an upload failure.
    failed: Option<std::io::Error>,
}

impl<W: Write> Packer<'_, W> {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header
    }

    fn upload(&mut self, path: &Path, e: std::io::Error) -> CacheError {
        match self.failed.take() {
            Some(read) => CacheError::io(path, "read", read),
            None => CacheError::Remote { url: self.url.to_owned(), op: "upload", source: e.into() },
        }
    }

    fn add_file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut dyn Read,
        path: &Path,
    ) -> Result<(), CacheError> {
        self.digest.file(rel, exec, len);
        let mut header = Self::header(tar::EntryType::Regular, if exec { 0o755 } else { 0o644 }, len);
        let mut tee = Tee { data: data.take(len), digest: &mut self.digest, failed: &mut self.failed };
        let added = self.tar.append_data(&mut header, rel, &mut tee);
        added.map_err(|e| self.upload(path, e))
    }
}

impl<W: Write> Visit for Packer<'_, W> {
    fn dir(&mut self, rel: &Path) -> Result<(), CacheError> {
        self.digest.dir(rel);
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.tar.append_data(&mut header, rel, std::io::empty()).map_err(|e| self.upload(rel, e))
    }

    fn symlink(&mut self, rel: &Path, target: &std::ffi::OsStr) -> Result<(), CacheError> {
        self.digest.symlink(rel, target);
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut header, rel, target).map_err(|e| self.upload(rel, e))
    }

    fn file(
        &mut self,
        rel: &Path,
        exec: bool,
        len: u64,
        data: &mut entry::Source<'_>,
        path: &Path,
    ) -> Result<(), CacheError> {
        self.add_file(rel, exec, len, data, path)
    }
}

/// Digests what tar reads of a file, and keeps a read error for itself.
struct Tee<'a, R> {
    data: R,
    digest: &'a mut Digest,
    failed: &'a mut Option<std::io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.data.read(buf) {
            Ok(n) => {
                self.digest.data(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                *self.failed = Some(e);
                Err(kind.into())
            }
        }
    }
}

/// reqwest's client, built for the first request. Building it loads the
/// system's CA certificates, a few milliseconds that a command finding its
/// entry locally would otherwise spend for nothing.
#[derive(Default)]
struct LazyTransport(std::sync::OnceLock<Result<ReqwestTransport, String>>);

impl opendal::HttpTransport for LazyTransport {
    async fn fetch(
        &self,
        req: http::Request<opendal::Buffer>,
    ) -> opendal::Result<http::Response<opendal::HttpBody>> {
        let built = self.0.get_or_init(|| {
            // reqwest is built without a TLS crypto provider of its own.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            reqwest::Client::builder().build().map(ReqwestTransport::new).map_err(|e| e.to_string())
        });
        match built {
            Ok(transport) => transport.fetch(req).await,
            Err(why) => Err(opendal::Error::new(ErrorKind::Unexpected, format!("HTTP client: {why}"))),
        }
    }
}

/// The archive's upload, written from this thread through opendal's async
/// writer, which (unlike the blocking one) can abort. Dropped unclosed, it
/// aborts: an upload given up on (a digest mismatch, a local read error)
/// leaves no unfinished multipart upload behind. One the remote failed is
/// dropped without asking it anything more, as it would likely not answer;
/// those, and crashes, are left to the bucket's lifecycle rule.
struct Upload<'a> {
    writer: Option<opendal::Writer>,
    runtime: &'a tokio::runtime::Runtime,
    /// Bytes written so far: the archive's length once closed.
    bytes: u64,
}

impl Upload<'_> {
    fn close(mut self) -> Result<(), opendal::Error> {
        let Some(mut writer) = self.writer.take() else {
            return Err(opendal::Error::new(ErrorKind::Unexpected, "the upload failed already"));
        };
        let closed = self.runtime.block_on(writer.close()).map(drop);
        if closed.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConditionNotMatch) {
            // The object exists already; the server is answering, so the
            // parts sent for nothing can go.
            let _ = self.runtime.block_on(writer.abort());
        }
        self.discard(writer);
        closed
    }

    /// Drop the writer where its tasks run.
    fn discard(&self, writer: opendal::Writer) {
        self.runtime.block_on(async move { drop(writer) });
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(std::io::Error::other("the upload failed already"));
        };
        if let Err(e) = self.runtime.block_on(writer.write(buf.to_vec())) {
            if let Some(writer) = self.writer.take() {
                self.discard(writer);
            }
            return Err(std::io::Error::other(e));
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take() else { return };
        if let Err(e) = self.runtime.block_on(writer.abort()) {
            tracing::debug!(error = %e, "could not abort an abandoned upload");
        }
        self.discard(writer);
    }
}

/// The download, keeping a transport failure for itself.
struct Fetched<R> {
    inner: R,
    failed: Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl<R: Read> Read for Fetched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Ok(mut failed) = self.failed.lock() {
                *failed = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}
