//! Receiving: one `recvmsg` of a payload and its descriptors, which are owned (and
//! close-on-exec) from the moment they arrive, so that no error path leaks them.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::{timed_out, MAX_FDS};
use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::Interrupt;

/// Receives one message of at most `max_payload` bytes and `max_fds` descriptors.
///
/// Waits until a message arrives; fails with an `Os` error carrying `ETIMEDOUT` when
/// `deadline` passes first, with `ECONNRESET` when the peer has closed its end (after any
/// messages it sent before closing were read), and with `Error::Interrupted` when
/// `interrupt` fires. A message larger than the limits is an `Error::Corrupt`: the peer is
/// not speaking our protocol; any descriptors that did arrive with it are closed.
pub fn recv_fds(
    sock: BorrowedFd<'_>,
    max_payload: usize,
    max_fds: usize,
    deadline: Option<Instant>,
    interrupt: &mut dyn Interrupt,
) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    if max_payload == 0 {
        return Err(Error::Invalid(
            "max_payload must be at least 1: every message has a payload byte".into(),
        ));
    }
    if max_fds > MAX_FDS {
        return Err(Error::Invalid(format!(
            "a message carries at most {MAX_FDS} descriptors, not {max_fds}"
        )));
    }
    let mut payload = vec![0u8; max_payload];
    let fd_bytes = u32::try_from(max_fds * mem::size_of::<RawFd>()).unwrap_or(u32::MAX);
    let space = if max_fds == 0 {
        0
    } else {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(fd_bytes) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(mem::size_of::<u64>())];

    loop {
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if space > 0 {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
        }
        // MSG_CMSG_CLOEXEC: the descriptors are close-on-exec from the moment they exist,
        // so a concurrent posix_spawn elsewhere in the process cannot inherit them.
        // SAFETY: `msg` points at `payload` and `control`, both live and writable for the
        // lengths given.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    if wait_fd(sock, libc::POLLIN, deadline, interrupt)?.is_none() {
                        return Err(timed_out("recv_fds"));
                    }
                    continue;
                }
                _ => {
                    return Err(Error::Os {
                        what: "recv_fds",
                        source: err,
                    })
                }
            }
        }
        // Take ownership of whatever arrived before anything else can fail, so that an
        // error below closes the descriptors instead of leaking them.
        // SAFETY: `msg` was filled in by the kernel and its control pointer (if any) still
        // points at `control`.
        let fds = unsafe { take_fds(&msg) };
        if n == 0 {
            return Err(Error::Os {
                what: "recv_fds",
                source: io::Error::from_raw_os_error(libc::ECONNRESET),
            });
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::Corrupt(format!(
                "a message longer than {max_payload} bytes arrived; the peer does not speak \
                 this protocol"
            )));
        }
        // The control buffer is rounded up for alignment and may hold one descriptor more
        // than asked for, so count as well as checking the kernel's truncation flag.
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
            return Err(Error::Corrupt(format!(
                "a message with more than {max_fds} descriptors arrived; the peer does not \
                 speak this protocol"
            )));
        }
        payload.truncate(n as usize);
        return Ok((payload, fds));
    }
}

/// Wraps every descriptor in the `SCM_RIGHTS` messages of `msg`.
///
/// # Safety
/// `msg` must have just been filled in by a successful `recvmsg`, with its control pointer
/// (if any) still pointing at the live buffer the kernel wrote.
unsafe fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() {
        return fds;
    }
    // SAFETY: per the contract, the control buffer holds headers written by the kernel;
    // CMSG_FIRSTHDR/NXTHDR stay within `msg_controllen` and return null at its end.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = data.offset_from(cmsg.cast::<u8>()) as usize;
                let count =
                    ((*cmsg).cmsg_len as usize).saturating_sub(header) / mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = data
                        .add(i * mem::size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    // The kernel installed this descriptor for us; nobody else owns it.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}
