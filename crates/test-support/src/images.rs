//! Synthetic kernel images for tests and benchmarks of image inspection.

/// `loadflags` bit 0: the kernel loads high (at 1 MiB).
pub const LOADED_HIGH: u8 = 1;
/// `xloadflags` bit 0: a 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1;

/// A minimal x86 bzImage as the boot protocol lays it out, bootable by a
/// 64-bit VMM: see [`bzimage_with`], with `LOADED_HIGH` and (from
/// protocol 2.12) `XLF_KERNEL_64` set.
pub fn bzimage(protocol: u16, version: &str) -> Vec<u8> {
    bzimage_with(protocol, version, LOADED_HIGH, XLF_KERNEL_64)
}

/// A minimal x86 bzImage: `setup_sects` (4) at 0x1F1, `syssize` at 0x1F4,
/// the 0xAA55 boot flag at 0x1FE, `HdrS` at 0x202, the boot `protocol`
/// at 0x206, `kernel_version` at 0x20E pointing (minus 0x200) at
/// `version`, `loadflags` at 0x211, `xloadflags` at 0x236 (written from
/// protocol 2.12 on), then 1 KiB of payload.
pub fn bzimage_with(protocol: u16, version: &str, loadflags: u8, xloadflags: u16) -> Vec<u8> {
    let setup_sects = 4u8;
    let syssize = 64u32; // paragraphs of 16 bytes: 1 KiB of "kernel"
    let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512 + syssize as usize * 16];
    image[0x1F1] = setup_sects;
    image[0x1F4..0x1F8].copy_from_slice(&syssize.to_le_bytes());
    image[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
    let at = 0x400usize;
    let offset = u16::try_from(at - 0x200).expect("the version offset fits");
    image[0x20E..0x210].copy_from_slice(&offset.to_le_bytes());
    image[0x211] = loadflags;
    if protocol >= 0x020C {
        image[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    }
    image[at..at + version.len()].copy_from_slice(version.as_bytes());
    image
}

/// A minimal arm64 `Image`: 4 KiB with the `ARM\x64` magic at 0x38.
pub fn arm64_image() -> Vec<u8> {
    let mut image = vec![0u8; 4096];
    image[0x38..0x3C].copy_from_slice(b"ARM\x64");
    image
}
