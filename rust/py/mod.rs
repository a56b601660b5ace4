//! PyO3 bindings: the native module `retort._core`. The only code that imports PyO3.

use pyo3::prelude::*;

pub mod attr;
pub mod convert;
pub mod copy;
pub mod copybin;
pub mod errors;
pub mod fingerprint;
pub mod flush;
pub mod init;
pub mod interned;
pub mod liveness;
pub mod mapper;
pub mod session;
pub mod state;
pub mod sync;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<mapper::MapperCore>()?;
    m.add_class::<state::InstanceState>()?;
    m.add_class::<attr::ColumnAttribute>()?;
    m.add_class::<session::SessionCore>()?;
    m.add_class::<flush::Batch>()?;
    m.add_class::<flush::FlushPlan>()?;
    m.add_function(wrap_pyfunction!(state::make_detached, m)?)?;
    m.add_function(wrap_pyfunction!(sync::fill_new_collection, m)?)?;
    m.add_function(wrap_pyfunction!(sync::settle_outside, m)?)?;
    m.add_function(wrap_pyfunction!(liveness::adopt_class, m)?)?;
    m.add_function(wrap_pyfunction!(copy::array_literals, m)?)?;
    m.add_function(wrap_pyfunction!(init::mapped_init_descriptor, m)?)?;
    let sentinel = py.import("builtins")?.getattr("object")?.call0()?;
    let _ = session::NEEDS_LOAD.set(py, sentinel.clone().unbind());
    m.add("NEEDS_LOAD", sentinel)?;
    Ok(())
}
