//! The parent's end of the process pool: `PoolEngine`, over the supervisor thread (a
//! worker's end is `WorkerLink`, in `worker_link.rs`). Python pickles; this moves bytes
//! and watches processes.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shoal_engine::proc::{spawn_blocking, Child, Exit, Pidfd};
use shoal_engine::supervisor::{DepthGauge, Event, Process, Supervisor, Task};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::dup_borrowed;
use crate::worker_exited::WorkerExited;

/// Event tags in the tuples `next_events` returns (exported to Python).
pub const EVENT_RESULT: u8 = 0;
pub const EVENT_EXITED: u8 = 1;
pub const EVENT_STOPPED: u8 = 2;
pub const EVENT_FAREWELL: u8 = 3;
pub const EVENT_PROGRESS: u8 = 4;
pub const EVENT_READY: u8 = 5;

/// Starts `program` with each `(fd, target)` of `fds` (lent by the caller) placed at
/// `target` in the child, and `SIGINT` blocked: shoal's own processes (the zygote, a
/// spawned worker) ignore Ctrl-C, and unblock it once they do, so one that came while
/// they started never ends them.
pub(crate) fn spawn_placing(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[(i32, i32)],
) -> PyResult<Child> {
    let owned: Vec<(OwnedFd, i32)> = fds
        .iter()
        .map(|&(fd, target)| Ok((dup_borrowed(fd)?, target)))
        .collect::<PyResult<_>>()?;
    let keep: Vec<(BorrowedFd<'_>, i32)> = owned
        .iter()
        .map(|(fd, target)| (fd.as_fd(), *target))
        .collect();
    to_py(spawn_blocking(program, args, env, &keep, &[libc::SIGINT]))
}

/// The parent's side of a process pool: starts the supervisor thread, which runs until
/// the pool is closed or terminated (or this object is dropped, which kills the workers).
#[pyclass(frozen, module = "shoal._shoal")]
pub struct PoolEngine {
    sup: Supervisor,
}

#[pymethods]
impl PoolEngine {
    /// A pool whose workers each owe at least `depth` chunks (more while chunks are
    /// short), or exactly `depth` if `fixed`, with rings of `ring_capacity` bytes each way.
    #[new]
    #[pyo3(signature = (depth, ring_capacity, fixed=false))]
    fn new(depth: usize, ring_capacity: usize, fixed: bool) -> PyResult<Self> {
        let gauge = if fixed {
            DepthGauge::fixed(depth)
        } else {
            DepthGauge::new(depth)
        };
        Ok(PoolEngine {
            sup: to_py(Supervisor::start_with(gauge, ring_capacity))?,
        })
    }

    /// Makes room for a worker that runs `limit` chunks (None: no limit). Returns its id and
    /// three new descriptors (task ring, result ring, bell) that the caller hands to the
    /// worker and then closes.
    #[pyo3(signature = (limit))]
    fn add_worker(&self, limit: Option<u64>) -> PyResult<(u64, i32, i32, i32)> {
        let new = to_py(self.sup.add_worker(limit))?;
        Ok((
            new.id,
            new.tasks.into_raw_fd(),
            new.results.into_raw_fd(),
            new.bell.into_raw_fd(),
        ))
    }

    /// Gives worker `id` its process, watched through `pidfd` (duplicated; another process
    /// reaps it, as the zygote does its children).
    fn attach_pidfd(&self, id: u64, pidfd: i32) -> PyResult<()> {
        let pidfd = to_py(Pidfd::from_fd(dup_borrowed(pidfd)?))?;
        to_py(self.sup.attach(id, Process::Other(pidfd)))
    }

    /// Gives worker `id` its process: `pid`, a child of this process (from `os.fork`) that
    /// the supervisor reaps.
    fn attach_child(&self, id: u64, pid: i32) -> PyResult<()> {
        let child = to_py(Child::adopt(pid))?;
        to_py(self.sup.attach(id, Process::Child(child)))
    }

    /// Starts `program` with `args` as worker `id`'s process, each `(fd, target)` in `fds`
    /// placed at `target`, and `env` added to the environment. Returns its pid.
    fn spawn_worker(
        &self,
        id: u64,
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        fds: Vec<(i32, i32)>,
    ) -> PyResult<i32> {
        let child = spawn_placing(&program, &args, &env, &fds)?;
        let pid = child.pid();
        to_py(self.sup.attach(id, Process::Child(child)))?;
        Ok(pid)
    }

    /// Gives up on starting worker `id`; what it was given goes back to the queue.
    fn abandon(&self, id: u64) {
        self.sup.abandon(id);
    }

    /// Registers function `func`'s pickled bytes.
    fn define(&self, func: u64, blob: &[u8]) {
        self.sup.define(func, Arc::from(blob));
    }

    /// Forgets function `func` (no queued or owed chunk uses it): workers drop it.
    fn forget(&self, func: u64) {
        self.sup.forget(func);
    }

    /// Queues chunk `chunk` of function `func` with its pickled items; it runs again up to
    /// `retries` times if its worker dies, and its worker is killed if it runs longer
    /// than `timeout` seconds.
    #[pyo3(signature = (chunk, func, payload, retries=0, timeout=None))]
    fn submit(
        &self,
        chunk: u64,
        func: u64,
        payload: &[u8],
        retries: u32,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let timeout = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "a task timeout must be a non-negative number of seconds, not {t}"
                )))
            }
            None => None,
        };
        to_py(self.sup.submit(Task {
            chunk,
            func,
            payload: Arc::from(payload),
            retries,
            timeout,
        }))
    }

    /// Takes back a chunk no worker has been given yet: true if it will never run (and
    /// never be answered), false if it may be running or is done.
    fn withdraw(&self, chunk: u64) -> bool {
        self.sup.withdraw(chunk)
    }

    /// Finishes the queued chunks, then stops the workers.
    fn close(&self) {
        self.sup.close();
    }

    /// Drops the queued chunks and kills the workers.
    fn terminate(&self) {
        self.sup.terminate();
    }

    /// Makes a thread waiting in `next_events` return now, possibly with no events.
    fn wake(&self) {
        self.sup.wake();
    }

    /// Waits up to `timeout` seconds (None: forever) for events and returns them all:
    /// `(0, chunk, worker, payload)` for a result, `(1, WorkerExited)` for a worker
    /// that ended, `(3, worker, payload)` for a worker's farewell (before its exit), `(4,
    /// chunk, done)` when a worker tells how far a chunk it runs has got, `(2,)` once
    /// everything has stopped. Empty when the time ran out, after `wake`, or after `(2,)`
    /// was returned.
    #[pyo3(signature = (timeout=None))]
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        // Events that are there already are taken without letting go of the interpreter
        // lock: handing it over (and waiting to get it back) on every call would cost
        // more than the events while results stream in.
        let events = match self.sup.try_events() {
            Some(events) => events,
            None => {
                let until = deadline(timeout);
                blocking(py, |interrupt| self.sup.next_events(until, interrupt))?
            }
        };
        let out = PyList::empty(py);
        for event in events {
            let item = match event {
                Event::Result {
                    chunk,
                    worker,
                    payload,
                } => (EVENT_RESULT, chunk, worker, PyBytes::new(py, &payload))
                    .into_pyobject(py)?
                    .into_any(),
                Event::Exited {
                    worker,
                    pid,
                    exit,
                    lost,
                    expected,
                    replace,
                    timed_out,
                    answered,
                    ready,
                } => {
                    let (code, signal, how) = exit_fields(exit);
                    let exited = WorkerExited {
                        worker,
                        pid,
                        code,
                        signal,
                        how,
                        lost,
                        expected,
                        replace,
                        timed_out,
                        answered,
                        ready,
                    };
                    (EVENT_EXITED, Bound::new(py, exited)?)
                        .into_pyobject(py)?
                        .into_any()
                }
                Event::Farewell { worker, payload } => {
                    (EVENT_FAREWELL, worker, PyBytes::new(py, &payload))
                        .into_pyobject(py)?
                        .into_any()
                }
                Event::Ready { worker, when } => {
                    (EVENT_READY, worker, when).into_pyobject(py)?.into_any()
                }
                Event::Progress { chunk, done } => {
                    (EVENT_PROGRESS, chunk, done).into_pyobject(py)?.into_any()
                }
                Event::Stopped => PyTuple::new(py, [EVENT_STOPPED])?.into_any(),
            };
            out.append(item)?;
        }
        Ok(out)
    }
}

/// A `waitpid` status (as the zygote reports its children's) as `(exit_code, signal,
/// description)`, described as every other exit is.
#[pyfunction]
pub fn describe_exit(status: i32) -> (Option<i32>, Option<i32>, Option<String>) {
    exit_fields(Exit::from_wait_status(status))
}

fn exit_fields(exit: Option<Exit>) -> (Option<i32>, Option<i32>, Option<String>) {
    let (code, signal) = match exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(s)),
        None => (None, None),
    };
    (code, signal, exit.map(|e| e.to_string()))
}
