//! `WorkerExited`: how a pool's worker process ended, as `PoolEngine.next_events`
//! reports it (`(1, WorkerExited)`): a frozen object with named fields.

use pyo3::prelude::*;

/// A worker process of the pool ended.
#[pyclass(frozen, get_all, module = "shoal._shoal")]
pub struct WorkerExited {
    /// The worker's id in events.
    pub worker: u64,
    /// Its process id, when known.
    pub pid: Option<i32>,
    /// Its exit code, when it exited and that is known.
    pub code: Option<i32>,
    /// The signal that killed it, when that is known.
    pub signal: Option<i32>,
    /// How it ended, in words ("killed by signal 9 (SIGKILL)"), when known.
    pub how: Option<String>,
    /// The chunk it was running that has no retries left: it will never be answered.
    pub lost: Option<u64>,
    /// True when it was told to stop or had run its task limit and owed nothing.
    pub expected: bool,
    /// Whether the pool needs a worker in its place.
    pub replace: bool,
    /// Whether it was killed because `lost` ran past its time limit.
    pub timed_out: bool,
    /// How many chunks it answered.
    pub answered: u64,
    /// Whether it had said it started (its initializer ran): false, it died starting up.
    pub ready: bool,
}

#[pymethods]
impl WorkerExited {
    fn __repr__(&self) -> String {
        format!(
            "WorkerExited(worker={}, pid={:?}, how={:?}, lost={:?}, expected={}, replace={}, \
             timed_out={}, answered={}, ready={})",
            self.worker,
            self.pid,
            self.how,
            self.lost,
            self.expected,
            self.replace,
            self.timed_out,
            self.answered,
            self.ready
        )
    }
}
