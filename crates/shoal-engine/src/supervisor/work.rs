//! What the caller and the supervisor exchange: chunks to run, workers' processes, and
//! events.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::proc::{Child, Exit, Pidfd};

/// One chunk to run: its id, its function's id (see
/// [`Supervisor::define`](super::Supervisor::define)) and its pickled items.
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
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Process::Child(c) => c.as_fd(),
            Process::Other(p) => p.as_fd(),
        }
    }

    pub(super) fn pid(&self) -> Option<i32> {
        match self {
            Process::Child(c) => Some(c.pid()),
            Process::Other(p) => p.pid(),
        }
    }

    /// Whether the process is stopped by a signal (see [`crate::proc::is_stopped`]).
    pub(super) fn is_stopped(&self) -> bool {
        self.pid().is_some_and(crate::proc::is_stopped)
    }

    pub(super) fn kill(&self) {
        // Already gone is fine: the exit is seen through the pidfd either way.
        let _ = match self {
            Process::Child(c) => c.kill(libc::SIGKILL),
            Process::Other(p) => p.kill(libc::SIGKILL),
        };
    }

    pub(super) fn reap(&mut self) -> Option<Exit> {
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
    /// A worker has started: its initializer ran (`when`: microseconds of the monotonic
    /// clock).
    Ready {
        /// The worker.
        worker: u64,
        /// When it was ready.
        when: u64,
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
        /// How many chunks it answered.
        answered: u64,
        /// Whether it said it had started (`Ready`): one that had not died starting up
        /// (an initializer that crashes the process, say, or a kill meanwhile).
        ready: bool,
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
