//! Messages between a pool's parent and one worker: a task ring (parent to worker) and a
//! result ring (worker to parent), both [`Ring`]s, plus the pool's shared [`Bell`](crate::bell::Bell).
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

use crate::error::{Error, Result};
use crate::ring::Ring;

mod assembler;
mod outbox;
mod worker_end;

pub use assembler::{Assembler, Fed};
pub use outbox::Outbox;
pub use worker_end::WorkerEnd;

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
    /// Worker to parent, first: it has started (its initializer ran); `aux` is when, in
    /// microseconds of the machine's monotonic clock. No payload. A worker that dies
    /// before it says so died starting up.
    Ready = 8,
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
            8 => Kind::Ready,
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
