//! How a command ends: every command returns an [`Outcome`], and
//! [`finish`] is the one place that turns it into an exit status, printing
//! an error as one sentence and a hint.
//!
//! The statuses (docs/cli.md): 0 success or "yes"; 1 "no" (not held,
//! unclaimed, missing, declined) or busy (another process holds what was
//! asked for, now or past `--wait`); 2 an error. `run`, `pidfile claim`,
//! `reserve` and `cache ensure` pass their command's status through, and
//! `run` keeps flock(1)'s own codes.

use std::process::ExitCode;

use lockyard::cache::CacheError;
use lockyard::flock::LockError;
use lockyard::kvm::ResolveError;
use lockyard::topo::ReserveError;

/// An exit status a command chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit(u8);

impl Exit {
    /// Done, or the answer is yes.
    pub(crate) const SUCCESS: Exit = Exit(0);
    /// The answer is no.
    pub(crate) const NO: Exit = Exit(1);
    /// Something failed and was reported as it happened (`who` reports
    /// each path it cannot examine and goes on with the others).
    pub(crate) const FAILED: Exit = Exit(2);

    /// A status of its own: a command's, passed through, or flock(1)'s.
    pub(crate) const fn status(code: u8) -> Exit {
        Exit(code)
    }

    /// The number.
    pub(crate) const fn code(self) -> u8 {
        self.0
    }

    /// 0 for `true`, 1 for `false`.
    pub(crate) const fn answer(yes: bool) -> Exit {
        if yes { Exit::SUCCESS } else { Exit::NO }
    }
}

/// What every command returns: the status it chose, or the error that
/// stopped it.
pub(crate) type Outcome = anyhow::Result<Exit>;

/// The exit status of `outcome`; an error is printed first, as
/// `lockyard: <sentence>` and, where there is one, `hint: <hint>`.
pub(crate) fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(Exit(code)) => ExitCode::from(code),
        Err(err) => {
            eprintln!("lockyard: {}", sentence(&err));
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(if is_busy(&err) { 1 } else { 2 })
        }
    }
}

/// Whether the error is another process holding what was asked for, as
/// every library's `is_busy` says it.
fn is_busy(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<LockError>().is_some_and(LockError::is_busy)
            || e.downcast_ref::<CacheError>().is_some_and(CacheError::is_busy)
            || e.downcast_ref::<ReserveError>().is_some_and(ReserveError::is_busy)
            || e.downcast_ref::<ResolveError>().is_some_and(ResolveError::is_busy)
    })
}

/// The error and its causes as one line, each cause once: errors that
/// already print their source (`path: op: cause`) are not followed by the
/// cause again. Escaped for the terminal.
pub(crate) fn sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    crate::escape(&text).into_owned()
}

fn hint(err: &anyhow::Error) -> Option<&'static str> {
    // The remote's own errors carry I/O kinds about objects, not files.
    let remote = err.chain().any(|e| matches!(e.downcast_ref(), Some(CacheError::Remote { .. })));
    if is_busy(err) || remote {
        return None;
    }
    let io = err.chain().find_map(|e| e.downcast_ref::<std::io::Error>())?;
    match io.kind() {
        std::io::ErrorKind::NotFound => Some("check the path; lockyard only inspects existing files"),
        std::io::ErrorKind::PermissionDenied => Some("run as the file's owner, or as root to see everything"),
        _ => None,
    }
}
