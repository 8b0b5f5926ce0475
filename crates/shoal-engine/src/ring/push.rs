//! The producer's side: room, writing a message's parts, publishing.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{record_len, Ring, RECORD_HEADER};
use crate::error::{Error, Result};
use crate::wait::Interrupt;

impl Ring {
    /// The end of the published records; ours to move, so a relaxed load sees our own.
    pub(super) fn tail(&self) -> u64 {
        self.map.header().tail.0.load(Ordering::Relaxed)
    }

    /// The free bytes past `tail` (the tail plus anything written but not yet published),
    /// if at least `need` are free now. Reads the consumer's head only when the one seen
    /// last does not leave enough room.
    pub(super) fn room(&mut self, tail: u64, need: u64) -> Result<Option<u64>> {
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
    pub(super) fn wait_room(
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
    pub(super) fn publish(&self, tail: u64) {
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
    pub(super) fn record_len_checked(&self, len: usize) -> Result<u64> {
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
    pub(super) fn write_parts(&self, tail: u64, len: usize, parts: &[&[u8]]) -> u64 {
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
}
