//! Starting a program with `posix_spawn`: its arguments, environment and descriptors.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{pidfd_open, Child, DEFAULT_SIGNALS};
use crate::error::{Error, Result};

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
    spawn_blocking(program, args, env, keep_fds, &[])
}

/// As [`spawn`], but the child starts with the signals of `blocked` blocked: one sent
/// while it starts stays pending until the child has chosen what to do with it (a zygote
/// that ignores Ctrl-C, and unblocks it then, is never ended by one that came first).
pub fn spawn_blocking(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    keep_fds: &[(BorrowedFd<'_>, RawFd)],
    blocked: &[libc::c_int],
) -> Result<Child> {
    let targets = checked_targets(keep_fds)?;
    let program_c = c_string(program.as_os_str(), "the program path")?;
    let mut argv_c = vec![program_c.clone()];
    for arg in args {
        argv_c.push(c_string(arg, "an argument")?);
    }
    let envp_c = environment(env)?;
    let argv = null_terminated(&argv_c);
    let envp = null_terminated(&envp_c);
    let staged = staged_copies(keep_fds, &targets)?;
    let actions = file_actions(&targets, &staged)?;
    let attr = SpawnAttr::new(blocked)?;

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
    check(rc, "posix_spawn")?;
    watched(pid)
}

/// The set of `keep_fds`' targets, refusing a negative or repeated one.
fn checked_targets(keep_fds: &[(BorrowedFd<'_>, RawFd)]) -> Result<HashSet<RawFd>> {
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
    Ok(targets)
}

/// The child's environment: the parent's, with `env`'s entries replacing or adding
/// variables.
fn environment(env: &[(OsString, OsString)]) -> Result<Vec<CString>> {
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
    let inherited = std::env::vars_os()
        .filter(|(key, _)| !overridden.contains(key))
        // An inherited entry with a NUL cannot exist; skip rather than fail if it did.
        .filter_map(|(key, value)| env_entry(&key, &value).ok());
    Ok(inherited.chain(added).collect())
}

/// A close-on-exec copy of each kept descriptor, numbered above every target, with its
/// target: placing one at its target can then never overwrite another that is still
/// waiting to be placed. The copies vanish from the child at exec; `dup2` clears the flag
/// on the target. (It also sidesteps `dup2(fd, fd)`, which would leave the flag set.)
fn staged_copies(
    keep_fds: &[(BorrowedFd<'_>, RawFd)],
    targets: &HashSet<RawFd>,
) -> Result<Vec<(OwnedFd, RawFd)>> {
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
    Ok(staged)
}

/// What the child does before exec: close every inheritable descriptor above 2 that is
/// not a target, then place each staged copy at its target.
fn file_actions(targets: &HashSet<RawFd>, staged: &[(OwnedFd, RawFd)]) -> Result<FileActions> {
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
    for (fd, target) in staged {
        actions.dup2(fd.as_raw_fd(), *target)?;
    }
    Ok(actions)
}

/// The child `pid` just started, held by a pidfd; without one it is killed and reaped.
fn watched(pid: libc::pid_t) -> Result<Child> {
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

/// `posix_spawnattr_t` with a signal mask of the given signals (none, usually) and
/// [`DEFAULT_SIGNALS`] reset, destroyed on drop.
struct SpawnAttr {
    raw: libc::posix_spawnattr_t,
}

impl SpawnAttr {
    fn new(blocked: &[libc::c_int]) -> Result<Self> {
        // SAFETY: plain data, initialised by posix_spawnattr_init before any use.
        let mut raw: libc::posix_spawnattr_t = unsafe { mem::zeroed() };
        // SAFETY: a valid pointer to the object to initialise.
        let rc = unsafe { libc::posix_spawnattr_init(&mut raw) };
        check(rc, "posix_spawnattr_init")?;
        let mut attr = SpawnAttr { raw };
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut mask: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut defaults: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: valid pointers to sigsets and to the initialised attributes. The child
        // would otherwise inherit the spawning thread's mask, and a thread that happens to
        // block SIGTERM (as runtimes often do) would pass that on to the whole pool.
        unsafe {
            libc::sigemptyset(&mut mask);
            for &sig in blocked {
                libc::sigaddset(&mut mask, sig);
            }
            libc::sigemptyset(&mut defaults);
            for sig in DEFAULT_SIGNALS {
                libc::sigaddset(&mut defaults, sig);
            }
            check(
                libc::posix_spawnattr_setsigmask(&mut attr.raw, &mask),
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

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
}
