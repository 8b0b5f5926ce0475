//! `ShmBuffer`: a read-only buffer over one block of a pool's or queue's arena, which
//! pickle protocol 5 rebuilds arrays on without copying (see `arena.rs`).

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use shoal_engine::arena::{self, Block};

use crate::errors::to_py;

/// A read-only buffer over one block of an arena.
#[pyclass(frozen, module = "shoal._shoal")]
pub struct ShmBuffer {
    arena: Arc<arena::Arena>,
    block: Block,
    /// Whether this process owns the block: it is then freed when the buffer is dropped.
    owned: AtomicBool,
    /// Views handed out and not yet released.
    exports: AtomicUsize,
}

impl ShmBuffer {
    /// A buffer over `block` of `arena`; `owned`: this process owns the block (adopted).
    pub(crate) fn new(arena: Arc<arena::Arena>, block: Block, owned: bool) -> Self {
        ShmBuffer {
            arena,
            block,
            owned: AtomicBool::new(owned),
            exports: AtomicUsize::new(0),
        }
    }
}

#[pymethods]
impl ShmBuffer {
    /// # Safety
    /// Called by the interpreter with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let ptr = to_py(this.arena.data_ptr(&this.block))?;
        let len = isize::try_from(this.block.len())
            .map_err(|_| PyBufferError::new_err("the block is too large for a buffer"))?;
        // SAFETY: `view` is valid per the caller; the block stays mapped while `slf` lives,
        // and FillInfo stores a new reference to `slf` in the view, so it outlives every
        // view. Read-only: a request for a writable buffer fails with BufferError.
        let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len, 1, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.exports.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// # Safety
    /// Called by the interpreter for a view this object filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::Relaxed);
    }

    fn __len__(&self) -> usize {
        self.block.len()
    }

    /// Pickled as a buffer, so that it can travel on (out of band again where it can):
    /// it arrives as a `memoryview` over the receiver's copy.
    #[pyo3(signature = (_protocol, /))]
    fn __reduce_ex__<'py>(
        slf: Bound<'py, Self>,
        _protocol: i32,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyAny>,))> {
        let py = slf.py();
        let buffer = py
            .import("pickle")?
            .getattr("PickleBuffer")?
            .call1((slf,))?;
        let rebuild = py.import("builtins")?.getattr("memoryview")?;
        Ok((rebuild, (buffer,)))
    }

    /// Where the block starts in the arena.
    #[getter]
    fn offset(&self) -> u64 {
        self.block.offset()
    }

    /// Views of the buffer handed out and not yet released (an array built on it holds one).
    #[getter]
    fn exports(&self) -> usize {
        self.exports.load(Ordering::Relaxed)
    }

    /// Takes the block over from its sender: it is freed when this buffer is gone.
    fn adopt(&self, py: Python<'_>) -> PyResult<()> {
        if !self.owned.swap(true, Ordering::AcqRel) {
            let (arena, offset) = (&self.arena, self.block.offset());
            to_py(py.detach(|| arena.adopt(offset)))?;
        }
        Ok(())
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        if self.owned.load(Ordering::Acquire) {
            let (arena, offset) = (&self.arena, self.block.offset());
            // Nothing to report to: a block that cannot be freed (the arena was repaired
            // after a crash, say) is only memory kept until the arena goes.
            if self.block.len() < arena::PUNCH_ON_FREE {
                let _ = arena.free(offset); // microseconds: bookkeeping only
            } else {
                // A block this large gives its pages back as it is freed (milliseconds a
                // GiB): the interpreter, which drops us holding its lock, lets go of it.
                let _ = Python::attach(|py| py.detach(|| arena.free(offset)));
            }
        }
    }
}
