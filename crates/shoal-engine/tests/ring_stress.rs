//! The SPSC ring under two threads, each with its own mapping of the ring: a million
//! messages must arrive complete and in order, across many laps, full and empty waits.

// Test code: an unwrap that fails is a test failure with a useful message.
#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::Duration;

use shoal_engine::ring::Ring;
use shoal_engine::wait::NoInterrupt;

/// Message `seq`: its number, then 0 to 23 bytes derived from it.
fn message(seq: u64) -> Vec<u8> {
    let mut msg = seq.to_le_bytes().to_vec();
    msg.extend((0..seq % 24).map(|i| (seq ^ i) as u8));
    msg
}

/// Pushes message `seq` as the pool does a frame: its 8-byte header and the rest as two
/// parts of one record. Tries without waiting first, so that both push calls meet full
/// rings, and falls back to waiting for room.
fn send(producer: &mut Ring, seq: u64) {
    let msg = message(seq);
    let parts = [&msg[..8], &msg[8..]];
    if !producer.try_push_parts(&parts).unwrap() {
        producer.push_parts(&parts, None, &mut NoInterrupt).unwrap();
    }
}

fn check(seq: u64, bytes: &[u8]) {
    assert_eq!(
        bytes,
        message(seq),
        "message {seq} is wrong or out of order"
    );
}

#[test]
fn a_million_small_messages_arrive_in_order() {
    const COUNT: u64 = 1_000_000;
    let mut producer = Ring::create(4096).unwrap();
    let mut consumer = Ring::open(producer.dup_fd().unwrap()).unwrap();
    let reader = thread::spawn(move || {
        for seq in 0..COUNT {
            // Every other message: look without waiting first, so that both pop calls
            // meet empty rings.
            let taken = seq % 2 == 1
                && consumer
                    .try_pop_with(|bytes| check(seq, bytes))
                    .unwrap()
                    .is_some();
            if !taken {
                consumer
                    .pop_with(None, &mut NoInterrupt, |bytes| check(seq, bytes))
                    .unwrap();
            }
        }
        consumer
    });
    for seq in 0..COUNT {
        send(&mut producer, seq);
    }
    let consumer = reader.join().unwrap();
    assert!(consumer.is_empty());
    assert!(producer.is_empty());
}

#[test]
fn batches_arrive_in_order() {
    const COUNT: u64 = 300_000;
    let mut producer = Ring::create(1024).unwrap();
    let mut consumer = Ring::open(producer.dup_fd().unwrap()).unwrap();
    let reader = thread::spawn(move || {
        let mut seq = 0;
        while seq < COUNT {
            // Up to 50 at a time: what is there, or else (two times in three) the first
            // to arrive, waited for, and up to 49 more that are there by then.
            let wait = seq % 3 != 0;
            let mut take = |bytes: &[u8]| {
                check(seq, bytes);
                seq += 1;
            };
            if !wait {
                consumer.try_pop_many_with(50, &mut take).unwrap();
            } else {
                consumer
                    .pop_with(None, &mut NoInterrupt, &mut take)
                    .unwrap();
                consumer.try_pop_many_with(49, &mut take).unwrap();
            }
        }
    });
    // Bursts of 1 to 37 messages with a yield between them, so that the consumer sometimes
    // drains the ring and has to wait.
    let mut next = 0;
    while next < COUNT {
        let end = COUNT.min(next + 1 + next % 37);
        for seq in next..end {
            send(&mut producer, seq);
        }
        thread::yield_now();
        next = end;
    }
    reader.join().unwrap();
    assert!(producer.is_empty());
}

#[test]
fn a_slow_consumer_makes_the_producer_sleep_and_wake() {
    // A ring holding two of these records, so the producer blocks on nearly every push
    // while the consumer naps, and the consumer blocks while the producer naps.
    const COUNT: u64 = 400;
    let mut producer = Ring::create(64).unwrap();
    let mut consumer = Ring::open(producer.dup_fd().unwrap()).unwrap();
    let reader = thread::spawn(move || {
        for seq in 0..COUNT {
            if seq % 100 < 10 {
                thread::sleep(Duration::from_millis(1));
            }
            consumer
                .pop_with(None, &mut NoInterrupt, |bytes| check(seq, bytes))
                .unwrap();
        }
    });
    for seq in 0..COUNT {
        if seq % 100 > 90 {
            thread::sleep(Duration::from_millis(1));
        }
        send(&mut producer, seq);
    }
    reader.join().unwrap();
    assert!(producer.is_empty());
}
