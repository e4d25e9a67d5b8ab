//! Synthetic kernel images for tests and benchmarks of image inspection.

/// A minimal x86 bzImage as the boot protocol lays it out: `setup_sects`
/// (4) at 0x1F1, `syssize` at 0x1F4, the 0xAA55 boot flag at 0x1FE,
/// `HdrS` at 0x202, the boot `protocol` at 0x206, and `kernel_version`
/// at 0x20E pointing (minus 0x200) at `version`, then 1 KiB of payload.
pub fn bzimage(protocol: u16, version: &str) -> Vec<u8> {
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
    image[at..at + version.len()].copy_from_slice(version.as_bytes());
    image
}

/// A minimal arm64 `Image`: 4 KiB with the `ARM\x64` magic at 0x38.
pub fn arm64_image() -> Vec<u8> {
    let mut image = vec![0u8; 4096];
    image[0x38..0x3C].copy_from_slice(b"ARM\x64");
    image
}
