//! Per-object state: lifecycle, identity, committed snapshot and the link to a session.
//!
//! An `InstanceState` lives in its instance's `__dict__`. It links to its session weakly,
//! through the session's current `Link`, so closing or dropping a session detaches every object
//! at once without visiting them. Expiry after commit is lazy: the session marks its current
//! link expired and starts a new one, and each state notices on its next use that its link is
//! an expired one.
//!
//! Every persistent object carries a state, so its size is most of what retort adds to a row:
//! 72 bytes with the collector's header. The lifecycle, the flags, the kind of the identity key
//! and a lock bit share one word with the address of the object the state vouches for (see
//! `liveness`); the key's values take one more word (the mapper, which every key of the state
//! shares, is the state's own).

use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use pyo3::exceptions::PyAttributeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;
use thin_vec::ThinVec;

use crate::engine::key::{IdentityKey, KeyValue};
use crate::engine::snapshot::{Committed, Snapshot};
use crate::engine::state::Lifecycle;

use super::errors::{busy, UnmappedInstanceError};
use super::interned::MAPPER_CORE;
pub use super::interned::STATE_KEY;
use super::mapper::MapperCore;
use super::session::Shared;

/// One generation of a session, as its objects see it: the session (weakly) and whether a
/// commit, rollback or expire_all has expired the objects loaded during it. A session marks its
/// link expired and makes a new one at each of those, so an object knows it is stale without
/// being visited.
pub struct Link {
    pub shared: Weak<Shared>,
    expired: AtomicBool,
}

impl Link {
    pub fn new(shared: Weak<Shared>) -> Arc<Link> {
        Arc::new(Link {
            shared,
            expired: AtomicBool::new(false),
        })
    }

    pub fn expire(&self) {
        self.expired.store(true, Ordering::Release);
    }

    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }
}

/// The values of an identity key; which field is in use is in the state's header (`KEY_*`).
union KeySlot {
    int: i64,
    values: ManuallyDrop<ThinVec<KeyValue>>,
}

/// What the lock protects: the parts of a state that are not in its header word.
pub struct StateInner {
    link: Option<Arc<Link>>,
    pub committed: Snapshot<Py<PyAny>>,
    key: KeySlot,
}

// The header word: bit 0 the lock; bits 3..=55 the address of the object the state vouches
// for (objects are at least 8-byte aligned); bits 56..=58 the lifecycle; then three flags and
// two bits for the kind of the identity key.
const LOCK: u64 = 1;
const ADDR: u64 = 0x00FF_FFFF_FFFF_FFF8;
const LIFECYCLE_SHIFT: u32 = 56;
const LIFECYCLE: u64 = 0b111 << LIFECYCLE_SHIFT;
const WAS_DELETED: u64 = 1 << 59;
const WHOLLY_EXPIRED: u64 = 1 << 60;
const EXPIRED_INSERT: u64 = 1 << 61;
const KEY_SHIFT: u32 = 62;
const KEY: u64 = 0b11 << KEY_SHIFT;
const KEY_NONE: u64 = 0;
const KEY_INT: u64 = 1;
const KEY_VALUES: u64 = 2;

fn lifecycle_bits(l: Lifecycle) -> u64 {
    let n: u64 = match l {
        Lifecycle::Transient => 0,
        Lifecycle::Pending => 1,
        Lifecycle::Persistent => 2,
        Lifecycle::Deleted => 3,
        Lifecycle::Detached => 4,
    };
    n << LIFECYCLE_SHIFT
}

fn lifecycle_of(header: u64) -> Lifecycle {
    match (header & LIFECYCLE) >> LIFECYCLE_SHIFT {
        0 => Lifecycle::Transient,
        1 => Lifecycle::Pending,
        2 => Lifecycle::Persistent,
        3 => Lifecycle::Deleted,
        _ => Lifecycle::Detached,
    }
}

#[pyclass(frozen, module = "retort._core")]
pub struct InstanceState {
    pub mapper: Py<MapperCore>,
    header: AtomicU64,
    inner: UnsafeCell<StateInner>,
}

// Safety: `inner` is only reached through `lock()`, whose guard holds the header's lock bit,
// taken and released with atomic operations: one guard at a time, on any thread.
unsafe impl Sync for InstanceState {}

impl Drop for InstanceState {
    fn drop(&mut self) {
        super::liveness::forget(self);
        let header = *self.header.get_mut();
        if (header & KEY) >> KEY_SHIFT == KEY_VALUES {
            // Safety: the header says the slot holds values, and nothing uses them after this.
            unsafe { ManuallyDrop::drop(&mut self.inner.get_mut().key.values) };
        }
    }
}

impl InstanceState {
    pub fn new_transient(mapper: Py<MapperCore>) -> Self {
        InstanceState {
            mapper,
            header: AtomicU64::new(lifecycle_bits(Lifecycle::Transient)),
            inner: UnsafeCell::new(StateInner {
                link: None,
                committed: Snapshot::default(),
                key: KeySlot { int: 0 },
            }),
        }
    }

    /// The state, for reading or changing; "busy" while another caller (the same thread, from
    /// an event or a finalizer) has it.
    pub fn lock(&self) -> PyResult<StateGuard<'_>> {
        self.try_lock().ok_or_else(|| busy("object"))
    }

    /// `lock`, or None while the state is held.
    pub fn try_lock(&self) -> Option<StateGuard<'_>> {
        if self.header.fetch_or(LOCK, Ordering::Acquire) & LOCK != 0 {
            return None;
        }
        // Safety: the lock bit was clear and is now ours, so no other reference to `inner`
        // exists until the guard clears it.
        Some(StateGuard {
            state: self,
            inner: unsafe { &mut *self.inner.get() },
        })
    }

    /// The address of the object this state vouches for to identity maps, 0 if none.
    pub fn owner(&self) -> usize {
        (self.header.load(Ordering::Acquire) & ADDR) as usize
    }

    /// Vouch for the object at `addr` (0: for none), an address `can_own` accepts.
    pub fn set_owner(&self, addr: usize) {
        debug_assert!(Self::can_own(addr));
        let addr = addr as u64 & ADDR;
        let _ = self
            .header
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some((h & !ADDR) | addr)
            });
    }

    /// Whether the header can hold the address `addr` (one it cannot is followed by a weak
    /// reference instead).
    pub fn can_own(addr: usize) -> bool {
        addr as u64 & !ADDR == 0
    }
}

/// The locked state: its header's fields through methods, the rest through `Deref`.
pub struct StateGuard<'a> {
    state: &'a InstanceState,
    inner: &'a mut StateInner,
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.state.header.fetch_and(!LOCK, Ordering::Release);
    }
}

impl Deref for StateGuard<'_> {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        self.inner
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut StateInner {
        self.inner
    }
}

impl StateGuard<'_> {
    fn header(&self) -> u64 {
        self.state.header.load(Ordering::Acquire)
    }

    /// Replace the bits of `mask` (the lock holder is the only writer of these bits; the
    /// liveness finalizer may change the address bits meanwhile, hence the atomic update).
    fn set_bits(&mut self, mask: u64, bits: u64) {
        let _ = self
            .state
            .header
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some((h & !mask) | bits)
            });
    }

    fn set_flag(&mut self, flag: u64, on: bool) {
        self.set_bits(flag, if on { flag } else { 0 });
    }

    pub fn lifecycle(&self) -> Lifecycle {
        lifecycle_of(self.header())
    }

    pub fn set_lifecycle(&mut self, l: Lifecycle) {
        self.set_bits(LIFECYCLE, lifecycle_bits(l));
    }

    /// Deleted in a flush whose transaction has not ended (SQLAlchemy's `was_deleted`).
    pub fn was_deleted(&self) -> bool {
        self.header() & WAS_DELETED != 0
    }

    pub fn set_was_deleted(&mut self, on: bool) {
        self.set_flag(WAS_DELETED, on);
    }

    /// Expired as a whole (commit, rollback, expire_all, expire(obj)) and not loaded or
    /// flushed since, even if some attributes were set meanwhile: `get()` then refreshes it.
    pub fn wholly_expired(&self) -> bool {
        self.header() & WHOLLY_EXPIRED != 0
    }

    pub fn set_wholly_expired(&mut self, on: bool) {
        self.set_flag(WHOLLY_EXPIRED, on);
    }

    /// Made transient by a rollback of its INSERT: a column missing from its `__dict__` then
    /// was expired (an INSERT leaves every column set). Reading it raises (DetachedInstanceError
    /// outside a session, InvalidRequestError once the object is pending again), as SQLAlchemy's
    /// expired attributes of an object without a row do, instead of reading None as a new
    /// object's unset column; and a flush refuses to insert the object while such a column
    /// is missing. Cleared when the object gets an identity key again.
    pub fn expired_insert(&self) -> bool {
        self.header() & EXPIRED_INSERT != 0
    }

    pub fn set_expired_insert(&mut self, on: bool) {
        self.set_flag(EXPIRED_INSERT, on);
    }

    fn key_kind(&self) -> u64 {
        (self.header() & KEY) >> KEY_SHIFT
    }

    pub fn has_key(&self) -> bool {
        self.key_kind() != KEY_NONE
    }

    /// The identity key, if the object has one.
    pub fn key(&self) -> Option<IdentityKey> {
        let mapper = self.state.mapper.get().id;
        // Safety: the header's key kind says which field of the slot is in use.
        unsafe {
            match self.key_kind() {
                KEY_INT => Some(IdentityKey::Int {
                    mapper,
                    value: self.inner.key.int,
                }),
                KEY_VALUES => Some(IdentityKey::Values {
                    mapper,
                    values: ThinVec::clone(&self.inner.key.values),
                }),
                _ => None,
            }
        }
    }

    /// Whether the identity key is `key`, without copying it.
    pub fn key_is(&self, key: &IdentityKey) -> bool {
        if key.mapper() != self.state.mapper.get().id {
            return false;
        }
        // Safety: as in `key`.
        unsafe {
            match (self.key_kind(), key) {
                (KEY_INT, IdentityKey::Int { value, .. }) => self.inner.key.int == *value,
                (KEY_VALUES, IdentityKey::Values { values, .. }) => {
                    self.inner.key.values.as_slice() == values.as_slice()
                }
                _ => false,
            }
        }
    }

    /// Set (or clear) the identity key; the old one is returned. A key is always of the
    /// state's own mapper.
    pub fn set_key(&mut self, key: Option<IdentityKey>) -> Option<IdentityKey> {
        let old = self.take_key();
        if key.is_some() {
            self.set_expired_insert(false);
        }
        match key {
            None => {}
            Some(IdentityKey::Int { mapper, value }) => {
                debug_assert_eq!(mapper, self.state.mapper.get().id);
                self.inner.key = KeySlot { int: value };
                self.set_bits(KEY, KEY_INT << KEY_SHIFT);
            }
            Some(IdentityKey::Values { mapper, values }) => {
                debug_assert_eq!(mapper, self.state.mapper.get().id);
                self.inner.key = KeySlot {
                    values: ManuallyDrop::new(values),
                };
                self.set_bits(KEY, KEY_VALUES << KEY_SHIFT);
            }
        }
        old
    }

    fn take_key(&mut self) -> Option<IdentityKey> {
        let mapper = self.state.mapper.get().id;
        let kind = self.key_kind();
        self.set_bits(KEY, KEY_NONE);
        // Safety: `kind` said which field was in use; the kind is now "none", so the values
        // moved out are not dropped again.
        unsafe {
            match kind {
                KEY_INT => Some(IdentityKey::Int {
                    mapper,
                    value: self.inner.key.int,
                }),
                KEY_VALUES => Some(IdentityKey::Values {
                    mapper,
                    values: ManuallyDrop::take(&mut self.inner.key.values),
                }),
                _ => None,
            }
        }
    }

    pub fn session(&self) -> Option<Arc<Shared>> {
        self.inner.link.as_ref().and_then(|l| l.shared.upgrade())
    }

    /// The session generation the state follows, if it is in a session.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.inner.link.as_ref()
    }

    /// Leave the session without changing the lifecycle (the caller sets it).
    pub fn unlink(&mut self) {
        self.inner.link = None;
    }

    /// Follow `link` (a newer generation of the same session: the state is fresh again).
    pub fn set_link(&mut self, link: Arc<Link>) {
        self.inner.link = Some(link);
    }

    /// The lifecycle as a user sees it: a state whose session is gone is transient or detached.
    pub fn effective(&self) -> Lifecycle {
        let lifecycle = self.lifecycle();
        match lifecycle {
            Lifecycle::Pending | Lifecycle::Persistent | Lifecycle::Deleted => {
                if self.session().is_some() {
                    lifecycle
                } else {
                    lifecycle.without_session()
                }
            }
            other => other,
        }
    }

    pub fn in_session(&self, shared: &Arc<Shared>) -> bool {
        self.inner
            .link
            .as_ref()
            .is_some_and(|l| std::ptr::eq(l.shared.as_ptr(), Arc::as_ptr(shared)))
    }

    /// Whether a commit, rollback or expire_all of its session expired this object since it
    /// was loaded. Only objects with an identity expire: pending objects keep their values.
    pub fn is_stale(&self) -> bool {
        self.has_key() && self.inner.link.as_ref().is_some_and(|l| l.is_expired())
    }

    /// Stale, or expired as a whole since it was last loaded or flushed (expire() without
    /// names, commit, rollback, expire_all). SQLAlchemy's get(), delete flush and new-object
    /// flush load such an object again; after expire(obj, [names]) they do not, even where
    /// the names cover every column but the key.
    pub fn expired_whole(&self) -> bool {
        self.has_key() && (self.wholly_expired() || self.is_stale())
    }

    pub fn attach(&mut self, shared: &Arc<Shared>, lifecycle: Lifecycle) {
        self.attach_to(&shared.link(), lifecycle);
    }

    /// `attach`, given the session's current generation (fetched once for many objects).
    pub fn attach_to(&mut self, link: &Arc<Link>, lifecycle: Lifecycle) {
        self.inner.link = Some(link.clone());
        self.set_lifecycle(lifecycle);
    }

    /// Leave the session. The object stops following the session's expiry (apply a pending
    /// expiry first with `materialize_expiry` where the values must not survive).
    pub fn detach(&mut self) {
        let lifecycle = self.lifecycle().without_session();
        self.set_lifecycle(lifecycle);
        if lifecycle == Lifecycle::Transient {
            self.set_key(None);
        }
        self.inner.link = None;
    }
}

/// Apply a pending lazy expiry: drop loaded column values (the primary key stays, it is the
/// identity) so the next access reloads them.
pub fn materialize_expiry(
    inner: &mut StateGuard<'_>,
    dict: &Bound<'_, PyDict>,
    mapper: &MapperCore,
) -> PyResult<()> {
    if !inner.link().is_some_and(|l| l.is_expired()) {
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
    forget_relationship_changes(dict)?;
    // fresh again: it follows its session's current generation (none once the session is gone)
    inner.link = inner.session().map(|s| s.link());
    inner.set_wholly_expired(true);
    drop(inner.committed.clear());
    Ok(())
}

/// Drop what an object's `__dict__` keeps of relationship changes not flushed yet: the
/// values its many-to-ones had before their first change (`_retort_history`) and the changes
/// queued for collections that were not loaded (`_retort_pending`, see mapping._pending).
/// Expiry discards them with the values they are changes of: a many-to-one set again after a
/// rollback is a change from the row's value, not from the value before the rolled-back one.
pub fn forget_relationship_changes(dict: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = dict.py();
    for name in [
        pyo3::intern!(py, "_retort_history"),
        pyo3::intern!(py, "_retort_pending"),
    ] {
        if dict.contains(name)? {
            dict.del_item(name)?;
        }
    }
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
    inner.set_key(Some(super::convert::identity_key(
        m.id,
        values.into_iter(),
    )?));
    inner.set_lifecycle(Lifecycle::Detached);
    inner.unlink();
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
        Ok(self.lock()?.was_deleted())
    }

    #[getter]
    fn has_identity(&self) -> PyResult<bool> {
        Ok(self.lock()?.has_key())
    }

    /// Whether a rollback undid this object's INSERT (it has no identity key again, and had a
    /// row; see `StateGuard::expired_insert`).
    #[getter]
    fn expired_insert(&self) -> PyResult<bool> {
        Ok(self.lock()?.expired_insert())
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
        // (a state held by code the collection interrupted is passed over, its snapshot
        // unvisited: that can only keep objects alive until the next collection)
        if let Some(inner) = self.try_lock() {
            for (_, c) in inner.committed.iter() {
                if let Committed::Value(v) = c {
                    visit.call(v)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = match self.try_lock() {
            Some(mut inner) => inner.committed.clear(),
            None => return,
        };
        drop(taken);
    }
}
