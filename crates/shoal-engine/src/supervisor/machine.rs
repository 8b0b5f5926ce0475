//! The supervisor thread's loop and its turns: placing chunks, writing them out, timing
//! them, and moving a closing pool to its end.

use std::sync::Arc;
use std::time::Instant;

use super::results::{collect, reap_exits};
use super::state::{Owed, Phase, Shared, State};
use super::work::{Event, Process};
use super::{EXIT_CHECK, NAP};
use crate::link::{Frame, Kind};
use crate::wait::SLICE;

pub(super) fn run(shared: &Shared) {
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
pub(super) fn caller_active(state: &State) -> bool {
    state.caller_waiting || state.caller_seen.is_some_and(|t| t.elapsed() < EXIT_CHECK)
}

/// One turn: collect results, notice exits, place chunks, write what fits.
pub(super) fn step(state: &mut State) {
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
/// run past its timeout (its exit is then reported as that chunk timing out). A worker
/// that leaves the chunk at the front of its ring untaken for longer than that chunk's
/// timeout, though it said it had started, runs nothing (it was stopped, say, with
/// `SIGSTOP`): it is killed too, and every chunk it held goes to another worker, none of
/// them lost. So is a worker still starting that holds such a chunk, but only if it is
/// stopped by a signal: a slow initializer is left to finish.
pub(super) fn check_deadlines(state: &mut State) {
    let State { slots, tasks, .. } = state;
    for slot in slots.iter_mut() {
        if slot.timed_out.is_some() || slot.broken {
            continue;
        }
        let consumed = slot.tasks.consumed();
        let Some(owed) = slot.owed.front_mut() else {
            continue;
        };
        let limit = tasks.get(&owed.chunk).and_then(|t| t.timeout);
        if owed.end.is_none_or(|end| end > consumed) {
            let waited = owed.written.map(|written| written.elapsed());
            if let (Some(waited), Some(limit)) = (waited, limit) {
                // (/proc is read only past the limit, and only for a worker starting.)
                slot.broken = waited > limit
                    && (slot.ready || slot.process.as_ref().is_some_and(Process::is_stopped));
            }
            continue;
        }
        let started = *owed.started.get_or_insert_with(Instant::now);
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
pub(super) fn write_outboxes(state: &mut State) {
    for slot in &mut state.slots {
        match slot.outbox.pump(&mut slot.tasks) {
            Ok(done) => {
                for (frame, end) in done {
                    if frame.kind != Kind::Task {
                        continue;
                    }
                    if let Some(owed) = slot.owed.iter_mut().find(|o| o.chunk == frame.id) {
                        owed.end = Some(end);
                        owed.written = Some(Instant::now());
                    }
                }
            }
            Err(_) => slot.broken = true,
        }
    }
}

/// Places queued chunks on the workers that owe the fewest.
pub(super) fn place(state: &mut State) {
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
            written: None,
        });
        slot.given += 1;
    }
}

/// Moves a closing or terminating pool towards its end.
pub(super) fn finish_phase(state: &mut State) {
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
