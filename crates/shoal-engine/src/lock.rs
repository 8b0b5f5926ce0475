//! A process-shared robust mutex: the kernel hands it to the next locker, with a warning,
//! when its holder dies while holding it.
//!
//! This wraps glibc's `PTHREAD_MUTEX_ROBUST` + `PTHREAD_PROCESS_SHARED` mutex. A plain
//! spinlock or futex lock in shared memory would stay locked forever after a SIGKILL; a
//! robust one is released by the kernel's robust-list walk at thread death, and the next
//! [`RobustMutex::lock`] reports [`Acquired::OwnerDied`] so the caller can repair the state
//! the dead holder left half-written.

use std::cell::UnsafeCell;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::wait::{Interrupt, SLICE};

/// The mutex itself, to be placed in shared memory and initialised once by its creator.
#[repr(C)]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a pthread mutex is made to be locked from many threads (and processes) at once;
// all access goes through the pthread functions.
unsafe impl Sync for RobustMutex {}
// SAFETY: as above; the mutex holds no thread-local state.
unsafe impl Send for RobustMutex {}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The previous holder released it normally.
    Clean,
    /// The previous holder died holding it: repair the protected state before relying on it.
    OwnerDied,
}

/// A held lock; unlocks on drop (marking the mutex consistent first if its owner had died).
#[must_use = "the lock is released when the guard drops"]
pub struct Guard<'a> {
    mutex: &'a RobustMutex,
    how: Acquired,
}

impl Guard<'_> {
    /// Whether the previous holder died while holding the lock.
    pub fn owner_died(&self) -> bool {
        self.how == Acquired::OwnerDied
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let raw = self.mutex.raw.get();
        // SAFETY: we hold the lock. `consistent` is only legal (and only needed) after
        // EOWNERDEAD; without it the unlock would make the mutex unusable for everyone.
        unsafe {
            if self.how == Acquired::OwnerDied {
                libc::pthread_mutex_consistent(raw);
            }
            libc::pthread_mutex_unlock(raw);
        }
    }
}

impl RobustMutex {
    /// Initialises the mutex at `this`.
    ///
    /// # Safety
    /// `this` must point to writable memory for a `RobustMutex` that no process uses yet.
    pub unsafe fn init(this: *mut RobustMutex) -> Result<()> {
        // SAFETY: attr is plain data initialised by pthread_mutexattr_init before any use;
        // `this` is valid and unused per the caller's contract.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            if libc::pthread_mutexattr_init(&mut attr) != 0 {
                return Err(Error::last_os("pthread_mutexattr_init"));
            }
            let ok = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED)
                == 0
                && libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST) == 0
                && libc::pthread_mutex_init((*this).raw.get(), &attr) == 0;
            libc::pthread_mutexattr_destroy(&mut attr);
            if ok {
                Ok(())
            } else {
                Err(Error::Invalid(
                    "this system has no robust process-shared mutexes".into(),
                ))
            }
        }
    }

    /// Takes the lock without waiting, or returns `None` if somebody alive holds it.
    pub fn try_lock(&self) -> Result<Option<Guard<'_>>> {
        // SAFETY: the mutex was initialised by its creator and lives as long as `self`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        self.outcome(rc)
    }

    /// Takes the lock, waiting in slices until `deadline` (`Ok(None)` when it passes) and
    /// asking `interrupt` between slices.
    pub fn lock(
        &self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<Guard<'_>>> {
        if let Some(guard) = self.try_lock()? {
            return Ok(Some(guard));
        }
        loop {
            let slice = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    (d - now).min(SLICE)
                }
                None => SLICE,
            };
            let abs = realtime_after(slice);
            // SAFETY: as in try_lock; `abs` is a valid timespec on our stack.
            let rc = unsafe { libc::pthread_mutex_timedlock(self.raw.get(), &abs) };
            if rc != libc::ETIMEDOUT {
                return self.outcome(rc);
            }
            if interrupt.interrupted() {
                return Err(Error::Interrupted);
            }
        }
    }

    /// Turns a pthread return code into a guard, or `None` when a live holder has it.
    fn outcome(&self, rc: libc::c_int) -> Result<Option<Guard<'_>>> {
        let how = match rc {
            0 => Acquired::Clean,
            libc::EOWNERDEAD => Acquired::OwnerDied,
            libc::EBUSY => return Ok(None),
            other => {
                return Err(Error::Os {
                    what: "pthread_mutex_lock",
                    source: std::io::Error::from_raw_os_error(other),
                })
            }
        };
        Ok(Some(Guard { mutex: self, how }))
    }
}

/// CLOCK_REALTIME now plus `after`, the clock pthread_mutex_timedlock measures against.
fn realtime_after(after: Duration) -> libc::timespec {
    // SAFETY: clock_gettime fills the timespec we pass.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let nanos = i64::from(now.tv_nsec as i32) + i64::from(after.subsec_nanos());
    libc::timespec {
        tv_sec: now.tv_sec
            + libc::time_t::try_from(after.as_secs()).unwrap_or(0)
            + libc::time_t::from(nanos >= 1_000_000_000),
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::NoInterrupt;

    #[test]
    fn a_lock_held_by_a_dead_thread_is_recovered() -> Result<()> {
        let m = Box::new(RobustMutex {
            raw: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        });
        let ptr = Box::into_raw(m);
        // SAFETY: fresh, unshared allocation.
        unsafe { RobustMutex::init(ptr)? };
        // SAFETY: the box lives until the end of this test.
        let m: &'static RobustMutex = unsafe { &*ptr };
        std::thread::spawn(move || std::mem::forget(m.try_lock()))
            .join()
            .map_err(|_| Error::Invalid("thread panicked".into()))?;
        let guard = m.lock(None, &mut NoInterrupt)?.ok_or(Error::Empty)?;
        assert!(guard.owner_died());
        drop(guard);
        let again = m.try_lock()?.ok_or(Error::Empty)?;
        assert!(!again.owner_died());
        Ok(())
    }
}
