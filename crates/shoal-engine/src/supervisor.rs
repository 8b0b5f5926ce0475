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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bell::Bell;
pub use crate::depth::DepthGauge;
use crate::error::{Error, Result};
use crate::link::{Assembler, Fed, Frame, Kind, Outbox};
use crate::proc::{Child, Exit, Pidfd};
use crate::ring::Ring;
use crate::wait::{Interrupt, NoInterrupt, SLICE};

/// How often a busy supervisor looks at the pidfds (an idle one looks every [`SLICE`]).
const EXIT_CHECK: Duration = Duration::from_millis(5);
/// Records taken from one result ring per turn, so one busy worker cannot starve others.
const BATCH: usize = 64;

/// How long the supervisor thread sleeps between looks while it collects short chunks in
/// the caller's place: a fraction of `BUFFERED_MICROS` (`depth.rs`).
const NAP: Duration = Duration::from_micros(500);

/// One chunk to run: its id, its function's id (see [`Supervisor::define`]) and its
/// pickled items.
#[derive(Debug, Clone)]
pub struct Task {
    /// The chunk's id, unique in the pool; its result carries it.
    pub chunk: u64,
    /// The function the worker calls, defined before.
    pub func: u64,
    /// The chunk's arguments, opaque here.
    pub payload: Arc<[u8]>,
    /// How many more times the chunk runs again if a worker dies while running it.
    pub retries: u32,
    /// The longest the chunk may run once a worker has taken it; past it, the worker is
    /// killed and the chunk reported as timed out (never retried).
    pub timeout: Option<Duration>,
}

/// How the supervisor watches a worker: a child of this process (reaped here, so its exit
/// status is known) or any other process (the zygote's children).
#[derive(Debug)]
pub enum Process {
    /// Started by this process.
    Child(Child),
    /// Started by someone else, who reaps it.
    Other(Pidfd),
}

impl Process {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Process::Child(c) => c.as_fd(),
            Process::Other(p) => p.as_fd(),
        }
    }

    fn pid(&self) -> Option<i32> {
        match self {
            Process::Child(c) => Some(c.pid()),
            Process::Other(p) => p.pid(),
        }
    }

    fn kill(&self) {
        // Already gone is fine: the exit is seen through the pidfd either way.
        let _ = match self {
            Process::Child(c) => c.kill(libc::SIGKILL),
            Process::Other(p) => p.kill(libc::SIGKILL),
        };
    }

    fn reap(&mut self) -> Option<Exit> {
        match self {
            Process::Child(c) => c.try_wait().ok().flatten(),
            Process::Other(_) => None,
        }
    }
}

/// What the supervisor tells the caller.
#[derive(Debug)]
pub enum Event {
    /// A worker finished a chunk.
    Result {
        /// The chunk.
        chunk: u64,
        /// The worker that ran it.
        worker: u64,
        /// The worker's message, opaque here.
        payload: Vec<u8>,
    },
    /// A worker sent its farewell (what the pool's exit hook returned) as it leaves;
    /// its `Exited` follows.
    Farewell {
        /// The worker.
        worker: u64,
        /// The worker's message, opaque here.
        payload: Vec<u8>,
    },
    /// A worker running chunk `chunk` has finished `done` of its tasks.
    Progress {
        /// The chunk.
        chunk: u64,
        /// How many of its tasks are done.
        done: u64,
    },
    /// A worker's process ended. Unless the pool is stopping, start another.
    Exited {
        /// The worker.
        worker: u64,
        /// Its process id, when known.
        pid: Option<i32>,
        /// How it ended, when known (workers of the zygote are reaped there).
        exit: Option<Exit>,
        /// The chunk it was running and that has no retries left: it will never be
        /// answered.
        lost: Option<u64>,
        /// True when it was told to stop or had run its task limit and owed nothing.
        expected: bool,
        /// Whether the pool needs a worker in its place: false once it was told to stop
        /// or the pool is terminating.
        replace: bool,
        /// Whether it was killed because `lost` ran past its timeout.
        timed_out: bool,
        /// How many chunks it answered: none, for a worker that died on its way up (an
        /// initializer that crashes the process, say).
        answered: u64,
    },
    /// After `close` or `terminate`: every worker has exited. The last event.
    Stopped,
}

/// A new worker's descriptors, to hand to the process that will be it.
#[derive(Debug)]
pub struct NewWorker {
    /// The worker's id in events.
    pub id: u64,
    /// Its task ring (it consumes).
    pub tasks: OwnedFd,
    /// Its result ring (it produces).
    pub results: OwnedFd,
    /// The pool's bell (it rings).
    pub bell: OwnedFd,
}

#[derive(Debug)]
struct Owed {
    chunk: u64,
    /// The ring position just past the chunk's last piece, once it is all written.
    end: Option<u64>,
    /// When the worker was first seen to have taken it.
    started: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    tasks: Ring,
    results: Ring,
    outbox: Outbox,
    assembler: Assembler,
    /// `None` while the caller is still starting the process; chunks may already wait.
    process: Option<Process>,
    funcs: HashSet<u64>,
    owed: VecDeque<Owed>,
    given: u64,
    answered: u64,
    limit: Option<u64>,
    stopping: bool,
    /// The ring carried something impossible: the worker is killed and replaced.
    broken: bool,
    /// The chunk whose time ran out: the worker was killed for it.
    timed_out: Option<u64>,
}

impl Slot {
    fn can_take(&self, depth: usize) -> bool {
        !self.stopping
            && !self.broken
            && self.owed.len() < depth
            && self.limit.is_none_or(|limit| self.given < limit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closing,
    Terminating,
    Stopped,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    pending: VecDeque<u64>,
    tasks: HashMap<u64, Task>,
    funcs: HashMap<u64, Arc<[u8]>>,
    events: VecDeque<Event>,
    phase: Phase,
    next_worker: u64,
    last_exit_check: Instant,
    /// When a caller last came into `next_events`, where it does the collecting itself
    /// while it waits on the bell. Meanwhile, and for [`EXIT_CHECK`] after it, the
    /// supervisor thread only looks in every [`EXIT_CHECK`] instead of waking with the
    /// bell: two threads woken by every result would cost more than they save.
    caller_seen: Option<Instant>,
    /// Whether a caller is waiting on the bell inside `next_events` right now.
    caller_waiting: bool,
    /// Set by `wake`: the waiting caller returns even without events.
    woken: bool,
    /// How many chunks a worker may owe, from how long chunks take.
    gauge: DepthGauge,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Never signalled: the supervisor thread's timed sleep while a caller collects.
    pause: Condvar,
    bell: Bell,
    ring_capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that is still consistent enough to
        // shut down with; carry on rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The supervisor thread and its shared state; see the [module documentation](self).
#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The process that started it. A copy made by `fork` has the memory but neither the
    /// thread nor the right to stop the workers, which belong to the original.
    owner: libc::pid_t,
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
    /// act on the workers does nothing.
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

fn current_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no memory effects.
    unsafe { libc::getpid() }
}

/// Puts chunks back at the front of the queue, keeping their order.
fn requeue(state: &mut State, chunks: impl DoubleEndedIterator<Item = u64>) {
    if matches!(state.phase, Phase::Terminating | Phase::Stopped) {
        return;
    }
    for chunk in chunks.rev() {
        if state.tasks.contains_key(&chunk) {
            state.pending.push_front(chunk);
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let seen = shared.bell.seq();
        let mut state = shared.lock();
        while state.phase != Phase::Stopped && caller_active(&state) {
            // The caller collects; look in now and then for what only time shows
            // (exits) and for work left while it is busy in Python.
            let (next, _) = shared
                .pause
                .wait_timeout(state, EXIT_CHECK)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            let had_events = !state.events.is_empty();
            step(&mut state);
            if !had_events && !state.events.is_empty() {
                shared.bell.ring();
            }
        }
        let had_events = !state.events.is_empty();
        step(&mut state);
        if !had_events && !state.events.is_empty() {
            // Wakes a caller about to wait on the bell.
            shared.bell.ring();
        }
        if state.phase == Phase::Stopped {
            return;
        }
        if state.gauge.is_deep() && state.slots.iter().any(|s| !s.owed.is_empty()) {
            // Short chunks: every worker has BUFFERED_MICROS of work queued, so looking in
            // a few times per buffer keeps them busy; a wake-up per result would cost
            // more than the results.
            let _ = shared.pause.wait_timeout(state, NAP);
            continue;
        }
        drop(state);
        // Only a timeout or the bell end this wait; both lead to another turn. No
        // spinning: this thread stands in for a busy caller, whose CPU it would take.
        let until = Instant::now() + SLICE;
        if !shared.bell.sleep_until_change(seen, Some(until)) {
            // Quiet for a whole slice: a good moment to look at the pidfds.
            shared.lock().last_exit_check -= EXIT_CHECK;
        }
    }
}

/// Whether the caller does the collecting: it is waiting in `next_events`, or was there
/// a moment ago and is busy with what it took.
fn caller_active(state: &State) -> bool {
    state.caller_waiting || state.caller_seen.is_some_and(|t| t.elapsed() < EXIT_CHECK)
}

/// One turn: collect results, notice exits, place chunks, write what fits.
fn step(state: &mut State) {
    for at in 0..state.slots.len() {
        collect(state, at);
    }
    if state.last_exit_check.elapsed() >= EXIT_CHECK {
        state.last_exit_check = Instant::now();
        reap_exits(state);
    }
    place(state);
    write_outboxes(state);
    check_deadlines(state);
    finish_phase(state);
    for slot in &state.slots {
        if slot.broken {
            if let Some(p) = &slot.process {
                p.kill();
            }
        }
    }
}

/// Notes when each worker took the chunk it is running, and kills a worker whose chunk has
/// run past its timeout (its exit is then reported as that chunk timing out).
fn check_deadlines(state: &mut State) {
    let State { slots, tasks, .. } = state;
    for slot in slots.iter_mut() {
        if slot.timed_out.is_some() {
            continue;
        }
        let consumed = slot.tasks.consumed();
        let Some(owed) = slot.owed.front_mut() else {
            continue;
        };
        if owed.end.is_none_or(|end| end > consumed) {
            continue;
        }
        let started = *owed.started.get_or_insert_with(Instant::now);
        let limit = tasks.get(&owed.chunk).and_then(|t| t.timeout);
        if limit.is_some_and(|limit| started.elapsed() > limit) {
            slot.timed_out = Some(owed.chunk);
            if let Some(p) = &slot.process {
                p.kill();
            }
        }
    }
}

/// Writes what fits of every worker's outbox into its task ring (waking the worker through
/// the ring's own doorbell).
fn write_outboxes(state: &mut State) {
    for slot in &mut state.slots {
        match slot.outbox.pump(&mut slot.tasks) {
            Ok(done) => {
                for (frame, end) in done {
                    if frame.kind != Kind::Task {
                        continue;
                    }
                    if let Some(owed) = slot.owed.iter_mut().find(|o| o.chunk == frame.id) {
                        owed.end = Some(end);
                    }
                }
            }
            Err(_) => slot.broken = true,
        }
    }
}

/// Takes the finished results of slot `at`.
fn collect(state: &mut State, at: usize) {
    let State {
        slots,
        tasks,
        events,
        gauge,
        ..
    } = state;
    let slot = &mut slots[at];
    loop {
        let Slot {
            results,
            assembler,
            owed,
            id,
            broken,
            answered,
            ..
        } = &mut *slot;
        let taken =
            results.try_pop_many_with(BATCH, |record| match assembler.feed_in_place(record) {
                Ok(Fed::Partial) => {}
                Ok(fed) => {
                    let done = fed.complete(|frame, body| (frame, body.to_vec()));
                    if let Some((frame, payload)) = done {
                        if frame.kind == Kind::Farewell {
                            events.push_back(Event::Farewell {
                                worker: *id,
                                payload,
                            });
                            return;
                        }
                        if frame.kind == Kind::Progress {
                            if owed.iter().any(|o| o.chunk == frame.id) {
                                events.push_back(Event::Progress {
                                    chunk: frame.id,
                                    done: frame.aux,
                                });
                            }
                            return;
                        }
                        if frame.kind != Kind::Result {
                            *broken = true;
                            return;
                        }
                        match owed.iter().position(|o| o.chunk == frame.id) {
                            Some(i) => {
                                owed.remove(i);
                                *answered += 1;
                            }
                            None => {
                                *broken = true;
                                return;
                            }
                        }
                        tasks.remove(&frame.id);
                        gauge.observe(frame.aux);
                        events.push_back(Event::Result {
                            chunk: frame.id,
                            worker: *id,
                            payload,
                        });
                    }
                }
                Err(_) => *broken = true,
            });
        match taken {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                slot.broken = true;
                return;
            }
        }
    }
}

/// Looks at every pidfd at once and handles the workers that have exited.
fn reap_exits(state: &mut State) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut which = Vec::new();
    for (at, slot) in state.slots.iter().enumerate() {
        if let Some(p) = &slot.process {
            fds.push(libc::pollfd {
                fd: p.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(at);
        }
    }
    if fds.is_empty() {
        return;
    }
    // SAFETY: `fds` is a valid array of pollfds for the duration of the call; the
    // descriptors belong to slots that the state lock keeps alive.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if rc <= 0 {
        return;
    }
    let gone: Vec<usize> = fds
        .iter()
        .zip(which)
        .filter(|(fd, _)| fd.revents != 0)
        .map(|(_, at)| at)
        .collect();
    for &at in gone.iter().rev() {
        // Results it published before it died are good: take them first.
        collect(state, at);
        let mut slot = state.slots.remove(at);
        exited(state, &mut slot);
    }
}

/// Settles the accounts of a worker whose process has ended.
fn exited(state: &mut State, slot: &mut Slot) {
    let exit = slot.process.as_mut().and_then(Process::reap);
    let pid = slot.process.as_ref().and_then(Process::pid);
    let consumed = slot.tasks.consumed();
    let expected = slot.stopping
        || (slot.owed.is_empty() && slot.limit.is_some_and(|limit| slot.given >= limit));
    let mut lost = None;
    let mut back = Vec::new();
    let timed_out = slot.timed_out;
    if let Some(chunk) = timed_out {
        // Never retried: it would most likely run out of time again.
        slot.owed.retain(|o| o.chunk != chunk);
        state.tasks.remove(&chunk);
        lost = Some(chunk);
    }
    for owed in slot.owed.drain(..) {
        let taken = owed.end.is_some_and(|end| end <= consumed);
        if taken && lost.is_none() {
            match state.tasks.get_mut(&owed.chunk) {
                Some(task) if task.retries > 0 => {
                    task.retries -= 1;
                    back.push(owed.chunk);
                }
                Some(_) => {
                    state.tasks.remove(&owed.chunk);
                    lost = Some(owed.chunk);
                }
                None => {}
            }
        } else {
            back.push(owed.chunk);
        }
    }
    slot.outbox.drain();
    requeue(state, back.into_iter());
    let ending = matches!(state.phase, Phase::Terminating | Phase::Stopped);
    if !ending || lost.is_some() {
        state.events.push_back(Event::Exited {
            worker: slot.id,
            pid,
            exit,
            lost,
            expected,
            replace: !ending && !slot.stopping,
            timed_out: timed_out.is_some(),
            answered: slot.answered,
        });
    }
}

/// Places queued chunks on the workers that owe the fewest.
fn place(state: &mut State) {
    let depth = state.gauge.depth();
    while let Some(&chunk) = state.pending.front() {
        let Some(slot) = state
            .slots
            .iter_mut()
            .filter(|s| s.can_take(depth))
            .min_by_key(|s| s.owed.len())
        else {
            break;
        };
        state.pending.pop_front();
        let Some(task) = state.tasks.get(&chunk) else {
            continue;
        };
        if slot.funcs.insert(task.func) {
            if let Some(bytes) = state.funcs.get(&task.func) {
                slot.outbox
                    .add(Frame::new(Kind::Define, task.func, 0), bytes.clone());
            }
        }
        slot.outbox.add(
            Frame::new(Kind::Task, chunk, task.func),
            task.payload.clone(),
        );
        slot.owed.push_back(Owed {
            chunk,
            end: None,
            started: None,
        });
        slot.given += 1;
    }
}

/// Moves a closing or terminating pool towards its end.
fn finish_phase(state: &mut State) {
    match state.phase {
        Phase::Running | Phase::Stopped => {}
        Phase::Closing => {
            let idle = state.pending.is_empty() && state.slots.iter().all(|s| s.owed.is_empty());
            if idle {
                for slot in state.slots.iter_mut().filter(|s| !s.stopping) {
                    slot.outbox
                        .add(Frame::new(Kind::Stop, 0, 0), Arc::from(&[][..]));
                    slot.stopping = true;
                    let _ = slot.outbox.pump(&mut slot.tasks);
                }
                if state.slots.is_empty() {
                    state.phase = Phase::Stopped;
                    state.events.push_back(Event::Stopped);
                }
            }
        }
        Phase::Terminating => {
            if state.slots.is_empty() {
                state.phase = Phase::Stopped;
                state.events.push_back(Event::Stopped);
            }
        }
    }
}
