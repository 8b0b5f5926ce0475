//! `shoal._shoal`: thin bindings over shoal-engine. This file only declares the module;
//! each exposed class has its own file, and `errors.rs` holds the whole error mapping.

use pyo3::prelude::*;

mod blocking;
mod errors;
mod pool;
mod queue;
mod sink;

#[pymodule(gil_used = false)]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<queue::QueueCore>()?;
    m.add_class::<pool::PoolEngine>()?;
    m.add_class::<pool::WorkerLink>()?;
    m.add_class::<pool::ChildProcess>()?;
    m.add_function(wrap_pyfunction!(pool::die_with_parent, m)?)?;
    m.add(
        "DEFAULT_QUEUE_CAPACITY",
        shoal_engine::queue::DEFAULT_CAPACITY,
    )?;
    m.add("MIN_QUEUE_CAPACITY", shoal_engine::queue::MIN_CAPACITY)?;
    m.add(
        "__all__",
        [
            "ChildProcess",
            "DEFAULT_QUEUE_CAPACITY",
            "MIN_QUEUE_CAPACITY",
            "PoolEngine",
            "QueueCore",
            "WorkerLink",
            "die_with_parent",
        ],
    )?;
    Ok(())
}
