//! The one way to block: run an engine call with the GIL released, and let it ask between
//! its short sleeps whether a signal handler raised (Ctrl-C), so every wait stays
//! interruptible and no blocked call holds the GIL.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use shoal_engine::wait::Interrupt;
use shoal_engine::Error;

use crate::errors::to_py;

/// Checks for pending signals under the GIL and keeps the exception they raised.
struct SignalCheck {
    raised: Option<PyErr>,
}

impl Interrupt for SignalCheck {
    fn interrupted(&mut self) -> bool {
        if self.raised.is_some() {
            return true;
        }
        self.raised = Python::attach(|py| py.check_signals().err());
        self.raised.is_some()
    }
}

/// Runs `call` detached from the interpreter. If the engine gave up because a signal
/// handler raised, that exception is what the caller sees.
pub fn blocking<T, F>(py: Python<'_>, call: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&mut dyn Interrupt) -> shoal_engine::Result<T> + Send,
{
    let (result, raised) = py.detach(|| {
        let mut check = SignalCheck { raised: None };
        let result = call(&mut check);
        (result, check.raised)
    });
    match (result, raised) {
        (Err(Error::Interrupted), Some(err)) => Err(err),
        (result, _) => to_py(result),
    }
}

/// `None`: wait forever; otherwise a deadline `timeout` seconds from now (negative = now).
pub fn deadline(timeout: Option<f64>) -> Option<Instant> {
    let t = timeout?;
    let secs = if t.is_nan() { 0.0 } else { t.max(0.0) };
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
}
