//! How an arena lies in its memfd: the header, the tree, the head table and the data
//! region, and the accessors and lock over them.

/// Keeps a value on cache lines of its own.
#[repr(C, align(64))]
pub(super) struct Padded<T>(pub(super) T);

/// The statistics, updated under the lock and read without it.
#[repr(C)]
pub(super) struct Counters {
    pub(super) in_use: AtomicU64,
    pub(super) peak: AtomicU64,
    pub(super) blocks: AtomicU64,
    pub(super) allocations: AtomicU64,
    pub(super) frees: AtomicU64,
    pub(super) refused: AtomicU64,
}

#[repr(C)]
pub(super) struct Header {
    pub(super) magic: u64,
    pub(super) version: u64,
    /// Bytes in the data region: `MIN_BLOCK << (levels - 1)`.
    pub(super) capacity: u64,
    pub(super) min_block: u64,
    /// Levels of the tree: the root's order plus one.
    pub(super) levels: u64,
    pub(super) tree_at: u64,
    pub(super) heads_at: u64,
    pub(super) data_at: u64,
    pub(super) lock: Padded<RobustMutex>,
    pub(super) counters: Padded<Counters>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// One entry of the head table, for one [`MIN_BLOCK`] of the data region.
#[repr(C)]
pub(super) struct HeadEntry {
    /// 0 unless a block starts here; then the block's order plus one, with [`RELEASING`]
    /// set while its pages are being given back.
    pub(super) state: AtomicU8,
    /// The pid of the process that owns the block (meaningless while `state` is 0).
    pub(super) owner_pid: AtomicI32,
}

const _: () = assert!(std::mem::size_of::<HeadEntry>() == 8);

/// Where the parts of an arena whose root has order `top` lie, in bytes from the start of
/// the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) tree_at: usize,
    pub(super) heads_at: usize,
    pub(super) data_at: usize,
    pub(super) total: usize,
}

impl Layout {
    pub(super) fn of(top: u32) -> Result<Self> {
        if top > MAX_ORDER {
            return Err(Error::Invalid(format!(
                "an arena holds at most {MAX_CAPACITY} bytes"
            )));
        }
        let leaves = 1usize << top;
        let tree_at = HEADER_BYTES;
        let heads_at = (tree_at + 2 * leaves).next_multiple_of(4096);
        let heads_end = heads_at + leaves * std::mem::size_of::<HeadEntry>();
        let data_at = heads_end.next_multiple_of(DATA_ALIGN);
        let total = data_at
            .checked_add(MIN_BLOCK << top)
            .ok_or_else(|| Error::Invalid("the arena does not fit in memory".into()))?;
        Ok(Layout {
            tree_at,
            heads_at,
            data_at,
            total,
        })
    }
}

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8};
use std::time::Instant;

use super::{Arena, DATA_ALIGN, LOCK_PATIENCE, MAX_CAPACITY, MAX_ORDER, MIN_BLOCK};
use crate::error::{Error, Result};
use crate::lock::{Guard, RobustMutex};
use crate::seg::HEADER_BYTES;
use crate::wait::NoInterrupt;

impl Arena {
    pub(super) fn header(&self) -> &Header {
        // SAFETY: validated by create/open; the mapping lives as long as `self`, and the
        // only fields written after creation are the mutex and atomics.
        unsafe { &*self.seg.base().cast::<Header>() }
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.header().counters.0
    }

    /// The buddy tree, `2 << top` nodes (node 0 unused).
    pub(super) fn tree(&self) -> &[AtomicU8] {
        // SAFETY: the layout puts `2 << top` tree bytes at `tree_at`, inside the mapping,
        // which lives as long as `self`. Any byte is a valid AtomicU8.
        unsafe {
            std::slice::from_raw_parts(
                self.seg.base().add(self.layout.tree_at).cast::<AtomicU8>(),
                2 << self.top,
            )
        }
    }

    /// The head table, one entry per leaf.
    pub(super) fn heads(&self) -> &[HeadEntry] {
        // SAFETY: the layout puts `1 << top` entries at `heads_at`, a page boundary, inside
        // the mapping, which lives as long as `self`. All-zero bytes and any other bytes
        // are valid entries (atomics and padding).
        unsafe {
            std::slice::from_raw_parts(
                self.seg
                    .base()
                    .add(self.layout.heads_at)
                    .cast::<HeadEntry>(),
                1 << self.top,
            )
        }
    }

    /// Takes the lock, waiting at most [`LOCK_PATIENCE`]. A critical section walks a path
    /// of the tree (or, rarely, all blocks or the whole table) and never copies or
    /// punches, so a waiter waits microseconds; a holder that died is noticed at once (the
    /// mutex is robust). Only a live holder that stopped inside (SIGSTOP, a debugger) can
    /// make a waiter wait long, and then it gets an error that says so instead of waiting
    /// for ever. (No interrupt check: the callers hold no interpreter lock while here, and
    /// the wait is bounded.) Repairs the tree first if the previous holder died holding
    /// the lock.
    pub(super) fn lock(&self) -> Result<Guard<'_>> {
        let deadline = Instant::now() + LOCK_PATIENCE;
        let guard = self
            .header()
            .lock
            .0
            .lock(Some(deadline), &mut NoInterrupt)?
            .ok_or(Error::Os {
                what: "taking the arena's lock (a live process has held it for 30 s; is one \
                       of the pool's processes stopped, by SIGSTOP or a debugger?)",
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            })?;
        if guard.owner_died() {
            self.repair(&guard);
        }
        Ok(guard)
    }
}
