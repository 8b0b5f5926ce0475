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

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::{Interrupt, NoInterrupt};

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

fn timed_out(what: &'static str) -> Error {
    Error::Os {
        what,
        source: io::Error::from_raw_os_error(libc::ETIMEDOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seg::Segment;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn os_errno(r: &Result<impl Sized>) -> Option<i32> {
        match r {
            Err(Error::Os { source, .. }) => source.raw_os_error(),
            _ => None,
        }
    }

    #[test]
    fn a_segment_round_trips_and_shows_the_same_memory() -> Result<()> {
        let (a, b) = socketpair()?;
        let seg = Segment::create("t", 4096)?;
        let (pipe_r, pipe_w) = std::io::pipe().map_err(|source| Error::Os {
            what: "pipe",
            source,
        })?;
        send_fds(a.as_fd(), b"two", &[seg.fd(), pipe_w.as_fd()])?;
        let (payload, mut fds) = recv_fds(b.as_fd(), 16, 4, None, &mut NoInterrupt)?;
        assert_eq!(payload, b"two");
        assert_eq!(fds.len(), 2);
        drop(pipe_r);
        for fd in &fds {
            // SAFETY: plain fcntl on a descriptor we own.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        let again = Segment::from_fd(fds.remove(0))?;
        // SAFETY: both mappings are 4096 bytes long and this test is their only user.
        unsafe {
            seg.base().add(100).write(7);
            assert_eq!(again.base().add(100).read(), 7);
            again.base().add(200).write(9);
            assert_eq!(seg.base().add(200).read(), 9);
        }
        Ok(())
    }

    #[test]
    fn messages_keep_their_boundaries_and_may_carry_no_fds() -> Result<()> {
        let (a, b) = socketpair()?;
        send_fds(a.as_fd(), b"first", &[])?;
        send_fds(a.as_fd(), b"second", &[])?;
        let (one, fds) = recv_fds(b.as_fd(), 64, 0, None, &mut NoInterrupt)?;
        assert_eq!((one.as_slice(), fds.len()), (&b"first"[..], 0));
        let (two, _) = recv_fds(b.as_fd(), 64, 2, None, &mut NoInterrupt)?;
        assert_eq!(two, b"second");
        Ok(())
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_hang() -> Result<()> {
        let (a, b) = socketpair()?;
        send_fds(a.as_fd(), b"last words", &[])?;
        drop(a);
        // What was sent before closing is still delivered, then the close is reported.
        let (last, _) = recv_fds(b.as_fd(), 64, 0, None, &mut NoInterrupt)?;
        assert_eq!(last, b"last words");
        let started = Instant::now();
        let r = recv_fds(b.as_fd(), 64, 0, None, &mut NoInterrupt);
        assert_eq!(os_errno(&r), Some(libc::ECONNRESET));
        assert!(started.elapsed() < Duration::from_secs(1));
        let r = send_fds(b.as_fd(), b"anyone?", &[]);
        assert_eq!(os_errno(&r), Some(libc::EPIPE));
        Ok(())
    }

    #[test]
    fn deadline_and_interrupt_end_a_receive() -> Result<()> {
        let (_a, b) = socketpair()?;
        let soon = Some(Instant::now() + Duration::from_millis(30));
        let r = recv_fds(b.as_fd(), 64, 0, soon, &mut NoInterrupt);
        assert_eq!(os_errno(&r), Some(libc::ETIMEDOUT));
        let mut calls = 0;
        let mut stop = || {
            calls += 1;
            calls > 2
        };
        let r = recv_fds(b.as_fd(), 64, 0, None, &mut stop);
        assert!(matches!(r, Err(Error::Interrupted)));
        Ok(())
    }

    #[test]
    fn a_full_queue_times_out_a_bounded_send() -> Result<()> {
        let (a, _b) = socketpair()?;
        let big = vec![1u8; 8192];
        let soon = Some(Instant::now() + Duration::from_millis(30));
        let mut sent = 0;
        let r = loop {
            match send_fds_until(a.as_fd(), &big, &[], soon, &mut NoInterrupt) {
                Ok(()) => sent += 1,
                Err(e) => break Err::<(), _>(e),
            }
            assert!(sent < 1_000_000, "the socket never filled up");
        };
        assert_eq!(os_errno(&r), Some(libc::ETIMEDOUT));
        Ok(())
    }

    #[test]
    fn oversized_messages_and_bad_arguments_are_refused() -> Result<()> {
        let (a, b) = socketpair()?;
        assert!(matches!(
            send_fds(a.as_fd(), b"", &[]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            recv_fds(b.as_fd(), 0, 0, None, &mut NoInterrupt),
            Err(Error::Invalid(_))
        ));
        send_fds(a.as_fd(), b"far too long", &[])?;
        assert!(matches!(
            recv_fds(b.as_fd(), 4, 0, None, &mut NoInterrupt),
            Err(Error::Corrupt(_))
        ));
        let seg = Segment::create("t", 4096)?;
        send_fds(a.as_fd(), b"x", &[seg.fd(), seg.fd()])?;
        assert!(matches!(
            recv_fds(b.as_fd(), 4, 1, None, &mut NoInterrupt),
            Err(Error::Corrupt(_))
        ));
        Ok(())
    }
}
