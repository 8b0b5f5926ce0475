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

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::Interrupt;

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

/// Starts `program` (a path; no `PATH` search) with `argv` = `program` followed by `args`.
///
/// The child's environment is the parent's with `env` added (an entry replaces an inherited
/// variable of the same name). Each `(fd, target)` in `keep_fds` appears in the child as
/// descriptor number `target`, not close-on-exec; the caller's descriptors are untouched.
/// Descriptors 0, 1 and 2 are inherited unless a target replaces them; every other
/// descriptor the parent has without close-on-exec is closed in the child, so that nothing
/// (a pipe's write end, say) leaks into a long-lived zygote and keeps it open. The child
/// starts with no signal blocked and the dispositions in [`DEFAULT_SIGNALS`] at default.
///
/// Fails with `Error::Os` carrying the errno of the failed `exec` (for example `ENOENT`)
/// when the program cannot be started.
pub fn spawn(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    keep_fds: &[(BorrowedFd<'_>, RawFd)],
) -> Result<Child> {
    let mut targets = HashSet::new();
    for &(_, target) in keep_fds {
        if target < 0 {
            return Err(Error::Invalid(format!(
                "descriptor target {target} is negative"
            )));
        }
        if !targets.insert(target) {
            return Err(Error::Invalid(format!(
                "descriptor target {target} is given twice"
            )));
        }
    }

    let program_c = c_string(program.as_os_str(), "the program path")?;
    let mut argv_c = vec![program_c.clone()];
    for arg in args {
        argv_c.push(c_string(arg, "an argument")?);
    }
    let mut overridden = HashSet::new();
    let mut added = Vec::with_capacity(env.len());
    for (key, value) in env {
        if key.is_empty() || key.as_bytes().contains(&b'=') {
            return Err(Error::Invalid(format!(
                "environment variable name {key:?} is empty or contains '='"
            )));
        }
        overridden.insert(key.clone());
        added.push(env_entry(key, value)?);
    }
    let mut envp_c = Vec::new();
    for (key, value) in std::env::vars_os() {
        if !overridden.contains(&key) {
            // An inherited entry with a NUL cannot exist; skip rather than fail if it did.
            if let Ok(entry) = env_entry(&key, &value) {
                envp_c.push(entry);
            }
        }
    }
    envp_c.extend(added);
    let argv = null_terminated(&argv_c);
    let envp = null_terminated(&envp_c);

    // Move each kept descriptor above every target first, so that placing one at its
    // target can never overwrite another that is still waiting to be placed. The copies are
    // close-on-exec and vanish from the child at exec; `dup2` clears that flag on the
    // target. (It also sidesteps `dup2(fd, fd)`, which would leave the flag set.)
    let floor = targets
        .iter()
        .copied()
        .max()
        .map_or(3, |t| t.saturating_add(1).max(3));
    let mut staged = Vec::with_capacity(keep_fds.len());
    for &(fd, target) in keep_fds {
        // SAFETY: F_DUPFD_CLOEXEC on a borrowed, open descriptor returns a new one or -1.
        let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
        if raw < 0 {
            return Err(Error::last_os("fcntl(F_DUPFD_CLOEXEC)"));
        }
        // SAFETY: `raw` is a descriptor we just created and own exclusively.
        staged.push((unsafe { OwnedFd::from_raw_fd(raw) }, target));
    }

    let mut actions = FileActions::new()?;
    for fd in inheritable_fds() {
        if fd > 2 && !targets.contains(&fd) {
            match actions.close(fd) {
                // EBADF: above a since-lowered RLIMIT_NOFILE, which glibc refuses to
                // close; leaking that one is better than not starting at all.
                Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::EBADF) => {}
                other => other?,
            }
        }
    }
    for (fd, target) in &staged {
        actions.dup2(fd.as_raw_fd(), *target)?;
    }
    let attr = SpawnAttr::new()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `program_c`, `argv` and `envp` (NULL
    // terminated arrays of pointers into `argv_c` and `envp_c`, alive until the end of this
    // function), and the initialised file actions and attributes. glibc's posix_spawn
    // starts the child with clone(CLONE_VM | CLONE_VFORK) and runs only async-signal-safe
    // code in it, so calling it from a threaded process is sound.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program_c.as_ptr(),
            &actions.raw,
            &attr.raw,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    drop(staged);
    if rc != 0 {
        return Err(Error::Os {
            what: "posix_spawn",
            source: io::Error::from_raw_os_error(rc),
        });
    }
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(Child {
            pid,
            pidfd,
            exit: None,
        }),
        Err(err) => {
            // ESRCH: the child is already gone and reaped, which only happens when something
            // else reaps our children (SIGCHLD ignored, or a wait(-1) on another thread);
            // its pid may already name another process, so leave it alone.
            let gone = matches!(&err, Error::Os { source, .. }
                if source.raw_os_error() == Some(libc::ESRCH));
            if !gone {
                // Without a pidfd we cannot hand the child out safely (for example
                // pidfd_open is missing, ENOSYS, or we are out of descriptors, EMFILE);
                // do not leave it running unwatched.
                // SAFETY: plain syscalls on our own child, which exists unreaped unless
                // something else reaps our children, the case excluded above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            Err(err)
        }
    }
}

/// Opens a pidfd for process `pid`, which need not be our child. Close-on-exec.
///
/// A pid only names a process while that process (or its zombie) exists; open the pidfd
/// while the process is known to be alive or unreaped, or better, receive a pidfd from the
/// process's parent, which can open it with no such race.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd> {
    if pid <= 0 {
        return Err(Error::Invalid(format!("{pid} is not a process id")));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(Error::last_os("pidfd_open"));
    }
    let raw = RawFd::try_from(raw).map_err(|_| Error::Invalid("pidfd out of range".into()))?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

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

/// A pidfd for any process, child or not: it can be watched and signalled, not reaped.
///
/// Workers are children of the zygote, not of the pool's process, so the pool holds them
/// this way; their exit status is the zygote's to collect.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: Option<libc::pid_t>,
}

impl Pidfd {
    /// Opens a pidfd for process `pid` (see [`pidfd_open`] about the race this implies).
    pub fn open(pid: libc::pid_t) -> Result<Self> {
        Ok(Pidfd {
            fd: pidfd_open(pid)?,
            pid: Some(pid),
        })
    }

    /// Takes a pidfd received from elsewhere (for example from the zygote over a socket),
    /// checking that it is one.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        // Signal 0 checks the descriptor without sending anything: a pidfd gives success,
        // ESRCH (the process is gone) or EPERM (not ours to signal); anything else is EBADF.
        match send_signal(fd.as_fd(), 0) {
            Ok(()) => {}
            Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {}
            Err(_) => return Err(Error::Invalid("the descriptor is not a pidfd".into())),
        }
        let pid = pid_from_fdinfo(fd.as_raw_fd());
        Ok(Pidfd { fd, pid })
    }

    /// The process id, when known: for a received pidfd the kernel reports it only while the
    /// process exists and is visible in our pid namespace.
    pub fn pid(&self) -> Option<libc::pid_t> {
        self.pid
    }

    /// True until the process has exited (a zombie counts as exited).
    pub fn is_alive(&self) -> Result<bool> {
        let ready = wait_fd(
            self.fd.as_fd(),
            libc::POLLIN,
            Some(Instant::now()),
            &mut crate::wait::NoInterrupt,
        )?;
        Ok(ready.is_none())
    }

    /// Waits until the process has exited (`Ok(true)`), `deadline` passes (`Ok(false)`) or
    /// `interrupt` fires (`Err(Error::Interrupted)`).
    pub fn wait_gone(
        &self,
        deadline: Option<Instant>,
        interrupt: &mut dyn Interrupt,
    ) -> Result<bool> {
        Ok(wait_fd(self.fd.as_fd(), libc::POLLIN, deadline, interrupt)?.is_some())
    }

    /// Sends `signal` to the process. Succeeds without effect if it has already exited.
    pub fn kill(&self, signal: libc::c_int) -> Result<()> {
        send_signal(self.fd.as_fd(), signal)
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Pidfd> for OwnedFd {
    fn from(p: Pidfd) -> OwnedFd {
        p.fd
    }
}

/// `pidfd_send_signal`, with "the process is already gone" counted as success.
fn send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> Result<()> {
    // SAFETY: a borrowed, open descriptor; a NULL siginfo asks for the same information a
    // plain kill() would send; no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(Error::Os {
        what: "pidfd_send_signal",
        source: err,
    })
}

/// The `Pid:` line of a pidfd's fdinfo: the pid, or None when the kernel reports the process
/// gone (-1), outside our namespace (0), or /proc is not there.
fn pid_from_fdinfo(fd: RawFd) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Pid:"))?;
    let pid: libc::pid_t = line.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Descriptors of this process without close-on-exec, as seen in `/proc/self/fd`.
///
/// Without /proc the list is empty and nothing extra is closed in the child: the loss is
/// only the leak protection, which descriptors opened the usual way (close-on-exec, as Rust
/// and Python both do by default) do not need.
fn inheritable_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads flags; on a number that is no longer open (the
            // directory's own descriptor, or one another thread closed) it fails harmlessly.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

fn c_string(s: &OsStr, what: &str) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
}

fn env_entry(key: &OsStr, value: &OsStr) -> Result<CString> {
    let mut bytes = Vec::with_capacity(key.len() + value.len() + 1);
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes)
        .map_err(|_| Error::Invalid(format!("environment variable {key:?} contains a NUL byte")))
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions {
    raw: libc::posix_spawn_file_actions_t,
}

impl FileActions {
    fn new() -> Result<Self> {
        // SAFETY: plain data, initialised by posix_spawn_file_actions_init before any use.
        let mut raw: libc::posix_spawn_file_actions_t = unsafe { mem::zeroed() };
        // SAFETY: a valid pointer to the object to initialise.
        let rc = unsafe { libc::posix_spawn_file_actions_init(&mut raw) };
        check(rc, "posix_spawn_file_actions_init")?;
        Ok(FileActions { raw })
    }

    fn close(&mut self, fd: RawFd) -> Result<()> {
        // SAFETY: `raw` was initialised in `new`.
        let rc = unsafe { libc::posix_spawn_file_actions_addclose(&mut self.raw, fd) };
        check(rc, "posix_spawn_file_actions_addclose")
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> Result<()> {
        // SAFETY: `raw` was initialised in `new`.
        let rc = unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.raw, fd, target) };
        check(rc, "posix_spawn_file_actions_adddup2")
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `raw` was initialised in `new` and is destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.raw) };
    }
}

/// `posix_spawnattr_t` with an empty signal mask and [`DEFAULT_SIGNALS`] reset, destroyed
/// on drop.
struct SpawnAttr {
    raw: libc::posix_spawnattr_t,
}

impl SpawnAttr {
    fn new() -> Result<Self> {
        // SAFETY: plain data, initialised by posix_spawnattr_init before any use.
        let mut raw: libc::posix_spawnattr_t = unsafe { mem::zeroed() };
        // SAFETY: a valid pointer to the object to initialise.
        let rc = unsafe { libc::posix_spawnattr_init(&mut raw) };
        check(rc, "posix_spawnattr_init")?;
        let mut attr = SpawnAttr { raw };
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut empty: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut defaults: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: valid pointers to sigsets and to the initialised attributes. The child
        // would otherwise inherit the spawning thread's mask, and a thread that happens to
        // block SIGTERM (as runtimes often do) would pass that on to the whole pool.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut defaults);
            for sig in DEFAULT_SIGNALS {
                libc::sigaddset(&mut defaults, sig);
            }
            check(
                libc::posix_spawnattr_setsigmask(&mut attr.raw, &empty),
                "posix_spawnattr_setsigmask",
            )?;
            check(
                libc::posix_spawnattr_setsigdefault(&mut attr.raw, &defaults),
                "posix_spawnattr_setsigdefault",
            )?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(
                libc::posix_spawnattr_setflags(&mut attr.raw, flags as libc::c_short),
                "posix_spawnattr_setflags",
            )?;
        }
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: `raw` was initialised in `new` and is destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.raw) };
    }
}

/// posix_spawn* functions return an error number instead of setting errno.
fn check(rc: libc::c_int, what: &'static str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Os {
            what,
            source: io::Error::from_raw_os_error(rc),
        })
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
    fn bad_arguments_are_refused_before_anything_starts() {
        let sh = Path::new("/bin/sh");
        let null = std::fs::File::open("/dev/null");
        let Ok(null) = null else { return };
        let twice = [(null.as_fd(), 5), (null.as_fd(), 5)];
        assert!(matches!(
            spawn(sh, &[], &[], &twice),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            spawn(sh, &[], &[], &[(null.as_fd(), -1)]),
            Err(Error::Invalid(_))
        ));
        let bad_env = [("A=B".into(), "c".into())];
        assert!(matches!(
            spawn(sh, &[], &bad_env, &[]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(pidfd_open(0), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_missing_program_reports_enoent() {
        let r = spawn(Path::new("/nonexistent/shoal-test"), &[], &[], &[]);
        match r {
            Err(Error::Os { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ENOENT)),
            other => panic!("expected ENOENT, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_descriptor_is_not_a_pidfd() {
        let Ok(null) = std::fs::File::open("/dev/null") else {
            return;
        };
        let fd = OwnedFd::from(null);
        assert!(matches!(Pidfd::from_fd(fd), Err(Error::Invalid(_))));
    }
}
