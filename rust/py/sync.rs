//! Relationship key sync before a flush: the parent's key copied into its children's foreign
//! keys, in one call for all the objects whose relationships changed.
//!
//! The key copies run here: into the members a one-to-many collection gained (or the value a
//! scalar one-to-many was given), and from the object a many-to-one names (or None). Everything that settles removals, orphans, rows of
//! deleted parents and association rows goes back to Python (`flush.sync_related`), which
//! keeps those rules in one place; those objects are returned, in order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyType};

use crate::engine::key::IdentityKey;
use crate::engine::snapshot::Committed;
use crate::engine::state::Lifecycle;

use super::convert::identity_key;

use super::interned::Interned;
use super::mapper::{MapperCore, SyncKind, SyncProp};
use super::state::{
    instance_dict, mapper_of, materialize_expiry, state_in, InstanceState, STATE_KEY,
};

static ADDED: Interned = Interned::new("_added");
static REMOVED: Interned = Interned::new("_removed");
static HISTORY: Interned = Interned::new("_retort_history");
static PENDING: Interned = Interned::new("_retort_pending");
static BACK: Interned = Interned::new("back");
static KEY: Interned = Interned::new("key");
/// `retort.mapping._NOT_SET`: a value before a change that is not known.
static NOT_SET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `retort.mapping._Unsettled`: a value before that only the save-update cascade follows.
static UNSETTLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn unsettled_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(UNSETTLED
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("retort.mapping")?.getattr("_Unsettled")?.unbind())
        })?
        .bind(py))
}

/// One mapper's relationships to sync, copied out of its lock once per call.
type Props = Rc<Vec<SyncProp>>;

/// Per (target object, mapper, relationship index): the target's key values, or None when
/// it is outside the session.
type TargetKeys<'py> =
    HashMap<(usize, usize, usize), Option<Vec<Bound<'py, PyAny>>>, ahash::RandomState>;

/// Per call: each class's relationships to sync, by mapper address (a call meets few
/// classes: a short list).
#[derive(Default)]
pub struct PropCache {
    by_mapper: Vec<(usize, Props)>,
}

impl PropCache {
    pub fn of<'py>(
        &mut self,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, MapperCore>, Props)> {
        let mapper = mapper_of(obj)?;
        let at = mapper.as_ptr() as usize;
        if let Some((_, p)) = self.by_mapper.iter().find(|(m, _)| *m == at) {
            return Ok((mapper, p.clone()));
        }
        let props = Rc::new(mapper.get().sync_props(obj.py())?);
        self.by_mapper.push((at, props.clone()));
        Ok((mapper, props))
    }
}

/// Set `obj.<key>` to `value` (through its attribute, so the change is tracked) unless it
/// holds an equal value already.
fn set_if_different(
    obj: &Bound<'_, PyAny>,
    dict: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Some(current) = dict.get_item(key)? {
        if current.is(value) || current.eq(value)? {
            return Ok(());
        }
    }
    obj.setattr(key, value)
}

/// Whether the object has a row (a key in the identity map), or had one until a rollback
/// undid its INSERT (the flush of that INSERT settled its collections, as for an object
/// with a row); and whether a primary key column of it changed since it was loaded or
/// flushed.
fn row_and_key_change(dict: &Bound<'_, PyDict>, mapper: &MapperCore) -> PyResult<(bool, bool)> {
    let Some(state) = state_in(dict)? else {
        return Ok((false, false));
    };
    let inner = state.get().lock()?;
    if !inner.has_key() {
        return Ok((inner.expired_insert(), false));
    }
    let changed = inner.committed.changed_attrs();
    Ok((true, mapper.pk.iter().any(|c| changed.contains(c))))
}

/// Whether a scalar one-to-many copies its owner's key into its value: where it was set since
/// the last flush (its history), where the owner never had a row, or its key changed (not
/// where the owner is merely listed, as after an add(): a key set by hand on the value since
/// stays, as in SQLAlchemy).
fn scalar_copies(dict: &Bound<'_, PyDict>, mapper: &MapperCore, p: &SyncProp) -> PyResult<bool> {
    let py = dict.py();
    if let Some(history) = dict.get_item(HISTORY.get(py))? {
        if history.contains(p.key.bind(py))? {
            return Ok(true);
        }
    }
    let (had_row, key_changed) = row_and_key_change(dict, mapper)?;
    Ok(!had_row || key_changed)
}

/// Apply the pending expiry (commit, rollback, expire_all) of `child` before its foreign key
/// is compared with the key to copy: the values its `__dict__` still holds are stale. None
/// for a child whose DELETE a flush ran: it gets no key. Else whether it is in the session.
fn fresh_child<'py>(
    child_dict: &Bound<'py, PyDict>,
    in_session: &dyn Fn(&Bound<'py, InstanceState>) -> PyResult<bool>,
) -> PyResult<Option<bool>> {
    let Some(state) = state_in(child_dict)? else {
        return Ok(Some(false));
    };
    {
        let st = state.get();
        let mut inner = st.lock()?;
        if inner.lifecycle() == Lifecycle::Deleted {
            return Ok(None);
        }
        if inner.is_stale() {
            materialize_expiry(&mut inner, child_dict, st.mapper.get())?;
        }
    }
    Ok(Some(in_session(&state)?))
}

/// Whether the object of `dict` is stale: expired by a commit, rollback or expire_all()
/// since last used, its `__dict__` still holding the values it had (see `sync_many_to_one`).
pub(crate) fn is_stale_in(dict: &Bound<'_, PyDict>) -> PyResult<bool> {
    Ok(match state_in(dict)? {
        Some(s) => s.get().lock()?.is_stale(),
        None => false,
    })
}

/// Pass one, over the objects in order: each one-to-many collection copies its owner's key
/// into its members (into the members it gained, when the owner has a row, or had one until
/// a rollback undid its INSERT, and the same key as before; into all of them otherwise, as
/// SQLAlchemy does); a scalar one-to-many likewise into its value (where it was set since the
/// last flush, when the owner has a row and the same key). Returns, in order, what Python
/// settles, as `(obj, prop, value, gained)`: `(obj, None, None, False)` for an object marked
/// deleted, `(obj, prop, value, gained)` for the removals of a collection, a scalar
/// one-to-many (`gained`: its value was given the key) or a many-to-many, and `(obj, None,
/// queued, False)` for an object with changes queued for unloaded collections (its
/// `_retort_pending`). `collections` receives each collection synced here (its history is
/// reset after the flush); `outside` each `(member, prop)` given the key while outside the
/// session (nothing of it is written: Python warns, as SQLAlchemy does).
pub fn sync_collections<'py>(
    objs: &Bound<'py, PyList>,
    is_deleted: &dyn Fn(&Bound<'py, PyAny>) -> PyResult<bool>,
    in_session: &dyn Fn(&Bound<'py, InstanceState>) -> PyResult<bool>,
    collections: &Bound<'py, PyList>,
    outside: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyList>> {
    let py = objs.py();
    let rest = PyList::empty(py);
    let mut cache = PropCache::default();
    for obj in objs.iter() {
        if is_deleted(&obj)? {
            rest.append((obj.clone(), py.None(), py.None(), false))?;
            continue;
        }
        let (mapper, props) = cache.of(&obj)?;
        if props.iter().all(|p| p.kind == SyncKind::ManyToOne) {
            // nothing for this pass (many-to-ones are the next one's), and no unloaded
            // collection to have changes queued for
            continue;
        }
        let dict = instance_dict(&obj)?;
        if is_stale_in(&dict)? {
            continue; // expired since its changes were made: they are forgotten (see below)
        }
        if let Some(queued) = dict.get_item(PENDING.get(py))? {
            if queued.is_truthy()? {
                // changes queued for unloaded collections: Python looks at them
                rest.append((obj.clone(), py.None(), queued, false))?;
            }
        }
        for p in props.iter() {
            if p.kind == SyncKind::ManyToOne {
                continue;
            }
            let Some(value) = dict.get_item(p.key.bind(py))? else {
                continue;
            };
            if p.kind == SyncKind::ScalarOneToMany {
                // Python settles the value it replaced
                let gained = !value.is_none() && scalar_copies(&dict, mapper.get(), p)?;
                if gained {
                    let value_dict = instance_dict(&value)?;
                    for (src, dst) in p.src.iter().zip(&p.dst) {
                        let pv = obj.getattr(src.bind(py))?;
                        set_if_different(&value, &value_dict, dst.bind(py), &pv)?;
                    }
                    let inside = match state_in(&value_dict)? {
                        Some(state) => in_session(&state)?,
                        None => false,
                    };
                    if !inside {
                        note_outside(&value, &value_dict, p, &obj, outside)?;
                    }
                }
                rest.append((obj.clone(), p.prop.bind(py), &value, gained))?;
                continue;
            }
            if p.kind == SyncKind::Other || value.getattr(REMOVED.get(py))?.is_truthy()? {
                // Python settles what it took out (after this call: its gained members have
                // the key by then) or the whole of a many-to-many
                rest.append((obj.clone(), p.prop.bind(py), &value, false))?;
                if p.kind == SyncKind::Other {
                    continue;
                }
            }
            collections.append(&value)?;
            let (had_row, key_changed) = row_and_key_change(&dict, mapper.get())?;
            let only_added: Option<HashSet<usize, ahash::RandomState>> = if had_row && !key_changed
            {
                let added = value.getattr(ADDED.get(py))?;
                let added = added.cast::<PyDict>()?;
                if added.is_empty() {
                    continue;
                }
                Some(added.values().iter().map(|v| v.as_ptr() as usize).collect())
            } else {
                None
            };
            let parent_values = p
                .src
                .iter()
                .map(|k| obj.getattr(k.bind(py)))
                .collect::<PyResult<Vec<_>>>()?;
            for child in value.try_iter()? {
                let child = child?;
                if let Some(added) = &only_added {
                    if !added.contains(&(child.as_ptr() as usize)) {
                        continue;
                    }
                }
                let child_dict = instance_dict(&child)?;
                let Some(inside) = fresh_child(&child_dict, in_session)? else {
                    // its DELETE was flushed (it was a member before): its row is gone, and
                    // nothing of it is written, as in SQLAlchemy
                    continue;
                };
                for (dst, pv) in p.dst.iter().zip(&parent_values) {
                    set_if_different(&child, &child_dict, dst.bind(py), pv)?;
                }
                if !inside {
                    note_outside(&child, &child_dict, p, &obj, outside)?;
                }
            }
        }
    }
    Ok(rest)
}

/// `child`, outside the session, was given `obj`'s key along one-to-many `p`: its
/// many-to-one's change is settled (`settle_outside`), and it is listed in `outside` (Python
/// warns).
fn note_outside<'py>(
    child: &Bound<'py, PyAny>,
    child_dict: &Bound<'py, PyDict>,
    p: &SyncProp,
    obj: &Bound<'py, PyAny>,
    outside: &Bound<'py, PyList>,
) -> PyResult<()> {
    let prop = p.prop.bind(child.py());
    settle_outside_in(child_dict, prop, obj)?;
    outside.append((child, prop))
}

/// After `child`, outside the session, was given `obj`'s key along one-to-many `prop`: where
/// its many-to-one (the other side) names `obj`, set since the child's last flush, the value
/// its key named before that change is gone, so the value before its next change is unknown:
/// any value set since counts as a change, which its flush writes. (Else setting the
/// many-to-one back to the value it had before would count as no change, and leave a key
/// naming `obj` where the many-to-one names another object, or none.) An object it named is
/// kept, wrapped (`mapping._Unsettled`), for the save-update cascade to follow, as SQLAlchemy's
/// history of an object its flush did not write holds it; else `mapping._NOT_SET`.
/// Objects in the session keep their history until their own flush is done (`sync_done`).
/// (Also called by `flush._sync_queued` for the children of unloaded collections.)
#[pyfunction]
pub fn settle_outside(
    child: &Bound<'_, PyAny>,
    prop: &Bound<'_, PyAny>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<()> {
    settle_outside_in(&instance_dict(child)?, prop, obj)
}

fn settle_outside_in(
    child_dict: &Bound<'_, PyDict>,
    prop: &Bound<'_, PyAny>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = child_dict.py();
    let Some(history) = child_dict.get_item(HISTORY.get(py))? else {
        return Ok(()); // (the usual case: a child whose many-to-one did not change)
    };
    let history = history.cast_into::<PyDict>()?;
    if history.is_empty() {
        return Ok(());
    }
    let back = prop.getattr(BACK.get(py))?;
    if back.is_none() {
        return Ok(());
    }
    let back_key = back.getattr(KEY.get(py))?;
    if !history.contains(&back_key)? || !child_dict.get_item(&back_key)?.is_some_and(|v| v.is(obj))
    {
        return Ok(());
    }
    let unsettled = unsettled_class(py)?;
    match history.get_item(&back_key)? {
        Some(before) if before.is_instance(unsettled)? => Ok(()),
        Some(before) if !before.is_none() && mapper_of(&before).is_ok() => {
            history.set_item(back_key, unsettled.call1((before,))?)
        }
        _ => {
            let unknown = NOT_SET.get_or_try_init(py, || {
                Ok::<_, PyErr>(py.import("retort.mapping")?.getattr("_NOT_SET")?.unbind())
            })?;
            history.set_item(back_key, unknown.bind(py))
        }
    }
}

/// Pass two, after Python settled orphans: each many-to-one changed since the object was
/// loaded or flushed (or of a pending object) copies the key of the object it names into the
/// foreign key (None for None). Objects marked deleted, or whose DELETE a flush ran, are
/// skipped: they keep their foreign keys, as in SQLAlchemy. Returns `(target, prop)` for each
/// target outside the session, for which nothing is written (Python warns).
pub fn sync_many_to_one<'py>(
    objs: &Bound<'py, PyList>,
    is_deleted: &dyn Fn(&Bound<'py, PyAny>) -> PyResult<bool>,
    in_session: &dyn Fn(&Bound<'py, InstanceState>) -> PyResult<bool>,
) -> PyResult<Bound<'py, PyList>> {
    let py = objs.py();
    let outside = PyList::empty(py);
    let mut cache = PropCache::default();
    // (target, relationship) -> its key values, or None when it is outside the session (many
    // children usually share a parent)
    let mut keys_of: TargetKeys<'py> = HashMap::default();
    for obj in objs.iter() {
        let (mapper, props) = cache.of(&obj)?;
        let at = mapper.as_ptr() as usize;
        if !props.iter().any(|p| p.kind == SyncKind::ManyToOne) || is_deleted(&obj)? {
            continue;
        }
        let dict = instance_dict(&obj)?;
        let (has_identity, inserted_before, flushed_delete, stale) = match state_in(&dict)? {
            Some(s) => {
                let inner = s.get().lock()?;
                (
                    inner.has_key(),
                    inner.expired_insert(),
                    inner.lifecycle() == Lifecycle::Deleted,
                    inner.is_stale(),
                )
            }
            None => (false, false, false, false),
        };
        if flushed_delete {
            continue; // its row is gone: nothing of it is written (taken out of a stale collection)
        }
        if stale {
            // expired (commit, rollback, expire_all) since its relationships changed: the
            // changes are forgotten, as SQLAlchemy's expiry discards them, though its
            // `__dict__` still holds them until next used (an add() of the object, which
            // lists it among those with relationships to look at, uses none of it)
            continue;
        }
        let history = if has_identity || inserted_before {
            dict.get_item(HISTORY.get(py))?
        } else {
            None
        };
        for (i, p) in props.iter().enumerate() {
            if p.kind != SyncKind::ManyToOne {
                continue;
            }
            let key = p.key.bind(py);
            let Some(value) = dict.get_item(key)? else {
                continue;
            };
            if has_identity || inserted_before {
                // unchanged since loaded or flushed: its key is in the row already (and the
                // object it names may be gone since, its key set to NULL by that delete)
                let changed = match &history {
                    Some(h) => h.contains(key)?,
                    None => false,
                };
                // An object made transient by a rollback of its INSERT keeps the parent it
                // holds (its key is written, where a flush of the rolled-back transaction
                // may have nulled the foreign key); a None it holds unchanged was loaded,
                // not set, and names no parent: the foreign key is written as it is (set by
                // hand, as SQLAlchemy writes it)
                if !changed && (has_identity || value.is_none()) {
                    continue;
                }
            }
            if value.is_none() {
                for dst in &p.dst {
                    set_if_different(&obj, &dict, dst.bind(py), &value)?;
                }
                continue;
            }
            let slot = (value.as_ptr() as usize, at, i);
            let values = match keys_of.entry(slot) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let target_dict = instance_dict(&value)?;
                    let inside = match state_in(&target_dict)? {
                        Some(s) => in_session(&s)?,
                        None => false,
                    };
                    e.insert(if inside {
                        Some(
                            p.src
                                .iter()
                                .map(|k| value.getattr(k.bind(py)))
                                .collect::<PyResult<Vec<_>>>()?,
                        )
                    } else {
                        None
                    })
                }
            };
            match values {
                Some(values) => {
                    for (dst, pv) in p.dst.iter().zip(values) {
                        set_if_different(&obj, &dict, dst.bind(py), pv)?;
                    }
                }
                None => outside.append((value, p.prop.bind(py)))?,
            }
        }
    }
    Ok(outside)
}

/// Before a flush deletes `objs`: each unloaded many-to-one whose foreign key (the committed
/// one, where it was changed by hand since) is NULL, or names an object the identity map holds
/// (`lookup`, expired or not), becomes loaded without SQL, so that it stays readable once the object is detached. SQLAlchemy's flush reads them
/// the same way to find its dependencies (for the first such object of each relationship
/// only; retort for all). Objects expired since they were loaded are left alone (their
/// foreign keys are not known without SQL).
pub fn read_many_to_ones<'py>(
    objs: &Bound<'py, PyList>,
    lookup: &dyn Fn(&IdentityKey) -> PyResult<Option<Bound<'py, PyAny>>>,
) -> PyResult<()> {
    let py = objs.py();
    let mut cache = PropCache::default();
    for obj in objs.iter() {
        let (mapper, props) = cache.of(&obj)?;
        if !props.iter().any(|p| p.kind == SyncKind::ManyToOne) {
            continue;
        }
        let dict = instance_dict(&obj)?;
        let state = match state_in(&dict)? {
            Some(s) if !s.get().lock()?.is_stale() => s,
            _ => continue,
        };
        let m = mapper.get();
        for p in props.iter().filter(|p| p.kind == SyncKind::ManyToOne) {
            let key = p.key.bind(py);
            if dict.contains(key)? {
                continue;
            }
            // the committed key where one was set by hand since (SQLAlchemy's flush reads the
            // old value against the committed state); unknown if it was not loaded then
            let mut committed: Vec<Option<Option<Bound<'py, PyAny>>>> = Vec::new();
            {
                let inner = state.get().lock()?;
                if !inner.committed.is_empty() {
                    for d in &p.dst {
                        let d = d.bind(py);
                        let at = m.keys.iter().position(|k| {
                            let k = k.bind(py);
                            k.is(d) || k.as_any().eq(d).unwrap_or(false)
                        });
                        committed.push(at.and_then(|i| inner.committed.get(i as u16)).map(|c| {
                            match c {
                                Committed::Value(v) => Some(v.bind(py).clone()),
                                Committed::Unknown => None,
                            }
                        }));
                    }
                }
            }
            let mut values = Vec::with_capacity(p.dst.len());
            let mut null = false;
            for (i, d) in p.dst.iter().enumerate() {
                let value = match committed.get(i) {
                    Some(Some(Some(v))) => Some(v.clone()),
                    Some(Some(None)) => None, // set by hand while not loaded: unknown
                    _ => dict.get_item(d.bind(py))?,
                };
                match value {
                    None => break,
                    Some(v) if v.is_none() => {
                        null = true;
                        break;
                    }
                    Some(v) => values.push(v),
                }
            }
            if null {
                dict.set_item(key, py.None())?;
                continue;
            }
            let Some(target) = &p.target else { continue };
            if values.len() != p.dst.len() {
                continue; // a foreign key column not loaded
            }
            if let Some(found) = lookup(&identity_key(target.get().id, values.into_iter())?)? {
                dict.set_item(key, found)?;
            }
        }
    }
    Ok(())
}

/// After a flush wrote what the relationships of `objs` changed: each collection in
/// `collections` forgets its members added and removed; each object forgets its many-to-one
/// history and the changes queued for its unloaded collections (those load from the database
/// now).
pub fn sync_done(objs: &Bound<'_, PyList>, collections: &Bound<'_, PyList>) -> PyResult<()> {
    let py = objs.py();
    for coll in collections.iter() {
        for name in [&ADDED, &REMOVED] {
            coll.getattr(name.get(py))?.cast::<PyDict>()?.clear();
        }
    }
    for obj in objs.iter() {
        let dict = instance_dict(&obj)?;
        for name in [&HISTORY, &PENDING] {
            let key = name.get(py);
            if dict.contains(key)? {
                dict.del_item(key)?;
            }
        }
    }
    Ok(())
}

/// The common case of `Parent(children=[...])` (see `RelationshipProperty._fill_new_collection`):
/// when every item is an instance of `cls` outside any session, not given twice, and with
/// nothing set on the other side (`back_key`, if any), record each as added in `added` (by
/// `id()`) and set its other side to `owner`, and return True. Otherwise change nothing and
/// return False (the general path then handles it, raising the right error if need be).
#[pyfunction]
#[pyo3(signature = (added, items, cls, back_key, owner))]
pub fn fill_new_collection(
    added: &Bound<'_, PyDict>,
    items: &Bound<'_, PyList>,
    cls: &Bound<'_, PyType>,
    back_key: Option<&Bound<'_, PyString>>,
    owner: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = items.py();
    let state_key = STATE_KEY.get(py);
    let mut seen: HashSet<usize, ahash::RandomState> =
        HashSet::with_capacity_and_hasher(items.len(), ahash::RandomState::new());
    let mut dicts = Vec::with_capacity(items.len());
    for item in items.iter() {
        if !item.is_instance(cls)? || !seen.insert(item.as_ptr() as usize) {
            return Ok(false);
        }
        let dict = instance_dict(&item)?;
        if dict.contains(state_key)? {
            return Ok(false);
        }
        if let Some(k) = back_key {
            if dict.contains(k)? {
                return Ok(false);
            }
        }
        dicts.push(dict);
    }
    for (item, dict) in items.iter().zip(dicts) {
        added.set_item(item.as_ptr() as usize, &item)?;
        if let Some(k) = back_key {
            dict.set_item(k, owner)?;
        }
    }
    Ok(true)
}

/// What the save-update cascade follows along one relationship (`key`, holding `value`) of an
/// object with `__dict__` `dict`: the value, and, as SQLAlchemy's pending history, the members
/// taken out of the collection or the many-to-one's value before its change, since the last
/// flush. A collection's members gained since the last flush come first, then the others, then
/// those taken out, in SQLAlchemy's order (which decides what a cascade that fails halfway has
/// attached already). (Session._cascade_members in Python walks the same, for the cascade with
/// listeners.)
pub fn cascade_members<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    value: Bound<'py, PyAny>,
    uselist: bool,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = dict.py();
    if uselist {
        let mut items: Vec<Bound<'py, PyAny>> = value.try_iter()?.collect::<PyResult<_>>()?;
        if let Some(added) = value.getattr_opt(ADDED.get(py))? {
            if let Ok(added) = added.cast::<PyDict>() {
                if !added.is_empty() && added.len() < items.len() {
                    // (each group in list order)
                    let mut gained = Vec::with_capacity(added.len());
                    let mut others = Vec::with_capacity(items.len());
                    for item in items {
                        if added.contains(item.as_ptr() as usize)? {
                            gained.push(item);
                        } else {
                            others.push(item);
                        }
                    }
                    gained.extend(others);
                    items = gained;
                }
            }
        }
        if let Some(removed) = value.getattr_opt(REMOVED.get(py))? {
            if let Ok(removed) = removed.cast::<PyDict>() {
                items.extend(removed.values().iter());
            }
        }
        return Ok(items);
    }
    let old = dict
        .get_item(HISTORY.get(py))?
        .and_then(|h| h.cast_into::<PyDict>().ok())
        .and_then(|h| h.get_item(key).ok().flatten());
    let old = match old {
        Some(o) if o.is_instance(unsettled_class(py)?)? => Some(o.getattr("value")?),
        o => o,
    }
    .filter(|old| !old.is_none() && !old.is(&value) && mapper_of(old).is_ok());
    Ok([Some(value).filter(|v| !v.is_none()), old]
        .into_iter()
        .flatten()
        .collect())
}
