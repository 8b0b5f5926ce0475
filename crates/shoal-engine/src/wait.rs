//! Wake-ups between processes: a futex word with a count of sleepers.
//!
//! A [`Doorbell`] lives in shared memory. Whoever changes shared state calls
//! [`Doorbell::ring`] afterwards; it costs one atomic add and, only when somebody announced
//! that it is sleeping, one `futex_wake` system call. A waiter spins briefly, then sleeps in
//! bounded slices, asking its [`Interrupt`] between slices so that Ctrl-C is never stuck
//! behind a wait.
//!
//! ```
//! use shoal_engine::wait::{Doorbell, NoInterrupt};
//! use std::sync::atomic::{AtomicBool, Ordering};
//! let bell = Doorbell::default();
//! let flag = AtomicBool::new(true);
//! let ready = bell.wait_until(|| flag.load(Ordering::Acquire), None, &mut NoInterrupt);
//! assert!(ready.unwrap());
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The longest a blocked call sleeps before it asks its [`Interrupt`] again.
pub const SLICE: Duration = Duration::from_millis(20);

/// How long a waiter polls before it goes to sleep in the kernel.
const SPIN: Duration = Duration::from_micros(100);

/// Asked between wait slices whether a blocked call should give up.
pub trait Interrupt {
    /// Returns true to abandon the wait (the call then fails with [`Error::Interrupted`]).
    fn interrupted(&mut self) -> bool;
}

/// An [`Interrupt`] that never fires, for callers with nothing to check.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn interrupted(&mut self) -> bool {
        false
    }
}

impl<F: FnMut() -> bool> Interrupt for F {
    fn interrupted(&mut self) -> bool {
        self()
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout`. Spurious returns are fine:
/// every caller re-checks its condition. Works across processes (not `FUTEX_PRIVATE`).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the kernel only
    // compares it and queues us. EINTR, EAGAIN and ETIMEDOUT all mean "re-check", so the
    // return value carries nothing we need.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process sleeping on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; waking has no memory effects.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// A sequence word that sleepers wait on, and the number of sleepers, side by side in
/// shared memory. All-zero bytes are a valid, idle doorbell.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Doorbell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Doorbell {
    /// Announces a change. Call it after the change is visible (after the release store).
    #[inline]
    pub fn ring(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        // SeqCst pairs with the sleeper's increment: either it sees our new `seq` and does
        // not sleep, or we see its count and wake it. No wake-up is lost.
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            futex_wake_all(&self.seq);
        }
    }

    /// How many times the doorbell has rung (wrapping). Read it before looking at the shared
    /// state, then [`wait_change`](Self::wait_change) from that value: a ring in between is
    /// never missed.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Waits until the doorbell rings after `seen` was read from [`seq`](Self::seq)
    /// (`Ok(true)`), or the deadline passes (`Ok(false)`), or `interrupt` fires.
    pub fn wait_change(
        &self,
        seen: u32,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<bool> {
        self.wait_until(|| self.seq() != seen, deadline, interrupt)
    }

    /// Waits until `ready()` is true (returns `Ok(true)`), the deadline passes (`Ok(false)`),
    /// or `interrupt` fires (`Err(Interrupted)`). `ready` is checked first, so a satisfied
    /// condition never costs a system call.
    pub fn wait_until(
        &self,
        ready: impl FnMut() -> bool,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<bool> {
        self.wait_spinning(ready, SPIN, deadline, interrupt)
    }

    /// As [`wait_change`](Self::wait_change) but sleeps at once, never spinning: for a
    /// background thread whose wake-up latency matters less than the CPU time it would
    /// take from busy threads.
    pub fn sleep_until_change(&self, seen: u32, deadline: Option<Instant>) -> bool {
        let changed = || self.seq() != seen;
        matches!(
            self.wait_spinning(changed, Duration::ZERO, deadline, &mut NoInterrupt),
            Ok(true)
        )
    }

    fn wait_spinning(
        &self,
        mut ready: impl FnMut() -> bool,
        spin: Duration,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<bool> {
        if ready() {
            return Ok(true);
        }
        if !spin.is_zero() {
            // Never past the deadline: a call that may not wait (a deadline of now) checks
            // once more and returns, it does not spin.
            let spun = Instant::now() + spin;
            let spin_until = deadline.map_or(spun, |d| d.min(spun));
            while Instant::now() < spin_until {
                std::thread::yield_now();
                if ready() {
                    return Ok(true);
                }
            }
        }
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if ready() {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return Ok(true);
            }
            let slice = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        self.sleepers.fetch_sub(1, Ordering::SeqCst);
                        return Ok(false);
                    }
                    (d - now).min(SLICE)
                }
                None => SLICE,
            };
            futex_wait(&self.seq, seen, slice);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return Ok(true);
            }
            if interrupt.interrupted() {
                return Err(Error::Interrupted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn ring_wakes_a_sleeper_in_another_thread() {
        let bell = Arc::new(Doorbell::default());
        let flag = Arc::new(AtomicBool::new(false));
        let (b, f) = (bell.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            b.wait_until(|| f.load(Ordering::Acquire), None, &mut NoInterrupt)
        });
        std::thread::sleep(Duration::from_millis(50));
        flag.store(true, Ordering::Release);
        bell.ring();
        assert!(matches!(waiter.join().ok(), Some(Ok(true))));
    }

    #[test]
    fn deadline_and_interrupt_end_the_wait() {
        let bell = Doorbell::default();
        let soon = Some(Instant::now() + Duration::from_millis(30));
        assert!(matches!(
            bell.wait_until(|| false, soon, &mut NoInterrupt),
            Ok(false)
        ));
        let mut calls = 0;
        let mut stop = || {
            calls += 1;
            calls > 2
        };
        assert!(matches!(
            bell.wait_until(|| false, None, &mut stop),
            Err(Error::Interrupted)
        ));
    }

    #[test]
    fn a_deadline_already_passed_checks_twice_and_never_spins() {
        let bell = Doorbell::default();
        let mut checks = 0;
        let ready = || {
            checks += 1;
            false
        };
        // A spin would call `ready` on every turn for SPIN (thousands of times).
        assert!(matches!(
            bell.wait_until(ready, Some(Instant::now()), &mut NoInterrupt),
            Ok(false)
        ));
        assert!(checks <= 3, "{checks} checks");
    }
}
