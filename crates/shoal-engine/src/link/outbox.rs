//! Messages waiting for room in a ring, for a sender that must never block.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{piece_for, Frame};
use crate::error::Result;
use crate::ring::Ring;

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
