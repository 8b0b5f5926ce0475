//! Messages per second through one SPSC ring between two threads, each with its own mapping.
//!
//! Run with `cargo run --release -p shoal-engine --example ring_throughput [count]`.
//! Three figures for 64-byte messages, each pushed on its own with `push_parts`: popped one
//! at a time with `pop_with` (read in place), popped one at a time and copied out into a
//! `Vec`, and popped in batches of up to 64 with `try_pop_many_with` (one store of the head
//! and one doorbell ring per batch; `pop_with` waits when the ring is empty). A last figure
//! runs both sides in one thread (64 pushes, then 64 pops), which gives the ring's own cost
//! without cross-core traffic or scheduling.

use std::thread;
use std::time::Instant;

use shoal_engine::ring::Ring;
use shoal_engine::wait::NoInterrupt;
use shoal_engine::{Error, Result};

const SIZE: usize = 64;
const CAPACITY: usize = 1 << 20;
const BATCH: usize = 64;

/// How the consumer takes the messages.
#[derive(Clone, Copy)]
enum Mode {
    /// One at a time, read where they lie in the ring.
    InPlace,
    /// One at a time, copied out into a `Vec`.
    CopiedOut,
    /// Up to `BATCH` at a time, freed together.
    Batches,
}

/// Pushes and pops `count` messages in one thread, in rounds of `BATCH`; returns the
/// messages per second.
fn run_alone(count: u64) -> Result<f64> {
    let mut ring = Ring::create(CAPACITY)?;
    let mut msg = [0u8; SIZE];
    let (mut sum, mut expected) = (0u64, 0u64);
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let n = (count - sent).min(BATCH as u64);
        for i in sent..sent + n {
            msg[0] = i as u8;
            expected += u64::from(msg[0]);
            ring.push_parts(&[&msg], None, &mut NoInterrupt)?;
        }
        for _ in 0..n {
            sum += ring.pop_with(None, &mut NoInterrupt, |b| u64::from(b[0]))?;
        }
        sent += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    if sum != expected {
        return Err(Error::Corrupt(format!(
            "checksum {sum}, expected {expected}"
        )));
    }
    Ok(count as f64 / seconds)
}

/// Sends `count` messages and returns the messages per second.
fn run(count: u64, mode: Mode) -> Result<f64> {
    let mut producer = Ring::create(CAPACITY)?;
    let mut consumer = Ring::open(producer.dup_fd()?)?;
    let reader = thread::spawn(move || -> Result<u64> {
        let mut sum = 0u64;
        let mut received = 0u64;
        while received < count {
            match mode {
                Mode::InPlace => {
                    sum += consumer.pop_with(None, &mut NoInterrupt, |b| u64::from(b[0]))?;
                }
                Mode::CopiedOut => {
                    let copy = consumer.pop_with(None, &mut NoInterrupt, |b| b.to_vec())?;
                    sum += u64::from(copy[0]);
                }
                Mode::Batches => {
                    let mut add = |b: &[u8]| sum += u64::from(b[0]);
                    let max = (count - received).min(BATCH as u64) as usize;
                    let taken = consumer.try_pop_many_with(max, &mut add)?;
                    if taken > 0 {
                        received += taken as u64;
                        continue;
                    }
                    // Nothing there: sleep until a message comes rather than spin.
                    consumer.pop_with(None, &mut NoInterrupt, add)?;
                }
            }
            received += 1;
        }
        Ok(sum)
    });
    let start = Instant::now();
    let mut msg = [0u8; SIZE];
    let mut expected = 0u64;
    for i in 0..count {
        msg[0] = i as u8;
        expected += u64::from(msg[0]);
        producer.push_parts(&[&msg], None, &mut NoInterrupt)?;
    }
    let sum = reader
        .join()
        .map_err(|_| Error::Invalid("the consumer thread panicked".into()))??;
    let seconds = start.elapsed().as_secs_f64();
    if sum != expected {
        return Err(Error::Corrupt(format!(
            "checksum {sum}, expected {expected}"
        )));
    }
    Ok(count as f64 / seconds)
}

fn main() -> Result<()> {
    let count = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| Error::Invalid(format!("not a message count: {arg}")))?,
        None => 10_000_000,
    };
    println!("{count} messages of {SIZE} bytes, ring of {CAPACITY} bytes, two threads");
    let report = |name: &str, rate: f64| {
        println!(
            "{name:>34}: {:>6.2} M messages/s ({:.0} MB/s)",
            rate / 1e6,
            rate * SIZE as f64 / 1e6
        );
    };
    for (name, mode) in [
        ("push_parts + pop_with", Mode::InPlace),
        ("push_parts + pop_with (Vec)", Mode::CopiedOut),
        ("push_parts + try_pop_many_with", Mode::Batches),
    ] {
        report(name, run(count, mode)?);
    }
    report("one thread, push_parts + pop_with", run_alone(count)?);
    Ok(())
}
