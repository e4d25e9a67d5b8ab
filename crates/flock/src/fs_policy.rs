//! Which filesystems may hold lock files.
//!
//! Advisory locks are only as good as the filesystem that keeps them. On a
//! network filesystem the server or each client keeps its own idea of who
//! holds what (NFSv3 without a lock manager, SMB with oplocks, CephFS
//! clients), and a FUSE filesystem honours `flock` only if its daemon
//! implements it, silently granting every request otherwise. The check uses
//! `fstatfs` on the descriptor that will carry the lock, so it is about the
//! very file locked, not a path that may since have changed.

use std::fmt;

/// A filesystem type as `statfs(2)` reports it, with a human name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FsType {
    /// The `f_type` magic number.
    pub magic: u64,
    /// A short name for messages.
    pub name: &'static str,
}

impl FsType {
    /// NFS (all versions).
    pub const NFS: FsType = FsType { magic: 0x6969, name: "NFS" };
    /// CIFS.
    pub const CIFS: FsType = FsType { magic: 0xff53_4d42, name: "CIFS" };
    /// SMB (the old smbfs).
    pub const SMB: FsType = FsType { magic: 0x517b, name: "SMB" };
    /// SMB2/3.
    pub const SMB2: FsType = FsType { magic: 0xfe53_4d42, name: "SMB2" };
    /// CephFS.
    pub const CEPH: FsType = FsType { magic: 0x00c3_6400, name: "CephFS" };
    /// OpenAFS.
    pub const AFS: FsType = FsType { magic: 0x5346_414f, name: "AFS" };
    /// The kernel's kAFS client.
    pub const KAFS: FsType = FsType { magic: 0x6b41_4653, name: "kAFS" };
    /// Any FUSE filesystem (sshfs, bindfs, virtiofs, ...).
    pub const FUSE: FsType = FsType { magic: 0x6573_5546, name: "FUSE" };
    /// 9P (v9fs), as used to share host directories with VMs.
    pub const V9FS: FsType = FsType { magic: 0x0102_1997, name: "9P" };
    /// Lustre.
    pub const LUSTRE: FsType = FsType { magic: 0x0bd0_0bd0, name: "Lustre" };
    /// IBM Storage Scale (GPFS).
    pub const GPFS: FsType = FsType { magic: 0x4750_4653, name: "GPFS" };
    /// OrangeFS.
    pub const ORANGEFS: FsType = FsType { magic: 0x2003_0528, name: "OrangeFS" };

    /// The filesystems [`FsPolicy::default`] refuses.
    pub const UNRELIABLE: [FsType; 12] = [
        Self::NFS,
        Self::CIFS,
        Self::SMB,
        Self::SMB2,
        Self::CEPH,
        Self::AFS,
        Self::KAFS,
        Self::FUSE,
        Self::V9FS,
        Self::LUSTRE,
        Self::GPFS,
        Self::ORANGEFS,
    ];
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (magic {:#x})", self.name, self.magic)
    }
}

/// The filesystems a lock file may not live on.
///
/// The default refuses [`FsType::UNRELIABLE`]. Allow one you trust, for
/// example FUSE for a virtiofs mount whose daemon implements locking:
///
/// ```
/// use lockyard_flock::{FsPolicy, FsType};
/// let policy = FsPolicy::default().allow(FsType::FUSE);
/// assert!(policy.check(FsType::FUSE.magic).is_ok());
/// assert!(policy.check(FsType::NFS.magic).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsPolicy {
    refused: Vec<FsType>,
}

impl Default for FsPolicy {
    fn default() -> Self {
        FsPolicy { refused: FsType::UNRELIABLE.to_vec() }
    }
}

impl FsPolicy {
    /// A policy that accepts every filesystem.
    pub fn allow_all() -> Self {
        FsPolicy { refused: Vec::new() }
    }

    /// Accept `fs` from now on.
    #[must_use]
    pub fn allow(mut self, fs: FsType) -> Self {
        self.refused.retain(|r| r.magic != fs.magic);
        self
    }

    /// Refuse `fs` as well.
    #[must_use]
    pub fn refuse(mut self, fs: FsType) -> Self {
        if !self.refused.iter().any(|r| r.magic == fs.magic) {
            self.refused.push(fs);
        }
        self
    }

    /// The filesystems refused.
    pub fn refused(&self) -> &[FsType] {
        &self.refused
    }

    /// `Err` with the refused filesystem if `magic` (an `f_type`) is refused.
    ///
    /// # Errors
    /// The [`FsType`] that matched.
    pub fn check(&self, magic: u64) -> Result<(), FsType> {
        match self.refused.iter().find(|r| r.magic == magic) {
            Some(fs) => Err(*fs),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refuses_network_and_fuse_filesystems() {
        let policy = FsPolicy::default();
        for fs in FsType::UNRELIABLE {
            assert_eq!(policy.check(fs.magic), Err(fs));
        }
        // tmpfs, ext4, btrfs, xfs.
        for local in [0x0102_1994_u64, 0xef53, 0x9123_683e, 0x5846_5342] {
            assert_eq!(policy.check(local), Ok(()));
        }
    }

    #[test]
    fn nfs_is_refused_with_a_message_naming_it() {
        // NFS cannot be mounted on the test machines: feed its magic
        // (NFS_SUPER_MAGIC, what fstatfs reports for every NFS version).
        let fs = FsPolicy::default().check(0x6969).expect_err("NFS refused");
        assert_eq!(fs.name, "NFS");
        let err = crate::LockError::UnsupportedFilesystem { path: "/mnt/nfs/build.lock".into(), fs };
        let text = err.to_string();
        assert!(text.contains("/mnt/nfs/build.lock") && text.contains("NFS"), "{text}");
    }

    #[test]
    fn policy_is_a_value_the_caller_changes() {
        let policy = FsPolicy::default().allow(FsType::FUSE);
        assert_eq!(policy.check(FsType::FUSE.magic), Ok(()));
        assert_eq!(policy.check(FsType::NFS.magic), Err(FsType::NFS));
        let strict = FsPolicy::allow_all().refuse(FsType { magic: 0x0102_1994, name: "tmpfs" });
        assert!(strict.check(0x0102_1994).is_err());
        assert_eq!(strict.refused().len(), 1);
    }
}
