//! Per-object state: lifecycle, identity, committed snapshot and the link to a session.
//!
//! An `InstanceState` lives in its instance's `__dict__`. It links to its session weakly (a
//! Rust `Weak`), so closing or dropping a session detaches every object at once without
//! visiting them. Expiry after commit is lazy: the session bumps a generation counter and
//! each state notices on its next use that it is older than its session's generation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use pyo3::exceptions::PyAttributeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::engine::key::IdentityKey;
use crate::engine::snapshot::{Committed, Snapshot};
use crate::engine::state::Lifecycle;

use super::errors::{busy, UnmappedInstanceError};
use super::interned::MAPPER_CORE;
pub use super::interned::STATE_KEY;
use super::mapper::MapperCore;
use super::session::Shared;

pub struct StateInner {
    pub lifecycle: Lifecycle,
    pub session: Option<Weak<Shared>>,
    pub gen_ref: Option<Arc<AtomicU64>>,
    pub gen: u64,
    pub key: Option<IdentityKey>,
    pub committed: Snapshot<Py<PyAny>>,
    pub was_deleted: bool,
    /// Expired as a whole (commit, rollback, expire_all, expire(obj)) and not loaded or
    /// flushed since, even if some attributes were set meanwhile: `get()` then refreshes it.
    pub wholly_expired: bool,
    /// Made transient by a rollback of its INSERT: a column missing from its `__dict__` then
    /// was expired (an INSERT leaves every column set), and reading it raises
    /// DetachedInstanceError, as SQLAlchemy's expired attributes do, instead of reading None as
    /// a new object's unset column. Cleared when the object joins a session again.
    pub expired_insert: bool,
    /// Fingerprints of mutable column values as loaded or last flushed.
    /// (A thin vector: one word and no allocation for the many objects without such columns.)
    pub fingerprints: thin_vec::ThinVec<(u16, u64)>,
}

impl StateInner {
    pub fn session(&self) -> Option<Arc<Shared>> {
        self.session.as_ref().and_then(Weak::upgrade)
    }

    /// The lifecycle as a user sees it: a state whose session is gone is transient or detached.
    pub fn effective(&self) -> Lifecycle {
        match self.lifecycle {
            Lifecycle::Pending | Lifecycle::Persistent | Lifecycle::Deleted => {
                if self.session().is_some() {
                    self.lifecycle
                } else {
                    self.lifecycle.without_session()
                }
            }
            other => other,
        }
    }

    pub fn in_session(&self, shared: &Arc<Shared>) -> bool {
        self.session
            .as_ref()
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)))
    }

    /// Whether a commit, rollback or expire_all of its session expired this object since it
    /// was loaded. Only objects with an identity expire: pending objects keep their values.
    pub fn is_stale(&self) -> bool {
        self.key.is_some()
            && self
                .gen_ref
                .as_ref()
                .is_some_and(|g| self.gen < g.load(Ordering::Acquire))
    }

    /// Stale, or expired as a whole since it was last loaded or flushed.
    pub fn expired_whole(&self) -> bool {
        self.key.is_some() && (self.wholly_expired || self.is_stale())
    }

    pub fn attach(&mut self, shared: &Arc<Shared>, lifecycle: Lifecycle) {
        self.expired_insert = false;
        self.session = Some(Arc::downgrade(shared));
        self.gen_ref = Some(shared.gen.clone());
        self.gen = shared.gen.load(Ordering::Acquire);
        self.lifecycle = lifecycle;
    }

    /// Leave the session. The object stops following the session's expiry (apply a pending
    /// expiry first with `materialize_expiry` where the values must not survive).
    pub fn detach(&mut self) {
        self.lifecycle = self.lifecycle.without_session();
        if self.lifecycle == Lifecycle::Transient {
            self.key = None;
        }
        self.session = None;
        self.gen_ref = None;
    }
}

#[pyclass(frozen, module = "retort._core")]
pub struct InstanceState {
    pub mapper: Py<MapperCore>,
    pub inner: Mutex<StateInner>,
    /// The address of the object this state vouches for to identity maps, 0 once it is gone
    /// (see `liveness`).
    pub owner: AtomicUsize,
}

impl Drop for InstanceState {
    fn drop(&mut self) {
        super::liveness::forget(self);
    }
}

impl InstanceState {
    pub fn lock(&self) -> PyResult<MutexGuard<'_, StateInner>> {
        self.inner.try_lock().map_err(|_| busy("object"))
    }

    pub fn new_transient(mapper: Py<MapperCore>) -> Self {
        InstanceState {
            mapper,
            inner: Mutex::new(StateInner {
                lifecycle: Lifecycle::Transient,
                session: None,
                gen_ref: None,
                gen: 0,
                key: None,
                committed: Snapshot::default(),
                was_deleted: false,
                wholly_expired: false,
                expired_insert: false,
                fingerprints: thin_vec::ThinVec::new(),
            }),
            owner: AtomicUsize::new(0),
        }
    }
}

/// Apply a pending lazy expiry: drop loaded column values (the primary key stays, it is the
/// identity) so the next access reloads them.
pub fn materialize_expiry(
    inner: &mut StateInner,
    dict: &Bound<'_, PyDict>,
    mapper: &MapperCore,
) -> PyResult<()> {
    let Some(g) = &inner.gen_ref else {
        return Ok(());
    };
    let current = g.load(Ordering::Acquire);
    if inner.gen >= current {
        return Ok(());
    }
    let py = dict.py();
    for (i, k) in mapper.keys.iter().enumerate() {
        if mapper.pk.contains(&(i as u16)) {
            continue;
        }
        let k = k.bind(py);
        if dict.contains(k)? {
            dict.del_item(k)?;
        }
    }
    // Relationship values expire with the columns, and so do changes waiting for a collection
    // that was not loaded (see mapping._pending).
    for name in mapper.extra_init.bind(py).try_iter()? {
        let name = name?;
        if dict.contains(&name)? {
            dict.del_item(&name)?;
        }
    }
    let pending = pyo3::intern!(py, "_retort_pending");
    if dict.contains(pending)? {
        dict.del_item(pending)?;
    }
    inner.gen = current;
    inner.wholly_expired = true;
    drop(inner.committed.clear());
    Ok(())
}

/// The `__dict__` of an instance.
pub fn instance_dict<'py>(instance: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let py = instance.py();
    // Safety: PyObject_GenericGetDict returns a new reference to the instance dict (creating
    // it if needed) or NULL with an exception set; from_owned_ptr_or_err handles both.
    let dict = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyObject_GenericGetDict(instance.as_ptr(), std::ptr::null_mut()),
        )
    }
    .map_err(|_| unmapped(instance))?;
    dict.cast_into::<PyDict>()
        .map_err(|_| PyAttributeError::new_err("retort: instance __dict__ is not a dict"))
}

/// The state of an instance, if it has one.
pub fn state_in<'py>(dict: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, InstanceState>>> {
    match dict.get_item(STATE_KEY.get(dict.py()))? {
        Some(s) => Ok(Some(s.cast_into::<InstanceState>().map_err(|_| {
            PyAttributeError::new_err("retort: _retort_state of an instance was replaced")
        })?)),
        None => Ok(None),
    }
}

/// The mapper of an instance's class, or UnmappedInstanceError.
pub fn mapper_of<'py>(instance: &Bound<'py, PyAny>) -> PyResult<Bound<'py, MapperCore>> {
    let py = instance.py();
    let ty = instance.get_type();
    match ty.getattr(MAPPER_CORE.get(py)) {
        Ok(m) => m.cast_into::<MapperCore>().map_err(|_| unmapped(instance)),
        Err(_) => Err(unmapped(instance)),
    }
}

#[cold]
fn unmapped(instance: &Bound<'_, PyAny>) -> PyErr {
    let name = instance
        .get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    UnmappedInstanceError::new_err(format!(
        "Class '{name}' is not mapped: only instances of classes declared on a DeclarativeBase \
         subclass (with __tablename__) can be added to a Session"
    ))
}

/// Take a GC-typed object out of the cyclic garbage collector's lists: for objects that can be
/// in no reference cycle while they stay as they are. Untracking twice is a no-op, and CPython's
/// deallocation untracks safely either way.
pub fn untrack(obj: &Bound<'_, PyAny>) {
    let ptr = obj.as_ptr();
    // Safety: `ptr` is a live object; PyObject_GC_IsTracked is false for non-GC types.
    unsafe {
        if pyo3::ffi::PyObject_GC_IsTracked(ptr) != 0 {
            pyo3::ffi::PyObject_GC_UnTrack(ptr.cast());
        }
    }
}

/// Take a state out of the collector's lists. A state refers to Python objects only through
/// its snapshot (besides its mapper, which lives as long as its class), so while the snapshot
/// is empty it can be in no reference cycle; most persistent objects never change, and loading
/// N of them then adds N tracked objects (the instances) instead of 2N, which is most of what
/// the collector costs a large load. `track_state` puts it back before a snapshot entry that
/// holds a value is recorded.
pub fn untrack_state(state: &Bound<'_, InstanceState>) {
    untrack(state.as_any());
}

/// Put a state back under the cyclic garbage collector (before its snapshot holds a value).
pub fn track_state(state: &Bound<'_, InstanceState>) {
    let ptr = state.as_ptr();
    // Safety: as above; an object must not be tracked twice, hence the check.
    unsafe {
        if pyo3::ffi::PyObject_GC_IsTracked(ptr) == 0 {
            pyo3::ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

/// The state of an instance, created (transient) if it has none yet.
pub fn ensure_state<'py>(
    instance: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, InstanceState>)> {
    ensure_state_of(instance, None)
}

/// `ensure_state`, given the instance's mapper when the caller has it.
pub fn ensure_state_of<'py>(
    instance: &Bound<'py, PyAny>,
    mapper: Option<&Bound<'py, MapperCore>>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, InstanceState>)> {
    let dict = instance_dict(instance)?;
    if let Some(s) = state_in(&dict)? {
        return Ok((dict, s));
    }
    let mapper = match mapper {
        Some(m) => m.clone(),
        None => mapper_of(instance)?,
    };
    let state = Bound::new(instance.py(), InstanceState::new_transient(mapper.unbind()))?;
    untrack_state(&state);
    dict.set_item(STATE_KEY.get(instance.py()), &state)?;
    Ok((dict, state))
}

/// Give a transient object with a complete primary key an identity, as if it had been
/// loaded and its session closed (`make_transient_to_detached`).
#[pyfunction]
pub fn make_detached(instance: &Bound<'_, PyAny>) -> PyResult<()> {
    let (dict, st) = ensure_state(instance)?;
    let m = st.get().mapper.get();
    let mut inner = st.get().lock()?;
    if inner.effective() != Lifecycle::Transient {
        return Err(super::errors::InvalidRequestError::new_err(format!(
            "make_transient_to_detached() takes a transient object; {} is {}",
            instance.repr().map(|r| r.to_string()).unwrap_or_default(),
            inner.effective().name()
        )));
    }
    let py = instance.py();
    let mut values = Vec::with_capacity(m.pk.len());
    for &c in &m.pk {
        match dict.get_item(m.keys[c as usize].bind(py))? {
            Some(v) if !v.is_none() => values.push(v),
            _ => {
                return Err(super::errors::InvalidRequestError::new_err(format!(
                    "make_transient_to_detached() needs the full primary key; {}.{} is not set",
                    m.name,
                    m.keys[c as usize].bind(py)
                )))
            }
        }
    }
    inner.key = Some(super::convert::identity_key(m.id, values.into_iter())?);
    inner.lifecycle = Lifecycle::Detached;
    inner.session = None;
    inner.gen_ref = None;
    drop(inner.committed.clear());
    Ok(())
}

#[pymethods]
impl InstanceState {
    /// "transient", "pending", "persistent", "deleted" or "detached".
    #[getter]
    fn lifecycle(&self) -> PyResult<&'static str> {
        Ok(self.lock()?.effective().name())
    }

    #[getter]
    fn was_deleted(&self) -> PyResult<bool> {
        Ok(self.lock()?.was_deleted)
    }

    #[getter]
    fn has_identity(&self) -> PyResult<bool> {
        Ok(self.lock()?.key.is_some())
    }

    /// Whether a commit or rollback expired this object since it was last loaded.
    #[getter]
    fn stale(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_stale())
    }

    /// Whether the object was expired as a whole (not some attributes) and not loaded or
    /// flushed since, even if attributes were set meanwhile.
    #[getter]
    fn expired(&self) -> PyResult<bool> {
        Ok(self.lock()?.expired_whole())
    }

    /// The Python Session this object belongs to, or None.
    #[getter]
    fn session(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let inner = self.lock()?;
        Ok(match inner.session() {
            Some(s) if inner.effective() != Lifecycle::Detached => s.owner(py),
            _ => py.None(),
        })
    }

    #[getter]
    fn mapper(&self, py: Python<'_>) -> Py<MapperCore> {
        self.mapper.clone_ref(py)
    }

    /// Indexes of attributes with a net change.
    #[getter]
    fn changed(&self) -> PyResult<Vec<u16>> {
        Ok(self.lock()?.committed.changed_attrs().to_vec())
    }

    /// (True, value) for an attribute's value before its first change, (False, None) when it
    /// was not loaded, or None when the attribute has no net change.
    fn committed_value<'py>(
        &self,
        py: Python<'py>,
        index: u16,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let inner = self.lock()?;
        Ok(match inner.committed.get(index) {
            None => None,
            Some(Committed::Value(v)) => Some(PyTuple::new(
                py,
                [
                    true.into_pyobject(py)?.to_owned().into_any(),
                    v.bind(py).clone(),
                ],
            )?),
            Some(Committed::Unknown) => Some(PyTuple::new(
                py,
                [
                    false.into_pyobject(py)?.to_owned().into_any(),
                    py.None().into_bound(py),
                ],
            )?),
        })
    }

    /// Apply a pending lazy expiry (after commit or rollback) to `instance`'s values now.
    fn apply_expiry(&self, instance: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut inner = self.lock()?;
        if inner.is_stale() {
            let dict = instance_dict(instance)?;
            materialize_expiry(&mut inner, &dict, self.mapper.get())?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.mapper)?;
        if let Ok(inner) = self.inner.try_lock() {
            for (_, c) in inner.committed.iter() {
                if let Committed::Value(v) = c {
                    visit.call(v)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = match self.inner.try_lock() {
            Ok(mut inner) => inner.committed.clear(),
            Err(_) => return,
        };
        drop(taken);
    }
}
