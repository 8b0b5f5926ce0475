//! Physical memory: punching the pages of freed blocks out of the memfd, and `trim`.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::{full, my_pid, Arena, MIN_BLOCK, RELEASING, TRIM_MIN_ORDER, TRIM_STEP_ORDER};
use crate::error::{Error, Result};

impl Arena {
    /// The position in the memfd of the data region's byte `at`.
    pub(super) fn file_offset(&self, at: usize) -> libc::off_t {
        // Layouts are at most a few hundred TiB, far below off_t's range.
        (self.layout.data_at + at) as libc::off_t
    }

    /// Gives the pages of the block at leaf `first` back to the system. Safe whenever
    /// nobody uses the block's bytes: they then read as zeros.
    pub(super) fn punch(&self, first: usize, order: u32) -> Result<()> {
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
    pub(super) fn first_backed(&self, from: usize, to: usize) -> Result<Option<usize>> {
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
    pub(super) fn backed_bytes(&self, mut from: usize, to: usize) -> Result<u64> {
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
    pub(super) fn free_run_after(
        &self,
        node: usize,
        order: u32,
        cursor: usize,
    ) -> Option<(usize, u32)> {
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
    pub(super) fn reserve_for_trim(&self, cursor: &mut usize) -> Result<Option<(usize, u32)>> {
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
