//! The supervisor against workers that are threads of this test, each paired with a real
//! process (`sleep`) whose pidfd stands for the worker's life: killing the process is the
//! worker's death.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_engine::bell::Bell;
use shoal_engine::link::{Frame, Kind, WorkerEnd};
use shoal_engine::proc::{spawn, Child, Exit};
use shoal_engine::ring::Ring;
use shoal_engine::supervisor::{Event, Process, Supervisor, Task};
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Result;

fn sleeper() -> Result<Child> {
    spawn(Path::new("/bin/sleep"), &[OsString::from("600")], &[], &[])
}

/// How a test worker behaves.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers every task with its payload reversed.
    Echo,
    /// Takes one task, then dies without answering.
    DieOnFirst,
}

/// Starts worker `mode` for the supervisor: a thread on the rings, and a process that the
/// thread kills when it stops or dies.
fn start_worker(sup: &Supervisor, mode: Mode) -> Result<JoinHandle<Result<usize>>> {
    let new = sup.add_worker(None)?;
    let child = sleeper()?;
    let pid = child.pid();
    sup.attach(new.id, Process::Child(child))?;
    let mut end = WorkerEnd::new(
        Ring::open(new.tasks)?,
        Ring::open(new.results)?,
        Bell::open(new.bell)?,
    );
    Ok(std::thread::spawn(move || {
        let mut funcs = HashSet::new();
        let mut answered = 0;
        // As a real worker does once its initializer ran.
        end.send(Frame::new(Kind::Ready, 0, 42), &[], None, &mut NoInterrupt)?;
        loop {
            let (frame, body) = end.recv(None, &mut NoInterrupt, |f, b| (f, b.to_vec()))?;
            match frame.kind {
                Kind::Define => {
                    funcs.insert(frame.id);
                }
                Kind::Forget => {
                    assert!(
                        funcs.remove(&frame.id),
                        "told to forget an unknown function"
                    );
                }
                Kind::Task => {
                    assert!(funcs.contains(&frame.aux), "task before its function");
                    if let Mode::DieOnFirst = mode {
                        // SAFETY: plain syscall; the pid is our own sleeping child.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        return Ok(answered);
                    }
                    let reply: Vec<u8> = body.iter().rev().copied().collect();
                    // Halfway there, as a worker running a long chunk tells.
                    end.send(
                        Frame::new(Kind::Progress, frame.id, reply.len() as u64 / 2),
                        &[],
                        None,
                        &mut NoInterrupt,
                    )?;
                    end.send(
                        Frame::new(Kind::Result, frame.id, 0),
                        &reply,
                        None,
                        &mut NoInterrupt,
                    )?;
                    answered += 1;
                }
                Kind::Stop => {
                    end.send(
                        Frame::new(Kind::Farewell, 0, 0),
                        b"bye",
                        None,
                        &mut NoInterrupt,
                    )?;
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    return Ok(answered);
                }
                Kind::Result | Kind::Farewell | Kind::Progress | Kind::Ready => {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    return Ok(answered);
                }
            }
        }
    }))
}

fn task(chunk: u64, payload: Vec<u8>, retries: u32) -> Task {
    Task {
        chunk,
        func: 1,
        payload: Arc::from(payload),
        retries,
        timeout: None,
    }
}

/// Collects events until `Stopped` (or ten seconds pass).
fn all_events(sup: &Supervisor) -> Result<Vec<Event>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        let batch = sup.next_events(Some(deadline), &mut NoInterrupt)?;
        if batch.is_empty() {
            return Ok(out);
        }
        let stopped = batch.iter().any(|e| matches!(e, Event::Stopped));
        out.extend(batch);
        if stopped {
            return Ok(out);
        }
    }
}

#[test]
fn every_chunk_is_answered_once_in_pieces_and_close_stops_the_workers() -> Result<()> {
    // Small rings, so that larger chunks travel in several pieces both ways.
    let sup = Supervisor::start(2, 4096)?;
    sup.define(1, Arc::from(vec![9u8; 10_000]));
    let workers = vec![
        start_worker(&sup, Mode::Echo)?,
        start_worker(&sup, Mode::Echo)?,
    ];
    let payload = |i: u64| -> Vec<u8> { (0..(i * 97) % 20_000).map(|j| (i + j) as u8).collect() };
    sup.submit_many((0..300).map(|i| task(i, payload(i), 0)).collect())?;
    sup.close();
    let events = all_events(&sup)?;
    let mut seen = HashSet::new();
    let mut exits = 0;
    let mut said_farewell = HashSet::new();
    let mut progressed = HashSet::new();
    let mut ready = HashSet::new();
    for event in &events {
        match event {
            Event::Ready { worker, when } => {
                assert_eq!(*when, 42);
                assert!(ready.insert(*worker), "{worker} ready twice");
            }
            Event::Result {
                chunk,
                payload: got,
                ..
            } => {
                assert!(seen.insert(*chunk), "chunk {chunk} answered twice");
                let want: Vec<u8> = payload(*chunk).into_iter().rev().collect();
                assert_eq!(got, &want, "chunk {chunk}");
            }
            Event::Progress { chunk, done } => {
                // Told before the chunk's answer, never after it.
                assert!(
                    !seen.contains(chunk),
                    "progress of {chunk} after its answer"
                );
                assert_eq!(*done, payload(*chunk).len() as u64 / 2);
                progressed.insert(*chunk);
            }
            Event::Farewell { worker, payload } => {
                assert_eq!(payload, b"bye");
                assert!(said_farewell.insert(*worker), "two farewells from {worker}");
            }
            Event::Exited {
                worker,
                expected,
                lost,
                exit,
                ..
            } => {
                assert!(*expected && lost.is_none());
                assert_eq!(*exit, Some(Exit::Signal(libc::SIGTERM)));
                assert!(
                    ready.contains(worker),
                    "exit of {worker} before it was ready"
                );
                // What it sent before it died comes first.
                assert!(
                    said_farewell.contains(worker),
                    "exit of {worker} before its farewell"
                );
                exits += 1;
            }
            Event::Stopped => {}
        }
    }
    assert_eq!(seen.len(), 300);
    assert_eq!(exits, 2);
    assert_eq!(said_farewell.len(), 2);
    assert_eq!(ready.len(), 2);
    assert_eq!(progressed.len(), 300);
    assert!(matches!(events.last(), Some(Event::Stopped)));
    let answered: usize = workers
        .into_iter()
        .map(|w| w.join().ok().and_then(|r| r.ok()).unwrap_or(0))
        .sum();
    assert_eq!(answered, 300);
    Ok(())
}

#[test]
fn a_dead_worker_loses_only_the_chunk_it_was_running() -> Result<()> {
    let sup = Supervisor::start(2, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    // The dying worker is alone at first, so it is given two chunks: it takes the first
    // and dies; the second was never taken and must go to the next worker.
    let dying = start_worker(&sup, Mode::DieOnFirst)?;
    sup.submit_many(vec![task(10, vec![1], 0), task(11, vec![2], 0)])?;
    let started = Instant::now();
    let mut lost = None;
    while lost.is_none() && started.elapsed() < Duration::from_secs(10) {
        for event in sup.next_events(
            Some(Instant::now() + Duration::from_secs(1)),
            &mut NoInterrupt,
        )? {
            if let Event::Exited {
                lost: l,
                exit,
                expected,
                ..
            } = event
            {
                assert_eq!(exit, Some(Exit::Signal(libc::SIGKILL)));
                assert!(!expected);
                lost = Some(l);
            }
        }
    }
    assert_eq!(lost, Some(Some(10)));
    let _ = dying.join();
    let helper = start_worker(&sup, Mode::Echo)?;
    sup.close();
    let events = all_events(&sup)?;
    let answered: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Result { chunk, .. } => Some(*chunk),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![11]);
    let _ = helper.join();
    Ok(())
}

#[test]
fn a_retried_chunk_runs_again_on_another_worker() -> Result<()> {
    let sup = Supervisor::start(1, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    let dying = start_worker(&sup, Mode::DieOnFirst)?;
    sup.submit(task(5, vec![1, 2, 3], 1))?;
    let _ = dying.join();
    let helper = start_worker(&sup, Mode::Echo)?;
    sup.close();
    let events = all_events(&sup)?;
    let results: Vec<(u64, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Result { chunk, payload, .. } => Some((*chunk, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![(5, vec![3, 2, 1])]);
    let _ = helper.join();
    Ok(())
}

#[test]
fn terminate_kills_the_workers_and_stops() -> Result<()> {
    let sup = Supervisor::start(2, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    let new = sup.add_worker(None)?;
    sup.attach(new.id, Process::Child(sleeper()?))?;
    sup.submit(task(1, vec![1], 0))?;
    sup.terminate();
    let events = all_events(&sup)?;
    assert!(matches!(events.last(), Some(Event::Stopped)));
    assert!(sup.is_stopped());
    assert!(sup.submit(task(2, vec![1], 0)).is_err());
    Ok(())
}

#[test]
fn a_withdrawn_chunk_never_runs_and_one_already_owed_cannot_be_withdrawn() -> Result<()> {
    let sup = Supervisor::start(2, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    // No worker yet: every chunk waits in the queue.
    sup.submit_many((0..5).map(|i| task(i, vec![i as u8], 0)).collect())?;
    assert!(sup.withdraw(3));
    assert!(!sup.withdraw(3), "withdrawn twice");
    assert!(!sup.withdraw(99), "an unknown chunk");
    let worker = start_worker(&sup, Mode::Echo)?;
    sup.close();
    let events = all_events(&sup)?;
    let mut answered: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Result { chunk, .. } => Some(*chunk),
            _ => None,
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, vec![0, 1, 2, 4]);
    // Answered (and so owed before): too late to take back.
    assert!(!sup.withdraw(0));
    let _ = worker.join();
    Ok(())
}

#[test]
fn a_forgotten_function_is_dropped_by_the_workers_that_had_it_and_refused_after() -> Result<()> {
    let sup = Supervisor::start(2, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    let worker = start_worker(&sup, Mode::Echo)?;
    sup.submit_many((0..5).map(|i| task(i, vec![i as u8], 0)).collect())?;
    let mut answered = 0;
    let started = Instant::now();
    while answered < 5 && started.elapsed() < Duration::from_secs(10) {
        let events = sup.next_events(
            Some(Instant::now() + Duration::from_secs(1)),
            &mut NoInterrupt,
        )?;
        answered += events
            .iter()
            .filter(|e| matches!(e, Event::Result { .. }))
            .count();
    }
    assert_eq!(answered, 5);
    // The worker asserts that it is told to forget only what it was given.
    sup.forget(1);
    assert!(sup.submit(task(9, vec![9], 0)).is_err());
    sup.close();
    all_events(&sup)?;
    let outcome = worker.join().map_err(|_| "the worker thread panicked");
    assert_eq!(outcome.ok().and_then(|r| r.ok()), Some(5));
    Ok(())
}

#[test]
fn a_worker_still_starting_keeps_its_chunks_and_loses_them_only_if_stopped() -> Result<()> {
    let sup = Supervisor::start(2, 1 << 16)?;
    sup.define(1, Arc::from(&b"f"[..]));
    // Two workers that never say they are ready: one slow, one stopped by a signal.
    let mut starting = Vec::new();
    for _ in 0..2 {
        let new = sup.add_worker(None)?;
        let child = sleeper()?;
        starting.push((new.id, child.pid()));
        sup.attach(new.id, Process::Child(child))?;
    }
    let (slow, stopped) = (starting[0], starting[1]);
    // SAFETY: plain kill of our own sleeping child.
    unsafe { libc::kill(stopped.1, libc::SIGSTOP) };
    let timed = |i: u64| Task {
        timeout: Some(Duration::from_millis(200)),
        ..task(i, vec![i as u8], 0)
    };
    // Shared between the two (a worker starting is given chunks as a ready one is).
    sup.submit_many((0..4).map(timed).collect())?;
    // Their chunks wait past the timeout: the stopped worker is killed, losing none.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exited = Vec::new();
    while exited.is_empty() && Instant::now() < deadline {
        for event in sup.next_events(Some(deadline), &mut NoInterrupt)? {
            if let Event::Exited { worker, lost, .. } = event {
                assert_eq!(lost, None, "a chunk never taken was lost");
                exited.push(worker);
            }
        }
    }
    assert_eq!(exited, vec![stopped.0]);
    // A ready worker runs the stopped one's chunks; the slow one keeps its own.
    let worker = start_worker(&sup, Mode::Echo)?;
    let mut answered = HashSet::new();
    let collect = |until: usize, answered: &mut HashSet<u64>| -> Result<()> {
        while answered.len() < until && Instant::now() < deadline {
            for event in sup.next_events(Some(deadline), &mut NoInterrupt)? {
                match event {
                    Event::Result { chunk, .. } => assert!(answered.insert(chunk)),
                    Event::Exited { worker, lost, .. } => {
                        assert_eq!((worker, lost), (slow.0, None), "an unexpected exit");
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    };
    collect(2, &mut answered)?;
    std::thread::sleep(Duration::from_millis(400)); // past the timeout: still not killed
    assert_eq!(
        sup.next_events(Some(Instant::now()), &mut NoInterrupt)?
            .len(),
        0
    );
    assert_eq!(answered.len(), 2);
    // The slow one dies before its start: its chunks run on the ready worker.
    // SAFETY: as above.
    unsafe { libc::kill(slow.1, libc::SIGKILL) };
    collect(4, &mut answered)?;
    assert_eq!(answered.len(), 4);
    sup.close();
    assert!(matches!(all_events(&sup)?.last(), Some(Event::Stopped)));
    assert_eq!(worker.join().ok().and_then(|r| r.ok()), Some(4));
    Ok(())
}
