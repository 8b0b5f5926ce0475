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

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Guard, RobustMutex};
use crate::seg::{Segment, HEADER_BYTES};
use crate::wait::NoInterrupt;

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

/// Keeps a value on cache lines of its own.
#[repr(C, align(64))]
struct Padded<T>(T);

/// The statistics, updated under the lock and read without it.
#[repr(C)]
struct Counters {
    in_use: AtomicU64,
    peak: AtomicU64,
    blocks: AtomicU64,
    allocations: AtomicU64,
    frees: AtomicU64,
    refused: AtomicU64,
}

#[repr(C)]
struct Header {
    magic: u64,
    version: u64,
    /// Bytes in the data region: `MIN_BLOCK << (levels - 1)`.
    capacity: u64,
    min_block: u64,
    /// Levels of the tree: the root's order plus one.
    levels: u64,
    tree_at: u64,
    heads_at: u64,
    data_at: u64,
    lock: Padded<RobustMutex>,
    counters: Padded<Counters>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// One entry of the head table, for one [`MIN_BLOCK`] of the data region.
#[repr(C)]
struct HeadEntry {
    /// 0 unless a block starts here; then the block's order plus one, with [`RELEASING`]
    /// set while its pages are being given back.
    state: AtomicU8,
    /// The pid of the process that owns the block (meaningless while `state` is 0).
    owner_pid: AtomicI32,
}

const _: () = assert!(std::mem::size_of::<HeadEntry>() == 8);

/// Where the parts of an arena whose root has order `top` lie, in bytes from the start of
/// the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    tree_at: usize,
    heads_at: usize,
    data_at: usize,
    total: usize,
}

impl Layout {
    fn of(top: u32) -> Result<Self> {
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

    fn header(&self) -> &Header {
        // SAFETY: validated by create/open; the mapping lives as long as `self`, and the
        // only fields written after creation are the mutex and atomics.
        unsafe { &*self.seg.base().cast::<Header>() }
    }

    fn counters(&self) -> &Counters {
        &self.header().counters.0
    }

    /// The buddy tree, `2 << top` nodes (node 0 unused).
    fn tree(&self) -> &[AtomicU8] {
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
    fn heads(&self) -> &[HeadEntry] {
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
    fn lock(&self) -> Result<Guard<'_>> {
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

    // ---- the tree ----

    /// The node of the block of order `order` that starts at leaf `first`.
    fn node_of(&self, first: usize, order: u32) -> usize {
        (1 << (self.top - order)) + (first >> order)
    }

    /// The first leaf of node `node`, of order `order`.
    fn first_leaf(&self, node: usize, order: u32) -> usize {
        (node - (1 << (self.top - order))) << order
    }

    /// Marks every node wholly free.
    fn fill_tree(&self) {
        let tree = self.tree();
        for depth in 0..=self.top {
            let value = full(self.top - depth);
            for node in &tree[1 << depth..2 << depth] {
                node.store(value, Ordering::Relaxed);
            }
        }
    }

    /// Recomputes the ancestors of `node` (of order `order`) from their children.
    fn update_ancestors(&self, mut node: usize, mut order: u32) {
        let tree = self.tree();
        while node > 1 {
            node /= 2;
            order += 1;
            let left = tree[2 * node].load(Ordering::Relaxed);
            let right = tree[2 * node + 1].load(Ordering::Relaxed);
            let value = if left == full(order - 1) && right == full(order - 1) {
                full(order) // two free buddies make a free parent
            } else {
                left.max(right)
            };
            tree[node].store(value, Ordering::Relaxed);
        }
    }

    /// Marks node `node` (of order `order`) used.
    fn take(&self, node: usize, order: u32) {
        self.tree()[node].store(0, Ordering::Relaxed);
        self.update_ancestors(node, order);
    }

    /// Marks node `node` (of order `order`) wholly free. Its descendants already say so:
    /// they were wholly free when it was taken and nobody touches them meanwhile.
    fn release(&self, node: usize, order: u32) {
        self.tree()[node].store(full(order), Ordering::Relaxed);
        self.update_ancestors(node, order);
    }

    /// The lowest wholly free node of order `order`, if any.
    fn find_free(&self, order: u32) -> Result<Option<usize>> {
        let tree = self.tree();
        let want = full(order);
        if tree[1].load(Ordering::Relaxed) < want {
            return Ok(None);
        }
        let (mut node, mut at) = (1, self.top);
        while at > order {
            node *= 2;
            at -= 1;
            if tree[node].load(Ordering::Relaxed) < want {
                node += 1;
            }
        }
        // A consistent tree always leads to a free node; checking costs one load.
        if tree[node].load(Ordering::Relaxed) != want {
            return Err(Error::Corrupt("the arena's buddy tree is damaged".into()));
        }
        Ok(Some(node))
    }

    // ---- the head table ----

    /// The leaf where a block at `offset` would start, or why no block can start there.
    fn leaf_of(&self, offset: u64) -> Result<usize> {
        match usize::try_from(offset) {
            Ok(at) if at < self.capacity() && at % MIN_BLOCK == 0 => Ok(at / MIN_BLOCK),
            _ => Err(Error::Invalid(format!(
                "{offset} is not a block offset in an arena of {} bytes",
                self.capacity()
            ))),
        }
    }

    /// The order recorded in a non-zero head entry `state` at leaf `first`, checked.
    fn order_in(&self, first: usize, state: u8) -> Result<u32> {
        let plus_one = state & ORDER_BITS;
        let order = u32::from(plus_one).wrapping_sub(1);
        if state & !(ORDER_BITS | RELEASING) != 0
            || plus_one == 0
            || order > self.top
            || first % (1 << order) != 0
        {
            return Err(Error::Corrupt(format!(
                "the arena's head table is damaged at byte {}",
                first * MIN_BLOCK
            )));
        }
        Ok(order)
    }

    /// The first leaf and order of the live (allocated, not releasing) block that starts at
    /// `offset`, or why there is none.
    fn live_block(&self, offset: u64) -> Result<(usize, u32)> {
        let first = self.leaf_of(offset)?;
        let state = self.heads()[first].state.load(Ordering::Acquire);
        if state == 0 {
            return Err(Error::Invalid(format!(
                "no block starts at offset {offset} of the arena (freed already?)"
            )));
        }
        if state & RELEASING != 0 {
            return Err(Error::Invalid(format!(
                "the block at offset {offset} of the arena is being freed"
            )));
        }
        Ok((first, self.order_in(first, state)?))
    }

    /// Every block in the head table, live or releasing, as (first leaf, order), found by
    /// walking the tree past wholly free subtrees. Call under the lock.
    fn blocks(&self) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        self.collect_blocks(1, self.top, &mut found);
        found
    }

    fn collect_blocks(&self, node: usize, order: u32, found: &mut Vec<(usize, u32)>) {
        if self.tree()[node].load(Ordering::Relaxed) == full(order) {
            return;
        }
        let first = self.first_leaf(node, order);
        let state = self.heads()[first].state.load(Ordering::Relaxed);
        if state & ORDER_BITS == full(order) {
            found.push((first, order));
        } else if order > 0 {
            self.collect_blocks(2 * node, order - 1, found);
            self.collect_blocks(2 * node + 1, order - 1, found);
        }
    }

    /// Rebuilds the tree, and the `in_use` and `blocks` counters, from the head table: the
    /// repair a lock holder's death calls for. Entries that no crash can produce (bad
    /// orders, heads inside another block) are cleared. Call under the lock.
    fn repair(&self, _held: &Guard<'_>) {
        self.fill_tree();
        let heads = self.heads();
        let (mut in_use, mut live) = (0u64, 0u64);
        let mut leaf = 0;
        while leaf < heads.len() {
            let state = heads[leaf].state.load(Ordering::Relaxed);
            if state == 0 {
                leaf += 1;
                continue;
            }
            let Ok(order) = self.order_in(leaf, state) else {
                heads[leaf].state.store(0, Ordering::Relaxed);
                leaf += 1;
                continue;
            };
            self.take(self.node_of(leaf, order), order);
            if state & RELEASING == 0 {
                in_use += (MIN_BLOCK << order) as u64;
                live += 1;
            }
            let end = leaf + (1 << order);
            for inner in &heads[leaf + 1..end] {
                if inner.state.load(Ordering::Relaxed) != 0 {
                    inner.state.store(0, Ordering::Relaxed);
                }
            }
            leaf = end;
        }
        let c = self.counters();
        c.in_use.store(in_use, Ordering::Relaxed);
        c.blocks.store(live, Ordering::Relaxed);
        c.peak.fetch_max(in_use, Ordering::Relaxed);
    }

    // ---- allocation ----

    /// The order of the smallest block that holds `len` bytes, if the arena has one.
    fn order_for(&self, len: usize) -> Option<u32> {
        if len > self.capacity() {
            return None;
        }
        Some(len.div_ceil(MIN_BLOCK).next_power_of_two().trailing_zeros())
    }

    /// Allocates a block of at least `len` bytes ([`MIN_BLOCK`] times a power of two),
    /// owned by the calling process. Returns `Ok(None)` when no free block is that large,
    /// including when `len` exceeds the capacity: the caller then sends its bytes another
    /// way. A `len` of 0 is [`Error::Invalid`].
    pub fn alloc(&self, len: usize) -> Result<Option<Block>> {
        if len == 0 {
            return Err(Error::Invalid(
                "an arena block holds at least one byte".into(),
            ));
        }
        let refused = || {
            self.counters().refused.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        };
        let Some(order) = self.order_for(len) else {
            return refused();
        };
        let guard = self.lock()?;
        let Some(node) = self.find_free(order)? else {
            return refused();
        };
        let first = self.first_leaf(node, order);
        let head = &self.heads()[first];
        self.take(node, order);
        head.owner_pid.store(my_pid(), Ordering::Relaxed);
        // The commit point: from here the block exists (see "Surviving a death").
        head.state.store(full(order), Ordering::Release);
        let size = (MIN_BLOCK << order) as u64;
        let c = self.counters();
        let in_use = c.in_use.fetch_add(size, Ordering::Relaxed) + size;
        c.peak.fetch_max(in_use, Ordering::Relaxed);
        c.blocks.fetch_add(1, Ordering::Relaxed);
        c.allocations.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        Ok(Some(Block {
            offset: (first * MIN_BLOCK) as u64,
            len,
            order: order as u8,
        }))
    }

    /// Ends the life of the live block at leaf `first`: counts it out and frees it, or, if
    /// it is large enough to punch, marks it releasing (owned by us) and returns true: the
    /// caller then calls [`give_back`](Self::give_back) after dropping the lock.
    fn retire(&self, first: usize, order: u32) -> bool {
        let c = self.counters();
        c.in_use
            .fetch_sub((MIN_BLOCK << order) as u64, Ordering::Relaxed);
        c.blocks.fetch_sub(1, Ordering::Relaxed);
        c.frees.fetch_add(1, Ordering::Relaxed);
        let head = &self.heads()[first];
        if order >= PUNCH_ORDER {
            head.owner_pid.store(my_pid(), Ordering::Relaxed);
            head.state.store(RELEASING | full(order), Ordering::Release);
            true
        } else {
            // Head entry first, then the tree: see "Surviving a death".
            head.state.store(0, Ordering::Release);
            self.release(self.node_of(first, order), order);
            false
        }
    }

    /// Frees a releasing block that this process marked, unless somebody already did (a
    /// `free_owned_by` with our pid). Call under the lock.
    fn finish_release(&self, first: usize, order: u32) {
        let head = &self.heads()[first];
        if head.state.load(Ordering::Relaxed) == RELEASING | full(order)
            && head.owner_pid.load(Ordering::Relaxed) == my_pid()
        {
            head.state.store(0, Ordering::Release);
            self.release(self.node_of(first, order), order);
        }
    }

    /// Punches the pages of a releasing block out of the memfd (outside the lock), then
    /// frees it. A failed punch only means the pages stay, as a smaller block's would, so
    /// the block is freed whatever happens.
    fn give_back(&self, first: usize, order: u32) -> Result<()> {
        let _ = self.punch(first, order);
        let _guard = self.lock()?;
        self.finish_release(first, order);
        Ok(())
    }

    /// Frees the block that starts at `offset`. Any process may free any block. An offset
    /// where no live block starts (a wrong or double free) is [`Error::Invalid`] and
    /// changes nothing. A block of [`PUNCH_ON_FREE`] bytes or more gives its pages back
    /// before this returns.
    pub fn free(&self, offset: u64) -> Result<()> {
        let guard = self.lock()?;
        let (first, order) = self.live_block(offset)?;
        let punch = self.retire(first, order);
        drop(guard);
        if punch {
            self.give_back(first, order)?;
        }
        Ok(())
    }

    /// Makes the calling process the owner of the live block at `offset`, as a receiver
    /// does when it takes a block over, so that its death (through
    /// [`free_owned_by`](Self::free_owned_by)) frees the block. Until then the block is
    /// its sender's, and freeing the blocks of a dead sender frees it too.
    pub fn adopt(&self, offset: u64) -> Result<()> {
        let _guard = self.lock()?;
        let (first, _) = self.live_block(offset)?;
        self.heads()[first]
            .owner_pid
            .store(my_pid(), Ordering::Release);
        Ok(())
    }

    /// The pid of the owner of the live block at `offset` (a snapshot).
    pub fn owner(&self, offset: u64) -> Result<i32> {
        let (first, _) = self.live_block(offset)?;
        Ok(self.heads()[first].owner_pid.load(Ordering::Acquire))
    }

    /// The live block at `offset`, for a receiver that got `(offset, len)` in a message.
    /// Fails unless a live block starts there and holds `len` bytes (`len` at least 1).
    /// Reads the table without the lock: the sender's reference keeps the block alive.
    pub fn block_at(&self, offset: u64, len: usize) -> Result<Block> {
        let (_, order) = self.live_block(offset)?;
        let block = Block {
            offset,
            len,
            order: order as u8,
        };
        if len == 0 || len > block.size() {
            return Err(Error::Invalid(format!(
                "the block at offset {offset} holds {} bytes, not {len}",
                block.size()
            )));
        }
        Ok(block)
    }

    /// Frees every block owned by `pid`, a process that died (or otherwise stopped using
    /// the arena), and returns how many. Blocks `pid` was in the middle of freeing are
    /// finished too, but not counted (they were counted when their free began). With the
    /// caller's own pid, blocks that other threads of this process are freeing are left to
    /// them.
    pub fn free_owned_by(&self, pid: i32) -> Result<usize> {
        let mut freed = 0;
        let mut to_punch = Vec::new();
        {
            let _guard = self.lock()?;
            let heads = self.heads();
            for (first, order) in self.blocks() {
                let head = &heads[first];
                if head.owner_pid.load(Ordering::Relaxed) != pid {
                    continue;
                }
                if head.state.load(Ordering::Relaxed) & RELEASING == 0 {
                    freed += 1;
                    if self.retire(first, order) {
                        to_punch.push((first, order));
                    }
                } else if pid != my_pid() {
                    head.state.store(0, Ordering::Release);
                    self.release(self.node_of(first, order), order);
                }
            }
        }
        for (first, order) in to_punch {
            self.give_back(first, order)?;
        }
        Ok(freed)
    }

    // ---- contents ----

    /// Whether `block` lies inside this arena's data region.
    fn holds(&self, block: &Block) -> Result<usize> {
        let at = usize::try_from(block.offset).unwrap_or(usize::MAX);
        let fits = at % MIN_BLOCK == 0
            && u32::from(block.order) <= self.top
            && block.len <= block.size()
            && at
                .checked_add(block.size())
                .is_some_and(|end| end <= self.capacity());
        if fits {
            Ok(at)
        } else {
            Err(Error::Invalid(format!(
                "a block at offset {} of {} bytes does not lie in this arena",
                block.offset,
                block.size()
            )))
        }
    }

    /// The address of the block's first byte in this process, to export its bytes (for
    /// example as a Python buffer) without copying. The block's `size()` bytes are valid
    /// until it is freed; who may read and write them is the callers' protocol.
    pub fn data_ptr(&self, block: &Block) -> Result<*mut u8> {
        let at = self.holds(block)?;
        // SAFETY: `holds` checked that the block lies inside the data region, which lies
        // inside the mapping.
        Ok(unsafe { self.seg.base().add(self.layout.data_at + at) })
    }

    /// The range `at..at + n` of the block's bytes, if it lies within its length.
    fn span(&self, block: &Block, at: usize, n: usize) -> Result<*mut u8> {
        let base = self.data_ptr(block)?;
        if at.checked_add(n).is_none_or(|end| end > block.len) {
            return Err(Error::Invalid(format!(
                "bytes {at}..{at}+{n} lie outside a block of {} bytes",
                block.len
            )));
        }
        // SAFETY: `at + n <= len <= size`, so the result stays inside the block.
        Ok(unsafe { base.add(at) })
    }

    /// Copies `bytes` into the block at byte `at`. The block must be this process's to
    /// write (a block belongs to one holder at a time).
    pub fn write(&self, block: &Block, at: usize, bytes: &[u8]) -> Result<()> {
        let dst = self.span(block, at, bytes.len())?;
        // SAFETY: `span` checked the range. `copy` allows `bytes` to lie in the arena.
        unsafe { std::ptr::copy(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }

    /// Copies the block's bytes from `at` into `out`.
    pub fn read(&self, block: &Block, at: usize, out: &mut [u8]) -> Result<()> {
        let src = self.span(block, at, out.len())?;
        // SAFETY: `span` checked the range; `out` is exclusively ours.
        unsafe { std::ptr::copy(src, out.as_mut_ptr(), out.len()) };
        Ok(())
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

    // ---- physical memory ----

    /// The position in the memfd of the data region's byte `at`.
    fn file_offset(&self, at: usize) -> libc::off_t {
        // Layouts are at most a few hundred TiB, far below off_t's range.
        (self.layout.data_at + at) as libc::off_t
    }

    /// Gives the pages of the block at leaf `first` back to the system. Safe whenever
    /// nobody uses the block's bytes: they then read as zeros.
    fn punch(&self, first: usize, order: u32) -> Result<()> {
        // SAFETY: plain syscall on our descriptor, over a range inside the data region.
        let rc = unsafe {
            libc::fallocate(
                self.seg.fd().as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.file_offset(first * MIN_BLOCK),
                (MIN_BLOCK << order) as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(Error::last_os("fallocate"));
        }
        Ok(())
    }

    /// The first byte backed by memory in the data region's range `from..to`.
    fn first_backed(&self, from: usize, to: usize) -> Result<Option<usize>> {
        // SAFETY: plain syscall on our descriptor.
        let found = unsafe {
            libc::lseek(
                self.seg.fd().as_raw_fd(),
                self.file_offset(from),
                libc::SEEK_DATA,
            )
        };
        if found < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None); // nothing backed from `from` to the end of the memfd
            }
            return Err(Error::Os {
                what: "lseek",
                source: err,
            });
        }
        let at = (found as usize).saturating_sub(self.layout.data_at);
        Ok((at < to).then_some(at))
    }

    /// The bytes backed by memory in the data region's range `from..to`.
    fn backed_bytes(&self, mut from: usize, to: usize) -> Result<u64> {
        let mut total = 0u64;
        while let Some(data) = self.first_backed(from, to)? {
            // SAFETY: plain syscall on our descriptor; SEEK_HOLE always finds a hole, if
            // only the end of the memfd.
            let hole = unsafe {
                libc::lseek(
                    self.seg.fd().as_raw_fd(),
                    self.file_offset(data),
                    libc::SEEK_HOLE,
                )
            };
            if hole < 0 {
                return Err(Error::last_os("lseek"));
            }
            let end = (hole as usize).saturating_sub(self.layout.data_at).min(to);
            if end <= data {
                break;
            }
            total += (end - data) as u64;
            from = end;
        }
        Ok(total)
    }

    /// The lowest maximal free block of 1 MiB or more that ends after leaf `cursor`, as
    /// (first leaf, order), searched below node `node` of order `order`.
    fn free_run_after(&self, node: usize, order: u32, cursor: usize) -> Option<(usize, u32)> {
        let first = self.first_leaf(node, order);
        if first + (1 << order) <= cursor {
            return None;
        }
        let value = self.tree()[node].load(Ordering::Relaxed);
        if value < full(TRIM_MIN_ORDER) {
            return None; // nothing free of 1 MiB or more in here
        }
        if value >= full(order) {
            return Some((first, order));
        }
        self.free_run_after(2 * node, order - 1, cursor)
            .or_else(|| self.free_run_after(2 * node + 1, order - 1, cursor))
    }

    /// Under the lock: finds the next free range after leaf `cursor` that has pages to give
    /// back and reserves it (at most 64 MiB, marked releasing), returning (first leaf,
    /// order); or moves `cursor` past everything and returns `None`.
    fn reserve_for_trim(&self, cursor: &mut usize) -> Result<Option<(usize, u32)>> {
        let _guard = self.lock()?;
        while let Some((first, order)) = self.free_run_after(1, self.top, *cursor) {
            let end = first + (1 << order);
            let from = first.max(*cursor);
            let Some(backed) = self.first_backed(from * MIN_BLOCK, end * MIN_BLOCK)? else {
                *cursor = end;
                continue;
            };
            // A piece of the free block around its first backed byte. Pieces inside a
            // wholly free node are wholly free nodes themselves.
            let piece_order = order.min(TRIM_STEP_ORDER);
            let piece = (backed / MIN_BLOCK) >> piece_order << piece_order;
            let head = &self.heads()[piece];
            self.take(self.node_of(piece, piece_order), piece_order);
            head.owner_pid.store(my_pid(), Ordering::Relaxed);
            head.state
                .store(RELEASING | full(piece_order), Ordering::Release);
            *cursor = piece + (1 << piece_order);
            return Ok(Some((piece, piece_order)));
        }
        *cursor = 1 << self.top;
        Ok(None)
    }

    /// Gives back the pages of every free range of 1 MiB or more and returns how many bytes
    /// of memory that released. Ranges are punched in pieces of at most 64 MiB, each
    /// reserved while it is punched (outside the lock), so an allocation that needs that
    /// very piece meanwhile may return `None`. Smaller free ranges keep their pages: they
    /// are the ones reused first.
    pub fn trim(&self) -> Result<u64> {
        let mut cursor = 0;
        let mut released = 0;
        while let Some((first, order)) = self.reserve_for_trim(&mut cursor)? {
            let range = first * MIN_BLOCK..(first + (1 << order)) * MIN_BLOCK;
            let punched = self
                .backed_bytes(range.start, range.end)
                .and_then(|bytes| self.punch(first, order).map(|()| bytes));
            let guard = self.lock()?;
            self.finish_release(first, order);
            drop(guard);
            released += punched?;
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_bytes(arena: &Arena) -> Vec<u8> {
        arena
            .tree()
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    fn repair_now(arena: &Arena) -> Result<()> {
        let guard = arena.lock()?;
        arena.repair(&guard);
        Ok(())
    }

    fn alloc(arena: &Arena, len: usize) -> Result<Block> {
        arena.alloc(len)?.ok_or(Error::Full)
    }

    #[test]
    fn repair_rebuilds_a_scrambled_tree() -> Result<()> {
        let arena = Arena::create(16 << 20)?;
        let a = alloc(&arena, 1 << 20)?;
        let b = alloc(&arena, MIN_BLOCK)?;
        let c = alloc(&arena, 3 << 20)?;
        arena.free(b.offset())?;
        let d = alloc(&arena, 200_000)?;
        let before = tree_bytes(&arena);
        let stats = arena.stats();
        for (i, node) in arena.tree().iter().enumerate() {
            node.store((i * 37 % 251) as u8, Ordering::Relaxed);
        }
        arena.counters().in_use.store(12345, Ordering::Relaxed);
        repair_now(&arena)?;
        assert_eq!(tree_bytes(&arena), before);
        assert_eq!(arena.stats(), stats);
        for block in [a, c, d] {
            arena.free(block.offset())?;
        }
        assert_eq!(alloc(&arena, arena.capacity())?.offset(), 0);
        Ok(())
    }

    #[test]
    fn repair_drops_entries_no_crash_can_leave() -> Result<()> {
        let arena = Arena::create(4 << 20)?;
        let a = alloc(&arena, 1 << 20)?;
        let heads = arena.heads();
        heads[1].state.store(1, Ordering::Relaxed); // a head inside block `a`
        heads[40].state.store(0x7f, Ordering::Relaxed); // an impossible order
        heads[33].state.store(full(1), Ordering::Relaxed); // misaligned
        repair_now(&arena)?;
        assert!(heads[1..]
            .iter()
            .all(|h| h.state.load(Ordering::Relaxed) == 0));
        assert_eq!(arena.stats().blocks, 1);
        arena.free(a.offset())?;
        assert_eq!(alloc(&arena, arena.capacity())?.offset(), 0);
        Ok(())
    }

    /// Replays the states a holder killed inside `alloc` or `free` can leave, and checks
    /// what the next holder's repair makes of them.
    #[test]
    fn every_crash_point_leaves_a_repairable_state() -> Result<()> {
        let arena = Arena::create(4 << 20)?;
        let pristine = tree_bytes(&arena);
        let order = 2;

        // alloc died after writing the tree, before the head entry: nothing leaks.
        let node = arena.find_free(order)?.ok_or(Error::Full)?;
        arena.take(node, order);
        repair_now(&arena)?;
        assert_eq!(tree_bytes(&arena), pristine);

        // alloc died after the head entry: the block is the dead owner's.
        let first = arena.first_leaf(node, order);
        arena.take(node, order);
        arena.heads()[first].owner_pid.store(-7, Ordering::Relaxed);
        arena.heads()[first]
            .state
            .store(full(order), Ordering::Relaxed);
        repair_now(&arena)?;
        assert_eq!(arena.stats().in_use, (MIN_BLOCK << order) as u64);
        assert_eq!(arena.owner(0)?, -7);
        assert_eq!(arena.free_owned_by(-7)?, 1);
        assert_eq!(tree_bytes(&arena), pristine);

        // free died after clearing the head entry, before the tree: the block is free.
        let block = alloc(&arena, MIN_BLOCK << order)?;
        arena.heads()[0].state.store(0, Ordering::Relaxed);
        repair_now(&arena)?;
        assert_eq!(tree_bytes(&arena), pristine);
        assert_eq!(arena.stats().blocks, 0);
        assert!(arena.free(block.offset()).is_err());
        Ok(())
    }

    #[test]
    fn a_releasing_block_is_neither_live_nor_free() -> Result<()> {
        let arena = Arena::create(2 * PUNCH_ON_FREE)?;
        let big = alloc(&arena, PUNCH_ON_FREE)?;
        {
            let _guard = arena.lock()?;
            assert!(arena.retire(0, PUNCH_ORDER));
        }
        assert_eq!(arena.stats().in_use, 0);
        assert!(matches!(arena.free(big.offset()), Err(Error::Invalid(_))));
        assert!(matches!(arena.adopt(big.offset()), Err(Error::Invalid(_))));
        assert_eq!(arena.free_owned_by(my_pid())?, 0); // its own thread finishes it
        repair_now(&arena)?;
        let other = alloc(&arena, PUNCH_ON_FREE)?;
        assert_eq!(other.offset(), PUNCH_ON_FREE as u64);
        assert!(arena.alloc(1)?.is_none());
        arena.give_back(0, PUNCH_ORDER)?;
        assert_eq!(alloc(&arena, PUNCH_ON_FREE)?.offset(), 0);
        Ok(())
    }

    #[test]
    fn a_dead_processs_releasing_block_is_finished_by_free_owned_by() -> Result<()> {
        let arena = Arena::create(2 * PUNCH_ON_FREE)?;
        alloc(&arena, PUNCH_ON_FREE)?;
        let head = &arena.heads()[0];
        head.owner_pid.store(-3, Ordering::Relaxed);
        head.state
            .store(RELEASING | full(PUNCH_ORDER), Ordering::Relaxed);
        assert_eq!(arena.free_owned_by(-3)?, 0);
        assert_eq!(alloc(&arena, arena.capacity())?.offset(), 0);
        Ok(())
    }

    fn pipe() -> Result<[i32; 2]> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(Error::last_os("pipe"));
        }
        Ok(fds)
    }

    /// A child takes the lock, half-allocates a block (tree written, no head entry) and is
    /// SIGKILLed; the parent's next call inherits the lock, repairs, and loses nothing.
    #[test]
    fn a_holder_killed_mid_alloc_is_repaired_by_the_next_locker() -> Result<()> {
        let arena = Arena::create(8 << 20)?;
        let kept = alloc(&arena, 1 << 20)?;
        let [read_end, write_end] = pipe()?;
        // SAFETY: the child only locks a robust mutex, writes shared memory and a pipe,
        // then sleeps until killed: nothing that needs another thread's locks.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let half_done = match arena.header().lock.0.try_lock() {
                Ok(Some(guard)) => {
                    std::mem::forget(guard);
                    arena.take(arena.node_of(64, 6), 6);
                    true
                }
                _ => false,
            };
            // SAFETY: async-signal-safe calls only; the child never returns.
            unsafe {
                libc::write(write_end, [u8::from(half_done)].as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let mut ready = [0u8];
        // SAFETY: reads one byte into our buffer, then kills and reaps our own child.
        unsafe {
            libc::close(write_end);
            assert_eq!(libc::read(read_end, ready.as_mut_ptr().cast(), 1), 1);
            libc::close(read_end);
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(ready, [1]);
        let rest = alloc(&arena, 4 << 20)?;
        assert_eq!(rest.offset(), 4 << 20); // the half-allocated 4 MiB is free again
        assert_eq!(arena.stats().blocks, 2);
        arena.free(kept.offset())?;
        arena.free(rest.offset())?;
        assert_eq!(alloc(&arena, arena.capacity())?.offset(), 0);
        Ok(())
    }
}
