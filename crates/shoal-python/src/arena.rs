//! `Arena` and `ShmBuffer`: large buffers between processes through shared memory.
//!
//! The sender [`Arena::put`]s a buffer (one copy, without the interpreter lock) and sends
//! the block's `(offset, length)`; the receiver asks for a [`ShmBuffer`] over it, a
//! read-only buffer object that pickle protocol 5 rebuilds arrays on without copying. An
//! owning `ShmBuffer` frees its block when the last array or view over it is gone.

use std::ffi::c_int;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use shoal_engine::arena::{self, Block};

use crate::errors::to_py;
use crate::fds::dup_borrowed;

/// An arena of shared memory for large buffers, one per pool (see `shoal_engine::arena`).
#[pyclass(frozen, name = "Arena", module = "shoal._shoal")]
pub struct Arena {
    inner: Arc<arena::Arena>,
}

#[pymethods]
impl Arena {
    /// A new arena of `capacity` bytes (rounded down to 64 KiB times a power of two);
    /// memory is used only as blocks are written.
    #[new]
    fn new(capacity: usize) -> PyResult<Self> {
        Ok(Arena {
            inner: Arc::new(to_py(arena::Arena::create(capacity))?),
        })
    }

    /// Attaches to the arena behind descriptor `fd` (duplicated; the caller keeps `fd`).
    #[staticmethod]
    fn attach(fd: i32) -> PyResult<Self> {
        let owned = dup_borrowed(fd)?;
        Ok(Arena {
            inner: Arc::new(to_py(arena::Arena::open(owned))?),
        })
    }

    /// The arena's descriptor, to hand to another process (valid while the arena lives).
    fn fileno(&self) -> i32 {
        self.inner.fd().as_raw_fd()
    }

    /// Bytes in the arena's data region.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// Copies the contiguous buffer `data` into a new block and returns its `(offset,
    /// length)`, or None when no block that large is free (the caller then sends the
    /// bytes another way). The block belongs to this process until a receiver adopts it.
    fn put(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Option<(u64, usize)>> {
        let buffer = PyBuffer::<u8>::get(data)?;
        if !buffer.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "only a contiguous buffer can go into the arena",
            ));
        }
        let len = buffer.len_bytes();
        let Some(block) = to_py(self.inner.alloc(len))? else {
            return Ok(None);
        };
        let target = to_py(self.inner.data_ptr(&block))? as usize;
        let source = buffer.buf_ptr() as usize;
        py.detach(|| {
            // SAFETY: `source` is `len` readable bytes kept alive by `buffer` (held across
            // the call); `target` is the start of a fresh block of at least `len` bytes
            // that nobody else can know of yet. The two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(source as *const u8, target as *mut u8, len) }
        });
        Ok(Some((block.offset(), len)))
    }

    /// A read-only buffer over the block at `offset` of `length` bytes. With `own`, this
    /// process adopts the block and the buffer frees it when it is gone; without, the
    /// block stays its sender's (who frees it when it knows the buffer is no longer used).
    fn view(&self, offset: u64, length: usize, own: bool) -> PyResult<ShmBuffer> {
        let block = to_py(self.inner.block_at(offset, length))?;
        if own {
            to_py(self.inner.adopt(offset))?;
        }
        Ok(ShmBuffer {
            arena: self.inner.clone(),
            block,
            owned: AtomicBool::new(own),
            exports: AtomicUsize::new(0),
        })
    }

    /// Frees the block at `offset`.
    fn free(&self, offset: u64) -> PyResult<()> {
        to_py(self.inner.free(offset))
    }

    /// Frees every block owned by process `pid` (after it died); returns how many.
    fn free_owned_by(&self, pid: i32) -> PyResult<usize> {
        to_py(self.inner.free_owned_by(pid))
    }

    /// Gives the pages of free ranges of 1 MiB or more back to the system; returns bytes.
    fn trim(&self, py: Python<'_>) -> PyResult<u64> {
        let inner = self.inner.clone();
        to_py(py.detach(move || inner.trim()))
    }

    /// The arena's counters: capacity, in_use, peak, blocks, allocations, frees, refused.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let out = PyDict::new(py);
        out.set_item("capacity", s.capacity)?;
        out.set_item("in_use", s.in_use)?;
        out.set_item("peak", s.peak)?;
        out.set_item("blocks", s.blocks)?;
        out.set_item("allocations", s.allocations)?;
        out.set_item("frees", s.frees)?;
        out.set_item("refused", s.refused)?;
        Ok(out)
    }
}

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

    /// Whether this process owns the block (and frees it when the buffer goes).
    #[getter]
    fn owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    /// Takes the block over from its sender: it is freed when this buffer is gone.
    fn adopt(&self) -> PyResult<()> {
        if !self.owned.swap(true, Ordering::AcqRel) {
            to_py(self.arena.adopt(self.block.offset()))?;
        }
        Ok(())
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        if self.owned.load(Ordering::Acquire) {
            // Nothing to report to: a block that cannot be freed (the arena was repaired
            // after a crash, say) is only memory kept until the arena goes.
            let _ = self.arena.free(self.block.offset());
        }
    }
}
