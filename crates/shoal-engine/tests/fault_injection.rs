//! Fault injection: producer and consumer processes SIGKILLed at random points while they
//! use one queue, and the survivors checked for lost, duplicated and corrupt messages.
//!
//! The test harness runs tests on several threads, and forking a multithreaded process is
//! unsafe, so the children are this test binary itself, re-executed to run only
//! [`child_process`] with its role in the environment. The queue's memfd reaches them as an
//! inherited descriptor whose number is in the environment too.
//!
//! Every message carries its producer's id, its sequence number, its length and a checksum
//! over all of that and a pseudo-random body. Producers log a sequence number once `put`
//! has returned; consumers log every message they received (one `write` per message, so a
//! kill loses at most the line being written). From the logs the parent checks that
//! nothing was corrupt or received twice, that every logged message arrived but for at most
//! one per killed consumer, and that each killed producer delivered at most one message it
//! did not live to log.

// reason: a failed unwrap in a test is a test failure with a useful message; the lint
// targets user-reachable panics in the library.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_engine::queue::{Message, Queue, VecSink};
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

// The environment a child reads. Without ROLE, `child_process` does nothing.
const ROLE: &str = "SHOAL_FAULT_ROLE";
const FD: &str = "SHOAL_FAULT_FD";
const ID: &str = "SHOAL_FAULT_ID";
const LOG: &str = "SHOAL_FAULT_LOG";
const QUOTA: &str = "SHOAL_FAULT_QUOTA";
/// A fixed body size for every message of a producer (otherwise sizes vary).
const SIZE: &str = "SHOAL_FAULT_SIZE";
/// Present: wait forever in every put and get (otherwise some calls use short deadlines).
const PATIENT: &str = "SHOAL_FAULT_PATIENT";

const MAGIC: u32 = 0x5348_4f4c;
const HEADER: usize = 24;
/// The producer id of the parent's "stop" messages: a consumer exits on receiving one.
const STOP_ID: u32 = u32::MAX;
/// The producer id of messages the parent puts itself.
const PARENT_ID: u32 = u32::MAX - 1;

const RING: usize = 64 << 10;

/// splitmix64: small, fast, and good enough to pick sizes, victims and bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Header (magic, producer, seq, body length), checksum over header and body, then body.
fn make_message(producer: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + len);
    for word in [MAGIC, producer, seq, len as u32] {
        m.extend_from_slice(&word.to_le_bytes());
    }
    m.extend_from_slice(&[0; 8]);
    let mut rng = Rng::new((u64::from(producer) << 32) | u64::from(seq));
    m.resize(HEADER + len, 0);
    for chunk in m[HEADER..].chunks_mut(8) {
        let word = rng.next().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    let sum = fnv1a(&[&m[..16], &m[HEADER..]]);
    m[16..HEADER].copy_from_slice(&sum.to_le_bytes());
    m
}

/// Returns `(producer, seq)` of an intact message, or what is wrong with it.
fn check_message(tag: u8, m: &[u8]) -> Result<(u32, u32), String> {
    if m.len() < HEADER {
        return Err(format!("{} bytes, shorter than a header", m.len()));
    }
    let word = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
    let (magic, producer, seq, len) = (word(0), word(4), word(8), word(12));
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&m[16..HEADER]);
    let sum = u64::from_le_bytes(sum);
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#x}"));
    }
    if len as usize != m.len() - HEADER {
        return Err(format!(
            "producer {producer} seq {seq}: header says {len} bytes, got {}",
            m.len() - HEADER
        ));
    }
    if sum != fnv1a(&[&m[..16], &m[HEADER..]]) {
        return Err(format!("producer {producer} seq {seq}: bad checksum"));
    }
    if tag != seq as u8 {
        return Err(format!("producer {producer} seq {seq}: tag {tag}"));
    }
    Ok((producer, seq))
}

/// Sizes that make whole records (up to half the ring), chunked ones, and ones that are
/// larger than the whole ring.
fn pick_size(rng: &mut Rng) -> usize {
    let size = match rng.range(0, 99) {
        0..=59 => rng.range(0, 256),
        60..=84 => rng.range(257, 8 << 10),
        85..=94 => rng.range(8 << 10, 32_000),
        95..=97 => rng.range(33 << 10, 64 << 10),
        _ => rng.range(64 << 10, 160 << 10),
    };
    size as usize
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn open_log(path: &str) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// One `write` per line, so a kill leaves whole lines and at most one partial last line.
fn log_line(log: &mut File, line: &str) {
    log.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A deadline for a put or get: usually none, sometimes a few milliseconds, so that calls
/// give up mid-way (a large message abandoned half-sent, a get that finds nothing).
fn some_deadline(rng: &mut Rng, patient: bool) -> Option<Instant> {
    if patient || rng.range(0, 3) != 0 {
        None
    } else {
        Some(Instant::now() + Duration::from_millis(rng.range(0, 10)))
    }
}

fn run_producer(q: &Queue) {
    let id: u32 = env(ID).parse().unwrap();
    let quota: u32 = env(QUOTA).parse().unwrap();
    let fixed: Option<usize> = std::env::var(SIZE).ok().map(|s| s.parse().unwrap());
    let patient = std::env::var_os(PATIENT).is_some();
    let mut log = open_log(&env(LOG));
    let mut rng = Rng::new(u64::from(id).wrapping_mul(0x1234_5678_9abc_def1));
    for seq in 0..quota {
        let len = fixed.unwrap_or_else(|| pick_size(&mut rng));
        let body = make_message(id, seq, len);
        log_line(&mut log, &format!("BEGIN {seq}"));
        let msg = [Message {
            tag: seq as u8,
            body: &body,
        }];
        loop {
            match q.put(&msg, some_deadline(&mut rng, patient), &mut NoInterrupt) {
                Ok(()) => break,
                // Nothing of it is visible (a half-sent large message is dropped): retry.
                Err(Error::Full) => {}
                Err(e) => panic!("producer {id}: put failed: {e}"),
            }
        }
        log_line(&mut log, &seq.to_string());
    }
}

fn run_consumer(q: &Queue) {
    let patient = std::env::var_os(PATIENT).is_some();
    let id: u64 = env(ID).parse().unwrap();
    let mut log = open_log(&env(LOG));
    let mut rng = Rng::new(id ^ 0xdead_beef);
    log_line(&mut log, "START");
    loop {
        let mut sink = VecSink::default();
        // One message per get: a consumer killed after taking it loses that one only.
        match q.get(
            &mut sink,
            1,
            some_deadline(&mut rng, patient),
            &mut NoInterrupt,
        ) {
            Ok(_) => {}
            Err(Error::Empty) => continue,
            Err(e) => panic!("consumer {id}: get failed: {e}"),
        }
        for (tag, body) in &sink.messages {
            match check_message(*tag, body) {
                Ok((STOP_ID, _)) => {
                    log_line(&mut log, "STOP");
                    return;
                }
                Ok((producer, seq)) => log_line(&mut log, &format!("{producer} {seq}")),
                Err(why) => log_line(&mut log, &format!("CORRUPT {why}")),
            }
        }
    }
}

/// The body of every child process; passes at once in a normal test run.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let fd: RawFd = env(FD).parse().unwrap();
    // SAFETY: the parent duplicated this descriptor for this process alone and kept it open
    // across exec; nothing else here owns or closes it.
    let q = Queue::open(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
    match role.as_str() {
        "producer" => run_producer(&q),
        "consumer" => run_consumer(&q),
        other => panic!("unknown role {other}"),
    }
}

/// A scratch directory for logs, removed when the test passes and kept (its path printed)
/// when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("shoal-fault-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Producer,
    Consumer,
}

struct Running {
    role: Role,
    id: u32,
    child: Child,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Killed,
    Finished,
}

/// The children of one test. Dropping it SIGKILLs those still running, so a failing test
/// leaves no process behind.
struct Children<'q> {
    queue: &'q Queue,
    dir: PathBuf,
    running: Vec<Running>,
    next_id: u32,
    /// How each child that is gone ended, by role and id.
    ended: HashMap<(Role, u32), End>,
}

impl<'q> Children<'q> {
    fn new(queue: &'q Queue, dir: &Path) -> Self {
        Children {
            queue,
            dir: dir.to_path_buf(),
            running: Vec::new(),
            next_id: 0,
            ended: HashMap::new(),
        }
    }

    fn log_path(&self, role: Role, id: u32) -> PathBuf {
        let prefix = match role {
            Role::Producer => "p",
            Role::Consumer => "c",
        };
        self.dir.join(format!("{prefix}{id}.log"))
    }

    fn err_path(&self, role: Role, id: u32) -> PathBuf {
        self.log_path(role, id).with_extension("err")
    }

    /// Starts a child with a fresh id and returns the id.
    fn spawn(&mut self, role: Role, extra: &[(&str, String)]) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        // A close-on-exec duplicate of the queue's descriptor; only the child we are about
        // to start clears the flag, so concurrent spawns elsewhere do not inherit it.
        let fd = self.queue.dup_fd().unwrap();
        let raw = fd.as_raw_fd();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            ROLE,
            match role {
                Role::Producer => "producer",
                Role::Consumer => "consumer",
            },
        )
        .env(FD, raw.to_string())
        .env(ID, id.to_string())
        .env(LOG, self.log_path(role, id))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(self.err_path(role, id)).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // SAFETY: the hook runs in the forked child just before exec and only calls fcntl,
        // which is async-signal-safe, on a descriptor the child inherited from us.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(fd);
        self.running.push(Running { role, id, child });
        id
    }

    /// Records how a child ended; a child that failed on its own fails the test.
    fn record(&mut self, role: Role, id: u32, status: ExitStatus) -> End {
        let end = if status.signal() == Some(libc::SIGKILL) {
            End::Killed
        } else if status.success() {
            End::Finished
        } else {
            let err = std::fs::read_to_string(self.err_path(role, id)).unwrap_or_default();
            panic!("{role:?} {id} failed on its own ({status}):\n{err}");
        };
        self.ended.insert((role, id), end);
        end
    }

    /// Collects children that exited by themselves; returns the roles of those that ended.
    fn reap(&mut self) -> Vec<Role> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].child.try_wait().unwrap() {
                Some(status) => {
                    let r = self.running.swap_remove(i);
                    self.record(r.role, r.id, status);
                    gone.push(r.role);
                }
                None => i += 1,
            }
        }
        gone
    }

    /// SIGKILLs the child at `index` and returns its role and whether the kill landed
    /// (it may have finished just before).
    fn kill(&mut self, index: usize) -> (Role, End) {
        let mut r = self.running.swap_remove(index);
        r.child.kill().unwrap();
        let status = r.child.wait().unwrap();
        (r.role, self.record(r.role, r.id, status))
    }

    /// Waits until every running child of `role` has exited by itself.
    fn wait_all(&mut self, role: Role, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        while self.running.iter().any(|r| r.role == role) {
            self.reap();
            assert!(
                Instant::now() < deadline,
                "{what}: still running after {timeout:?} (is the queue wedged?)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn count(&self, role: Role) -> usize {
        self.running.iter().filter(|r| r.role == role).count()
    }
}

impl Drop for Children<'_> {
    fn drop(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// The complete lines of a log; a partial last line (its writer was killed) is ignored.
fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().map(str::to_owned).collect()
}

/// Waits until the log at `path` has the line `line`.
fn wait_for_line(path: &Path, line: &str, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while !read_lines(path).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "{what}: no line {line:?} in {} after {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An interrupt that fires once `limit` has passed: the parent's own queue calls then
/// fail with `Interrupted` where a wedged queue would otherwise hang the test (a reader
/// inside a large message waits for its next chunk whatever its deadline says).
fn give_up_after(limit: Duration) -> impl FnMut() -> bool {
    let end = Instant::now() + limit;
    move || Instant::now() >= end
}

fn put_parent_message(q: &Queue, producer: u32, seq: u32, len: usize) {
    let body = make_message(producer, seq, len);
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let msg = [Message {
        tag: seq as u8,
        body: &body,
    }];
    let mut bound = give_up_after(Duration::from_secs(10));
    if let Err(e) = q.put(&msg, deadline, &mut bound) {
        panic!("the parent's put of {producer}/{seq} failed: {e} (is the queue wedged?)");
    }
}

#[test]
fn random_kills_lose_nothing_but_the_message_in_hand() {
    const PRODUCERS: usize = 3;
    const CONSUMERS: usize = 3;
    const QUOTA_PER_PRODUCER: u32 = 150;
    const KILLING: Duration = Duration::from_secs(3);

    let started = Instant::now();
    let scratch = Scratch::new("random");
    // A limit on the message count too, so that the counts' journals matter.
    let q = Queue::create(RING, 48).unwrap();
    let mut children = Children::new(&q, &scratch.0);
    let quota = [(QUOTA, QUOTA_PER_PRODUCER.to_string())];
    for _ in 0..PRODUCERS {
        children.spawn(Role::Producer, &quota);
    }
    for _ in 0..CONSUMERS {
        children.spawn(Role::Consumer, &[]);
    }

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = Rng::new(seed);
    let (mut producer_kills, mut consumer_kills) = (0usize, 0usize);
    let kill_until = Instant::now() + KILLING;
    while Instant::now() < kill_until {
        std::thread::sleep(Duration::from_millis(rng.range(1, 30)));
        // Producers that met their quota are replaced too, to keep the pressure on.
        for role in children.reap() {
            children.spawn(role, &quota);
        }
        let victim = rng.range(0, children.running.len() as u64 - 1) as usize;
        let (role, end) = children.kill(victim);
        if end == End::Killed {
            match role {
                Role::Producer => producer_kills += 1,
                Role::Consumer => consumer_kills += 1,
            }
        }
        children.spawn(role, &quota);
    }
    let kill_phase = started.elapsed();

    // No more kills: producers finish their quotas, consumers drain, then each consumer
    // gets one stop message.
    children.wait_all(
        Role::Producer,
        Duration::from_secs(30),
        "producers finishing their quota",
    );
    assert_eq!(children.count(Role::Consumer), CONSUMERS);
    for i in 0..CONSUMERS {
        put_parent_message(&q, STOP_ID, i as u32, 0);
    }
    children.wait_all(
        Role::Consumer,
        Duration::from_secs(30),
        "consumers draining the queue",
    );
    assert_eq!(q.len(), 0, "messages left after every consumer stopped");
    let mut sink = VecSink::default();
    assert!(matches!(
        q.get(
            &mut sink,
            1,
            Some(Instant::now()),
            &mut give_up_after(Duration::from_secs(10))
        ),
        Err(Error::Empty)
    ));

    // What each producer logged as put, and whether it was killed.
    let mut logged: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut killed_producers = BTreeSet::new();
    for (&(role, id), &end) in &children.ended {
        if role != Role::Producer {
            continue;
        }
        if end == End::Killed {
            killed_producers.insert(id);
        }
        let seqs = read_lines(&children.log_path(role, id))
            .iter()
            .filter(|l| !l.starts_with("BEGIN"))
            .map(|l| l.parse().unwrap())
            .collect();
        logged.insert(id, seqs);
    }

    // What the consumers received: nothing corrupt, nothing twice, each producer's
    // messages in order within each consumer.
    let mut received: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut stops = 0;
    for &(role, id) in children.ended.keys() {
        if role != Role::Consumer {
            continue;
        }
        let mut last_seen: HashMap<u32, u32> = HashMap::new();
        for line in read_lines(&children.log_path(role, id)) {
            if line == "START" {
                continue;
            }
            if line == "STOP" {
                stops += 1;
                continue;
            }
            assert!(!line.starts_with("CORRUPT"), "consumer {id}: {line}");
            let mut words = line.split(' ');
            let producer: u32 = words.next().unwrap().parse().unwrap();
            let seq: u32 = words.next().unwrap().parse().unwrap();
            assert!(
                logged.contains_key(&producer),
                "consumer {id} got a message from unknown producer {producer}"
            );
            assert!(
                received.entry(producer).or_default().insert(seq),
                "message {producer}/{seq} received twice"
            );
            if let Some(&before) = last_seen.get(&producer) {
                assert!(
                    seq > before,
                    "consumer {id} got {producer}/{seq} after {producer}/{before}"
                );
            }
            last_seen.insert(producer, seq);
        }
    }
    assert_eq!(stops, CONSUMERS, "every consumer stops on its own message");

    let mut lost = Vec::new();
    let mut unlogged = Vec::new();
    let mut put_count = 0;
    for (&producer, seqs) in &logged {
        put_count += seqs.len();
        let got = received.get(&producer).cloned().unwrap_or_default();
        lost.extend(seqs.difference(&got).map(|&s| (producer, s)));
        let extra: Vec<u32> = got.difference(seqs).copied().collect();
        if extra.is_empty() {
            continue;
        }
        unlogged.extend(extra.iter().map(|&s| (producer, s)));
        // Only a killed producer's last put can arrive unlogged: the one it died in.
        let next = seqs.last().map_or(0, |&s| s + 1);
        assert!(
            killed_producers.contains(&producer) && extra == [next],
            "producer {producer} (killed: {}) logged up to {:?} but {extra:?} arrived too",
            killed_producers.contains(&producer),
            seqs.last()
        );
    }
    assert!(
        lost.len() <= consumer_kills,
        "{} messages lost ({lost:?}) with only {consumer_kills} consumers killed",
        lost.len()
    );
    let received_count: usize = received.values().map(BTreeSet::len).sum();
    eprintln!(
        "random kills (seed {seed}): {producer_kills} producers and {consumer_kills} consumers \
         killed in {kill_phase:.1?}; {put_count} messages logged as put, {received_count} \
         received, {} lost with their consumer, {} received from producers killed before \
         logging them; {:.1?} in all",
        lost.len(),
        unlogged.len(),
        started.elapsed()
    );
    assert!(
        producer_kills > 0 && consumer_kills > 0,
        "the test killed too little to mean anything"
    );
}

#[test]
fn a_consumer_killed_while_waiting_does_not_wedge_the_others() {
    let scratch = Scratch::new("waiting");
    let q = Queue::create(RING, 0).unwrap();
    let mut children = Children::new(&q, &scratch.0);
    let patient = [(PATIENT, String::new())];
    let wait = Duration::from_secs(10);

    let first = children.spawn(Role::Consumer, &patient);
    let first_log = children.log_path(Role::Consumer, first);
    put_parent_message(&q, PARENT_ID, 0, 10);
    wait_for_line(
        &first_log,
        &format!("{PARENT_ID} 0"),
        wait,
        "first consumer",
    );
    // The first consumer is back in get: it holds the read lock and sleeps on an empty
    // ring. A second one queues up behind it for the lock.
    std::thread::sleep(Duration::from_millis(100));
    let second = children.spawn(Role::Consumer, &patient);
    let second_log = children.log_path(Role::Consumer, second);
    wait_for_line(&second_log, "START", wait, "second consumer");
    std::thread::sleep(Duration::from_millis(100));

    let index = children.running.iter().position(|r| r.id == first).unwrap();
    assert_eq!(children.kill(index), (Role::Consumer, End::Killed));
    let killed_at = Instant::now();
    put_parent_message(&q, PARENT_ID, 1, 10);
    wait_for_line(
        &second_log,
        &format!("{PARENT_ID} 1"),
        Duration::from_secs(5),
        "the consumer behind the killed one",
    );
    let took = killed_at.elapsed();
    // A large message goes through too (the ring was left in a sane state).
    put_parent_message(&q, PARENT_ID, 2, 3 * RING);
    wait_for_line(
        &second_log,
        &format!("{PARENT_ID} 2"),
        wait,
        "large message",
    );
    put_parent_message(&q, STOP_ID, 0, 0);
    children.wait_all(Role::Consumer, wait, "second consumer stopping");
    assert!(q.is_empty());
    eprintln!("a message put after the kill reached the other consumer in {took:.1?}");
}

#[test]
fn a_producer_killed_inside_a_large_message_does_not_wedge_the_others() {
    for next_producer_first in [false, true] {
        let scratch = Scratch::new("large");
        let q = std::sync::Arc::new(Queue::create(RING, 0).unwrap());
        let mut children = Children::new(&q, &scratch.0);
        let producer = children.spawn(
            Role::Producer,
            &[
                (QUOTA, "1".into()),
                (SIZE, (3 * RING).to_string()),
                (PATIENT, String::new()),
            ],
        );
        let log = children.log_path(Role::Producer, producer);
        wait_for_line(&log, "BEGIN 0", Duration::from_secs(10), "large producer");
        // Nobody reads: the producer fills the ring with the first chunks and waits for
        // room, holding the write lock. Kill it there.
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(children.kill(0), (Role::Producer, End::Killed));
        assert_eq!(q.len(), 0, "a message in chunks counts once it is complete");

        let mut sink = VecSink::default();
        let started = Instant::now();
        if next_producer_first {
            // The next producer seals the orphan with an abort record once the reader
            // makes room, and its own message follows.
            let putter = {
                let q = q.clone();
                std::thread::spawn(move || put_parent_message(&q, PARENT_ID, 0, 10))
            };
            // Let it take the write lock and start waiting for room before reading.
            std::thread::sleep(Duration::from_millis(50));
            let got = q.get(
                &mut sink,
                1,
                Some(Instant::now() + Duration::from_secs(10)),
                &mut give_up_after(Duration::from_secs(10)),
            );
            assert!(putter.join().is_ok(), "the next producer failed");
            assert!(
                matches!(got, Ok(1)),
                "get after the orphan gave {got:?} (is the queue wedged?)"
            );
        } else {
            // The reader drains the orphan's chunks, sees the write lock free and drops them.
            let got = q.get(
                &mut sink,
                1,
                Some(Instant::now() + Duration::from_millis(300)),
                &mut give_up_after(Duration::from_secs(10)),
            );
            assert!(
                matches!(got, Err(Error::Empty)),
                "get of an orphan gave {got:?}"
            );
            put_parent_message(&q, PARENT_ID, 0, 10);
            let got = q.get(
                &mut sink,
                1,
                Some(Instant::now() + Duration::from_secs(10)),
                &mut give_up_after(Duration::from_secs(10)),
            );
            assert!(matches!(got, Ok(1)), "get after the orphan gave {got:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(sink.messages.len(), 1);
        let (tag, body) = &sink.messages[0];
        assert_eq!(check_message(*tag, body), Ok((PARENT_ID, 0)));
        assert!(q.is_empty());
    }
}
