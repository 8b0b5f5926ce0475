//! `ChildProcess`: a process started with `posix_spawn` and held by its pidfd (the
//! zygote), and `die_with_parent` for the workers the zygote forks.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use shoal_engine::proc::{self, Child};

use crate::blocking::{blocking, deadline};
use crate::errors::to_py;
use crate::pool::spawn_placing;

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
    to_py(proc::die_with_parent(expected_parent))
}
