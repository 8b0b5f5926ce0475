//! `RLockCore`: a recursive lock over a shared lock cell, with `multiprocessing.RLock`'s
//! methods, which `shoal.RLock` (a Python subclass) calls straight into. Who holds it, and
//! how many times, is this handle's own record, as in multiprocessing: only the holding
//! thread changes it while it holds the cell's one unit.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pyo3::exceptions::PyAssertionError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use shoal_engine::sync::current_pid;

use crate::sync::{this_thread, LockCell};

/// A process-shared recursive lock.
#[pyclass(subclass, frozen, module = "shoal._shoal")]
pub struct RLockCore {
    lock: LockCell,
    /// The holding thread (`threading.get_ident()`), and its process: a forked child's
    /// thread may have its parent's thread id. 0: nobody here holds it.
    holder_thread: AtomicU64,
    holder_pid: AtomicU32,
    /// How many times the holder took it.
    depth: AtomicU32,
}

#[pymethods]
impl RLockCore {
    /// A new, unheld lock; or, given `fd`, the cell behind that descriptor, which the
    /// handle then owns.
    #[new]
    #[pyo3(signature = (fd = None))]
    fn new(fd: Option<i32>) -> PyResult<Self> {
        Ok(RLockCore {
            lock: LockCell::open_or_create(1, Some(1), fd)?,
            holder_thread: AtomicU64::new(0),
            holder_pid: AtomicU32::new(0),
            depth: AtomicU32::new(0),
        })
    }

    /// The cell's descriptor (for duplication).
    fn fileno(&self) -> i32 {
        self.lock.fileno()
    }

    /// Whether the last successful acquire that took the cell took it over from a process
    /// that died holding it.
    #[getter]
    fn owner_died(&self) -> bool {
        self.lock.owner_died()
    }

    /// Takes the lock, or takes it once more if this thread holds it; waits up to
    /// `timeout` seconds (not at all unless `block`). False when the time ran out.
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        if self.is_owned() {
            self.depth.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        if !self.lock.acquire(py, block, timeout)? {
            return Ok(false);
        }
        self.hold(1);
        Ok(true)
    }

    /// Releases one level; the last lets others take the lock. `AssertionError` from a
    /// thread that does not hold it, as multiprocessing raises.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if !self.is_owned() {
            return Err(not_owned());
        }
        if self.depth.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.let_go(py)?;
        }
        Ok(())
    }

    /// Whether this thread holds the lock (`Condition` asks).
    fn _is_owned(&self) -> bool {
        self.is_owned()
    }

    /// Lets go of every level at once and returns how many there were (`Condition.wait`
    /// does so before it sleeps).
    fn _release_save(&self, py: Python<'_>) -> PyResult<u32> {
        if !self.is_owned() {
            return Err(not_owned());
        }
        let depth = self.depth.swap(0, Ordering::Relaxed);
        self.let_go(py)?;
        Ok(depth)
    }

    /// Takes the lock again with `depth` levels (after `_release_save`).
    fn _acquire_restore(&self, py: Python<'_>, depth: u32) -> PyResult<()> {
        self.lock.acquire(py, true, None)?;
        self.hold(depth);
        Ok(())
    }

    /// Whether nobody holds the lock (a snapshot, for `repr`).
    fn _unlocked(&self) -> bool {
        self.holder_thread.load(Ordering::Relaxed) == 0 && self.lock.value() > 0
    }

    /// How many times this thread holds it (0: it does not).
    fn _count(&self) -> u32 {
        if self.is_owned() {
            self.depth.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The pid of the process holding it, 0 for none (a snapshot, for `repr`).
    fn _owner_pid(&self) -> u32 {
        self.lock.owner()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(py)
    }
}

/// What releasing a lock this thread does not hold raises, as multiprocessing says it.
fn not_owned() -> PyErr {
    PyAssertionError::new_err("attempt to release recursive lock not owned by thread")
}

impl RLockCore {
    fn is_owned(&self) -> bool {
        self.holder_thread.load(Ordering::Relaxed) == this_thread()
            && self.holder_pid.load(Ordering::Relaxed) == current_pid()
    }

    /// Records this thread as the holder, `depth` times over (it holds the cell's unit).
    fn hold(&self, depth: u32) {
        self.depth.store(depth, Ordering::Relaxed);
        self.holder_pid.store(current_pid(), Ordering::Relaxed);
        self.holder_thread.store(this_thread(), Ordering::Relaxed);
    }

    /// Clears the holder and gives the cell's unit back.
    fn let_go(&self, py: Python<'_>) -> PyResult<()> {
        self.holder_thread.store(0, Ordering::Relaxed);
        self.holder_pid.store(0, Ordering::Relaxed);
        self.lock.release(py)
    }
}
