use std::time::{Duration, Instant};

use super::*;
use crate::wait::NoInterrupt;

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(10))
}

/// The next message, copied out of the ring, if one is waiting.
fn pop_copy(r: &mut Ring) -> Result<Option<Vec<u8>>> {
    r.try_pop_with(|bytes| bytes.to_vec())
}

#[test]
fn fifo_with_varied_sizes_across_many_laps() -> Result<()> {
    let mut r = Ring::create(256)?;
    for i in 0..2000usize {
        let msg: Vec<u8> = (0..i % 61).map(|j| (i + j) as u8).collect();
        // Cut where `i` says, so that the seam between parts falls anywhere in a body,
        // the ring's end included, and sometimes leaves an empty part.
        let (front, back) = msg.split_at(i % (msg.len() + 1));
        assert!(r.try_push_parts(&[front, back])?);
        if i % 3 == 0 {
            assert!(r.try_push_parts(&[&msg[..msg.len() / 2]])?);
            assert_eq!(pop_copy(&mut r)?.as_deref(), Some(&msg[..]));
            assert_eq!(pop_copy(&mut r)?.as_deref(), Some(&msg[..msg.len() / 2]));
        } else {
            let got = r.pop_with(soon(), &mut NoInterrupt, |bytes| bytes.to_vec())?;
            assert_eq!(got, msg);
        }
        assert!(r.is_empty());
    }
    assert_eq!(pop_copy(&mut r)?, None);
    Ok(())
}

#[test]
fn capacity_is_rounded_and_small_rings_refused() -> Result<()> {
    assert!(matches!(Ring::create(63), Err(Error::Invalid(_))));
    let r = Ring::create(100)?;
    assert_eq!(r.capacity(), 128);
    assert_eq!(r.max_message(), 120);
    Ok(())
}

#[test]
fn the_largest_message_fills_the_ring_and_a_larger_one_is_refused() -> Result<()> {
    let mut r = Ring::create(128)?;
    // Move the positions so that the big record wraps.
    assert!(r.try_push_parts(&[&[1; 20]])?);
    assert_eq!(pop_copy(&mut r)?, Some(vec![1; 20]));
    let big: Vec<u8> = (0..120).collect();
    assert!(matches!(
        r.try_push_parts(&[&[0; 121]]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        r.push_parts(&[&[0; 121]], None, &mut NoInterrupt),
        Err(Error::Invalid(_))
    ));
    // The limit is on the message, not on each part.
    assert!(matches!(
        r.try_push_parts(&[&[0; 60], &[0; 61]]),
        Err(Error::Invalid(_))
    ));
    assert!(r.is_empty());
    assert!(r.try_push_parts(&[&big[..]])?);
    assert_eq!(r.len_bytes(), 128);
    assert!(!r.try_push_parts(&[])?);
    assert_eq!(r.try_pop_with(|b| b == &big[..])?, Some(true));
    assert!(r.is_empty());
    Ok(())
}

#[test]
fn empty_messages_take_one_word() -> Result<()> {
    let mut r = Ring::create(64)?;
    for i in 0..8 {
        // An empty message is the same whether it has no parts or only empty ones.
        let parts: &[&[u8]] = if i % 2 == 0 { &[] } else { &[b"", b""] };
        assert!(r.try_push_parts(parts)?);
    }
    assert!(!r.try_push_parts(&[b""])?);
    assert_eq!(r.len_bytes(), 64);
    for _ in 0..8 {
        assert_eq!(pop_copy(&mut r)?, Some(vec![]));
    }
    assert_eq!(pop_copy(&mut r)?, None);
    Ok(())
}

#[test]
fn records_are_padded_to_eight_bytes() -> Result<()> {
    let mut r = Ring::create(64)?;
    assert!(r.try_push_parts(&[b"a"])?);
    assert_eq!(r.len_bytes(), 16);
    assert!(r.try_push_parts(&[&[2; 8]])?);
    assert_eq!(r.len_bytes(), 32);
    // Padding goes by the whole message: parts of 4 and 5 bytes make one 9-byte body.
    assert!(r.try_push_parts(&[&[3; 4], &[3; 5]])?);
    assert_eq!(r.len_bytes(), 56);
    assert_eq!(pop_copy(&mut r)?, Some(b"a".to_vec()));
    assert_eq!(pop_copy(&mut r)?, Some(vec![2; 8]));
    assert_eq!(pop_copy(&mut r)?, Some(vec![3; 9]));
    Ok(())
}

#[test]
fn pop_with_sees_wrapped_and_unwrapped_messages() -> Result<()> {
    let mut r = Ring::create(64)?;
    assert!(r.try_push_parts(&[&[0; 32]])?); // 40 bytes: the next record starts at 40
    assert_eq!(pop_copy(&mut r)?.map(|m| m.len()), Some(32));
    let msg: Vec<u8> = (0..40).collect(); // its body runs from 48 to 88, wrapping at 64
    assert!(r.try_push_parts(&[&msg[..]])?);
    let sum = r.pop_with(None, &mut NoInterrupt, |b| {
        b.iter().map(|&x| u32::from(x)).sum::<u32>()
    })?;
    assert_eq!(sum, (0..40).sum());
    assert!(r.try_push_parts(&[b"straight"])?);
    assert_eq!(r.try_pop_with(|b| b.to_vec())?, Some(b"straight".to_vec()));
    assert_eq!(r.try_pop_with(|b| b.len())?, None);
    Ok(())
}

#[test]
fn a_panicking_reader_leaves_the_message() -> Result<()> {
    let mut r = Ring::create(64)?;
    assert!(r.try_push_parts(&[b"keep"])?);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.try_pop_with(|_| panic!("reader fails"))
    }));
    assert!(outcome.is_err());
    assert_eq!(pop_copy(&mut r)?, Some(b"keep".to_vec()));
    Ok(())
}

#[test]
fn timeouts_say_full_and_empty_and_interrupts_stop_waits() -> Result<()> {
    let mut r = Ring::create(64)?;
    assert_eq!(pop_copy(&mut r)?, None);
    assert!(matches!(
        r.pop_with(soon(), &mut NoInterrupt, |_| ()),
        Err(Error::Empty)
    ));
    r.push_parts(&[&[7; 40]], None, &mut NoInterrupt)?;
    assert!(matches!(
        r.push_parts(&[&[7; 40]], soon(), &mut NoInterrupt),
        Err(Error::Full)
    ));
    let mut calls = 0;
    let mut stop = || {
        calls += 1;
        calls > 1
    };
    assert!(matches!(
        r.push_parts(&[&[7; 40]], None, &mut stop),
        Err(Error::Interrupted)
    ));
    assert_eq!(r.len_bytes(), 48);
    Ok(())
}

#[test]
fn a_full_ring_refuses_until_a_pop_makes_room() -> Result<()> {
    let mut r = Ring::create(64)?;
    // 16 bytes each; one record first, so that the later ones wrap around the ring's end.
    let msgs: [&[u8]; 4] = [&[1; 8], &[2; 8], &[3; 8], &[4; 8]];
    assert!(r.try_push_parts(&[&[0; 8]])?);
    for &msg in &msgs[..3] {
        assert!(r.try_push_parts(&[msg])?);
    }
    assert_eq!(r.len_bytes(), 64);
    assert!(!r.try_push_parts(&[msgs[3]])?);
    assert!(matches!(
        r.push_parts(&[msgs[3]], soon(), &mut NoInterrupt),
        Err(Error::Full)
    ));
    // A message that can never fit is refused at once, even with no deadline on a full
    // ring, and none of it goes in.
    assert!(matches!(
        r.push_parts(&[&[0; 8], &[0; 200]], None, &mut NoInterrupt),
        Err(Error::Invalid(_))
    ));
    assert_eq!(r.len_bytes(), 64);
    assert_eq!(pop_copy(&mut r)?, Some(vec![0; 8]));
    r.push_parts(&[msgs[3]], soon(), &mut NoInterrupt)?;
    assert_eq!(pop_copy(&mut r)?, Some(vec![1; 8]));
    r.push_parts(&[msgs[0]], soon(), &mut NoInterrupt)?;
    let mut got = Vec::new();
    while let Some(msg) = pop_copy(&mut r)? {
        got.push(msg[0]);
    }
    assert_eq!(got, [2, 3, 4, 1]);
    Ok(())
}

#[test]
fn pop_many_hands_over_a_batch_and_frees_it_at_once() -> Result<()> {
    let mut r = Ring::create(128)?;
    let mut other = Ring::open(r.dup_fd()?)?;
    for msg in [&b"a"[..], b"bb", b"ccc", b"dddd"] {
        assert!(r.try_push_parts(&[msg])?);
    }
    let mut got = Vec::new();
    assert_eq!(other.try_pop_many_with(3, |b| got.push(b.to_vec()))?, 3);
    assert_eq!(got, [&b"a"[..], b"bb", b"ccc"]);
    assert_eq!(r.len_bytes(), 16);
    // The batch reaches past the tail this handle saw last.
    assert!(r.try_push_parts(&[&[5; 60]])?);
    got.clear();
    assert_eq!(other.try_pop_many_with(10, |b| got.push(b.to_vec()))?, 2);
    assert_eq!(got, [b"dddd".to_vec(), vec![5; 60]]);
    // At least one, even when asked for none.
    assert!(r.try_push_parts(&[b"y"])?);
    assert!(r.try_push_parts(&[b"z"])?);
    got.clear();
    assert_eq!(other.try_pop_many_with(0, |b| got.push(b.to_vec()))?, 1);
    assert_eq!(other.try_pop_many_with(10, |b| got.push(b.to_vec()))?, 1);
    assert_eq!(got, [b"y", b"z"]);
    assert_eq!(other.try_pop_many_with(10, |_| ())?, 0);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(r.try_push_parts(&[b"x"]).is_ok_and(|pushed| pushed));
        other.try_pop_many_with(10, |_| panic!("reader fails"))
    }));
    assert!(outcome.is_err());
    assert_eq!(pop_copy(&mut other)?, Some(b"x".to_vec()));
    Ok(())
}

#[test]
fn a_blocked_push_is_woken_by_a_pop_in_another_thread() -> Result<()> {
    let mut producer = Ring::create(64)?;
    let mut consumer = Ring::open(producer.dup_fd()?)?;
    producer.push_parts(&[&[1; 56]], None, &mut NoInterrupt)?;
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let first = consumer.pop_with(None, &mut NoInterrupt, |b| b.to_vec())?;
        let second = consumer.pop_with(None, &mut NoInterrupt, |b| b.to_vec())?;
        Ok::<_, Error>((first, second))
    });
    producer.push_parts(&[&[2; 56]], None, &mut NoInterrupt)?;
    let (first, second) = worker
        .join()
        .map_err(|_| Error::Invalid("consumer panicked".into()))??;
    assert_eq!((first, second), (vec![1; 56], vec![2; 56]));
    Ok(())
}

#[test]
fn open_refuses_what_is_not_a_ring() -> Result<()> {
    let seg = Segment::create("t", HEADER_BYTES + 4096)?;
    assert!(matches!(Ring::open(seg.dup_fd()?), Err(Error::Corrupt(_))));
    let q = crate::queue::Queue::create(4096, 0)?;
    assert!(matches!(Ring::open(q.dup_fd()?), Err(Error::Corrupt(_))));
    let small = Segment::create("t", 100)?;
    assert!(matches!(
        Ring::open(small.dup_fd()?),
        Err(Error::Corrupt(_))
    ));
    Ok(())
}

#[test]
fn damaged_positions_and_lengths_are_reported() -> Result<()> {
    let mut r = Ring::create(64)?;
    let mut other = Ring::open(r.dup_fd()?)?;
    assert!(r.try_push_parts(&[b"abc"])?);
    // A length word claiming more than was published.
    // SAFETY: the test owns both handles; nobody else touches the ring.
    unsafe { r.map.data().cast::<u64>().write(50) };
    assert!(matches!(pop_copy(&mut other), Err(Error::Corrupt(_))));
    // A tail that runs more than a ring ahead of the head.
    r.map.header().tail.0.store(1000, Ordering::Release);
    assert!(matches!(
        pop_copy(&mut Ring::open(r.dup_fd()?)?),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        r.try_push_parts(&[&[0; 64]]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        r.try_push_parts(&[&[0; 56]]),
        Err(Error::Corrupt(_))
    ));
    Ok(())
}
