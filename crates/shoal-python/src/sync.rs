//! `SyncCore`: one process's handle on a shared lock or semaphore (`shoal_engine::sync`),
//! with `multiprocessing`'s method signatures, so that `shoal.Lock` and `shoal.Semaphore`
//! (Python subclasses) call straight into Rust: an uncontended `acquire` + `release`
//! passes through no Python frame.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use shoal_engine::lock::Acquired;
use shoal_engine::sync::{current_pid, Attempt, Release, SyncCell};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::take_owned;

/// What the warning says when a lock is taken over from a process that died holding it.
const OWNER_DIED: &str =
    "the previous holder of this lock died holding it; what it protects may be half-updated";

/// One handle's state over a shared cell: the cell, whether this handle's last
/// successful acquire took the lock over from a process that died holding it, and which
/// of this process's threads took the last unit through it (the cell records only the
/// process). Both lock classes are made of one.
pub(crate) struct LockCell {
    cell: SyncCell,
    owner_died: AtomicBool,
    holder: AtomicU64,
}

/// The calling thread's id, as `threading.get_ident()` gives it (`pthread_t` is a 64-bit
/// integer on the 64-bit Linux shoal builds for).
pub(crate) fn this_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() }
}

impl LockCell {
    /// The cell behind `fd` (which the handle then owns), or without one a new cell of
    /// `value` units, at most `max` (`None`: no limit).
    pub(crate) fn open_or_create(value: u32, max: Option<u32>, fd: Option<i32>) -> PyResult<Self> {
        let cell = match fd {
            Some(fd) => to_py(SyncCell::open(take_owned(fd)?))?,
            None => to_py(SyncCell::create(value, max))?,
        };
        Ok(LockCell {
            cell,
            owner_died: AtomicBool::new(false),
            holder: AtomicU64::new(0),
        })
    }

    /// The segment's descriptor (for duplication).
    pub(crate) fn fileno(&self) -> i32 {
        self.cell.segment().fd().as_raw_fd()
    }

    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died.load(Ordering::Relaxed)
    }

    /// The units free now (a snapshot).
    pub(crate) fn value(&self) -> u32 {
        self.cell.value()
    }

    /// The pid recorded as the holder, 0 for none (a snapshot).
    pub(crate) fn owner(&self) -> u32 {
        self.cell.owner()
    }

    /// The most units the cell holds (`None`: no limit).
    pub(crate) fn max(&self) -> Option<u32> {
        self.cell.max()
    }

    /// Whether the calling thread took the last unit (a lock it holds), as far as this
    /// handle saw: a snapshot, for `repr`.
    pub(crate) fn is_mine(&self) -> bool {
        self.cell.value() == 0
            && self.cell.owner() == current_pid()
            && self.holder.load(Ordering::Relaxed) == this_thread()
    }

    /// Takes a unit, waiting up to `timeout` seconds (not at all unless `block`); true once
    /// taken. Records whether it was taken over from a dead holder, and warns if so.
    pub(crate) fn acquire(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let timeout = if block { timeout } else { Some(0.0) };
        let may_wait = timeout.is_none_or(|t| t > 0.0);
        // Uncontended, a try that never waits takes the unit without leaving the
        // interpreter (leaving and coming back costs more than the rest of the call).
        let got = match to_py(self.cell.try_acquire())? {
            Attempt::Taken(how) => Some(how),
            // Nothing to wait for: answered without leaving the interpreter either.
            Attempt::Empty if !may_wait => None,
            Attempt::Empty | Attempt::Busy => {
                let until = deadline(timeout);
                blocking(py, |interrupt| self.cell.acquire(until, interrupt))?
            }
        };
        if got == Some(Acquired::OwnerDied) {
            if let Err(err) = warn_owner_died(py) {
                // Warnings are errors here: the caller never gets the lock, so give it
                // back rather than keep it for nobody (the next acquirer is not warned
                // again).
                self.release(py)?;
                return Err(err);
            }
        }
        if got.is_some() {
            self.owner_died
                .store(got == Some(Acquired::OwnerDied), Ordering::Relaxed);
            self.holder.store(this_thread(), Ordering::Relaxed);
        }
        Ok(got.is_some())
    }

    /// Gives a unit back; `ValueError` past the maximum.
    pub(crate) fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.holder.store(0, Ordering::Relaxed);
        // As in acquire: detached only when another process is inside the state mutex.
        let outcome = match to_py(self.cell.try_release())? {
            Some(outcome) => outcome,
            None => blocking(py, |_| self.cell.release())?,
        };
        match outcome {
            Release::Done => Ok(()),
            Release::TooMany => Err(PyValueError::new_err(
                "semaphore or lock released too many times",
            )),
        }
    }
}

/// A shared lock or semaphore. No interior lock: every operation is atomic in the engine.
#[pyclass(subclass, frozen, module = "shoal._shoal")]
pub struct SyncCore {
    lock: LockCell,
}

#[pymethods]
impl SyncCore {
    /// A new cell of `value` units, at most `max` (`None`: no limit); or, given `fd`, the
    /// cell behind that descriptor, which the handle then owns (`value` and `max` unused).
    #[new]
    #[pyo3(signature = (value, max, fd = None))]
    fn new(value: u32, max: Option<u32>, fd: Option<i32>) -> PyResult<Self> {
        Ok(SyncCore {
            lock: LockCell::open_or_create(value, max, fd)?,
        })
    }

    /// The segment's descriptor (for duplication).
    fn fileno(&self) -> i32 {
        self.lock.fileno()
    }

    /// Whether the last successful acquire through this handle took the lock over from a
    /// process that died holding it.
    #[getter]
    fn owner_died(&self) -> bool {
        self.lock.owner_died()
    }

    /// Takes one unit, waiting while there is none (up to `timeout` seconds; not at all
    /// unless `block`). True once taken, false when the time ran out. Taking a lock over
    /// from a process that died holding it warns (`shoal.OwnerDiedWarning`).
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        self.lock.acquire(py, block, timeout)
    }

    /// Gives one unit back; `ValueError` past the maximum (an unlocked lock, a bounded
    /// semaphore at its initial value).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.lock.release(py)
    }

    /// The units available now (a snapshot).
    fn get_value(&self) -> u32 {
        self.lock.value()
    }

    /// The pid of the process that took the last unit of a lock, 0 for none (a snapshot,
    /// for `repr`).
    fn _owner_pid(&self) -> u32 {
        self.lock.owner()
    }

    /// Whether the calling thread holds the lock (a snapshot, for `repr`).
    fn _is_mine(&self) -> bool {
        self.lock.is_mine()
    }

    /// The most units it holds (a bounded semaphore's initial value); `None`: no limit.
    #[getter]
    fn maxvalue(&self) -> Option<u32> {
        self.lock.max()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.lock.acquire(py, true, None)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.lock.release(py)
    }
}

/// Warns with `shoal.OwnerDiedWarning`, pointing at the caller's line.
fn warn_owner_died(py: Python<'_>) -> PyResult<()> {
    let category = py.import("shoal._mp.locks")?.getattr("OwnerDiedWarning")?;
    let message = std::ffi::CString::new(OWNER_DIED)?;
    PyErr::warn(py, &category, &message, 1)
}
