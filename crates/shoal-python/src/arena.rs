//! `Arena`: large buffers between processes through shared memory.
//!
//! The sender [`Arena::put`]s a buffer (one copy) and sends the block's `(offset,
//! length)`; the receiver asks for a `ShmBuffer` over it (`shm_buffer.rs`), a read-only
//! buffer object that pickle protocol 5 rebuilds arrays on without copying. An owning
//! `ShmBuffer` frees its block when the last array or view over it is gone. Every call
//! into the engine's arena runs detached from the interpreter: its lock may be contended
//! and a free of a large block gives its pages back to the system (`fallocate`), which
//! takes milliseconds for a GiB.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use shoal_engine::arena;

use crate::errors::to_py;
use crate::fds::dup_borrowed;
use crate::shm_buffer::ShmBuffer;

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
        let source = buffer.buf_ptr() as usize;
        let inner = &self.inner;
        let placed = py.detach(|| -> shoal_engine::Result<Option<u64>> {
            let Some(block) = inner.alloc(len)? else {
                return Ok(None);
            };
            let target = inner.data_ptr(&block)? as usize;
            // SAFETY: `source` is `len` readable bytes kept alive by `buffer` (held across
            // the call); `target` is the start of a fresh block of at least `len` bytes
            // that nobody else can know of yet. The two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(source as *const u8, target as *mut u8, len) }
            Ok(Some(block.offset()))
        });
        Ok(to_py(placed)?.map(|offset| (offset, len)))
    }

    /// A read-only buffer over the block at `offset` of `length` bytes. With `own`, this
    /// process adopts the block and the buffer frees it when it is gone; without, the
    /// block stays its sender's (who frees it when it knows the buffer is no longer used).
    fn view(&self, py: Python<'_>, offset: u64, length: usize, own: bool) -> PyResult<ShmBuffer> {
        let block = to_py(self.inner.block_at(offset, length))?;
        if own {
            let inner = &self.inner;
            to_py(py.detach(|| inner.adopt(offset)))?;
        }
        Ok(ShmBuffer::new(self.inner.clone(), block, own))
    }

    /// Frees the block at `offset`.
    fn free(&self, py: Python<'_>, offset: u64) -> PyResult<()> {
        let inner = &self.inner;
        to_py(py.detach(|| inner.free(offset)))
    }

    /// Takes over the live blocks among `offsets` that process `pid` owns; returns how
    /// many.
    fn reclaim(&self, py: Python<'_>, pid: i32, offsets: Vec<u64>) -> PyResult<usize> {
        let inner = &self.inner;
        to_py(py.detach(|| inner.reclaim(pid, &offsets)))
    }

    /// Frees every block owned by process `pid` (after it died); returns how many.
    fn free_owned_by(&self, py: Python<'_>, pid: i32) -> PyResult<usize> {
        let inner = &self.inner;
        to_py(py.detach(|| inner.free_owned_by(pid)))
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
