//! `QueueCore`: one process's handle on a shared queue. Python pickles; this moves bytes.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shoal_engine::queue::{Message, Queue};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::take_owned;
use crate::sink::BytesSink;

/// A handle on a shared-memory queue. Closing drops this process's mapping; the segment
/// itself lives until the last process lets go.
#[pyclass(frozen, module = "shoal._shoal")]
pub struct QueueCore {
    // Why a lock: `close()` may race with a blocked `get()` in another thread. Calls clone
    // the Arc under the lock and release it before blocking, so close never waits on them.
    inner: Mutex<Option<Arc<Queue>>>,
    /// Whether anything was put through this handle (`close()` of a handle that never put
    /// does less, as multiprocessing's does).
    put_any: AtomicBool,
}

impl QueueCore {
    fn queue(&self) -> PyResult<Arc<Queue>> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("queue handle poisoned"))?;
        inner
            .clone()
            .ok_or_else(|| PyValueError::new_err("the queue is closed"))
    }

    fn wrap(queue: Queue) -> Self {
        QueueCore {
            inner: Mutex::new(Some(Arc::new(queue))),
            put_any: AtomicBool::new(false),
        }
    }
}

#[pymethods]
impl QueueCore {
    /// Creates a new queue with a ring of `capacity` bytes holding at most `max_items`
    /// messages (0: no limit but the bytes).
    #[new]
    fn new(capacity: usize, max_items: usize) -> PyResult<Self> {
        Ok(Self::wrap(to_py(Queue::create(capacity, max_items))?))
    }

    /// Attaches to an existing queue through a descriptor, which the handle then owns.
    #[staticmethod]
    fn from_fd(fd: i32) -> PyResult<Self> {
        let owned = take_owned(fd)?;
        Ok(Self::wrap(to_py(Queue::open(owned))?))
    }

    /// The segment's descriptor, valid while the handle is open (for duplication).
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.queue()?.fd().as_raw_fd())
    }

    /// Puts one message; waits for room up to `timeout` seconds (None: forever).
    #[pyo3(signature = (tag, body, timeout))]
    fn put(&self, py: Python<'_>, tag: u8, body: &[u8], timeout: Option<f64>) -> PyResult<()> {
        let q = self.queue()?;
        self.put_any.store(true, Ordering::Relaxed);
        let until = deadline(timeout);
        blocking(py, |interrupt| {
            q.put(&[Message { tag, body }], until, interrupt)
        })
    }

    /// Puts `(tag, bytes)` pairs in order; all at once when they fit in the ring.
    #[pyo3(signature = (items, timeout))]
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<(u8, Bound<'_, PyBytes>)>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let q = self.queue()?;
        self.put_any.store(true, Ordering::Relaxed);
        let until = deadline(timeout);
        let messages: Vec<Message<'_>> = items
            .iter()
            .map(|(tag, body)| Message {
                tag: *tag,
                body: body.as_bytes(),
            })
            .collect();
        blocking(py, |interrupt| q.put(&messages, until, interrupt))
    }

    /// Gets one message as `(tag, bytes)`; waits up to `timeout` seconds (None: forever).
    #[pyo3(signature = (timeout))]
    fn get<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyTuple>> {
        let q = self.queue()?;
        let until = deadline(timeout);
        let sink = blocking(py, |interrupt| {
            let mut sink = BytesSink::default();
            q.get(&mut sink, 1, until, interrupt).map(|_| sink)
        })?;
        let item = sink.into_list(py)?.get_item(0)?;
        Ok(item.cast_into::<PyTuple>()?)
    }

    /// Gets between 1 and `max_items` messages: waits for the first, then takes those
    /// already waiting.
    #[pyo3(signature = (max_items, timeout))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        max_items: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = self.queue()?;
        let until = deadline(timeout);
        let sink = blocking(py, |interrupt| {
            let mut sink = BytesSink::default();
            q.get(&mut sink, max_items, until, interrupt).map(|_| sink)
        })?;
        sink.into_list(py)
    }

    /// Messages waiting (a snapshot).
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.queue()?.len())
    }

    /// The message limit (0: none).
    #[getter]
    fn max_items(&self) -> PyResult<usize> {
        Ok(self.queue()?.max_items())
    }

    /// Whether the message limit is reached (a snapshot).
    fn full(&self) -> PyResult<bool> {
        Ok(self.queue()?.is_full())
    }

    /// Releases this process's mapping (at once, or when running calls finish).
    fn close(&self) -> PyResult<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("queue handle poisoned"))?;
        inner.take();
        Ok(())
    }

    /// Whether anything was put through this handle.
    #[getter]
    fn put_any(&self) -> bool {
        self.put_any.load(Ordering::Relaxed)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .lock()
            .map(|inner| inner.is_none())
            .unwrap_or(true)
    }
}
