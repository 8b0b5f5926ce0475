use super::*;
use crate::wait::NoInterrupt;

fn msg(body: &[u8]) -> Message<'_> {
    Message { tag: 7, body }
}

#[test]
fn fifo_order_and_counts() -> Result<()> {
    let q = Queue::create(MIN_CAPACITY, 0)?;
    for i in 0..10u8 {
        q.put(&[msg(&[i; 3])], None, &mut NoInterrupt)?;
    }
    assert_eq!(q.len(), 10);
    let mut sink = VecSink::default();
    assert_eq!(q.get(&mut sink, 4, None, &mut NoInterrupt)?, 4);
    assert_eq!(q.get(&mut sink, 100, None, &mut NoInterrupt)?, 6);
    let got: Vec<u8> = sink.messages.iter().map(|(_, b)| b[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(q.is_empty());
    Ok(())
}

#[test]
fn timeouts_say_full_and_empty() -> Result<()> {
    let q = Queue::create(MIN_CAPACITY, 2)?;
    let soon = || Some(Instant::now() + Duration::from_millis(10));
    let mut sink = VecSink::default();
    assert!(matches!(
        q.get(&mut sink, 1, soon(), &mut NoInterrupt),
        Err(Error::Empty)
    ));
    q.put(&[msg(b"a"), msg(b"b")], None, &mut NoInterrupt)?;
    assert!(q.is_full());
    assert!(matches!(
        q.put(&[msg(b"c")], soon(), &mut NoInterrupt),
        Err(Error::Full)
    ));
    assert!(matches!(
        q.put(&[msg(b"x"), msg(b"y"), msg(b"z")], soon(), &mut NoInterrupt),
        Err(Error::Full)
    ));
    assert_eq!(q.len(), 2);
    Ok(())
}

#[test]
fn a_message_larger_than_the_ring_gets_through() -> Result<()> {
    let q = std::sync::Arc::new(Queue::create(MIN_CAPACITY, 0)?);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let producer = {
        let (q, big) = (q.clone(), big.clone());
        std::thread::spawn(move || {
            q.put(
                &[msg(b"before"), msg(&big), msg(b"after")],
                None,
                &mut NoInterrupt,
            )
        })
    };
    let mut sink = VecSink::default();
    while sink.messages.len() < 3 {
        q.get(&mut sink, 10, None, &mut NoInterrupt)?;
    }
    assert!(producer.join().is_ok());
    assert_eq!(sink.messages[0].1, b"before");
    assert_eq!(sink.messages[1].1, big);
    assert_eq!(sink.messages[2].1, b"after");
    assert!(q.is_empty());
    Ok(())
}

#[test]
fn an_abandoned_large_message_is_dropped_by_its_reader() -> Result<()> {
    let q = std::sync::Arc::new(Queue::create(MIN_CAPACITY, 0)?);
    let big = vec![1u8; 50_000];
    // The producer gives up once the ring is full of its chunks (nobody reads yet).
    let soon = Some(Instant::now() + Duration::from_millis(20));
    assert!(matches!(
        q.put(&[msg(&big)], soon, &mut NoInterrupt),
        Err(Error::Full)
    ));
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let mut sink = VecSink::default();
            q.get(&mut sink, 1, None, &mut NoInterrupt)
                .map(|_| sink.messages)
        })
    };
    q.put(&[msg(b"next")], None, &mut NoInterrupt)?;
    let got = consumer
        .join()
        .map_err(|_| Error::Invalid("consumer panicked".into()))??;
    assert_eq!(got, vec![(7, b"next".to_vec())]);
    assert!(q.is_empty());
    Ok(())
}

#[test]
fn reopening_by_descriptor_shares_the_queue() -> Result<()> {
    let a = Queue::create(MIN_CAPACITY, 5)?;
    let b = Queue::open(a.dup_fd()?)?;
    a.put(&[msg(b"hi")], None, &mut NoInterrupt)?;
    let mut sink = VecSink::default();
    b.get(&mut sink, 1, None, &mut NoInterrupt)?;
    assert_eq!(sink.messages[0].1, b"hi");
    assert_eq!(b.max_items(), 5);
    Ok(())
}
