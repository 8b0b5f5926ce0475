//! Process plumbing end to end: programs started with `proc::spawn`, their exits seen
//! through pidfds, descriptors placed at fixed numbers, and descriptors passed to and from
//! a child over a socket.
//!
//! Tests that need a child which speaks the fd-passing protocol re-execute this test binary
//! to run only [`child_process`], with its role in the environment and its end of a socket
//! pair at descriptor 3 (forking the multithreaded test harness would not be safe).

// reason: a failed unwrap in a test is a test failure with a useful message; the lint
// targets user-reachable panics in the library.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_engine::fdpass::{recv_fds, send_fds, socketpair};
use shoal_engine::proc::{spawn, spawn_blocking, Child, Exit, Pidfd};
use shoal_engine::seg::Segment;
use shoal_engine::wait::NoInterrupt;
use shoal_engine::Error;

const ROLE: &str = "SHOAL_PROC_ROLE";
/// Where a re-executed child finds its end of the socket pair.
const SOCK_FD: i32 = 3;

fn sh(script: &str) -> Child {
    sh_with(script, &[], &[])
}

fn sh_with(
    script: &str,
    env: &[(OsString, OsString)],
    keep: &[(std::os::fd::BorrowedFd<'_>, i32)],
) -> Child {
    spawn(
        Path::new("/bin/sh"),
        &["-c".into(), script.into()],
        env,
        keep,
    )
    .unwrap()
}

fn in_secs(s: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(s))
}

fn finish(child: &mut Child) -> Exit {
    child.wait(in_secs(10), &mut NoInterrupt).unwrap().unwrap()
}

fn kill_and_reap(child: &mut Child) {
    child.kill(libc::SIGKILL).unwrap();
    assert_eq!(finish(child), Exit::Signal(libc::SIGKILL));
}

fn os_errno<T>(r: &Result<T, Error>) -> Option<i32> {
    match r {
        Err(Error::Os { source, .. }) => source.raw_os_error(),
        _ => None,
    }
}

/// This test binary, re-executed with `role`, its end of a socket at [`SOCK_FD`] and its
/// harness chatter on stdout sent to /dev/null.
fn spawn_self(role: &str, sock: &OwnedFd) -> Child {
    let null = File::options().write(true).open("/dev/null").unwrap();
    spawn(
        &std::env::current_exe().unwrap(),
        &[
            "--exact".into(),
            "child_process".into(),
            "--test-threads=1".into(),
            "--nocapture".into(),
        ],
        &[(ROLE.into(), role.into())],
        &[(sock.as_fd(), SOCK_FD), (null.as_fd(), 1)],
    )
    .unwrap()
}

/// The child side of the cross-process tests; does nothing unless [`ROLE`] is set.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: the parent placed our end of the socket pair at SOCK_FD, and nothing else in
    // this process uses that number.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCK_FD) };
    let sock = sock.as_fd();
    match role.as_str() {
        // Map the segment we are sent, read the parent's number, write back one more.
        "segment" => {
            let (payload, mut fds) = recv_fds(sock, 64, 1, in_secs(10), &mut NoInterrupt).unwrap();
            assert_eq!(payload, b"segment");
            let seg = Segment::from_fd(fds.remove(0)).unwrap();
            // SAFETY: the segment is 4096 bytes; the parent waits for our reply before
            // reading offset 8.
            unsafe {
                let value = seg.base().cast::<u64>().read_volatile();
                seg.base().cast::<u64>().add(1).write_volatile(value + 1);
            }
            send_fds(sock, b"done", &[]).unwrap();
        }
        // Act as a miniature zygote: start a process on request, hand back its pidfd, and
        // report how it ended once somebody else has killed it.
        "zygote" => {
            let (payload, _) = recv_fds(sock, 64, 0, in_secs(10), &mut NoInterrupt).unwrap();
            assert_eq!(payload, b"start");
            let mut worker = spawn(Path::new("/bin/sleep"), &["30".into()], &[], &[]).unwrap();
            let pid = worker.pid().to_string();
            send_fds(sock, pid.as_bytes(), &[worker.pidfd()]).unwrap();
            let exit = worker.wait(in_secs(10), &mut NoInterrupt).unwrap().unwrap();
            send_fds(sock, exit.to_string().as_bytes(), &[]).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn an_exit_code_is_reported_and_remembered() {
    let mut child = sh("exit 3");
    assert!(child.pid() > 0);
    assert_eq!(finish(&mut child), Exit::Code(3));
    assert_eq!(child.try_wait().unwrap(), Some(Exit::Code(3)));
    assert_eq!(finish(&mut child), Exit::Code(3));
    // Killing a reaped child is a no-op, not an error (and cannot hit a recycled pid).
    child.kill(libc::SIGKILL).unwrap();
}

#[test]
fn sigkill_is_seen_promptly() {
    let mut child = spawn(Path::new("/bin/sleep"), &["10".into()], &[], &[]).unwrap();
    assert_eq!(child.try_wait().unwrap(), None);
    let started = Instant::now();
    child.kill(libc::SIGKILL).unwrap();
    let exit = finish(&mut child);
    let took = started.elapsed();
    assert_eq!(exit, Exit::Signal(9));
    assert_eq!(exit.to_string(), "killed by signal 9 (SIGKILL)");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_wait_ends_at_its_deadline() {
    let mut child = spawn(Path::new("/bin/sleep"), &["10".into()], &[], &[]).unwrap();
    let started = Instant::now();
    let soon = Some(started + Duration::from_millis(50));
    assert_eq!(child.wait(soon, &mut NoInterrupt).unwrap(), None);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(50), "took {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    kill_and_reap(&mut child);
}

#[test]
fn an_interrupt_ends_a_wait() {
    let mut child = spawn(Path::new("/bin/sleep"), &["10".into()], &[], &[]).unwrap();
    let started = Instant::now();
    let mut calls = 0;
    let mut stop = || {
        calls += 1;
        calls >= 3
    };
    assert!(matches!(
        child.wait(None, &mut stop),
        Err(Error::Interrupted)
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    kill_and_reap(&mut child);
}

#[test]
fn a_kept_descriptor_arrives_at_its_target_number() {
    let (mut r, w) = std::io::pipe().unwrap();
    let mut child = sh_with("echo hi >&5", &[], &[(w.as_fd(), 5)]);
    drop(w);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    assert_eq!(out, "hi\n");
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn descriptors_can_swap_numbers() {
    // Each descriptor's target is the other's current number: placing one naively would
    // overwrite the other before it is placed.
    let (mut ra, wa) = std::io::pipe().unwrap();
    let (mut rb, wb) = std::io::pipe().unwrap();
    let (na, nb) = (wa.as_raw_fd(), wb.as_raw_fd());
    let env = [
        ("A_AT".into(), nb.to_string().into()),
        ("B_AT".into(), na.to_string().into()),
    ];
    let mut child = sh_with(
        "echo a > /proc/self/fd/$A_AT && echo b > /proc/self/fd/$B_AT",
        &env,
        &[(wa.as_fd(), nb), (wb.as_fd(), na)],
    );
    drop((wa, wb));
    let (mut a, mut b) = (String::new(), String::new());
    ra.read_to_string(&mut a).unwrap();
    rb.read_to_string(&mut b).unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("a\n", "b\n"));
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn other_inheritable_descriptors_do_not_leak() {
    let mut raw = [0; 2];
    // SAFETY: a valid out-array of two ints. No O_CLOEXEC: these would leak into any
    // child that does not close them.
    assert_eq!(unsafe { libc::pipe(raw.as_mut_ptr()) }, 0);
    // SAFETY: the pipe's ends are ours alone.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(raw[0]), OwnedFd::from_raw_fd(raw[1])) };
    let kept = if w.as_raw_fd() == 9 { 10 } else { 9 };
    let env = [
        ("LEAK".into(), w.as_raw_fd().to_string().into()),
        ("KEPT".into(), kept.to_string().into()),
    ];
    let mut child = sh_with(
        "test ! -e /proc/self/fd/$LEAK && test -e /proc/self/fd/$KEPT",
        &env,
        &[(r.as_fd(), kept)],
    );
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn the_environment_is_inherited_with_additions() {
    let env = [
        ("SHOAL_PROC_TEST".into(), "yes".into()),
        ("HOME".into(), "/nowhere".into()),
    ];
    let mut child = sh_with(
        r#"test "$SHOAL_PROC_TEST" = yes && test "$HOME" = /nowhere && test -n "$PATH""#,
        &env,
        &[],
    );
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn the_child_starts_with_no_blocked_signals() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset; pthread_sigmask changes
    // only this test's thread and is restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
        old
    };
    let mut child = sh("kill -TERM $$; exit 0");
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    assert_eq!(finish(&mut child), Exit::Signal(libc::SIGTERM));
}

#[test]
fn a_signal_the_child_starts_with_blocked_waits_for_it() {
    let sh = Path::new("/bin/sh");
    let args = [OsString::from("-c"), OsString::from("kill -INT $$; exit 0")];
    let mut child = spawn_blocking(sh, &args, &[], &[], &[libc::SIGINT]).expect("spawn");
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn an_ignored_sigint_is_not_inherited() {
    // SAFETY: sets SIGINT to ignored for this process for the duration of one spawn, then
    // restores it; nothing in the test binary sends or expects SIGINT meanwhile.
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut child = sh("kill -INT $$; exit 0");
    // SAFETY: restores the disposition saved above.
    unsafe { libc::signal(libc::SIGINT, old) };
    let exit = finish(&mut child);
    assert_eq!(exit, Exit::Signal(libc::SIGINT));
    assert_eq!(exit.to_string(), "killed by signal 2 (SIGINT)");
}

#[test]
fn dropping_a_child_closes_its_pidfd_but_leaves_it_running() {
    let child = spawn(Path::new("/bin/sleep"), &["10".into()], &[], &[]).unwrap();
    let pid = child.pid();
    let raw = child.pidfd().as_raw_fd();
    let watcher = Pidfd::open(pid).unwrap();
    drop(child);
    // The number may be reused by another test's descriptor meanwhile, but not for a
    // pidfd of this process.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).unwrap_or_default();
    assert!(!info.contains(&format!("Pid:\t{pid}\n")), "{info}");
    assert!(watcher.is_alive().unwrap());
    watcher.kill(libc::SIGKILL).unwrap();
    assert!(watcher.wait_gone(in_secs(5), &mut NoInterrupt).unwrap());
    assert!(!watcher.is_alive().unwrap());
    // The handle is gone, so reap the zombie by pid.
    // SAFETY: `pid` is our unreaped child; nothing else waits for it.
    assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
}

#[test]
fn a_grandchild_can_be_watched_and_killed_through_a_pidfd() {
    let (r, w) = std::io::pipe().unwrap();
    let mut child = sh_with(
        "sleep 30 5>&- & echo $! >&5; exec 5>&-; wait",
        &[],
        &[(w.as_fd(), 5)],
    );
    drop(w);
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).unwrap();
    let gpid: libc::pid_t = line.trim().parse().unwrap();
    let grandchild = Pidfd::open(gpid).unwrap();
    assert_eq!(grandchild.pid(), Some(gpid));
    assert!(grandchild.is_alive().unwrap());
    let started = Instant::now();
    assert!(!grandchild
        .wait_gone(Some(started + Duration::from_millis(30)), &mut NoInterrupt)
        .unwrap());
    grandchild.kill(libc::SIGKILL).unwrap();
    assert!(grandchild.wait_gone(in_secs(5), &mut NoInterrupt).unwrap());
    // Its parent, the shell, reaps it and then exits normally.
    assert_eq!(finish(&mut child), Exit::Code(0));
    // Signalling a process that is gone is not an error.
    grandchild.kill(libc::SIGKILL).unwrap();
}

#[test]
fn a_segment_passed_to_a_child_is_the_same_memory() {
    let (ours, theirs) = socketpair().unwrap();
    let mut child = spawn_self("segment", &theirs);
    drop(theirs);
    let seg = Segment::create("proc-test", 4096).unwrap();
    // SAFETY: the segment is 4096 bytes and the child only reads it after our send.
    unsafe { seg.base().cast::<u64>().write_volatile(41) };
    send_fds(ours.as_fd(), b"segment", &[seg.fd()]).unwrap();
    let (reply, _) = recv_fds(ours.as_fd(), 64, 0, in_secs(10), &mut NoInterrupt).unwrap();
    assert_eq!(reply, b"done");
    // SAFETY: the segment is 4096 bytes; the child wrote offset 8 before replying.
    let answer = unsafe { seg.base().cast::<u64>().add(1).read_volatile() };
    assert_eq!(answer, 42);
    assert_eq!(finish(&mut child), Exit::Code(0));
}

#[test]
fn a_pidfd_sent_by_a_zygote_controls_its_worker() {
    let (ours, theirs) = socketpair().unwrap();
    let mut zygote = spawn_self("zygote", &theirs);
    drop(theirs);
    send_fds(ours.as_fd(), b"start", &[]).unwrap();
    let (pid, mut fds) = recv_fds(ours.as_fd(), 64, 1, in_secs(10), &mut NoInterrupt).unwrap();
    let pid: libc::pid_t = String::from_utf8(pid).unwrap().parse().unwrap();
    let worker = Pidfd::from_fd(fds.remove(0)).unwrap();
    assert_eq!(worker.pid(), Some(pid));
    assert!(worker.is_alive().unwrap());
    worker.kill(libc::SIGKILL).unwrap();
    assert!(worker.wait_gone(in_secs(5), &mut NoInterrupt).unwrap());
    let (report, _) = recv_fds(ours.as_fd(), 64, 0, in_secs(10), &mut NoInterrupt).unwrap();
    assert_eq!(report, b"killed by signal 9 (SIGKILL)");
    assert_eq!(finish(&mut zygote), Exit::Code(0));
}

#[test]
fn a_child_that_exits_is_a_closed_peer_not_a_hang() {
    let (ours, theirs) = socketpair().unwrap();
    let mut child = spawn(
        Path::new("/bin/true"),
        &[],
        &[],
        &[(theirs.as_fd(), SOCK_FD)],
    )
    .unwrap();
    drop(theirs);
    let started = Instant::now();
    let r = recv_fds(ours.as_fd(), 64, 4, in_secs(10), &mut NoInterrupt);
    assert_eq!(os_errno(&r), Some(libc::ECONNRESET));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(finish(&mut child), Exit::Code(0));
}
