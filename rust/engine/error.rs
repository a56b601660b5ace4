//! The engine's error type. The binding maps each variant to a `retort.exc` class in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The call does not fit the object's lifecycle state (maps to InvalidRequestError).
    InvalidRequest(String),
    /// Another instance already holds this identity in the session.
    IdentityConflict(String),
    /// The session was entered again while busy: another thread, or a callback.
    ConcurrentUse(String),
    /// Rows depend on each other in a cycle (maps to CircularDependencyError).
    Cycle(String),
    /// A statement matched a different number of rows than expected.
    StaleData(String),
    /// Something the caller passed has the wrong shape (maps to ArgumentError / TypeError).
    Argument(String),
    /// A flush could not be planned as things stand.
    Flush(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidRequest(m)
            | CoreError::IdentityConflict(m)
            | CoreError::ConcurrentUse(m)
            | CoreError::Cycle(m)
            | CoreError::StaleData(m)
            | CoreError::Argument(m)
            | CoreError::Flush(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CoreError {}

pub type CoreResult<T> = Result<T, CoreError>;
