//! Python names the core uses on hot paths, interned once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

pub struct Interned {
    text: &'static str,
    cell: PyOnceLock<Py<PyString>>,
}

impl Interned {
    pub const fn new(text: &'static str) -> Self {
        Interned {
            text,
            cell: PyOnceLock::new(),
        }
    }

    pub fn get<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.cell
            .get_or_init(py, || PyString::intern(py, self.text).unbind())
            .bind(py)
    }
}

/// The key under which an instance's `InstanceState` lives in its `__dict__`.
pub static STATE_KEY: Interned = Interned::new("_retort_state");
/// The class attribute holding a mapped class's `MapperCore`.
pub static MAPPER_CORE: Interned = Interned::new("_retort_core_mapper");
/// The Session method the core calls to load an object's unloaded attributes.
pub static LOAD_HOOK: Interned = Interned::new("_retort_load");
