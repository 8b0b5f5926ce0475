//! The `shoal._shoal` extension module.
use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _shoal(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
