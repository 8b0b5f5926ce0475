//! A block's life: allocation, adoption, free (by offset or by a dead owner), and
//! copying bytes in and out.

use std::sync::atomic::Ordering;

use super::{full, my_pid, Arena, Block, MIN_BLOCK, PUNCH_ORDER, RELEASING};
use crate::error::{Error, Result};

impl Arena {
    /// The order of the smallest block that holds `len` bytes, if the arena has one.
    pub(super) fn order_for(&self, len: usize) -> Option<u32> {
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
    pub(super) fn retire(&self, first: usize, order: u32) -> bool {
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
    pub(super) fn finish_release(&self, first: usize, order: u32) {
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
    pub(super) fn give_back(&self, first: usize, order: u32) -> Result<()> {
        let _ = self.punch(first, order);
        let _guard = self.lock()?;
        self.finish_release(first, order);
        Ok(())
    }

    /// Frees the block that starts at `offset`. Any process may free any block. An offset
    /// where no live block starts (a wrong or double free) is [`Error::Invalid`] and
    /// changes nothing. A block of [`PUNCH_ON_FREE`](super::PUNCH_ON_FREE) bytes or more
    /// gives its pages back before this returns.
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

    /// Makes the calling process the owner of those live blocks among `offsets` that
    /// `pid` owns, and returns how many: a sender takes back what a receiver adopted and
    /// then died without answering, before it frees the dead process's blocks, when the
    /// message they belong to goes to another receiver. Offsets where no live block
    /// starts, or that another process owns, are left alone.
    pub fn reclaim(&self, pid: i32, offsets: &[u64]) -> Result<usize> {
        let _guard = self.lock()?;
        let heads = self.heads();
        let mut taken = 0;
        for &offset in offsets {
            let Ok((first, _)) = self.live_block(offset) else {
                continue;
            };
            let owner = &heads[first].owner_pid;
            if owner.load(Ordering::Acquire) == pid {
                owner.store(my_pid(), Ordering::Release);
                taken += 1;
            }
        }
        Ok(taken)
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
    pub(super) fn holds(&self, block: &Block) -> Result<usize> {
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
    pub(super) fn span(&self, block: &Block, at: usize, n: usize) -> Result<*mut u8> {
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
}
