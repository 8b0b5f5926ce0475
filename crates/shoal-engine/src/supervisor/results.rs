//! Results and exits: taking finished chunks from the result rings, and settling the
//! accounts of workers whose processes ended.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;

use super::state::{requeue, Owed, Phase, Slot, State};
use super::work::{Event, Process, Task};
use super::BATCH;
use crate::depth::DepthGauge;
use crate::link::{Assembler, Frame, Kind};

/// Takes the finished results of slot `at`, and what else its worker said. A record that
/// breaks the protocol (a piece that does not fit, a message of a kind a worker never
/// sends, a result for a chunk it does not owe), or a ring that cannot be read, marks the
/// slot broken: its worker is then killed and replaced. The records after a bad one are
/// still read.
pub(super) fn collect(state: &mut State, at: usize) {
    let State {
        slots,
        tasks,
        events,
        gauge,
        ..
    } = state;
    let Slot {
        id,
        results,
        assembler,
        owed,
        answered,
        ready,
        broken,
        ..
    } = &mut slots[at];
    let mut reader = Reader {
        worker: *id,
        owed,
        answered,
        ready,
        tasks,
        events,
        gauge,
    };
    let mut faulty = false;
    loop {
        let taken = results.try_pop_many_with(BATCH, |record| {
            if reader.read(assembler, record).is_err() {
                faulty = true;
            }
        });
        match taken {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                faulty = true;
                break;
            }
        }
    }
    if faulty {
        *broken = true;
    }
}

/// A message no worker sends, or one that does not fit with what it owes.
struct ProtocolBroken;

/// What reading one worker's messages updates: its slot's accounts, and the supervisor's.
struct Reader<'a> {
    worker: u64,
    owed: &'a mut VecDeque<Owed>,
    answered: &'a mut u64,
    ready: &'a mut bool,
    tasks: &'a mut HashMap<u64, Task>,
    events: &'a mut VecDeque<Event>,
    gauge: &'a mut DepthGauge,
}

impl Reader<'_> {
    /// Feeds one ring record to the assembler, and takes the message it completes.
    fn read(&mut self, assembler: &mut Assembler, record: &[u8]) -> Result<(), ProtocolBroken> {
        let fed = assembler
            .feed_in_place(record)
            .map_err(|_| ProtocolBroken)?;
        match fed.complete(|frame, body| (frame, body.to_vec())) {
            Some((frame, payload)) => self.take(frame, payload),
            None => Ok(()),
        }
    }

    /// Takes one whole message of the worker's.
    fn take(&mut self, frame: Frame, payload: Vec<u8>) -> Result<(), ProtocolBroken> {
        let worker = self.worker;
        match frame.kind {
            Kind::Result => return self.answer(frame, payload),
            Kind::Ready => {
                *self.ready = true;
                self.events.push_back(Event::Ready {
                    worker,
                    when: frame.aux,
                });
            }
            // (A report that arrives after its chunk's result says nothing any more.)
            Kind::Progress if self.owes(frame.id) => self.events.push_back(Event::Progress {
                chunk: frame.id,
                done: frame.aux,
            }),
            Kind::Progress => {}
            Kind::Farewell => self.events.push_back(Event::Farewell { worker, payload }),
            Kind::Task | Kind::Define | Kind::Stop | Kind::Forget => return Err(ProtocolBroken),
        }
        Ok(())
    }

    /// The result of a chunk the worker owed: it owes it no more, and the chunk is done.
    fn answer(&mut self, frame: Frame, payload: Vec<u8>) -> Result<(), ProtocolBroken> {
        let at = self
            .owed
            .iter()
            .position(|o| o.chunk == frame.id)
            .ok_or(ProtocolBroken)?;
        self.owed.remove(at);
        *self.answered += 1;
        self.tasks.remove(&frame.id);
        self.gauge.observe(frame.aux);
        self.events.push_back(Event::Result {
            chunk: frame.id,
            worker: self.worker,
            payload,
        });
        Ok(())
    }

    fn owes(&self, chunk: u64) -> bool {
        self.owed.iter().any(|o| o.chunk == chunk)
    }
}

/// Looks at every pidfd at once and handles the workers that have exited.
pub(super) fn reap_exits(state: &mut State) {
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
pub(super) fn exited(state: &mut State, slot: &mut Slot) {
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
            ready: slot.ready,
        });
    }
}
