//! Cross-process locks and semaphores in a memfd segment that survive a dead holder.
//!
//! A [`SyncCell`] is a small state record guarded by a [`RobustMutex`] that is only held
//! for the few stores of one operation, so a process killed mid-operation leaves either the
//! old state or the new one (each operation commits with one store) and the kernel hands
//! the mutex on. The lock itself is an owner record (pid and process start time), not a
//! held pthread mutex: multiprocessing lets any thread or process release a `Lock`, which
//! a pthread mutex refuses. A waiter checks between sleeps whether the recorded owner is
//! still alive (a zombie or a reused pid counts as dead) and takes the lock over, reporting
//! [`Acquired::OwnerDied`].
//!
//! ```
//! use shoal_engine::sync::SyncCell;
//! use shoal_engine::wait::NoInterrupt;
//! let cell = SyncCell::create(1, Some(1)).unwrap();
//! assert!(cell.acquire(None, &mut NoInterrupt).unwrap().is_some());
//! assert!(cell.acquire(Some(std::time::Instant::now()), &mut NoInterrupt).unwrap().is_none());
//! cell.release().unwrap();
//! ```

mod owner;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Acquired, Guard, RobustMutex};
use crate::seg::{Preamble, Segment};
use crate::wait::{Doorbell, Interrupt, SLICE};
pub use owner::current_pid;
use owner::me;

const MAGIC: u64 = 0x7368_6f61_6c53_594e; // "shoalSYN"

/// The `max` of a cell without a limit: the most units its counter holds.
pub const NO_LIMIT: u32 = u32::MAX;

/// How long a waiter waits before it first asks whether a lock's owner is still alive;
/// then it asks every [`SLICE`].
pub const FIRST_OWNER_CHECK: Duration = Duration::from_millis(2);

/// The shared record, at the start of the segment.
#[repr(C)]
struct State {
    preamble: Preamble,
    mutex: RobustMutex,
    /// Units available (a lock is a semaphore of one).
    count: AtomicU32,
    /// The most units there may be ([`NO_LIMIT`]: none but the counter's range).
    max: AtomicU32,
    /// Pid of the process that took the last unit of a lock (0: none recorded).
    owner: AtomicU32,
    /// That process's start time, so a reused pid is not mistaken for it.
    owner_start: AtomicU64,
    /// Rung after every release.
    released: Doorbell,
}

/// One process's mapping of a shared lock or semaphore.
#[derive(Debug)]
pub struct SyncCell {
    seg: Segment,
}

/// What [`SyncCell::try_acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A unit, now the caller's.
    Taken(Acquired),
    /// No unit free.
    Empty,
    /// Another process was inside the state mutex: nothing is known.
    Busy,
}

/// Why a release was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The unit was given back.
    Done,
    /// The count is already at its maximum (a bounded semaphore or an unlocked lock).
    TooMany,
}

impl SyncCell {
    /// Creates a cell holding `value` units, at most `max` (`None`: no limit but the
    /// counter's range, [`NO_LIMIT`]; `Some(0)` is a bounded semaphore that starts, and
    /// stays, empty).
    pub fn create(value: u32, max: Option<u32>) -> Result<Self> {
        let max = max.unwrap_or(NO_LIMIT);
        if value > max {
            return Err(Error::Invalid(format!(
                "initial value {value} is above the maximum {max}"
            )));
        }
        let (seg, _) = Segment::create_with_header("sync", MAGIC, 64)?;
        let state = seg.base().cast::<State>();
        // SAFETY: the segment is fresh, zeroed, page aligned and larger than `State`;
        // nobody else can see it yet.
        unsafe { RobustMutex::init(std::ptr::addr_of_mut!((*state).mutex))? };
        let cell = SyncCell { seg };
        cell.state().count.store(value, Ordering::Release);
        cell.state().max.store(max, Ordering::Release);
        Ok(cell)
    }

    /// Maps a cell another process created, taking ownership of `fd`.
    pub fn open(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let (seg, _) = Segment::open_with_header(fd, MAGIC, 64, "shoal lock")?;
        Ok(SyncCell { seg })
    }

    /// The segment, for handing to another process.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    fn state(&self) -> &State {
        // SAFETY: the segment is at least a header page long, initialised by its creator
        // before it was shared; every field is an atomic or the robust mutex.
        unsafe { &*self.seg.base().cast::<State>() }
    }

    /// Units available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.state().count.load(Ordering::Acquire)
    }

    /// The pid recorded as the lock's holder, 0 for none (a snapshot, for `repr`).
    pub fn owner(&self) -> u32 {
        self.state().owner.load(Ordering::Relaxed)
    }

    /// The most units the cell holds (`None`: no limit).
    pub fn max(&self) -> Option<u32> {
        let max = self.state().max.load(Ordering::Acquire);
        (max != NO_LIMIT).then_some(max)
    }

    /// Takes one unit if one is free, waiting only for the state mutex (held for a few
    /// stores at a time). `steal_dead`: a lock whose recorded owner died is taken over.
    fn try_take(&self, steal_dead: bool) -> Result<Option<Acquired>> {
        let s = self.state();
        let Some(_guard) = s.mutex.lock(None, &mut crate::wait::NoInterrupt)? else {
            return Ok(None);
        };
        Ok(self.take_unit(steal_dead))
    }

    /// Takes one unit if one is free and no other process is inside the state mutex at
    /// this instant: it never waits, so the bindings call it without leaving the
    /// interpreter, and leave it (for [`acquire`](Self::acquire)) only when this fails
    /// and the caller may wait. A lock whose owner died is not taken over here.
    pub fn try_acquire(&self) -> Result<Attempt> {
        let Some(_guard) = self.state().mutex.try_lock()? else {
            return Ok(Attempt::Busy);
        };
        Ok(match self.take_unit(false) {
            Some(how) => Attempt::Taken(how),
            None => Attempt::Empty,
        })
    }

    /// Takes a unit, or a dead owner's lock when `steal_dead`. Call under the state mutex.
    fn take_unit(&self, steal_dead: bool) -> Option<Acquired> {
        let s = self.state();
        let me = me();
        let count = s.count.load(Ordering::Relaxed);
        let how = if count > 0 {
            s.count.store(count - 1, Ordering::Relaxed);
            Acquired::Clean
        } else if steal_dead && s.max.load(Ordering::Relaxed) == 1 && owner_dead(s) {
            Acquired::OwnerDied
        } else {
            return None;
        };
        // The start time first, then the pid that commits it.
        s.owner_start.store(me.1, Ordering::Relaxed);
        s.owner.store(me.0, Ordering::Relaxed);
        Some(how)
    }

    /// Takes one unit, waiting until `deadline` (`Ok(None)` when it passes). A lock (a
    /// cell of at most one unit) held by a process that died is taken over and reported as
    /// [`Acquired::OwnerDied`].
    pub fn acquire(
        &self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<Acquired>> {
        if let Some(how) = self.try_take(false)? {
            return Ok(Some(how));
        }
        let s = self.state();
        // Liveness costs a /proc read: asked once per slice, not on every spin.
        let mut next_check = Instant::now() + FIRST_OWNER_CHECK;
        let mut outcome: Result<Option<Acquired>> = Ok(None);
        let ready = s.released.wait_until(
            || {
                let steal = Instant::now() >= next_check;
                if steal {
                    next_check = Instant::now() + SLICE;
                }
                match self.try_take(steal) {
                    Ok(None) => false,
                    other => {
                        outcome = other;
                        true
                    }
                }
            },
            deadline,
            interrupt,
        )?;
        if ready {
            outcome
        } else {
            Ok(None)
        }
    }

    /// Gives one unit back and wakes a waiter; refused past the maximum. Waits only for
    /// the state mutex.
    pub fn release(&self) -> Result<Release> {
        let s = self.state();
        let Some(guard) = s.mutex.lock(None, &mut crate::wait::NoInterrupt)? else {
            return Err(Error::Invalid(
                "the lock's state mutex was not taken".into(),
            ));
        };
        Ok(self.give_unit(guard))
    }

    /// [`release`](Self::release) if no other process is inside the state mutex at this
    /// instant (`Ok(None)` otherwise): it never waits.
    pub fn try_release(&self) -> Result<Option<Release>> {
        let Some(guard) = self.state().mutex.try_lock()? else {
            return Ok(None);
        };
        Ok(Some(self.give_unit(guard)))
    }

    /// Gives a unit back under the state mutex, drops the mutex, then wakes a waiter.
    fn give_unit(&self, guard: Guard<'_>) -> Release {
        let s = self.state();
        let count = s.count.load(Ordering::Relaxed);
        if count >= s.max.load(Ordering::Relaxed) {
            return Release::TooMany;
        }
        s.owner.store(0, Ordering::Relaxed);
        s.count.store(count + 1, Ordering::Relaxed);
        drop(guard);
        s.released.ring();
        Release::Done
    }
}

/// Whether the process recorded as the lock's owner is gone (dead, a zombie, or its pid
/// now names another process). Called with the state mutex held.
fn owner_dead(s: &State) -> bool {
    let pid = s.owner.load(Ordering::Relaxed);
    if pid == 0 {
        return false; // released by another process without an owner: nobody to blame
    }
    owner::is_gone(pid, s.owner_start.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests;
