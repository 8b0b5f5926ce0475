//! The cell's own tests: the tries against the waiting calls, limits, and the owner
//! record across a dead holder and a fork.

use super::*;
use crate::wait::NoInterrupt;

#[test]
fn the_tries_never_wait_and_agree_with_the_waiting_calls() -> Result<()> {
    let cell = SyncCell::create(1, Some(1))?;
    assert_eq!(cell.try_acquire()?, Attempt::Taken(Acquired::Clean));
    assert_eq!(cell.try_acquire()?, Attempt::Empty);
    assert_eq!(cell.try_release()?, Some(Release::Done));
    assert_eq!(cell.try_release()?, Some(Release::TooMany)); // a lock holds one
    assert_eq!(cell.value(), 1);
    // Another process inside the state mutex: both tries give up at once, and the
    // waiting calls go through once it leaves.
    let held = cell.state().mutex.lock(None, &mut NoInterrupt)?;
    assert_eq!(cell.try_acquire()?, Attempt::Busy);
    assert_eq!(cell.try_release()?, None);
    assert_eq!(cell.value(), 1);
    drop(held);
    assert_eq!(
        cell.acquire(Some(Instant::now()), &mut NoInterrupt)?,
        Some(Acquired::Clean)
    );
    assert_eq!(cell.release()?, Release::Done);
    Ok(())
}

#[test]
fn a_try_never_takes_a_dead_owners_lock_over() -> Result<()> {
    let cell = SyncCell::create(0, Some(1))?;
    // A lock taken by a pid that cannot exist, never released.
    cell.state().owner.store(u32::MAX - 1, Ordering::Relaxed);
    assert_eq!(cell.try_acquire()?, Attempt::Empty);
    let waited = cell.acquire(Some(Instant::now() + SLICE * 3), &mut NoInterrupt)?;
    assert_eq!(waited, Some(Acquired::OwnerDied));
    Ok(())
}

#[test]
fn a_forked_child_records_its_own_pid() {
    let parent = me().0;
    assert_eq!(parent, std::process::id());
    // SAFETY: the child only computes its pid and start time (reading /proc, which
    // allocates: glibc's fork leaves malloc usable in the child of a threaded
    // process), then leaves with _exit, running no destructor of the parent's state.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let ok = me().0 == std::process::id() && me().0 != parent;
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert!(child > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(me().0, parent);
}

#[test]
fn limits_none_some_and_zero() -> Result<()> {
    let open = SyncCell::create(0, None)?;
    for _ in 0..3 {
        assert_eq!(open.release()?, Release::Done);
    }
    assert_eq!(open.value(), 3);
    // A bounded semaphore of zero, as multiprocessing's: nothing to give back, ever.
    let empty = SyncCell::create(0, Some(0))?;
    assert_eq!(empty.release()?, Release::TooMany);
    assert!(matches!(
        SyncCell::create(2, Some(1)),
        Err(Error::Invalid(_))
    ));
    Ok(())
}

#[test]
fn an_owner_whose_start_time_is_unknown_counts_as_alive_while_its_pid_is() -> Result<()> {
    let cell = SyncCell::create(0, Some(1))?;
    let s = cell.state();
    s.owner.store(std::process::id(), Ordering::Relaxed);
    s.owner_start.store(0, Ordering::Relaxed);
    assert!(!owner_dead(s));
    s.owner_start.store(1, Ordering::Relaxed); // not this process's start time
    assert!(owner_dead(s));
    Ok(())
}
