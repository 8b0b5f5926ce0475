//! Model test: random sequences of puts, gets and size checks on a small `Queue`, compared
//! step by step with a plain in-memory model.
//!
//! The model mirrors the ring's byte accounting (16-byte record headers, bodies padded to 8
//! bytes, chunks of a quarter ring for messages whose record exceeds half the ring), so it
//! predicts exactly when a non-blocking put must fail with `Full` and how much of a batch
//! got in. If the record layout in `queue/layout.rs` changes, `record_len` and `chunk_len` below
//! must follow.
//!
//! A large message put without waiting into a ring that holds only its first chunks is
//! abandoned half-sent; the model keeps such bytes as `Junk` so that later operations stay
//! predictable: the next put seals it with an ABORT record, and a reader that reaches it
//! unsealed drops it.

// reason: a failed unwrap in a test is a test failure with a useful message; the lint
// targets user-reachable panics in the library.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_engine::queue::{Message, Queue, VecSink, MIN_CAPACITY};
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

/// Bytes of ring a record with a `len`-byte body takes (header + body padded to 8).
fn record_len(len: usize) -> usize {
    16 + len.div_ceil(8) * 8
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A complete message, as `(tag, body)`.
    Msg(u8, Vec<u8>),
    /// Chunks of a large message whose put gave up; `sealed` once an ABORT follows them.
    Junk { bytes: usize, sealed: bool },
}

/// What the queue should hold, in order, and how many ring bytes that takes.
#[derive(Debug)]
struct Model {
    cap: usize,
    max_items: usize,
    entries: VecDeque<Entry>,
    used: usize,
}

impl Model {
    fn new(cap: usize, max_items: usize) -> Self {
        Model {
            cap,
            max_items,
            entries: VecDeque::new(),
            used: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Msg(..)))
            .count()
    }

    fn free(&self) -> usize {
        self.cap - self.used
    }

    fn items_fit(&self, n: usize) -> bool {
        self.max_items == 0 || self.len() + n <= self.max_items
    }

    fn is_chunked(&self, len: usize) -> bool {
        record_len(len) > self.cap / 2
    }

    fn chunk_len(&self) -> usize {
        (self.cap / 4 - 16) / 8 * 8
    }

    /// The records (as byte counts) a chunked message of `len` bytes is sent as.
    fn chunk_records(&self, len: usize) -> Vec<usize> {
        let chunk = self.chunk_len();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < len {
            let n = chunk.min(len - offset);
            out.push(record_len(n));
            offset += n;
        }
        out
    }

    fn footprint(&self, len: usize) -> usize {
        if self.is_chunked(len) {
            self.chunk_records(len).iter().sum()
        } else {
            record_len(len)
        }
    }

    fn push(&mut self, tag: u8, body: &[u8]) {
        self.used += self.footprint(body.len());
        self.entries.push_back(Entry::Msg(tag, body.to_vec()));
    }

    /// A put that does not wait: returns whether it succeeded.
    fn put(&mut self, batch: &[(u8, Vec<u8>)]) -> bool {
        // A message left half-sent is sealed first, which needs room for one bare header.
        if let Some(Entry::Junk { sealed, .. }) = self.entries.back() {
            if !sealed {
                if self.free() < 16 {
                    return false;
                }
                self.used += 16;
                if let Some(Entry::Junk { sealed, bytes }) = self.entries.back_mut() {
                    *sealed = true;
                    *bytes += 16;
                }
            }
        }
        let total: usize = batch.iter().map(|(_, b)| record_len(b.len())).sum();
        let all_whole = batch.iter().all(|(_, b)| !self.is_chunked(b.len()));
        let count = batch.len();
        if all_whole && total <= self.cap && (self.max_items == 0 || count <= self.max_items) {
            // All or nothing.
            if self.free() < total || !self.items_fit(count) {
                return false;
            }
            for (tag, body) in batch {
                self.push(*tag, body);
            }
            return true;
        }
        // One message at a time; a failure keeps the ones already in.
        for (tag, body) in batch {
            if !self.items_fit(1) {
                return false;
            }
            if !self.is_chunked(body.len()) {
                if self.free() < record_len(body.len()) {
                    return false;
                }
                self.push(*tag, body);
                continue;
            }
            let chunks = self.chunk_records(body.len());
            let mut sent = 0;
            for &c in &chunks {
                if self.free() - sent < c {
                    break;
                }
                sent += c;
            }
            if sent == chunks.iter().sum::<usize>() {
                self.push(*tag, body);
            } else {
                if sent > 0 {
                    self.used += sent;
                    self.entries.push_back(Entry::Junk {
                        bytes: sent,
                        sealed: false,
                    });
                }
                return false;
            }
        }
        true
    }

    /// A get that does not wait for a message: `None` is `Empty`.
    fn get(&mut self, max: usize) -> Option<Vec<(u8, Vec<u8>)>> {
        let max = max.max(1);
        let mut out = Vec::new();
        while let Some(front) = self.entries.front() {
            let stop = match front {
                Entry::Msg(_, body) => {
                    let chunked = self.is_chunked(body.len());
                    if chunked && !out.is_empty() {
                        break;
                    }
                    chunked
                }
                // The reader ends a batch before any large message, finished or not.
                Entry::Junk { .. } if !out.is_empty() => break,
                // An unsealed leftover is at the tail: the reader drops it and finds nothing.
                Entry::Junk { sealed, .. } => !*sealed,
            };
            match self.entries.pop_front() {
                Some(Entry::Msg(tag, body)) => {
                    self.used -= self.footprint(body.len());
                    out.push((tag, body));
                }
                Some(Entry::Junk { bytes, .. }) => self.used -= bytes,
                None => {}
            }
            if stop || out.len() >= max {
                break;
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(out)
        }
    }

    /// Everything a reader draining the queue receives, leaving the model empty.
    fn drain(&mut self) -> Vec<(u8, Vec<u8>)> {
        let out = self
            .entries
            .drain(..)
            .filter_map(|e| match e {
                Entry::Msg(tag, body) => Some((tag, body)),
                Entry::Junk { .. } => None,
            })
            .collect();
        self.used = 0;
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Put a batch of `(tag, size)` without waiting.
    Put(Vec<(u8, usize)>),
    /// Get up to this many messages without waiting.
    Get(usize),
    /// Put a batch (sizes up to three rings) waiting for room, while a second thread
    /// drains the queue.
    PutWithReader(Vec<(u8, usize)>, usize),
}

fn small_or_whole_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        6 => 1usize..=64,
        4 => 65usize..=1500,
        2 => 1501usize..=4080,
        1 => 4081usize..=8128,
    ]
}

fn any_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => small_or_whole_size(),
        1 => 8129usize..=3 * 8192,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((any::<u8>(), small_or_whole_size()), 0..=5).prop_map(Op::Put),
        8 => (0usize..=6).prop_map(Op::Get),
        1 => (prop::collection::vec((any::<u8>(), any_size()), 1..=4), 1usize..=4)
            .prop_map(|(batch, max)| Op::PutWithReader(batch, max)),
    ]
}

/// A body that differs from every other message's, so a mix-up cannot go unnoticed.
fn body(serial: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (serial.wrapping_mul(251) as usize ^ (i * 13 + (i >> 8))) as u8)
        .collect()
}

fn check_sizes(q: &Queue, model: &Model) -> Result<(), TestCaseError> {
    let len = model.len();
    prop_assert_eq!(q.len(), len);
    prop_assert_eq!(q.is_empty(), len == 0);
    prop_assert_eq!(q.is_full(), model.max_items != 0 && len >= model.max_items);
    Ok(())
}

fn run(capacity: usize, max_items: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let q = Arc::new(Queue::create(capacity, max_items).unwrap());
    prop_assert_eq!(q.capacity(), capacity.div_ceil(64) * 64);
    prop_assert_eq!(q.max_items(), max_items);
    let mut model = Model::new(q.capacity(), max_items);
    let mut serial = 0u32;
    let mut make = |spec: &[(u8, usize)]| -> Vec<(u8, Vec<u8>)> {
        spec.iter()
            .map(|&(tag, len)| {
                serial += 1;
                (tag, body(serial, len))
            })
            .collect()
    };
    for op in ops {
        match op {
            Op::Put(spec) => {
                let batch = make(&spec);
                let messages: Vec<Message<'_>> = batch
                    .iter()
                    .map(|(tag, body)| Message { tag: *tag, body })
                    .collect();
                let got = q.put(&messages, Some(Instant::now()), &mut NoInterrupt);
                let want = model.put(&batch);
                match got {
                    Ok(()) => prop_assert!(want, "put succeeded; the model says Full"),
                    Err(Error::Full) => prop_assert!(!want, "put said Full; the model has room"),
                    Err(e) => prop_assert!(false, "put failed: {e}"),
                }
            }
            Op::Get(max) => {
                let mut sink = VecSink::default();
                let got = q.get(&mut sink, max, Some(Instant::now()), &mut NoInterrupt);
                match (got, model.get(max)) {
                    (Ok(n), Some(want)) => {
                        prop_assert_eq!(n, want.len());
                        prop_assert_eq!(sink.messages, want);
                    }
                    (Err(Error::Empty), None) => prop_assert!(sink.messages.is_empty()),
                    (got, want) => prop_assert!(false, "get gave {got:?}; model wanted {want:?}"),
                }
            }
            Op::PutWithReader(spec, reader_max) => {
                let batch = make(&spec);
                let mut want = model.drain();
                want.extend(batch.iter().cloned());
                let n = want.len();
                let reader = {
                    let q = q.clone();
                    std::thread::spawn(move || -> Result<Vec<(u8, Vec<u8>)>, Error> {
                        let deadline = Some(Instant::now() + Duration::from_secs(10));
                        let mut sink = VecSink::default();
                        while sink.messages.len() < n {
                            q.get(&mut sink, reader_max, deadline, &mut NoInterrupt)?;
                        }
                        Ok(sink.messages)
                    })
                };
                let messages: Vec<Message<'_>> = batch
                    .iter()
                    .map(|(tag, body)| Message { tag: *tag, body })
                    .collect();
                let deadline = Some(Instant::now() + Duration::from_secs(10));
                let put = q.put(&messages, deadline, &mut NoInterrupt);
                let got = reader.join().unwrap();
                prop_assert!(put.is_ok(), "blocking put failed: {put:?}");
                prop_assert!(got.is_ok(), "reader failed: {got:?}");
                prop_assert_eq!(got.unwrap(), want);
            }
        }
        check_sizes(&q, &model)?;
    }
    // Whatever is left comes out in order, and then the queue is empty.
    let want = model.drain();
    let mut sink = VecSink::default();
    loop {
        match q.get(&mut sink, 8, Some(Instant::now()), &mut NoInterrupt) {
            Ok(_) => {}
            Err(Error::Empty) => break,
            Err(e) => prop_assert!(false, "final get failed: {e}"),
        }
    }
    prop_assert_eq!(sink.messages, want);
    check_sizes(&q, &model)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_the_model(
        capacity in prop_oneof![Just(MIN_CAPACITY), Just(8192usize), MIN_CAPACITY..=8192],
        max_items in prop_oneof![Just(0usize), 1usize..=6],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(capacity, max_items, ops)?;
    }
}

/// A large message put without waiting into a ring that holds only part of it is dropped,
/// the messages before it survive, and the queue works normally afterwards.
#[test]
fn an_abandoned_large_message_is_invisible() {
    let q = Queue::create(8192, 0).unwrap();
    let small = [Message {
        tag: 1,
        body: b"before",
    }];
    q.put(&small, None, &mut NoInterrupt).unwrap();
    let big = vec![9u8; 7000];
    let filler = vec![3u8; 3000];
    q.put(
        &[Message {
            tag: 2,
            body: &filler,
        }],
        None,
        &mut NoInterrupt,
    )
    .unwrap();
    let now = Some(Instant::now());
    assert!(matches!(
        q.put(&[Message { tag: 3, body: &big }], now, &mut NoInterrupt),
        Err(Error::Full)
    ));
    assert_eq!(q.len(), 2);
    let mut sink = VecSink::default();
    assert_eq!(q.get(&mut sink, 10, now, &mut NoInterrupt).unwrap(), 2);
    assert!(matches!(
        q.get(&mut sink, 10, Some(Instant::now()), &mut NoInterrupt),
        Err(Error::Empty)
    ));
    q.put(
        &[Message {
            tag: 4,
            body: b"after",
        }],
        None,
        &mut NoInterrupt,
    )
    .unwrap();
    assert_eq!(q.get(&mut sink, 10, None, &mut NoInterrupt).unwrap(), 1);
    let tags: Vec<u8> = sink.messages.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, [1, 2, 4]);
    assert!(q.is_empty());
}
