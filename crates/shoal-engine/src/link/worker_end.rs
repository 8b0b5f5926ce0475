//! A worker's end of its link: blocking receive of tasks, blocking send of results.

use std::time::Instant;

use super::{piece_for, Assembler, Fed, Frame, Kind, RECORD_SLACK};
use crate::bell::Bell;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::wait::Interrupt;

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
