//! Waiting for a lock without polling on a fixed period and without signals.
//!
//! A waiter retries a non-blocking lock whenever something may have freed
//! it. Two things wake it:
//!
//! - An inotify watch on the very inode it opened (through
//!   `/proc/self/fd/N`, so a file swapped in under the same name is not the
//!   one watched) for `IN_CLOSE_WRITE | IN_CLOSE_NOWRITE`: a holder that
//!   closes its descriptor, exits or is killed releases its lock and closes
//!   the file in one step, and the waiter retries within microseconds. The
//!   watch also reports the file being deleted, renamed or unlinked, which
//!   sends the waiter back to reopen the path.
//! - A capped exponential backoff (1, 2, 4, 8, then every 10 ms): an
//!   explicit unlock without a close (`flock -u`, `F_UNLCK`) raises no
//!   inotify event, so it is noticed on the next retry, within 10 ms.
//!
//! A blocking `flock` on a helper thread would wake at once in every case,
//! but cannot be cancelled or timed out without a signal handler, which a
//! library must not install behind its caller's back.
//!
//! The wait is bounded by a deadline and by a [`CancelToken`]; both are
//! checked by the same `poll`, so cancelling wakes the waiter at once.
//! Waiters are not queued: when several wait, whichever retries first wins.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify;
use rustix::io::Errno;

/// Cancels waits from another thread (or a signal handler of the caller's
/// own: [`CancelToken::cancel`] only writes to an eventfd).
///
/// Clones share the same state; cancelling any clone cancels every wait
/// that uses one of them, now or later.
#[derive(Debug, Clone)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug)]
struct CancelInner {
    eventfd: OwnedFd,
    cancelled: AtomicBool,
}

impl CancelToken {
    /// A token that is not cancelled.
    ///
    /// # Errors
    /// If an eventfd cannot be created (out of file descriptors).
    pub fn new() -> std::io::Result<Self> {
        let eventfd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(CancelToken { inner: Arc::new(CancelInner { eventfd, cancelled: AtomicBool::new(false) }) })
    }

    /// Cancel every wait using this token. Async-signal-safe: one atomic
    /// store and one `write(2)`.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        // The counter only needs to be non-zero; EAGAIN means it already is.
        let _ = rustix::io::write(&self.inner.eventfd, &1u64.to_ne_bytes());
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.eventfd.as_fd()
    }
}

/// The longest a waiter sleeps between retries when no event arrives.
pub(crate) const MAX_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// What ended one sleep of a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Time to retry (an event, or the backoff ran out).
    Retry,
    /// The file was deleted or renamed: reopen the path.
    Replaced,
    /// The deadline passed.
    Deadline,
    /// The token was cancelled.
    Cancelled,
}

/// The state of one wait on one open lock file.
pub(crate) struct Waiter<'a> {
    inotify: Option<OwnedFd>,
    cancel: Option<&'a CancelToken>,
    deadline: Option<Instant>,
    interval: Duration,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(deadline: Option<Instant>, cancel: Option<&'a CancelToken>) -> Self {
        Waiter { inotify: None, cancel, deadline, interval: Duration::from_millis(1) }
    }

    /// Start watching `file`; call before the retry that precedes
    /// [`Waiter::sleep`], so a release in between is not missed. Failure
    /// (no /proc, inotify limits) leaves only the backoff.
    pub(crate) fn watch(&mut self, file: BorrowedFd<'_>) {
        self.inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .and_then(|fd| {
                let events = inotify::WatchFlags::CLOSE_WRITE
                    | inotify::WatchFlags::CLOSE_NOWRITE
                    | inotify::WatchFlags::DELETE_SELF
                    | inotify::WatchFlags::MOVE_SELF
                    | inotify::WatchFlags::ATTRIB;
                inotify::add_watch(&fd, format!("/proc/self/fd/{}", file.as_raw_fd()), events)?;
                Ok(fd)
            })
            .map_err(|e| tracing::debug!(error = %e, "inotify unavailable; waiting by backoff only"))
            .ok();
        self.interval = Duration::from_millis(1);
    }

    /// Sleep until something may have released the lock.
    pub(crate) fn sleep(&mut self) -> std::io::Result<Wake> {
        if self.cancel.is_some_and(CancelToken::is_cancelled) {
            return Ok(Wake::Cancelled);
        }
        let mut timeout = self.interval;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Wake::Deadline);
            }
            timeout = timeout.min(left);
        }
        self.interval = (self.interval * 2).min(MAX_RETRY_INTERVAL);

        let mut fds = Vec::with_capacity(2);
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify, PollFlags::IN));
        }
        if let Some(cancel) = self.cancel {
            fds.push(PollFd::from_borrowed_fd(cancel.as_fd(), PollFlags::IN));
        }
        let ts = rustix::time::Timespec::try_from(timeout)
            .unwrap_or(rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        drop(fds);
        if self.cancel.is_some_and(CancelToken::is_cancelled) {
            return Ok(Wake::Cancelled);
        }
        if self.drain_replaced() {
            return Ok(Wake::Replaced);
        }
        // Past the deadline too, the caller retries once more before the
        // next sleep reports it.
        Ok(Wake::Retry)
    }

    /// Read pending inotify events; whether one says the file may have left
    /// its name (deleted, renamed, or an attribute change such as the link
    /// count dropping to zero). The caller checks and watches again.
    fn drain_replaced(&mut self) -> bool {
        let Some(fd) = &self.inotify else { return false };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut replaced = false;
        while let Ok(event) = reader.next() {
            let flags = event.events();
            if flags.intersects(
                inotify::ReadFlags::DELETE_SELF | inotify::ReadFlags::MOVE_SELF | inotify::ReadFlags::IGNORED,
            ) {
                replaced = true;
            }
            if flags.contains(inotify::ReadFlags::ATTRIB) {
                replaced = true;
            }
        }
        if replaced {
            self.inotify = None;
        }
        replaced
    }
}
