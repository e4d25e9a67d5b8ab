//! Durations and sizes as people type and read them: `30d`, `1d12h`,
//! `10G`, `1.5GiB`, `500MB`.
//!
//! Hand-written on purpose, after weighing the usual crates: `humantime`
//! refuses fractions (`1.5h`, and the bare `-w 0.5` that flock(1)
//! scripts pass), and `bytesize` reads `10K` as 10,000 bytes where `du -h`
//! and this command mean 10,240. What is here is the parsing those two
//! would have needed wrapping for anyway, with errors that say what is
//! accepted.

use std::time::Duration;

/// Parse a duration: one or more `<number><unit>` parts, unit one of `s`,
/// `m`, `h`, `d`, `w` (a bare number is seconds). Fractions are allowed.
///
/// # Errors
/// A sentence saying what is wrong and what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: use a number with a unit, such as 90s, 45m, 12h, 30d, 2w or 1d12h"
        )
    };
    let text_trimmed = text.trim();
    if text_trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text_trimmed.parse::<f64>() {
        return seconds(secs).ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = text_trimmed;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(split);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = next;
    }
    seconds(total).ok_or_else(bad)
}

/// Parse a wait, as every `-w`/`--wait` of the command takes it: a number
/// of seconds (fractions allowed, `0` for not at all) or a duration with
/// units as [`parse_duration`] reads it. Negative, infinite, NaN and
/// unrepresentable values are refused, never turned into a wait of their
/// own.
///
/// # Errors
/// A sentence quoting the text and saying what is accepted.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|_| {
        format!(
            "invalid wait {text:?}: give a number of seconds, 0 or more (fractions allowed), \
             or a duration such as 90s or 5m"
        )
    })
}

/// Parse the interval of a `--watch`: a duration as [`parse_duration`]
/// reads it (`2s`, `500ms`, a bare number of seconds), never zero.
///
/// # Errors
/// A sentence quoting the text and saying what is accepted.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(interval) if interval.is_zero() => {
            Err(format!("invalid interval {text:?}: it must be more than zero, such as 1s or 500ms"))
        }
        Ok(interval) => Ok(interval),
        Err(_) => Err(format!("invalid interval {text:?}: give a duration such as 2s or 500ms, or seconds")),
    }
}

fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// Parse a size in bytes: a number with an optional unit. `K`, `M`, `G`,
/// `T` and `KiB`…`TiB` are powers of 1024 (as `du -h` prints them); `KB`…
/// `TB` are powers of 1000; `B` or nothing is bytes. Case-insensitive.
///
/// # Errors
/// A sentence saying what is wrong and what is accepted.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {text:?}: use a number with an optional unit, such as 500M, 10G, 1.5GiB or 2TB")
    };
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = (value * scale).round();
    // 2^64 is exactly representable; anything at or above it overflows.
    if !bytes.is_finite() || !(0.0..18_446_744_073_709_551_616.0).contains(&bytes) {
        return Err(bad());
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// A size for people: `512 B`, `1.5 KiB`, `23.4 MiB`, `2.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago, coarsely: `just now`, `42s ago`, `5m ago`, `3h ago`,
/// `12d ago`.
pub fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0 => "just now".to_owned(),
        1..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45m"), Ok(Duration::from_secs(45 * 60)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "d", "5x", "-1d", "1d-2h", "1e400", "h5", "5 d"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("30d"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_know_binary_and_decimal_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("10K"), Ok(10 * 1024));
        assert_eq!(parse_size("10k"), Ok(10 * 1024));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
        assert_eq!(parse_size("3 GB"), Ok(3_000_000_000));
        for bad in ["", "G", "-1G", "10X", "1e30T", "10 G B"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains("10G"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(256 << 20), "256.0 MiB");
        assert_eq!(format_size(u64::MAX), "16384.0 PiB");
        assert_eq!(format_age(Duration::ZERO), "just now");
        assert_eq!(format_age(Duration::from_secs(59)), "59s ago");
        assert_eq!(format_age(Duration::from_secs(3599)), "59m ago");
        assert_eq!(format_age(Duration::from_secs(86_399)), "23h ago");
        assert_eq!(format_age(Duration::from_secs(86_400 * 12)), "12d ago");
    }

    #[test]
    fn every_wait_is_parsed_one_way() {
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        for bad in ["0", "0s", "0ms", "-1", "soon"] {
            assert!(parse_interval(bad).expect_err(bad).contains(&format!("{bad:?}")));
        }
        assert_eq!(parse_wait("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_wait("2m"), Ok(Duration::from_secs(120)));
        for bad in ["1e400", "inf", "nan", "NaN", "-1", "", "soon", "1e30"] {
            let err = parse_wait(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
