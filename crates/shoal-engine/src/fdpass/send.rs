//! Sending: one `sendmsg` of the payload with the descriptors as `SCM_RIGHTS`, waiting in
//! bounded slices while the peer's queue is full.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use super::{timed_out, MAX_FDS};
use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::{Interrupt, NoInterrupt};

/// Sends `payload` (at least one byte) and `fds` as one message on `sock`.
///
/// Waits only while the peer's receive queue is full, with no deadline; see
/// [`send_fds_until`] to bound that. The descriptors stay open here: the receiver gets new
/// descriptors for the same open files.
pub fn send_fds(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    send_fds_until(sock, payload, fds, None, &mut NoInterrupt)
}

/// Like [`send_fds`], but gives up when `deadline` passes while the peer's queue is full
/// (an `Os` error with `ETIMEDOUT`) or when `interrupt` fires (`Error::Interrupted`).
pub fn send_fds_until(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
    interrupt: &mut dyn Interrupt,
) -> Result<()> {
    if payload.is_empty() {
        return Err(Error::Invalid(
            "a message needs at least one payload byte: an empty one reads as a closed socket"
                .into(),
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(Error::Invalid(format!(
            "a message carries at most {MAX_FDS} descriptors, not {}",
            fds.len()
        )));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let data_len = mem::size_of_val(raw.as_slice());
    // `data_len` is at most 253 * 4, so these conversions cannot fail.
    let data_len_u32 = u32::try_from(data_len).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len_u32) } as usize;
    // u64 elements keep the buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(mem::size_of::<u64>())];

    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `control`, which has room for one header and `data_len`
        // bytes (CMSG_SPACE); CMSG_FIRSTHDR therefore returns a valid, aligned header, and
        // CMSG_DATA points inside the buffer with room for `data_len` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len_u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                data_len,
            );
        }
    }

    loop {
        // MSG_DONTWAIT: we wait in our own bounded slices, whatever the socket's mode.
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE.
        // SAFETY: `msg` and everything it points to (iov, payload, control) live across the
        // call; the kernel only reads them.
        let n = unsafe {
            libc::sendmsg(
                sock.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            // A sequenced-packet socket sends the whole message or nothing.
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                // The peer's queue is full: wait for room (a hang-up also wakes us, and the
                // next sendmsg then reports it).
                if wait_fd(sock, libc::POLLOUT, deadline, interrupt)?.is_none() {
                    return Err(timed_out("send_fds"));
                }
            }
            _ => {
                return Err(Error::Os {
                    what: "send_fds",
                    source: err,
                })
            }
        }
    }
}
