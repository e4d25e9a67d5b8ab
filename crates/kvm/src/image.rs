//! What a kernel image file is, read from its header.
//!
//! - **x86 bzImage**: the setup header's `HdrS` magic at 0x202, the boot
//!   protocol version at 0x206 (2.00 or later: older ones predate the
//!   `kernel_version` field and every VMM's loader), and the version
//!   string at `kernel_version + 0x200`, `kernel_version` being the
//!   16-bit field at 0x20E. The file must also hold the setup sectors
//!   (`setup_sects` at 0x1F1, 0 meaning 4) and the protected-mode kernel
//!   after them (`syssize` at 0x1F4, in 16-byte units): a shorter file is
//!   a truncated copy. What a VMM that loads a bzImage directly (rust-vmm's
//!   linux-loader, Firecracker, cloud-hypervisor) needs is checked too:
//!   `LOADED_HIGH` (bit 0 of `loadflags`, 0x211), without which the kernel
//!   wants loading at 0x10000 as a zImage (linux-loader refuses it); and,
//!   from protocol 2.12 on, `XLF_KERNEL_64` (bit 0 of `xloadflags`,
//!   0x236), the 64-bit entry point at load address + 0x200 that those
//!   VMMs jump to. Whether the kernel is relocatable (0x234, protocol
//!   2.05+) is reported: it matters only to a VMM that loads it elsewhere
//!   than its preferred address.
//! - **arm64 `Image`**: the magic `ARM\x64` at 0x38 of its 64-byte header.
//!   The header has no version string; the version is not reported.
//! - Refused with a hint: an ELF `vmlinux` (what a build leaves at the top
//!   of its tree, not what a VMM boots), and compressed images (gzip,
//!   zstd, xz, lz4, bzip2: some distributions install arm64 kernels that
//!   way).

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

/// The architecture an image boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arch {
    /// x86-64 (a bzImage).
    X86_64,
    /// 64-bit Arm (an `Image`).
    Aarch64,
}

impl Arch {
    /// This host's architecture, if it is one lockyard knows how to boot.
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// Where a kernel build tree leaves this architecture's image.
    pub fn build_tree_image(self) -> &'static str {
        match self {
            Arch::X86_64 => "arch/x86/boot/bzImage",
            Arch::Aarch64 => "arch/arm64/boot/Image",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// A bootable image, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImageInfo {
    /// `bzImage` or `Image`.
    pub format: &'static str,
    /// What it boots on.
    pub arch: Arch,
    /// The x86 boot protocol, as `major.minor` (`None` for arm64).
    pub boot_protocol: Option<String>,
    /// The kernel release (`6.1.0-18-cloud-amd64`), where the header
    /// leads to it.
    pub version: Option<String>,
    /// The full version string (`6.1.0-18-cloud-amd64 (debian-kernel@...) #1 SMP ...`).
    pub version_string: Option<String>,
    /// File size, bytes.
    pub size: u64,
    /// Whether an x86 kernel may be loaded elsewhere than its preferred
    /// address (`relocatable_kernel`); `None` where the header does not
    /// say (arm64, x86 protocol before 2.05).
    pub relocatable: Option<bool>,
}

/// Why a file is not a bootable image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    /// Nothing there.
    #[error("missing")]
    Missing,
    /// There, but we may not read it.
    #[error("not readable by uid {uid} (mode {mode:04o}, owner uid {owner}){}", hint(path_hint))]
    Unreadable {
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        uid: u32,
        /// What to do.
        path_hint: String,
    },
    /// A directory, device or other non-file.
    #[error("not a regular file ({found})")]
    NotAFile {
        /// What it is.
        found: String,
    },
    /// An ELF `vmlinux`.
    #[error(
        "an ELF vmlinux, which VMMs do not boot; pass the bzImage (arch/x86/boot/bzImage) or Image (arch/arm64/boot/Image) instead"
    )]
    Elf,
    /// Compressed as a whole.
    #[error("a {compression}-compressed file; decompress it first (e.g. `{tool} -dc FILE > Image`)")]
    Compressed {
        /// The compression found.
        compression: &'static str,
        /// The tool that undoes it.
        tool: &'static str,
    },
    /// Shorter than its header says it is.
    #[error("truncated: {size} bytes, the header needs at least {needed}")]
    Truncated {
        /// File size.
        size: u64,
        /// What the header implies.
        needed: u64,
    },
    /// A bzImage too old to boot.
    #[error("x86 boot protocol {protocol} is older than 2.00, which VMM loaders need")]
    OldBootProtocol {
        /// The version found.
        protocol: String,
    },
    /// A bzImage without `LOADED_HIGH`: a zImage-style kernel to be loaded
    /// low, which VMMs that load bzImages directly refuse.
    #[error(
        "loadflags lacks LOADED_HIGH (bit 0 of 0x211): the kernel wants loading at 0x10000, which VMM loaders refuse"
    )]
    NotLoadedHigh,
    /// A bzImage whose header (protocol 2.12+) says it has no 64-bit entry
    /// point, which VMMs that boot in 64-bit mode jump to.
    #[error("xloadflags lacks XLF_KERNEL_64 (bit 0 of 0x236): no 64-bit entry point for a VMM to jump to")]
    No64BitEntry,
    /// A good image of another kernel release than the one asked for.
    #[error("kernel {found}, not the requested {wanted}")]
    VersionMismatch {
        /// The version asked for.
        wanted: String,
        /// The image's release, from its header.
        found: String,
    },
    /// An image whose header carries no version, when a version was asked
    /// for (arm64 `Image`s have none).
    #[error("its header names no kernel release, and {wanted} was requested")]
    VersionUnknown {
        /// The version asked for.
        wanted: String,
    },
    /// A good image for another architecture.
    #[error("an {found} image, and this host is {host}")]
    WrongArch {
        /// The image's.
        found: Arch,
        /// Ours.
        host: Arch,
    },
    /// No known header.
    #[error("no kernel image header (neither a bzImage's HdrS at 0x202 nor an arm64 Image's magic at 0x38)")]
    UnknownFormat,
    /// The cache has no entry under the key.
    #[error("no cache entry {key:?}")]
    NotCached {
        /// The key looked up.
        key: String,
    },
    /// The cache entry holds no image file.
    #[error("the cache entry holds none of bzImage, Image, vmlinuz")]
    NoImageInEntry,
    /// A stored kernel built from another `.config` than the one asked for.
    #[error(
        "built from another kernel config (fingerprint {}, {wanted} requested); rebuild it from this config and store it",
        found.as_deref().unwrap_or("not recorded")
    )]
    Stale {
        /// The fingerprint asked for.
        wanted: String,
        /// The entry's, if it recorded one.
        found: Option<String>,
    },
    /// A cache entry that cannot be trusted (its `entry.json` is missing,
    /// unreadable or malformed).
    #[error("a corrupt cache entry: {reason}; `lockyard cache clean` removes it")]
    CorruptEntry {
        /// Why, as the cache says.
        reason: String,
    },
    /// Reading failed.
    #[error("cannot be read: {message}")]
    Io {
        /// What the system said.
        message: String,
    },
}

fn hint(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!("; {text}") }
}

const HEADER: usize = 0x1000;

/// Read `path`'s header and say what it is.
///
/// # Errors
/// The [`Rejection`] that says why it cannot be booted.
pub fn inspect(path: &Path) -> Result<ImageInfo, Rejection> {
    open_and_inspect(path).map(|(_, info)| info)
}

/// Open `path` and read its header: the file, positioned at its start
/// (the header is read with `pread`), and what it is. For a caller that
/// goes on to read the very file it checked.
pub(crate) fn open_and_inspect(path: &Path) -> Result<(File, ImageInfo), Rejection> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO planted as a candidate must not hang the open
    // (it is then refused by the type check on what was opened).
    let opened =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path);
    let file: File = match opened {
        Ok(file) => file,
        Err(e) => return Err(open_rejection(path, &e)),
    };
    let meta = file.metadata().map_err(|e| Rejection::Io { message: e.to_string() })?;
    if !meta.file_type().is_file() {
        let found = if meta.is_dir() { "a directory" } else { "a device, FIFO or socket" };
        return Err(Rejection::NotAFile { found: found.to_owned() });
    }
    let size = meta.len();
    let mut header = vec![0u8; HEADER.min(usize::try_from(size).unwrap_or(HEADER))];
    file.read_exact_at(&mut header, 0).map_err(|e| Rejection::Io { message: e.to_string() })?;
    let info = identify(&header, size, |offset, buf| file.read_at(buf, offset))?;
    Ok((file, info))
}

fn open_rejection(path: &Path, e: &std::io::Error) -> Rejection {
    match e.kind() {
        std::io::ErrorKind::NotFound => Rejection::Missing,
        std::io::ErrorKind::PermissionDenied => {
            let (mode, owner) = std::fs::metadata(path).map_or((0, 0), |m| (m.mode() & 0o7777, m.uid()));
            let shown = path.display();
            let path_hint = if path.starts_with("/boot") {
                format!(
                    "Debian and Ubuntu install /boot/vmlinuz-* mode 0600 (root only): read it as root, or \
                     `sudo chmod 0644 {shown}` (on Ubuntu, `sudo dpkg-statoverride --update --add root root \
                     0644 {shown}` keeps that across upgrades)"
                )
            } else {
                format!("make it readable (`chmod a+r {shown}`) or run as its owner")
            };
            Rejection::Unreadable { mode, owner, uid: rustix::process::geteuid().as_raw(), path_hint }
        }
        _ => Rejection::Io { message: e.to_string() },
    }
}

/// Identify an image from its first bytes (`header`, up to 4 KiB), its
/// size, and a reader for anything further in.
pub(crate) fn identify(
    header: &[u8],
    size: u64,
    read_at: impl Fn(u64, &mut [u8]) -> std::io::Result<usize>,
) -> Result<ImageInfo, Rejection> {
    let at = |offset: usize, magic: &[u8]| header.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x7fELF") {
        return Err(Rejection::Elf);
    }
    for (magic, compression, tool) in [
        (&b"\x1f\x8b"[..], "gzip", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd", "zstd"),
        (b"\xfd7zXZ\x00", "xz", "xz"),
        (b"\x04\x22\x4d\x18", "lz4", "lz4"),
        (b"\x02\x21\x4c\x18", "lz4", "lz4"),
        (b"BZh", "bzip2", "bzip2"),
    ] {
        if at(0, magic) {
            return Err(Rejection::Compressed { compression, tool });
        }
    }
    if at(0x202, b"HdrS") {
        return bzimage(header, size, read_at);
    }
    if at(0x38, b"ARM\x64") {
        return Ok(ImageInfo {
            format: "Image",
            arch: Arch::Aarch64,
            boot_protocol: None,
            version: None,
            version_string: None,
            size,
            relocatable: None,
        });
    }
    // A header cut short before either magic could be seen.
    if header.len() < 0x206 {
        return Err(Rejection::Truncated { size, needed: 0x206 });
    }
    Err(Rejection::UnknownFormat)
}

fn bzimage(
    header: &[u8],
    size: u64,
    read_at: impl Fn(u64, &mut [u8]) -> std::io::Result<usize>,
) -> Result<ImageInfo, Rejection> {
    let u16_at = |offset: usize| header.get(offset..offset + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at =
        |offset: usize| header.get(offset..offset + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let (Some(protocol), Some(kernel_version), Some(syssize)) = (u16_at(0x206), u16_at(0x20E), u32_at(0x1F4))
    else {
        return Err(Rejection::Truncated { size, needed: 0x210 });
    };
    let protocol_text = format!("{}.{:02}", protocol >> 8, protocol & 0xff);
    if protocol < 0x0200 {
        return Err(Rejection::OldBootProtocol { protocol: protocol_text });
    }
    const LOADED_HIGH: u8 = 1;
    const XLF_KERNEL_64: u16 = 1;
    if header.get(0x211).is_some_and(|flags| flags & LOADED_HIGH == 0) {
        return Err(Rejection::NotLoadedHigh);
    }
    if protocol >= 0x020C && u16_at(0x236).is_some_and(|flags| flags & XLF_KERNEL_64 == 0) {
        return Err(Rejection::No64BitEntry);
    }
    let relocatable = if protocol >= 0x0205 { header.get(0x234).map(|&r| r != 0) } else { None };
    let setup_sects = match header[0x1F1] {
        0 => 4,
        n => u64::from(n),
    };
    let needed = (setup_sects + 1) * 512 + u64::from(syssize) * 16;
    if size < needed {
        return Err(Rejection::Truncated { size, needed });
    }
    let version_string = if kernel_version == 0 {
        None
    } else {
        let offset = u64::from(kernel_version) + 0x200;
        let mut buf = [0u8; 256];
        let n = read_at(offset, &mut buf).map_err(|e| Rejection::Io { message: e.to_string() })?;
        let text = &buf[..n];
        let end = match text.iter().position(|&b| b == 0) {
            Some(end) => end,
            // The file ends inside the string.
            None if n < buf.len() => {
                return Err(Rejection::Truncated { size, needed: offset + n as u64 + 1 });
            }
            // Longer than any real version string: keep what was read.
            None => n,
        };
        Some(String::from_utf8_lossy(&text[..end]).into_owned())
    };
    let version = version_string.as_deref().and_then(|s| s.split_whitespace().next()).map(str::to_owned);
    Ok(ImageInfo {
        format: "bzImage",
        arch: Arch::X86_64,
        boot_protocol: Some(protocol_text),
        version,
        version_string,
        size,
        relocatable,
    })
}
