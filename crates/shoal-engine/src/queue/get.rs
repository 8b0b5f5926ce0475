//! The consumer's side: taking messages, whole or a large one chunk by chunk.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    record_len, Queue, Sink, BETWEEN, CLOSED, FIRST, LAST, MIDDLE, RECEIVING, RECORD_HEADER,
    SKIPPING, WHOLE,
};
use crate::error::{Error, Result};
use crate::wait::{Interrupt, SLICE};

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

impl Queue {
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
