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

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Acquired, Guard, RobustMutex};
use crate::seg::{Preamble, Segment};
use crate::wait::{Doorbell, Interrupt, SLICE};

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
    match proc_start(pid) {
        None => true,
        // 0: the owner could not read its own start time; its pid alone then says it is
        // alive (a reused pid is taken for it).
        Some(start) => {
            let recorded = s.owner_start.load(Ordering::Relaxed);
            recorded != 0 && start != recorded
        }
    }
}

/// This process's pid, cached (0: not known yet). A forked child forgets it at once
/// ([`forget_pid`]), so it never records its parent's pid as a lock's owner.
static MY_PID: AtomicU32 = AtomicU32::new(0);
/// The start time of the process [`MY_PID`] names.
static MY_START: AtomicU64 = AtomicU64::new(0);

/// This process's pid and start time, cached: asking the kernel for the pid on every
/// acquire would cost more than the rest of an uncontended acquire.
fn me() -> (u32, u64) {
    let cached = MY_PID.load(Ordering::Acquire);
    if cached != 0 {
        return (cached, MY_START.load(Ordering::Relaxed));
    }
    let pid = std::process::id();
    let Some(start) = proc_start(pid) else {
        // Unreadable now (no /proc, out of descriptors): recorded as unknown, asked again
        // next time.
        return (pid, 0);
    };
    if fork_hooked() {
        MY_START.store(start, Ordering::Relaxed);
        MY_PID.store(pid, Ordering::Release);
    }
    (pid, start)
}

/// Whether forked children forget the cached pid ([`forget_pid`] is registered). Without
/// that, nothing is cached.
fn fork_hooked() -> bool {
    static HOOKED: OnceLock<bool> = OnceLock::new();
    // SAFETY: registers a handler that glibc's fork runs in the child; it only stores to
    // an atomic, which is async-signal-safe. It fails only for lack of memory.
    *HOOKED.get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) } == 0)
}

/// This process's pid, as [`SyncCell`] records it for a lock's owner: cached, and right
/// in a forked child too.
pub fn current_pid() -> u32 {
    me().0
}

/// Run in a forked child (`pthread_atfork`): its pid is not its parent's.
extern "C" fn forget_pid() {
    MY_PID.store(0, Ordering::Relaxed);
}

/// The start time of a live (not zombie) process, from `/proc/<pid>/stat`.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
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
}
