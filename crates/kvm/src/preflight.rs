//! Can this process boot a VM with KVM, and if not, why and what to do.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;

use crate::caps::CAPABILITIES;
use crate::host::{self, HostSnapshot};
use crate::sys;

/// Where the KVM device usually is.
pub const DEFAULT_DEVICE: &str = "/dev/kvm";
/// The only `KVM_GET_API_VERSION` the stable KVM API has ever returned.
pub const API_VERSION: i32 = 12;
/// The KVM device's number: the misc major 10, minor 232 (`KVM_MINOR`).
pub const KVM_DEVICE: (u32, u32) = (10, 232);

/// Errnos that mean "the host is busy now", not "this host is wrong":
/// kernel memory, fd tables, a contended device. Worth a retry later.
const TRANSIENT: [Errno; 5] = [Errno::NOMEM, Errno::BUSY, Errno::MFILE, Errno::NFILE, Errno::AGAIN];

/// Why KVM cannot be used. Every variant's message ends with a remedy.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// No device at the path.
    #[error("{}: no KVM device: {diagnosis}", path.display())]
    Absent {
        /// The device path.
        path: PathBuf,
        /// What the host says about why.
        diagnosis: Absence,
    },
    /// Something is at the path, but not the KVM character device.
    #[error(
        "{}: {found}, not the KVM character device ({}:{}); pass the path of the real device",
        path.display(), KVM_DEVICE.0, KVM_DEVICE.1
    )]
    NotKvm {
        /// The device path.
        path: PathBuf,
        /// What is there instead.
        found: String,
    },
    /// The device exists and this user may not open it read-write.
    #[error("{}: permission denied: {access}", path.display())]
    PermissionDenied {
        /// The device path.
        path: PathBuf,
        /// Who owns the device and who we are.
        access: Access,
    },
    /// The host is short of a resource right now; try later.
    #[error("{}: {op}: {errno} (host under pressure: {snapshot}); try again later", path.display())]
    Transient {
        /// The device path.
        path: PathBuf,
        /// What failed (`open`, `KVM_CREATE_VM`).
        op: &'static str,
        /// The errno's name.
        errno: &'static str,
        /// Load, memory and open files when it failed.
        snapshot: Box<HostSnapshot>,
    },
    /// The device answers with an API version other than 12.
    #[error(
        "{}: KVM API version {found}, expected {API_VERSION}; this kernel's KVM is not the stable API lockyard knows",
        path.display()
    )]
    ApiVersion {
        /// The device path.
        path: PathBuf,
        /// What it said.
        found: i32,
    },
    /// Anything else, with the errno named.
    #[error("{}: {op}: {errno} ({message}){}", path.display(), hint.map(|h| format!("; {h}")).unwrap_or_default())]
    Other {
        /// The device path.
        path: PathBuf,
        /// What failed.
        op: &'static str,
        /// The errno's name.
        errno: &'static str,
        /// The system's description of it.
        message: String,
        /// What to do, where something useful can be said.
        hint: Option<&'static str>,
    },
    /// A capability name no kernel header defines.
    #[error(
        "unknown KVM capability {name:?}: give a KVM_CAP_* name (with or without the prefix) or a number"
    )]
    UnknownCapability {
        /// The name given.
        name: String,
    },
}

impl PreflightError {
    /// Whether this is host pressure (skip and retry later) rather than a
    /// misconfiguration (fail): a harness decides without matching text.
    pub fn is_transient(&self) -> bool {
        matches!(self, PreflightError::Transient { .. })
    }

    /// What to do about it, in one line (the message says it too).
    pub fn remedy(&self) -> String {
        match self {
            PreflightError::Absent { diagnosis, .. } => diagnosis.to_string(),
            PreflightError::NotKvm { .. } => format!(
                "pass the path of the KVM device (normally {DEFAULT_DEVICE}, character device {}:{})",
                KVM_DEVICE.0, KVM_DEVICE.1
            ),
            PreflightError::PermissionDenied { access, .. } => access.to_string(),
            PreflightError::Transient { .. } => {
                "host pressure: retry later, or free memory and file descriptors".to_owned()
            }
            PreflightError::ApiVersion { .. } => {
                format!("use a kernel whose KVM has the stable API (version {API_VERSION})")
            }
            PreflightError::Other { hint, .. } => {
                hint.unwrap_or("look up the errno for this device and operation").to_owned()
            }
            PreflightError::UnknownCapability { .. } => {
                "give a KVM_CAP_* name from <linux/kvm.h> or a number".to_owned()
            }
        }
    }

    /// The variant as a stable snake_case word, for JSON and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            PreflightError::Absent { .. } => "absent",
            PreflightError::NotKvm { .. } => "not_kvm",
            PreflightError::PermissionDenied { .. } => "permission_denied",
            PreflightError::Transient { .. } => "transient",
            PreflightError::ApiVersion { .. } => "api_version",
            PreflightError::Other { .. } => "other",
            PreflightError::UnknownCapability { .. } => "unknown_capability",
        }
    }
}

/// What the host says about a missing KVM device.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Absence {
    /// KVM modules loaded (`/sys/module/kvm*`).
    pub modules: Vec<String>,
    /// The CPU's virtualization flag (`vmx`, `svm`), if `/proc/cpuinfo` has one.
    pub cpu_flag: Option<String>,
    /// Whether we run under a hypervisor (the `hypervisor` CPU flag).
    pub guest: bool,
}

impl fmt::Display for Absence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.modules.is_empty() {
            let loaded = match self.modules.as_slice() {
                [one] => format!("the {one} module is"),
                many => format!("the modules {} are", many.join(", ")),
            };
            return write!(
                f,
                "{loaded} loaded but the device node is missing; create it (udev, or \
                 `mknod /dev/kvm c {} {}`), or in a container pass the device in (`--device /dev/kvm`)",
                KVM_DEVICE.0, KVM_DEVICE.1
            );
        }
        match (self.cpu_flag.as_deref(), self.guest) {
            (Some("vmx"), _) => f.write_str("no kvm module is loaded; load it with `modprobe kvm_intel`"),
            (Some("svm"), _) => f.write_str("no kvm module is loaded; load it with `modprobe kvm_amd`"),
            (_, true) => f.write_str(
                "no kvm module is loaded and this virtual machine's CPU has no vmx/svm: enable nested \
                 virtualization on its host (kvm_intel/kvm_amd `nested=1`, and a CPU model that passes \
                 vmx/svm through), or run on bare metal",
            ),
            _ => f.write_str(
                "no kvm module is loaded and the CPU shows no vmx/svm: enable VT-x or AMD-V in the \
                 firmware settings, then `modprobe kvm_intel` or `kvm_amd`",
            ),
        }
    }
}

/// The device's ownership next to ours, for a permission problem.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Access {
    /// The device's permission bits.
    pub mode: u32,
    /// Its owner's uid.
    pub owner: u32,
    /// Its group's gid.
    pub gid: u32,
    /// Its group's name, if `/etc/group` has it.
    pub group: Option<String>,
    /// Our effective uid.
    pub uid: u32,
    /// Our user name, if `/etc/passwd` has it.
    pub user: Option<String>,
    /// Whether we are in the device's group.
    pub in_group: bool,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group.clone().unwrap_or_else(|| format!("gid {}", self.gid));
        let user = self.user.clone().unwrap_or_else(|| format!("uid {}", self.uid));
        write!(f, "it is mode {:04o}, group {group}; ", self.mode & 0o7777)?;
        let group_rw = self.mode & 0o060 == 0o060;
        if self.uid == 0 {
            // Root passes every mode check: something else said no.
            write!(
                f,
                "even root is denied: the filesystem holding it is mounted nodev (device nodes cannot be \
                 opened there), or an LSM (SELinux, AppArmor) or a device cgroup denies it"
            )
        } else if self.gid == 0 || !group_rw {
            write!(
                f,
                "only its owner may open it. Most distributions give it to group kvm, mode 0660 \
                 (udev rule `KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"`); then add {user} to that group"
            )
        } else if !self.in_group {
            write!(
                f,
                "{user} is not in group {group}: `sudo usermod -aG {} {}`, then log in again \
                 (group membership applies to new sessions)",
                self.group.clone().unwrap_or_else(|| self.gid.to_string()),
                self.user.clone().unwrap_or_else(|| self.uid.to_string()),
            )
        } else {
            write!(
                f,
                "{user} is in group {group} and the group may read and write it, so something else \
                 denies it: an LSM (SELinux, AppArmor), a device cgroup, or a user namespace"
            )
        }
    }
}

/// A `KVM_CHECK_EXTENSION` capability to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    name: String,
    number: u32,
}

impl Capability {
    /// By name, as in `<linux/kvm.h>` (`KVM_CAP_IRQCHIP`, `irqchip`), or a
    /// number.
    ///
    /// # Errors
    /// [`PreflightError::UnknownCapability`] for a name the header lacks.
    pub fn parse(name: &str) -> Result<Self, PreflightError> {
        if let Ok(number) = name.parse::<u32>() {
            return Ok(Capability::number(number));
        }
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("KVM_CAP_").unwrap_or(&upper);
        CAPABILITIES
            .iter()
            .find(|(known, _)| *known == bare)
            .map(|&(known, number)| Capability { name: known.to_owned(), number })
            .ok_or_else(|| PreflightError::UnknownCapability { name: name.to_owned() })
    }

    /// By number (named from the header where it knows it).
    pub fn number(number: u32) -> Self {
        let name = CAPABILITIES
            .iter()
            .find(|&&(_, n)| n == number)
            .map_or_else(|| number.to_string(), |(known, _)| (*known).to_owned());
        Capability { name, number }
    }

    /// Its name without the `KVM_CAP_` prefix.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Usable, but worth knowing (a capability reported absent).
    Warn,
    /// KVM cannot be used.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One check of a [`Report`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// What was checked (`device`, `api version`, `create vm`,
    /// `capability IRQCHIP`).
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    pub remedy: Option<String>,
    /// The number the kernel returned, for the API version and capabilities.
    pub value: Option<i64>,
}

/// Everything preflight found, one [`Check`] per step; it stops at the
/// first failure (later steps need the earlier ones).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The device checked.
    pub device: PathBuf,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The failure's kind ([`PreflightError::kind`]), if a check failed.
    pub failure: Option<&'static str>,
    /// Whether the failure (if any) is host pressure, worth a retry.
    pub transient: bool,
    #[serde(skip)]
    error: Option<PreflightError>,
}

impl Report {
    /// Whether nothing failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }

    /// The failure, typed.
    pub fn error(&self) -> Option<&PreflightError> {
        self.error.as_ref()
    }

    /// The report if nothing failed, else the failure.
    ///
    /// # Errors
    /// The [`PreflightError`] of the failed check.
    pub fn into_result(self) -> Result<Report, PreflightError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// A preflight to run: the device and the capabilities to report.
#[derive(Debug, Clone)]
pub struct Preflight {
    device: PathBuf,
    capabilities: Vec<Capability>,
}

impl Default for Preflight {
    fn default() -> Self {
        Preflight { device: PathBuf::from(DEFAULT_DEVICE), capabilities: Vec::new() }
    }
}

impl Preflight {
    /// Check [`DEFAULT_DEVICE`], no capabilities.
    pub fn new() -> Self {
        Preflight::default()
    }

    /// Check this device path instead.
    #[must_use]
    pub fn device(mut self, path: impl Into<PathBuf>) -> Self {
        self.device = path.into();
        self
    }

    /// Also report this capability.
    #[must_use]
    pub fn capability(mut self, cap: Capability) -> Self {
        self.capabilities.push(cap);
        self
    }

    /// Run the checks: the device opens read-write, its API version is
    /// 12, a VM can be created, then each capability.
    pub fn run(&self) -> Report {
        let mut report = Report {
            device: self.device.clone(),
            checks: Vec::new(),
            failure: None,
            transient: false,
            error: None,
        };
        let fail = |report: &mut Report, name: &str, error: PreflightError| {
            report.checks.push(Check {
                name: name.to_owned(),
                status: Status::Fail,
                detail: error.to_string(),
                remedy: Some(error.remedy()),
                value: None,
            });
            report.transient = error.is_transient();
            report.failure = Some(error.kind());
            report.error = Some(error);
        };
        let kvm = match open(&self.device) {
            Ok(kvm) => kvm,
            Err(e) => {
                fail(&mut report, "device", e);
                return report;
            }
        };
        report.checks.push(pass("device", format!("{} opens read-write", self.device.display()), None));
        match sys::api_version(kvm.as_fd()) {
            Ok(API_VERSION) => report.checks.push(pass(
                "api version",
                format!("{API_VERSION}"),
                Some(i64::from(API_VERSION)),
            )),
            Ok(found) => {
                fail(
                    &mut report,
                    "api version",
                    PreflightError::ApiVersion { path: self.device.clone(), found },
                );
                return report;
            }
            Err(Errno::NOTTY | Errno::INVAL) => {
                let found = "a character device that does not answer KVM's ioctls".to_owned();
                fail(&mut report, "api version", PreflightError::NotKvm { path: self.device.clone(), found });
                return report;
            }
            Err(e) => {
                fail(&mut report, "api version", classify(&self.device, "KVM_GET_API_VERSION", e));
                return report;
            }
        }
        match sys::create_vm(kvm.as_fd()) {
            Ok(vm) => {
                drop(vm);
                report.checks.push(pass("create vm", "KVM_CREATE_VM succeeded".to_owned(), None));
            }
            Err(e) => {
                fail(&mut report, "create vm", classify(&self.device, "KVM_CREATE_VM", e));
                return report;
            }
        }
        for cap in &self.capabilities {
            let name = format!("capability {}", cap.name);
            report.checks.push(match sys::check_extension(kvm.as_fd(), cap.number) {
                Ok(0) => Check {
                    name,
                    status: Status::Warn,
                    detail: "not supported by this kernel's KVM".to_owned(),
                    remedy: Some(
                        "a newer kernel, or the module parameter that enables it, may provide it".to_owned(),
                    ),
                    value: Some(0),
                },
                Ok(value) => pass(&name, format!("supported ({value})"), Some(i64::from(value))),
                Err(e) => Check {
                    name,
                    status: Status::Warn,
                    detail: format!("KVM_CHECK_EXTENSION failed: {}", errno_name(e)),
                    remedy: None,
                    value: None,
                },
            });
        }
        report
    }
}

fn pass(name: &str, detail: String, value: Option<i64>) -> Check {
    Check { name: name.to_owned(), status: Status::Pass, detail, remedy: None, value }
}

/// Open the KVM device read-write, checking first that it is one: a
/// missing path, a regular file, a FIFO or another device is named as
/// such and never opened (opening some devices has side effects).
///
/// # Errors
/// The [`PreflightError`] that says why not.
pub fn open(path: &Path) -> Result<OwnedFd, PreflightError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PreflightError::Absent { path: path.to_owned(), diagnosis: host::absence() });
        }
        Err(e) => {
            let errno = Errno::from_io_error(&e).unwrap_or(Errno::IO);
            return Err(classify(path, "stat", errno));
        }
    };
    let kind = meta.file_type();
    if !kind.is_char_device() {
        let found = if kind.is_dir() {
            "a directory"
        } else if kind.is_file() {
            "a regular file"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "not a device"
        };
        return Err(PreflightError::NotKvm { path: path.to_owned(), found: found.to_owned() });
    }
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    if (major, minor) != KVM_DEVICE {
        return Err(PreflightError::NotKvm {
            path: path.to_owned(),
            found: format!("character device {major}:{minor}"),
        });
    }
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty()).map_err(
        |e| match e {
            Errno::ACCESS | Errno::PERM => {
                PreflightError::PermissionDenied { path: path.to_owned(), access: host::access(&meta) }
            }
            // The node is there but no driver answers: the module is gone.
            Errno::NXIO | Errno::NODEV => {
                PreflightError::Absent { path: path.to_owned(), diagnosis: host::absence() }
            }
            e => classify(path, "open", e),
        },
    )?;
    // The path may have been swapped (a symlink flipped to /dev/null)
    // between the check above and the open: what counts is what was
    // opened, before any ioctl reaches it.
    let opened = rustix::fs::fstat(&fd).map_err(|e| classify(path, "stat", e))?;
    let is_char =
        rustix::fs::FileType::from_raw_mode(opened.st_mode) == rustix::fs::FileType::CharacterDevice;
    let (major, minor) = (rustix::fs::major(opened.st_rdev), rustix::fs::minor(opened.st_rdev));
    if !is_char || (major, minor) != KVM_DEVICE {
        return Err(PreflightError::NotKvm {
            path: path.to_owned(),
            found: format!("something else once opened ({major}:{minor}); the path changed during the check"),
        });
    }
    Ok(fd)
}

fn classify(path: &Path, op: &'static str, errno: Errno) -> PreflightError {
    if TRANSIENT.contains(&errno) {
        return PreflightError::Transient {
            path: path.to_owned(),
            op,
            errno: errno_name(errno),
            snapshot: Box::new(HostSnapshot::take()),
        };
    }
    let hint = match errno {
        Errno::ACCESS | Errno::PERM => {
            Some("check the permissions of the device and the directories above it")
        }
        Errno::ROFS => Some("the device is on a read-only mount (nodev or ro): mount /dev read-write"),
        _ => None,
    };
    PreflightError::Other {
        path: path.to_owned(),
        op,
        errno: errno_name(errno),
        message: std::io::Error::from(errno).to_string(),
        hint,
    }
}

/// The symbolic name of the errnos preflight can meet.
pub(crate) fn errno_name(errno: Errno) -> &'static str {
    const NAMES: [(Errno, &str); 18] = [
        (Errno::NOMEM, "ENOMEM"),
        (Errno::BUSY, "EBUSY"),
        (Errno::MFILE, "EMFILE"),
        (Errno::NFILE, "ENFILE"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::ACCESS, "EACCES"),
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::NXIO, "ENXIO"),
        (Errno::NODEV, "ENODEV"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::INVAL, "EINVAL"),
        (Errno::IO, "EIO"),
        (Errno::ROFS, "EROFS"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::LOOP, "ELOOP"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
    ];
    NAMES.iter().find(|(e, _)| *e == errno).map_or("an unexpected errno", |(_, name)| name)
}
