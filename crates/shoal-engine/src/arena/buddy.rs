//! The buddy tree and the head table: finding a free block, marking blocks used and
//! free, and rebuilding the tree from the table after a death.

use std::sync::atomic::Ordering;

use super::{full, Arena, MIN_BLOCK, ORDER_BITS, RELEASING};
use crate::error::{Error, Result};
use crate::lock::Guard;

impl Arena {
    /// The node of the block of order `order` that starts at leaf `first`.
    pub(super) fn node_of(&self, first: usize, order: u32) -> usize {
        (1 << (self.top - order)) + (first >> order)
    }

    /// The first leaf of node `node`, of order `order`.
    pub(super) fn first_leaf(&self, node: usize, order: u32) -> usize {
        (node - (1 << (self.top - order))) << order
    }

    /// Marks every node wholly free.
    pub(super) fn fill_tree(&self) {
        let tree = self.tree();
        for depth in 0..=self.top {
            let value = full(self.top - depth);
            for node in &tree[1 << depth..2 << depth] {
                node.store(value, Ordering::Relaxed);
            }
        }
    }

    /// Recomputes the ancestors of `node` (of order `order`) from their children.
    pub(super) fn update_ancestors(&self, mut node: usize, mut order: u32) {
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
    pub(super) fn take(&self, node: usize, order: u32) {
        self.tree()[node].store(0, Ordering::Relaxed);
        self.update_ancestors(node, order);
    }

    /// Marks node `node` (of order `order`) wholly free. Its descendants already say so:
    /// they were wholly free when it was taken and nobody touches them meanwhile.
    pub(super) fn release(&self, node: usize, order: u32) {
        self.tree()[node].store(full(order), Ordering::Relaxed);
        self.update_ancestors(node, order);
    }

    /// The lowest wholly free node of order `order`, if any.
    pub(super) fn find_free(&self, order: u32) -> Result<Option<usize>> {
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
    pub(super) fn leaf_of(&self, offset: u64) -> Result<usize> {
        match usize::try_from(offset) {
            Ok(at) if at < self.capacity() && at % MIN_BLOCK == 0 => Ok(at / MIN_BLOCK),
            _ => Err(Error::Invalid(format!(
                "{offset} is not a block offset in an arena of {} bytes",
                self.capacity()
            ))),
        }
    }

    /// The order recorded in a non-zero head entry `state` at leaf `first`, checked.
    pub(super) fn order_in(&self, first: usize, state: u8) -> Result<u32> {
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
    pub(super) fn live_block(&self, offset: u64) -> Result<(usize, u32)> {
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
    pub(super) fn blocks(&self) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        self.collect_blocks(1, self.top, &mut found);
        found
    }

    pub(super) fn collect_blocks(&self, node: usize, order: u32, found: &mut Vec<(usize, u32)>) {
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
    pub(super) fn repair(&self, _held: &Guard<'_>) {
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
}
