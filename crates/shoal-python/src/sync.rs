//! `SyncCore`: one process's handle on a shared lock or semaphore (`shoal_engine::sync`),
//! with `multiprocessing`'s method signatures, so that `shoal.Lock` and `shoal.Semaphore`
//! (Python subclasses) call straight into Rust: an uncontended `acquire` + `release`
//! passes through no Python frame.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use shoal_engine::lock::Acquired;
use shoal_engine::sync::{Attempt, Release, SyncCell};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::take_owned;

/// What the warning says when a lock is taken over from a process that died holding it.
const OWNER_DIED: &str =
    "the previous holder of this lock died holding it; what it protects may be half-updated";

/// One handle's state over a shared cell: the cell, and whether this handle's last
/// successful acquire took the lock over from a process that died holding it. Both lock
/// classes are made of one.
pub(crate) struct LockCell {
    cell: SyncCell,
    owner_died: AtomicBool,
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
        }
        Ok(got.is_some())
    }

    /// Gives a unit back; `ValueError` past the maximum.
    pub(crate) fn release(&self, py: Python<'_>) -> PyResult<()> {
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
