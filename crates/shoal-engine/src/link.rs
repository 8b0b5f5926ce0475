//! Messages between a pool's parent and one worker: a task ring (parent to worker) and a
//! result ring (worker to parent), both [`Ring`]s, plus the pool's shared [`Bell`].
//!
//! Every message is a [`Frame`] (kind, id, aux) and an opaque payload. A message larger
//! than a piece travels as several records, each with the same frame and the `MORE` flag
//! on all but the last; each ring has one producer, so pieces never interleave. A piece is
//! at most half the ring, so the sender writes one while the receiver reads the last.
//!
//! The worker's side ([`WorkerEnd`]) blocks; the parent's side is driven by the supervisor
//! without ever blocking: an [`Outbox`] holds what did not fit yet and an [`Assembler`]
//! collects pieces as they come.
//!
//! ```
//! use shoal_engine::bell::Bell;
//! use shoal_engine::link::{Assembler, Frame, Kind, Outbox, WorkerEnd};
//! use shoal_engine::ring::Ring;
//! use shoal_engine::wait::NoInterrupt;
//! use std::sync::Arc;
//! let (mut tasks, mut results) = (Ring::create(4096)?, Ring::create(4096)?);
//! let bell = Bell::create()?;
//! let mut worker = WorkerEnd::new(
//!     Ring::open(tasks.dup_fd()?)?, Ring::open(results.dup_fd()?)?, Bell::open(bell.dup_fd()?)?,
//! );
//! let mut outbox = Outbox::default();
//! outbox.add(Frame::new(Kind::Task, 7, 1), Arc::from(vec![5u8; 10_000]));
//! while !outbox.is_empty() {
//!     outbox.pump(&mut tasks)?;
//!     if let Some(len) = worker.try_recv(|frame, body| (frame.id, body.len()))? {
//!         assert_eq!(len, (7, 10_000));
//!     }
//! }
//! worker.send(Frame::new(Kind::Result, 7, 0), b"done", None, &mut NoInterrupt)?;
//! let mut assembler = Assembler::default();
//! let got = results.try_pop_with(|record| assembler.feed(record))?;
//! assert!(matches!(got, Some(Ok(Some((_, body)))) if body == b"done"));
//! # Ok::<(), shoal_engine::Error>(())
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::bell::Bell;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::wait::Interrupt;

/// More than a record's header and alignment padding take in a ring.
const RECORD_SLACK: u64 = 64;

/// The bytes of a frame in front of every piece.
pub const FRAME_BYTES: usize = 24;
/// Set on every piece of a message but its last.
const MORE: u8 = 0x80;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Parent to worker: a chunk to run. `id` is the chunk, `aux` the function.
    Task = 1,
    /// Parent to worker: a function's pickled bytes. `id` is the function.
    Define = 2,
    /// Parent to worker: exit once the tasks before this are done.
    Stop = 3,
    /// Worker to parent: the outcome of chunk `id`; `aux` is how many microseconds the
    /// worker spent on it (set by [`WorkerEnd::send`]).
    Result = 4,
    /// Parent to worker: function `id` will not be used again; drop it.
    Forget = 5,
    /// Worker to parent, last: what the pool's exit hook returned as the worker leaves
    /// (opaque here). `id` and `aux` are 0.
    Farewell = 6,
    /// Worker to parent, while chunk `id` runs: `aux` of its tasks are done (for a
    /// progress bar). No payload; it changes nothing the supervisor keeps.
    Progress = 7,
}

impl Kind {
    fn from_byte(byte: u8) -> Result<Kind> {
        Ok(match byte {
            1 => Kind::Task,
            2 => Kind::Define,
            3 => Kind::Stop,
            4 => Kind::Result,
            5 => Kind::Forget,
            6 => Kind::Farewell,
            7 => Kind::Progress,
            other => return Err(Error::Corrupt(format!("unknown message kind {other}"))),
        })
    }
}

/// A message's label: its kind and two numbers whose meaning depends on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// What the message is.
    pub kind: Kind,
    /// The chunk or function it is about.
    pub id: u64,
    /// A second number (the function of a task).
    pub aux: u64,
}

impl Frame {
    /// A frame.
    pub fn new(kind: Kind, id: u64, aux: u64) -> Frame {
        Frame { kind, id, aux }
    }

    fn encode(&self, more: bool) -> [u8; FRAME_BYTES] {
        let mut out = [0u8; FRAME_BYTES];
        out[0] = self.kind as u8 | if more { MORE } else { 0 };
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..24].copy_from_slice(&self.aux.to_le_bytes());
        out
    }

    /// The frame of a record, whether more pieces follow, and the record's payload.
    fn decode(record: &[u8]) -> Result<(Frame, bool, &[u8])> {
        let (head, body) = record
            .split_first_chunk::<FRAME_BYTES>()
            .ok_or_else(|| Error::Corrupt(format!("a record of {} bytes", record.len())))?;
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let frame = Frame::new(Kind::from_byte(head[0] & !MORE)?, word(8), word(16));
        Ok((frame, head[0] & MORE != 0, body))
    }
}

/// The largest payload piece for `ring`: half of it, so that two pieces can be in flight.
fn piece_for(ring: &Ring) -> usize {
    (ring.max_message() / 2).saturating_sub(FRAME_BYTES).max(1)
}

/// What one record did to an [`Assembler`].
#[derive(Debug)]
pub enum Fed<'a> {
    /// A message in one piece, lent in place.
    Whole(Frame, &'a [u8]),
    /// The last piece of a message, put together.
    Joined(Frame, Vec<u8>),
    /// A piece of a message that is not complete yet.
    Partial,
}

impl Fed<'_> {
    /// Lends a completed message to `f`; `None` for a partial one.
    pub fn complete<R>(self, f: impl FnOnce(Frame, &[u8]) -> R) -> Option<R> {
        match self {
            Fed::Whole(frame, body) => Some(f(frame, body)),
            Fed::Joined(frame, body) => Some(f(frame, &body)),
            Fed::Partial => None,
        }
    }
}

/// Puts pieces back together. Feed it every record of one ring, in order.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<(Frame, Vec<u8>)>,
}

impl Assembler {
    /// Takes one record; returns the message it completes, if any.
    pub fn feed(&mut self, record: &[u8]) -> Result<Option<(Frame, Vec<u8>)>> {
        Ok(self.feed_in_place(record)?.complete(|f, b| (f, b.to_vec())))
    }

    /// Takes one record; a message that came in one piece is lent in place, so it is
    /// copied only by whoever keeps it.
    pub fn feed_in_place<'a>(&mut self, record: &'a [u8]) -> Result<Fed<'a>> {
        let (frame, more, body) = Frame::decode(record)?;
        let Some((first, bytes)) = self.partial.as_mut() else {
            if more {
                self.partial = Some((frame, body.to_vec()));
                return Ok(Fed::Partial);
            }
            return Ok(Fed::Whole(frame, body));
        };
        if *first != frame {
            return Err(Error::Corrupt(format!(
                "a piece of {frame:?} inside message {first:?}"
            )));
        }
        bytes.extend_from_slice(body);
        if more {
            return Ok(Fed::Partial);
        }
        match self.partial.take() {
            Some((frame, bytes)) => Ok(Fed::Joined(frame, bytes)),
            None => Ok(Fed::Partial),
        }
    }
}

/// Messages waiting to be written into a ring that had no room for them, for a sender that
/// must never block. Payloads are shared, so the same function or a task sent again after
/// a worker's death costs no copy.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<(Frame, Arc<[u8]>)>,
    /// Payload bytes of the front message already written.
    sent: usize,
}

impl Outbox {
    /// Queues a message.
    pub fn add(&mut self, frame: Frame, payload: Arc<[u8]>) {
        self.queue.push_back((frame, payload));
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes what fits into `ring` now. Returns the frames of the messages whose last
    /// piece went in, with the ring position just past it.
    pub fn pump(&mut self, ring: &mut Ring) -> Result<Vec<(Frame, u64)>> {
        let mut done = Vec::new();
        let piece = piece_for(ring);
        while let Some((frame, payload)) = self.queue.front() {
            let rest = &payload[self.sent..];
            let take = rest.len().min(piece);
            let more = take < rest.len();
            let head = frame.encode(more);
            if !ring.try_push_parts(&[&head, &rest[..take]])? {
                break;
            }
            if more {
                self.sent += take;
            } else {
                done.push((*frame, ring.produced()));
                self.sent = 0;
                self.queue.pop_front();
            }
        }
        Ok(done)
    }

    /// Takes back every message not yet completely written, oldest first. A message
    /// whose first pieces went in is returned too: its receiver will never finish it.
    pub fn drain(&mut self) -> Vec<(Frame, Arc<[u8]>)> {
        self.sent = 0;
        self.queue.drain(..).collect()
    }
}

/// A worker's end of its link: blocking receive of tasks, blocking send of results.
#[derive(Debug)]
pub struct WorkerEnd {
    tasks: Ring,
    results: Ring,
    bell: Bell,
    assembler: Assembler,
    /// When the last message was received: a result's `aux` says how long its chunk
    /// kept the worker busy.
    received: Option<Instant>,
}

impl WorkerEnd {
    /// Wraps the worker's handles on its two rings and the pool's bell.
    pub fn new(tasks: Ring, results: Ring, bell: Bell) -> Self {
        WorkerEnd {
            tasks,
            results,
            bell,
            assembler: Assembler::default(),
            received: None,
        }
    }

    /// Receives the next message if it is all there, lending it to `f`.
    pub fn try_recv<R>(&mut self, f: impl FnOnce(Frame, &[u8]) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        loop {
            let before = self.queued_bytes();
            let assembler = &mut self.assembler;
            let mut popped = 0;
            let got = self.tasks.try_pop_with(|record| {
                popped = record.len() as u64;
                Self::take(assembler, record, &mut f)
            })?;
            self.popped(before, popped);
            match got {
                None => return Ok(None),
                Some(outcome) => {
                    if let Some(out) = outcome? {
                        self.received = Some(Instant::now());
                        return Ok(Some(out));
                    }
                }
            }
        }
    }

    /// Receives the next message, waiting until `deadline` (`None`: forever; else then
    /// [`Error::Empty`]) and asking `interrupt` between sleeps.
    pub fn recv<R>(
        &mut self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
        f: impl FnOnce(Frame, &[u8]) -> R,
    ) -> Result<R> {
        let mut f = Some(f);
        loop {
            let before = self.queued_bytes();
            let assembler = &mut self.assembler;
            let mut popped = 0;
            let outcome = self.tasks.pop_with(deadline, interrupt, |record| {
                popped = record.len() as u64;
                Self::take(assembler, record, &mut f)
            })?;
            self.popped(before, popped);
            if let Some(out) = outcome? {
                self.received = Some(Instant::now());
                return Ok(out);
            }
        }
    }

    fn queued_bytes(&self) -> u64 {
        self.tasks.produced().saturating_sub(self.tasks.consumed())
    }

    /// After a pop of `popped` bytes from a ring that held `before`: the pool writes
    /// without waiting, and a message that did not fit waits in its outbox for the bell.
    /// It always fits once the ring is at most half full (pieces are at most half a
    /// ring), so the bell rings only when a pop crosses that line: a wake-up per task
    /// would cost the parent more than the task.
    fn popped(&self, before: u64, popped: u64) {
        let half = (self.tasks.capacity() / 2) as u64;
        let after = self.queued_bytes();
        let was_over = before > half || after + popped + RECORD_SLACK > half;
        if was_over && after <= half {
            self.bell.ring();
        }
    }

    /// Microseconds since the last message arrived: for a result, how long the worker
    /// spent on its chunk, unpickling and pickling included.
    fn busy_micros(&self) -> u64 {
        self.received.map_or(0, |t| {
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
        })
    }

    fn take<R>(
        assembler: &mut Assembler,
        record: &[u8],
        f: &mut Option<impl FnOnce(Frame, &[u8]) -> R>,
    ) -> Result<Option<R>> {
        match assembler.feed_in_place(record)? {
            Fed::Partial => Ok(None),
            fed => {
                let f = f
                    .take()
                    .ok_or_else(|| Error::Corrupt("a second message for one receive".into()))?;
                Ok(fed.complete(f))
            }
        }
    }

    /// Sends a message, in pieces if it is large, waiting for room as needed; rings the
    /// pool's bell after each piece.
    pub fn send(
        &mut self,
        frame: Frame,
        payload: &[u8],
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<()> {
        let piece = piece_for(&self.results);
        let mut frame = frame;
        if frame.kind == Kind::Result {
            frame.aux = self.busy_micros();
        }
        let mut rest = payload;
        loop {
            let take = rest.len().min(piece);
            let more = take < rest.len();
            let head = frame.encode(more);
            self.results
                .push_parts(&[&head, &rest[..take]], deadline, interrupt)?;
            self.bell.ring();
            rest = &rest[take..];
            if !more {
                return Ok(());
            }
        }
    }
}
