//! `shoal._shoal`: thin bindings over shoal-engine. This file only declares the module;
//! each exposed class has its own file (`arena.rs`, `shm_buffer.rs`, `queue.rs`,
//! `pool.rs`, `worker_link.rs`, `child_process.rs`, `sync.rs`, `rlock.rs`), `blocking.rs`
//! is the one way to wait, and `errors.rs` holds the whole error mapping.

use pyo3::prelude::*;
use shoal_engine::link::Kind;

mod arena;
mod blocking;
mod child_process;
mod errors;
mod fds;
mod pool;
mod queue;
mod rlock;
mod shm_buffer;
mod sink;
mod sync;
mod worker_exited;
mod worker_link;

#[pymodule(gil_used = false)]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<arena::Arena>()?;
    m.add_class::<shm_buffer::ShmBuffer>()?;
    m.add_class::<queue::QueueCore>()?;
    m.add_class::<pool::PoolEngine>()?;
    m.add_class::<worker_exited::WorkerExited>()?;
    m.add_class::<sync::SyncCore>()?;
    m.add_class::<rlock::RLockCore>()?;
    m.add_class::<worker_link::WorkerLink>()?;
    m.add_class::<child_process::ChildProcess>()?;
    m.add_function(wrap_pyfunction!(child_process::die_with_parent, m)?)?;
    m.add_function(wrap_pyfunction!(pool::describe_exit, m)?)?;
    // The wire's numbers, defined once here for both sides.
    m.add("MSG_TASK", Kind::Task as u8)?;
    m.add("MSG_DEFINE", Kind::Define as u8)?;
    m.add("MSG_STOP", Kind::Stop as u8)?;
    m.add("MSG_FORGET", Kind::Forget as u8)?;
    m.add("EVENT_RESULT", pool::EVENT_RESULT)?;
    m.add("EVENT_EXITED", pool::EVENT_EXITED)?;
    m.add("EVENT_STOPPED", pool::EVENT_STOPPED)?;
    m.add("EVENT_FAREWELL", pool::EVENT_FAREWELL)?;
    m.add("EVENT_PROGRESS", pool::EVENT_PROGRESS)?;
    m.add("EVENT_READY", pool::EVENT_READY)?;
    m.add(
        "DEFAULT_QUEUE_CAPACITY",
        shoal_engine::queue::DEFAULT_CAPACITY,
    )?;
    m.add("ARENA_MIN_BLOCK", shoal_engine::arena::MIN_BLOCK)?;
    // What `python -m shoal info` reports of the engine it loaded.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    m.add(
        "ENGINE_BUILD",
        format!("{} {profile}", env!("CARGO_PKG_VERSION")),
    )?;
    m.add(
        "__all__",
        [
            "ARENA_MIN_BLOCK",
            "Arena",
            "ChildProcess",
            "EVENT_EXITED",
            "EVENT_FAREWELL",
            "EVENT_PROGRESS",
            "EVENT_READY",
            "EVENT_RESULT",
            "EVENT_STOPPED",
            "DEFAULT_QUEUE_CAPACITY",
            "ENGINE_BUILD",
            "MSG_DEFINE",
            "MSG_FORGET",
            "MSG_STOP",
            "MSG_TASK",
            "PoolEngine",
            "QueueCore",
            "RLockCore",
            "ShmBuffer",
            "SyncCore",
            "WorkerExited",
            "WorkerLink",
            "describe_exit",
            "die_with_parent",
        ],
    )?;
    Ok(())
}
