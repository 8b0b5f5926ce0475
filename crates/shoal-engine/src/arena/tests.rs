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

#[test]
fn reclaim_takes_back_only_the_dead_processs_blocks_among_those_named() -> Result<()> {
    let arena = Arena::create(1 << 20)?;
    let [a, b, c] = [
        alloc(&arena, 100)?,
        alloc(&arena, 100)?,
        alloc(&arena, 100)?,
    ];
    let heads = arena.heads();
    for block in [&a, &b] {
        let first = block.offset() as usize / MIN_BLOCK;
        heads[first].owner_pid.store(-5, Ordering::Relaxed);
    }
    // c is someone else's; a 4096-byte step is where no block starts.
    let named = [a.offset(), c.offset(), c.offset() + 4096];
    assert_eq!(arena.reclaim(-5, &named)?, 1);
    assert_eq!(arena.owner(a.offset())?, my_pid());
    assert_eq!(arena.owner(c.offset())?, my_pid());
    assert_eq!(arena.free_owned_by(-5)?, 1); // b only
    assert!(arena.free(b.offset()).is_err());
    arena.free(a.offset())?;
    Ok(())
}
