//! A single-producer single-consumer ring of variable-size messages in one memfd segment:
//! the channel between a pool's parent and one of its workers.
//!
//! # Layout
//! One page of header (magic, capacity, then the producer's `tail` and the consumer's
//! `head` on cache lines of their own, then the two doorbells), followed by `capacity`
//! bytes of ring. `head` and `tail` are byte positions that only grow; a position's place
//! in the ring is `position % capacity`.
//!
//! Each message is a record: its length as a `u64`, then its bytes, padded to a multiple of
//! 8. Records start 8-byte aligned and may wrap around the end of the ring, so a message
//! can take the whole ring: [`Ring::max_message`] is `capacity - 8`.
//!
//! # Protocol
//! There is exactly one writer of each shared word, so there are no locks. The producer
//! writes records past `tail`, then publishes them with a release store of `tail`; the
//! consumer acquires `tail`, reads the records, then hands their bytes back with a release
//! store of `head`. Each side also remembers the last value it saw of the other's position
//! (a position only grows, so an old value is a safe underestimate) and reads the other's
//! cache line only when that value says there is no room or no data.
//!
//! After publishing, a side rings a [`Doorbell`]: `data` after a push, `space` after a pop.
//! Ringing costs one atomic add, plus a `futex_wake` only while the peer is asleep. "Asleep"
//! lasts until the woken peer actually runs, so with more busy threads than cores nearly
//! every ring is a system call; [`Ring::try_pop_many_with`] frees a whole batch with one
//! store of `head` and rings once for it.
//!
//! # Contract
//! At most one producer and one consumer at a time, across all processes and handles. The
//! role methods take `&mut self`, so a single handle cannot be used by two threads at once;
//! two handles (or two processes) pushing at the same time is a bug the ring does not
//! detect. The consumer checks every record it reads against the published tail, so a
//! misbehaving peer yields [`Error::Corrupt`] rather than a read outside the ring.
//!
//! ```
//! use shoal_engine::ring::Ring;
//! use shoal_engine::wait::NoInterrupt;
//! let mut parent = Ring::create(4096).unwrap();
//! let mut worker = Ring::open(parent.dup_fd().unwrap()).unwrap();
//! // A message may be pushed in parts (say a header and a body): they arrive as one.
//! parent.push_parts(&[b"ta", b"sk"], None, &mut NoInterrupt).unwrap();
//! assert!(parent.try_push_parts(&[b"x"]).unwrap());
//! assert!(parent.try_push_parts(&[b"y"]).unwrap());
//! let len = worker.pop_with(None, &mut NoInterrupt, |bytes| bytes.len()).unwrap();
//! assert_eq!(len, 4);
//! assert_eq!(worker.try_pop_with(|bytes| bytes.to_vec()).unwrap(), Some(b"x".to_vec()));
//! assert_eq!(worker.pop_with(None, &mut NoInterrupt, |bytes| bytes.to_vec()).unwrap(), b"y");
//! assert!(parent.is_empty());
//! assert!(worker.max_message() >= 4000);
//! ```
//!
//! Batches, read in place:
//! ```
//! use shoal_engine::ring::Ring;
//! use shoal_engine::wait::NoInterrupt;
//! let mut ring = Ring::create(4096).unwrap();
//! let tasks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
//! for task in &tasks {
//!     assert!(ring.try_push_parts(&[task]).unwrap());
//! }
//! let mut total = 0u64;
//! let n = ring.try_pop_many_with(64, |bytes| total += u64::from(bytes[0])).unwrap();
//! assert_eq!((n, total), (10, 45));
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::seg::{Preamble, Segment, HEADER_BYTES};
use crate::wait::Doorbell;

mod pop;
mod push;
#[cfg(test)]
mod tests;

/// The smallest ring accepted, in bytes.
pub const MIN_CAPACITY: usize = 64;

const MAGIC: u64 = u64::from_le_bytes(*b"shoalR\0\x01");
/// The length word in front of every message.
const RECORD_HEADER: u64 = 8;

/// Keeps a value on cache lines of its own (128 bytes: adjacent-line prefetch pairs lines).
#[repr(C, align(128))]
struct Padded<T>(T);

#[repr(C)]
struct Header {
    preamble: Preamble,
    /// The end of the published records. Written by the producer only.
    tail: Padded<AtomicU64>,
    /// The end of the consumed records. Written by the consumer only.
    head: Padded<AtomicU64>,
    /// Rung by the producer; the consumer sleeps on it when the ring is empty.
    data_bell: Padded<Doorbell>,
    /// Rung by the consumer; the producer sleeps on it when the ring is full.
    space_bell: Padded<Doorbell>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// The bytes a message of `len` bytes takes in the ring. Callers keep `len` at most
/// `capacity`, so this does not overflow.
fn record_len(len: u64) -> u64 {
    RECORD_HEADER + len.div_ceil(8) * 8
}

/// A message's bytes as they lie in the ring: in one piece, or split by the ring's end.
enum Body<'a> {
    Whole(&'a [u8]),
    Split(&'a [u8], &'a [u8]),
}

/// The mapping and the capacity, kept apart from the cached positions so that the two can
/// be borrowed independently.
#[derive(Debug)]
struct Mapping {
    seg: Segment,
    cap: u64,
}

impl Mapping {
    fn header(&self) -> &Header {
        // SAFETY: validated by create/open; the mapping lives as long as `self`, and the
        // only fields written after creation are atomics.
        unsafe { &*self.seg.base().cast::<Header>() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the segment holds the header page followed by `cap` bytes of ring.
        unsafe { self.seg.base().add(HEADER_BYTES) }
    }

    /// Checks a freshly loaded pair of positions and returns the bytes in use. Positions
    /// are capped at `u64::MAX - cap` so that adding a record to one never overflows; at
    /// 10 GB/s a ring reaches that after some 58 years.
    fn used(&self, head: u64, tail: u64) -> Result<u64> {
        if head <= tail && tail - head <= self.cap && tail <= u64::MAX - self.cap {
            Ok(tail - head)
        } else {
            Err(Error::Corrupt(format!(
                "the ring's positions are inconsistent (head {head}, tail {tail}, capacity {})",
                self.cap
            )))
        }
    }

    fn copy_in(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.cap) as usize;
        let first = src.len().min(self.cap as usize - at);
        // SAFETY: `at + first <= cap` and the rest (`src` is at most `cap` bytes) wraps to the
        // start. These bytes lie between the tail and the head plus `cap`: the consumer does
        // not read them until the tail moves past them, and only the producer writes them.
        unsafe {
            let data = self.data();
            std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, src.len() - first);
        }
    }

    /// The length word of the record at `pos`, which the consumer has seen published.
    fn read_len(&self, pos: u64) -> u64 {
        let at = (pos % self.cap) as usize;
        // SAFETY: aligned and inside the ring as in `Ring::write_parts`; the producer
        // published the word (release store of the tail, which we acquired) and leaves it
        // alone until the head moves past it.
        unsafe { self.data().add(at).cast::<u64>().read() }
    }

    /// The body of the published record at `pos`, whose length the caller has checked.
    fn body(&self, pos: u64, len: u64) -> Body<'_> {
        let at = ((pos + RECORD_HEADER) % self.cap) as usize;
        let len = len as usize;
        let first = len.min(self.cap as usize - at);
        // SAFETY: `at + first <= cap` and the rest (`len < cap`) lies at the ring's start.
        // The bytes were published by the producer, and it writes nothing there until the
        // head moves past them, which the consumer does only after the borrow of `self`
        // these slices carry has ended.
        unsafe {
            let data = self.data();
            let head = std::slice::from_raw_parts(data.add(at), first);
            if first == len {
                Body::Whole(head)
            } else {
                Body::Split(head, std::slice::from_raw_parts(data, len - first))
            }
        }
    }
}

/// One process's handle on a ring. Any handle can push or pop; the contract is that only
/// one pushes and only one pops at a time (see the [module documentation](self)).
#[derive(Debug)]
pub struct Ring {
    map: Mapping,
    /// A head position this handle has seen: room is checked against it before the
    /// consumer's cache line is read.
    seen_head: u64,
    /// A tail position this handle has acquired: records before it are readable without
    /// looking at the producer's cache line.
    seen_tail: u64,
}

impl Ring {
    /// Creates a ring of `capacity` bytes, rounded up to a multiple of 64 (at least
    /// [`MIN_CAPACITY`]). Pages are backed by memory only when first touched.
    pub fn create(capacity: usize) -> Result<Self> {
        if capacity < MIN_CAPACITY {
            return Err(Error::Invalid(format!(
                "a ring needs at least {MIN_CAPACITY} bytes, got {capacity}"
            )));
        }
        let (seg, cap) = Segment::create_with_header("ring", MAGIC, capacity)?;
        // Zero bytes are a valid state for the positions and the doorbells.
        Ok(Ring::new(Mapping { seg, cap }))
    }

    /// Attaches to a ring that another process (or handle) created, taking ownership of
    /// `fd`.
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let (seg, cap) = Segment::open_with_header(fd, MAGIC, MIN_CAPACITY, "ring")?;
        Ok(Ring::new(Mapping { seg, cap }))
    }

    fn new(map: Mapping) -> Self {
        Ring {
            map,
            seen_head: 0,
            seen_tail: 0,
        }
    }

    /// The segment's descriptor, to hand to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.seg.fd()
    }

    /// A fresh descriptor for the segment.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        self.map.seg.dup_fd()
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.map.cap as usize
    }

    /// The largest message the ring takes (it then fills the ring alone): `capacity - 8`.
    /// Larger ones are refused with [`Error::Invalid`].
    pub fn max_message(&self) -> usize {
        (self.map.cap - RECORD_HEADER) as usize
    }

    /// The bytes the waiting messages take, length words and padding included (a
    /// snapshot). A message of `n` bytes takes `8 + n` rounded up to a multiple of 8.
    pub fn len_bytes(&self) -> usize {
        let h = self.map.header();
        // Head first: it never passes the tail, so the tail read after it is not smaller.
        let head = h.head.0.load(Ordering::Acquire);
        let tail = h.tail.0.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.map.cap) as usize
    }

    /// The position just past the last published record: every byte ever pushed, record
    /// framing included. Only grows.
    pub fn produced(&self) -> u64 {
        self.map.header().tail.0.load(Ordering::Acquire)
    }

    /// The position just past the last record the consumer has taken. Only grows; a record
    /// that ended at or before it has been popped.
    pub fn consumed(&self) -> u64 {
        self.map.header().head.0.load(Ordering::Acquire)
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }
}
