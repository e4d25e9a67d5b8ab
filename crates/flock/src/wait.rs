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
//! Each thread that ever waits keeps one inotify instance for its lifetime
//! (one descriptor, close-on-exec), adding a watch per wait and removing it
//! after. Closing an inotify instance waits for an SRCU grace period in the
//! kernel, measured here at 5 to 15 ms: closing one per wait made every
//! hand-off that slow. Removing a watch does not wait.
//!
//! The wait is bounded by a deadline and by a [`CancelToken`]; both are
//! checked by the same `poll`, so cancelling wakes the waiter at once.
//! Waiters are not queued: when several wait, whichever retries first wins.

use std::cell::RefCell;
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

thread_local! {
    /// This thread's inotify instance, created on its first wait.
    static INOTIFY: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's inotify descriptor, creating it if needed.
fn with_inotify<T>(f: impl FnOnce(BorrowedFd<'_>) -> T) -> rustix::io::Result<T> {
    INOTIFY.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?);
        }
        Ok(f(slot.as_ref().expect("just created").as_fd()))
    })
}

/// The state of one wait on one open lock file.
pub(crate) struct Waiter<'a> {
    /// The watch on the locked inode in this thread's inotify instance.
    watch: Option<i32>,
    cancel: Option<&'a CancelToken>,
    deadline: Option<Instant>,
    interval: Duration,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(deadline: Option<Instant>, cancel: Option<&'a CancelToken>) -> Self {
        Waiter { watch: None, cancel, deadline, interval: Duration::from_millis(1) }
    }

    /// Start watching `file`; call before the retry that precedes
    /// [`Waiter::sleep`], so a release in between is not missed. Failure
    /// (no /proc, inotify limits) leaves only the backoff.
    pub(crate) fn watch(&mut self, file: BorrowedFd<'_>) {
        self.unwatch();
        let events = inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::CLOSE_NOWRITE
            | inotify::WatchFlags::DELETE_SELF
            | inotify::WatchFlags::MOVE_SELF
            | inotify::WatchFlags::ATTRIB;
        let added = with_inotify(|fd| {
            // Events of earlier waits on this thread are of no interest.
            drain(fd, |_, _| {});
            inotify::add_watch(fd, format!("/proc/self/fd/{}", file.as_raw_fd()), events)
        })
        .and_then(|added| added);
        self.watch =
            added.map_err(|e| log!(debug, error = %e, "inotify unavailable; waiting by backoff only")).ok();
        self.interval = Duration::from_millis(1);
    }

    fn unwatch(&mut self) {
        if let Some(wd) = self.watch.take() {
            // The watch is gone already if the inode was deleted.
            let _ = with_inotify(|fd| inotify::remove_watch(fd, wd));
        }
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
        let ts = rustix::time::Timespec::try_from(timeout)
            .unwrap_or(rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 });

        let watched = self.watch;
        let polled = with_inotify(|inotify_fd| {
            let mut fds = Vec::with_capacity(2);
            if watched.is_some() {
                fds.push(PollFd::from_borrowed_fd(inotify_fd, PollFlags::IN));
            }
            if let Some(cancel) = self.cancel {
                fds.push(PollFd::from_borrowed_fd(cancel.as_fd(), PollFlags::IN));
            }
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => Ok(()),
                Err(e) => Err(e),
            }
        });
        polled.and_then(|r| r)?;
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

    /// Read pending inotify events; whether one for our watch says the file
    /// may have left its name (deleted, renamed, or an attribute change
    /// such as the link count dropping to zero). The caller checks and
    /// watches again.
    fn drain_replaced(&mut self) -> bool {
        let Some(wd) = self.watch else { return false };
        let mut replaced = false;
        let _ = with_inotify(|fd| {
            drain(fd, |event_wd, flags| {
                if event_wd == wd
                    && flags.intersects(
                        inotify::ReadFlags::DELETE_SELF
                            | inotify::ReadFlags::MOVE_SELF
                            | inotify::ReadFlags::IGNORED
                            | inotify::ReadFlags::ATTRIB,
                    )
                {
                    replaced = true;
                }
            });
        });
        replaced
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.unwatch();
    }
}

/// Read every queued event of `fd`, passing each watch and flags to `f`.
fn drain(fd: BorrowedFd<'_>, mut f: impl FnMut(i32, inotify::ReadFlags)) {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    while let Ok(event) = reader.next() {
        f(event.wd(), event.events());
    }
}
