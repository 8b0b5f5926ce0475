//! shoal's engine: shared memory, wake-ups and the crash-tolerant queue, in plain Rust.
//!
//! Nothing here knows about Python. Payloads are opaque bytes; every blocking call takes
//! an optional deadline and an [`wait::Interrupt`] it asks between short sleeps, which is how
//! the bindings keep Ctrl-C responsive without this crate touching the interpreter.

pub mod arena;
pub mod bell;
pub mod depth;
pub mod error;
pub mod fdpass;
pub mod link;
pub mod lock;
pub mod poll;
pub mod proc;
pub mod queue;
pub mod ring;
pub mod seg;
pub mod supervisor;
pub mod sync;
pub mod wait;

pub use error::{Error, Result};
