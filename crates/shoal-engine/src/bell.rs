//! A doorbell in a segment of its own, shared by every worker of a pool: whoever leaves
//! something for the supervisor (a result, room in a task ring) rings it, and the
//! supervisor sleeps on it alone instead of on one doorbell per ring.
//!
//! ```
//! use shoal_engine::bell::Bell;
//! use shoal_engine::wait::NoInterrupt;
//! let bell = Bell::create().unwrap();
//! let other = Bell::open(bell.dup_fd().unwrap()).unwrap();
//! let seen = bell.seq();
//! other.ring();
//! assert!(bell.wait_change(seen, None, &mut NoInterrupt).unwrap());
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::error::Result;
use crate::seg::{Preamble, Segment, HEADER_BYTES};
use crate::wait::{Doorbell, Interrupt};

const MAGIC: u64 = u64::from_le_bytes(*b"shoalB\0\x01");
/// The capacity the segment's preamble claims: the doorbell's line, right after it.
const BODY: usize = 64;

/// A shared [`Doorbell`]; see the [module documentation](self).
#[derive(Debug)]
pub struct Bell {
    seg: Segment,
}

impl Bell {
    /// Creates a bell nobody has rung.
    pub fn create() -> Result<Self> {
        let (seg, _) = Segment::create_with_header("bell", MAGIC, BODY)?;
        Ok(Bell { seg })
    }

    /// Attaches to a bell made by [`Bell::create`], taking ownership of `fd`.
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let (seg, _) = Segment::open_with_header(fd, MAGIC, BODY, "bell")?;
        Ok(Bell { seg })
    }

    fn doorbell(&self) -> &Doorbell {
        // SAFETY: the segment holds a header page and then at least BODY (>= the size of a
        // Doorbell, aligned to 8) bytes, zero-filled at creation, which is an idle
        // doorbell; its fields are atomics, so shared references are fine.
        unsafe { &*self.seg.base().add(HEADER_BYTES).cast::<Doorbell>() }
    }

    /// The segment's descriptor, to hand to a worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.seg.fd()
    }

    /// A fresh descriptor for the segment.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        self.seg.dup_fd()
    }

    /// Rings: one atomic add, plus a wake-up system call only while someone sleeps.
    pub fn ring(&self) {
        self.doorbell().ring();
    }

    /// See [`Doorbell::seq`].
    pub fn seq(&self) -> u32 {
        self.doorbell().seq()
    }

    /// See [`Doorbell::wait_change`].
    pub fn wait_change(
        &self,
        seen: u32,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<bool> {
        self.doorbell().wait_change(seen, deadline, interrupt)
    }

    /// See [`Doorbell::sleep_until_change`].
    pub fn sleep_until_change(&self, seen: u32, deadline: Option<Instant>) -> bool {
        self.doorbell().sleep_until_change(seen, deadline)
    }
}

const _: () = assert!(std::mem::size_of::<Doorbell>() <= BODY);
const _: () = assert!(std::mem::size_of::<Preamble>() <= HEADER_BYTES);
