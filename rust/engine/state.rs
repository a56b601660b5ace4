//! Object lifecycle states and the transitions the unit of work allows.

use crate::engine::error::{CoreError, CoreResult};

/// Where an object stands relative to a session, as SQLAlchemy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Not in a session and never flushed.
    Transient,
    /// Added to a session, not yet flushed.
    Pending,
    /// Has a row and an identity in a session.
    Persistent,
    /// Its DELETE was flushed; the transaction has not ended yet.
    Deleted,
    /// Has an identity but no session.
    Detached,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Transient => "transient",
            Lifecycle::Pending => "pending",
            Lifecycle::Persistent => "persistent",
            Lifecycle::Deleted => "deleted",
            Lifecycle::Detached => "detached",
        }
    }

    /// The state an object is in once its session is gone (closed or dropped).
    pub fn without_session(self) -> Lifecycle {
        match self {
            Lifecycle::Transient | Lifecycle::Pending => Lifecycle::Transient,
            Lifecycle::Persistent | Lifecycle::Deleted | Lifecycle::Detached => Lifecycle::Detached,
        }
    }

    /// Check that `session.delete()` may be called on an object in this state.
    pub fn check_delete(self, what: &str) -> CoreResult<()> {
        match self {
            Lifecycle::Persistent => Ok(()),
            Lifecycle::Pending => Err(CoreError::InvalidRequest(format!(
                "{what} is pending (added but not flushed), so there is no row to delete; \
                 use session.expunge() to take it out of the session instead"
            ))),
            Lifecycle::Transient => Err(CoreError::InvalidRequest(format!(
                "{what} is not persisted: it was never added to a session, so there is no row \
                 to delete"
            ))),
            Lifecycle::Deleted => Err(CoreError::InvalidRequest(format!(
                "{what} has already been deleted in this transaction"
            ))),
            Lifecycle::Detached => Err(CoreError::InvalidRequest(format!(
                "{what} is detached; add it to this session first (session.add) and then \
                 delete it"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_persistent_objects_can_be_deleted() {
        for s in [
            Lifecycle::Transient,
            Lifecycle::Pending,
            Lifecycle::Deleted,
            Lifecycle::Detached,
        ] {
            assert!(s.check_delete("obj").is_err(), "{s:?}");
        }
        assert!(Lifecycle::Persistent.check_delete("obj").is_ok());
    }

    #[test]
    fn losing_the_session() {
        assert_eq!(Lifecycle::Pending.without_session(), Lifecycle::Transient);
        assert_eq!(Lifecycle::Persistent.without_session(), Lifecycle::Detached);
        assert_eq!(Lifecycle::Deleted.without_session(), Lifecycle::Detached);
    }
}
