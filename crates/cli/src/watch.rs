//! `--watch`: a view redrawn every interval until interrupted.
//!
//! On a terminal each frame replaces the last (cursor home, clear, the
//! frame); elsewhere frames follow one another, and with `--json` each is
//! one compact JSON document on its own line (NDJSON), so a consumer can
//! read them as they come. SIGINT and SIGTERM end the watch at once, also
//! in the middle of a wait (the wait is a `poll` on a pipe the signal
//! handler writes to); a reader that goes away (`| head -1`) ends it
//! quietly. Both exit 0.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags, Timespec};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::exit::{Exit, Outcome};

/// What a frame is made of.
pub(crate) enum Frame {
    /// Text for a person.
    Text(String),
    /// A JSON document: compact (one line) when watching, see [`json`].
    Json(String),
}

/// `value` as JSON: one compact line for a watch frame, else pretty.
pub(crate) fn json<T: serde::Serialize>(value: &T, watching: bool) -> Result<Frame> {
    let text = if watching { serde_json::to_string(value) } else { serde_json::to_string_pretty(value) };
    Ok(Frame::Json(text.context("cannot encode JSON")?))
}

/// Print one frame (no watch).
pub(crate) fn print(frame: Frame) -> Result<()> {
    match frame {
        Frame::Json(mut text) | Frame::Text(mut text) => {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            crate::emit(&text)
        }
    }
}

/// Draw `frame()` every `interval` until SIGINT, SIGTERM or a closed
/// stdout.
pub(crate) fn watch(interval: Duration, mut frame: impl FnMut() -> Result<Frame>) -> Outcome {
    let (wake, woken) = UnixStream::pair().context("cannot make the signal pipe")?;
    for signal in [SIGINT, SIGTERM] {
        signal_hook::low_level::pipe::register(
            signal,
            wake.try_clone().context("cannot clone the signal pipe")?,
        )
        .context("cannot catch signals")?;
    }
    let terminal = std::io::stdout().is_terminal();
    loop {
        let text = match frame()? {
            Frame::Json(mut line) => {
                line.push('\n');
                line
            }
            // Home, clear to the end, then the frame: no flicker of an
            // empty screen between two frames.
            Frame::Text(text) if terminal => format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n")),
            Frame::Text(text) => format!("{text}\n"),
        };
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Exit::SUCCESS),
            Err(e) => return Err(e).context("cannot write to stdout"),
            Ok(()) => {}
        }
        drop(stdout);
        if signalled(&woken, interval)? {
            return Ok(Exit::SUCCESS);
        }
    }
}

/// Wait `interval`; whether a signal arrived meanwhile.
fn signalled(woken: &UnixStream, interval: Duration) -> Result<bool> {
    let timeout = Timespec::try_from(interval).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
    let mut fds = [PollFd::new(woken, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        // Another signal (SIGWINCH) cut the wait short: a frame early is
        // harmless.
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)).context("cannot wait"),
    }
}
