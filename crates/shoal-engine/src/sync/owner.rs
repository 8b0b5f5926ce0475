//! Who this process is, as a lock records its owner: a pid and the process's start time,
//! cached and forgotten in a forked child; and whether a recorded owner is gone.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Whether the process `pid`, recorded with start time `recorded_start` (0: unknown), is
/// gone: dead, a zombie, or its pid now names another process.
pub(super) fn is_gone(pid: u32, recorded_start: u64) -> bool {
    match proc_start(pid) {
        None => true,
        // 0: the owner could not read its own start time; its pid alone then says it is
        // alive (a reused pid is taken for it).
        Some(start) => recorded_start != 0 && start != recorded_start,
    }
}

/// This process's pid, cached (0: not known yet). A forked child forgets it at once
/// ([`forget_pid`]), so it never records its parent's pid as a lock's owner.
static MY_PID: AtomicU32 = AtomicU32::new(0);
/// The start time of the process [`MY_PID`] names.
static MY_START: AtomicU64 = AtomicU64::new(0);

/// This process's pid and start time, cached: asking the kernel for the pid on every
/// acquire would cost more than the rest of an uncontended acquire.
pub(super) fn me() -> (u32, u64) {
    let cached = MY_PID.load(Ordering::Acquire);
    if cached != 0 {
        return (cached, MY_START.load(Ordering::Relaxed));
    }
    let pid = std::process::id();
    let Some(start) = proc_start(pid) else {
        // Unreadable now (no /proc, out of descriptors): recorded as unknown, asked again
        // next time.
        return (pid, 0);
    };
    if fork_hooked() {
        MY_START.store(start, Ordering::Relaxed);
        MY_PID.store(pid, Ordering::Release);
    }
    (pid, start)
}

/// Whether forked children forget the cached pid ([`forget_pid`] is registered). Without
/// that, nothing is cached.
///
/// A plain atomic, not a `OnceLock`: a process forked while another thread was inside a
/// `OnceLock`'s initialisation would find it still running in the child, and wait for it
/// forever at its first lock. Two threads may both register; the handler then runs twice,
/// which is harmless (it only stores a zero).
fn fork_hooked() -> bool {
    const UNKNOWN: u8 = 0;
    const HOOKED: u8 = 1;
    const FAILED: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    match STATE.load(Ordering::Acquire) {
        HOOKED => true,
        FAILED => false,
        _ => {
            // SAFETY: registers a handler that glibc's fork runs in the child; it only
            // stores to an atomic, which is async-signal-safe. It fails only for lack of
            // memory.
            let hooked = unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) } == 0;
            STATE.store(if hooked { HOOKED } else { FAILED }, Ordering::Release);
            hooked
        }
    }
}

/// This process's pid, as [`SyncCell`](super::SyncCell) records it for a lock's owner: cached, and right
/// in a forked child too.
pub fn current_pid() -> u32 {
    me().0
}

/// Run in a forked child (`pthread_atfork`): its pid is not its parent's.
extern "C" fn forget_pid() {
    MY_PID.store(0, Ordering::Relaxed);
}

/// The start time of a live (not zombie) process, from `/proc/<pid>/stat`.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}
