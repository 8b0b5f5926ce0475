//! Messages per second through one SPSC ring between two threads, each with its own mapping.
//!
//! Run with `cargo run --release -p shoal-engine --example ring_throughput [count]`.
//! Three figures for 64-byte messages: one `push`/`pop_with` per message (read in place),
//! one `push`/`pop` per message (copied out into a `Vec`), `push_many` in batches of
//! 64 with `pop_with` on the other side, and batches on both sides (`push_many` and
//! `pop_many_with`, 64 at most). A last figure runs both sides in one thread
//! (64 pushes, then 64 pops), which gives the ring's own cost without cross-core traffic
//! or scheduling.

use std::thread;
use std::time::Instant;

use shoal_engine::ring::Ring;
use shoal_engine::wait::NoInterrupt;
use shoal_engine::{Error, Result};

const SIZE: usize = 64;
const CAPACITY: usize = 1 << 20;
const BATCH: usize = 64;

#[derive(Clone, Copy)]
enum Mode {
    PopWith,
    PopVec,
    Batched,
    BatchedBoth,
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
            ring.push(&msg, None, &mut NoInterrupt)?;
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
                Mode::PopVec => sum += u64::from(consumer.pop(None, &mut NoInterrupt)?[0]),
                Mode::BatchedBoth => {
                    let add = |b: &[u8]| sum += u64::from(b[0]);
                    let max = (count - received).min(BATCH as u64) as usize;
                    received += consumer.pop_many_with(max, None, &mut NoInterrupt, add)? as u64;
                    continue;
                }
                _ => sum += consumer.pop_with(None, &mut NoInterrupt, |b| u64::from(b[0]))?,
            }
            received += 1;
        }
        Ok(sum)
    });
    let start = Instant::now();
    let mut msg = [0u8; SIZE];
    let mut expected = 0u64;
    match mode {
        Mode::PopWith | Mode::PopVec => {
            for i in 0..count {
                msg[0] = i as u8;
                expected += u64::from(msg[0]);
                producer.push(&msg, None, &mut NoInterrupt)?;
            }
        }
        Mode::Batched | Mode::BatchedBoth => {
            let mut batch = vec![[0u8; SIZE]; BATCH];
            let mut sent = 0u64;
            while sent < count {
                let n = (count - sent).min(BATCH as u64) as usize;
                for (j, m) in batch[..n].iter_mut().enumerate() {
                    m[0] = (sent + j as u64) as u8;
                    expected += u64::from(m[0]);
                }
                let mut done = 0;
                while done < n {
                    done += producer.push_many(&batch[done..n], None, &mut NoInterrupt)?;
                }
                sent += n as u64;
            }
        }
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
            "{name:>28}: {:>6.2} M messages/s ({:.0} MB/s)",
            rate / 1e6,
            rate * SIZE as f64 / 1e6
        );
    };
    for (name, mode) in [
        ("push + pop_with", Mode::PopWith),
        ("push + pop (Vec)", Mode::PopVec),
        ("push_many x64 + pop_with", Mode::Batched),
        ("push_many + pop_many_with", Mode::BatchedBoth),
    ] {
        report(name, run(count, mode)?);
    }
    report("one thread, push + pop_with", run_alone(count)?);
    Ok(())
}
