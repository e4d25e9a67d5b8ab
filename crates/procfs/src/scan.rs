//! Byte-level helpers shared by the parsers: numbers without going through
//! `str`, and the kernel's octal escapes.

use std::borrow::Cow;

/// Parse an unsigned decimal number; `None` on empty input, a non-digit or
/// overflow.
pub(crate) fn dec_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

pub(crate) fn dec_u32(bytes: &[u8]) -> Option<u32> {
    dec_u64(bytes).and_then(|v| u32::try_from(v).ok())
}

/// Parse a signed decimal `i32` as printed by `%d`.
pub(crate) fn dec_i32(bytes: &[u8]) -> Option<i32> {
    match bytes.split_first() {
        Some((b'-', digits)) => {
            dec_u64(digits).and_then(|v| i64::try_from(v).ok()).and_then(|v| i32::try_from(-v).ok())
        }
        _ => dec_u32(bytes).and_then(|v| i32::try_from(v).ok()),
    }
}

/// Parse lowercase or uppercase hexadecimal without a `0x` prefix.
pub(crate) fn hex_u32(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut value: u32 = 0;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u32::from(digit);
    }
    Some(value)
}

/// Parse an octal number as printed by `%o` (fdinfo `flags`).
pub(crate) fn oct_u32(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 11 {
        return None;
    }
    let mut value: u32 = 0;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 7 {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u32::from(digit))?;
    }
    Some(value)
}

/// Decode the kernel's `\ooo` escapes (used in mountinfo for space, tab,
/// newline, backslash and, on newer kernels, `#` and `,` in option values).
///
/// A backslash not followed by exactly three octal digits naming a byte
/// (`\000`–`\377`) is kept literally: the kernel never produces one, so it
/// is safer to show what is there than to guess.
pub(crate) fn unescape(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&b'\\') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    unescape_into(bytes, &mut out);
    Cow::Owned(out)
}

/// [`unescape`] appending to `out`, for callers that pack fields together.
pub(crate) fn unescape_into(bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        out.extend_from_slice(&rest[..at]);
        match octal_byte(&rest[at + 1..]) {
            Some(byte) => {
                out.push(byte);
                rest = &rest[at + 4..];
            }
            None => {
                out.push(b'\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
}

fn octal_byte(bytes: &[u8]) -> Option<u8> {
    let [a, b, c, ..] = *bytes else { return None };
    let digit = |x: u8| (b'0'..=b'7').contains(&x).then(|| x - b'0');
    let (a, b, c) = (digit(a)?, digit(b)?, digit(c)?);
    // `\4xx` and above would not fit in a byte.
    if a > 3 {
        return None;
    }
    Some((a << 6) | (b << 3) | c)
}

/// Escape bytes the way the kernel's `mangle()` does for mountinfo, so that
/// formatting what we parsed reproduces the kernel's line.
pub(crate) fn escape_into(bytes: &[u8], special: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if special.contains(&b) || b == b'\\' {
            out.extend_from_slice(&[b'\\', b'0' + (b >> 6), b'0' + ((b >> 3) & 7), b'0' + (b & 7)]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rejects_signs_spaces_and_overflow() {
        assert_eq!(dec_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(dec_u64(b"18446744073709551616"), None);
        assert_eq!(dec_u64(b"+1"), None);
        assert_eq!(dec_u64(b""), None);
        assert_eq!(dec_i32(b"-1"), Some(-1));
        assert_eq!(dec_i32(b"-2147483648"), Some(i32::MIN));
        assert_eq!(dec_i32(b"2147483648"), None);
        assert_eq!(dec_i32(b"-"), None);
    }

    #[test]
    fn hex_and_octal() {
        assert_eq!(hex_u32(b"fe"), Some(0xfe));
        assert_eq!(hex_u32(b"FFFFFFFF"), Some(u32::MAX));
        assert_eq!(hex_u32(b"100000000"), None);
        assert_eq!(hex_u32(b"0x1"), None);
        assert_eq!(oct_u32(b"02100002"), Some(0o2100002));
        assert_eq!(oct_u32(b"8"), None);
    }

    #[test]
    fn unescape_decodes_the_four_kernel_escapes() {
        assert_eq!(&*unescape(br"/mnt/a\040b\011c\012d\134e"), b"/mnt/a b\tc\nd\\e");
    }

    #[test]
    fn unescape_keeps_malformed_escapes_literally() {
        for raw in [&br"\"[..], br"a\04", br"\400", br"\9aa", br"\x41", br"\\"] {
            assert_eq!(&*unescape(raw), raw, "{:?}", String::from_utf8_lossy(raw));
        }
        // A valid escape right after a malformed one still decodes.
        assert_eq!(&*unescape(br"\\134"), br"\\");
    }

    #[test]
    fn escape_then_unescape_round_trips() {
        let raw = b"/a b\tc\nd\\e#f";
        let mut escaped = Vec::new();
        escape_into(raw, b" \t\n#", &mut escaped);
        assert_eq!(escaped, br"/a\040b\011c\012d\134e\043f");
        assert_eq!(&*unescape(&escaped), raw);
    }
}
