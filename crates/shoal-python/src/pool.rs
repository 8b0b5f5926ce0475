//! The process pool's two ends: `PoolEngine` (the parent: the supervisor thread) and
//! `WorkerLink` (a worker: its rings). Python pickles; these move bytes and watch processes.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use shoal_engine::bell::Bell;
use shoal_engine::link::{Frame, Kind, WorkerEnd};
use shoal_engine::proc::{spawn, Child, Exit, Pidfd};
use shoal_engine::ring::Ring;
use shoal_engine::supervisor::{DepthGauge, Event, Process, Supervisor, Task};
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::fds::dup_borrowed;

/// Event tags in the tuples `next_events` returns (exported to Python).
pub const EVENT_RESULT: u8 = 0;
pub const EVENT_EXITED: u8 = 1;
pub const EVENT_STOPPED: u8 = 2;
pub const EVENT_FAREWELL: u8 = 3;
pub const EVENT_PROGRESS: u8 = 4;

/// Starts `program` with each `(fd, target)` of `fds` (lent by the caller) placed at
/// `target` in the child.
fn spawn_placing(
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
    to_py(spawn(program, args, env, &keep))
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
    /// `(0, chunk, worker, payload)` for a result, `(1, worker, pid, exit_code,
    /// exit_signal, description, lost_chunk, expected, replace, timed_out, answered)` for an exited
    /// worker, `(3, worker, payload)` for a worker's farewell (before its exit), `(4,
    /// chunk, done)` when a worker tells how far a chunk it runs has got, `(2,)`
    /// once everything has stopped. Empty when the time ran out, after `wake`, or after `(2,)`
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
                } => {
                    let (code, signal, text) = exit_fields(exit);
                    let fields = (
                        EVENT_EXITED,
                        worker,
                        pid,
                        code,
                        signal,
                        text,
                        lost,
                        expected,
                        replace,
                        timed_out,
                        answered,
                    );
                    fields.into_pyobject(py)?.into_any()
                }
                Event::Farewell { worker, payload } => {
                    (EVENT_FAREWELL, worker, PyBytes::new(py, &payload))
                        .into_pyobject(py)?
                        .into_any()
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

/// A process started with `posix_spawn` and held by its pidfd: the zygote.
#[pyclass(frozen, module = "shoal._shoal")]
pub struct ChildProcess {
    child: Mutex<Child>,
    pid: i32,
}

#[pymethods]
impl ChildProcess {
    /// Starts `program` with `args`, `env` added to the environment and each `(fd,
    /// target)` of `fds` placed at `target`; every other descriptor is closed in the child.
    #[new]
    fn new(
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        fds: Vec<(i32, i32)>,
    ) -> PyResult<Self> {
        let child = spawn_placing(&program, &args, &env, &fds)?;
        let pid = child.pid();
        Ok(ChildProcess {
            child: Mutex::new(child),
            pid,
        })
    }

    /// The process id.
    #[getter]
    fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd (owned by this object), readable once the process has exited.
    fn fileno(&self) -> PyResult<i32> {
        let child = self
            .child
            .lock()
            .map_err(|_| PyRuntimeError::new_err("process handle poisoned"))?;
        Ok(child.pidfd().as_raw_fd())
    }

    /// Sends `signal`; nothing if the process has exited.
    fn kill(&self, signal: i32) -> PyResult<()> {
        let child = self
            .child
            .lock()
            .map_err(|_| PyRuntimeError::new_err("process handle poisoned"))?;
        to_py(child.kill(signal))
    }

    /// Waits up to `timeout` seconds (None: forever) for the exit and reaps the process.
    /// Returns a description of how it ended ("exited with code 0"), or None if it is
    /// still running.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        let until = deadline(timeout);
        let mut guard = self
            .child
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("another thread is waiting for the process"))?;
        let child: &mut Child = &mut guard;
        let exit = blocking(py, |interrupt| child.wait(until, interrupt))?;
        Ok(exit.map(|e| e.to_string()))
    }
}

/// Makes the kernel kill this process (SIGKILL) when its parent exits; called by a worker
/// that the zygote just forked. Returns false if the parent is already gone.
#[pyfunction]
pub fn die_with_parent(expected_parent: i32) -> PyResult<bool> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return to_py(Err(Error::last_os("prctl(PR_SET_PDEATHSIG)")));
    }
    // SAFETY: getppid cannot fail.
    Ok(unsafe { libc::getppid() } == expected_parent)
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
