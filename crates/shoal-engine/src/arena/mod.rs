//! A shared-memory arena for large buffers: one memfd that every process of a pool maps,
//! carved into blocks by a buddy allocator whose state lives in the same memfd.
//!
//! A large payload (a numpy array, a bytes object, a pickle out-of-band buffer) crosses to
//! another process in three steps: the sender [allocates](Arena::alloc) a block and copies
//! the bytes in once; only the block's offset and length travel in the message; the
//! receiver [looks the block up](Arena::block_at), [adopts](Arena::adopt) it, builds its
//! objects directly over the shared pages, and [frees](Arena::free) the block when their
//! last reference dies. Any attached process may allocate and any may free.
//!
//! # Layout
//! All offsets are from the start of the memfd.
//! - `0`: the header: magic, layout version, the data region's capacity, the minimum block
//!   size, the number of tree levels, where the parts below start, the robust mutex that
//!   guards every change, and the statistics counters.
//! - `4096`: the buddy tree, one byte per node, `2 * leaves` bytes (node 0 is unused; node
//!   `i` has children `2i` and `2i + 1`; a leaf is one [`MIN_BLOCK`]).
//! - the next page: the head table, one 8-byte entry per leaf (a state byte and a pid).
//! - the next multiple of 2 MiB: the data region, `capacity` bytes. A 2 MiB-aligned file
//!   offset lets the kernel back it with huge pages when shmem huge pages are enabled.
//!
//! The capacity is [`MIN_BLOCK`] times a power of two: [`Arena::create`] rounds the request
//! down. Pages cost memory only once touched, so the metadata of a large, idle arena
//! costs little (1/8192 of the capacity for the head table, 1/32768 for the tree).
//!
//! # Allocator
//! Every node of the tree stores the largest order free in its subtree, plus one (0:
//! nothing free); a block of order `k` is `MIN_BLOCK << k` bytes, aligned to its size.
//! [`alloc`](Arena::alloc) descends from the root towards the left-most subtree that fits,
//! so it always returns the lowest free address of the size it needs, then updates the
//! path back up; [`free`](Arena::free) marks the block free and walks up, merging buddies
//! that are both free. Both are `O(log(capacity / MIN_BLOCK))`.
//!
//! The head table is the ground truth: the entry of a block's first leaf holds its order
//! and owner's pid, every other entry is zero. It lets `free` refuse an offset where no
//! block starts (a wrong or double free is [`Error::Invalid`] and changes nothing), and it
//! lets the repair after a crash rebuild the tree from scratch.
//!
//! # Surviving a death
//! Every change of the tree and the table is made under the robust mutex. The first process
//! to lock it after its holder died rebuilds the tree, and the `in_use` and `blocks`
//! counters, from the head table (releasing blocks, below, stay used). Every change of a
//! block is one single-byte store of its head entry (the commit point), so whatever
//! instruction a holder dies at, the table shows the block before or after the change:
//! - `alloc` writes the tree, then the owner, then the head entry. A death before the
//!   commit loses nothing (the rebuilt tree shows the block free); after it, the block is
//!   allocated to the dead process but its offset was never returned: it is leaked until
//!   somebody calls [`free_owned_by`](Arena::free_owned_by) with the dead pid (a pool's
//!   parent does so for every worker that dies).
//! - `free` clears the head entry first, then the tree. A death before the commit leaves
//!   the block allocated to its owner (leaked if the owner was the dying process, until
//!   `free_owned_by`); after it, the rebuilt tree shows it free. A large block's free
//!   commits twice, entering and leaving the releasing state described below.
//! - `adopt` is a single store of the owner.
//! - The `allocations`, `frees` and `peak` counters may miss the operation that was
//!   interrupted; `in_use` and `blocks` are recomputed exactly.
//!
//! # Physical memory
//! A freed block keeps its pages: copying into warm pages is several times faster than
//! into fresh ones, and since the tree hands out the lowest free addresses first, the warm
//! set stays small. Blocks of [`PUNCH_ON_FREE`] bytes or more give their pages back as soon
//! as they are freed, and [`trim`](Arena::trim) gives back the pages of every free range of
//! 1 MiB or more.
//!
//! Punching a hole takes time (about 10 ms for 64 MiB, 150 ms for 1 GiB of touched pages),
//! so it is never done under the lock. Instead the block is first put in a third state,
//! *releasing*: its head entry keeps its order with the `RELEASING` bit set and names the
//! process punching it as owner, the tree still shows it used, and it is neither live (free
//! and adopt refuse it) nor free (nobody can allocate it). After the punch, a second short
//! critical section frees it. `trim` reserves each range it punches the same way. A
//! process that dies while punching leaves its releasing blocks to `free_owned_by` with
//! its pid, like its live blocks; without that call they stay unusable.
//!
//! ```
//! use shoal_engine::arena::Arena;
//! let sender = Arena::create(16 << 20).unwrap();
//! let block = sender.alloc(100_000).unwrap().unwrap();
//! sender.write(&block, 0, b"payload").unwrap();
//! // Elsewhere, with the descriptor and the (offset, length) pair from a message:
//! let receiver = Arena::open(sender.dup_fd().unwrap()).unwrap();
//! let same = receiver.block_at(block.offset(), block.len()).unwrap();
//! receiver.adopt(same.offset()).unwrap();
//! let mut bytes = [0u8; 7];
//! receiver.read(&same, 0, &mut bytes).unwrap();
//! assert_eq!(&bytes, b"payload");
//! receiver.free(same.offset()).unwrap();
//! assert_eq!(sender.stats().in_use, 0);
//! ```

mod blocks;
mod buddy;
mod layout;
mod pages;
#[cfg(test)]
mod tests;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lock::RobustMutex;
use crate::seg::{Segment, HEADER_BYTES};
use layout::{Header, Layout};

/// The smallest block, and the unit of the head table: every block is this times a power
/// of two, aligned to its own size.
pub const MIN_BLOCK: usize = 64 << 10;
/// Blocks at least this large give their pages back to the system as soon as they are
/// freed.
pub const PUNCH_ON_FREE: usize = 64 << 20;
/// The bit of a head entry's state that marks a block whose pages are being given back.
const RELEASING: u8 = 0x80;
/// The largest capacity accepted: 128 TiB (`MIN_BLOCK << 31`).
pub const MAX_CAPACITY: usize = MIN_BLOCK << MAX_ORDER;

/// The longest a process waits for the arena's lock before it fails (see `Arena::lock`).
pub const LOCK_PATIENCE: Duration = Duration::from_secs(30);
// The error `Arena::lock` gives names the figure.
const _: () = assert!(LOCK_PATIENCE.as_secs() == 30);
const MAGIC: u64 = u64::from_le_bytes(*b"shoalAR1");
const LAYOUT_VERSION: u64 = 1;
const MAX_ORDER: u32 = 31;
/// The bits of a head entry's state that hold the block's order plus one.
const ORDER_BITS: u8 = 0x3f;
/// The order of [`PUNCH_ON_FREE`].
const PUNCH_ORDER: u32 = (PUNCH_ON_FREE / MIN_BLOCK).ilog2();
/// `trim` leaves free ranges smaller than 1 MiB alone: they are reused soonest.
const TRIM_MIN_ORDER: u32 = ((1 << 20) / MIN_BLOCK).ilog2();
/// `trim` punches at most this order at a time, so that it withholds at most 64 MiB from
/// allocators while it punches.
const TRIM_STEP_ORDER: u32 = PUNCH_ORDER;
/// The data region starts on a multiple of this (the size of a huge page).
const DATA_ALIGN: usize = 2 << 20;

/// A block of the arena: where it starts in the data region, the length asked for, and its
/// size. A plain value: it stays valid only until the block is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    offset: u64,
    len: usize,
    order: u8,
}

impl Block {
    /// Where the block starts, in bytes from the start of the data region (what travels in
    /// messages).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The length asked for (at most [`size`](Self::size)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: blocks hold at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes the block takes: [`MIN_BLOCK`] times a power of two.
    pub fn size(&self) -> usize {
        MIN_BLOCK << self.order
    }
}

/// A snapshot of an arena's counters, shared by every process attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArenaStats {
    /// Bytes in the data region.
    pub capacity: u64,
    /// The sum of the sizes of live blocks.
    pub in_use: u64,
    /// The highest `in_use` seen.
    pub peak: u64,
    /// The number of live blocks.
    pub blocks: u64,
    /// Successful allocations so far.
    pub allocations: u64,
    /// Blocks freed so far, by [`Arena::free`] and [`Arena::free_owned_by`].
    pub frees: u64,
    /// Allocations that returned `None`: no free block was large enough.
    pub refused: u64,
}

/// One process's handle on an arena.
#[derive(Debug)]
pub struct Arena {
    seg: Segment,
    /// The root's order: the data region holds `MIN_BLOCK << top` bytes.
    top: u32,
    layout: Layout,
}

/// The calling process's pid, the owner recorded for the blocks it allocates or adopts.
fn my_pid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// The tree value of a wholly free node of order `order`.
fn full(order: u32) -> u8 {
    order as u8 + 1
}

impl Arena {
    /// Creates an arena whose data region holds `capacity` bytes rounded down to
    /// [`MIN_BLOCK`] times a power of two (so `3 << 20` gives 2 MiB). A capacity below
    /// [`MIN_BLOCK`] or above [`MAX_CAPACITY`] is [`Error::Invalid`]. Pages are backed by
    /// memory only once touched.
    pub fn create(capacity: usize) -> Result<Self> {
        if !(MIN_BLOCK..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::Invalid(format!(
                "an arena holds {MIN_BLOCK} to {MAX_CAPACITY} bytes, not {capacity}"
            )));
        }
        let top = (capacity / MIN_BLOCK).ilog2();
        let layout = Layout::of(top)?;
        let seg = Segment::create("arena", layout.total)?;
        let header = seg.base().cast::<Header>();
        // SAFETY: the segment is fresh, zero-filled, page aligned and larger than a header;
        // no other process can see it yet. Zero bytes are a valid state for every counter;
        // the mutex is initialised in place.
        unsafe {
            (*header).version = LAYOUT_VERSION;
            (*header).capacity = (MIN_BLOCK << top) as u64;
            (*header).min_block = MIN_BLOCK as u64;
            (*header).levels = u64::from(top) + 1;
            (*header).tree_at = layout.tree_at as u64;
            (*header).heads_at = layout.heads_at as u64;
            (*header).data_at = layout.data_at as u64;
            RobustMutex::init(&raw mut (*header).lock.0)?;
            (*header).magic = MAGIC;
        }
        let arena = Arena { seg, top, layout };
        arena.fill_tree();
        Ok(arena)
    }

    /// Attaches to an arena that another process created, taking ownership of `fd`.
    /// Anything but an arena of this layout version is [`Error::Corrupt`].
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let seg = Segment::from_fd(fd)?;
        let not_ours = |why: &str| {
            Error::Corrupt(format!(
                "the descriptor is not a shoal arena of this version ({why})"
            ))
        };
        if seg.len() < HEADER_BYTES {
            return Err(not_ours("too short"));
        }
        // SAFETY: the mapping is longer than a header, whose plain fields the creator wrote
        // before sharing the descriptor and nobody writes since.
        let h = unsafe { &*seg.base().cast::<Header>() };
        if h.magic != MAGIC {
            return Err(not_ours("wrong magic number"));
        }
        if h.version != LAYOUT_VERSION {
            return Err(not_ours("another layout version"));
        }
        if h.min_block != MIN_BLOCK as u64 || h.levels == 0 || h.levels > u64::from(MAX_ORDER) + 1 {
            return Err(not_ours("unknown block sizes"));
        }
        let top = (h.levels - 1) as u32;
        let layout = Layout::of(top).map_err(|_| not_ours("too large"))?;
        let as_stored = Layout {
            tree_at: h.tree_at as usize,
            heads_at: h.heads_at as usize,
            data_at: h.data_at as usize,
            total: layout.total,
        };
        if h.capacity != (MIN_BLOCK << top) as u64 || as_stored != layout {
            return Err(not_ours("inconsistent layout"));
        }
        if seg.len() < layout.total {
            return Err(not_ours("truncated"));
        }
        Ok(Arena { seg, top, layout })
    }

    /// The memfd's descriptor, to hand to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.seg.fd()
    }

    /// A fresh close-on-exec descriptor for the arena.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        self.seg.dup_fd()
    }

    /// The size of the data region in bytes: the largest block there can be.
    pub fn capacity(&self) -> usize {
        MIN_BLOCK << self.top
    }
    /// A snapshot of the counters (each read on its own: they may be a few operations
    /// apart while other processes work).
    pub fn stats(&self) -> ArenaStats {
        let c = self.counters();
        ArenaStats {
            capacity: self.capacity() as u64,
            in_use: c.in_use.load(Ordering::Relaxed),
            peak: c.peak.load(Ordering::Relaxed),
            blocks: c.blocks.load(Ordering::Relaxed),
            allocations: c.allocations.load(Ordering::Relaxed),
            frees: c.frees.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }
}
