//! The command line, as clap types (used by the binary, by completions and
//! by `cargo xtask man`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockyard::flock::RecordKind;

/// Crash-safe locks on a shared host, and who holds them.
#[derive(Debug, Parser)]
#[command(
    name = "lockyard",
    version,
    about = "Crash-safe locks on a shared Linux host, and exactly who holds them",
    long_about = "Crash-safe locks on a shared Linux host, and exactly who holds them.\n\n\
        Every lock lockyard takes is a kernel advisory lock, released by the kernel when its \
        holder dies. `lockyard locks` lists every lock on the host with paths and holders \
        (a better lslocks); `lockyard who` answers who holds given files; `lockyard run` \
        runs a command under a lock, compatible with flock(1); `lockyard cache` builds and \
        shares directories that a crash never leaves half-written; `lockyard topo` and `lockyard \
        reserve` map and reserve CPUs and last-level caches; `lockyard preflight` and `lockyard \
        kernel` check KVM and find the kernel image a VM would boot.",
    after_help = "Environment: LOCKYARD_LOG sets the log filter (RUST_LOG syntax, e.g. LOCKYARD_LOG=debug).\n\
        Exit codes are documented per command and in docs/cli.md."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every lock on the host, with paths, holders and waiters.
    #[command(after_help = "Exit status: 0 on success, 2 on error.")]
    Locks(LocksArgs),
    /// Show who holds, and who waits on, the given files.
    #[command(after_help = "Exit status: 0 if at least one file is held, 1 if none is, 2 on error.")]
    Who(WhoArgs),
    /// Run a command while holding a lock: a drop-in for flock(1).
    #[command(after_long_help = crate::flock_args::HELP)]
    Run(RunArgs),
    /// Claim or inspect pidfiles.
    #[command(subcommand)]
    Pidfile(PidfileCommand),
    /// Use a crash-safe shared cache of directories (build once, read by many).
    Cache(CacheArgs),
    /// Show the host's CPUs, last-level caches and NUMA nodes, with who
    /// holds each one's reservation lock.
    #[command(after_help = "Lock files are cpu-N.lock and llc-K.lock (K: the lowest CPU sharing the \
        cache) in the lock directory: --lock-dir, else $LOCKYARD_LOCK_DIR, else /run/lock/lockyard, \
        else /tmp/lockyard. Holders come from one read of /proc/locks. See docs/topology.md.\n\n\
        Exit status: 0 on success, 2 on error.")]
    Topo(TopoArgs),
    /// Reserve CPUs or whole LLCs and run a command pinned to them.
    #[command(after_help = "Modes: exclusive-cpu (default: CPUs nobody else uses, LLCs shared with \
        other jobs), exclusive-llc (whole LLCs nobody else uses: benchmarks), shared (a CPU budget in \
        whole LLCs, shared with other jobs, never with a benchmark). The command runs pinned to the \
        reserved CPUs with LOCKYARD_CPUS (the CPU list) and LOCKYARD_JOBS (their number) set; the \
        reservation is held until it exits. SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to it.\n\n\
        With --enforce it runs in a cpuset cgroup of exactly those CPUs and their memory nodes (cgroup \
        v1 cpuset or v2), removed when it exits; the cgroup of a lockyard killed meanwhile is removed \
        by the next --enforce or by `lockyard topo --sweep` once nothing runs in it.\n\n\
        Without -n or -w, waits as long as it takes; a waiting request holds back newer ones, so a \
        large request is not starved (docs/topology.md). Lock directory: --lock-dir, else \
        $LOCKYARD_LOCK_DIR, else /run/lock/lockyard, else /tmp/lockyard.\n\n\
        Exit status: the command's (128+N if killed by signal N); 1 if the resources are busy (with \
        -n) or the wait timed out, naming who holds what; 2 on error, including a request that can \
        never fit; 126/127 if the command cannot be run.")]
    Reserve(ReserveArgs),
    /// Check that KVM works for this user: one line per check with a remedy.
    #[command(after_help = "Checks, in order (stopping at the first failure): the device is the KVM \
        character device and opens read-write; KVM_GET_API_VERSION is 12; KVM_CREATE_VM succeeds; then \
        each --cap is reported (WARN when absent). A failure caused by host pressure (ENOMEM, EBUSY, \
        EMFILE, ENFILE, EAGAIN) is marked transient: retry later rather than fix the host.\n\n\
        Exit status: 0 if nothing failed (warnings allowed), 1 if a check failed, 2 on error (such as an \
        unknown capability name).")]
    Preflight(PreflightArgs),
    /// Find the kernel image a VM would boot, and why others were passed over;
    /// store kernels in the kernel cache and list them.
    #[command(after_help = "A SPEC (or $LOCKYARD_KERNEL) is a path (an image, or a build tree alone), a \
        version (the newest stored kernel of that release, then the installed kernel of that release, \
        each checked to name it), or a cache key (that entry alone); nothing else is tried. A key named \
        store or list is written key:store, key:list.\n\n\
        Stored kernels (`lockyard kernel store`) of the wrong architecture, built from another config \
        than --config (stale), or corrupt are passed over with the reason; the search goes on past \
        them.\n\n\
        Without a SPEC, sources in order: --image (missing or unbootable is an error, never a \
        fallback); with --version, the stored kernels of that release, newest first; \
        each --search directory as a kernel build tree (arch/x86/boot/bzImage, arch/arm64/boot/Image), \
        then for image files in it or its boot/ (bzImage, Image, vmlinuz*), and nothing after them \
        unless --fallback; the installed kernel of --release (default: --version, else the running \
        kernel) under --root: lib/modules/RELEASE/vmlinuz, boot/vmlinuz-RELEASE, boot/vmlinuz. With no \
        source at all, ./linux and ../linux (when they hold a built image) and \
        /lib/modules/RELEASE/build come before the installed kernel. With --version, every candidate \
        must name that release in its header. Every candidate's header is checked (bzImage HdrS, boot \
        protocol, LOADED_HIGH and 64-bit entry, arm64 Image magic); ELF vmlinux and compressed files \
        are refused with a hint.\n\n\
        The cache root is --cache-dir, else $LOCKYARD_CACHE_DIR, else $XDG_CACHE_HOME/lockyard, else \
        $HOME/.cache/lockyard.\n\n\
        Exit status: 0 if an image was found, 1 if none is bootable (or the cache entry stayed busy past \
        -w), 2 if what was asked for is wrong (a malformed SPEC, an --image that is missing or \
        unbootable). JSON says which as outcome: found, unavailable, or misconfigured.")]
    Kernel(Box<KernelArgs>),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Options of `lockyard topo`.
#[derive(Debug, Args)]
pub struct TopoArgs {
    /// The reservation lock directory to show holders from.
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Instead of the map, remove the cgroups of `reserve --enforce` whose
    /// creator is gone (recognised by the lock it held), and say what was
    /// removed and what was kept.
    #[arg(long)]
    pub sweep: bool,
    /// Redraw the map every DUR (2s, 500ms) until interrupted: in place on
    /// a terminal; with --json, one compact JSON document per line.
    #[arg(long, value_name = "DUR", value_parser = crate::units::parse_interval, conflicts_with = "sweep")]
    pub watch: Option<Duration>,
    /// With --sweep: the cgroup parent `reserve --enforce` used.
    #[arg(long, value_name = "DIR", requires = "sweep")]
    pub cgroup_parent: Option<PathBuf>,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard reserve`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["cpus", "llcs"])))]
pub struct ReserveArgs {
    /// Reserve this many CPUs, or this share of the CPUs this process may
    /// use (`30%`: rounded up, at least one).
    #[arg(long, value_name = "N|P%", value_parser = parse_cpus)]
    pub cpus: Option<lockyard::topo::Amount>,
    /// Reserve this many whole LLCs.
    #[arg(long, value_name = "N")]
    pub llcs: Option<usize>,
    /// How the resources are shared.
    #[arg(long, value_enum, default_value = "exclusive-cpu")]
    pub mode: ReserveMode,
    /// Fail at once (exit 1) if the resources are busy.
    #[arg(short = 'n', long, conflicts_with = "wait")]
    pub nonblock: bool,
    /// Give up after SECS seconds (exit 1).
    #[arg(short = 'w', long, value_name = "SECS", value_parser = crate::units::parse_wait)]
    pub wait: Option<Duration>,
    /// Only CPUs of this NUMA node.
    #[arg(long, value_name = "N")]
    pub node: Option<u32>,
    /// Run the command in its own cpuset cgroup holding exactly the
    /// reserved CPUs and their memory nodes, so neither it nor its
    /// children can widen their affinity (needs root, or a delegated
    /// cgroup v2 subtree as --cgroup-parent).
    #[arg(long)]
    pub enforce: bool,
    /// Let the command allocate memory only on the NUMA nodes of the
    /// reserved CPUs (as `numactl --membind`; with --node N, node N).
    #[arg(long, conflicts_with = "interleave")]
    pub membind: bool,
    /// Interleave the command's memory over the NUMA nodes of the reserved
    /// CPUs (as `numactl --interleave`).
    #[arg(long)]
    pub interleave: bool,
    /// Say on stderr what was reserved: CPUs, jobs, LLCs, nodes, the
    /// cgroup; and warn when the CPUs span NUMA nodes.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print what was reserved as one line of JSON on stdout, before the
    /// command's own output (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
    /// With --enforce: make the cgroup below this directory (default: on
    /// cgroup v1, lockyard/ below this process's cpuset cgroup; on v2,
    /// lockyard/ below the root cgroup).
    #[arg(long, value_name = "DIR", requires = "enforce")]
    pub cgroup_parent: Option<PathBuf>,
    /// Prefer idle LLCs over ones other jobs already share.
    #[arg(long)]
    pub spread: bool,
    /// One CPU per core before any SMT sibling.
    #[arg(long)]
    pub smt_apart: bool,
    /// The reservation lock directory.
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Do not let COMMAND inherit the reservation's lock descriptors: the
    /// reservation then ends when lockyard does, even if processes COMMAND
    /// started (or COMMAND itself, if lockyard is killed) still run.
    #[arg(short = 'o', long)]
    pub close: bool,
    /// The command and its arguments.
    #[arg(value_name = "COMMAND", required = true, last = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// `--mode` of `lockyard reserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReserveMode {
    /// Whole LLCs nobody else uses.
    ExclusiveLlc,
    /// CPUs nobody else uses, in shared LLCs.
    ExclusiveCpu,
    /// A CPU budget in whole LLCs, shared.
    Shared,
}

/// Options of `lockyard preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Also report this KVM capability (a KVM_CAP_* name, with or without
    /// the prefix, or a number); repeatable.
    #[arg(long = "cap", value_name = "NAME")]
    pub caps: Vec<String>,
    /// The KVM device to check.
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm")]
    pub device: PathBuf,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard kernel`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KernelArgs {
    /// Store or list kernels instead of resolving one.
    #[command(subcommand)]
    pub action: Option<KernelAction>,
    /// What to boot: a path (an image, or a build tree), a version
    /// (6.14.2), or a cache key; `path:`, `version:` and `key:` say which
    /// outright. Default: $LOCKYARD_KERNEL, when no other source is given.
    #[arg(value_name = "SPEC", conflicts_with_all = ["image", "version", "search"])]
    pub spec: Option<String>,
    /// Boot exactly this image.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Accept only kernels of this release: stored kernels of it first,
    /// and every candidate's header must name it.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Accept only stored kernels built from this .config (by its
    /// fingerprint); others of the release are passed over as stale.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kernel build trees to look in (repeatable, or several after one
    /// flag), and nowhere else unless --fallback.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub search: Vec<PathBuf>,
    /// After the --search directories, try the installed kernel too.
    #[arg(long, requires = "search")]
    pub fallback: bool,
    /// The installed kernel release to look for (default: --version, else
    /// the running kernel's).
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// The root installed kernels are under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The lockyard cache root of the stored kernels.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Give up waiting for a busy cache entry after SECS seconds (default 10).
    #[arg(short = 'w', long = "wait", value_name = "SECS", default_value = "10", value_parser = crate::units::parse_wait)]
    pub wait: Duration,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// `lockyard kernel store` and `lockyard kernel list`.
#[derive(Debug, Subcommand)]
pub enum KernelAction {
    /// Put a kernel into the kernel cache, under a key made of its release,
    /// architecture and config fingerprint.
    #[command(after_help = "The image is checked as resolution checks it (a VMM must be able to boot it), \
        and its release is read from its header (give --release for an arm64 Image, whose header has \
        none). The key is kernel-RELEASE-ARCH, with -CONFIG (12 hex digits of the config's fingerprint) \
        when a .config is given; storing the same kernel again replaces the entry atomically. From a \
        build tree, its vmlinux and .config are taken too.\n\n\
        Exit status: 0 stored, 2 on error (an unbootable image, an unreadable companion, the cache).")]
    Store(KernelStoreArgs),
    /// List the stored kernels, newest first.
    #[command(after_help = "Entries under a kernel key whose metadata cannot be read are listed after the \
        others as corrupt; `lockyard cache clean` removes them.\n\n\
        Exit status: 0, also when none are stored; 2 on error.")]
    List(KernelListArgs),
}

/// Options of `lockyard kernel store`.
#[derive(Debug, Args)]
pub struct KernelStoreArgs {
    /// An image (bzImage, arm64 Image), or a kernel build tree.
    #[arg(value_name = "IMAGE|TREE")]
    pub from: PathBuf,
    /// The vmlinux to keep beside the image (a tree's own by default).
    #[arg(long, value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
    /// The .config it was built from (a tree's own by default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The release, for an image whose header names none.
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// Record that it was built from this git commit.
    #[arg(long, value_name = "COMMIT", conflicts_with = "tarball")]
    pub git: Option<String>,
    /// Record that it was built from this tarball (URL or file name).
    #[arg(long, value_name = "URL")]
    pub tarball: Option<String>,
    /// The lockyard cache root.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Give up waiting for readers of the entry it replaces after SECS
    /// seconds (default 60).
    #[arg(short = 'w', long = "wait", value_name = "SECS", default_value = "60", value_parser = crate::units::parse_wait)]
    pub wait: Duration,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard kernel list`.
#[derive(Debug, Args)]
pub struct KernelListArgs {
    /// The lockyard cache root.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard locks`.
#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Attribute each lock to the processes holding a descriptor that
    /// carries it (names OFD holders and children that inherited a lock;
    /// reads every process's fdinfo).
    #[arg(long)]
    pub exact: bool,
    /// Only locks held by this pid (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only locks on this file (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only locks of this kind (repeatable).
    #[arg(short, long = "kind", value_enum, value_name = "KIND")]
    pub kinds: Vec<KindFilter>,
    /// Columns to show, comma-separated: COMMAND, PID, KIND, MODE, START, END, PATH, BLOCKED, DEVICE, INODE,
    /// HOLDERS.
    #[arg(short, long, value_name = "LIST", value_delimiter = ',')]
    pub output: Vec<String>,
    /// Do not print the header line.
    #[arg(short = 'n', long)]
    pub noheadings: bool,
    /// Raw output: columns separated by one space, nothing truncated.
    #[arg(short, long)]
    pub raw: bool,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
    /// List again every DUR (2s, 500ms) until interrupted: in place on a
    /// terminal; with --json, one compact JSON document per line.
    #[arg(long, value_name = "DUR", value_parser = crate::units::parse_interval)]
    pub watch: Option<Duration>,
}

/// A lock kind for `--kind`, named as [`RecordKind::name`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindFilter(pub RecordKind);

impl ValueEnum for KindFilter {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            KindFilter(RecordKind::Flock),
            KindFilter(RecordKind::Posix),
            KindFilter(RecordKind::Ofd),
            KindFilter(RecordKind::Lease),
            KindFilter(RecordKind::Delegation),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        self.0.name().map(clap::builder::PossibleValue::new)
    }
}

/// Options of `lockyard who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The files to ask about.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Attribute through fdinfo even when /proc/locks names a live pid.
    #[arg(long)]
    pub exact: bool,
    /// Print one JSON document (schema 1, see docs/cli.md).
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// Options of `lockyard run`: flock(1)'s command line, parsed by
/// [`crate::flock_args`] (clap cannot read it as getopt does: the first
/// operand ends the options, `-c` after the file, a bare descriptor
/// number).
#[derive(Debug, Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct RunArgs {
    /// flock(1)'s options and operands (see `lockyard run --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<std::ffi::OsString>,
}

/// `lockyard pidfile` subcommands.
#[derive(Debug, Subcommand)]
pub enum PidfileCommand {
    /// Hold the pidfile for COMMAND's lifetime, with COMMAND's pid in it.
    #[command(
        trailing_var_arg = true,
        after_help = "Exit status: COMMAND's; 1 if the pidfile is claimed by another process; 2 on error."
    )]
    Claim {
        /// Do not let COMMAND inherit the claim's lock descriptor: the
        /// claim then ends when lockyard does, even if COMMAND (after
        /// lockyard is killed) or what it started still runs.
        #[arg(short = 'o', long)]
        close: bool,
        /// Wait up to SECS for the previous instance to let go (a restart
        /// overlapping its shutdown) instead of failing at once.
        #[arg(short = 'w', long, value_name = "SECS", value_parser = crate::units::parse_wait)]
        wait: Option<std::time::Duration>,
        /// The pidfile (created if missing, never removed).
        path: PathBuf,
        /// The command and its arguments.
        #[arg(required = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Say whether the pidfile is claimed, and by whom.
    #[command(after_help = "Exit status: 0 if claimed, 1 if unclaimed or missing, 2 on error.")]
    Status {
        /// The pidfile.
        path: PathBuf,
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
}

/// Options of `lockyard cache`.
#[derive(Debug, Args)]
#[command(after_help = "The cache root is --dir, else $LOCKYARD_CACHE_DIR, else $XDG_CACHE_HOME/lockyard, \
    else $HOME/.cache/lockyard. An s3:// remote takes its endpoint, region and credentials from the \
    variables AWS's tools read (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
    AWS_SESSION_TOKEN, AWS_PROFILE); a URL with credentials in it is refused. It, and every directory on the way to it, must belong to you or root and \
    not be writable by other users (sticky directories such as /tmp may be crossed). A directory that \
    holds other files and no .lockyard-cache marker is refused and left untouched. list, show and verify \
    create nothing. Layout and protocol: docs/cache.md; output and exit codes: docs/cli.md.")]
pub struct CacheArgs {
    /// The cache root. Created if missing by the commands that store;
    /// an existing directory is used only if it is empty or already a
    /// lockyard cache (it holds a .lockyard-cache marker).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Give up waiting for a lock (a writer publishing, another builder)
    /// after SECS seconds; the default is to wait as long as it takes.
    #[arg(short = 'w', long = "wait", global = true, value_name = "SECS", value_parser = crate::units::parse_wait)]
    pub wait: Option<Duration>,
    /// Share entries through an object store: s3://BUCKET/PREFIX, or
    /// file:///PATH for a shared directory. A lookup that misses pulls
    /// from it; put and ensure push what they store.
    #[arg(long, global = true, value_name = "URL", env = "LOCKYARD_CACHE_REMOTE")]
    pub remote: Option<String>,
    /// Fail when the remote fails (unreachable, timed out, a rejected
    /// download), instead of warning and going on with the local cache.
    #[arg(long, global = true, requires = "remote")]
    pub require_remote: bool,
    /// Give up on a remote request after DUR without progress (default 30s).
    #[arg(long, global = true, value_name = "DUR", default_value = "30s", value_parser = crate::units::parse_interval)]
    pub remote_timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: CacheCommand,
}

/// `lockyard cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List every entry, newest first, with size, age, last use and
    /// digest; corrupt entries with the reason.
    #[command(after_help = "Exit status: 0 on success, 2 on error.")]
    List {
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
    /// Show one entry: its path, metadata, and who is reading it.
    #[command(after_help = "Exit status: 0 if the entry exists, 1 if it does not, 2 on error \
        (a corrupt entry is an error).")]
    Show {
        /// The entry's key.
        key: String,
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
    /// Recompute entries' digests and compare them with the recorded ones.
    #[command(after_help = "On a terminal, progress is shown on stderr as the bytes are hashed.\n\n\
        Exit status: 0 if every entry checked is intact, 1 if one is corrupt (or KEY has no entry), \
        2 on error.")]
    Verify {
        /// The entry to verify (default: all).
        key: Option<String>,
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
    /// Store a copy of SRC_DIR as KEY's entry, replacing any previous one
    /// atomically, and print the entry's path.
    #[command(
        after_help = "Exit status: 0 on success, 1 if the entry stayed in use past --wait, 2 on error."
    )]
    Put {
        /// The entry's key.
        key: String,
        /// The directory to copy (regular files, directories and symlinks;
        /// symlinks are copied, not followed).
        #[arg(value_name = "SRC_DIR")]
        src: PathBuf,
    },
    /// Make sure KEY exists, building it at most once across every caller
    /// on the host; then print its path, or run COMMAND with it.
    #[command(
        trailing_var_arg = true,
        after_help = "When the entry is missing, exactly one of the concurrent callers runs the build \
        command with `sh -c`, with LOCKYARD_STAGING naming the directory to fill and LOCKYARD_KEY the key; \
        the others wait and use what it published (if it dies, one of them builds instead). The build's \
        standard output goes to standard error, so `$(lockyard cache ensure ...)` captures only the path.\n\n\
        With COMMAND, it runs with LOCKYARD_ENTRY set to the entry's path while the entry is held for \
        reading (nobody replaces or removes it meanwhile).\n\n\
        Exit status: COMMAND's (128+N if killed by signal N), else 0; the build's if it failed (nothing \
        is published); 1 if a lock stayed busy past --wait; 2 on error; 126/127 if COMMAND cannot be run."
    )]
    Ensure {
        /// The entry's key.
        key: String,
        /// The shell command that fills $LOCKYARD_STAGING when the entry is
        /// missing.
        #[arg(long, value_name = "SHELL_CMD")]
        build: String,
        /// Do not let COMMAND inherit the entry's reader lock: the entry is
        /// then held only while lockyard runs, not while processes COMMAND
        /// left behind (or COMMAND, if lockyard is killed) still use it.
        #[arg(short = 'o', long)]
        close: bool,
        /// The command to run with the entry (after `--`).
        #[arg(value_name = "COMMAND", allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Remove entries by a policy. Entries in use are skipped and named
    /// with their holders; corrupt entries are always removed; what is
    /// not an entry is reported and left alone.
    #[command(
        group(clap::ArgGroup::new("policy").required(true)),
        after_help = "Lists what it will remove first. On a terminal it then asks; without one it \
        refuses unless --yes is given. Only what was listed is removed: an entry replaced or used \
        meanwhile is kept. On a terminal, removal progress is shown on stderr.\n\n\
        DUR is a number with a unit: 90s, 45m, 12h, 30d, 2w (or combined: 1d12h). SIZE is a number \
        with an optional unit: K, M, G, T (or KiB, MiB, GiB, TiB) are powers of 1024; KB, MB, GB, TB \
        are powers of 1000.\n\n\
        Exit status: 0 on success (also when busy entries were skipped), 1 if declined, 2 on error."
    )]
    Clean {
        /// Remove every entry (and dead writers' debris); nothing is
        /// published meanwhile.
        #[arg(long, group = "policy")]
        all: bool,
        /// Keep the N newest entries.
        #[arg(long, group = "policy", value_name = "N")]
        keep: Option<usize>,
        /// Remove entries not used for DUR.
        #[arg(long, group = "policy", value_name = "DUR")]
        older_than: Option<String>,
        /// Remove least recently used entries until the rest total at most SIZE.
        #[arg(long, group = "policy", value_name = "SIZE")]
        max_size: Option<String>,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Upload KEY's entry to the remote, unless the remote holds KEY
    /// already (the first build pushed wins).
    #[command(after_help = "The entry is packed as tar + zstd while it is read, its digest checked on \
        the way, then a manifest is written; neither is replaced if it exists. Protocol: docs/cache.md.\n\n\
        Exit status: 0 if the remote holds KEY afterwards, 1 if there is no local entry KEY, 2 on error.")]
    Push {
        /// The entry's key.
        key: String,
    },
    /// Download KEY's entry from the remote into the local cache (unless
    /// it is there already), verify it, and print its path.
    #[command(after_help = "The archive is unpacked into staging, checked against its manifest (size, \
        file count, digest; no path outside the entry, no device or FIFO) and only then published. A \
        rejected archive leaves nothing behind.\n\n\
        Exit status: 0 on success, 1 if the remote has no entry KEY, 2 on error (a rejected archive is \
        an error).")]
    Pull {
        /// The entry's key.
        key: String,
    },
    /// Look at the remote itself.
    Remote {
        /// What to do with the remote.
        #[command(subcommand)]
        command: RemoteCommand,
    },
    /// Remove what crashed writers left behind (only debris whose writer
    /// is proven dead by its lock).
    #[command(after_help = "Exit status: 0 on success, 2 on error.")]
    Sweep,
    /// Remove the named entries, or items in the root that are not
    /// entries (which `list` shows as foreign and no clean removes).
    #[command(
        after_help = "Each NAME is taken under its entry lock, without waiting: one in use is kept and \
        its holders named. The cache's own files (.lockyard-cache, CACHEDIR.TAG, .locks, .staging) \
        cannot be named.\n\n\
        Exit status: 0 if every NAME was removed; 1 if one was missing or in use; 2 on error."
    )]
    Remove {
        /// What to remove: a key, or a name `list` reports as foreign.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// `lockyard cache remote` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List the keys the remote holds, with size, file count, age and
    /// digest from their manifests.
    #[command(after_help = "Exit status: 0 on success, 2 on error (no remote given, or it failed).")]
    List {
        /// Print one JSON document (schema 1, see docs/cli.md).
        #[arg(short = 'J', long)]
        json: bool,
    },
    /// Remove keys from the remote: the manifest, then every archive of
    /// the key. This is how a bad build is taken back, since a key's
    /// first push wins.
    #[command(after_help = "The local cache is not touched. Only objects named as lockyard names them \
        (v1/KEY/manifest.json and v1/KEY/DIGEST.tar.zst) are removed; anything else under the prefix \
        stays. A push of KEY running at the same time may land after the removal.\n\n\
        Exit status: 0 if every KEY was removed, 1 if the remote held nothing of one, 2 on error.")]
    Remove {
        /// The keys to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

/// `--cpus N` or `--cpus P%`.
fn parse_cpus(text: &str) -> Result<lockyard::topo::Amount, String> {
    use lockyard::topo::Amount;
    match text.strip_suffix('%') {
        Some(share) => share
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(Amount::CpuPercent)
            .ok_or_else(|| format!("invalid share {text:?}: give 1% to 100%")),
        None => text
            .trim()
            .parse::<usize>()
            .map(Amount::Cpus)
            .map_err(|_| format!("invalid CPU count {text:?}: give a number, or a share such as 30%")),
    }
}
