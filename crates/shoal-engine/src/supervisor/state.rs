//! The supervisor's state: a slot per worker, the queue of chunks, and the phase, behind
//! one mutex.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::work::{Event, Process, Task};
use crate::bell::Bell;
use crate::depth::DepthGauge;
use crate::link::{Assembler, Outbox};
use crate::ring::Ring;

#[derive(Debug)]
pub(super) struct Owed {
    pub(super) chunk: u64,
    /// The ring position just past the chunk's last piece, once it is all written.
    pub(super) end: Option<u64>,
    /// When the worker was first seen to have taken it.
    pub(super) started: Option<Instant>,
    /// When its last piece was written to the worker's ring.
    pub(super) written: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) tasks: Ring,
    pub(super) results: Ring,
    pub(super) outbox: Outbox,
    pub(super) assembler: Assembler,
    /// `None` while the caller is still starting the process; chunks may already wait.
    pub(super) process: Option<Process>,
    pub(super) funcs: HashSet<u64>,
    pub(super) owed: VecDeque<Owed>,
    pub(super) given: u64,
    pub(super) answered: u64,
    /// The worker said it had started (`Kind::Ready`).
    pub(super) ready: bool,
    pub(super) limit: Option<u64>,
    pub(super) stopping: bool,
    /// The worker is killed and replaced: its ring carried something impossible, or it
    /// left a chunk untaken past the chunk's timeout (see `check_deadlines`).
    pub(super) broken: bool,
    /// The chunk whose time ran out: the worker was killed for it.
    pub(super) timed_out: Option<u64>,
}

impl Slot {
    pub(super) fn can_take(&self, depth: usize) -> bool {
        !self.stopping
            && !self.broken
            && self.owed.len() < depth
            && self.limit.is_none_or(|limit| self.given < limit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    Closing,
    Terminating,
    Stopped,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    pub(super) pending: VecDeque<u64>,
    pub(super) tasks: HashMap<u64, Task>,
    pub(super) funcs: HashMap<u64, Arc<[u8]>>,
    pub(super) events: VecDeque<Event>,
    pub(super) phase: Phase,
    pub(super) next_worker: u64,
    pub(super) last_exit_check: Instant,
    /// When a caller last came into `next_events`, where it does the collecting itself
    /// while it waits on the bell. Meanwhile, and for [`EXIT_CHECK`] after it, the
    /// supervisor thread only looks in every [`EXIT_CHECK`] instead of waking with the
    /// bell: two threads woken by every result would cost more than they save.
    pub(super) caller_seen: Option<Instant>,
    /// Whether a caller is waiting on the bell inside `next_events` right now.
    pub(super) caller_waiting: bool,
    /// Set by `wake`: the waiting caller returns even without events.
    pub(super) woken: bool,
    /// How many chunks a worker may owe, from how long chunks take.
    pub(super) gauge: DepthGauge,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Never signalled: the supervisor thread's timed sleep while a caller collects.
    pub(super) pause: Condvar,
    pub(super) bell: Bell,
    pub(super) ring_capacity: usize,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that is still consistent enough to
        // shut down with; carry on rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Puts chunks back at the front of the queue, keeping their order.
pub(super) fn requeue(state: &mut State, chunks: impl DoubleEndedIterator<Item = u64>) {
    if matches!(state.phase, Phase::Terminating | Phase::Stopped) {
        return;
    }
    for chunk in chunks.rev() {
        if state.tasks.contains_key(&chunk) {
            state.pending.push_front(chunk);
        }
    }
}
