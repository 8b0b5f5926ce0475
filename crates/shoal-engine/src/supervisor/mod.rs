//! The parent's side of a process pool: one thread that places chunks on the workers' task
//! rings, collects results from their result rings, and watches the workers' pidfds.
//!
//! The caller (the Python Pool) starts workers and hands their process handles over; the
//! supervisor does everything that must happen quickly and without the interpreter:
//! * at most `depth` chunks owed by a worker at a time (one running, the rest waiting in
//!   its ring), placed on the worker that owes the fewest;
//! * a function's bytes sent to a worker once, before its first chunk that needs it;
//! * a worker's death seen through its pidfd: the results it finished are kept, chunks it
//!   never took go back to the front of the queue, the one it was running is retried or
//!   reported lost ([`Event::Exited`]), and the caller starts a replacement;
//! * `close` finishes everything, then stops the workers; `terminate` kills them.
//!
//! Whether a chunk was taken is read from the ring itself: each chunk's last byte has a
//! position, and the worker's consumed position shows whether it got that far.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bell::Bell;
pub use crate::depth::DepthGauge;
use crate::error::{Error, Result};
use crate::link::{Assembler, Frame, Kind, Outbox};
use crate::ring::Ring;
use crate::sync::current_pid;
use crate::wait::{Interrupt, NoInterrupt, SLICE};

/// How often a busy supervisor looks at the pidfds (an idle one looks every [`SLICE`]).
const EXIT_CHECK: Duration = Duration::from_millis(5);
/// Records taken from one result ring per turn, so one busy worker cannot starve others.
const BATCH: usize = 64;

/// How long the supervisor thread sleeps between looks while it collects short chunks in
/// the caller's place: a fraction of `BUFFERED_MICROS` (`depth.rs`).
const NAP: Duration = Duration::from_micros(500);

mod machine;
mod results;
mod state;
mod work;

use machine::{place, run, step, write_outboxes};
use results::collect;
use state::{requeue, Phase, Shared, Slot, State};
pub use work::{Event, NewWorker, Process, Task};

/// The supervisor thread and its shared state; see the [module documentation](self).
#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The process that started it. A copy made by `fork` has the memory but neither the
    /// thread nor the right to stop the workers, which belong to the original.
    owner: u32,
}

impl Supervisor {
    /// Starts the thread. Each worker owes at least `depth` chunks when there are enough
    /// (at least 1), more while chunks are short (see [`DepthGauge`]); each of its rings
    /// holds `ring_capacity` bytes.
    pub fn start(depth: usize, ring_capacity: usize) -> Result<Self> {
        Self::start_with(DepthGauge::new(depth), ring_capacity)
    }

    /// Starts the thread with `gauge` deciding how many chunks each worker owes.
    pub fn start_with(gauge: DepthGauge, ring_capacity: usize) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: Vec::new(),
                pending: VecDeque::new(),
                tasks: HashMap::new(),
                funcs: HashMap::new(),
                events: VecDeque::new(),
                phase: Phase::Running,
                next_worker: 0,
                last_exit_check: Instant::now(),
                caller_seen: None,
                caller_waiting: false,
                woken: false,
                gauge,
            }),
            pause: Condvar::new(),
            bell: Bell::create()?,
            ring_capacity,
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-supervisor".into())
            .spawn(move || run(&inner))
            .map_err(|source| Error::Os {
                what: "starting the supervisor thread",
                source,
            })?;
        Ok(Supervisor {
            shared,
            thread: Some(thread),
            owner: current_pid(),
        })
    }

    /// False in a copy of the owning process made by `fork`: there, every call that would
    /// act on the workers does nothing. (The pid is the cached one a forked child forgets:
    /// a `getpid` system call on every submit showed in profiles of `apply_async`.)
    pub fn is_owner(&self) -> bool {
        current_pid() == self.owner
    }

    /// Makes room for a worker: its rings, and its place in the rotation (chunks may be
    /// placed on it before its process exists). `limit`: the chunks it runs before it
    /// exits by itself (the worker must be told the same number).
    pub fn add_worker(&self, limit: Option<u64>) -> Result<NewWorker> {
        let tasks = Ring::create(self.shared.ring_capacity)?;
        let results = Ring::create(self.shared.ring_capacity)?;
        let fds = NewWorker {
            id: 0,
            tasks: tasks.dup_fd()?,
            results: results.dup_fd()?,
            bell: self.shared.bell.dup_fd()?,
        };
        let mut state = self.shared.lock();
        if matches!(state.phase, Phase::Terminating | Phase::Stopped) {
            return Err(Error::Invalid("the pool is shutting down".into()));
        }
        let id = state.next_worker;
        state.next_worker += 1;
        state.slots.push(Slot {
            id,
            tasks,
            results,
            outbox: Outbox::default(),
            assembler: Assembler::default(),
            process: None,
            funcs: HashSet::new(),
            owed: VecDeque::new(),
            given: 0,
            answered: 0,
            ready: false,
            limit,
            stopping: false,
            broken: false,
            timed_out: None,
        });
        drop(state);
        self.shared.bell.ring();
        Ok(NewWorker { id, ..fds })
    }

    /// Gives worker `id` its process. After `terminate`, the process is killed at once.
    pub fn attach(&self, id: u64, process: Process) -> Result<()> {
        let mut state = self.shared.lock();
        let terminating = state.phase == Phase::Terminating;
        let slot = state
            .slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::Invalid(format!("no worker {id} is being started")))?;
        if terminating {
            process.kill();
        }
        slot.process = Some(process);
        Ok(())
    }

    /// Gives up on starting worker `id`: what it was given goes back to the queue.
    pub fn abandon(&self, id: u64) {
        let mut state = self.shared.lock();
        if let Some(at) = state.slots.iter().position(|s| s.id == id) {
            let slot = state.slots.remove(at);
            requeue(&mut state, slot.owed.into_iter().map(|o| o.chunk));
        }
        drop(state);
        self.shared.bell.ring();
    }

    /// Registers function `func`'s bytes, sent to each worker before its first chunk of it.
    pub fn define(&self, func: u64, bytes: Arc<[u8]>) {
        self.shared.lock().funcs.insert(func, bytes);
    }

    /// Forgets function `func`, which no chunk queued or owed uses any more (the caller
    /// knows): later workers are not sent it, and each worker that has it is told to drop
    /// it, so a program that sends many short-lived functions (a bound method per call)
    /// does not make every process keep them all.
    pub fn forget(&self, func: u64) {
        let mut state = self.shared.lock();
        state.funcs.remove(&func);
        for slot in state.slots.iter_mut() {
            if slot.funcs.remove(&func) && !slot.stopping {
                slot.outbox
                    .add(Frame::new(Kind::Forget, func, 0), Arc::from(&[][..]));
            }
        }
        drop(state);
        self.shared.bell.ring();
    }

    /// Queues a chunk. Fails after `close` or `terminate`, or if its function is unknown.
    pub fn submit(&self, task: Task) -> Result<()> {
        self.submit_many(vec![task])
    }

    /// Queues chunks, in order.
    pub fn submit_many(&self, tasks: Vec<Task>) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::Invalid(
                "a pool cannot be used in a process forked from the one that created it".into(),
            ));
        }
        let mut state = self.shared.lock();
        if state.phase != Phase::Running {
            return Err(Error::Invalid("the pool is not running".into()));
        }
        for task in &tasks {
            if !state.funcs.contains_key(&task.func) {
                return Err(Error::Invalid(format!(
                    "function {} was never defined",
                    task.func
                )));
            }
        }
        for task in tasks {
            state.pending.push_back(task.chunk);
            state.tasks.insert(task.chunk, task);
        }
        // Results first: each one frees room in its worker. The thread that usually
        // collects may be busy in Python (or waiting for the interpreter lock) while this
        // one submits, and the workers would sit idle until it comes back. Whoever waits
        // for these results was woken by the worker's bell already.
        for at in 0..state.slots.len() {
            collect(&mut state, at);
        }
        // Placed from this thread: the worker is woken by its ring, and nobody else needs
        // to be. What finds no room waits for a result to make some.
        place(&mut state);
        write_outboxes(&mut state);
        let stuck = state.slots.iter().any(|s| !s.outbox.is_empty());
        if stuck {
            // A ring was full mid-message: the supervisor writes the rest as room comes.
            drop(state);
            self.shared.bell.ring();
        }
        Ok(())
    }

    /// Takes back chunk `chunk` if it is still waiting in the queue: true when it was
    /// there (it will never run and never be answered), false when a worker owes it
    /// already, it was answered, or it is unknown.
    pub fn withdraw(&self, chunk: u64) -> bool {
        if !self.is_owner() {
            return false;
        }
        let mut state = self.shared.lock();
        let Some(at) = state.pending.iter().position(|&c| c == chunk) else {
            return false;
        };
        state.pending.remove(at);
        state.tasks.remove(&chunk);
        true
    }

    /// Lets every queued chunk finish, then stops the workers; [`Event::Stopped`] follows
    /// once they have all exited.
    pub fn close(&self) {
        if !self.is_owner() {
            return;
        }
        let mut state = self.shared.lock();
        if state.phase == Phase::Running {
            state.phase = Phase::Closing;
        }
        drop(state);
        self.shared.bell.ring();
    }

    /// Drops every queued chunk and kills every worker; [`Event::Stopped`] follows once
    /// they have all exited.
    pub fn terminate(&self) {
        if !self.is_owner() {
            return;
        }
        let mut state = self.shared.lock();
        if matches!(state.phase, Phase::Terminating | Phase::Stopped) {
            return;
        }
        state.phase = Phase::Terminating;
        state.pending.clear();
        state.tasks.clear();
        for slot in &mut state.slots {
            slot.outbox.drain();
            slot.owed.clear();
            if let Some(p) = &slot.process {
                p.kill();
            }
        }
        // A worker still being started is killed when attached (or dropped if abandoned).
        drop(state);
        self.shared.bell.ring();
    }

    /// Waits for events until `deadline` (`None`: forever) and takes them all; an empty
    /// list when the deadline passed, or at once when the supervisor has stopped and
    /// every event was taken. Asks `interrupt` between short sleeps.
    ///
    /// While it waits, the calling thread does the supervisor's collecting itself, woken
    /// by the workers' bell: a result reaches the caller with one wake-up, not two.
    pub fn next_events(
        &self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Vec<Event>> {
        let shared = &self.shared;
        loop {
            let seen = shared.bell.seq();
            if let Some(events) = self.try_events() {
                return Ok(events);
            }
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            let _ = shared.bell.wait_change(seen, Some(until), &mut NoInterrupt);
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            if timed_out || interrupt.interrupted() {
                shared.lock().caller_waiting = false;
                return if timed_out {
                    Ok(Vec::new())
                } else {
                    Err(Error::Interrupted)
                };
            }
        }
    }

    /// The events there are now, without waiting: `None` when [`next_events`] would
    /// have to wait (no event, no [`wake`](Self::wake), not stopped). Collects first, as
    /// `next_events` does. A caller that holds a lock of its own (an interpreter's) can
    /// take events this way without letting go of it while they keep coming.
    ///
    /// [`next_events`]: Self::next_events
    pub fn try_events(&self) -> Option<Vec<Event>> {
        let mut state = self.shared.lock();
        if state.events.is_empty() && state.phase != Phase::Stopped {
            step(&mut state);
        }
        state.caller_seen = Some(Instant::now());
        let woken = std::mem::take(&mut state.woken);
        if woken || !state.events.is_empty() || state.phase == Phase::Stopped {
            state.caller_waiting = false;
            return Some(state.events.drain(..).collect());
        }
        // The caller waits on the bell next (in `next_events`).
        state.caller_waiting = true;
        None
    }

    /// Makes the caller waiting in [`next_events`](Self::next_events) (or the next one)
    /// return, with whatever events there are, possibly none.
    pub fn wake(&self) {
        self.shared.lock().woken = true;
        self.shared.bell.ring();
    }

    /// Whether the supervisor has stopped (every worker exited after close or terminate).
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().phase == Phase::Stopped
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if !self.is_owner() {
            // The thread does not exist in this copy: joining it would wait forever or
            // worse. Its handle is let go without a word.
            std::mem::forget(self.thread.take());
            return;
        }
        self.terminate();
        if let Some(thread) = self.thread.take() {
            // The thread ends once every killed worker's pidfd reports its exit.
            let _ = thread.join();
        }
    }
}
