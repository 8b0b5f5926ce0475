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
use std::time::Instant;

use crate::error::{Error, Result};
use crate::seg::{Preamble, Segment, HEADER_BYTES};
use crate::wait::{Doorbell, Interrupt};

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

    /// The end of the published records; ours to move, so a relaxed load sees our own.
    fn tail(&self) -> u64 {
        self.map.header().tail.0.load(Ordering::Relaxed)
    }

    /// The free bytes past `tail` (the tail plus anything written but not yet published),
    /// if at least `need` are free now. Reads the consumer's head only when the one seen
    /// last does not leave enough room.
    fn room(&mut self, tail: u64, need: u64) -> Result<Option<u64>> {
        let cached = tail
            .checked_sub(self.seen_head)
            .and_then(|used| self.map.cap.checked_sub(used));
        if let Some(free) = cached.filter(|&free| free >= need) {
            return Ok(Some(free));
        }
        // Acquire: the consumer is done with the bytes before the head it published.
        let head = self.map.header().head.0.load(Ordering::Acquire);
        let free = self.map.cap - self.map.used(head, tail)?;
        self.seen_head = head;
        Ok((free >= need).then_some(free))
    }

    /// Like [`room`](Self::room) for the published tail, but waits on the space doorbell
    /// until the deadline.
    fn wait_room(
        &mut self,
        tail: u64,
        need: u64,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<u64>> {
        if let Some(free) = self.room(tail, need)? {
            return Ok(Some(free));
        }
        let h = self.map.header();
        let mut seen = Ok(self.seen_head);
        let ready = || {
            seen = self
                .map
                .used(h.head.0.load(Ordering::Acquire), tail)
                .map(|used| tail - used);
            // A corrupt ring ends the wait too; the error is reported below.
            seen.as_ref()
                .map_or(true, |&head| tail - head + need <= self.map.cap)
        };
        let ready = h.space_bell.0.wait_until(ready, deadline, interrupt)?;
        let head = seen?;
        self.seen_head = head;
        Ok(ready.then(|| self.map.cap - (tail - head)))
    }

    /// Makes the records before `tail` visible to the consumer and rings the data doorbell.
    fn publish(&self, tail: u64) {
        let h = self.map.header();
        // Release: the records are complete before the consumer can see them.
        h.tail.0.store(tail, Ordering::Release);
        h.data_bell.0.ring();
    }

    /// Pushes one message made of `parts` laid end to end, if there is room now; returns
    /// whether it did. Saves gluing a header to a body in a buffer first. Fails with
    /// [`Error::Invalid`] if the parts add up to more than
    /// [`max_message`](Self::max_message).
    pub fn try_push_parts(&mut self, parts: &[&[u8]]) -> Result<bool> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = self.record_len_checked(len)?;
        let tail = self.tail();
        if self.room(tail, need)?.is_none() {
            return Ok(false);
        }
        self.publish(self.write_parts(tail, len, parts));
        Ok(true)
    }

    /// Like [`try_push_parts`](Self::try_push_parts), but waits for room until `deadline`
    /// (`None`: forever), then fails with [`Error::Full`]. Fails with
    /// [`Error::Interrupted`] if `interrupt` fires while waiting, and with
    /// [`Error::Invalid`], without waiting, if the message can never fit.
    pub fn push_parts(
        &mut self,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = self.record_len_checked(len)?;
        let tail = self.tail();
        if self.wait_room(tail, need, deadline, interrupt)?.is_none() {
            return Err(Error::Full);
        }
        self.publish(self.write_parts(tail, len, parts));
        Ok(())
    }

    /// The record size of a message of `len` bytes, or [`Error::Invalid`] if it can never
    /// fit.
    fn record_len_checked(&self, len: usize) -> Result<u64> {
        if len > self.max_message() {
            return Err(Error::Invalid(format!(
                "a message of {len} bytes does not fit in a ring of {} bytes (at most {})",
                self.capacity(),
                self.max_message()
            )));
        }
        Ok(record_len(len as u64))
    }

    /// Writes one record of `len` bytes made of `parts` at `tail`, which has room for it.
    fn write_parts(&self, tail: u64, len: usize, parts: &[&[u8]]) -> u64 {
        let at = (tail % self.map.cap) as usize;
        // SAFETY: `tail` and `cap` are multiples of 8, so the length word is aligned and lies
        // wholly inside the ring; the bytes are the producer's until it publishes them.
        unsafe { self.map.data().add(at).cast::<u64>().write(len as u64) };
        let mut pos = tail + RECORD_HEADER;
        for part in parts {
            self.map.copy_in(pos, part);
            pos += part.len() as u64;
        }
        tail + record_len(len as u64)
    }

    /// The head and the length of the next message, if one is published. Reads the
    /// producer's tail only when the one acquired last shows nothing past the head.
    fn next(&mut self) -> Result<Option<(u64, u64)>> {
        let h = self.map.header();
        let head = h.head.0.load(Ordering::Relaxed); // ours: only we store it
        if self.seen_tail <= head {
            // Acquire: the records before the tail are complete.
            let tail = h.tail.0.load(Ordering::Acquire);
            self.map.used(head, tail)?;
            self.seen_tail = tail;
            if tail == head {
                return Ok(None);
            }
        }
        self.record_at(head).map(Some)
    }

    /// Checks the record at `head`, which lies before `seen_tail`, and returns its length.
    fn record_at(&self, head: u64) -> Result<(u64, u64)> {
        let len = self.map.read_len(head);
        if len > self.max_message() as u64 || head + record_len(len) > self.seen_tail {
            return Err(Error::Corrupt(format!(
                "damaged record at byte {head} of the ring (length {len})"
            )));
        }
        Ok((head, len))
    }

    /// Like [`next`](Self::next), but waits on the data doorbell until the deadline.
    fn wait_next(
        &mut self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<(u64, u64)>> {
        if let Some(next) = self.next()? {
            return Ok(Some(next));
        }
        let h = self.map.header();
        let head = h.head.0.load(Ordering::Relaxed);
        let mut seen = Ok(self.seen_tail);
        let ready = || {
            let tail = h.tail.0.load(Ordering::Acquire);
            seen = self.map.used(head, tail).map(|_| tail);
            // A corrupt ring ends the wait too; the error is reported below.
            seen.as_ref().map_or(true, |&tail| tail != head)
        };
        let ready = h.data_bell.0.wait_until(ready, deadline, interrupt)?;
        self.seen_tail = seen?;
        if ready {
            self.record_at(head).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Hands the body of the record at `head` to `f`, then frees the record and rings the
    /// space doorbell. If `f` panics, the message stays in the ring.
    fn consume<R>(&mut self, (head, len): (u64, u64), f: impl FnOnce(Body<'_>) -> R) -> R {
        let out = f(self.map.body(head, len));
        self.release(head + record_len(len));
        out
    }

    /// Hands the record at `head` and those after it, up to `max` in all, to `f`, then
    /// frees them together. Returns how many it handed over.
    fn consume_many(
        &mut self,
        (mut head, mut len): (u64, u64),
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize> {
        let mut done = 0;
        let outcome = loop {
            Self::call_with(self.map.body(head, len), &mut f);
            head += record_len(len);
            done += 1;
            if done >= max {
                break Ok(());
            }
            if head == self.seen_tail {
                // Acquire: the records before the tail are complete.
                let tail = self.map.header().tail.0.load(Ordering::Acquire);
                if let Err(e) = self.map.used(head, tail) {
                    break Err(e);
                }
                self.seen_tail = tail;
                if tail == head {
                    break Ok(());
                }
            }
            match self.record_at(head) {
                Ok((_, next)) => len = next,
                Err(e) => break Err(e),
            }
        };
        self.release(head);
        outcome.map(|()| done)
    }

    /// Hands the bytes before `head` back to the producer and rings the space doorbell.
    fn release(&self, head: u64) {
        let h = self.map.header();
        // Release: we are done reading the records before the producer may reuse them.
        h.head.0.store(head, Ordering::Release);
        h.space_bell.0.ring();
    }

    /// Calls `f` on the message's bytes: in place in the ring, or, for the one record per
    /// lap that wraps around the ring's end, on a copy put together in a fresh buffer.
    fn call_with<R>(body: Body<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
        match body {
            Body::Whole(bytes) => f(bytes),
            Body::Split(first, rest) => f(&[first, rest].concat()),
        }
    }

    /// Takes the next message if one is waiting, lending its bytes to `f` where they lie in
    /// shared memory instead of copying them out (except for a message that wraps around
    /// the ring's end, which is assembled in a temporary buffer), and returns what `f`
    /// returns. The message is removed when `f` returns; if `f` panics, it stays.
    pub fn try_pop_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        match self.next()? {
            Some(record) => Ok(Some(self.consume(record, |body| Self::call_with(body, f)))),
            None => Ok(None),
        }
    }

    /// Like [`try_pop_with`](Self::try_pop_with), but waits for a message until `deadline`
    /// (`None`: forever), then fails with [`Error::Empty`]. Fails with
    /// [`Error::Interrupted`] if `interrupt` fires while waiting.
    pub fn pop_with<R>(
        &mut self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let record = self.wait_next(deadline, interrupt)?.ok_or(Error::Empty)?;
        Ok(self.consume(record, |body| Self::call_with(body, f)))
    }

    /// Lends each waiting message, oldest first and at most `max` (at least one) of them,
    /// to `f` as [`try_pop_with`](Self::try_pop_with) does, then removes them together: one
    /// store of the head and one doorbell ring for the lot. Returns how many it handed
    /// over, 0 if none was waiting. If `f` panics, the messages of this call stay.
    pub fn try_pop_many_with(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize> {
        match self.next()? {
            Some(first) => self.consume_many(first, max.max(1), f),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::NoInterrupt;
    use std::time::Duration;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(10))
    }

    /// The next message, copied out of the ring, if one is waiting.
    fn pop_copy(r: &mut Ring) -> Result<Option<Vec<u8>>> {
        r.try_pop_with(|bytes| bytes.to_vec())
    }

    #[test]
    fn fifo_with_varied_sizes_across_many_laps() -> Result<()> {
        let mut r = Ring::create(256)?;
        for i in 0..2000usize {
            let msg: Vec<u8> = (0..i % 61).map(|j| (i + j) as u8).collect();
            // Cut where `i` says, so that the seam between parts falls anywhere in a body,
            // the ring's end included, and sometimes leaves an empty part.
            let (front, back) = msg.split_at(i % (msg.len() + 1));
            assert!(r.try_push_parts(&[front, back])?);
            if i % 3 == 0 {
                assert!(r.try_push_parts(&[&msg[..msg.len() / 2]])?);
                assert_eq!(pop_copy(&mut r)?.as_deref(), Some(&msg[..]));
                assert_eq!(pop_copy(&mut r)?.as_deref(), Some(&msg[..msg.len() / 2]));
            } else {
                let got = r.pop_with(soon(), &mut NoInterrupt, |bytes| bytes.to_vec())?;
                assert_eq!(got, msg);
            }
            assert!(r.is_empty());
        }
        assert_eq!(pop_copy(&mut r)?, None);
        Ok(())
    }

    #[test]
    fn capacity_is_rounded_and_small_rings_refused() -> Result<()> {
        assert!(matches!(Ring::create(63), Err(Error::Invalid(_))));
        let r = Ring::create(100)?;
        assert_eq!(r.capacity(), 128);
        assert_eq!(r.max_message(), 120);
        Ok(())
    }

    #[test]
    fn the_largest_message_fills_the_ring_and_a_larger_one_is_refused() -> Result<()> {
        let mut r = Ring::create(128)?;
        // Move the positions so that the big record wraps.
        assert!(r.try_push_parts(&[&[1; 20]])?);
        assert_eq!(pop_copy(&mut r)?, Some(vec![1; 20]));
        let big: Vec<u8> = (0..120).collect();
        assert!(matches!(
            r.try_push_parts(&[&[0; 121]]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            r.push_parts(&[&[0; 121]], None, &mut NoInterrupt),
            Err(Error::Invalid(_))
        ));
        // The limit is on the message, not on each part.
        assert!(matches!(
            r.try_push_parts(&[&[0; 60], &[0; 61]]),
            Err(Error::Invalid(_))
        ));
        assert!(r.is_empty());
        assert!(r.try_push_parts(&[&big[..]])?);
        assert_eq!(r.len_bytes(), 128);
        assert!(!r.try_push_parts(&[])?);
        assert_eq!(r.try_pop_with(|b| b == &big[..])?, Some(true));
        assert!(r.is_empty());
        Ok(())
    }

    #[test]
    fn empty_messages_take_one_word() -> Result<()> {
        let mut r = Ring::create(64)?;
        for i in 0..8 {
            // An empty message is the same whether it has no parts or only empty ones.
            let parts: &[&[u8]] = if i % 2 == 0 { &[] } else { &[b"", b""] };
            assert!(r.try_push_parts(parts)?);
        }
        assert!(!r.try_push_parts(&[b""])?);
        assert_eq!(r.len_bytes(), 64);
        for _ in 0..8 {
            assert_eq!(pop_copy(&mut r)?, Some(vec![]));
        }
        assert_eq!(pop_copy(&mut r)?, None);
        Ok(())
    }

    #[test]
    fn records_are_padded_to_eight_bytes() -> Result<()> {
        let mut r = Ring::create(64)?;
        assert!(r.try_push_parts(&[b"a"])?);
        assert_eq!(r.len_bytes(), 16);
        assert!(r.try_push_parts(&[&[2; 8]])?);
        assert_eq!(r.len_bytes(), 32);
        // Padding goes by the whole message: parts of 4 and 5 bytes make one 9-byte body.
        assert!(r.try_push_parts(&[&[3; 4], &[3; 5]])?);
        assert_eq!(r.len_bytes(), 56);
        assert_eq!(pop_copy(&mut r)?, Some(b"a".to_vec()));
        assert_eq!(pop_copy(&mut r)?, Some(vec![2; 8]));
        assert_eq!(pop_copy(&mut r)?, Some(vec![3; 9]));
        Ok(())
    }

    #[test]
    fn pop_with_sees_wrapped_and_unwrapped_messages() -> Result<()> {
        let mut r = Ring::create(64)?;
        assert!(r.try_push_parts(&[&[0; 32]])?); // 40 bytes: the next record starts at 40
        assert_eq!(pop_copy(&mut r)?.map(|m| m.len()), Some(32));
        let msg: Vec<u8> = (0..40).collect(); // its body runs from 48 to 88, wrapping at 64
        assert!(r.try_push_parts(&[&msg[..]])?);
        let sum = r.pop_with(None, &mut NoInterrupt, |b| {
            b.iter().map(|&x| u32::from(x)).sum::<u32>()
        })?;
        assert_eq!(sum, (0..40).sum());
        assert!(r.try_push_parts(&[b"straight"])?);
        assert_eq!(r.try_pop_with(|b| b.to_vec())?, Some(b"straight".to_vec()));
        assert_eq!(r.try_pop_with(|b| b.len())?, None);
        Ok(())
    }

    #[test]
    fn a_panicking_reader_leaves_the_message() -> Result<()> {
        let mut r = Ring::create(64)?;
        assert!(r.try_push_parts(&[b"keep"])?);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.try_pop_with(|_| panic!("reader fails"))
        }));
        assert!(outcome.is_err());
        assert_eq!(pop_copy(&mut r)?, Some(b"keep".to_vec()));
        Ok(())
    }

    #[test]
    fn timeouts_say_full_and_empty_and_interrupts_stop_waits() -> Result<()> {
        let mut r = Ring::create(64)?;
        assert_eq!(pop_copy(&mut r)?, None);
        assert!(matches!(
            r.pop_with(soon(), &mut NoInterrupt, |_| ()),
            Err(Error::Empty)
        ));
        r.push_parts(&[&[7; 40]], None, &mut NoInterrupt)?;
        assert!(matches!(
            r.push_parts(&[&[7; 40]], soon(), &mut NoInterrupt),
            Err(Error::Full)
        ));
        let mut calls = 0;
        let mut stop = || {
            calls += 1;
            calls > 1
        };
        assert!(matches!(
            r.push_parts(&[&[7; 40]], None, &mut stop),
            Err(Error::Interrupted)
        ));
        assert_eq!(r.len_bytes(), 48);
        Ok(())
    }

    #[test]
    fn a_full_ring_refuses_until_a_pop_makes_room() -> Result<()> {
        let mut r = Ring::create(64)?;
        let msgs: [&[u8]; 4] = [&[1; 8], &[2; 8], &[3; 8], &[4; 8]]; // 16 bytes each
                                                                     // One record first, so that the later ones wrap around the ring's end.
        assert!(r.try_push_parts(&[&[0; 8]])?);
        for &msg in &msgs[..3] {
            assert!(r.try_push_parts(&[msg])?);
        }
        assert_eq!(r.len_bytes(), 64);
        assert!(!r.try_push_parts(&[msgs[3]])?);
        assert!(matches!(
            r.push_parts(&[msgs[3]], soon(), &mut NoInterrupt),
            Err(Error::Full)
        ));
        // A message that can never fit is refused at once, even with no deadline on a full
        // ring, and none of it goes in.
        assert!(matches!(
            r.push_parts(&[&[0; 8], &[0; 200]], None, &mut NoInterrupt),
            Err(Error::Invalid(_))
        ));
        assert_eq!(r.len_bytes(), 64);
        assert_eq!(pop_copy(&mut r)?, Some(vec![0; 8]));
        r.push_parts(&[msgs[3]], soon(), &mut NoInterrupt)?;
        assert_eq!(pop_copy(&mut r)?, Some(vec![1; 8]));
        r.push_parts(&[msgs[0]], soon(), &mut NoInterrupt)?;
        let mut got = Vec::new();
        while let Some(msg) = pop_copy(&mut r)? {
            got.push(msg[0]);
        }
        assert_eq!(got, [2, 3, 4, 1]);
        Ok(())
    }

    #[test]
    fn pop_many_hands_over_a_batch_and_frees_it_at_once() -> Result<()> {
        let mut r = Ring::create(128)?;
        let mut other = Ring::open(r.dup_fd()?)?;
        for msg in [&b"a"[..], b"bb", b"ccc", b"dddd"] {
            assert!(r.try_push_parts(&[msg])?);
        }
        let mut got = Vec::new();
        assert_eq!(other.try_pop_many_with(3, |b| got.push(b.to_vec()))?, 3);
        assert_eq!(got, [&b"a"[..], b"bb", b"ccc"]);
        assert_eq!(r.len_bytes(), 16);
        // The batch reaches past the tail this handle saw last.
        assert!(r.try_push_parts(&[&[5; 60]])?);
        got.clear();
        assert_eq!(other.try_pop_many_with(10, |b| got.push(b.to_vec()))?, 2);
        assert_eq!(got, [b"dddd".to_vec(), vec![5; 60]]);
        // At least one, even when asked for none.
        assert!(r.try_push_parts(&[b"y"])?);
        assert!(r.try_push_parts(&[b"z"])?);
        got.clear();
        assert_eq!(other.try_pop_many_with(0, |b| got.push(b.to_vec()))?, 1);
        assert_eq!(other.try_pop_many_with(10, |b| got.push(b.to_vec()))?, 1);
        assert_eq!(got, [b"y", b"z"]);
        assert_eq!(other.try_pop_many_with(10, |_| ())?, 0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(r.try_push_parts(&[b"x"]).is_ok_and(|pushed| pushed));
            other.try_pop_many_with(10, |_| panic!("reader fails"))
        }));
        assert!(outcome.is_err());
        assert_eq!(pop_copy(&mut other)?, Some(b"x".to_vec()));
        Ok(())
    }

    #[test]
    fn a_blocked_push_is_woken_by_a_pop_in_another_thread() -> Result<()> {
        let mut producer = Ring::create(64)?;
        let mut consumer = Ring::open(producer.dup_fd()?)?;
        producer.push_parts(&[&[1; 56]], None, &mut NoInterrupt)?;
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let first = consumer.pop_with(None, &mut NoInterrupt, |b| b.to_vec())?;
            let second = consumer.pop_with(None, &mut NoInterrupt, |b| b.to_vec())?;
            Ok::<_, Error>((first, second))
        });
        producer.push_parts(&[&[2; 56]], None, &mut NoInterrupt)?;
        let (first, second) = worker
            .join()
            .map_err(|_| Error::Invalid("consumer panicked".into()))??;
        assert_eq!((first, second), (vec![1; 56], vec![2; 56]));
        Ok(())
    }

    #[test]
    fn open_refuses_what_is_not_a_ring() -> Result<()> {
        let seg = Segment::create("t", HEADER_BYTES + 4096)?;
        assert!(matches!(Ring::open(seg.dup_fd()?), Err(Error::Corrupt(_))));
        let q = crate::queue::Queue::create(4096, 0)?;
        assert!(matches!(Ring::open(q.dup_fd()?), Err(Error::Corrupt(_))));
        let small = Segment::create("t", 100)?;
        assert!(matches!(
            Ring::open(small.dup_fd()?),
            Err(Error::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn damaged_positions_and_lengths_are_reported() -> Result<()> {
        let mut r = Ring::create(64)?;
        let mut other = Ring::open(r.dup_fd()?)?;
        assert!(r.try_push_parts(&[b"abc"])?);
        // A length word claiming more than was published.
        // SAFETY: the test owns both handles; nobody else touches the ring.
        unsafe { r.map.data().cast::<u64>().write(50) };
        assert!(matches!(pop_copy(&mut other), Err(Error::Corrupt(_))));
        // A tail that runs more than a ring ahead of the head.
        r.map.header().tail.0.store(1000, Ordering::Release);
        assert!(matches!(
            pop_copy(&mut Ring::open(r.dup_fd()?)?),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            r.try_push_parts(&[&[0; 64]]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            r.try_push_parts(&[&[0; 56]]),
            Err(Error::Corrupt(_))
        ));
        Ok(())
    }
}
