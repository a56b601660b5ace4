//! The column attribute descriptor installed on mapped classes.
//!
//! Values live in the instance `__dict__`. Reads return the stored value, loading unloaded
//! attributes of persistent objects through the session. Writes keep the committed value on the
//! first change of a persistent object and register it as dirty with its session; setting the
//! committed value back removes the change again.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::engine::snapshot::Committed;
use crate::engine::state::Lifecycle;

use super::errors::{busy, DetachedInstanceError, InvalidRequestError};
use super::interned::LOAD_HOOK;
use super::state::{
    instance_dict, materialize_expiry, state_in, track_state, InstanceState, StateGuard,
};

#[pyclass(frozen, subclass, module = "retort._core")]
pub struct ColumnAttribute {
    #[pyo3(get)]
    key: Py<PyString>,
    #[pyo3(get)]
    index: u16,
}

/// Python equality for change detection: identity first, then `==`; a failing `==` counts
/// as different.
pub fn values_equal(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    if a.is(b) {
        return true;
    }
    let same_kind = a.get_type().is(b.get_type())
        || (a.is_instance_of::<pyo3::types::PyInt>() && b.is_instance_of::<pyo3::types::PyInt>());
    if !same_kind {
        // 1 == 1.0 in Python, but a column that goes from 1 to 1.0 changes what is written.
        return false;
    }
    a.eq(b).unwrap_or(false)
}

/// Load the unloaded attributes of a persistent instance through its session.
fn load_through_session(
    instance: &Bound<'_, PyAny>,
    state: &Bound<'_, InstanceState>,
    key: &Bound<'_, PyString>,
) -> PyResult<()> {
    let py = instance.py();
    let session = {
        let inner = state.get().lock()?;
        match inner.effective() {
            Lifecycle::Persistent | Lifecycle::Deleted => inner.session().map(|s| s.owner(py)),
            _ => None,
        }
    };
    match session {
        Some(s) if !s.is_none(py) => {
            s.bind(py)
                .call_method1(LOAD_HOOK.get(py), (instance, state))?;
            Ok(())
        }
        _ => Err(DetachedInstanceError::new_err(format!(
            "attribute '{key}' of {} is not loaded and the object is not bound to a Session, \
             so it cannot be loaded; keep the session open while using the object, use \
             expire_on_commit=False, or add the object to a session (session.add) first",
            instance.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

impl ColumnAttribute {
    fn get_value<'py>(&self, instance: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = instance.py();
        let dict = instance_dict(instance)?;
        let key = self.key.bind(py);
        let state = state_in(&dict)?;
        if let Some(st) = &state {
            let mut inner = st.get().lock()?;
            if inner.is_stale() {
                materialize_expiry(&mut inner, &dict, st.get().mapper.get())?;
            }
        }
        if let Some(v) = dict.get_item(key)? {
            return Ok(v);
        }
        if let Some(st) = &state {
            let (needs_load, expired_insert, pending) = {
                let inner = st.get().lock()?;
                let lifecycle = inner.effective();
                (
                    matches!(
                        lifecycle,
                        Lifecycle::Persistent | Lifecycle::Deleted | Lifecycle::Detached
                    ) && inner.has_key(),
                    inner.expired_insert(),
                    lifecycle == Lifecycle::Pending,
                )
            };
            if needs_load {
                load_through_session(instance, st, key)?;
                if let Some(v) = dict.get_item(key)? {
                    return Ok(v);
                }
            } else if expired_insert && pending {
                // (a session to be rolled back refuses first, as SQLAlchemy's, whose load of
                // the attribute would need SQL)
                let session = st.get().lock()?.session().map(|s| s.owner(py));
                if let Some(s) = session.filter(|s| !s.is_none(py)) {
                    s.bind(py)
                        .call_method0(pyo3::intern!(py, "_check_usable"))?;
                }
                return Err(InvalidRequestError::new_err(format!(
                    "attribute '{key}' of {} was expired before a rollback undid the object's \
                     INSERT; the object is pending again but has no row to load it from; set \
                     it again before reading it or flushing",
                    instance.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            } else if expired_insert {
                return Err(DetachedInstanceError::new_err(format!(
                    "attribute '{key}' of {} was expired before a rollback undid the object's \
                     INSERT and made it transient, so it cannot be loaded; set it again, or \
                     copy the values you need before the rollback",
                    instance.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            }
        }
        Ok(py.None().into_bound(py))
    }

    /// Record in the snapshot of `st` (an object with a key) an assignment of `value`: the
    /// value before is kept on the first change (after a pending expiry applies). Returns
    /// whether the object has a net change.
    fn record(
        &self,
        st: &Bound<'_, InstanceState>,
        inner: &mut StateGuard<'_>,
        dict: &Bound<'_, PyDict>,
        value: &Py<PyAny>,
    ) -> PyResult<bool> {
        let py = st.py();
        if inner.is_stale() {
            materialize_expiry(inner, dict, st.get().mapper.get())?;
        }
        let current = match dict.get_item(self.key.bind(py))? {
            Some(v) => {
                // the snapshot may keep this value: the collector must see the state
                track_state(st);
                Committed::Value(v.unbind())
            }
            None => Committed::Unknown,
        };
        Ok(inner
            .committed
            .record_set(self.index, current, value, |a, b| {
                values_equal(a.bind(py), b.bind(py))
            }))
    }

    pub fn set_value(
        &self,
        instance: &Bound<'_, PyAny>,
        dict: &Bound<'_, PyDict>,
        value: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = instance.py();
        let key = self.key.bind(py);
        let Some(st) = state_in(dict)? else {
            return dict.set_item(key, value);
        };
        let state = st.get();
        let (has_change, session) = {
            let mut inner = state.lock()?;
            if !inner.has_key() {
                // Transient or pending: nothing committed to compare with.
                drop(inner);
                return dict.set_item(key, value);
            }
            if inner.lifecycle() == Lifecycle::Deleted && inner.session().is_some() {
                // the row is gone: the change could never be written
                return Err(InvalidRequestError::new_err(format!(
                    "cannot set {}: {} was deleted by a flush in this transaction, so the \
                     change would never be written; call rollback() to undo the delete, or \
                     make_transient() after the commit to insert it again as a new object",
                    self.key.bind(py),
                    instance.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            }
            let any = self.record(&st, &mut inner, dict, &value.clone().unbind())?;
            let session = match inner.effective() {
                Lifecycle::Persistent => inner.session(),
                _ => None,
            };
            (any, session)
        };
        dict.set_item(key, value)?;
        if let Some(shared) = session {
            let mut uow = shared.uow.try_lock().map_err(|_| busy("session"))?;
            let ptr = instance.as_ptr() as usize;
            if has_change {
                if !uow.deleted.contains_key(&ptr) {
                    uow.dirty
                        .insert_if_absent(ptr, || (instance.clone().unbind(), st.clone().unbind()));
                }
            } else {
                let removed = uow.dirty.remove(&ptr);
                drop(uow);
                drop(removed);
            }
        }
        Ok(())
    }
}

#[pymethods]
impl ColumnAttribute {
    #[new]
    #[pyo3(signature = (key, index, *_args, **_kwargs))]
    fn new(
        key: Bound<'_, PyString>,
        index: u16,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        ColumnAttribute {
            key: key.unbind(),
            index,
        }
    }

    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        instance: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match instance {
            None => Ok(slf.clone().into_any()),
            Some(i) if i.is_none() => Ok(slf.clone().into_any()),
            Some(i) => slf.get().get_value(i),
        }
    }

    /// Set the value of an object whose DELETE a flush ran to None, in memory only (it has no
    /// row to write): a flush clearing the foreign key of a child of a parent it deletes. The
    /// value before is kept as a change all the same, so that a rollback bringing the row
    /// back (its DELETE undone) reloads the object rather than leave it holding None.
    fn clear_unwritten(&self, instance: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = instance.py();
        let dict = instance_dict(instance)?;
        let key = self.key.bind(py);
        let none = py.None();
        if let Some(st) = state_in(&dict)? {
            let mut inner = st.get().lock()?;
            if inner.has_key() {
                self.record(&st, &mut inner, &dict, &none)?;
            }
        }
        dict.set_item(key, none)
    }

    fn __set__(&self, instance: &Bound<'_, PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let dict = instance_dict(instance)?;
        self.set_value(instance, &dict, value)
    }

    fn __delete__(&self, instance: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = instance.py();
        let dict = instance_dict(instance)?;
        self.set_value(instance, &dict, py.None().into_bound(py))
    }
}
