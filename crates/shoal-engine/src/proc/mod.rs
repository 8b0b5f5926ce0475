//! Starting processes with `posix_spawn`, and watching and signalling them through pidfds.
//!
//! The pool's parent process has threads (ours and often the user's), so it never calls
//! `fork`: a forked copy of a threaded process inherits locks that no thread will ever
//! release. [`spawn`] starts a fresh program instead (the zygote: a single-threaded
//! interpreter that may then fork safely), placing chosen descriptors at chosen numbers in
//! the child and closing every other inheritable descriptor above 2.
//!
//! Each process is held by a pidfd, a descriptor for that one process that the kernel never
//! re-targets, so a recycled pid can never be signalled by mistake. A pidfd becomes readable
//! when its process exits, which lets a wait be a `poll` cut into slices that ask an
//! [`Interrupt`] (Ctrl-C stays responsive) and lets the supervisor put many processes in one
//! epoll set. [`Child`] is a process we started and can reap, with its exit status;
//! [`Pidfd`] is any process, such as a worker that the zygote forked and whose pidfd it sent
//! back over [`crate::fdpass`], which we can watch and kill but not reap.
//!
//! ```
//! use shoal_engine::proc::{spawn, Exit};
//! use shoal_engine::wait::NoInterrupt;
//! use std::path::Path;
//! let args = ["-c".into(), "exit 3".into()];
//! let mut child = spawn(Path::new("/bin/sh"), &args, &[], &[]).unwrap();
//! assert_eq!(child.wait(None, &mut NoInterrupt).unwrap(), Some(Exit::Code(3)));
//! ```
//!
//! Kernel requirements: `pidfd_open` and `pidfd_send_signal` (Linux 5.3) and
//! `waitid(P_PIDFD)` (Linux 5.4). They are called through `syscall`, so no particular glibc
//! version is needed.

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::Interrupt;

mod pidfd;
mod spawn;
use pidfd::send_signal;
pub use pidfd::{pidfd_open, Pidfd};
pub use spawn::{spawn, spawn_blocking};

/// Signals whose disposition a spawned child starts with at the default, whatever the
/// parent set. A handler never survives `exec`, but "ignored" does, and:
/// - CPython installs its `KeyboardInterrupt` handler only if `SIGINT` is at the default
///   when it starts, so a parent that ignores `SIGINT` would otherwise give us a zygote
///   that Ctrl-C cannot interrupt;
/// - CPython ignores `SIGPIPE` and `SIGXFSZ`; other programs expect the default (Python's
///   own `subprocess` restores these two);
/// - `SIGTERM` and `SIGQUIT` must be able to stop the child.
///
/// `SIGHUP` is left alone: a parent started under `nohup` wants its children to survive a
/// hang-up too.
pub const DEFAULT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGPIPE,
    libc::SIGXFSZ,
];

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal with this number killed it.
    Signal(i32),
}

impl Exit {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl Exit {
    /// The exit a `waitpid` status describes, or `None` if the process has not ended
    /// (stopped or continued).
    pub fn from_wait_status(status: i32) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(sig) => match signal_name(sig) {
                Some(name) => write!(f, "killed by signal {sig} ({name})"),
                None => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// The conventional name of signal `sig` ("SIGKILL"), if it is one of the classic ones.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// A process started by [`spawn`]: its pid, a pidfd for it, and its exit once reaped.
///
/// Dropping a `Child` closes the pidfd but neither kills nor reaps the process. Whether a
/// process should outlive its handle is the pool's decision (a zygote being shut down may
/// be given time to exit cleanly; a worker may be handed over to another owner), so
/// nothing here makes it behind the pool's back. A child that is never waited for stays a
/// zombie until this process exits.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    exit: Option<Exit>,
}

impl Child {
    /// Takes charge of `pid`, a child of this process started some other way (a `fork`),
    /// which nothing else reaps: until it is reaped its pid cannot be reused, so the pidfd
    /// opened here is certainly for that child.
    pub fn adopt(pid: libc::pid_t) -> Result<Child> {
        Ok(Child {
            pid,
            pidfd: pidfd_open(pid)?,
            exit: None,
        })
    }

    /// The child's process id (for messages and `/proc`; signal it with [`Child::kill`]).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The pidfd, readable once the child has exited (for an epoll set, or to send on).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Waits until the child exits and reaps it (`Ok(Some(exit))`), or until `deadline`
    /// passes (`Ok(None)`) or `interrupt` fires (`Err(Error::Interrupted)`), asking
    /// `interrupt` at least every [`crate::wait::SLICE`]. Once reaped, the same exit is
    /// returned again by every later call.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<Option<Exit>> {
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            if wait_fd(self.pidfd.as_fd(), libc::POLLIN, deadline, interrupt)?.is_none() {
                return Ok(None);
            }
        }
    }

    /// Reaps the child if it has exited, without waiting.
    ///
    /// Fails with `ECHILD` if something else reaped it first (a `wait(-1)` elsewhere in
    /// the process, or `SIGCHLD` set to be ignored, which makes the kernel reap children
    /// itself).
    pub fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `info` is a valid out-pointer; P_PIDFD takes the pidfd as the id. si_pid
        // stays 0 (from the zeroing) when WNOHANG finds nothing to reap.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc != 0 {
            return Err(Error::last_os("waitid"));
        }
        // SAFETY: zero-initialised, then possibly filled in by the kernel: either way a
        // valid siginfo_t, and for SIGCHLD-style results the pid and status fields are set.
        let info = unsafe { info.assume_init() };
        // SAFETY: as above; the union fields read here are the ones waitid fills in.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let exit = match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
            other => {
                return Err(Error::Invalid(format!(
                    "waitid reported an unexpected code {other} for pid {pid}"
                )))
            }
        };
        self.exit = Some(exit);
        Ok(self.exit)
    }

    /// Sends `signal` to the child. Succeeds without effect if it has already exited.
    pub fn kill(&self, signal: libc::c_int) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        send_signal(self.pidfd.as_fd(), signal)
    }
}

impl AsFd for Child {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// Makes the kernel kill this process (SIGKILL) when its parent exits: a worker the
/// zygote just forked calls it. False if the parent is already gone (it is not
/// `expected_parent` any more).
pub fn die_with_parent(expected_parent: i32) -> Result<bool> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(Error::last_os("prctl(PR_SET_PDEATHSIG)"));
    }
    // SAFETY: getppid cannot fail.
    Ok(unsafe { libc::getppid() } == expected_parent)
}

/// Whether process `pid` is stopped by a signal (`SIGSTOP`, `SIGTSTP`): state `T` in
/// `/proc/<pid>/stat`. Not a process a debugger holds (`t`), nor one that is gone.
pub fn is_stopped(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": the name may hold anything, the last ')' ends it.
    stat.rfind(')')
        .and_then(|end| stat.get(end + 2..end + 3))
        .is_some_and(|state| state == "T")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_well() {
        assert_eq!(Exit::Code(3).to_string(), "exited with code 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
        assert_eq!(Exit::Signal(64).to_string(), "killed by signal 64");
        assert!(Exit::Code(0).success());
        assert!(!Exit::Signal(15).success());
    }

    #[test]
    fn a_stopped_child_reads_as_stopped() -> std::io::Result<()> {
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let pid = child.id() as libc::pid_t;
        assert!(!is_stopped(pid));
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(is_stopped(pid));
        child.kill()?;
        child.wait()?;
        assert!(!is_stopped(pid));
        Ok(())
    }
}
