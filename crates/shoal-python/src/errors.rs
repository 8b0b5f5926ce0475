//! The one mapping from engine errors to Python exceptions.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::PyErr;
use shoal_engine::Error;

pyo3::import_exception!(queue, Full);
pyo3::import_exception!(queue, Empty);

/// An engine error on its way to Python. `Interrupted` carries the exception raised by the
/// signal handler (usually KeyboardInterrupt), which `blocking` puts back in.
pub struct BindingError(pub Error);

impl From<Error> for BindingError {
    fn from(e: Error) -> Self {
        BindingError(e)
    }
}

impl From<BindingError> for PyErr {
    fn from(BindingError(e): BindingError) -> PyErr {
        match e {
            Error::Full => Full::new_err("the queue is full"),
            Error::Empty => Empty::new_err(()),
            Error::Invalid(text) => PyValueError::new_err(text),
            Error::Corrupt(text) => PyValueError::new_err(text),
            Error::Os { what, source } => {
                let errno = source.raw_os_error().unwrap_or(0);
                PyOSError::new_err((errno, format!("{what} failed: {source}")))
            }
            Error::Interrupted => PyOSError::new_err((libc::EINTR, "interrupted")),
        }
    }
}

/// Maps an engine result into a Python one.
pub fn to_py<T>(r: shoal_engine::Result<T>) -> PyResult<T> {
    r.map_err(|e| PyErr::from(BindingError(e)))
}
