//! The shared-memory arena end to end: block sizes and placement checked against a model,
//! refusals, wrong frees, second handles and foreign descriptors, other processes that
//! allocate, free and die, pages given back, counters, and threads racing.
//!
//! Cross-process tests `fork` this (multithreaded) test binary. The children therefore do
//! only simple things: map the arena, lock its robust mutex, copy bytes, write to a pipe
//! and `_exit`; they never panic on purpose (a panic becomes exit code 101).

// Test code: an unwrap that fails is a test failure with a useful message.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use proptest::prelude::*;
use shoal_engine::arena::{Arena, Block, MIN_BLOCK, PUNCH_ON_FREE};
use shoal_engine::queue::Queue;
use shoal_engine::seg::Segment;
use shoal_engine::Error;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn alloc(arena: &Arena, len: usize) -> Block {
    arena.alloc(len).unwrap().unwrap()
}

/// A byte pattern that differs between seeds and positions.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31) as usize ^ i.wrapping_mul(7)) as u8)
        .collect()
}

fn contents(arena: &Arena, block: &Block, at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    arena.read(block, at, &mut out).unwrap();
    out
}

/// Bytes of memory backing the arena's memfd.
fn resident(arena: &Arena) -> u64 {
    // SAFETY: `stat` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and out-pointer.
    assert_eq!(unsafe { libc::fstat(arena.fd().as_raw_fd(), &mut st) }, 0);
    st.st_blocks as u64 * 512
}

fn my_pid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// A pipe as (read end for the parent, raw write end for a child).
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and ours alone.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Writes all of `bytes` to `fd` with one system call (small writes to a pipe are atomic).
fn send(fd: RawFd, bytes: &[u8]) -> bool {
    // SAFETY: writes from a valid buffer of `bytes.len()` bytes.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize }
}

/// Runs `body` in a forked child that exits with its result; returns the child's pid. The
/// parent's copy of everything `body` captured is dropped (closing its descriptors).
fn fork(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs only `body`, which the tests keep to simple operations (see the
    // module documentation), then `_exit`s without touching the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: ends the child at once, running no exit handlers of the harness.
        unsafe { libc::_exit(code) };
    }
    drop(body);
    pid
}

/// Waits for child `pid` and returns its exit code (or minus the signal that killed it).
fn exit_code(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child, with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

fn read_offsets(mut from: File) -> Vec<u64> {
    let mut bytes = Vec::new();
    from.read_to_end(&mut bytes).unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn sizes_are_powers_of_two_of_64_kib_aligned_to_themselves() {
    let arena = Arena::create(64 * MIB).unwrap();
    let cases = [
        (1, 64 * KIB),
        (64 * KIB, 64 * KIB),
        (64 * KIB + 1, 128 * KIB),
        (200 * KIB, 256 * KIB),
        (MIB + 1, 2 * MIB),
        (5 * MIB, 8 * MIB),
    ];
    for (len, size) in cases {
        let block = alloc(&arena, len);
        assert_eq!((block.len(), block.size()), (len, size));
        assert_eq!(block.offset() % size as u64, 0);
        assert!(!block.is_empty());
    }
    let whole: usize = cases.iter().map(|&(_, size)| size).sum();
    assert_eq!(arena.stats().in_use, whole as u64);
}

#[test]
fn capacity_rounds_down_and_odd_lengths_are_handled() {
    assert_eq!(Arena::create(3 * MIB).unwrap().capacity(), 2 * MIB);
    assert_eq!(Arena::create(MIN_BLOCK).unwrap().capacity(), MIN_BLOCK);
    assert!(matches!(
        Arena::create(MIN_BLOCK - 1),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(Arena::create(usize::MAX), Err(Error::Invalid(_))));
    let arena = Arena::create(MIB).unwrap();
    assert!(matches!(arena.alloc(0), Err(Error::Invalid(_))));
    assert_eq!(arena.alloc(MIB + 1).unwrap(), None);
    assert_eq!(arena.alloc(usize::MAX).unwrap(), None);
    assert_eq!(alloc(&arena, MIB).offset(), 0);
}

#[test]
fn a_full_arena_says_none_then_allocates_again_after_a_free() {
    let arena = Arena::create(MIB).unwrap();
    let blocks: Vec<Block> = (0..16).map(|_| alloc(&arena, 1000)).collect();
    let offsets: Vec<u64> = blocks.iter().map(Block::offset).collect();
    let expected: Vec<u64> = (0..16).map(|i| i * MIN_BLOCK as u64).collect();
    assert_eq!(offsets, expected);
    assert_eq!(arena.alloc(1).unwrap(), None);
    arena.free(blocks[5].offset()).unwrap();
    assert_eq!(arena.alloc(MIN_BLOCK + 1).unwrap(), None); // only 64 KiB is free
    assert_eq!(alloc(&arena, 1).offset(), blocks[5].offset());
    assert_eq!(arena.stats().refused, 2);
}

#[test]
fn wrong_and_double_frees_are_refused_and_change_nothing() {
    let arena = Arena::create(4 * MIB).unwrap();
    let x = alloc(&arena, 128 * KIB);
    let y = alloc(&arena, MIB);
    assert_eq!((x.offset(), y.offset()), (0, MIB as u64));
    let before = arena.stats();
    let wrong = [
        1,                     // not on a block boundary
        MIN_BLOCK as u64,      // inside x
        2 * MIB as u64,        // free space
        4 * MIB as u64,        // past the end
        u64::MAX,              // far past it
        MIB as u64 + 4096,     // inside y, unaligned
        3 * MIB as u64 + 8192, // free space, unaligned
    ];
    for offset in wrong {
        assert!(
            matches!(arena.free(offset), Err(Error::Invalid(_))),
            "{offset}"
        );
        assert!(matches!(arena.adopt(offset), Err(Error::Invalid(_))));
    }
    assert_eq!(arena.stats(), before);
    arena.free(x.offset()).unwrap();
    assert!(matches!(arena.free(x.offset()), Err(Error::Invalid(_))));
    assert_eq!(arena.stats().frees, 1);
    // The tree is as it should be: x's place is free, y's is not.
    assert_eq!(alloc(&arena, 128 * KIB).offset(), 0);
    assert_eq!(alloc(&arena, 2 * MIB).offset(), 2 * MIB as u64);
    assert_eq!(arena.alloc(MIB).unwrap(), None);
    assert_eq!(alloc(&arena, 512 * KIB).offset(), 512 * KIB as u64);
}

#[test]
fn contents_are_bounds_checked_and_reachable_by_pointer() {
    let arena = Arena::create(MIB).unwrap();
    let block = alloc(&arena, 1000);
    assert!(matches!(
        arena.write(&block, 999, b"ab"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        arena.write(&block, usize::MAX, b"a"),
        Err(Error::Invalid(_))
    ));
    let mut two = [0u8; 2];
    assert!(matches!(
        arena.read(&block, 999, &mut two),
        Err(Error::Invalid(_))
    ));
    arena.write(&block, 998, b"ab").unwrap();
    let ptr = arena.data_ptr(&block).unwrap();
    // SAFETY: the block is ours and at least 1000 bytes long.
    unsafe {
        assert_eq!(ptr.add(999).read(), b'b');
        ptr.write(7);
    }
    assert_eq!(contents(&arena, &block, 0, 1), [7]);

    assert_eq!(arena.block_at(block.offset(), 1000).unwrap(), block);
    assert_eq!(
        arena.block_at(block.offset(), MIN_BLOCK).unwrap().len(),
        MIN_BLOCK
    );
    for (offset, len) in [
        (0, 0),
        (0, MIN_BLOCK + 1),
        (4096, 10),
        (MIN_BLOCK as u64, 10),
    ] {
        assert!(matches!(
            arena.block_at(offset, len),
            Err(Error::Invalid(_))
        ));
    }
    // A block of a larger arena does not reach outside this one.
    let big = Arena::create(4 * MIB).unwrap();
    alloc(&big, 2 * MIB);
    let far = alloc(&big, MIB);
    assert!(matches!(arena.data_ptr(&far), Err(Error::Invalid(_))));
    assert!(matches!(arena.write(&far, 0, b"x"), Err(Error::Invalid(_))));
}

#[test]
fn stats_count_everything() {
    let arena = Arena::create(MIB).unwrap();
    let zero = arena.stats();
    assert_eq!(zero.capacity, MIB as u64);
    assert_eq!((zero.in_use, zero.blocks, zero.allocations), (0, 0, 0));
    let a = alloc(&arena, 100 * KIB);
    let b = alloc(&arena, 300 * KIB);
    assert_eq!(arena.alloc(MIB).unwrap(), None);
    assert_eq!(arena.alloc(2 * MIB).unwrap(), None);
    arena.free(a.offset()).unwrap();
    let s = arena.stats();
    assert_eq!(s.in_use, 512 * KIB as u64);
    assert_eq!(s.peak, 640 * KIB as u64);
    assert_eq!(s.blocks, 1);
    assert_eq!((s.allocations, s.frees, s.refused), (2, 1, 2));
    arena.free(b.offset()).unwrap();
    alloc(&arena, MIB);
    let s = arena.stats();
    assert_eq!((s.in_use, s.peak, s.blocks), (MIB as u64, MIB as u64, 1));
    assert_eq!((s.allocations, s.frees), (3, 2));
}

#[test]
fn a_second_handle_sees_the_same_blocks_and_stats() {
    let a = Arena::create(8 * MIB).unwrap();
    let block = alloc(&a, 300 * KIB);
    a.write(&block, 0, &pattern(1, 300 * KIB)).unwrap();
    let b = Arena::open(a.dup_fd().unwrap()).unwrap();
    assert_eq!(b.capacity(), a.capacity());
    assert_eq!(b.stats(), a.stats());
    let seen = b.block_at(block.offset(), block.len()).unwrap();
    assert_eq!(seen, block);
    assert_eq!(contents(&b, &seen, 0, 300 * KIB), pattern(1, 300 * KIB));
    assert_eq!(b.owner(block.offset()).unwrap(), my_pid());
    let next = alloc(&b, 1);
    assert_eq!(next.offset(), 512 * KIB as u64);
    b.free(block.offset()).unwrap();
    assert_eq!(a.stats().blocks, 1);
    assert!(matches!(a.free(block.offset()), Err(Error::Invalid(_))));
    assert!(a.block_at(block.offset(), 1).is_err());
    assert_eq!(alloc(&a, 512 * KIB).offset(), 0);
}

#[test]
fn foreign_descriptors_are_refused() {
    let corrupt = |fd: OwnedFd| matches!(Arena::open(fd), Err(Error::Corrupt(_)));
    let queue = Queue::create(1 << 16, 0).unwrap();
    assert!(corrupt(queue.dup_fd().unwrap()));
    let zeros = Segment::create("zeros", 4 * MIB).unwrap();
    assert!(corrupt(zeros.dup_fd().unwrap()));
    let (read_end, _write_end) = pipe();
    assert!(corrupt(OwnedFd::from(read_end)));

    // Another layout version.
    let arena = Arena::create(MIB).unwrap();
    let raw = Segment::from_fd(arena.dup_fd().unwrap()).unwrap();
    // SAFETY: the version is the second u64 of the header; nobody else reads it now.
    unsafe { raw.base().cast::<u64>().add(1).write(99) };
    assert!(corrupt(arena.dup_fd().unwrap()));
    // SAFETY: as above, putting version 1 back.
    unsafe { raw.base().cast::<u64>().add(1).write(1) };
    assert!(Arena::open(arena.dup_fd().unwrap()).is_ok());

    // A truncated arena.
    let fd = arena.dup_fd().unwrap();
    let len = raw.len() as libc::off_t;
    drop((raw, arena));
    // SAFETY: plain syscall on our descriptor; no mapping of it remains.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len - 4096) }, 0);
    assert!(corrupt(fd));
}

#[test]
fn a_child_allocates_and_the_parent_reads_adopts_and_frees() {
    const LEN: usize = 300 * KIB;
    let arena = Arena::create(16 * MIB).unwrap();
    let first = alloc(&arena, MIB);
    let fd = arena.dup_fd().unwrap();
    let (from_child, to_parent) = pipe();
    let child = fork(move || {
        let Ok(arena) = Arena::open(fd) else { return 2 };
        let Ok(Some(block)) = arena.alloc(LEN) else {
            return 3;
        };
        let mut chunk = [0u8; 4096];
        for at in (0..LEN).step_by(chunk.len()) {
            let n = chunk.len().min(LEN - at);
            for (i, byte) in chunk[..n].iter_mut().enumerate() {
                *byte = ((at + i) % 251) as u8;
            }
            if arena.write(&block, at, &chunk[..n]).is_err() {
                return 4;
            }
        }
        if !send(to_parent.as_raw_fd(), &block.offset().to_le_bytes()) {
            return 5;
        }
        0
    });
    assert_eq!(exit_code(child), 0);
    let offsets = read_offsets(from_child);
    assert_eq!(offsets, [MIB as u64]);
    let block = arena.block_at(offsets[0], LEN).unwrap();
    assert_eq!(arena.owner(block.offset()).unwrap(), child);
    let expected: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    assert_eq!(contents(&arena, &block, 0, LEN), expected);
    arena.adopt(block.offset()).unwrap();
    assert_eq!(arena.owner(block.offset()).unwrap(), my_pid());
    arena.free(block.offset()).unwrap();
    arena.free(first.offset()).unwrap();
    let s = arena.stats();
    assert_eq!((s.blocks, s.in_use, s.allocations, s.frees), (0, 0, 2, 2));
}

#[test]
fn a_child_frees_a_block_the_parent_allocated() {
    let arena = Arena::create(4 * MIB).unwrap();
    let block = alloc(&arena, 2 * MIB);
    let fd = arena.dup_fd().unwrap();
    let offset = block.offset();
    let child = fork(move || match Arena::open(fd).map(|a| a.free(offset)) {
        Ok(Ok(())) => 0,
        _ => 1,
    });
    assert_eq!(exit_code(child), 0);
    assert_eq!(arena.stats().blocks, 0);
    assert!(matches!(arena.free(offset), Err(Error::Invalid(_))));
    assert_eq!(alloc(&arena, 4 * MIB).offset(), 0);
}

#[test]
fn free_owned_by_frees_exactly_a_dead_processs_blocks() {
    let arena = Arena::create(256 * MIB).unwrap();
    let mine = [alloc(&arena, 100 * KIB), alloc(&arena, 3 * MIB)];
    let fd = arena.dup_fd().unwrap();
    let (from_child, to_parent) = pipe();
    // The child allocates three blocks, one large enough to be punched when freed, and
    // dies without freeing them.
    let child = fork(move || {
        let Ok(arena) = Arena::open(fd) else { return 2 };
        for len in [1, MIB, PUNCH_ON_FREE] {
            let Ok(Some(block)) = arena.alloc(len) else {
                return 3;
            };
            if arena.write(&block, 0, b"c").is_err()
                || !send(to_parent.as_raw_fd(), &block.offset().to_le_bytes())
            {
                return 4;
            }
        }
        0
    });
    assert_eq!(exit_code(child), 0);
    let theirs = read_offsets(from_child);
    assert_eq!(theirs.len(), 3);
    assert_eq!(arena.stats().blocks, 5);
    assert_eq!(arena.owner(theirs[2]).unwrap(), child);

    assert_eq!(arena.free_owned_by(child).unwrap(), 3);
    assert_eq!(arena.stats().blocks, 2);
    for offset in theirs {
        assert!(arena.block_at(offset, 1).is_err());
    }
    for block in mine {
        assert_eq!(arena.owner(block.offset()).unwrap(), my_pid());
    }
    assert_eq!(arena.free_owned_by(child).unwrap(), 0);
    assert_eq!(arena.free_owned_by(my_pid()).unwrap(), 2);
    let s = arena.stats();
    assert_eq!((s.blocks, s.in_use, s.frees), (0, 0, 5));
    assert_eq!(alloc(&arena, 256 * MIB).offset(), 0);
}

#[test]
fn trim_gives_back_the_pages_of_free_ranges_of_a_mebibyte_or_more() {
    let arena = Arena::create(64 * MIB).unwrap();
    let a = alloc(&arena, 8 * MIB);
    let d = alloc(&arena, 1);
    let e = alloc(&arena, 1);
    let b = alloc(&arena, 4 * MIB);
    assert_eq!(b.offset(), 12 * MIB as u64);
    for (block, fill) in [(a, 1), (d, 2), (e, 3), (b, 4)] {
        // Every page of every block is touched.
        let whole = arena.block_at(block.offset(), block.size()).unwrap();
        arena.write(&whole, 0, &vec![fill; block.size()]).unwrap();
    }
    arena.free(d.offset()).unwrap(); // a free 64 KiB range: keeps its pages
    arena.free(b.offset()).unwrap(); // a free 4 MiB range: below PUNCH_ON_FREE, keeps them
    let before = resident(&arena);
    assert_eq!(arena.trim().unwrap(), 4 * MIB as u64);
    assert_eq!(before - resident(&arena), 4 * MIB as u64);
    assert_eq!(arena.trim().unwrap(), 0);
    assert!(contents(&arena, &a, 0, a.len()).iter().all(|&x| x == 1));
    assert_eq!(contents(&arena, &e, 0, e.len()), [3]);
    // The trimmed range is free and reads as zeros.
    let again = alloc(&arena, 4 * MIB);
    assert_eq!(again.offset(), b.offset());
    assert!(contents(&arena, &again, 0, 4 * MIB).iter().all(|&x| x == 0));
    let s = arena.stats();
    assert_eq!((s.blocks, s.allocations, s.frees), (3, 5, 2));
}

#[test]
fn freeing_a_huge_block_gives_its_pages_back_at_once() {
    let arena = Arena::create(4 * PUNCH_ON_FREE).unwrap();
    let huge = alloc(&arena, PUNCH_ON_FREE);
    let small = alloc(&arena, MIB);
    arena.write(&huge, 0, &vec![1; PUNCH_ON_FREE]).unwrap();
    arena.write(&small, 0, &[2; MIB]).unwrap();
    let before = resident(&arena);
    arena.free(huge.offset()).unwrap();
    assert_eq!(before - resident(&arena), PUNCH_ON_FREE as u64);
    assert_eq!(arena.trim().unwrap(), 0);
    assert_eq!(contents(&arena, &small, 0, MIB), vec![2; MIB]);
    assert_eq!(alloc(&arena, PUNCH_ON_FREE).offset(), 0);
}

#[test]
fn threads_allocate_and_free_at_once() {
    let arena = Arc::new(Arena::create(32 * MIB).unwrap());
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let arena = arena.clone();
            std::thread::spawn(move || {
                let mut seed = t + 1;
                let mut live: Vec<(Block, [u8; 8])> = Vec::new();
                for i in 0..400u64 {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    if live.len() < 4 && seed >> 63 == 0 {
                        let len = 8 + (seed >> 20) as usize % MIB;
                        if let Some(block) = arena.alloc(len).unwrap() {
                            let tag = (t << 32 | i).to_le_bytes();
                            arena.write(&block, 0, &tag).unwrap();
                            arena.write(&block, len - 8, &tag).unwrap();
                            live.push((block, tag));
                        }
                    } else if !live.is_empty() {
                        let (block, tag) = live.swap_remove((seed >> 33) as usize % live.len());
                        assert_eq!(contents(&arena, &block, 0, 8), tag);
                        assert_eq!(contents(&arena, &block, block.len() - 8, 8), tag);
                        arena.free(block.offset()).unwrap();
                    }
                }
                for (block, _) in live {
                    arena.free(block.offset()).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let s = arena.stats();
    assert_eq!((s.in_use, s.blocks), (0, 0));
    assert_eq!(s.allocations, s.frees);
    assert!(s.allocations > 100);
    assert_eq!(alloc(&arena, 32 * MIB).offset(), 0);
}

// ---- a model of the buddy allocator ----

const MODEL_CAPACITY: usize = 4 * MIB;

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    /// Frees the live block at this index (modulo the number of live blocks).
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        1 => 1usize..300,
        6 => 1usize..200_000,
        2 => 1usize..=MODEL_CAPACITY,
        1 => MODEL_CAPACITY - 10..MODEL_CAPACITY + 10,
    ];
    prop_oneof![
        3 => len.prop_map(Op::Alloc),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

struct Live {
    block: Block,
    seed: u64,
}

/// The bytes checked in each block: its first (up to) 64, and (up to) 64 at its end that
/// do not overlap them.
fn marks(seed: u64, len: usize) -> (Vec<u8>, Vec<u8>) {
    let head = len.min(64);
    (
        pattern(seed, head),
        pattern(seed ^ 0xff, (len - head).min(64)),
    )
}

fn write_marks(arena: &Arena, live: &Live) {
    let (head, tail) = marks(live.seed, live.block.len());
    arena.write(&live.block, 0, &head).unwrap();
    let len = live.block.len();
    arena.write(&live.block, len - tail.len(), &tail).unwrap();
}

fn check_marks(arena: &Arena, live: &Live) {
    let (head, tail) = marks(live.seed, live.block.len());
    let len = live.block.len();
    assert_eq!(contents(arena, &live.block, 0, head.len()), head);
    assert_eq!(
        contents(arena, &live.block, len - tail.len(), tail.len()),
        tail
    );
}

/// Where a buddy allocator must put a block of `size` bytes: the lowest offset aligned to
/// `size` that no live block overlaps.
fn lowest_free_slot(live: &[Live], size: usize) -> Option<u64> {
    (0..MODEL_CAPACITY)
        .step_by(size)
        .map(|s| s as u64)
        .find(|&s| {
            live.iter().all(|l| {
                let (start, end) = (l.block.offset(), l.block.offset() + l.block.size() as u64);
                end <= s || start >= s + size as u64
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_allocs_and_frees_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let arena = Arena::create(MODEL_CAPACITY).unwrap();
        let mut live: Vec<Live> = Vec::new();
        let (mut made, mut refused, mut freed) = (0u64, 0u64, 0u64);
        for op in ops {
            match op {
                Op::Alloc(len) => {
                    let size = len.div_ceil(MIN_BLOCK).next_power_of_two() * MIN_BLOCK;
                    let expected = if size > MODEL_CAPACITY {
                        None
                    } else {
                        lowest_free_slot(&live, size)
                    };
                    let got = arena.alloc(len).unwrap();
                    prop_assert_eq!(got.map(|b| b.offset()), expected);
                    match got {
                        Some(block) => {
                            prop_assert_eq!((block.len(), block.size()), (len, size));
                            made += 1;
                            let entry = Live { block, seed: made };
                            write_marks(&arena, &entry);
                            live.push(entry);
                        }
                        None => refused += 1,
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let gone = live.swap_remove(i % live.len());
                    check_marks(&arena, &gone);
                    arena.free(gone.block.offset()).unwrap();
                    freed += 1;
                    prop_assert!(arena.free(gone.block.offset()).is_err());
                }
                Op::Free(_) => {}
            }
            for l in &live {
                check_marks(&arena, l);
            }
            let s = arena.stats();
            let in_use: usize = live.iter().map(|l| l.block.size()).sum();
            prop_assert_eq!((s.in_use, s.blocks), (in_use as u64, live.len() as u64));
            prop_assert_eq!((s.allocations, s.refused, s.frees), (made, refused, freed));
        }
        for l in live.drain(..) {
            arena.free(l.block.offset()).unwrap();
        }
        // Everything coalesced back into one block.
        prop_assert_eq!(arena.alloc(MODEL_CAPACITY).unwrap().map(|b| b.offset()), Some(0));
    }
}
