//! Shared-memory segments backed by `memfd_create`.
//!
//! A memfd has no name in any filesystem: the kernel frees it when the last descriptor and
//! mapping go, even when every process using it was SIGKILLed, so nothing leaks into
//! `/dev/shm` and its size limit does not apply. Other processes get the segment by
//! inheriting or being sent the descriptor, then call [`Segment::from_fd`].
//!
//! ```
//! use shoal_engine::seg::Segment;
//! let seg = Segment::create("doc", 4096).unwrap();
//! let again = Segment::from_fd(seg.dup_fd().unwrap()).unwrap();
//! assert_eq!(again.len(), 4096);
//! ```

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A shared mapping of a whole memfd, unmapped and closed on drop.
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access to its bytes
// goes through raw pointers whose synchronisation is the callers' protocol (atomics, locks).
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out the base pointer and the descriptor.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes. Pages are only backed by memory when
    /// first touched, so a large, mostly idle segment costs little.
    pub fn create(name: &str, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::Invalid("a segment needs at least one byte".into()));
        }
        let cname = CString::new(format!("shoal-{name}"))
            .map_err(|_| Error::Invalid("a segment name cannot contain a NUL byte".into()))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::last_os("memfd_create"));
        }
        // SAFETY: `raw` is a descriptor we just created and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| Error::Invalid(format!("segment size {len} is too large")))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(Error::last_os("ftruncate"));
        }
        Self::map(fd, len)
    }

    /// Maps the whole of an existing segment, taking ownership of `fd`.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        // SAFETY: `stat` is plain data; fstat fills it or fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::last_os("fstat"));
        }
        let len = usize::try_from(st.st_size)
            .map_err(|_| Error::Corrupt("the segment reports a negative size".into()))?;
        if len == 0 {
            return Err(Error::Corrupt(
                "the descriptor is not a shoal segment (it is empty)".into(),
            ));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self> {
        // SAFETY: a fresh shared mapping of a descriptor we own; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os("mmap"));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::last_os("mmap"))?;
        Ok(Segment { fd, base, len })
    }

    /// The first byte of the mapping (page aligned).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: segments have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The descriptor, for sending to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new close-on-exec descriptor for the same segment.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        self.fd.try_clone().map_err(|source| Error::Os {
            what: "dup",
            source,
        })
    }
}

/// The first bytes of every shoal structure that lives in a segment: what it is and how many
/// bytes follow its header page. Written once by the creator, before the segment is shared.
#[repr(C)]
#[derive(Debug)]
pub struct Preamble {
    /// Identifies the structure and its layout version.
    pub magic: u64,
    /// The size of the data area after the header page, a multiple of 64.
    pub capacity: u64,
}

/// Size of the header page that precedes the data area of a queue or ring.
pub const HEADER_BYTES: usize = 4096;

impl Segment {
    /// Creates a segment for a structure with a header page and `capacity` data bytes
    /// (rounded up to a multiple of 64), writing its [`Preamble`]. Returns the segment and
    /// the rounded capacity.
    pub fn create_with_header(name: &str, magic: u64, capacity: usize) -> Result<(Self, u64)> {
        let capacity = capacity
            .checked_next_multiple_of(64)
            .ok_or_else(|| Error::Invalid(format!("capacity {capacity} is too large")))?;
        let total = capacity
            .checked_add(HEADER_BYTES)
            .ok_or_else(|| Error::Invalid(format!("capacity {capacity} is too large")))?;
        let seg = Segment::create(name, total)?;
        let preamble = seg.base().cast::<Preamble>();
        // SAFETY: the segment is fresh, page aligned and larger than a preamble; nobody else
        // can see it yet.
        unsafe {
            (*preamble).capacity = capacity as u64;
            (*preamble).magic = magic;
        }
        Ok((seg, capacity as u64))
    }

    /// Maps a segment made by [`Segment::create_with_header`] with the same `magic`,
    /// checking that it is what it claims to be. Returns the segment and its capacity.
    pub fn open_with_header(
        fd: OwnedFd,
        magic: u64,
        min_capacity: usize,
        what: &str,
    ) -> Result<(Self, u64)> {
        let seg = Segment::from_fd(fd)?;
        let not_ours = || {
            Error::Corrupt(format!(
                "the descriptor is not a {what} of this shoal version"
            ))
        };
        if seg.len() < HEADER_BYTES + min_capacity {
            return Err(not_ours());
        }
        // SAFETY: the mapping is larger than a preamble, which the creator wrote before
        // sharing the descriptor.
        let (found, cap) = unsafe {
            let p = seg.base().cast::<Preamble>();
            ((*p).magic, (*p).capacity)
        };
        let fits = usize::try_from(cap)
            .ok()
            .and_then(|cap| cap.checked_add(HEADER_BYTES))
            .is_some_and(|total| total <= seg.len());
        if found != magic || !fits || cap % 64 != 0 || cap < min_capacity as u64 {
            return Err(not_ours());
        }
        Ok((seg, cap))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we unmap exactly the region `map` created; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_seen_through_a_second_mapping() -> Result<()> {
        let a = Segment::create("t", 8192)?;
        let b = Segment::from_fd(a.dup_fd()?)?;
        // SAFETY: both mappings are 8192 bytes long and this test is the only user.
        unsafe {
            a.base().add(5000).write(42);
            assert_eq!(b.base().add(5000).read(), 42);
        }
        Ok(())
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(matches!(Segment::create("t", 0), Err(Error::Invalid(_))));
    }
}
