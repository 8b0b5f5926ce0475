//! Pidfds: a descriptor for one process that the kernel never re-targets, to watch and
//! signal it by.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::poll::wait_fd;
use crate::wait::Interrupt;

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
pub(super) fn send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_descriptor_is_not_a_pidfd() {
        let Ok(null) = std::fs::File::open("/dev/null") else {
            return;
        };
        let fd = OwnedFd::from(null);
        assert!(matches!(Pidfd::from_fd(fd), Err(Error::Invalid(_))));
    }
}
