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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Guard, RobustMutex};
use crate::seg::{Preamble, Segment, HEADER_BYTES};
use crate::wait::{Doorbell, Interrupt, SLICE};

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

#[repr(C, align(64))]
struct Padded<T>(T);

/// One side's state (the writer's tail or the reader's head) and its redo journal.
#[repr(C, align(64))]
struct Side {
    pos: AtomicU64,
    count: AtomicU64,
    mode: AtomicU64,
    journal_valid: AtomicU64,
    journal: [AtomicU64; 3],
}

impl Side {
    fn load(&self) -> (u64, u64, u64) {
        (
            self.pos.load(Ordering::Acquire),
            self.count.load(Ordering::Acquire),
            self.mode.load(Ordering::Acquire),
        )
    }

    fn apply(&self, (pos, count, mode): (u64, u64, u64)) {
        self.mode.store(mode, Ordering::Release);
        self.count.store(count, Ordering::Release);
        // Last: the other side acts on `pos`, so everything else is in place first.
        self.pos.store(pos, Ordering::Release);
    }

    /// Moves to a new state so that a death at any point leaves either the old or the new.
    fn commit(&self, state: (u64, u64, u64)) {
        self.journal[0].store(state.0, Ordering::Relaxed);
        self.journal[1].store(state.1, Ordering::Relaxed);
        self.journal[2].store(state.2, Ordering::Relaxed);
        self.journal_valid.store(1, Ordering::Release);
        self.apply(state);
        self.journal_valid.store(0, Ordering::Release);
    }

    /// Finishes a commit that a dead lock holder started.
    fn recover(&self) {
        if self.journal_valid.load(Ordering::Acquire) == 1 {
            self.apply((
                self.journal[0].load(Ordering::Acquire),
                self.journal[1].load(Ordering::Acquire),
                self.journal[2].load(Ordering::Acquire),
            ));
            self.journal_valid.store(0, Ordering::Release);
        }
    }
}

#[repr(C)]
struct Header {
    preamble: Preamble,
    max_items: u64,
    write_lock: Padded<RobustMutex>,
    read_lock: Padded<RobustMutex>,
    writer: Side,
    reader: Side,
    /// Rung by producers; consumers sleep on it when the ring is empty.
    data_bell: Padded<Doorbell>,
    /// Rung by consumers; producers sleep on it when the ring is full.
    space_bell: Padded<Doorbell>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// A consumer's place while it reads: the reader side's state (position, messages taken,
/// mode) as this call moves it, and what the call has done so far.
struct Cursor {
    head: u64,
    got: u64,
    mode: u64,
    /// Messages handed to the sink by this call.
    delivered: usize,
    /// Bytes of the large message being received that are in its buffer.
    received: u64,
}

impl Cursor {
    /// The reader side's state, as [`Side::commit`] takes it.
    fn state(&self) -> (u64, u64, u64) {
        (self.head, self.got, self.mode)
    }
}

/// The parts of a record that reading a chunk needs.
struct Record {
    kind: u8,
    /// Bytes of body.
    len: u64,
    /// Where the body starts in the ring.
    body_at: u64,
    /// Where the next record starts.
    next: u64,
}

/// The queue, as seen from one process.
#[derive(Debug)]
pub struct Queue {
    seg: Segment,
    cap: u64,
}

fn record_len(body: u64) -> u64 {
    RECORD_HEADER + body.div_ceil(8) * 8
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

    fn copy_in(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.cap) as usize;
        let first = src.len().min(self.cap as usize - at);
        // SAFETY: `at + first <= cap` and the rest (< cap, as records are smaller than the
        // ring) wraps to the start; the write-lock holder alone writes past the tail.
        unsafe {
            let data = self.seg.base().add(HEADER_BYTES);
            std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, src.len() - first);
        }
    }

    fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let at = (pos % self.cap) as usize;
        let first = dst.len().min(self.cap as usize - at);
        // SAFETY: as in copy_in; bytes between head and tail are stable until the read-lock
        // holder (us) moves the head.
        unsafe {
            let data = self.seg.base().add(HEADER_BYTES);
            std::ptr::copy_nonoverlapping(data.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    fn write_record(&self, pos: u64, kind: u8, tag: u8, body: &[u8], total: u64) -> u64 {
        let mut head = [0u8; RECORD_HEADER as usize];
        head[0..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        head[4] = kind;
        head[5] = tag;
        head[8..16].copy_from_slice(&total.to_le_bytes());
        self.copy_in(pos, &head);
        self.copy_in(pos + RECORD_HEADER, body);
        record_len(body.len() as u64)
    }

    /// Returns `(body length, kind, tag, total)` of the record at `pos`.
    fn read_record_header(&self, pos: u64) -> Result<(u64, u8, u8, u64)> {
        let mut head = [0u8; RECORD_HEADER as usize];
        self.copy_out(pos, &mut head);
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let mut total = [0u8; 8];
        total.copy_from_slice(&head[8..16]);
        let (kind, tag) = (head[4], head[5]);
        if !(WHOLE..=ABORT).contains(&kind) || record_len(len) > self.cap {
            return Err(Error::Corrupt(format!(
                "damaged record at byte {pos} of the queue"
            )));
        }
        Ok((len, kind, tag, u64::from_le_bytes(total)))
    }

    /// Whether a message of `len` bytes travels as one record: it must leave room for
    /// another, and its length must fit the record header's 32 bits.
    fn goes_whole(&self, len: u64) -> bool {
        record_len(len) <= self.cap / 2 && len <= u64::from(u32::MAX)
    }

    /// The largest chunk body, chosen so that two chunks and their headers fit in the ring.
    fn chunk_len(&self) -> u64 {
        ((self.cap / 4 - RECORD_HEADER) / 8 * 8).min(u64::from(u32::MAX) / 8 * 8)
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

    /// Puts `messages` in order. A batch that fits in the ring goes in at once (all or
    /// nothing); a larger one message by message. Waits for room until `deadline` (`None`:
    /// forever), then fails with [`Error::Full`].
    pub fn put(
        &self,
        messages: &[Message<'_>],
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        if let Some(m) = messages.iter().find(|m| m.body.len() as u64 > u64::MAX / 2) {
            return Err(Error::Invalid(format!(
                "a message of {} bytes is too large",
                m.body.len()
            )));
        }
        let h = self.header();
        let Some(guard) = self.lock(&h.write_lock.0, deadline, interrupt)? else {
            return Err(Error::Full);
        };
        if guard.owner_died() {
            h.writer.recover();
        }
        if h.writer.mode.load(Ordering::Acquire) == OPEN {
            self.abort_open_message(deadline, interrupt)?;
        }
        let total: u64 = messages
            .iter()
            .map(|m| record_len(m.body.len() as u64))
            .sum();
        let count = messages.len() as u64;
        let max = h.max_items;
        let all_whole = messages
            .iter()
            .all(|m| self.goes_whole(m.body.len() as u64));
        if all_whole && total <= self.cap && (max == 0 || count <= max) {
            self.wait_for_room(total, count, deadline, interrupt)?;
            let (mut tail, put, _) = h.writer.load();
            for m in messages {
                tail += self.write_record(tail, WHOLE, m.tag, m.body, 0);
            }
            h.writer.commit((tail, put + count, CLOSED));
            h.data_bell.0.ring();
        } else {
            for m in messages {
                let len = m.body.len() as u64;
                if self.goes_whole(len) {
                    self.wait_for_room(record_len(len), 1, deadline, interrupt)?;
                    let (tail, put, _) = h.writer.load();
                    let used = self.write_record(tail, WHOLE, m.tag, m.body, 0);
                    h.writer.commit((tail + used, put + 1, CLOSED));
                    h.data_bell.0.ring();
                } else {
                    self.put_chunked(*m, deadline, interrupt)?;
                }
            }
        }
        drop(guard);
        Ok(())
    }

    /// Sends one large message in chunks. On failure the message is left open (abandoned)
    /// for the next lock holder to abort.
    fn put_chunked(
        &self,
        m: Message<'_>,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let h = self.header();
        let chunk = self.chunk_len();
        let total = m.body.len() as u64;
        let mut offset = 0u64;
        while offset < total {
            let n = chunk.min(total - offset);
            let items = u64::from(offset == 0);
            self.wait_for_room(record_len(n), items, deadline, interrupt)?;
            let kind = match (offset == 0, offset + n == total) {
                (true, _) => FIRST,
                (false, true) => LAST,
                (false, false) => MIDDLE,
            };
            let (tail, put, _) = h.writer.load();
            let body = &m.body[offset as usize..(offset + n) as usize];
            let used = self.write_record(tail, kind, m.tag, body, total);
            let state = if kind == LAST {
                (tail + used, put + 1, CLOSED)
            } else {
                (tail + used, put, OPEN)
            };
            h.writer.commit(state);
            h.data_bell.0.ring();
            offset += n;
        }
        Ok(())
    }

    /// Appends an ABORT record for a message a previous producer left unfinished.
    fn abort_open_message(
        &self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let h = self.header();
        self.wait_for_room(RECORD_HEADER, 0, deadline, interrupt)?;
        let (tail, put, _) = h.writer.load();
        let used = self.write_record(tail, ABORT, 0, &[], 0);
        h.writer.commit((tail + used, put, CLOSED));
        h.data_bell.0.ring();
        Ok(())
    }

    /// Waits (holding the write lock) until `bytes` and `items` more fit.
    fn wait_for_room(
        &self,
        bytes: u64,
        items: u64,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let h = self.header();
        let max = h.max_items;
        let tail = h.writer.pos.load(Ordering::Relaxed);
        let put = h.writer.count.load(Ordering::Relaxed);
        let room = || {
            let head = h.reader.pos.load(Ordering::Acquire);
            let got = h.reader.count.load(Ordering::Acquire);
            self.cap - (tail - head) >= bytes
                && (max == 0 || items == 0 || put - got + items <= max)
        };
        if h.space_bell.0.wait_until(room, deadline, interrupt)? {
            Ok(())
        } else {
            Err(Error::Full)
        }
    }

    /// Receives up to `max` messages into `sink`, waiting for the first until `deadline`
    /// (then [`Error::Empty`]). Returns how many were received. Several are returned only
    /// when they are already waiting; a large (chunked) message always comes alone.
    pub fn get(
        &self,
        sink: &mut dyn Sink,
        max: usize,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<usize> {
        let h = self.header();
        let Some(guard) = self.lock(&h.read_lock.0, deadline, interrupt)? else {
            return Err(Error::Empty);
        };
        if guard.owner_died() {
            h.reader.recover();
            let (head, got, mode) = h.reader.load();
            if mode == RECEIVING {
                // The dead consumer's copy of a large message went with it: skip the rest.
                h.reader.commit((head, got, SKIPPING));
            }
        }
        let result = self.receive(sink, max.max(1), deadline, interrupt);
        drop(guard);
        h.space_bell.0.ring();
        result
    }

    /// Reads up to `max` messages into `sink`, holding the read lock: whole messages
    /// until `max` or an empty ring, or the one large message that starts first.
    fn receive(
        &self,
        sink: &mut dyn Sink,
        max: usize,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<usize> {
        let h = self.header();
        let (head, got, mode) = h.reader.load();
        let mut at = Cursor {
            head,
            got,
            mode,
            delivered: 0,
            received: 0,
        };
        loop {
            let done = if at.head == h.writer.pos.load(Ordering::Acquire) {
                self.await_more(&mut at, sink, deadline, interrupt)?
            } else {
                self.take_record(&mut at, sink, max)?
            };
            if let Some(delivered) = done {
                return Ok(delivered);
            }
        }
    }

    /// The ring is empty at the cursor. Returns what this call delivered, if anything;
    /// otherwise waits for more (until `deadline` between messages: [`Error::Empty`]
    /// after it) and returns `None` to read on.
    fn await_more(
        &self,
        at: &mut Cursor,
        sink: &mut dyn Sink,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<usize>> {
        let h = self.header();
        h.reader.commit(at.state());
        if at.delivered > 0 {
            return Ok(Some(at.delivered));
        }
        h.space_bell.0.ring();
        let head = at.head;
        if at.mode != BETWEEN {
            self.await_chunk(at, sink, interrupt)?;
            return Ok(None);
        }
        let more = h.data_bell.0.wait_until(
            || h.writer.pos.load(Ordering::Acquire) != head,
            deadline,
            interrupt,
        )?;
        if more {
            Ok(None)
        } else {
            Err(Error::Empty)
        }
    }

    /// Inside a large message, with the ring empty: waits one slice for its next chunk
    /// whatever the deadline says, then checks that its producer has not given up (and
    /// drops the message if it has). An interrupted wait gives up the message being
    /// received: the chunks still to come are skipped.
    fn await_chunk(
        &self,
        at: &mut Cursor,
        sink: &mut dyn Sink,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let h = self.header();
        let head = at.head;
        let slice = Some(Instant::now() + SLICE);
        let waited = h.data_bell.0.wait_until(
            || h.writer.pos.load(Ordering::Acquire) != head,
            slice,
            interrupt,
        );
        match waited {
            Err(e) => {
                if at.mode == RECEIVING {
                    sink.abandon();
                    h.reader.commit((at.head, at.got, SKIPPING));
                }
                Err(e)
            }
            Ok(true) => Ok(()),
            Ok(false) => {
                if self.drop_abandoned_message(head)? {
                    if at.mode == RECEIVING {
                        sink.abandon();
                    }
                    at.mode = BETWEEN;
                    h.reader.commit(at.state());
                }
                Ok(())
            }
        }
    }

    /// Reads the record at the cursor into `sink` (or past it) and moves the cursor on.
    /// Returns what this call delivered once it is done, `None` to read on.
    fn take_record(
        &self,
        at: &mut Cursor,
        sink: &mut dyn Sink,
        max: usize,
    ) -> Result<Option<usize>> {
        let h = self.header();
        let (len, kind, tag, total) = self.read_record_header(at.head)?;
        let record = Record {
            kind,
            len,
            body_at: at.head + RECORD_HEADER,
            next: at.head + record_len(len),
        };
        match (kind, at.mode) {
            (WHOLE, mode) => {
                if mode == RECEIVING {
                    sink.abandon();
                }
                self.copy_out(record.body_at, sink.begin(tag, len as usize));
                (at.head, at.got, at.mode) = (record.next, at.got + 1, BETWEEN);
                at.delivered += 1;
                if at.delivered >= max {
                    h.reader.commit(at.state());
                    return Ok(Some(at.delivered));
                }
            }
            (FIRST, mode) => {
                if at.delivered > 0 {
                    h.reader.commit(at.state());
                    return Ok(Some(at.delivered));
                }
                if mode == RECEIVING {
                    sink.abandon();
                }
                if len > total {
                    return Err(Error::Corrupt("a chunk is longer than its message".into()));
                }
                let buf = sink.begin(tag, total as usize);
                self.copy_out(record.body_at, &mut buf[..len as usize]);
                at.received = len;
                (at.head, at.mode) = (record.next, RECEIVING);
                h.reader.commit(at.state());
                h.space_bell.0.ring();
            }
            (MIDDLE | LAST, RECEIVING) => return self.take_chunk(at, sink, &record),
            (MIDDLE, _) => {
                at.head = record.next;
                h.reader.commit(at.state());
                h.space_bell.0.ring();
            }
            (LAST, _) => {
                // The end of a message whose reader died: it was counted in, count it out.
                (at.head, at.got, at.mode) = (record.next, at.got + 1, BETWEEN);
            }
            _ => {
                // ABORT: the message being received (or skipped) will never complete.
                if at.mode == RECEIVING {
                    sink.abandon();
                }
                (at.head, at.mode) = (record.next, BETWEEN);
            }
        }
        Ok(None)
    }

    /// Copies a middle or last chunk of the large message being received into its
    /// buffer; after the last, the message is delivered and this call is done.
    fn take_chunk(
        &self,
        at: &mut Cursor,
        sink: &mut dyn Sink,
        record: &Record,
    ) -> Result<Option<usize>> {
        let h = self.header();
        let buf = sink.current();
        let end = at.received + record.len;
        if end > buf.len() as u64 || (record.kind == LAST && end != buf.len() as u64) {
            return Err(Error::Corrupt(
                "chunks do not add up to their message".into(),
            ));
        }
        self.copy_out(record.body_at, &mut buf[at.received as usize..end as usize]);
        at.received = end;
        at.head = record.next;
        if record.kind == LAST {
            h.reader.commit((at.head, at.got + 1, BETWEEN));
            return Ok(Some(1));
        }
        h.reader.commit(at.state());
        h.space_bell.0.ring();
        Ok(None)
    }

    /// Called by a consumer inside a large message that found the ring empty: if no
    /// producer holds the write lock, the message's producer abandoned it. Clears the
    /// writer's open mark and returns true in that case.
    fn drop_abandoned_message(&self, head: u64) -> Result<bool> {
        let h = self.header();
        let Some(guard) = h.write_lock.0.try_lock()? else {
            return Ok(false);
        };
        if guard.owner_died() {
            h.writer.recover();
        }
        let (tail, put, _) = h.writer.load();
        if tail != head {
            return Ok(false); // more arrived meanwhile (perhaps an ABORT): read it first
        }
        h.writer.commit((tail, put, CLOSED));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::NoInterrupt;

    fn msg(body: &[u8]) -> Message<'_> {
        Message { tag: 7, body }
    }

    #[test]
    fn fifo_order_and_counts() -> Result<()> {
        let q = Queue::create(MIN_CAPACITY, 0)?;
        for i in 0..10u8 {
            q.put(&[msg(&[i; 3])], None, &mut NoInterrupt)?;
        }
        assert_eq!(q.len(), 10);
        let mut sink = VecSink::default();
        assert_eq!(q.get(&mut sink, 4, None, &mut NoInterrupt)?, 4);
        assert_eq!(q.get(&mut sink, 100, None, &mut NoInterrupt)?, 6);
        let got: Vec<u8> = sink.messages.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
        Ok(())
    }

    #[test]
    fn timeouts_say_full_and_empty() -> Result<()> {
        let q = Queue::create(MIN_CAPACITY, 2)?;
        let soon = || Some(Instant::now() + Duration::from_millis(10));
        let mut sink = VecSink::default();
        assert!(matches!(
            q.get(&mut sink, 1, soon(), &mut NoInterrupt),
            Err(Error::Empty)
        ));
        q.put(&[msg(b"a"), msg(b"b")], None, &mut NoInterrupt)?;
        assert!(q.is_full());
        assert!(matches!(
            q.put(&[msg(b"c")], soon(), &mut NoInterrupt),
            Err(Error::Full)
        ));
        assert!(matches!(
            q.put(&[msg(b"x"), msg(b"y"), msg(b"z")], soon(), &mut NoInterrupt),
            Err(Error::Full)
        ));
        assert_eq!(q.len(), 2);
        Ok(())
    }

    #[test]
    fn a_message_larger_than_the_ring_gets_through() -> Result<()> {
        let q = std::sync::Arc::new(Queue::create(MIN_CAPACITY, 0)?);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let producer = {
            let (q, big) = (q.clone(), big.clone());
            std::thread::spawn(move || {
                q.put(
                    &[msg(b"before"), msg(&big), msg(b"after")],
                    None,
                    &mut NoInterrupt,
                )
            })
        };
        let mut sink = VecSink::default();
        while sink.messages.len() < 3 {
            q.get(&mut sink, 10, None, &mut NoInterrupt)?;
        }
        assert!(producer.join().is_ok());
        assert_eq!(sink.messages[0].1, b"before");
        assert_eq!(sink.messages[1].1, big);
        assert_eq!(sink.messages[2].1, b"after");
        assert!(q.is_empty());
        Ok(())
    }

    #[test]
    fn an_abandoned_large_message_is_dropped_by_its_reader() -> Result<()> {
        let q = std::sync::Arc::new(Queue::create(MIN_CAPACITY, 0)?);
        let big = vec![1u8; 50_000];
        // The producer gives up once the ring is full of its chunks (nobody reads yet).
        let soon = Some(Instant::now() + Duration::from_millis(20));
        assert!(matches!(
            q.put(&[msg(&big)], soon, &mut NoInterrupt),
            Err(Error::Full)
        ));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut sink = VecSink::default();
                q.get(&mut sink, 1, None, &mut NoInterrupt)
                    .map(|_| sink.messages)
            })
        };
        q.put(&[msg(b"next")], None, &mut NoInterrupt)?;
        let got = consumer
            .join()
            .map_err(|_| Error::Invalid("consumer panicked".into()))??;
        assert_eq!(got, vec![(7, b"next".to_vec())]);
        assert!(q.is_empty());
        Ok(())
    }

    #[test]
    fn reopening_by_descriptor_shares_the_queue() -> Result<()> {
        let a = Queue::create(MIN_CAPACITY, 5)?;
        let b = Queue::open(a.dup_fd()?)?;
        a.put(&[msg(b"hi")], None, &mut NoInterrupt)?;
        let mut sink = VecSink::default();
        b.get(&mut sink, 1, None, &mut NoInterrupt)?;
        assert_eq!(sink.messages[0].1, b"hi");
        assert_eq!(b.max_items(), 5);
        Ok(())
    }
}
