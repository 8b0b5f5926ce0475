//! Where received messages land: large ones straight into a new `bytes` object, so a
//! message is copied once out of shared memory and allocated once.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shoal_engine::queue::Sink;

/// Messages at least this large are copied straight into a `bytes` object. Smaller ones go
/// through a Rust buffer, so that receiving them never waits for the GIL.
const DIRECT_BYTES: usize = 64 * 1024;

enum Body {
    Buffer(Vec<u8>),
    /// A fresh `bytes` object nobody else has seen yet, and its data pointer.
    Bytes(Py<PyBytes>, *mut u8, usize),
}

/// Collects `(tag, body)` pairs while the engine copies messages out of the ring.
#[derive(Default)]
pub struct BytesSink {
    messages: Vec<(u8, Body)>,
}

// SAFETY: the raw pointer points into a `bytes` object this sink alone references (it was
// just created and not yet returned to Python), so moving the sink to the thread that runs
// the detached engine call cannot race with anyone.
unsafe impl Send for BytesSink {}

fn new_bytes(len: usize) -> Option<Body> {
    let size = isize::try_from(len).ok()?;
    Python::attach(|py| {
        // SAFETY: PyBytes_FromStringAndSize with a null source allocates `len` bytes of
        // uninitialised data; we own the only reference and fill it before Python sees it.
        let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
        if raw.is_null() {
            PyErr::take(py); // out of memory: fall back to a Rust buffer
            return None;
        }
        // SAFETY: `raw` is a new, owned reference to a bytes object.
        let bytes: Bound<'_, PyBytes> =
            unsafe { Bound::from_owned_ptr(py, raw).cast_into_unchecked() };
        // SAFETY: PyBytes_AsString returns the object's data buffer, valid while it lives.
        let data = unsafe { pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) }.cast::<u8>();
        Some(Body::Bytes(bytes.unbind(), data, len))
    })
}

impl Sink for BytesSink {
    fn begin(&mut self, tag: u8, len: usize) -> &mut [u8] {
        let body = if len >= DIRECT_BYTES {
            new_bytes(len)
        } else {
            None
        };
        let body = body.unwrap_or_else(|| Body::Buffer(vec![0; len]));
        self.messages.push((tag, body));
        self.current()
    }

    fn current(&mut self) -> &mut [u8] {
        match self.messages.last_mut() {
            Some((_, Body::Buffer(buf))) => buf,
            // SAFETY: see `new_bytes`; the object is alive (we hold it) and unshared.
            Some((_, Body::Bytes(_, data, len))) => unsafe {
                std::slice::from_raw_parts_mut(*data, *len)
            },
            None => &mut [],
        }
    }

    fn abandon(&mut self) {
        self.messages.pop();
    }
}

impl BytesSink {
    /// The messages as a list of `(tag, bytes)` tuples.
    pub fn into_list(self, py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        let items = self.messages.into_iter().map(|(tag, body)| match body {
            Body::Buffer(buf) => (tag, PyBytes::new(py, &buf)),
            Body::Bytes(bytes, _, _) => (tag, bytes.into_bound(py)),
        });
        PyList::new(py, items)
    }
}
