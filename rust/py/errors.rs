//! Errors cross the boundary here: engine errors become `retort.exc` exceptions.
//!
//! The exception classes are defined in Python (`retort/exc.py`) and imported once.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::engine::error::CoreError;

pyo3::import_exception!(retort.exc, InvalidRequestError);
pyo3::import_exception!(retort.exc, UnmappedInstanceError);
pyo3::import_exception!(retort.exc, UnmappedClassError);
pyo3::import_exception!(retort.exc, DetachedInstanceError);
pyo3::import_exception!(retort.exc, ObjectDeletedError);
pyo3::import_exception!(retort.exc, StaleDataError);
pyo3::import_exception!(retort.exc, FlushError);
pyo3::import_exception!(retort.exc, CircularDependencyError);
pyo3::import_exception!(retort.exc, ConcurrentUseError);
pyo3::import_exception!(retort.exc, ArgumentError);

impl From<CoreError> for PyErr {
    #[cold]
    fn from(err: CoreError) -> PyErr {
        match err {
            CoreError::InvalidRequest(m) | CoreError::IdentityConflict(m) => {
                InvalidRequestError::new_err(m)
            }
            CoreError::ConcurrentUse(m) => ConcurrentUseError::new_err(m),
            CoreError::Cycle(m) => CircularDependencyError::new_err(m),
            CoreError::StaleData(m) => StaleDataError::new_err(m),
            CoreError::Argument(m) => PyTypeError::new_err(m),
            CoreError::Flush(m) => FlushError::new_err(m),
        }
    }
}

#[cold]
pub fn busy(what: &str) -> PyErr {
    ConcurrentUseError::new_err(format!(
        "this {what} is already in use: a Session and its objects may be used by one thread at \
         a time, and not from inside a callback the session is running. Give each thread its \
         own Session (for example with sessionmaker)."
    ))
}
