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

/// A shared lock or semaphore. No interior lock: every operation is atomic in the engine.
#[pyclass(subclass, frozen, module = "shoal._shoal")]
pub struct SyncCore {
    cell: SyncCell,
    /// Whether this handle's last successful acquire took the lock over from a process
    /// that died holding it.
    owner_died: AtomicBool,
}

#[pymethods]
impl SyncCore {
    /// A new cell of `value` units, at most `max` (`None`: no limit); or, given `fd`, the
    /// cell behind that descriptor, which the handle then owns (`value` and `max` unused).
    #[new]
    #[pyo3(signature = (value, max, fd = None))]
    fn new(value: u32, max: Option<u32>, fd: Option<i32>) -> PyResult<Self> {
        Ok(SyncCore {
            cell: open_or_create(value, max, fd)?,
            owner_died: AtomicBool::new(false),
        })
    }

    /// The segment's descriptor (for duplication).
    fn fileno(&self) -> i32 {
        self.cell.segment().fd().as_raw_fd()
    }

    /// Whether the last successful acquire through this handle took the lock over from a
    /// process that died holding it.
    #[getter]
    fn owner_died(&self) -> bool {
        self.owner_died.load(Ordering::Relaxed)
    }

    /// Takes one unit, waiting while there is none (up to `timeout` seconds; not at all
    /// unless `block`). True once taken, false when the time ran out. Taking a lock over
    /// from a process that died holding it warns (`shoal.OwnerDiedWarning`).
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        acquire_cell(py, &self.cell, &self.owner_died, block, timeout)
    }

    /// Gives one unit back; `ValueError` past the maximum (an unlocked lock, a bounded
    /// semaphore at its initial value).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        release_cell(py, &self.cell)
    }

    /// The units available now (a snapshot).
    fn get_value(&self) -> u32 {
        self.cell.value()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(py)
    }
}

/// The cell behind `fd` (which the caller then owns), or without one a new cell of
/// `value` units, at most `max` (`None`: no limit).
pub(crate) fn open_or_create(value: u32, max: Option<u32>, fd: Option<i32>) -> PyResult<SyncCell> {
    match fd {
        Some(fd) => to_py(SyncCell::open(take_owned(fd)?)),
        None => to_py(SyncCell::create(value, max)),
    }
}

/// Takes a unit of `cell` for [`SyncCore::acquire`] (and `RLockCore`'s); once taken,
/// records in `owner_died` whether it was taken over from a dead holder.
pub(crate) fn acquire_cell(
    py: Python<'_>,
    cell: &SyncCell,
    owner_died: &AtomicBool,
    block: bool,
    timeout: Option<f64>,
) -> PyResult<bool> {
    // Uncontended, a try that never waits takes the unit without leaving the interpreter
    // (leaving and coming back costs more than the rest of the call).
    let may_wait = block && timeout.is_none_or(|t| t > 0.0);
    let got = match to_py(cell.try_acquire())? {
        Attempt::Taken(how) => Some(how),
        // Nothing to wait for: answered without leaving the interpreter either.
        Attempt::Empty if !may_wait => None,
        Attempt::Empty | Attempt::Busy => {
            let until = deadline(if block { timeout } else { Some(0.0) });
            blocking(py, |interrupt| cell.acquire(until, interrupt))?
        }
    };
    if got == Some(Acquired::OwnerDied) {
        if let Err(err) = warn_owner_died(py) {
            // Warnings are errors here: the caller never gets the lock, so give it back
            // rather than keep it for nobody (the next acquirer is not warned again).
            release_cell(py, cell)?;
            return Err(err);
        }
    }
    if got.is_some() {
        owner_died.store(got == Some(Acquired::OwnerDied), Ordering::Relaxed);
    }
    Ok(got.is_some())
}

/// Gives a unit of `cell` back; `ValueError` past its maximum.
pub(crate) fn release_cell(py: Python<'_>, cell: &SyncCell) -> PyResult<()> {
    // As in take_unit: detached only when another process is inside the state mutex.
    let outcome = match to_py(cell.try_release())? {
        Some(outcome) => outcome,
        None => blocking(py, |_| cell.release())?,
    };
    match outcome {
        Release::Done => Ok(()),
        Release::TooMany => Err(PyValueError::new_err(
            "semaphore or lock released too many times",
        )),
    }
}

/// Warns with `shoal.OwnerDiedWarning`, pointing at the caller's line.
fn warn_owner_died(py: Python<'_>) -> PyResult<()> {
    let category = py.import("shoal._sync")?.getattr("OwnerDiedWarning")?;
    let message = std::ffi::CString::new(OWNER_DIED)?;
    PyErr::warn(py, &category, &message, 1)
}
