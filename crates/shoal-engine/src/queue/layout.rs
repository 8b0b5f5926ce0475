//! The segment's header, each side's redo journal, and records in the ring.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Queue, ABORT, RECORD_HEADER, WHOLE};
use crate::error::{Error, Result};
use crate::lock::RobustMutex;
use crate::seg::{Preamble, HEADER_BYTES};
use crate::wait::Doorbell;

#[repr(C, align(64))]
pub(super) struct Padded<T>(pub(super) T);

/// One side's state (the writer's tail or the reader's head) and its redo journal.
#[repr(C, align(64))]
pub(super) struct Side {
    pub(super) pos: AtomicU64,
    pub(super) count: AtomicU64,
    pub(super) mode: AtomicU64,
    pub(super) journal_valid: AtomicU64,
    pub(super) journal: [AtomicU64; 3],
}

impl Side {
    pub(super) fn load(&self) -> (u64, u64, u64) {
        (
            self.pos.load(Ordering::Acquire),
            self.count.load(Ordering::Acquire),
            self.mode.load(Ordering::Acquire),
        )
    }

    pub(super) fn apply(&self, (pos, count, mode): (u64, u64, u64)) {
        self.mode.store(mode, Ordering::Release);
        self.count.store(count, Ordering::Release);
        // Last: the other side acts on `pos`, so everything else is in place first.
        self.pos.store(pos, Ordering::Release);
    }

    /// Moves to a new state so that a death at any point leaves either the old or the new.
    pub(super) fn commit(&self, state: (u64, u64, u64)) {
        self.journal[0].store(state.0, Ordering::Relaxed);
        self.journal[1].store(state.1, Ordering::Relaxed);
        self.journal[2].store(state.2, Ordering::Relaxed);
        self.journal_valid.store(1, Ordering::Release);
        self.apply(state);
        self.journal_valid.store(0, Ordering::Release);
    }

    /// Finishes a commit that a dead lock holder started.
    pub(super) fn recover(&self) {
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
pub(super) struct Header {
    pub(super) preamble: Preamble,
    pub(super) max_items: u64,
    pub(super) write_lock: Padded<RobustMutex>,
    pub(super) read_lock: Padded<RobustMutex>,
    pub(super) writer: Side,
    pub(super) reader: Side,
    /// Rung by producers; consumers sleep on it when the ring is empty.
    pub(super) data_bell: Padded<Doorbell>,
    /// Rung by consumers; producers sleep on it when the ring is full.
    pub(super) space_bell: Padded<Doorbell>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// The bytes a record with a body of `body` bytes takes: its header, and the body padded
/// to 8 bytes.
pub(super) fn record_len(body: u64) -> u64 {
    RECORD_HEADER + body.div_ceil(8) * 8
}

impl Queue {
    pub(super) fn copy_in(&self, pos: u64, src: &[u8]) {
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

    pub(super) fn copy_out(&self, pos: u64, dst: &mut [u8]) {
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

    pub(super) fn write_record(&self, pos: u64, kind: u8, tag: u8, body: &[u8], total: u64) -> u64 {
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
    pub(super) fn read_record_header(&self, pos: u64) -> Result<(u64, u8, u8, u64)> {
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
    pub(super) fn goes_whole(&self, len: u64) -> bool {
        record_len(len) <= self.cap / 2 && len <= u64::from(u32::MAX)
    }

    /// The largest chunk body, chosen so that two chunks and their headers fit in the ring.
    pub(super) fn chunk_len(&self) -> u64 {
        ((self.cap / 4 - RECORD_HEADER) / 8 * 8).min(u64::from(u32::MAX) / 8 * 8)
    }
}
