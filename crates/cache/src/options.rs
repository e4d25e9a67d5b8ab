//! How a [`Cache`] waits, locks and trusts: [`CacheOptions`], and the
//! crash-test [`Step`]s.

use super::*;

/// A point in [`Cache::store`] a crash test can stop at.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The staging directory exists and is locked; nothing built yet.
    StagingCreated,
    /// The build function returned; nothing synced yet.
    Built,
    /// Content and `entry.json` are synced; not yet published.
    Synced,
    /// Two-rename fallback only: the old entry is moved out, the new one
    /// not yet in (the key is missing).
    Displaced,
    /// Published; the displaced old entry is not yet deleted.
    Published,
}

/// How a [`Cache`] waits and locks.
#[derive(Clone)]
pub struct CacheOptions {
    pub(crate) wait: Wait,
    pub(crate) fs_policy: FsPolicy,
    pub(crate) trust: DirTrust,
    pub(crate) read_only: bool,
    #[cfg(feature = "remote")]
    pub(crate) remote: Option<std::sync::Arc<crate::Remote>>,
    #[cfg(feature = "remote")]
    pub(crate) require_remote: bool,
    #[cfg(feature = "test-hooks")]
    pub(crate) hook: Option<std::sync::Arc<dyn Fn(Step) + Send + Sync>>,
    #[cfg(feature = "test-hooks")]
    pub(crate) two_renames: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            wait: Wait::timeout(Duration::from_secs(60)),
            fs_policy: FsPolicy::default(),
            trust: DirTrust::private(),
            read_only: false,
            #[cfg(feature = "remote")]
            remote: None,
            #[cfg(feature = "remote")]
            require_remote: false,
            #[cfg(feature = "test-hooks")]
            hook: None,
            #[cfg(feature = "test-hooks")]
            two_renames: false,
        }
    }
}

impl std::fmt::Debug for CacheOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("CacheOptions");
        f.field("wait", &self.wait)
            .field("fs_policy", &self.fs_policy)
            .field("trust", &self.trust)
            .field("read_only", &self.read_only);
        #[cfg(feature = "remote")]
        f.field("remote", &self.remote).field("require_remote", &self.require_remote);
        f.finish()
    }
}

impl CacheOptions {
    /// Waits of up to 60 s, no cancellation, lockyard-flock's default
    /// filesystem policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// How any one operation waits for a lock (a reader for a writer, an
    /// `ensure` for a builder): at most its timeout (60 s unless set;
    /// [`Wait::default`] waits as long as it takes), and until its
    /// [`CancelToken`], if any, is cancelled.
    #[must_use]
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Which filesystems the lock files may live on.
    #[must_use]
    pub fn fs_policy(mut self, policy: FsPolicy) -> Self {
        self.fs_policy = policy;
        self
    }

    /// Which directories the root may be and be reached through:
    /// [`DirTrust::private`] unless set. A cache shared by a group is
    /// [`DirTrust::group`]; see [`Cache::open`] for why another user's
    /// directory is refused.
    #[must_use]
    pub fn trust(mut self, trust: DirTrust) -> Self {
        self.trust = trust;
        self
    }

    /// Create nothing: not the root, not its marker or internal
    /// directories, not a lock file. For tools that only look (list, show,
    /// verify). A missing or empty root is then
    /// [`NotACache::Missing`]/[`NotACache::Empty`] rather than a new cache,
    /// and an entry whose lock file does not exist reads as missing.
    /// Storing into a cache opened so fails with [`CacheError::ReadOnly`].
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Share entries through `remote` (see [`crate::remote`]): a lookup
    /// or `ensure` that misses locally pulls the entry from it, and
    /// `store`, `put` and `ensure` push what they build. Failures of the
    /// remote are logged as warnings and the local cache goes on, unless
    /// [`CacheOptions::require_remote`].
    #[cfg(feature = "remote")]
    #[must_use]
    pub fn remote(mut self, remote: crate::Remote) -> Self {
        self.remote = Some(std::sync::Arc::new(remote));
        self
    }

    /// Make the remote's failures errors: an operation whose pull or
    /// push fails returns [`CacheError::Remote`] (a push after a build
    /// still leaves the local entry published).
    #[cfg(feature = "remote")]
    #[must_use]
    pub fn require_remote(mut self, required: bool) -> Self {
        self.require_remote = required;
        self
    }

    /// Call `hook` at each [`Step`] of a store (crash tests kill the
    /// process there).
    #[cfg(feature = "test-hooks")]
    #[must_use]
    pub fn on_step(mut self, hook: impl Fn(Step) + Send + Sync + 'static) -> Self {
        self.hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Publish replacements with the two-rename fallback even where
    /// `RENAME_EXCHANGE` works, to test it.
    #[cfg(feature = "test-hooks")]
    #[must_use]
    pub fn force_two_renames(mut self) -> Self {
        self.two_renames = true;
        self
    }
}
