//! The SPSC ring checked against a `VecDeque<Vec<u8>>` model, through two handles on the
//! same descriptor (two mappings of the same pages), so that the roles move between
//! mappings and each handle's remembered positions go stale.

// Test code: an unwrap that fails is a test failure with a useful message.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Instant;

use proptest::prelude::*;
use shoal_engine::ring::Ring;
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

/// The bytes a message takes in the ring: a length word, then the body padded to 8.
fn record_len(len: usize) -> usize {
    8 + len.div_ceil(8) * 8
}

#[derive(Debug, Clone)]
enum Op {
    TryPush(usize),
    /// `push_parts` with a deadline already past: must behave like `try_push_parts`.
    PushNow(usize),
    /// `try_push_parts` of each message in turn, up to the first the ring refuses: fills
    /// the ring in bursts, as a producer with work queued up does.
    TryPushBurst(Vec<usize>),
    /// The same with `push_parts` and a deadline already past.
    PushBurstNow(Vec<usize>),
    TryPopWith,
    TryPopManyWith(usize),
    /// `pop_with` with a deadline already past.
    PopWithNow,
}

fn op() -> impl Strategy<Value = (bool, Op)> {
    // Mostly small messages, sometimes up to (and past) the largest ring used.
    let len = prop_oneof![4 => 0usize..48, 1 => 0usize..600];
    let op = prop_oneof![
        3 => len.clone().prop_map(Op::TryPush),
        1 => len.clone().prop_map(Op::PushNow),
        1 => prop::collection::vec(len.clone(), 0..6).prop_map(Op::TryPushBurst),
        1 => prop::collection::vec(len, 0..6).prop_map(Op::PushBurstNow),
        3 => Just(Op::TryPopWith),
        2 => (0usize..5).prop_map(Op::TryPopManyWith),
        2 => Just(Op::PopWithNow),
    ];
    (any::<bool>(), op)
}

struct Model {
    messages: VecDeque<Vec<u8>>,
    used: usize,
    cap: usize,
    made: u32,
}

impl Model {
    /// A fresh message of `len` bytes whose content differs from every other one's.
    fn message(&mut self, len: usize) -> Vec<u8> {
        self.made += 1;
        let salt = self.made.to_le_bytes();
        (0..len).map(|i| salt[i % 4] ^ (i as u8)).collect()
    }

    fn fits(&self, len: usize) -> bool {
        self.used + record_len(len) <= self.cap
    }

    fn pushed(&mut self, msg: Vec<u8>) {
        self.used += record_len(msg.len());
        self.messages.push_back(msg);
    }

    fn popped(&mut self) -> Option<Vec<u8>> {
        let msg = self.messages.pop_front()?;
        self.used -= record_len(msg.len());
        Some(msg)
    }

    /// How many of `msgs`, from the first, fit now.
    fn prefix_that_fits(&self, msgs: &[Vec<u8>]) -> usize {
        let mut used = self.used;
        msgs.iter()
            .take_while(|m| {
                used += record_len(m.len());
                used <= self.cap
            })
            .count()
    }
}

/// Pushes `msg` through `ring` (with `try_push_parts`, or with `push_parts` and a deadline
/// already past if `now`), checks the outcome against the model, and returns whether it
/// went in.
fn push_checked(
    ring: &mut Ring,
    model: &mut Model,
    msg: Vec<u8>,
    now: bool,
) -> Result<bool, TestCaseError> {
    // A message of one part every third time, else two parts with the seam anywhere
    // (either part may be empty): the record must come out the same.
    let cut = (model.made as usize * 7) % (msg.len() + 1);
    let whole = [&msg[..]];
    let halves = [&msg[..cut], &msg[cut..]];
    let parts: &[&[u8]] = if model.made % 3 == 0 { &whole } else { &halves };
    let got = if now {
        ring.push_parts(parts, Some(Instant::now()), &mut NoInterrupt)
            .map(|()| true)
            .or_else(|e| match e {
                Error::Full => Ok(false),
                e => Err(e),
            })
    } else {
        ring.try_push_parts(parts)
    };
    if msg.len() > ring.max_message() {
        prop_assert!(matches!(got, Err(Error::Invalid(_))), "{got:?}");
        return Ok(false);
    }
    let fits = model.fits(msg.len());
    prop_assert_eq!(got.unwrap(), fits);
    if fits {
        model.pushed(msg);
    }
    Ok(fits)
}

fn run(cap: usize, ops: Vec<(bool, Op)>) -> Result<(), TestCaseError> {
    let a = Ring::create(cap).unwrap();
    let b = Ring::open(a.dup_fd().unwrap()).unwrap();
    let mut rings = [a, b];
    let cap = rings[0].capacity();
    prop_assert_eq!(rings[1].capacity(), cap);
    let max = rings[0].max_message();
    prop_assert_eq!(max, cap - 8);
    let mut model = Model {
        messages: VecDeque::new(),
        used: 0,
        cap,
        made: 0,
    };
    for (via_b, op) in ops {
        let ring = &mut rings[usize::from(via_b)];
        match op {
            Op::TryPush(len) | Op::PushNow(len) => {
                let msg = model.message(len);
                push_checked(ring, &mut model, msg, matches!(op, Op::PushNow(_)))?;
            }
            Op::TryPushBurst(ref lens) | Op::PushBurstNow(ref lens) => {
                let msgs: Vec<Vec<u8>> = lens.iter().map(|&len| model.message(len)).collect();
                let fit = model.prefix_that_fits(&msgs);
                let now = matches!(op, Op::PushBurstNow(_));
                let mut pushed = 0;
                for msg in msgs {
                    if !push_checked(ring, &mut model, msg, now)? {
                        break;
                    }
                    pushed += 1;
                }
                prop_assert_eq!(pushed, fit);
            }
            Op::TryPopWith => {
                let got = ring.try_pop_with(|bytes| bytes.to_vec()).unwrap();
                prop_assert_eq!(got, model.popped());
            }
            Op::TryPopManyWith(max) => {
                let mut got = Vec::new();
                let count = ring.try_pop_many_with(max, |bytes| got.push(bytes.to_vec()));
                let want: Vec<Vec<u8>> = (0..max.max(1)).map_while(|_| model.popped()).collect();
                prop_assert_eq!(count.unwrap(), want.len());
                prop_assert_eq!(got, want);
            }
            Op::PopWithNow => {
                let deadline = Some(Instant::now());
                let got = ring.pop_with(deadline, &mut NoInterrupt, |bytes| bytes.to_vec());
                match model.popped() {
                    Some(msg) => prop_assert_eq!(got.unwrap(), msg),
                    None => prop_assert!(matches!(got, Err(Error::Empty)), "{got:?}"),
                }
            }
        }
        for ring in &rings {
            prop_assert_eq!(ring.len_bytes(), model.used);
            prop_assert_eq!(ring.is_empty(), model.messages.is_empty());
        }
    }
    // Whatever is left comes out in order, through either handle.
    while let Some(msg) = model.popped() {
        let via = msg.len() % 2;
        let got = rings[via].try_pop_with(|bytes| bytes.to_vec()).unwrap();
        prop_assert_eq!(got, Some(msg));
    }
    prop_assert_eq!(rings[0].try_pop_with(|bytes| bytes.to_vec()).unwrap(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ring_behaves_like_a_deque(cap in 64usize..=576, ops in prop::collection::vec(op(), 1..120)) {
        run(cap, ops)?;
    }
}

#[test]
fn two_mappings_of_one_descriptor_share_the_ring() {
    let mut parent = Ring::create(1024).unwrap();
    let mut worker = Ring::open(parent.dup_fd().unwrap()).unwrap();
    // A third mapping from the borrowed descriptor, as a process receiving it would make.
    let observer = Ring::open(parent.fd().try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(worker.capacity(), 1024);

    for round in 0..200u32 {
        let task = round.to_le_bytes().repeat(1 + round as usize % 20);
        parent.push_parts(&[&task], None, &mut NoInterrupt).unwrap();
        assert_eq!(observer.len_bytes(), record_len(task.len()));
        let seen = worker
            .pop_with(None, &mut NoInterrupt, |bytes| bytes == &task[..])
            .unwrap();
        assert!(seen);
        assert!(observer.is_empty());
        // And back the other way through the same ring: the roles move between mappings.
        worker
            .push_parts(&[&task[..4]], None, &mut NoInterrupt)
            .unwrap();
        let back = parent
            .pop_with(None, &mut NoInterrupt, |bytes| bytes.to_vec())
            .unwrap();
        assert_eq!(back, &task[..4]);
    }
    assert!(matches!(worker.try_pop_with(|_| ()), Ok(None)));
}

#[test]
fn a_handle_outlives_the_creator() {
    let creator = Ring::create(256).unwrap();
    let mut a = Ring::open(creator.dup_fd().unwrap()).unwrap();
    drop(creator);
    let mut b = Ring::open(a.dup_fd().unwrap()).unwrap();
    assert!(a.try_push_parts(&[b"still here"]).unwrap());
    let got = b.try_pop_with(|bytes| bytes.to_vec()).unwrap();
    assert_eq!(got.as_deref(), Some(&b"still here"[..]));
}
