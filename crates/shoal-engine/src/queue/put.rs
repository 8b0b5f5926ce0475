//! The producer's side: putting messages whole, or a large one in chunks.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    record_len, Message, Queue, ABORT, CLOSED, FIRST, LAST, MIDDLE, OPEN, RECORD_HEADER, WHOLE,
};
use crate::error::{Error, Result};
use crate::wait::Interrupt;

impl Queue {
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
}
