//! Results and exits: taking finished chunks from the result rings, and settling the
//! accounts of workers whose processes ended.

use std::os::fd::AsRawFd;

use super::state::{requeue, Phase, Slot, State};
use super::work::{Event, Process};
use super::BATCH;
use crate::link::{Fed, Kind};

/// Takes the finished results of slot `at`.
pub(super) fn collect(state: &mut State, at: usize) {
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
            ready,
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
                        if frame.kind == Kind::Ready {
                            *ready = true;
                            events.push_back(Event::Ready {
                                worker: *id,
                                when: frame.aux,
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
