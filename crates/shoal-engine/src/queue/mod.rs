//! The multi-producer multi-consumer queue behind `shoal.Queue`: a byte ring in one memfd
//! segment, safe against any process dying at any instruction.
//!
//! # Layout
//! One page of header, then `capacity` bytes of ring. Producers serialise on a robust
//! write lock and own the tail; consumers serialise on a robust read lock and own the
//! head. So the ring between "whoever holds the write lock" and "whoever holds the read
//! lock" is single-producer single-consumer, and each shared word has one writer at a time.
//!
//! # Surviving a death
//! Each side commits its state (position, message count, mode) through a redo journal:
//! values first, then a "valid" flag, then the live fields, then the flag cleared. A process
//! that inherits a lock from a dead holder replays a valid journal; otherwise the state is
//! the old one or the new one, never a mix. Bytes past the tail are invisible until the tail
//! moves, so a half-written record is simply not there. The consequences:
//! - a producer killed mid-put loses at most that message;
//! - a consumer killed mid-get loses at most that message (if it died after committing);
//! - nothing is duplicated or torn.
//!
//! # Messages larger than the ring
//! A message whose record would take more than half the ring travels in chunks
//! (`FIRST`, `MIDDLE`..., `LAST`). The producer keeps the write lock between chunks and the
//! consumer keeps the read lock, so chunks of two messages never interleave. If the producer
//! abandons a message (death, Ctrl-C, timeout), the next producer appends an `ABORT` record,
//! or the consumer waiting inside it notices the free write lock and drops it.
//!
//! ```
//! use shoal_engine::queue::{Message, Queue, VecSink};
//! use shoal_engine::wait::NoInterrupt;
//! let q = Queue::create(1 << 16, 0).unwrap();
//! q.put(&[Message { tag: 0, body: b"hello" }], None, &mut NoInterrupt).unwrap();
//! let mut sink = VecSink::default();
//! q.get(&mut sink, 1, None, &mut NoInterrupt).unwrap();
//! assert_eq!(sink.messages, vec![(0, b"hello".to_vec())]);
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Guard, RobustMutex};
use crate::seg::Segment;
use crate::wait::Interrupt;

mod get;
mod layout;
mod put;
#[cfg(test)]
mod tests;

use layout::{record_len, Header};

/// Ring capacity in bytes when the caller does not choose one. Pages are backed only once
/// touched, so an idle queue costs a few KiB whatever this is.
pub const DEFAULT_CAPACITY: usize = 64 << 20;
/// The smallest ring accepted.
pub const MIN_CAPACITY: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"shoalQ\0\x01");
const RECORD_HEADER: u64 = 16;
/// How long a non-blocking call waits for another process that is in the middle of a copy.
const LOCK_GRACE: Duration = Duration::from_millis(5);

// Record kinds.
const WHOLE: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const ABORT: u8 = 5;

// Writer modes.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
// Reader modes.
const BETWEEN: u64 = 0;
const RECEIVING: u64 = 1;
const SKIPPING: u64 = 2;

/// One message to put: an opaque tag the engine stores for the caller, and the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Stored and returned untouched (the Python layer uses it for the encoding).
    pub tag: u8,
    /// The payload.
    pub body: &'a [u8],
}

/// Where a consumer's messages are written.
pub trait Sink {
    /// A message of `len` bytes begins; returns the buffer its bytes are copied into.
    fn begin(&mut self, tag: u8, len: usize) -> &mut [u8];
    /// The buffer of the message most recently begun.
    fn current(&mut self) -> &mut [u8];
    /// The message most recently begun will never complete: forget it.
    fn abandon(&mut self);
}

/// A [`Sink`] that collects `(tag, bytes)` pairs.
#[derive(Debug, Default)]
pub struct VecSink {
    /// The messages received, oldest first.
    pub messages: Vec<(u8, Vec<u8>)>,
}

impl Sink for VecSink {
    fn begin(&mut self, tag: u8, len: usize) -> &mut [u8] {
        self.messages.push((tag, vec![0; len]));
        self.current()
    }
    fn current(&mut self) -> &mut [u8] {
        match self.messages.last_mut() {
            Some((_, bytes)) => bytes,
            None => &mut [],
        }
    }
    fn abandon(&mut self) {
        self.messages.pop();
    }
}

/// The queue, as seen from one process.
#[derive(Debug)]
pub struct Queue {
    seg: Segment,
    cap: u64,
}

impl Queue {
    /// Creates a queue with a ring of `capacity` bytes (rounded up to a multiple of 64) that
    /// holds at most `max_items` messages (0: no limit but the bytes).
    pub fn create(capacity: usize, max_items: usize) -> Result<Self> {
        if capacity < MIN_CAPACITY {
            return Err(Error::Invalid(format!(
                "capacity must be at least {MIN_CAPACITY} bytes, got {capacity}"
            )));
        }
        let (seg, cap) = Segment::create_with_header("queue", MAGIC, capacity)?;
        let header = seg.base().cast::<Header>();
        // SAFETY: the segment is fresh, zero-filled and holds a header page; no other process
        // can see it yet. Zero bytes are a valid state for every atomic and doorbell; the
        // mutexes are initialised in place.
        unsafe {
            (*header).max_items = max_items as u64;
            RobustMutex::init(&raw mut (*header).write_lock.0)?;
            RobustMutex::init(&raw mut (*header).read_lock.0)?;
        }
        Ok(Queue { seg, cap })
    }

    /// Attaches to a queue that another process created, taking ownership of `fd`.
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let (seg, cap) = Segment::open_with_header(fd, MAGIC, MIN_CAPACITY, "queue")?;
        Ok(Queue { seg, cap })
    }

    fn header(&self) -> &Header {
        // SAFETY: validated by create/open; the mapping lives as long as `self`.
        unsafe { &*self.seg.base().cast::<Header>() }
    }

    /// The segment's descriptor, to hand to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.seg.fd()
    }

    /// A fresh descriptor for the segment.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        self.seg.dup_fd()
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The most messages the queue holds (0: no limit but the bytes).
    pub fn max_items(&self) -> usize {
        self.header().max_items as usize
    }

    /// The number of complete messages waiting (a snapshot; others may change it at once).
    pub fn len(&self) -> usize {
        let h = self.header();
        let got = h.reader.count.load(Ordering::Acquire);
        let put = h.writer.count.load(Ordering::Acquire);
        put.saturating_sub(got) as usize
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the message limit is reached (a snapshot; never true without a limit).
    pub fn is_full(&self) -> bool {
        let max = self.max_items();
        max != 0 && self.len() >= max
    }

    fn lock<'a>(
        &self,
        mutex: &'a RobustMutex,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<Guard<'a>>> {
        let grace = deadline.map(|d| d.max(Instant::now() + LOCK_GRACE));
        mutex.lock(grace, interrupt)
    }
}
