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
            if seq % 2 == 0 {
                consumer
                    .pop_with(None, &mut NoInterrupt, |bytes| check(seq, bytes))
                    .unwrap();
            } else {
                check(seq, &consumer.pop(None, &mut NoInterrupt).unwrap());
            }
        }
        consumer
    });
    for seq in 0..COUNT {
        producer
            .push(&message(seq), None, &mut NoInterrupt)
            .unwrap();
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
            // Up to 50 at a time: what is there, or else the first to arrive and those
            // published with it.
            let wait = seq % 3 != 0;
            let mut take = |bytes: &[u8]| {
                check(seq, bytes);
                seq += 1;
            };
            if !wait {
                consumer.try_pop_many_with(50, &mut take).unwrap();
            } else {
                consumer
                    .pop_many_with(50, None, &mut NoInterrupt, &mut take)
                    .unwrap();
            }
        }
    });
    let mut next = 0;
    while next < COUNT {
        let batch: Vec<Vec<u8>> = (next..COUNT.min(next + 1 + next % 37))
            .map(message)
            .collect();
        let mut sent = 0;
        while sent < batch.len() {
            sent += producer
                .push_many(&batch[sent..], None, &mut NoInterrupt)
                .unwrap();
        }
        next += batch.len() as u64;
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
            check(seq, &consumer.pop(None, &mut NoInterrupt).unwrap());
        }
    });
    for seq in 0..COUNT {
        if seq % 100 > 90 {
            thread::sleep(Duration::from_millis(1));
        }
        producer
            .push(&message(seq), None, &mut NoInterrupt)
            .unwrap();
    }
    reader.join().unwrap();
    assert!(producer.is_empty());
}
