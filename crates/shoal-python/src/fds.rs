//! Descriptors handed in from Python: lent ones are duplicated, given ones are taken.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shoal_engine::Error;

use crate::errors::BindingError;

fn check(fd: i32) -> PyResult<()> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "invalid file descriptor {fd}"
        )));
    }
    Ok(())
}

/// A descriptor the caller lends (it stays the caller's to close), duplicated for us.
pub(crate) fn dup_borrowed(fd: i32) -> PyResult<OwnedFd> {
    check(fd)?;
    // SAFETY: the caller guarantees `fd` is open for the duration of this call; we only
    // duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map_err(|e| {
        PyErr::from(BindingError(Error::Os {
            what: "dup",
            source: e,
        }))
    })
}

/// A descriptor the caller gives away: it owns `fd` and will not use it again.
pub(crate) fn take_owned(fd: i32) -> PyResult<OwnedFd> {
    check(fd)?;
    // SAFETY: the caller hands over a descriptor it owns and will not use again.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
