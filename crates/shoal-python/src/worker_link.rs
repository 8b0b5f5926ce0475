//! `WorkerLink`: a worker's end of its link to the pool (tasks in; results, progress and
//! its farewell out).

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_engine::bell::Bell;
use shoal_engine::link::{Frame, Kind, WorkerEnd};
use shoal_engine::ring::Ring;
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::dup_borrowed;

/// A message as `WorkerLink.recv` returns it: (kind, id, aux, payload).
type Received<'py> = (u8, u64, u64, Bound<'py, PyBytes>);

/// A worker's end of its link to the pool: tasks in, results out.
#[pyclass(frozen, module = "shoal._shoal")]
pub struct WorkerLink {
    // Why a lock: the worker loop is one thread, but a task may start threads of its own;
    // the link must never be used by two at once.
    end: Mutex<WorkerEnd>,
}

impl WorkerLink {
    fn end(&self) -> PyResult<std::sync::MutexGuard<'_, WorkerEnd>> {
        // try_lock: waiting here would hold the GIL that the holder needs to finish.
        self.end
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("the worker link is in use by another thread"))
    }
}

#[pymethods]
impl WorkerLink {
    /// Attaches to the rings and bell behind `tasks`, `results` and `bell` (duplicated; the
    /// caller closes its own).
    #[new]
    fn new(tasks: i32, results: i32, bell: i32) -> PyResult<Self> {
        let end = WorkerEnd::new(
            to_py(Ring::open(dup_borrowed(tasks)?))?,
            to_py(Ring::open(dup_borrowed(results)?))?,
            to_py(Bell::open(dup_borrowed(bell)?))?,
        );
        Ok(WorkerLink {
            end: Mutex::new(end),
        })
    }

    /// The next message `(kind, id, aux, payload)`, waiting up to `timeout` seconds (None:
    /// forever); None when the time ran out. Kinds: 1 task, 2 function, 3 stop.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Received<'py>>> {
        let until = deadline(timeout);
        let mut guard = self.end()?;
        let end: &mut WorkerEnd = &mut guard;
        let got = blocking(py, |interrupt| {
            match end.recv(until, interrupt, |frame, body| (frame, body.to_vec())) {
                Ok(message) => Ok(Some(message)),
                Err(Error::Empty) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(got.map(|(frame, body)| {
            (
                frame.kind as u8,
                frame.id,
                frame.aux,
                PyBytes::new(py, &body),
            )
        }))
    }

    /// Sends the outcome of chunk `chunk`, waiting for room in the ring as needed.
    fn send_result(&self, py: Python<'_>, chunk: u64, payload: &[u8]) -> PyResult<()> {
        let mut guard = self.end()?;
        let end: &mut WorkerEnd = &mut guard;
        blocking(py, |interrupt| {
            end.send(Frame::new(Kind::Result, chunk, 0), payload, None, interrupt)
        })
    }

    /// Tells the pool that `done` tasks of chunk `chunk` are finished, if that can be
    /// done at once: false when another thread is using the link or the ring is full
    /// (a progress report is worth no wait; the next one says more). Never blocks.
    fn send_progress(&self, chunk: u64, done: u64) -> bool {
        let Ok(mut end) = self.end.try_lock() else {
            return false;
        };
        let now = Some(std::time::Instant::now());
        let frame = Frame::new(Kind::Progress, chunk, done);
        end.send(frame, &[], now, &mut NoInterrupt).is_ok()
    }

    /// Says the worker has started (its initializer ran) at `when_us`, microseconds of
    /// the machine's monotonic clock: its first message.
    fn send_ready(&self, py: Python<'_>, when_us: u64) -> PyResult<()> {
        let mut guard = self.end()?;
        let end: &mut WorkerEnd = &mut guard;
        blocking(py, |interrupt| {
            end.send(Frame::new(Kind::Ready, 0, when_us), &[], None, interrupt)
        })
    }

    /// Sends the worker's farewell (what the pool's exit hook returned), its last
    /// message before it exits.
    fn send_farewell(&self, py: Python<'_>, payload: &[u8]) -> PyResult<()> {
        let mut guard = self.end()?;
        let end: &mut WorkerEnd = &mut guard;
        blocking(py, |interrupt| {
            end.send(Frame::new(Kind::Farewell, 0, 0), payload, None, interrupt)
        })
    }
}
