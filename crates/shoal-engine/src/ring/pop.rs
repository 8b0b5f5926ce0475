//! The consumer's side: finding the next message, handing it to a closure, releasing
//! its bytes.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{record_len, Body, Ring};
use crate::error::{Error, Result};
use crate::wait::Interrupt;

impl Ring {
    /// The head and the length of the next message, if one is published. Reads the
    /// producer's tail only when the one acquired last shows nothing past the head.
    pub(super) fn next(&mut self) -> Result<Option<(u64, u64)>> {
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
    pub(super) fn record_at(&self, head: u64) -> Result<(u64, u64)> {
        let len = self.map.read_len(head);
        if len > self.max_message() as u64 || head + record_len(len) > self.seen_tail {
            return Err(Error::Corrupt(format!(
                "damaged record at byte {head} of the ring (length {len})"
            )));
        }
        Ok((head, len))
    }

    /// Like [`next`](Self::next), but waits on the data doorbell until the deadline.
    pub(super) fn wait_next(
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
    pub(super) fn consume<R>(
        &mut self,
        (head, len): (u64, u64),
        f: impl FnOnce(Body<'_>) -> R,
    ) -> R {
        let out = f(self.map.body(head, len));
        self.release(head + record_len(len));
        out
    }

    /// Hands the record at `head` and those after it, up to `max` in all, to `f`, then
    /// frees them together. Returns how many it handed over.
    pub(super) fn consume_many(
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
    pub(super) fn release(&self, head: u64) {
        let h = self.map.header();
        // Release: we are done reading the records before the producer may reuse them.
        h.head.0.store(head, Ordering::Release);
        h.space_bell.0.ring();
    }

    /// Calls `f` on the message's bytes: in place in the ring, or, for the one record per
    /// lap that wraps around the ring's end, on a copy put together in a fresh buffer.
    pub(super) fn call_with<R>(body: Body<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
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
