//! Aligned plain-text tables that fit the terminal.
//!
//! Hand-written on purpose: `lockyard locks` prints what lslocks prints
//! (columns one space apart, no borders, the last column unpadded,
//! `--raw` with spaces escaped as `\x20`, long paths and commands cut with
//! `…`), and `comfy-table` draws borders or pads, and wraps cells onto
//! more lines where this must truncate to keep one lock per line.

use std::borrow::Cow;

/// How to print a table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Leave out the header line.
    pub noheadings: bool,
    /// One space between columns, no alignment, no truncation.
    pub raw: bool,
    /// Fit into this many columns by shortening the flexible columns
    /// (`None`: no limit, as when stdout is not a terminal).
    pub width: Option<usize>,
}

/// A column: its heading, and whether it may be shortened to fit.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The heading.
    pub name: &'static str,
    /// Whether the column may be shortened (paths, commands).
    pub flexible: bool,
}

/// `text` safe to print for a human: every character that could end a
/// line, move the cursor, change colours or reorder text is written as an
/// escape instead (`\xHH` for C0 controls and DEL, `\u{HHHH}` for C1 and
/// bidirectional-text controls). A file name holding a newline or an ESC
/// sequence thus prints as one visible row, not as forged rows or
/// terminal commands. With `space`, spaces are escaped too (`\x20`), so
/// each field of raw output stays one word, as lslocks does. Backslashes
/// are left as they are (as lslocks leaves them), so text escaped once
/// already, such as a command line, is not escaped twice; JSON output is
/// the unambiguous form.
pub fn escape(text: &str, space: bool) -> Cow<'_, str> {
    let special = |c: char| {
        c.is_control()
            || (space && c == ' ')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
    };
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if u32::from(c) < 0x80 && special(c) => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if special(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path for a human, escaped as [`escape`] does, with every byte that
/// is not UTF-8 written as `\xHH` rather than replaced by U+FFFD, so two
/// different paths never print the same.
pub fn escape_path(path: &std::path::Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(text) = path.to_str() {
        return escape(text, false);
    }
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&escape(chunk.valid(), false));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    Cow::Owned(out)
}

/// Render `rows` under `columns`; every row has one cell per column.
/// Cells are escaped ([`escape`]), so no cell can add a row or reach the
/// terminal as a command.
pub fn render<R: AsRef<[S]>, S: AsRef<str>>(columns: &[Column], rows: &[R], style: Style) -> String {
    let mut out = String::new();
    if style.raw {
        if !style.noheadings {
            out.push_str(&columns.iter().map(|c| c.name).collect::<Vec<_>>().join(" "));
            out.push('\n');
        }
        for row in rows {
            for (i, cell) in row.as_ref().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(&escape(cell.as_ref(), true));
            }
            out.push('\n');
        }
        return out;
    }
    // Cells are measured here and escaped again as they are printed:
    // cheaper than keeping 100,000 escaped cells for a 10,000-row table.
    let mut widths: Vec<usize> =
        columns.iter().map(|c| if style.noheadings { 0 } else { c.name.len() }).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(measured(cell.as_ref()).1);
        }
    }
    if let Some(limit) = style.width {
        let total = |w: &[usize]| w.iter().sum::<usize>() + w.len().saturating_sub(1);
        while total(&widths) > limit {
            let widest = (0..columns.len())
                .filter(|&i| columns[i].flexible && widths[i] > 12)
                .max_by_key(|&i| widths[i]);
            let Some(i) = widest else { break };
            let excess = total(&widths) - limit;
            widths[i] = (widths[i] - excess).max(12);
        }
    }
    out.reserve(rows.len() * (widths.iter().sum::<usize>() + columns.len()));
    let mut line = |cells: &mut dyn Iterator<Item = (Cow<'_, str>, usize)>| {
        let start = out.len();
        for (i, (cell, chars)) in cells.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let shown = fit(&cell, chars, widths[i]);
            out.push_str(&shown);
            if i + 1 < columns.len() {
                let pad = widths[i].saturating_sub(chars.min(widths[i]));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    if !style.noheadings {
        line(&mut columns.iter().map(|c| (Cow::Borrowed(c.name), c.name.len())));
    }
    for row in rows {
        line(&mut row.as_ref().iter().map(|cell| measured(cell.as_ref())));
    }
    out
}

/// `text` escaped ([`escape`]) with its width in characters. Nearly every
/// cell is printable ASCII, which one pass over the bytes confirms.
fn measured(text: &str) -> (Cow<'_, str>, usize) {
    // No early exit: the compiler vectorises the whole pass.
    if text.bytes().fold(true, |plain, b| plain & (b' '..=b'~').contains(&b)) {
        return (Cow::Borrowed(text), text.len());
    }
    let escaped = escape(text, false);
    let chars = escaped.chars().count();
    (escaped, chars)
}

/// `text`, `chars` characters long, shortened to `width` characters with
/// a final `…`.
fn fit(text: &str, chars: usize, width: usize) -> Cow<'_, str> {
    if chars <= width {
        return Cow::Borrowed(text);
    }
    let mut short: String = text.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    Cow::Owned(short)
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    const COLUMNS: [Column; 3] = [
        Column { name: "PID", flexible: false },
        Column { name: "COMMAND", flexible: true },
        Column { name: "PATH", flexible: true },
    ];

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["1".into(), "flock -x /tmp/a sleep 60".into(), "/tmp/a".into()],
            vec!["12345".into(), "python3".into(), "/var/lib/some/very/long/path/to/a.lock".into()],
        ]
    }

    #[test]
    fn columns_are_aligned() {
        let text = render(&COLUMNS, &rows(), Style::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PID   COMMAND                  PATH");
        assert_eq!(lines[1], "1     flock -x /tmp/a sleep 60 /tmp/a");
        assert_eq!(lines[2], "12345 python3                  /var/lib/some/very/long/path/to/a.lock");
    }

    #[test]
    fn flexible_columns_shrink_to_fit() {
        let text = render(&COLUMNS, &rows(), Style { width: Some(50), ..Style::default() });
        assert!(text.lines().all(|l| l.chars().count() <= 50), "{text}");
        assert!(text.contains('…'));
    }

    #[test]
    fn raw_and_noheadings() {
        let text = render(&COLUMNS, &rows(), Style { raw: true, noheadings: true, width: Some(10) });
        assert_eq!(text.lines().next(), Some("1 flock\\x20-x\\x20/tmp/a\\x20sleep\\x2060 /tmp/a"));
    }

    #[test]
    fn a_newline_or_escape_in_a_cell_cannot_forge_a_row_or_reach_the_terminal() {
        let rows = vec![vec!["1", "sh", "/tmp/x\n2 root /etc/shadow\u{1b}[2J"]];
        for style in [Style::default(), Style { raw: true, ..Style::default() }] {
            let text = render(&COLUMNS, &rows, style);
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(!text.contains('\u{1b}'), "{text}");
            assert!(text.contains("/tmp/x\\x0a2"), "{text}");
            assert!(text.contains("\\x1b[2J"), "{text}");
        }
        assert_eq!(escape("a\u{202e}b\u{85}", false), "a\\u{202e}b\\u{0085}");
        assert_eq!(escape("plain path", false), "plain path");
        let raw = std::ffi::OsStr::from_bytes(b"/tmp/\xff\x1b");
        assert_eq!(escape_path(std::path::Path::new(raw)), "/tmp/\\xff\\x1b");
    }
}
