//! Byte-level helpers shared by the parsers: numbers without going through
//! `str`, and the kernel's octal escapes.

use std::borrow::Cow;

/// Parse the decimal digits at the start of `bytes`: the value and how many
/// bytes it took, or `None` if there is no digit or the value overflows.
///
/// The kernel's numbers end at a separator whose position is different on
/// every line, so a byte-at-a-time loop mispredicts its exit on every
/// number; this reads eight bytes at a time instead (see [`digits_in`]).
#[inline(always)]
pub(crate) fn leading_dec(bytes: &[u8]) -> Option<(u64, usize)> {
    // Nearly every number in /proc fits the first eight bytes.
    if let Some(chunk) = bytes.first_chunk::<8>() {
        let chunk = u64::from_le_bytes(*chunk);
        match digits_in(chunk) {
            0 => return None,
            n @ 1..=7 => return Some((eight_digits_value(chunk, n), n)),
            _ => return leading_dec_long(bytes, eight_digits_value(chunk, 8)),
        }
    }
    leading_dec_tail(bytes, 0, 0)
}

/// [`leading_dec`] past eight digits.
#[cold]
fn leading_dec_long(bytes: &[u8], first8: u64) -> Option<(u64, usize)> {
    let mut value = first8;
    let mut used = 8;
    while let Some(chunk) = bytes.get(used..).and_then(|b| b.first_chunk::<8>()) {
        let chunk = u64::from_le_bytes(*chunk);
        let n = digits_in(chunk);
        if n == 0 {
            return Some((value, used));
        }
        value = value.checked_mul(POW10[n])?.checked_add(eight_digits_value(chunk, n))?;
        used += n;
        if n < 8 {
            return Some((value, used));
        }
    }
    leading_dec_tail(bytes, value, used)
}

/// [`leading_dec`] over the last few bytes of the input, one at a time.
fn leading_dec_tail(bytes: &[u8], mut value: u64, mut used: usize) -> Option<(u64, usize)> {
    for &b in &bytes[used..] {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
        used += 1;
    }
    (used > 0).then_some((value, used))
}

const POW10: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
const ONES: u64 = 0x0101_0101_0101_0101;

/// How many of the eight bytes of `chunk` (first byte lowest) are ASCII
/// digits before the first non-digit.
#[inline(always)]
fn digits_in(chunk: u64) -> usize {
    // A byte is a digit when its high nibble is 3 both before and after
    // adding 6 (0x3a..0x3f overflow into 0x4_). A carry out of a non-digit
    // byte can only disturb later bytes, past the first non-digit.
    let high = |x: u64| (x & (ONES * 0xf0)) ^ (ONES * 0x30);
    let not_digit = high(chunk) | high(chunk.wrapping_add(ONES * 0x06));
    (not_digit.trailing_zeros() / 8) as usize
}

/// The value of the first `n` (1..=8) digits of `chunk`.
#[inline(always)]
fn eight_digits_value(chunk: u64, n: usize) -> u64 {
    // Move the n digits to the top bytes; the zero bytes below read as
    // leading zeros. Then combine pairs, quads and the two halves with
    // three multiplications.
    let digits = chunk.wrapping_sub(ONES * 0x30) << (8 * (8 - n));
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    let mask = 0x0000_00ff_0000_00ff;
    let quads = (pairs & mask).wrapping_mul(100 + (1_000_000 << 32));
    let halves = ((pairs >> 16) & mask).wrapping_mul(1 + (10_000 << 32));
    quads.wrapping_add(halves) >> 32
}

/// Parse an unsigned decimal number that is all of `bytes`; `None` on
/// empty input, a non-digit or overflow.
pub(crate) fn dec_u64(bytes: &[u8]) -> Option<u64> {
    leading_dec(bytes).filter(|&(_, len)| len == bytes.len()).map(|(value, _)| value)
}

pub(crate) fn dec_u32(bytes: &[u8]) -> Option<u32> {
    dec_u64(bytes).and_then(|v| u32::try_from(v).ok())
}

/// Parse lowercase or uppercase hexadecimal without a `0x` prefix, at most
/// eight digits, that is all of `bytes`.
pub(crate) fn hex_u32(bytes: &[u8]) -> Option<u32> {
    leading_hex(bytes).filter(|&(_, len)| len == bytes.len()).map(|(value, _)| value)
}

/// Parse the hex digits (at most eight) at the start of `bytes`: the value
/// and how many bytes it took.
#[inline(always)]
pub(crate) fn leading_hex(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let digit = HEX[usize::from(b)];
        if digit > 15 {
            return (i > 0).then_some((value, i));
        }
        if i == 8 {
            return None;
        }
        value = (value << 4) | u32::from(digit);
    }
    (!bytes.is_empty()).then_some((value, bytes.len()))
}

/// Hex digit values by byte; 0xff for non-digits.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

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
    if memchr::memchr(b'\\', bytes).is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    unescape_into(bytes, &mut out);
    Cow::Owned(out)
}

/// [`unescape`] appending to `out`, for callers that pack fields together.
pub(crate) fn unescape_into(bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while let Some(at) = memchr::memchr(b'\\', rest) {
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
    }

    #[test]
    fn leading_dec_agrees_with_the_plain_loop() {
        let cases: &[&[u8]] = &[
            b"0",
            b"7 ",
            b"12345678",
            b"123456789",
            b"1234567 x",
            b"99999999:",
            b"18446744073709551615 EOF",
            b"18446744073709551616",
            b"00000000000000000000042",
            b"x1",
            b"",
            b"10010710 0 EOF",
            b"4294967296:",
        ];
        for &case in cases {
            let plain = {
                let n = case.iter().take_while(|b| b.is_ascii_digit()).count();
                case[..n]
                    .iter()
                    .try_fold(0u64, |v, &b| v.checked_mul(10)?.checked_add(u64::from(b - b'0')))
                    .filter(|_| n > 0)
                    .map(|v| (v, n))
            };
            assert_eq!(leading_dec(case), plain, "{:?}", String::from_utf8_lossy(case));
        }
        // Every prefix length and separator position.
        let digits = b"98765432109876543210";
        for len in 1..=19 {
            for sep in [b' ', b':', b'/', 0xff, b'0' - 1, b'9' + 1] {
                let mut input = digits[..len].to_vec();
                input.push(sep);
                input.extend_from_slice(b"123456789");
                let expected = std::str::from_utf8(&digits[..len]).unwrap().parse::<u64>().unwrap();
                assert_eq!(leading_dec(&input), Some((expected, len)), "{len} digits then {sep:#x}");
            }
        }
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
