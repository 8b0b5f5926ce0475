//! Waiting for a descriptor to become ready, in bounded slices.
//!
//! [`wait_fd`] is `poll(2)` on one descriptor, cut into slices of at most [`SLICE`] so that
//! the caller's [`Interrupt`] is asked regularly, as every other wait in the engine does.
//! Process exits (pidfds) and socket traffic both come through here.
//!
//! ```
//! use shoal_engine::poll::wait_fd;
//! use shoal_engine::wait::NoInterrupt;
//! use std::os::fd::AsFd;
//! use std::time::{Duration, Instant};
//! let (a, _b) = shoal_engine::fdpass::socketpair().unwrap();
//! // Nothing was sent, so `a` is not readable before the deadline.
//! let soon = Some(Instant::now() + Duration::from_millis(10));
//! assert_eq!(wait_fd(a.as_fd(), libc::POLLIN, soon, &mut NoInterrupt).unwrap(), None);
//! ```

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::wait::{Interrupt, SLICE};

/// Waits until `fd` reports one of `events` (or an error or hang-up, which `poll` always
/// reports), the deadline passes, or `interrupt` fires.
///
/// Returns `Ok(Some(revents))` when the descriptor is ready, `Ok(None)` when the deadline
/// passed first and `Err(Error::Interrupted)` when the interrupt fired. A deadline that has
/// already passed still looks once, so `Some(Instant::now())` is a non-blocking check.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    deadline: Option<Instant>,
    interrupt: &mut dyn Interrupt,
) -> Result<Option<libc::c_short>> {
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        // Round up: a timeout rounded down to 0 ms would spin until the deadline.
        let ms = libc::c_int::try_from(slice.as_micros().div_ceil(1000)).unwrap_or(0);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call; `fd` is borrowed, so open.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(Error::Os {
                    what: "poll",
                    source: std::io::Error::from_raw_os_error(libc::EBADF),
                });
            }
            return Ok(Some(pfd.revents));
        }
        if rc < 0 {
            let err = Error::last_os("poll");
            let eintr = matches!(&err, Error::Os { source, .. }
                if source.raw_os_error() == Some(libc::EINTR));
            if !eintr {
                return Err(err);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        if interrupt.interrupted() {
            return Err(Error::Interrupted);
        }
    }
}
