//! `SyncCore`: one process's handle on a shared lock or semaphore (`shoal_engine::sync`).

use std::os::fd::AsRawFd;

use pyo3::prelude::*;
use shoal_engine::lock::Acquired;
use shoal_engine::sync::{Release, SyncCell};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::take_owned;

/// A shared lock or semaphore. No interior lock: every operation is atomic in the engine.
#[pyclass(frozen, module = "shoal._shoal")]
pub struct SyncCore {
    cell: SyncCell,
}

#[pymethods]
impl SyncCore {
    /// A cell of `value` units, at most `max` (0: no limit).
    #[new]
    fn new(value: u32, max: u32) -> PyResult<Self> {
        Ok(SyncCore {
            cell: to_py(SyncCell::create(value, max))?,
        })
    }

    /// Attaches through a descriptor, which the handle then owns.
    #[staticmethod]
    fn from_fd(fd: i32) -> PyResult<Self> {
        let owned = take_owned(fd)?;
        Ok(SyncCore {
            cell: to_py(SyncCell::open(owned))?,
        })
    }

    /// The segment's descriptor (for duplication).
    fn fileno(&self) -> i32 {
        self.cell.segment().fd().as_raw_fd()
    }

    /// Takes a unit: 0 timed out, 1 taken, 2 taken over from a holder that died.
    #[pyo3(signature = (timeout))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u8> {
        let until = deadline(timeout);
        let got = blocking(py, |interrupt| self.cell.acquire(until, interrupt))?;
        Ok(match got {
            None => 0,
            Some(Acquired::Clean) => 1,
            Some(Acquired::OwnerDied) => 2,
        })
    }

    /// Gives a unit back; false when the count is already at its maximum.
    fn release(&self) -> PyResult<bool> {
        Ok(to_py(self.cell.release())? == Release::Done)
    }

    /// Units available (a snapshot).
    fn value(&self) -> u32 {
        self.cell.value()
    }
}
