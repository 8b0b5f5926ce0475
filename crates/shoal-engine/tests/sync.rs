//! A lock whose holder is SIGKILLed is taken over by the next acquirer; semaphores count.

use std::time::{Duration, Instant};

use shoal_engine::lock::Acquired;
use shoal_engine::sync::{Release, SyncCell};
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Result;

#[test]
fn a_lock_held_by_a_killed_child_is_taken_over() -> Result<()> {
    let cell = SyncCell::create(1, Some(1))?;
    // SAFETY: the child only takes the lock and sleeps; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let taken = cell.acquire(None, &mut NoInterrupt);
        // SAFETY: ends the child at once, lock held.
        unsafe { libc::_exit(if matches!(taken, Ok(Some(_))) { 0 } else { 3 }) };
    }
    // Wait until the child holds it, then kill it without letting it release.
    let until = Instant::now() + Duration::from_secs(10);
    while cell.value() != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let got = cell.acquire(
        Some(Instant::now() + Duration::from_secs(10)),
        &mut NoInterrupt,
    )?;
    assert_eq!(got, Some(Acquired::OwnerDied));
    assert_eq!(cell.release()?, Release::Done);
    assert_eq!(cell.acquire(None, &mut NoInterrupt)?, Some(Acquired::Clean));
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

#[test]
fn a_bounded_semaphore_counts_and_refuses_over_release() -> Result<()> {
    let cell = SyncCell::create(2, Some(2))?;
    let now = || Some(Instant::now());
    assert!(cell.acquire(now(), &mut NoInterrupt)?.is_some());
    assert!(cell.acquire(now(), &mut NoInterrupt)?.is_some());
    assert!(cell.acquire(now(), &mut NoInterrupt)?.is_none());
    assert_eq!(cell.release()?, Release::Done);
    assert_eq!(cell.release()?, Release::Done);
    assert_eq!(cell.release()?, Release::TooMany);
    let other = SyncCell::open(cell.segment().dup_fd()?)?;
    assert_eq!(other.value(), 2);
    Ok(())
}
