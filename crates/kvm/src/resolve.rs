//! Which kernel image to boot: an ordered chain of sources, each
//! candidate checked by its header, every one passed over named with why.

use std::fmt;
use std::path::{Path, PathBuf};

use lockyard_cache::{Cache, CacheError, EntryGuard, Listed};
use serde::Serialize;

use crate::image::{self, Arch, ImageInfo, Rejection};
use crate::kernels::{KEY_PREFIX, KernelMeta};

/// Names an image may have inside a cache entry, in the order tried.
pub const ENTRY_IMAGES: [&str; 3] = ["bzImage", "Image", "vmlinuz"];

/// Where to look, tried in the order given to [`Resolver::source`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Source {
    /// This file. Missing or unbootable is the operator's mistake
    /// ([`ResolveError::Image`]), never a reason to boot something else.
    Image(PathBuf),
    /// The entry `key` of a lockyard cache (a version, or any key the
    /// images were stored under), holding one of [`ENTRY_IMAGES`]. The
    /// entry's reader lock is held for as long as the [`Resolved`] lives.
    Cache {
        /// The cache.
        cache: Cache,
        /// The key.
        key: String,
    },
    /// The kernel cache ([`crate::kernels`]) in `cache`: stored kernels,
    /// newest first, of the release asked for ([`Resolver::version`]; any,
    /// without one). One of the wrong architecture, built from another
    /// config than [`Resolver::config`] names (stale), or corrupt is
    /// passed over with the reason, and the search goes on. The entry's
    /// reader lock is held as for [`Source::Cache`].
    Kernels(Cache),
    /// Kernel build trees: `arch/x86/boot/bzImage` or
    /// `arch/arm64/boot/Image` under each directory; failing that, image
    /// files directly in it or in its `boot/` (`bzImage`, `Image`,
    /// `vmlinuz*`, as an unpacked kernel package lays them out), names in
    /// descending byte order.
    BuildTrees(Vec<PathBuf>),
    /// The installed kernel of `release`: `{root}/lib/modules/{release}/vmlinuz`,
    /// `{root}/boot/vmlinuz-{release}`, then `{root}/boot/vmlinuz`.
    Installed {
        /// The filesystem root (`/`, or a fixture).
        root: PathBuf,
        /// The kernel release (see [`running_release`]).
        release: String,
    },
}

impl Source {
    fn kind(&self) -> SourceKind {
        match self {
            Source::Image(_) => SourceKind::Image,
            Source::Cache { .. } | Source::Kernels(_) => SourceKind::Cache,
            Source::BuildTrees(_) => SourceKind::BuildTree,
            Source::Installed { .. } => SourceKind::Installed,
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn running_release() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

/// Which kind of [`Source`] a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceKind {
    /// An explicit image path.
    Image,
    /// A lockyard cache entry.
    Cache,
    /// A kernel build tree.
    BuildTree,
    /// An installed kernel.
    Installed,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Image => "explicit image",
            SourceKind::Cache => "cache",
            SourceKind::BuildTree => "build tree",
            SourceKind::Installed => "installed kernel",
        })
    }
}

/// A file considered and passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Candidate {
    /// The file (or cache entry).
    pub path: PathBuf,
    /// Where it came from.
    pub source: SourceKind,
    /// Why it was passed over.
    pub reason: Rejection,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.path.display(), self.source, self.reason)
    }
}

/// The image to boot. A cached image stays held for reading while this
/// lives (see [`Resolved::guard`]).
#[must_use = "a cached image may be replaced once the result is dropped"]
#[derive(Debug)]
#[non_exhaustive]
pub struct Resolved {
    /// Its path.
    pub path: PathBuf,
    /// What its header says.
    pub image: ImageInfo,
    /// Where it was found.
    pub source: SourceKind,
    /// What was tried before it, in order.
    pub passed_over: Vec<Candidate>,
    /// The cache entry's reader lock, when the image lives in one: no
    /// writer replaces the entry while this is held.
    pub guard: Option<EntryGuard>,
}

/// Why no image was resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The explicit image cannot be used: the operator's mistake.
    #[error("{}: {reason}; fix the path given as the kernel image", path.display())]
    Image {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: Rejection,
    },
    /// Every source was tried; nothing is bootable.
    #[error("no bootable kernel image found; tried, in order:{}", list(tried))]
    Unavailable {
        /// Every candidate, in order, with why it was passed over.
        tried: Vec<Candidate>,
    },
    /// The cache entry could not be read-locked in time.
    #[error("kernel cache entry {key:?} is busy: {source}")]
    Contended {
        /// The key.
        key: String,
        /// The cache's error, naming the holders.
        source: CacheError,
    },
    /// The cache failed otherwise.
    #[error("kernel cache entry {key:?}: {source}")]
    Cache {
        /// The key.
        key: String,
        /// The cache's error.
        source: CacheError,
    },
}

impl ResolveError {
    /// Whether nothing bootable was found (a harness skips): as opposed
    /// to a mistake in what was asked for or a failing cache (a harness
    /// fails), or a busy entry ([`ResolveError::is_busy`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ResolveError::Unavailable { .. })
    }

    /// Whether another process holds what was asked for (the cached
    /// kernel's entry), as every lockyard crate's `is_busy` means it:
    /// worth a retry, not a misconfiguration.
    pub fn is_busy(&self) -> bool {
        matches!(self, ResolveError::Contended { .. })
    }
}

fn list(tried: &[Candidate]) -> String {
    if tried.is_empty() {
        return " nothing (no source was configured)".to_owned();
    }
    tried.iter().map(|c| format!("\n  {c}")).collect()
}

/// An ordered chain of sources for the image to boot.
#[derive(Debug, Clone)]
pub struct Resolver {
    sources: Vec<Source>,
    arch: Option<Arch>,
    version: Option<String>,
    config: Option<String>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver { sources: Vec::new(), arch: Arch::host(), version: None, config: None }
    }
}

impl Resolver {
    /// No sources yet; images must match this host's architecture.
    pub fn new() -> Self {
        Resolver::default()
    }

    /// Try `source` after the ones already given.
    #[must_use]
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// The chain for a [`KernelSpec`](crate::KernelSpec): a path is exactly
    /// that image, or that kernel build tree alone; a key is that entry of
    /// `cache` alone; a version is the kernel cache in `cache`
    /// ([`Source::Kernels`]), then the installed kernel of that release
    /// under `root`, every candidate checked to name that release in its
    /// header. Nothing else is tried: a spec that finds nothing is "no
    /// kernel", not a fallback.
    pub fn for_spec(spec: &crate::KernelSpec, cache: Option<Cache>, root: impl Into<PathBuf>) -> Resolver {
        use crate::KernelSpec;
        let resolver = Resolver::new();
        match spec {
            KernelSpec::Path(path) if path.is_dir() => {
                resolver.source(Source::BuildTrees(vec![path.clone()]))
            }
            KernelSpec::Path(path) => resolver.source(Source::Image(path.clone())),
            KernelSpec::Key(key) => match cache {
                Some(cache) => resolver.source(Source::Cache { cache, key: key.clone() }),
                None => resolver,
            },
            KernelSpec::Version(version) => {
                let mut resolver = resolver.version(version.clone());
                if let Some(cache) = cache {
                    resolver = resolver.source(Source::Kernels(cache));
                }
                resolver.source(Source::Installed { root: root.into(), release: version.clone() })
            }
        }
    }

    /// Accept only images of kernel release `version`, as their headers
    /// say: `6.14.2` matches a release `6.14.2` and `6.14.2-arch1-1`, not
    /// `6.14.20` or `6.14.2.1`. An image of another release, or whose
    /// header names none, is passed over with the reason.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Accept only stored kernels built from the `.config` with this
    /// [fingerprint](crate::kernels::config_fingerprint) from
    /// [`Source::Kernels`]; others are passed over as stale. Other sources
    /// record no config and are not affected.
    #[must_use]
    pub fn config(mut self, fingerprint: impl Into<String>) -> Self {
        self.config = Some(fingerprint.into());
        self
    }

    /// Accept images for `arch` rather than this host's.
    #[must_use]
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = Some(arch);
        self
    }

    /// The first bootable image of the chain.
    ///
    /// # Errors
    /// [`ResolveError::Image`] if an explicit image is unusable,
    /// [`ResolveError::Unavailable`] if nothing is bootable, and the
    /// cache's errors.
    pub fn resolve(&self) -> Result<Resolved, ResolveError> {
        let mut tried = Vec::new();
        for source in &self.sources {
            let kind = source.kind();
            match source {
                Source::Image(path) => {
                    return match self.check(path) {
                        Ok(image) => Ok(found(path, image, kind, tried, None)),
                        Err(reason) => Err(ResolveError::Image { path: path.clone(), reason }),
                    };
                }
                Source::Cache { cache, key } => {
                    let guard = match cache.lookup(key) {
                        Ok(Some(guard)) => guard,
                        Ok(None) => {
                            let reason = Rejection::NotCached { key: key.clone() };
                            tried.push(Candidate { path: cache.entry_path(key), source: kind, reason });
                            continue;
                        }
                        Err(e) if e.is_busy() => {
                            return Err(ResolveError::Contended { key: key.clone(), source: e });
                        }
                        Err(CacheError::Corrupt { path, reason }) => {
                            let reason = Rejection::CorruptEntry { reason: reason.to_string() };
                            tried.push(Candidate { path, source: kind, reason });
                            continue;
                        }
                        Err(e) => return Err(ResolveError::Cache { key: key.clone(), source: e }),
                    };
                    let mut any = false;
                    for name in ENTRY_IMAGES {
                        let path = guard.path().join(name);
                        match self.check(&path) {
                            Ok(image) => return Ok(found(&path, image, kind, tried, Some(guard))),
                            Err(Rejection::Missing) => {}
                            Err(reason) => {
                                any = true;
                                tried.push(Candidate { path, source: kind, reason });
                            }
                        }
                    }
                    if !any {
                        let reason = Rejection::NoImageInEntry;
                        tried.push(Candidate { path: guard.path().to_owned(), source: kind, reason });
                    }
                }
                Source::Kernels(cache) => {
                    if let Some(resolved) = self.search_kernels(cache, &mut tried)? {
                        return Ok(resolved);
                    }
                }
                Source::BuildTrees(dirs) => {
                    for dir in dirs {
                        for arch in [Arch::X86_64, Arch::Aarch64] {
                            let path = dir.join(arch.build_tree_image());
                            match self.check(&path) {
                                Ok(image) => return Ok(found(&path, image, kind, tried, None)),
                                // The other architecture's path is noise unless it exists.
                                Err(Rejection::Missing) if Some(arch) != self.arch => {}
                                Err(reason) => tried.push(Candidate { path, source: kind, reason }),
                            }
                        }
                        for path in loose_images(dir) {
                            match self.check(&path) {
                                Ok(image) => return Ok(found(&path, image, kind, tried, None)),
                                Err(reason) => tried.push(Candidate { path, source: kind, reason }),
                            }
                        }
                    }
                }
                Source::Installed { root, release } => {
                    let candidates = [
                        root.join("lib/modules").join(release).join("vmlinuz"),
                        root.join("boot").join(format!("vmlinuz-{release}")),
                        root.join("boot/vmlinuz"),
                    ];
                    for path in candidates {
                        match self.check(&path) {
                            Ok(image) => return Ok(found(&path, image, kind, tried, None)),
                            Err(reason) => tried.push(Candidate { path, source: kind, reason }),
                        }
                    }
                }
            }
        }
        Err(ResolveError::Unavailable { tried })
    }

    /// [`Source::Kernels`]: the first good stored kernel, newest first.
    fn search_kernels(
        &self,
        cache: &Cache,
        tried: &mut Vec<Candidate>,
    ) -> Result<Option<Resolved>, ResolveError> {
        let kind = SourceKind::Cache;
        let listed = cache.list().map_err(|source| ResolveError::Cache { key: "*".to_owned(), source })?;
        let wanted_release =
            |version: &str| self.version.as_deref().is_none_or(|w| release_matches(w, version));
        let mut corrupt = Vec::new();
        for entry in listed {
            let (key, user) = match entry {
                Listed::Valid { key, user, .. } => (key, user),
                Listed::Corrupt { key, reason } if key.starts_with(KEY_PREFIX) => {
                    corrupt.push((key, reason));
                    continue;
                }
                _ => continue,
            };
            // Not a kernel, or another release: not a candidate at all.
            let Some(meta) = KernelMeta::from_user(&user).filter(|m| wanted_release(&m.version)) else {
                continue;
            };
            let path = cache.entry_path(&key);
            if let Some(host) = self.arch.filter(|&host| host != meta.arch) {
                tried.push(Candidate {
                    path,
                    source: kind,
                    reason: Rejection::WrongArch { found: meta.arch, host },
                });
                continue;
            }
            if let Some(wanted) = self.config.as_ref().filter(|&w| meta.config.as_ref() != Some(w)) {
                let reason = Rejection::Stale { wanted: wanted.clone(), found: meta.config.clone() };
                tried.push(Candidate { path, source: kind, reason });
                continue;
            }
            let guard = match cache.lookup(&key) {
                Ok(Some(guard)) => guard,
                // Removed since the listing.
                Ok(None) => continue,
                Err(e) if e.is_busy() => return Err(ResolveError::Contended { key, source: e }),
                Err(CacheError::Corrupt { path, reason }) => {
                    let reason = Rejection::CorruptEntry { reason: reason.to_string() };
                    tried.push(Candidate { path, source: kind, reason });
                    continue;
                }
                Err(e) => {
                    tried.push(Candidate {
                        path,
                        source: kind,
                        reason: Rejection::Io { message: e.to_string() },
                    });
                    continue;
                }
            };
            // Replaced since the listing: what the lock holds is what counts.
            if KernelMeta::from_user(&guard.meta().user).as_ref() != Some(&meta) {
                continue;
            }
            let image = guard.path().join(&meta.image);
            match self.check(&image) {
                Ok(info) => return Ok(Some(found(&image, info, kind, std::mem::take(tried), Some(guard)))),
                Err(reason) => tried.push(Candidate { path: image, source: kind, reason }),
            }
        }
        for (key, reason) in corrupt {
            let reason = Rejection::CorruptEntry { reason: reason.to_string() };
            tried.push(Candidate { path: cache.entry_path(&key), source: kind, reason });
        }
        Ok(None)
    }

    fn check(&self, path: &Path) -> Result<ImageInfo, Rejection> {
        let image = image::inspect(path)?;
        if let Some(host) = self.arch.filter(|&host| host != image.arch) {
            return Err(Rejection::WrongArch { found: image.arch, host });
        }
        if let Some(wanted) = &self.version {
            match &image.version {
                None => return Err(Rejection::VersionUnknown { wanted: wanted.clone() }),
                Some(found) if !release_matches(wanted, found) => {
                    return Err(Rejection::VersionMismatch { wanted: wanted.clone(), found: found.clone() });
                }
                Some(_) => {}
            }
        }
        Ok(image)
    }
}

/// Whether kernel release `found` is version `wanted`: the same, or
/// `wanted` followed by a local suffix (`-`, `+`, `_`...), never by more
/// digits or another dotted component.
fn release_matches(wanted: &str, found: &str) -> bool {
    match found.strip_prefix(wanted) {
        Some("") => true,
        Some(rest) => rest.chars().next().is_some_and(|c| !c.is_ascii_digit() && c != '.'),
        None => false,
    }
}

/// Image files lying in `dir` or `dir/boot`, names in descending byte
/// order (plain `vmlinuz` after `vmlinuz-*`; not a version order).
fn loose_images(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [dir.to_owned(), dir.join("boot")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n == "bzImage" || n == "Image" || n.starts_with("vmlinuz"))
            .collect();
        names.sort_by(|a, b| b.cmp(a));
        found.extend(names.into_iter().map(|n| dir.join(n)));
    }
    found
}

fn found(
    path: &Path,
    image: ImageInfo,
    source: SourceKind,
    passed_over: Vec<Candidate>,
    guard: Option<EntryGuard>,
) -> Resolved {
    Resolved { path: path.to_owned(), image, source, passed_over, guard }
}

#[cfg(test)]
mod tests {
    use super::release_matches;

    #[test]
    fn a_version_matches_its_release_and_local_suffixes_only() {
        assert!(release_matches("6.14.2", "6.14.2"));
        assert!(release_matches("6.14.2", "6.14.2-arch1-1"));
        assert!(release_matches("6.1.0", "6.1.0-28-cloud-amd64"));
        assert!(release_matches("6.14.2", "6.14.2+"));
        assert!(!release_matches("6.14.2", "6.14.20"));
        assert!(!release_matches("6.14.2", "6.14.2.1"));
        assert!(!release_matches("6.14.2", "6.1.0"));
        assert!(!release_matches("6.1", "6.1.0-28-cloud-amd64"));
    }
}
