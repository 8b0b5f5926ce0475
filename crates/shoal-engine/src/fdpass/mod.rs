//! Passing file descriptors and a small payload between processes over a Unix socket.
//!
//! The zygote hands workers their segments, and hands the pool back the workers' pidfds, as
//! `SCM_RIGHTS` messages on a `SOCK_SEQPACKET` socket: each [`send_fds`] is exactly one
//! [`recv_fds`] on the other side, and the descriptors arrive with the bytes they belong to.
//!
//! Every payload has at least one byte, because a zero-length read is how a sequenced-packet
//! socket reports that the peer has closed its end; a closed peer is an error on both sides
//! (`EPIPE` when sending, `ECONNRESET` when receiving), never a hang. Received descriptors
//! are close-on-exec, so they do not leak into programs the receiver starts later.
//!
//! ```
//! use shoal_engine::fdpass::{recv_fds, send_fds, socketpair};
//! use shoal_engine::seg::Segment;
//! use shoal_engine::wait::NoInterrupt;
//! use std::os::fd::AsFd;
//! let (a, b) = socketpair().unwrap();
//! let seg = Segment::create("doc", 4096).unwrap();
//! send_fds(a.as_fd(), b"segment", &[seg.fd()]).unwrap();
//! let (payload, mut fds) = recv_fds(b.as_fd(), 64, 4, None, &mut NoInterrupt).unwrap();
//! assert_eq!(payload, b"segment");
//! let again = Segment::from_fd(fds.remove(0)).unwrap();
//! assert_eq!(again.len(), 4096);
//! ```

mod recv;
mod send;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

pub use recv::recv_fds;
pub use send::{send_fds, send_fds_until};

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// A connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets, both close-on-exec.
///
/// Message boundaries are kept, and a closed end is seen by the other at once.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: `fds` is a valid out-array of two ints for the duration of the call.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::last_os("socketpair"));
    }
    // SAFETY: the kernel just gave us these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The error of a send or a receive whose deadline passed first (`ETIMEDOUT`).
fn timed_out(what: &'static str) -> Error {
    Error::Os {
        what,
        source: io::Error::from_raw_os_error(libc::ETIMEDOUT),
    }
}

#[cfg(test)]
mod tests;
