//! The engine's one error type.

use std::fmt;
use std::io;

/// Everything that can go wrong in the engine. Each variant says what happened; the Python
/// layer maps each to the matching stdlib exception.
#[derive(Debug)]
pub enum Error {
    /// A system call failed; `what` names the operation.
    Os {
        /// The operation that failed, for example `"memfd_create"`.
        what: &'static str,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// The deadline passed before there was room for the message (maps to `queue.Full`).
    Full,
    /// The deadline passed before a message arrived (maps to `queue.Empty`).
    Empty,
    /// The caller's interrupt check asked to stop (for example Ctrl-C); nothing was changed.
    Interrupted,
    /// An argument is out of range; the text says which and what is allowed.
    Invalid(String),
    /// A segment handed to `open` is not one of ours or was made by another version.
    Corrupt(String),
}

impl Error {
    /// The error of the last failed system call, tagged with the operation's name.
    pub fn last_os(what: &'static str) -> Self {
        Error::Os {
            what,
            source: io::Error::last_os_error(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { what, source } => write!(f, "{what} failed: {source}"),
            Error::Full => f.write_str("the queue is full"),
            Error::Empty => f.write_str("the queue is empty"),
            Error::Interrupted => f.write_str("interrupted"),
            Error::Invalid(text) | Error::Corrupt(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;
