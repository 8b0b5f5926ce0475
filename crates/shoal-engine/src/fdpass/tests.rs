//! Descriptors and payloads across a socket pair: boundaries, a closed peer, deadlines,
//! full queues and refused messages.

use super::*;
use crate::seg::Segment;
use crate::wait::NoInterrupt;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

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
