//! The session core: identity map, the new/dirty/deleted sets, loading, flush planning and
//! transaction bookkeeping. One Python call per batch (a page of rows, a flush, a commit).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;

use crate::engine::error::CoreError;
use crate::engine::identity::IdentityMap;
use crate::engine::key::{IdentityKey, KeyValue};
use crate::engine::ordered::OrderedMap;
use crate::engine::plan::{self, Change, ColSet, Op, Phase};
use crate::engine::snapshot::Committed;
use crate::engine::state::Lifecycle;

use super::convert::{identity_key, key_value};
use super::errors::{busy, InvalidRequestError};
use super::fingerprint::fingerprint;
use super::flush::{Batch, FlushPlan, Held, Row};
use super::liveness::ObjRef;
use super::mapper::{self, MapperCore};
use super::state::{
    ensure_state_of, forget_relationship_changes, instance_dict, mapper_of, materialize_expiry,
    state_in, untrack_state, InstanceState, Link, StateGuard, STATE_KEY,
};
use super::sync;

type FastMap<K, V> = OrderedMap<K, V>;

/// Mutable columns' fingerprints: (column index, fingerprint of the value).
type Fingerprints = thin_vec::ThinVec<(u16, u64)>;

fn fast_map<K: std::hash::Hash + Eq + Copy, V>() -> FastMap<K, V> {
    OrderedMap::new()
}

/// The save-update relationships of a class: (attribute name, is a collection).
type CascadeProps = Rc<Vec<(Py<PyString>, bool)>>;

/// Returned by `get()` for an object that is in the identity map but must be reloaded.
pub static NEEDS_LOAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub struct Entry {
    obj: ObjRef,
    state: Py<InstanceState>,
}

impl Entry {
    fn object<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.obj.get(py, self.state.get())
    }
}

#[derive(Default)]
pub struct Uow {
    pub identity: IdentityMap<Entry>,
    pub new: FastMap<usize, Held>,
    pub dirty: FastMap<usize, Held>,
    pub deleted: FastMap<usize, Held>,
    /// Persistent objects with mutable (JSON) columns, held strongly, with fingerprints of
    /// those columns' values as loaded or last flushed: an in-place change has no event, so
    /// the values are compared with their fingerprints before each flush.
    pub watched: FastMap<usize, (Held, Fingerprints)>,
    /// Identities made persistent by flushes of the current transaction.
    pub tx_inserted: Vec<(IdentityKey, Py<InstanceState>)>,
    /// Objects whose DELETE was flushed in the current transaction.
    pub tx_deleted: Vec<Held>,
    /// Objects whose primary key a flush of the current transaction changed: the old key,
    /// the old key's values and the new key.
    pub tx_rekeyed: Vec<(IdentityKey, Vec<Py<PyAny>>, IdentityKey, Held)>,
    /// Open SAVEPOINTs, innermost last.
    pub savepoints: Vec<Savepoint>,
}

/// Where the transaction's records stood when a SAVEPOINT began, and what was updated since.
pub struct Savepoint {
    inserted: usize,
    deleted: usize,
    rekeyed: usize,
    new_seq: u64,
    marked_seq: u64,
    updated: Vec<Held>,
}

impl Savepoint {
    /// A marker at where the transaction's records stand now.
    fn at(uow: &Uow, updated: Vec<Held>) -> Self {
        Savepoint {
            inserted: uow.tx_inserted.len(),
            deleted: uow.tx_deleted.len(),
            rekeyed: uow.tx_rekeyed.len(),
            new_seq: uow.new.next_seq(),
            marked_seq: uow.deleted.next_seq(),
            updated,
        }
    }
}

impl Uow {
    fn live(&self, py: Python<'_>, key: &IdentityKey) -> Option<(Py<PyAny>, Py<InstanceState>)> {
        let e = self.identity.get(key)?;
        let obj = e.object(py)?;
        Some((obj.unbind(), e.state.clone_ref(py)))
    }

    fn insert_identity(
        &mut self,
        py: Python<'_>,
        key: IdentityKey,
        obj: &Bound<'_, PyAny>,
        state: Py<InstanceState>,
    ) -> PyResult<()> {
        let obj = ObjRef::new(obj, state.get())?;
        let replaced = self
            .identity
            .insert(key, Entry { obj, state }, |e| e.object(py).is_some());
        drop(replaced);
        Ok(())
    }

    /// Record that an object's row is gone (its DELETE was flushed, or a SELECT for its
    /// expired values found no row): it becomes deleted, leaves the identity map and the change
    /// sets, and is detached by commit or made persistent again by rollback.
    fn record_deleted(
        &mut self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        st: &Py<InstanceState>,
    ) -> PyResult<()> {
        let key = {
            let mut inner = st.get().lock()?;
            inner.set_lifecycle(Lifecycle::Deleted);
            inner.set_was_deleted(true);
            inner.key()
        };
        if let Some(k) = key {
            if self.identity.get(&k).is_some_and(|e| e.state.is(st)) {
                self.identity.remove(&k);
            }
        }
        let ptr = obj.as_ptr() as usize;
        let held = (
            self.deleted.remove(&ptr),
            self.dirty.remove(&ptr),
            self.watched.remove(&ptr),
        );
        self.tx_deleted
            .push((obj.clone().unbind(), st.clone_ref(py)));
        drop(held);
        Ok(())
    }
}

pub struct Shared {
    /// The current generation: objects loaded or added since the last commit, rollback or
    /// expire_all follow it.
    link: Mutex<Arc<Link>>,
    /// A weak reference to the Python Session.
    owner: Py<PyAny>,
    pub uow: Mutex<Uow>,
}

impl Shared {
    /// The current generation, for an object that joins or is loaded.
    pub fn link(&self) -> Arc<Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Expire every object of the current generation and start a new one; the old one is
    /// returned.
    fn expire_generation(&self) -> Arc<Link> {
        let mut current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        let new = Link::new(current.shared.clone());
        let old = std::mem::replace(&mut *current, new);
        old.expire();
        old
    }

    pub fn owner(&self, py: Python<'_>) -> Py<PyAny> {
        self.owner.call0(py).unwrap_or_else(|_| py.None())
    }
}

#[pyclass(frozen, module = "retort._core")]
pub struct SessionCore {
    shared: Arc<Shared>,
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".into())
}

fn pk_values<'py>(
    dict: &Bound<'py, PyDict>,
    mapper: &MapperCore,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = dict.py();
    mapper
        .pk
        .iter()
        .map(|&i| {
            Ok(dict
                .get_item(mapper.keys[i as usize].bind(py))?
                .unwrap_or_else(|| py.None().into_bound(py)))
        })
        .collect()
}

/// The value a primary-key column had in the database: its committed value if it was changed.
fn db_pk_values(
    py: Python<'_>,
    dict: &Bound<'_, PyDict>,
    inner: &StateGuard<'_>,
    mapper: &MapperCore,
) -> PyResult<Vec<Py<PyAny>>> {
    mapper
        .pk
        .iter()
        .map(|&i| match inner.committed.get(i) {
            Some(Committed::Value(v)) => Ok(v.clone_ref(py)),
            _ => Ok(dict
                .get_item(mapper.keys[i as usize].bind(py))?
                .map(|v| v.unbind())
                .unwrap_or_else(|| py.None())),
        })
        .collect()
}

fn bind_value(py: Python<'_>, mapper: &MapperCore, col: u16, v: Py<PyAny>) -> PyResult<Py<PyAny>> {
    if let Some(&check) = mapper.checks.get(col as usize) {
        if check != 0 && !v.is_none(py) {
            check_bound(mapper, col, check, v.bind(py))?;
        }
    }
    match &mapper.bind[col as usize] {
        Some(f) if !v.is_none(py) => f.call1(py, (v,)),
        _ => Ok(v),
    }
}

/// Refuse a value psycopg and PostgreSQL would accept but store as something else.
#[cold]
fn refuse(mapper: &MapperCore, col: u16, what: &str, todo: &str) -> PyErr {
    super::errors::ArgumentError::new_err(format!(
        "column {}.{} ({}) cannot take {what}: {todo}",
        mapper.table, mapper.col_names[col as usize], mapper.name
    ))
}

fn check_bound(mapper: &MapperCore, col: u16, check: u8, v: &Bound<'_, PyAny>) -> PyResult<()> {
    use super::mapper::{CHECK_AWARE, CHECK_NAIVE, CHECK_TEXT};
    use pyo3::types::{PyByteArray, PyBytes, PyDateTime, PyMemoryView};
    match check {
        CHECK_TEXT
            if v.cast::<PyBytes>().is_ok()
                || v.cast::<PyByteArray>().is_ok()
                || v.cast::<PyMemoryView>().is_ok() =>
        {
            Err(refuse(
                mapper,
                col,
                "bytes",
                "it holds text; decode the bytes to str first (value.decode(...)), or declare \
                 the column LargeBinary",
            ))
        }
        CHECK_NAIVE | CHECK_AWARE if v.cast::<PyDateTime>().is_ok() => {
            let aware = !v.getattr(pyo3::intern!(v.py(), "tzinfo"))?.is_none();
            if check == CHECK_NAIVE && aware {
                Err(refuse(
                    mapper,
                    col,
                    "an aware datetime",
                    "it is declared without a time zone; declare it DateTime(timezone=True), or \
                     store naive datetimes (e.g. value.astimezone(utc).replace(tzinfo=None))",
                ))
            } else if check == CHECK_AWARE && !aware {
                Err(refuse(
                    mapper,
                    col,
                    "a naive datetime",
                    "it is DateTime(timezone=True); give the value a tzinfo (e.g. \
                     value.replace(tzinfo=datetime.timezone.utc))",
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

fn result_value<'py>(
    mapper: &MapperCore,
    col: usize,
    v: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    match &mapper.result[col] {
        Some(f) if !v.is_none() => f.bind(v.py()).call1((v,)),
        _ => Ok(v),
    }
}

/// Record fingerprints of an object's mutable column values and watch it for in-place changes.
fn watch(
    uow: &mut Uow,
    obj: &Bound<'_, PyAny>,
    state: &Py<InstanceState>,
    mapper: &MapperCore,
) -> PyResult<()> {
    if mapper.mutable.is_empty() {
        return Ok(());
    }
    let py = obj.py();
    let dict = instance_dict(obj)?;
    let mut prints = thin_vec::ThinVec::with_capacity(mapper.mutable.len());
    for &c in &mapper.mutable {
        if let Some(v) = dict.get_item(mapper.keys[c as usize].bind(py))? {
            prints.push((c, fingerprint(&v)?));
        }
    }
    let ptr = obj.as_ptr() as usize;
    match uow.watched.get_mut(&ptr) {
        Some((_, old)) => *old = prints,
        None => {
            uow.watched.insert_if_absent(ptr, || {
                ((obj.clone().unbind(), state.clone_ref(py)), prints)
            });
        }
    }
    Ok(())
}

/// Undo primary-key changes (newest first): the object gets its old key back, in its
/// attributes and in the identity map.
fn undo_rekeys(
    py: Python<'_>,
    uow: &mut Uow,
    rekeyed: Vec<(IdentityKey, Vec<Py<PyAny>>, IdentityKey, Held)>,
) -> PyResult<()> {
    for (old_key, old_values, new_key, (obj, st)) in rekeyed.into_iter().rev() {
        let m = st.get().mapper.get();
        let dict = instance_dict(obj.bind(py))?;
        for (&c, v) in m.pk.iter().zip(old_values) {
            dict.set_item(m.keys[c as usize].bind(py), v)?;
        }
        {
            let mut inner = st.get().lock()?;
            if inner.key_is(&new_key) {
                inner.set_key(Some(old_key.clone()));
            }
        }
        if uow
            .live(py, &new_key)
            .is_some_and(|(o, _)| o.bind(py).is(obj.bind(py)))
        {
            uow.identity.remove(&new_key);
        }
        uow.insert_identity(py, old_key, obj.bind(py), st)?;
    }
    Ok(())
}

/// What `undo_log` undid: the states of the objects whose INSERT it undid (to make
/// transient), those objects that were still in the identity map and whose class has
/// relationships (whose collections may list members whose rows it undid), and the other
/// instances the identity map holds under a key whose INSERT it undid (loaded from that row
/// after the inserting object left the session: their row is gone).
type Undone = (Vec<Py<InstanceState>>, Vec<Py<PyAny>>, Vec<Held>);

/// Replay a transaction's (or savepoint's) records backwards: rows inserted by its flushes
/// leave the identity map and their objects are returned (to become transient, wherever they
/// are now: deleted again or expunged since), and objects deleted by its flushes are
/// persistent again unless their row was inserted in the same scope.
fn undo_log(
    py: Python<'_>,
    shared: &Arc<Shared>,
    uow: &mut Uow,
    inserted: Vec<(IdentityKey, Py<InstanceState>)>,
    deleted: &[Held],
) -> PyResult<Undone> {
    let mut transient = Vec::new();
    let mut undone = Vec::new();
    // per mapper (by address): whether its class has relationships
    let mut related: HashMap<usize, bool, ahash::RandomState> = HashMap::default();
    let mut inserted_states: HashSet<usize, ahash::RandomState> = HashSet::default();
    let mut other = Vec::new();
    for (key, st) in inserted {
        if let Some((obj, live_st)) = uow.live(py, &key) {
            if live_st.bind(py).is(st.bind(py)) {
                uow.watched.remove(&(obj.as_ptr() as usize));
                uow.identity.remove(&key);
                let mapper = st.get().mapper.get();
                let addr = mapper as *const MapperCore as usize;
                let has = match related.get(&addr) {
                    Some(&has) => has,
                    None => {
                        let has = mapper.extra_init.bind(py).len()? > 0;
                        related.insert(addr, has);
                        has
                    }
                };
                if has {
                    undone.push(obj);
                }
            } else {
                other.push((obj, live_st));
            }
        }
        inserted_states.insert(st.as_ptr() as usize);
        transient.push(st);
    }
    // (an instance whose own INSERT it undid too becomes transient)
    other.retain(|(_, st)| !inserted_states.contains(&(st.as_ptr() as usize)));
    // (after the inserted objects left the identity map: a deleted object whose key one of
    // them took, by a row switch or after finding its row gone, takes its place back)
    for (obj, st) in deleted {
        if inserted_states.contains(&(st.as_ptr() as usize)) {
            continue; // inserted and deleted in the same scope: never existed
        }
        let key = st.get().lock()?.key();
        {
            let mut inner = st.get().lock()?;
            if !inner.in_session(shared) {
                continue; // expunged since: it stays detached (as in SQLAlchemy)
            }
            inner.set_lifecycle(Lifecycle::Persistent);
            inner.set_was_deleted(false);
        }
        if let Some(k) = key {
            if let Some((other, other_st)) = uow.live(py, &k) {
                if !other_st.bind(py).is(st.bind(py)) {
                    // another instance took the key since the DELETE (a detached copy attached
                    // again): it leaves the session, so that one instance only claims the key
                    // (SQLAlchemy's rollback replaces it in the identity map and leaves it
                    // claiming to be persistent in a session that does not hold it)
                    // (`other` still holds it: dropping what the sets held frees nothing)
                    drop(leave_session(uow, other.bind(py), other_st.get())?);
                }
            }
            uow.insert_identity(py, k, obj.bind(py), st.clone_ref(py))?;
        }
        watch(uow, obj.bind(py), st, st.get().mapper.get())?;
    }
    Ok((transient, undone, other))
}

/// What the session's sets held of an object taken out of them (`leave_session`), dropped
/// by the caller once it has released the unit of work: dropping the last reference to an
/// object may run code that uses it.
type Left = (
    Option<Held>,
    Option<Held>,
    Option<Held>,
    Option<(Held, Fingerprints)>,
);

/// Take `obj` out of the session: its change sets, the identity map (where it is the object
/// of its key) and its session link (detached; a pending expiry applied first, so that its
/// values stay readable).
fn leave_session(uow: &mut Uow, obj: &Bound<'_, PyAny>, st: &InstanceState) -> PyResult<Left> {
    let py = obj.py();
    let ptr = obj.as_ptr() as usize;
    let held = (
        uow.new.remove(&ptr),
        uow.dirty.remove(&ptr),
        uow.deleted.remove(&ptr),
        uow.watched.remove(&ptr),
    );
    let mut inner = st.lock()?;
    if let Some(key) = inner.key() {
        if uow.live(py, &key).is_some_and(|(o, _)| o.bind(py).is(obj)) {
            uow.identity.remove(&key);
        }
    }
    if inner.is_stale() {
        materialize_expiry(&mut inner, &instance_dict(obj)?, st.mapper.get())?;
    }
    inner.detach();
    Ok(held)
}

/// Make objects of a rolled-back scope transient again: pending ones, or (`inserted`) ones
/// whose INSERT the scope undid (their expired columns stay unreadable, see
/// `StateInner::expired_insert`).
fn make_transient_states(states: &[Py<InstanceState>], inserted: bool) -> PyResult<()> {
    for st in states {
        let mut inner = st.get().lock()?;
        inner.set_lifecycle(Lifecycle::Transient);
        inner.unlink();
        inner.set_key(None);
        inner.set_was_deleted(false);
        if inserted {
            // (a pending one keeps the mark of an INSERT an earlier rollback undid: the
            // values it held then are not values set since its creation)
            inner.set_expired_insert(true);
        }
        drop(inner.committed.clear());
    }
    Ok(())
}

/// Drop an object's loaded values (the primary key stays) and its unflushed changes.
fn expire_object(obj: &Bound<'_, PyAny>, state: &InstanceState) -> PyResult<()> {
    let py = obj.py();
    let m = state.mapper.get();
    let dict = instance_dict(obj)?;
    let mut inner = state.lock()?;
    let dropped = inner.committed.clear();
    inner.set_wholly_expired(true);
    for (i, k) in m.keys.iter().enumerate() {
        if m.pk.contains(&(i as u16)) {
            continue;
        }
        let k = k.bind(py);
        if dict.contains(k)? {
            dict.del_item(k)?;
        }
    }
    for name in m.extra_init.bind(py).try_iter()? {
        let name = name?;
        if dict.contains(&name)? {
            dict.del_item(&name)?;
        }
    }
    forget_relationship_changes(&dict)?;
    drop(inner);
    drop(dropped);
    Ok(())
}

/// The values of each unique column group of `m` that the changes `which` picks write (a
/// group with a column left NULL or not written left out: nothing to clash with).
fn unique_values_written(
    py: Python<'_>,
    m: &MapperCore,
    changes: &[Change],
    rows: &[Option<Row>],
    which: impl Fn(&Change) -> bool,
) -> PyResult<Vec<HashSet<Vec<KeyValue>>>> {
    let mut written: Vec<HashSet<Vec<KeyValue>>> = vec![HashSet::new(); m.unique.len()];
    for c in changes.iter().filter(|c| which(c)) {
        let row = rows[c.item].as_ref().expect("row present");
        'group: for (g, set) in m.unique.iter().zip(written.iter_mut()) {
            let mut value = Vec::with_capacity(g.len());
            for col in g {
                match c.cols.iter().position(|x| x == col) {
                    Some(pos) if !row.values[pos].is_none(py) => {
                        value.push(key_value(row.values[pos].bind(py))?)
                    }
                    _ => continue 'group,
                }
            }
            set.insert(value);
        }
    }
    Ok(written)
}

/// The changes (their indexes) whose rows point at a row, by the key they point at.
type PointersByKey = HashMap<Vec<KeyValue>, Vec<usize>>;

/// The values the row of `row` holds in the database for `cols` (before this flush): None
/// where one is not known in memory (not loaded, or set while expired), Some(None) where one
/// is NULL.
fn db_values(
    py: Python<'_>,
    m: &MapperCore,
    row: &Row,
    cols: &[u16],
) -> PyResult<Option<Option<Vec<KeyValue>>>> {
    let dict = instance_dict(row.held.0.bind(py))?;
    let inner = row.held.1.get().lock()?;
    let mut out = Vec::with_capacity(cols.len());
    let mut null = false;
    for &c in cols {
        let value = match inner.committed.get(c) {
            Some(Committed::Value(v)) => v.bind(py).clone(),
            Some(Committed::Unknown) => return Ok(None),
            None => match dict.get_item(m.keys[c as usize].bind(py))? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        if value.is_none() {
            null = true;
        } else {
            out.push(key_value(&value)?);
        }
    }
    Ok(Some((!null).then_some(out)))
}

/// Mark the DELETEs that free a unique value an UPDATE or INSERT of their table takes in this
/// flush, whose row no row of the flush points at before it (none of its table's or of a
/// table referencing it moves off the row or is deleted with it, as far as memory tells):
/// they run first in their table's step. The planner keeps the other DELETEs of a table that
/// rows of the flush may point at for the end, after the UPDATEs that move rows off them. (Not
/// for a table with a foreign key broken out of a cycle, whose rows are cleared before the
/// deletes.)
fn mark_early_deletes(
    py: Python<'_>,
    graph: &plan::MapperGraph,
    broken: &[usize],
    mappers: &HashMap<u32, Py<MapperCore>, ahash::RandomState>,
    changes: &mut [Change],
    rows: &[Option<Row>],
) -> PyResult<()> {
    let row_of = |c: &Change| rows[c.item].as_ref().expect("row present");
    let mut ids: Vec<u32> = changes
        .iter()
        .filter(|c| c.op == Op::Delete)
        .map(|c| c.mapper)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let m = mappers[&id].get();
        let cut = broken.iter().any(|&e| {
            let edge = &graph.edges[e];
            edge.parent == id || edge.child == id
        });
        if m.unique.is_empty() || cut {
            continue;
        }
        // the values of each unique group the UPDATEs and INSERTs of the table take
        let taken = unique_values_written(py, m, changes, rows, |c| {
            c.mapper == id && c.phase == Phase::Main && c.op != Op::Delete
        })?;
        if taken.iter().all(HashSet::is_empty) {
            continue;
        }
        // per edge into this table, the rows of the flush that point along it before the flush
        // and move off or are deleted: by the key they point at (None: one not known)
        let mut pointers: Vec<(&plan::Edge, Option<PointersByKey>)> = Vec::new();
        for edge in graph.edges.iter().filter(|e| e.parent == id) {
            let child = mappers.get(&edge.child).map(|x| x.get());
            let mut by_key = (edge.refs.len() == edge.cols.len()).then(HashMap::new);
            for (o, other) in changes.iter().enumerate() {
                let moving =
                    other.op == Op::Update && edge.cols.iter().any(|col| other.cols.contains(col));
                if other.mapper != edge.child || !(moving || other.op == Op::Delete) {
                    continue;
                }
                let (Some(child), Some(keys)) = (child, by_key.as_mut()) else {
                    by_key = None;
                    break;
                };
                match db_values(py, child, row_of(other), &edge.cols)? {
                    None => {
                        by_key = None;
                        break;
                    }
                    Some(Some(key)) => keys.entry(key).or_insert_with(Vec::new).push(o),
                    Some(None) => {}
                }
            }
            pointers.push((edge, by_key));
        }
        let mut early = Vec::new();
        for (d, c) in changes.iter().enumerate() {
            if c.mapper != id || c.op != Op::Delete || c.phase != Phase::Main {
                continue;
            }
            let row = row_of(c);
            let mut frees = false;
            for (g, set) in m.unique.iter().zip(&taken) {
                if let Some(Some(value)) = db_values(py, m, row, g)? {
                    frees |= set.contains(&value);
                }
            }
            if !frees {
                continue;
            }
            let mut clear = true;
            for (edge, by_key) in &pointers {
                let Some(by_key) = by_key else {
                    clear = false;
                    break;
                };
                // (a NULL in the referenced columns: nothing points at it)
                if let Some(Some(key)) = db_values(py, m, row, &edge.refs)? {
                    let others = by_key.get(&key).map(Vec::as_slice).unwrap_or_default();
                    if others.iter().any(|&o| o != d) {
                        clear = false;
                        break;
                    }
                }
            }
            if clear {
                early.push(d);
            }
        }
        for d in early {
            changes[d].early = true;
        }
    }
    Ok(())
}

/// Mark the UPDATEs that point a row at a row of its own table this flush inserts: they wait
/// for the table's INSERTs, while the others go before them, freeing unique values the
/// INSERTs may take. Where the key a new row will have is not known yet (generated by the
/// database, or a referenced column not mapped), every UPDATE pointing a row anywhere in the
/// table waits.
fn mark_follows_inserts(
    py: Python<'_>,
    graph: &plan::MapperGraph,
    mappers: &HashMap<u32, Py<MapperCore>, ahash::RandomState>,
    changes: &mut [Change],
    rows: &[Option<Row>],
) -> PyResult<()> {
    for edge in graph.edges.iter().filter(|e| e.parent == e.child) {
        let id = edge.child;
        let Some(mapper) = mappers.get(&id) else {
            continue;
        };
        let m = mapper.get();
        let is = |c: &Change, op: Op| c.mapper == id && c.op == op && c.phase == Phase::Main;
        if !changes.iter().any(|c| is(c, Op::Insert)) {
            continue;
        }
        // the values new rows will have in the referenced columns (None: not all known)
        let mut new_keys: Option<HashSet<Vec<KeyValue>>> =
            (edge.refs.len() == edge.cols.len()).then(HashSet::new);
        for c in changes.iter().filter(|c| is(c, Op::Insert)) {
            let Some(keys) = new_keys.as_mut() else { break };
            let row = rows[c.item].as_ref().expect("row present");
            let mut key = Vec::with_capacity(edge.refs.len());
            for r in &edge.refs {
                match c.cols.iter().position(|x| x == r) {
                    Some(pos) if !row.values[pos].is_none(py) => {
                        key.push(key_value(row.values[pos].bind(py))?)
                    }
                    _ => break,
                }
            }
            if key.len() == edge.refs.len() {
                keys.insert(key);
            } else {
                new_keys = None;
            }
        }
        for c in changes.iter_mut().filter(|c| is(c, Op::Update)) {
            if c.follows_inserts || !edge.cols.iter().any(|col| c.cols.contains(col)) {
                continue;
            }
            let row = rows[c.item].as_ref().expect("row present");
            let dict = instance_dict(row.held.0.bind(py))?;
            let mut key = Vec::with_capacity(edge.cols.len());
            for &col in &edge.cols {
                let value = match c.cols.iter().position(|x| *x == col) {
                    Some(pos) => Some(row.values[pos].bind(py).clone()),
                    None => dict.get_item(m.keys[col as usize].bind(py))?,
                };
                match value {
                    Some(v) if !v.is_none() => key.push(key_value(&v)?),
                    _ => break, // (a NULL in the key points nowhere)
                }
            }
            if key.len() == edge.cols.len() {
                c.follows_inserts = new_keys.as_ref().is_none_or(|keys| keys.contains(&key));
            }
        }
    }
    Ok(())
}

/// Order UPDATEs of one table in which unique values change hands (see
/// `engine::plan::unique_levels`), adding a NULL step for rows in a cycle.
fn unique_handoffs(
    py: Python<'_>,
    mappers: &HashMap<u32, Py<MapperCore>, ahash::RandomState>,
    changes: &mut Vec<Change>,
    rows: &mut Vec<Option<Row>>,
    extra: &mut Vec<(Option<u16>, Vec<u16>)>,
) -> PyResult<()> {
    type Group = plan::Handoff<Vec<KeyValue>>;
    let as_key = |v: Option<Bound<'_, PyAny>>| -> PyResult<Option<KeyValue>> {
        match v {
            Some(v) if !v.is_none() => Ok(Some(key_value(&v)?)),
            _ => Ok(None),
        }
    };
    let mut ids: Vec<u32> = mappers.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let m = mappers[&id].get();
        if m.unique.is_empty() {
            continue;
        }
        // the updates of this mapper that change a unique column
        let idx: Vec<usize> = (0..changes.len())
            .filter(|&i| {
                let c = &changes[i];
                c.mapper == id
                    && c.op == Op::Update
                    && c.phase == Phase::Main
                    && m.unique
                        .iter()
                        .any(|g| g.iter().any(|col| c.cols.contains(col)))
            })
            .collect();
        // an UPDATE that waits for the INSERTs (mark_follows_inserts) parks a unique value one
        // of them takes as NULL before them: it may be alone
        if idx.len() < 2 && !idx.iter().any(|&i| changes[i].follows_inserts) {
            continue;
        }
        // the values of each unique group the INSERTs take
        let inserted = unique_values_written(py, m, changes, rows, |c| {
            c.mapper == id && c.op == Op::Insert && c.phase == Phase::Main
        })?;
        let mut groups: Vec<Vec<Group>> = Vec::new();
        for &i in &idx {
            let row = rows[changes[i].item].as_ref().expect("row present");
            let dict = instance_dict(row.held.0.bind(py))?;
            let inner = row.held.1.get().lock()?;
            let mut per_group = Vec::new();
            for g in &m.unique {
                let (mut old, mut new) = (Some(Vec::new()), Some(Vec::new()));
                let mut unknown = false;
                for &c in g {
                    let current = dict.get_item(m.keys[c as usize].bind(py))?;
                    let before = match inner.committed.get(c) {
                        Some(Committed::Value(v)) => Some(v.bind(py).clone()),
                        Some(Committed::Unknown) => {
                            unknown = true;
                            None
                        }
                        None => current.clone(),
                    };
                    match (as_key(before)?, old.as_mut()) {
                        (Some(k), Some(o)) => o.push(k),
                        _ => old = None,
                    }
                    match (as_key(current)?, new.as_mut()) {
                        (Some(k), Some(n)) => n.push(k),
                        _ => new = None,
                    }
                }
                if old == new {
                    (old, new) = (None, None);
                }
                per_group.push(plan::Handoff {
                    frees_unknown: unknown,
                    gives: old,
                    takes: new,
                });
            }
            groups.push(per_group);
        }
        let parkable: Vec<bool> = m
            .unique
            .iter()
            .map(|g| g.iter().all(|&c| m.nullable[c as usize]))
            .collect();
        // An UPDATE waiting for the INSERTs that gives up a unique value another row takes
        // parks it as NULL before them, so that the taker need not wait for it. Where the
        // column is NOT NULL, an UPDATE taking it waits for the INSERTs in turn, and an INSERT
        // taking it cannot wait: that is refused below.
        let mut parked: Vec<ColSet> = vec![ColSet::new(); idx.len()];
        let mut taken = inserted.clone();
        for per_group in &groups {
            for (h, t) in per_group.iter().zip(taken.iter_mut()) {
                t.extend(h.takes.iter().cloned());
            }
        }
        let mut waiting: Vec<usize> = (0..idx.len())
            .filter(|&pos| changes[idx[pos]].follows_inserts)
            .collect();
        while let Some(pos) = waiting.pop() {
            for (gi, g) in m.unique.iter().enumerate() {
                let h = &mut groups[pos][gi];
                let gives = h.gives.as_ref();
                let by_insert = gives.is_some_and(|v| inserted[gi].contains(v));
                let park = parkable[gi]
                    && (gives.is_some_and(|v| taken[gi].contains(v))
                        || (h.frees_unknown && !taken[gi].is_empty()));
                if park || by_insert {
                    parked[pos].extend(g.iter().copied());
                }
                if park {
                    (h.gives, h.frees_unknown) = (None, false);
                    continue;
                }
                let (gives, unknown) = (h.gives.clone(), h.frees_unknown);
                if gives.is_none() && !unknown {
                    continue;
                }
                for other in 0..idx.len() {
                    let takes = groups[other][gi].takes.as_ref();
                    let takes_it = takes.is_some() && (unknown || takes == gives.as_ref());
                    if other != pos && takes_it && !changes[idx[other]].follows_inserts {
                        changes[idx[other]].follows_inserts = true;
                        waiting.push(other);
                    }
                }
            }
        }
        let shift = u32::from(parked.iter().any(|p| !p.is_empty()));
        let plan = plan::unique_levels(&groups, &parkable);
        for (pos, &i) in idx.iter().enumerate() {
            let (level, nulled) = plan[pos];
            changes[i].level = level + shift;
            let row = rows[changes[i].item].as_ref().expect("row present");
            let mut cols = std::mem::take(&mut parked[pos]);
            for ((g, h), &park) in m.unique.iter().zip(&groups[pos]).zip(&parkable) {
                // a value it gives up, or one not known in memory (parked where it may be)
                if nulled && (h.gives.is_some() || (park && h.frees_unknown && h.takes.is_some())) {
                    cols.extend(g.iter().copied());
                }
            }
            if cols.is_empty() {
                continue;
            }
            cols.sort_unstable();
            cols.dedup();
            if let Some(&c) = cols.iter().find(|&&c| !m.nullable[c as usize]) {
                return Err(super::errors::FlushError::new_err(format!(
                    "rows of {} exchange values of the unique column {} in one flush, which \
                     PostgreSQL checks row by row; it is NOT NULL, so retort cannot park a \
                     value as NULL in between: make the constraint DEFERRABLE INITIALLY \
                     DEFERRED, or flush the change in two steps",
                    m.table, m.col_names[c as usize]
                )));
            }
            let step = Row {
                held: (row.held.0.clone_ref(py), row.held.1.clone_ref(py)),
                values: cols.iter().map(|_| py.None()).collect(),
                writeback: Vec::new(),
                old_pk: row.old_pk.iter().map(|v| v.clone_ref(py)).collect(),
                switched: None,
            };
            changes.push(Change {
                mapper: id,
                op: Op::Update,
                cols,
                item: rows.len(),
                phase: Phase::Main,
                level: 0,
                follows_inserts: false,
                early: false,
            });
            rows.push(Some(step));
            extra.push((None, Vec::new()));
        }
    }
    Ok(())
}

/// The primary key of a row about to be inserted (it must be known for a post-update).
fn insert_pk(
    py: Python<'_>,
    m: &MapperCore,
    cols: &ColSet,
    row: &Row,
    gen_key: Option<u16>,
) -> PyResult<Vec<Py<PyAny>>> {
    m.pk.iter()
        .map(|p| match cols.iter().position(|c| c == p) {
            Some(pos) if gen_key != Some(*p) => Ok(row.values[pos].clone_ref(py)),
            _ => Err(super::errors::FlushError::new_err(format!(
                "a {} row must be inserted before the row it references exists, and updated \
                 afterwards, but its primary key is generated by the database; give it a key, \
                 or map a relationship along the foreign key so that retort allocates the key \
                 first",
                m.name
            ))),
        })
        .collect()
}

/// CircularDependencyError naming the rows and columns of a cycle no nullable key can break.
#[cold]
fn cycle_error(
    py: Python<'_>,
    graph: &plan::MapperGraph,
    cycle: &plan::Cycle,
    new: &[Held],
) -> PyErr {
    let mut lines: Vec<String> = Vec::new();
    let mut cycles: Vec<(String, String, String)> = Vec::new();
    for &e in &cycle.edges {
        let edge = &graph.edges[e];
        for (obj, st) in new {
            let m = st.get().mapper.get();
            if m.id != edge.child {
                continue;
            }
            let Ok(dict) = instance_dict(obj.bind(py)) else {
                continue;
            };
            let show = |cols: &[u16]| -> String {
                cols.iter()
                    .map(|&c| {
                        let v = dict
                            .get_item(m.keys[c as usize].bind(py))
                            .ok()
                            .flatten()
                            .and_then(|v| v.repr().ok().map(|r| r.to_string()))
                            .unwrap_or_else(|| "?".into());
                        format!("{}={v}", m.col_names[c as usize])
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let row = format!("{}({})", m.table, show(&m.pk));
            let refs = show(&edge.cols);
            cycles.push((row.clone(), refs.clone(), edge.reason.clone()));
            if lines.len() < 10 {
                lines.push(format!("{row} references it through {refs}"));
            }
        }
    }
    let reasons: Vec<&str> = cycle
        .edges
        .iter()
        .map(|&e| graph.edges[e].reason.as_str())
        .collect();
    let message = format!(
        "cannot order this flush: rows reference each other through NOT NULL foreign keys \
         ({}); rows in the cycle: {}. Make one of these foreign keys nullable (retort then \
         inserts NULL and sets it afterwards) or use relationship(post_update=True) on it",
        reasons.join("; "),
        if lines.is_empty() {
            "none pending".to_string()
        } else {
            lines.join("; ")
        }
    );
    super::errors::CircularDependencyError::new_err((message, cycles))
}

fn load_value<'py>(
    mapper: &MapperCore,
    col: usize,
    v: Bound<'py, PyAny>,
    process: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if process {
        result_value(mapper, col, v)
    } else {
        Ok(v)
    }
}

impl SessionCore {
    /// `cascade_add`'s walk; `added` receives each object it adds to the session, in order.
    fn cascade_add_walk<'py>(
        &self,
        root: &Bound<'py, PyAny>,
        changed: &Bound<'py, PyDict>,
        added: &mut Vec<Bound<'py, PyAny>>,
    ) -> PyResult<bool> {
        let py = root.py();
        changed.set_item(root.as_ptr() as usize, root)?;
        // each class's save-update relationships and whether it has relationships, looked up
        // once per call (a cascade meets few classes)
        let mut classes: Vec<(usize, CascadeProps, bool)> = Vec::new();
        let mut info = |mapper: &Bound<'_, MapperCore>| -> PyResult<Option<(CascadeProps, bool)>> {
            let at = mapper.as_ptr() as usize;
            if let Some((_, props, related)) = classes.iter().find(|c| c.0 == at) {
                return Ok(Some((props.clone(), *related)));
            }
            let guard = mapper.get().cascade.lock().map_err(|_| busy("mapper"))?;
            let Some(c) = guard.as_ref() else {
                return Ok(None);
            };
            let props: CascadeProps = Rc::new(
                c.save_update
                    .iter()
                    .map(|(k, l)| (k.clone_ref(py), *l))
                    .collect(),
            );
            classes.push((at, props.clone(), c.related));
            Ok(Some((props, c.related)))
        };
        let Some((root_props, _)) = info(&mapper_of(root)?)? else {
            return Ok(false);
        };
        let mut stack = vec![(root.clone(), root_props)];
        let mut seen: HashSet<usize, ahash::RandomState> = HashSet::default();
        seen.insert(root.as_ptr() as usize);
        while let Some((current, props)) = stack.pop() {
            if props.is_empty() {
                continue;
            }
            let dict = instance_dict(&current)?;
            if sync::is_stale_in(&dict)? {
                // expired since (commit, rollback, expire_all): the values its __dict__ still
                // holds are expired, and SQLAlchemy's cascade follows loaded values only
                continue;
            }
            for (key, uselist) in props.iter() {
                let Some(value) = dict.get_item(key.bind(py))? else {
                    continue;
                };
                let items = sync::cascade_members(&dict, key.bind(py), value, *uselist)?;
                for item in items {
                    if !seen.insert(item.as_ptr() as usize) {
                        continue;
                    }
                    let mapper = mapper_of(&item)?;
                    let how = self.add_of(&item, Some(&mapper))?;
                    if !how.is_empty() {
                        added.push(item.clone());
                        let Some((item_props, related)) = info(&mapper)? else {
                            return Ok(false);
                        };
                        if related {
                            changed.set_item(item.as_ptr() as usize, &item)?;
                        }
                        // the cascade halts at objects already in the session (SQLAlchemy's
                        // halt_on): what they hold was cascaded when they joined it
                        stack.push((item, item_props));
                    }
                }
            }
        }
        Ok(true)
    }

    /// `add()`, given the object's mapper when the caller has it.
    fn add_of(
        &self,
        obj: &Bound<'_, PyAny>,
        mapper: Option<&Bound<'_, MapperCore>>,
    ) -> PyResult<&'static str> {
        let py = obj.py();
        let (dict, st) = ensure_state_of(obj, mapper)?;
        let state = st.get();
        let mut inner = state.lock()?;
        match inner.effective() {
            Lifecycle::Transient => {
                inner.attach(&self.shared, Lifecycle::Pending);
                inner.set_key(None);
                drop(inner);
                let mut uow = self.uow()?;
                uow.new.insert_if_absent(obj.as_ptr() as usize, || {
                    (obj.clone().unbind(), st.clone().unbind())
                });
                Ok("pending")
            }
            Lifecycle::Pending | Lifecycle::Persistent => {
                if inner.in_session(&self.shared) {
                    Ok("")
                } else {
                    Err(InvalidRequestError::new_err(format!(
                        "{} is already attached to another Session; expunge it from that \
                         session (or close it) first, or use session.merge() to copy its state \
                         into this one",
                        describe(obj)
                    )))
                }
            }
            Lifecycle::Deleted => Err(InvalidRequestError::new_err(format!(
                "{} has been deleted in this transaction; use make_transient() to turn it \
                 back into a new object before adding it again",
                describe(obj)
            ))),
            Lifecycle::Detached if inner.was_deleted() => {
                Err(InvalidRequestError::new_err(format!(
                    "{} was deleted and its deletion committed, so its row is gone; use \
                     make_transient() to insert it again as a new object",
                    describe(obj)
                )))
            }
            Lifecycle::Detached => {
                let mapper = state.mapper.get();
                let key = inner.key().ok_or_else(|| {
                    InvalidRequestError::new_err("detached object without identity")
                })?;
                let mut uow = self.uow()?;
                if let Some((other, _)) = uow.live(py, &key) {
                    if !other.bind(py).is(obj) {
                        return Err(InvalidRequestError::new_err(format!(
                            "cannot attach {}: another instance with identity {} {} is \
                             already present in this session; use session.merge() to copy \
                             this object's state onto the instance the session holds",
                            describe(obj),
                            mapper.name,
                            key
                        )));
                    }
                }
                if inner.is_stale() {
                    materialize_expiry(&mut inner, &dict, mapper)?;
                }
                inner.attach(&self.shared, Lifecycle::Persistent);
                let dirty = !inner.committed.is_empty();
                drop(inner);
                let ptr = obj.as_ptr() as usize;
                uow.insert_identity(py, key, obj, st.clone().unbind())?;
                if dirty {
                    uow.dirty
                        .insert_if_absent(ptr, || (obj.clone().unbind(), st.clone().unbind()));
                }
                watch(&mut uow, obj, &st.clone().unbind(), mapper)?;

                Ok("persistent")
            }
        }
    }

    /// Whether an object is marked for deletion at the next flush (no lookup while none is).
    fn marked_deleted(&self) -> PyResult<impl Fn(&Bound<'_, PyAny>) -> PyResult<bool> + '_> {
        let any = !self.uow()?.deleted.is_empty();
        Ok(move |o: &Bound<'_, PyAny>| {
            Ok(any && self.uow()?.deleted.contains_key(&(o.as_ptr() as usize)))
        })
    }

    /// Whether an instance's state belongs to this session.
    fn holds(&self) -> impl Fn(&Bound<'_, InstanceState>) -> PyResult<bool> + '_ {
        move |s: &Bound<'_, InstanceState>| Ok(s.get().lock()?.in_session(&self.shared))
    }

    fn uow(&self) -> PyResult<MutexGuard<'_, Uow>> {
        self.shared.uow.try_lock().map_err(|_| busy("session"))
    }

    /// The object of class `entity` with primary key `ident` when it is in the identity map
    /// and loaded; None otherwise (including any bad argument: the full path then raises the
    /// right error).
    fn identity_hit<'py>(
        &self,
        entity: &Bound<'py, PyAny>,
        ident: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyAny>> {
        let py = entity.py();
        let Ok(core) = entity.getattr(pyo3::intern!(py, "_retort_core")) else {
            return None;
        };
        let Ok(mapper) = core.cast::<MapperCore>() else {
            return None;
        };
        let m = mapper.get();
        if !entity.is(m.class_.bind(py)) {
            return None; // a subclass: let the full path decide
        }
        let Ok(key) = self.ident_from(m, ident) else {
            return None;
        };
        let Ok(uow) = self.shared.uow.try_lock() else {
            return None;
        };
        let e = uow.identity.get(&key)?;
        let obj = e.object(py)?;
        let fresh = matches!(e.state.get().lock(), Ok(st) if !st.expired_whole());
        drop(uow);
        fresh.then_some(obj)
    }

    fn ident_from<'py>(
        &self,
        mapper: &MapperCore,
        ident: &Bound<'py, PyAny>,
    ) -> PyResult<IdentityKey> {
        let n = mapper.pk.len();
        if n == 1 {
            if let Some(key) = int_key(mapper, ident) {
                return Ok(key);
            }
        }
        if let Ok(t) = ident.cast::<PyTuple>() {
            if t.len() != n {
                return Err(wrong_key_len(mapper, n, t.len()));
            }
            if n == 1 {
                if let Some(key) = int_key(mapper, &t.get_item(0)?) {
                    return Ok(key);
                }
            }
            return identity_key(mapper.id, t.iter());
        }
        if let Ok(l) = ident.cast::<PyList>() {
            if l.len() != n {
                return Err(wrong_key_len(mapper, n, l.len()));
            }
            return identity_key(mapper.id, l.iter());
        }
        if n != 1 {
            return Err(wrong_key_len(mapper, n, 1));
        }
        Ok(IdentityKey::new(mapper.id, [key_value(ident)?]))
    }

    /// Build the insert row of a pending object.
    fn insert_row(
        py: Python<'_>,
        held: Held,
        mapper: &MapperCore,
    ) -> PyResult<(ColSet, Option<u16>, Vec<u16>, Row)> {
        let dict = instance_dict(held.0.bind(py))?;
        let mut cols = ColSet::new();
        let mut values = Vec::with_capacity(mapper.ncols());
        let mut writeback = Vec::new();
        let mut gen_key = None;
        let mut fetch = Vec::new();
        let expired_insert = held.1.get().lock()?.expired_insert();
        for (i, key) in mapper.keys.iter().enumerate() {
            let c = i as u16;
            let v = match dict.get_item(key.bind(py))? {
                None if expired_insert => {
                    return Err(InvalidRequestError::new_err(format!(
                        "cannot insert {}: its attribute '{}' was expired before a rollback \
                         undid its INSERT, so its value is unknown; set it again (or expunge \
                         the object) before the flush",
                        held.0.bind(py).repr()?,
                        key.bind(py)
                    )));
                }
                Some(v)
                    if !(v.is_none()
                        && (mapper.autoinc == Some(c) || mapper.version == Some(c))) =>
                {
                    v.unbind()
                }
                _ => {
                    if mapper.version == Some(c) {
                        // a versioned row starts at 1
                        let one = 1i64.into_pyobject(py)?.into_any().unbind();
                        writeback.push((c, one.clone_ref(py)));
                        cols.push(c);
                        values.push(one);
                        continue;
                    }
                    if let Some(d) = &mapper.defaults[i] {
                        let v = d.value(py)?;
                        writeback.push((c, v.clone_ref(py)));
                        v
                    } else if mapper.autoinc == Some(c) {
                        gen_key = Some(c);
                        continue;
                    } else if mapper.server_default[i] {
                        fetch.push(c);
                        continue;
                    } else {
                        writeback.push((c, py.None()));
                        py.None()
                    }
                }
            };
            cols.push(c);
            values.push(bind_value(py, mapper, c, v)?);
        }
        let row = Row {
            held,
            values,
            writeback,
            old_pk: Vec::new(),
            switched: None,
        };
        Ok((cols, gen_key, fetch, row))
    }

    fn update_row(
        py: Python<'_>,
        held: Held,
        mapper: &MapperCore,
    ) -> PyResult<Option<(ColSet, Row)>> {
        let dict = instance_dict(held.0.bind(py))?;
        let state = held.1.get();
        let inner = state.lock()?;
        let changed = inner.committed.changed_attrs();
        if changed.is_empty() {
            return Ok(None);
        }
        let mut cols: ColSet = changed.iter().copied().collect();
        let mut writeback = Vec::new();
        let mut old_version = None;
        if let Some(vc) = mapper.version {
            // the version the row had when loaded; the UPDATE sets the next one
            let current = match inner.committed.get(vc) {
                Some(Committed::Value(v)) => Some(v.clone_ref(py)),
                _ => dict
                    .get_item(mapper.keys[vc as usize].bind(py))?
                    .map(|v| v.unbind()),
            };
            let current = current.filter(|v| !v.is_none(py)).ok_or_else(|| {
                super::errors::FlushError::new_err(format!(
                    "{} has no version to check: its version column {} is NULL",
                    mapper.name, mapper.col_names[vc as usize]
                ))
            })?;
            let next = current.bind(py).add(1)?.unbind();
            if !cols.contains(&vc) {
                cols.push(vc);
            }
            writeback.push((vc, next));
            old_version = Some(current);
        }
        for (i, d) in mapper.onupdate.iter().enumerate() {
            if let Some(d) = d {
                if !cols.contains(&(i as u16)) {
                    cols.push(i as u16);
                    writeback.push((i as u16, d.value(py)?));
                }
            }
        }
        cols.sort_unstable();
        let mut values = Vec::with_capacity(cols.len());
        for &c in &cols {
            let v = match writeback.iter().find(|(w, _)| *w == c) {
                Some((_, v)) => v.clone_ref(py),
                None => dict
                    .get_item(mapper.keys[c as usize].bind(py))?
                    .map(|v| v.unbind())
                    .unwrap_or_else(|| py.None()),
            };
            values.push(bind_value(py, mapper, c, v)?);
        }
        let mut old_pk = db_pk_values(py, &dict, &inner, mapper)?;
        old_pk.extend(old_version);
        drop(inner);
        Ok(Some((
            cols,
            Row {
                held,
                values,
                writeback,
                old_pk,
                switched: None,
            },
        )))
    }

    fn delete_row(py: Python<'_>, held: Held, mapper: &MapperCore) -> PyResult<Row> {
        let dict = instance_dict(held.0.bind(py))?;
        let inner = held.1.get().lock()?;
        let mut old_pk = db_pk_values(py, &dict, &inner, mapper)?;
        if let Some(vc) = mapper.version {
            let v = match inner.committed.get(vc) {
                Some(Committed::Value(v)) => Some(v.clone_ref(py)),
                _ => dict
                    .get_item(mapper.keys[vc as usize].bind(py))?
                    .map(|v| v.unbind()),
            };
            old_pk.push(v.unwrap_or_else(|| py.None()));
        }
        drop(inner);
        Ok(Row {
            held,
            values: Vec::new(),
            writeback: Vec::new(),
            old_pk,
            switched: None,
        })
    }
}

#[cold]
/// The key of a one-column primary key whose value is an `int` (not a subclass, such as
/// bool) that fits in i64: the common key, built without the general conversion, as
/// `IdentityKey::new` builds it. None for any other value.
fn int_key(mapper: &MapperCore, value: &Bound<'_, PyAny>) -> Option<IdentityKey> {
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let value = value.extract::<i64>().ok()?;
    Some(IdentityKey::Int {
        mapper: mapper.id,
        value,
    })
}

fn wrong_key_len(mapper: &MapperCore, expected: usize, got: usize) -> PyErr {
    InvalidRequestError::new_err(format!(
        "{} has a primary key of {expected} column(s) but {got} value(s) were given; pass a \
         scalar for a single-column key, or a tuple (in primary-key column order) or a dict \
         keyed by attribute name for a composite key",
        mapper.name
    ))
}

fn key_from_dict(mapper: &MapperCore, dict: &Bound<'_, PyDict>) -> PyResult<IdentityKey> {
    identity_key(mapper.id, pk_values(dict, mapper)?.into_iter())
}

#[pymethods]
impl SessionCore {
    #[new]
    fn new(owner: Py<PyAny>) -> Self {
        SessionCore {
            shared: Arc::new_cyclic(|me| Shared {
                link: Mutex::new(Link::new(me.clone())),
                owner,
                uow: Mutex::new(Uow {
                    identity: IdentityMap::new(),
                    new: fast_map(),
                    dirty: fast_map(),
                    deleted: fast_map(),
                    watched: fast_map(),
                    tx_inserted: Vec::new(),
                    tx_deleted: Vec::new(),
                    tx_rekeyed: Vec::new(),
                    savepoints: Vec::new(),
                }),
            }),
        }
    }

    /// Add an object. Returns "pending" (transient → pending), "persistent" (detached →
    /// persistent) or "" when it was already in this session. With `revert_deletion` (the
    /// object given to `Session.add()` itself, not one its cascade reaches), an object marked
    /// for deletion is not any more, as in SQLAlchemy, and its changes are flushed again.
    #[pyo3(signature = (obj, revert_deletion = false))]
    fn add(&self, obj: &Bound<'_, PyAny>, revert_deletion: bool) -> PyResult<&'static str> {
        let how = self.add_of(obj, None)?;
        if revert_deletion && how.is_empty() {
            let ptr = obj.as_ptr() as usize;
            let unmarked = self.uow()?.deleted.remove(&ptr);
            // (the state is read without the unit of work locked, as add_of does)
            if let Some((o, st)) = unmarked {
                // delete() took it out of the dirty set: its changes are flushed again
                if !st.get().lock()?.committed.is_empty() {
                    self.uow()?.dirty.insert_if_absent(ptr, || (o, st));
                }
            }
        }
        Ok(how)
    }

    /// Whether the object is marked for deletion at the next flush.
    fn is_marked_deleted(&self, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.uow()?.deleted.contains_key(&(obj.as_ptr() as usize)))
    }

    /// Mark a persistent object for deletion at the next flush.
    fn delete(&self, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        let dict = instance_dict(obj)?;
        let st = match state_in(&dict)? {
            Some(s) => s,
            None => {
                mapper_of(obj)?;
                Lifecycle::Transient.check_delete(&describe(obj))?;
                unreachable!("a transient object cannot be deleted")
            }
        };
        let mut inner = st.get().lock()?;
        let mut life = inner.effective();
        if life == Lifecycle::Detached {
            // Like SQLAlchemy: deleting a detached object attaches it to this session first.
            drop(inner);
            self.add_of(obj, None)?;
            inner = st.get().lock()?;
            life = inner.effective();
        }
        if life == Lifecycle::Persistent && !inner.in_session(&self.shared) {
            return Err(InvalidRequestError::new_err(format!(
                "{} belongs to another Session; delete it through that session",
                describe(obj)
            )));
        }
        if life != Lifecycle::Persistent {
            life.check_delete(&describe(obj))?; // describe (a repr) only for the error
        }
        drop(inner);
        let mut uow = self.uow()?;
        let ptr = obj.as_ptr() as usize;
        if uow.deleted.contains_key(&ptr) {
            return Ok(false);
        }
        let held = uow.dirty.remove(&ptr);
        uow.deleted
            .insert_if_absent(ptr, || (obj.clone().unbind(), st.unbind()));
        drop(uow);
        drop(held);
        Ok(true)
    }

    /// Remove an object from the session: pending → transient, persistent → detached.
    fn expunge(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let dict = instance_dict(obj)?;
        let st = state_in(&dict)?;
        let st = match st {
            Some(s) if s.get().lock()?.in_session(&self.shared) => s,
            Some(_) => {
                return Err(InvalidRequestError::new_err(format!(
                    "{} is not present in this Session, so it cannot be expunged; if it \
                     belongs to another session, expunge it there: \
                     object_session(obj).expunge(obj)",
                    describe(obj)
                )));
            }
            None => {
                mapper_of(obj)?;
                return Err(InvalidRequestError::new_err(format!(
                    "{} is not present in this Session, so it cannot be expunged",
                    describe(obj)
                )));
            }
        };
        let mut uow = self.uow()?;
        let left = leave_session(&mut uow, obj, st.get())?;
        drop(uow);
        drop(left);
        Ok(())
    }

    /// Look an identity up. Returns the object, None when absent, False when marked for
    /// deletion, or NEEDS_LOAD
    /// when the object is present but expired and must be refreshed.
    fn get<'py>(
        &self,
        mapper: &Bound<'py, MapperCore>,
        ident: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = mapper.py();
        let key = self.ident_from(mapper.get(), ident)?;
        let uow = self.uow()?;
        // (an object marked for deletion is still returned until the flush, as SQLAlchemy does)
        let Some((obj, st)) = uow.live(py, &key) else {
            return Ok(py.None().into_bound(py));
        };
        drop(uow);
        if st.get().lock()?.expired_whole() {
            return Ok(NEEDS_LOAD
                .get(py)
                .expect("module initialised")
                .bind(py)
                .clone());
        }
        Ok(obj.into_bound(py))
    }

    /// The save-update cascade of `add()`, walked in the core: add every object reachable
    /// from `root` through loaded relationships with that cascade, and record in `changed`
    /// (the session's `{id(obj): obj}` of objects whose relationships the next flush syncs)
    /// `root` and every newly added object of a class with relationships. All or nothing:
    /// where an object on the way is refused (its DELETE was flushed, another session holds
    /// it, another instance has its identity), the objects this call added leave the session
    /// again (and `changed`) before the error is raised; `root` is the caller's. False when a
    /// mapper on the way is not configured yet, after the same undo: the caller then walks in
    /// Python. Session events are not fired: with listeners the caller walks in Python.
    fn cascade_add(&self, root: &Bound<'_, PyAny>, changed: &Bound<'_, PyDict>) -> PyResult<bool> {
        let mut added = Vec::new();
        let outcome = self.cascade_add_walk(root, changed, &mut added);
        if !matches!(outcome, Ok(true)) {
            for obj in added.iter().rev() {
                let at = obj.as_ptr() as usize;
                if changed.contains(at)? {
                    changed.del_item(at)?;
                }
                self.expunge(obj)?;
            }
        }
        outcome
    }

    /// The flush's relationship key sync, pass one: one-to-many collections that only gained
    /// members (see `sync.rs`). Returns what Python settles, in order.
    fn sync_collections<'py>(
        &self,
        objs: &Bound<'py, PyList>,
        collections: &Bound<'py, PyList>,
        outside: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyList>> {
        let is_deleted = self.marked_deleted()?;
        sync::sync_collections(objs, &is_deleted, &self.holds(), collections, outside)
    }

    /// The flush's relationship key sync, pass two: changed many-to-ones. Returns (target,
    /// relationship) for each target outside the session.
    fn sync_many_to_one<'py>(&self, objs: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        sync::sync_many_to_one(objs, &self.marked_deleted()?, &self.holds())
    }

    /// After the flush: the synced collections and objects forget their change history.
    fn sync_done(&self, objs: &Bound<'_, PyList>, collections: &Bound<'_, PyList>) -> PyResult<()> {
        sync::sync_done(objs, collections)
    }

    /// `Session.get`, bound to each session as its `get` attribute: an identity-map hit on a
    /// loaded object is answered here; anything else (a miss, an expired object, options, a
    /// bad argument, which must raise the right error) goes to `Session._get_full`.
    #[pyo3(signature = (entity, ident, *, populate_existing=false, with_for_update=None))]
    fn session_get<'py>(
        &self,
        entity: &Bound<'py, PyAny>,
        ident: &Bound<'py, PyAny>,
        populate_existing: bool,
        with_for_update: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = entity.py();
        let plain = !populate_existing && with_for_update.is_none_or(|w| w.is_none());
        if plain {
            if let Some(obj) = self.identity_hit(entity, ident) {
                return Ok(obj);
            }
        }
        let session = self.shared.owner(py).into_bound(py);
        if session.is_none() {
            return Err(InvalidRequestError::new_err(
                "this session was garbage-collected; keep a reference to the Session while \
                 using it",
            ));
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(pyo3::intern!(py, "populate_existing"), populate_existing)?;
        kwargs.set_item(pyo3::intern!(py, "with_for_update"), with_for_update)?;
        session.call_method(
            pyo3::intern!(py, "_get_full"),
            (entity, ident),
            Some(&kwargs),
        )
    }

    /// The identity key of `ident` for `mapper`, validated (raises on a wrong shape).
    fn check_ident(
        &self,
        mapper: &Bound<'_, MapperCore>,
        ident: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.ident_from(mapper.get(), ident).map(|_| ())
    }

    /// Turn a page of result rows into instances: `ncols` columns from `offset` of each row
    /// belong to `mapper`. Objects already in the identity map are returned as they are
    /// (unloaded attributes are filled in) unless `populate_existing`. With `process`, the
    /// columns' result processors are applied (skip it when the rows were processed already).
    #[pyo3(signature = (mapper, rows, offset, populate_existing, process=true))]
    fn load_rows<'py>(
        &self,
        mapper: &Bound<'py, MapperCore>,
        rows: &Bound<'py, PyList>,
        offset: usize,
        populate_existing: bool,
        process: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = mapper.py();
        let m = mapper.get();
        let n = m.ncols();
        let out = PyList::empty(py);
        let state_key = STATE_KEY.get(py);
        let cls = m.class_.bind(py);
        let object_new = m.object_new.bind(py);
        let mut uow = self.uow()?;
        let link = self.shared.link();
        for row in rows.iter() {
            let row = row.cast_into::<PyTuple>()?;
            if row.len() < offset + n {
                return Err(PyTypeError::new_err(
                    "load_rows: row is shorter than the mapper's columns",
                ));
            }
            let key = identity_key(
                m.id,
                m.pk.iter()
                    .map(|&i| row.get_item(offset + i as usize).expect("checked length")),
            )?;
            if let Some((obj, st)) = uow.live(py, &key) {
                let obj = obj.into_bound(py);
                let dict = instance_dict(&obj)?;
                let mut inner = st.get().lock()?;
                if inner.is_stale() {
                    materialize_expiry(&mut inner, &dict, m)?;
                }
                let mut filled = false;
                let discarded = if populate_existing {
                    // The database's values win, and unflushed changes are discarded.
                    inner.committed.clear()
                } else {
                    Default::default()
                };
                for (i, k) in m.keys.iter().enumerate() {
                    let k = k.bind(py);
                    if populate_existing || !dict.contains(k)? {
                        dict.set_item(k, load_value(m, i, row.get_item(offset + i)?, process)?)?;
                        filled = true;
                    }
                }
                inner.set_wholly_expired(false);
                drop(inner);
                drop(discarded);
                if populate_existing {
                    let removed = uow.dirty.remove(&(obj.as_ptr() as usize));
                    drop(removed);
                }
                if filled {
                    watch(&mut uow, &obj, &st, m)?;
                }
                out.append(obj)?;
                continue;
            }
            let obj = object_new.call1((cls,))?;
            let dict = instance_dict(&obj)?;
            for (i, k) in m.keys.iter().enumerate() {
                dict.set_item(
                    k.bind(py),
                    load_value(m, i, row.get_item(offset + i)?, process)?,
                )?;
            }
            let state = InstanceState::new_transient(mapper.clone().unbind());
            {
                let mut inner = state.lock()?;
                inner.attach_to(&link, Lifecycle::Persistent);
                inner.set_key(Some(key.clone()));
            }
            let state = Bound::new(py, state)?;
            untrack_state(&state);
            let state = state.unbind();
            dict.set_item(state_key, state.bind(py))?;
            watch(&mut uow, &obj, &state, m)?;
            uow.insert_identity(py, key, &obj, state)?;
            out.append(obj)?;
        }
        Ok(out)
    }

    /// Pending objects whose database-generated key is not known yet, counted per mapper (in
    /// the order the mappers first appear among pending objects).
    fn pending_key_counts(&self, py: Python<'_>) -> PyResult<Vec<(Py<MapperCore>, usize)>> {
        let uow = self.uow()?;
        let mut out: Vec<(Py<MapperCore>, usize)> = Vec::new();
        for (obj, st) in uow.new.values() {
            let m = st.get().mapper.bind(py);
            let Some(c) = m.get().autoinc else { continue };
            let dict = instance_dict(obj.bind(py))?;
            let missing = match dict.get_item(m.get().keys[c as usize].bind(py))? {
                None => true,
                Some(v) => v.is_none(),
            };
            if !missing {
                continue;
            }
            match out.iter_mut().find(|(mm, _)| mm.bind(py).is(m)) {
                Some((_, n)) => *n += 1,
                None => out.push((m.clone().unbind(), 1)),
            }
        }
        Ok(out)
    }

    /// Give pending objects of `mapper` without a generated key the keys pre-allocated for
    /// them, in the order they were added.
    fn assign_keys(&self, mapper: &Bound<'_, MapperCore>, keys: Vec<Py<PyAny>>) -> PyResult<()> {
        let py = mapper.py();
        let m = mapper.get();
        let Some(c) = m.autoinc else {
            return Err(InvalidRequestError::new_err(format!(
                "{} has no database-generated key",
                m.name
            )));
        };
        let key = m.keys[c as usize].bind(py);
        let pending: Vec<Py<PyAny>> = {
            let uow = self.uow()?;
            uow.new
                .values()
                .filter(|(_, st)| st.get().mapper.bind(py).is(mapper))
                .map(|(o, _)| o.clone_ref(py))
                .collect()
        };
        let mut keys = keys.into_iter();
        for obj in pending {
            let dict = instance_dict(obj.bind(py))?;
            let missing = match dict.get_item(key)? {
                None => true,
                Some(v) => v.is_none(),
            };
            if missing {
                let k = keys.next().ok_or_else(|| {
                    InvalidRequestError::new_err("assign_keys: fewer keys than pending objects")
                })?;
                dict.set_item(key, k)?;
            }
        }
        Ok(())
    }

    /// Whether anything waits to be flushed (including in-place changes of JSON values).
    fn has_changes(&self, py: Python<'_>) -> PyResult<bool> {
        self.scan_mutations(py)?;
        let uow = self.uow()?;
        Ok(!(uow.new.is_empty() && uow.dirty.is_empty() && uow.deleted.is_empty()))
    }

    /// Plan a flush without changing anything.
    fn plan(&self, py: Python<'_>) -> PyResult<FlushPlan> {
        self.scan_mutations(py)?;
        let (new, dirty, deleted): (Vec<Held>, Vec<Held>, Vec<Held>) = {
            let uow = self.uow()?;
            let clone = |m: &FastMap<usize, Held>| -> Vec<Held> {
                m.values()
                    .map(|(o, s)| (o.clone_ref(py), s.clone_ref(py)))
                    .collect()
            };
            (clone(&uow.new), clone(&uow.dirty), clone(&uow.deleted))
        };
        let graph = mapper::graph()?;
        // Order the mappers first: the edges broken to do so change the rows.
        let mut ids: Vec<u32> = new
            .iter()
            .chain(dirty.iter())
            .chain(deleted.iter())
            .map(|(_, st)| st.get().mapper.get().id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let involved: Vec<u32> = graph
            .mappers
            .iter()
            .copied()
            .filter(|m| ids.binary_search(m).is_ok())
            .collect();
        let ordering = match graph.order_of(&involved) {
            Ok(o) => o,
            Err(cycle) => return Err(cycle_error(py, &graph, &cycle, &new)),
        };
        // Foreign-key columns set after the fact, per child mapper.
        let mut late: HashMap<u32, Vec<u16>> = HashMap::new();
        for &e in &ordering.broken {
            let edge = &graph.edges[e];
            let cols = late.entry(edge.child).or_default();
            for &c in &edge.cols {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
        let mut changes = Vec::with_capacity(new.len() + dirty.len() + deleted.len());
        let mut rows: Vec<Option<Row>> = Vec::with_capacity(changes.capacity());
        let mut extra: Vec<(Option<u16>, Vec<u16>)> = Vec::with_capacity(changes.capacity());
        let mut mappers: HashMap<u32, Py<MapperCore>, ahash::RandomState> = HashMap::default();
        let mut push =
            |mapper: &Py<MapperCore>, op: Op, phase: Phase, cols: ColSet, row: Row, x| {
                let id = mapper.get().id;
                mappers.entry(id).or_insert_with(|| mapper.clone_ref(py));
                changes.push(Change {
                    mapper: id,
                    op,
                    cols,
                    item: rows.len(),
                    phase,
                    level: 0,
                    follows_inserts: false,
                    early: false,
                });
                rows.push(Some(row));
                extra.push(x);
            };
        let none = (None, Vec::new());
        // Row switch: a new object taking the identity of one deleted in this flush updates
        // that row instead of deleting and inserting it.
        let mut switchable: HashMap<IdentityKey, Held, ahash::RandomState> = HashMap::default();
        for (obj, st) in &deleted {
            if let Some(k) = st.get().lock()?.key() {
                switchable.insert(k, (obj.clone_ref(py), st.clone_ref(py)));
            }
        }
        let mut switched_out: Vec<usize> = Vec::new();
        for held in new {
            let mapper = held.1.get().mapper.clone_ref(py);
            let m = mapper.get();
            if !switchable.is_empty() {
                let dict = instance_dict(held.0.bind(py))?;
                let complete = pk_values(&dict, m)?.iter().all(|v| !v.is_none());
                if complete {
                    if let Some(old) = switchable.remove(&key_from_dict(m, &dict)?) {
                        let (cols, _, _, row) = Self::insert_row(py, held, m)?;
                        let (mut set_cols, mut values) = (ColSet::new(), Vec::new());
                        let mut old_pk = Vec::new();
                        for (c, v) in cols.iter().zip(row.values) {
                            if m.pk.contains(c) {
                                old_pk.push(v);
                            } else {
                                set_cols.push(*c);
                                values.push(v);
                            }
                        }
                        let mut writeback = row.writeback;
                        if let Some(vc) = m.version {
                            // the row keeps counting: old version + 1
                            let old_dict = instance_dict(old.0.bind(py))?;
                            let prev = old_dict
                                .get_item(m.keys[vc as usize].bind(py))?
                                .map(|v| v.unbind())
                                .unwrap_or_else(|| py.None());
                            let next = prev.bind(py).add(1)?.unbind();
                            if let Some(pos) = set_cols.iter().position(|c| *c == vc) {
                                values[pos] = next.clone_ref(py);
                            }
                            writeback.retain(|(c, _)| *c != vc);
                            writeback.push((vc, next));
                            old_pk.push(prev);
                        }
                        switched_out.push(old.0.as_ptr() as usize);
                        let update = Row {
                            held: row.held,
                            values,
                            writeback,
                            old_pk,
                            switched: Some(old),
                        };
                        push(
                            &mapper,
                            Op::Update,
                            Phase::Main,
                            set_cols,
                            update,
                            none.clone(),
                        );
                        continue;
                    }
                }
            }
            let (cols, gen_key, fetch, mut row) = Self::insert_row(py, held, m)?;
            if let Some(late_cols) = late.get(&m.id) {
                // insert NULL now, the real value once the referenced rows exist
                let mut post_cols = ColSet::new();
                let mut post_values = Vec::new();
                for (pos, c) in cols.iter().enumerate() {
                    if late_cols.contains(c) && !row.values[pos].is_none(py) {
                        post_cols.push(*c);
                        post_values.push(std::mem::replace(&mut row.values[pos], py.None()));
                    }
                }
                if !post_cols.is_empty() {
                    let old_pk = insert_pk(py, m, &cols, &row, gen_key)?;
                    let post = Row {
                        held: (row.held.0.clone_ref(py), row.held.1.clone_ref(py)),
                        values: post_values,
                        writeback: Vec::new(),
                        old_pk,
                        switched: None,
                    };
                    push(
                        &mapper,
                        Op::Insert,
                        Phase::Main,
                        cols,
                        row,
                        (gen_key, fetch),
                    );
                    push(
                        &mapper,
                        Op::Update,
                        Phase::PostUpdate,
                        post_cols,
                        post,
                        none.clone(),
                    );
                    continue;
                }
            }
            push(
                &mapper,
                Op::Insert,
                Phase::Main,
                cols,
                row,
                (gen_key, fetch),
            );
        }
        for held in dirty {
            let mapper = held.1.get().mapper.clone_ref(py);
            let m = mapper.get();
            let Some((cols, row)) = Self::update_row(py, held, m)? else {
                continue;
            };
            match late.get(&m.id) {
                Some(late_cols) if cols.iter().any(|c| late_cols.contains(c)) => {
                    let (mut main_cols, mut post_cols) = (ColSet::new(), ColSet::new());
                    let (mut main_vals, mut post_vals) = (Vec::new(), Vec::new());
                    for (c, v) in cols.iter().zip(row.values) {
                        if late_cols.contains(c) {
                            post_cols.push(*c);
                            post_vals.push(v);
                        } else {
                            main_cols.push(*c);
                            main_vals.push(v);
                        }
                    }
                    let post = Row {
                        held: (row.held.0.clone_ref(py), row.held.1.clone_ref(py)),
                        values: post_vals,
                        writeback: Vec::new(),
                        old_pk: row.old_pk[..m.pk.len()]
                            .iter()
                            .map(|v| v.clone_ref(py))
                            .collect(),
                        switched: None,
                    };
                    if !main_cols.is_empty() {
                        let main = Row {
                            held: row.held,
                            values: main_vals,
                            writeback: row.writeback,
                            old_pk: row.old_pk,
                            switched: None,
                        };
                        push(
                            &mapper,
                            Op::Update,
                            Phase::Main,
                            main_cols,
                            main,
                            none.clone(),
                        );
                    }
                    push(
                        &mapper,
                        Op::Update,
                        Phase::PostUpdate,
                        post_cols,
                        post,
                        none.clone(),
                    );
                }
                _ => push(&mapper, Op::Update, Phase::Main, cols, row, none.clone()),
            }
        }
        for held in deleted {
            if switched_out.contains(&(held.0.as_ptr() as usize)) {
                continue;
            }
            let mapper = held.1.get().mapper.clone_ref(py);
            let m = mapper.get();
            let row = Self::delete_row(py, held, m)?;
            if let Some(late_cols) = late.get(&m.id) {
                // clear the late foreign keys first, so that the referenced rows can go
                let dict = instance_dict(row.held.0.bind(py))?;
                let mut set_null = ColSet::new();
                for &c in late_cols {
                    if let Some(v) = dict.get_item(m.keys[c as usize].bind(py))? {
                        if !v.is_none() {
                            set_null.push(c);
                        }
                    }
                }
                if !set_null.is_empty() {
                    set_null.sort_unstable();
                    let pre = Row {
                        held: (row.held.0.clone_ref(py), row.held.1.clone_ref(py)),
                        values: set_null.iter().map(|_| py.None()).collect(),
                        writeback: Vec::new(),
                        old_pk: row.old_pk[..m.pk.len()]
                            .iter()
                            .map(|v| v.clone_ref(py))
                            .collect(),
                        switched: None,
                    };
                    push(
                        &mapper,
                        Op::Update,
                        Phase::PreDelete,
                        set_null,
                        pre,
                        none.clone(),
                    );
                }
            }
            let pk: ColSet = m.pk.iter().copied().collect();
            push(&mapper, Op::Delete, Phase::Main, pk, row, none.clone());
        }
        mark_follows_inserts(py, &graph, &mappers, &mut changes, &rows)?;
        mark_early_deletes(py, &graph, &ordering.broken, &mappers, &mut changes, &rows)?;
        unique_handoffs(py, &mappers, &mut changes, &mut rows, &mut extra)?;
        let steps = plan::plan_ordered(&changes, &graph, &ordering).map_err(PyErr::from)?;
        let mut batches = Vec::with_capacity(steps.len());
        for step in steps {
            let (gen_key, fetch) = extra[step.items[0]].clone();
            let batch_rows: Vec<Row> = step
                .items
                .iter()
                .map(|&i| rows[i].take().expect("each row is planned once"))
                .collect();
            batches.push(Py::new(
                py,
                Batch {
                    op: step.op,
                    phase: step.phase,
                    mapper: mappers[&step.mapper].clone_ref(py),
                    cols: step.cols.to_vec(),
                    gen_key,
                    fetch,
                    reason: step.reason,
                    rows: batch_rows,
                    keys: Mutex::new(None),
                },
            )?);
        }
        Ok(FlushPlan {
            batches,
            core_id: Arc::as_ptr(&self.shared) as usize,
        })
    }

    /// Apply a flush whose statements all succeeded: `results[i]` holds the rows returned by
    /// batch i (primary key then fetched columns), or None.
    fn finish_flush(&self, plan: &FlushPlan, results: &Bound<'_, PyList>) -> PyResult<()> {
        let py = results.py();
        if plan.core_id != Arc::as_ptr(&self.shared) as usize {
            return Err(InvalidRequestError::new_err(
                "this flush plan belongs to another session",
            ));
        }
        let mut uow = self.uow()?;
        let link = self.shared.link();
        for (bi, batch) in plan.batches.iter().enumerate() {
            let batch = batch.get();
            let m = batch.mapper.get();
            let returned = results.get_item(bi)?;
            let returned: Option<Bound<'_, PyList>> = if returned.is_none() {
                None
            } else {
                Some(returned.cast_into::<PyList>()?)
            };
            if batch.phase == Phase::PreDelete {
                continue; // the rows are deleted next
            }
            match batch.op {
                Op::Insert => {
                    let keys = batch.keys.lock().map_err(|_| busy("flush plan"))?;
                    // Returned rows start with the primary key: index them by identity unless
                    // there is a single row.
                    let mut by_key: HashMap<IdentityKey, usize, ahash::RandomState> =
                        HashMap::default();
                    if let Some(r) = &returned {
                        if batch.rows.len() > 1 {
                            for (j, row) in r.iter().enumerate() {
                                let row = row.cast_into::<PyTuple>()?;
                                let k = identity_key(
                                    m.id,
                                    (0..m.pk.len()).map(|p| row.get_item(p).expect("pk column")),
                                )?;
                                by_key.insert(k, j);
                            }
                        }
                    }
                    for (j, row) in batch.rows.iter().enumerate() {
                        let obj = row.held.0.bind(py);
                        let dict = instance_dict(obj)?;
                        for (c, v) in &row.writeback {
                            dict.set_item(m.keys[*c as usize].bind(py), v.bind(py))?;
                        }
                        if let (Some(g), Some(keys)) = (batch.gen_key, keys.as_ref()) {
                            dict.set_item(m.keys[g as usize].bind(py), keys[j].bind(py))?;
                        }
                        if let Some(r) = &returned {
                            let idx = if batch.rows.len() == 1 {
                                Some(0)
                            } else {
                                by_key.get(&key_from_dict(m, &dict)?).copied()
                            };
                            let idx = idx.ok_or_else(|| {
                                CoreError::Flush(format!(
                                    "the database returned no row for an inserted {} object",
                                    m.name
                                ))
                            })?;
                            let rrow = r.get_item(idx)?.cast_into::<PyTuple>()?;
                            let npk = m.pk.len();
                            if batch.gen_key.is_some() && keys.is_none() {
                                for (p, &c) in m.pk.iter().enumerate() {
                                    dict.set_item(m.keys[c as usize].bind(py), rrow.get_item(p)?)?;
                                }
                            }
                            for (f, &c) in batch.fetch.iter().enumerate() {
                                let v = result_value(m, c as usize, rrow.get_item(npk + f)?)?;
                                dict.set_item(m.keys[c as usize].bind(py), v)?;
                            }
                        }
                        let key = key_from_dict(m, &dict)?;
                        {
                            let mut inner = row.held.1.get().lock()?;
                            inner.set_lifecycle(Lifecycle::Persistent);
                            inner.set_link(link.clone());
                            inner.set_key(Some(key.clone()));
                            drop(inner.committed.clear());
                        }
                        uow.new.remove(&(obj.as_ptr() as usize));
                        watch(&mut uow, obj, &row.held.1, m)?;
                        uow.insert_identity(py, key.clone(), obj, row.held.1.clone_ref(py))?;
                        uow.tx_inserted.push((key, row.held.1.clone_ref(py)));
                    }
                }
                Op::Update => {
                    for row in &batch.rows {
                        let obj = row.held.0.bind(py);
                        if let Some((old, old_st)) = &row.switched {
                            // row switch: the new object takes the row over, the old is deleted
                            let dict = instance_dict(obj)?;
                            for (c, v) in &row.writeback {
                                dict.set_item(m.keys[*c as usize].bind(py), v.bind(py))?;
                            }
                            let key = key_from_dict(m, &dict)?;
                            uow.record_deleted(py, old.bind(py), old_st)?;
                            {
                                let mut inner = row.held.1.get().lock()?;
                                inner.set_lifecycle(Lifecycle::Persistent);
                                inner.set_link(link.clone());
                                inner.set_key(Some(key.clone()));
                                drop(inner.committed.clear());
                            }
                            uow.new.remove(&(obj.as_ptr() as usize));
                            watch(&mut uow, obj, &row.held.1, m)?;
                            uow.insert_identity(py, key.clone(), obj, row.held.1.clone_ref(py))?;
                            uow.tx_inserted.push((key, row.held.1.clone_ref(py)));
                            continue;
                        }
                        let dict = instance_dict(obj)?;
                        for (c, v) in &row.writeback {
                            dict.set_item(m.keys[*c as usize].bind(py), v.bind(py))?;
                        }
                        let new_key = key_from_dict(m, &dict)?;
                        let old_key = {
                            let mut inner = row.held.1.get().lock()?;
                            drop(inner.committed.clear());
                            inner.set_wholly_expired(false);
                            inner.set_key(Some(new_key.clone()))
                        };
                        if old_key.as_ref() != Some(&new_key) {
                            if let Some(k) = old_key {
                                uow.identity.remove(&k);
                                let old_values: Vec<Py<PyAny>> = row.old_pk[..m.pk.len()]
                                    .iter()
                                    .map(|v| v.clone_ref(py))
                                    .collect();
                                uow.tx_rekeyed.push((
                                    k,
                                    old_values,
                                    new_key.clone(),
                                    (obj.clone().unbind(), row.held.1.clone_ref(py)),
                                ));
                            }
                            uow.insert_identity(py, new_key, obj, row.held.1.clone_ref(py))?;
                        }
                        uow.dirty.remove(&(obj.as_ptr() as usize));
                        watch(&mut uow, obj, &row.held.1, m)?;
                        if let Some(sp) = uow.savepoints.last_mut() {
                            sp.updated
                                .push((obj.clone().unbind(), row.held.1.clone_ref(py)));
                        }
                    }
                }
                Op::Delete => {
                    for row in &batch.rows {
                        uow.record_deleted(py, row.held.0.bind(py), &row.held.1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// End the transaction successfully: deleted objects become detached; with `expire`, every
    /// loaded object is expired (lazily: O(1)).
    fn commit(&self, expire: bool) -> PyResult<()> {
        let (deleted, _) = {
            let mut uow = self.uow()?;
            let deleted = std::mem::take(&mut uow.tx_deleted);
            let inserted = std::mem::take(&mut uow.tx_inserted);
            uow.tx_rekeyed.clear();
            uow.savepoints.clear();
            (deleted, inserted)
        };
        for (_, st) in &deleted {
            st.get().lock()?.detach();
        }
        if expire {
            self.shared.expire_generation();
        }
        Ok(())
    }

    /// Undo the transaction's bookkeeping: pending and inserted objects become transient,
    /// deleted ones persistent again, changes are discarded and everything is expired. Returns
    /// the objects whose INSERT it undid that have relationships (see `Undone`).
    fn rollback(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut uow = self.uow()?;
        let new = std::mem::replace(&mut uow.new, fast_map());
        let dirty = std::mem::replace(&mut uow.dirty, fast_map());
        let deleted = std::mem::replace(&mut uow.deleted, fast_map());
        let inserted = std::mem::take(&mut uow.tx_inserted);
        let tx_deleted = std::mem::take(&mut uow.tx_deleted);
        let savepoints = std::mem::take(&mut uow.savepoints);
        let rekeyed = std::mem::take(&mut uow.tx_rekeyed);
        undo_rekeys(py, &mut uow, rekeyed)?;
        // (every object is expired below, those holding a row it undid included)
        let (transient, undone, gone) =
            undo_log(py, &self.shared, &mut uow, inserted, &tx_deleted)?;
        drop(uow);
        drop(gone);
        make_transient_states(&transient, true)?;
        let pending: Vec<Py<InstanceState>> =
            new.values().map(|(_, st)| st.clone_ref(py)).collect();
        make_transient_states(&pending, false)?;
        for (_, st) in dirty.values() {
            drop(st.get().lock()?.committed.clear());
        }
        drop((new, dirty, deleted, tx_deleted, transient, savepoints));
        self.shared.expire_generation();
        Ok(undone)
    }

    /// A SAVEPOINT began (after a flush): remember where the transaction's records stand.
    fn savepoint_begin(&self) -> PyResult<usize> {
        let mut uow = self.uow()?;
        let sp = Savepoint::at(&uow, Vec::new());
        uow.savepoints.push(sp);
        Ok(uow.savepoints.len())
    }

    /// The innermost SAVEPOINT was released: its changes now belong to the enclosing one.
    fn savepoint_release(&self) -> PyResult<()> {
        let mut uow = self.uow()?;
        let sp = uow
            .savepoints
            .pop()
            .ok_or_else(|| InvalidRequestError::new_err("no SAVEPOINT is open"))?;
        if let Some(parent) = uow.savepoints.last_mut() {
            parent.updated.extend(sp.updated);
        }
        Ok(())
    }

    /// The innermost SAVEPOINT was rolled back: undo what happened inside it only. Objects
    /// inserted inside become transient, objects deleted inside come back, objects added or
    /// marked for deletion (unflushed) inside are dropped from the session's sets, and objects
    /// changed inside are expired so that they reload the state the database has now.
    ///
    /// With `restart` (a flush failed inside it: the database rolled back to it, and the
    /// session awaits its rollback), a new marker takes its place, holding the objects whose
    /// UPDATE it undid that are outside the session now (expunged): attached again before that
    /// rollback, they hold values the database lost, and the rollback expires them, as
    /// SQLAlchemy's rollback of a SAVEPOINT changed after its failure expires again every
    /// object it updated.
    ///
    /// Returns the objects whose INSERT it undid that have relationships (see `Undone`).
    #[pyo3(signature = (restart=false))]
    fn savepoint_rollback(&self, py: Python<'_>, restart: bool) -> PyResult<Vec<Py<PyAny>>> {
        let mut uow = self.uow()?;
        let sp = uow
            .savepoints
            .pop()
            .ok_or_else(|| InvalidRequestError::new_err("no SAVEPOINT is open"))?;
        let at = sp.inserted.min(uow.tx_inserted.len());
        let inserted = uow.tx_inserted.split_off(at);
        let at = sp.deleted.min(uow.tx_deleted.len());
        let restored = uow.tx_deleted.split_off(at);
        let at = sp.rekeyed.min(uow.tx_rekeyed.len());
        let rekeyed = uow.tx_rekeyed.split_off(at);
        undo_rekeys(py, &mut uow, rekeyed)?;
        let added = uow.new.take_from(sp.new_seq);
        let unmarked = uow.deleted.take_from(sp.marked_seq);
        let dirty = std::mem::replace(&mut uow.dirty, fast_map());
        let (transient, undone, gone) = undo_log(py, &self.shared, &mut uow, inserted, &restored)?;
        drop(uow);
        for (_, (_, st)) in &added {
            let mut inner = st.get().lock()?;
            inner.set_lifecycle(Lifecycle::Transient);
            inner.unlink();
            drop(inner.committed.clear());
        }
        make_transient_states(&transient, true)?;
        // changed inside the savepoint (flushed or not) and still persistent: reload from the
        // database (objects that became transient keep their values). An object whose flushed
        // DELETE it undid is expired only if it had changes the DELETE left unwritten, as in
        // SQLAlchemy (its values are the row's again otherwise). Likewise an object loaded from
        // a row inserted inside it by an instance other than the one that inserted it (which
        // left the session since): the row is gone, and reading it raises ObjectDeletedError
        // instead of returning values of no row (SQLAlchemy's stays loaded, unless an attribute
        // event touched it inside)
        for (obj, st) in dirty.values().chain(&sp.updated).chain(&gone) {
            if st.get().lock()?.lifecycle() == Lifecycle::Persistent {
                expire_object(obj.bind(py), st.get())?;
            }
        }
        // marked for deletion inside it (unflushed) with changes it holds (made inside, or
        // before a delete() attached it): the mark leaves the dirty set, so the changes would
        // stay in the object unflushed; as SQLAlchemy expires every modified object, reload
        for (_, (obj, st)) in &unmarked {
            let changed = {
                let inner = st.get().lock()?;
                inner.lifecycle() == Lifecycle::Persistent && !inner.committed.is_empty()
            };
            if changed {
                expire_object(obj.bind(py), st.get())?;
            }
        }
        for (obj, st) in &restored {
            let changed = {
                let inner = st.get().lock()?;
                inner.lifecycle() == Lifecycle::Persistent && !inner.committed.is_empty()
            };
            if changed {
                expire_object(obj.bind(py), st.get())?;
            }
        }
        if restart {
            let mut outside = Vec::new();
            for (obj, st) in dirty.values().chain(sp.updated.iter()) {
                if st.get().lock()?.lifecycle() == Lifecycle::Detached {
                    outside.push((obj.clone_ref(py), st.clone_ref(py)));
                }
            }
            let mut uow = self.uow()?;
            let marker = Savepoint::at(&uow, outside);
            uow.savepoints.push(marker);
        }
        drop((added, unmarked, dirty, transient, restored, gone, sp));
        Ok(undone)
    }

    /// Expire every loaded object (O(1)) and discard unflushed changes of persistent objects.
    fn expire_all(&self) -> PyResult<()> {
        let mut uow = self.uow()?;
        let dirty = std::mem::replace(&mut uow.dirty, fast_map());
        for (_, st) in dirty.values() {
            drop(st.get().lock()?.committed.clear());
        }
        let old = self.shared.expire_generation();
        let new = self.shared.link();
        // Objects whose DELETE was flushed have left the identity map: like SQLAlchemy, expiry
        // passes them by (their values stay readable until the transaction ends).
        for (_, st) in &uow.tx_deleted {
            let mut inner = st.get().lock()?;
            if inner.link().is_some_and(|l| Arc::ptr_eq(l, &old)) {
                inner.set_link(new.clone());
            }
        }
        drop(uow);
        drop(dirty);
        Ok(())
    }

    /// Raise InvalidRequestError, naming `what` (the operation), unless `obj` is persistent
    /// in this session.
    fn require_persistent(&self, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
        let dict = instance_dict(obj)?;
        self.persistent_state(obj, &dict, what).map(drop)
    }

    /// Expire some (or all) column attributes of one persistent object of this session.
    #[pyo3(signature = (obj, names=None))]
    fn expire(
        &self,
        obj: &Bound<'_, PyAny>,
        names: Option<Vec<Bound<'_, PyString>>>,
    ) -> PyResult<()> {
        let py = obj.py();
        let dict = instance_dict(obj)?;
        let st = self.persistent_state(obj, &dict, "expire")?;
        let m = st.get().mapper.get();
        let mut inner = st.get().lock()?;
        materialize_expiry(&mut inner, &dict, m)?;
        let key_index = m.key_index.bind(py);
        let indexes: Vec<usize> = match &names {
            None => (0..m.ncols())
                .filter(|i| !m.pk.contains(&(*i as u16)))
                .collect(),
            Some(ns) => {
                let mut v = Vec::new();
                for n in ns {
                    match key_index.get_item(n)? {
                        Some(i) => v.push(i.extract::<usize>()?),
                        None => {
                            return Err(InvalidRequestError::new_err(format!(
                                "{} has no column attribute {n}",
                                m.name
                            )))
                        }
                    }
                }
                v
            }
        };
        let mut dropped = Vec::new();
        let mut kept = crate::engine::snapshot::Snapshot::default();
        for (a, c) in inner.committed.clear() {
            if indexes.contains(&(a as usize)) {
                dropped.push(c);
            } else {
                kept.record_set(a, c, &py.None(), |_, _| false);
            }
        }
        // record_set with an always-different comparison keeps each entry as it was.
        inner.committed = kept;
        if names.is_none() {
            inner.set_wholly_expired(true);
        }
        let clean = inner.committed.is_empty();
        for i in &indexes {
            let k = m.keys[*i].bind(py);
            if dict.contains(k)? {
                dict.del_item(k)?;
            }
        }
        drop(inner);
        if clean {
            let removed = self.uow()?.dirty.remove(&(obj.as_ptr() as usize));
            drop(removed);
        }
        drop(dropped);
        Ok(())
    }

    /// Whether a persistent or pending object has net changes.
    fn is_modified(&self, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.scan_mutations(obj.py())?;
        let dict = instance_dict(obj)?;
        let Some(st) = state_in(&dict)? else {
            mapper_of(obj)?;
            return Ok(false);
        };
        let inner = st.get().lock()?;
        Ok(inner.effective() == Lifecycle::Pending || !inner.committed.is_empty())
    }

    fn contains(&self, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        let dict = instance_dict(obj)?;
        let Some(st) = state_in(&dict)? else {
            mapper_of(obj)?;
            return Ok(false);
        };
        let inner = st.get().lock()?;
        Ok(inner.in_session(&self.shared)
            && matches!(
                inner.effective(),
                Lifecycle::Pending | Lifecycle::Persistent
            ))
    }

    fn new_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.uow()?.new.values().map(|h| h.0.clone_ref(py)))
    }

    fn dirty_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.scan_mutations(py)?;
        PyList::new(py, self.uow()?.dirty.values().map(|h| h.0.clone_ref(py)))
    }

    fn deleted_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.uow()?.deleted.values().map(|h| h.0.clone_ref(py)))
    }

    /// Objects marked for deletion expired as a whole (by a commit, rollback, expire_all or
    /// expire() without names): the flush loads them before their DELETE, as SQLAlchemy does, so
    /// that their values stay readable after it.
    fn expired_deleted<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let uow = self.uow()?;
        for h in uow.deleted.values() {
            let obj = h.0.bind(py);
            let Some(st) = state_in(&instance_dict(obj)?)? else {
                continue;
            };
            // (SQLAlchemy then needs the expired primary key and loads the row)
            if st.get().lock()?.expired_whole() {
                out.append(obj)?;
            }
        }
        Ok(out)
    }

    /// Live persistent objects of the identity map.
    fn identity_objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let uow = self.uow()?;
        let objs: Vec<Bound<'py, PyAny>> =
            uow.identity.values().filter_map(|e| e.object(py)).collect();
        PyList::new(py, objs)
    }

    /// The live object with this identity, or None.
    fn identity_lookup<'py>(
        &self,
        mapper: &Bound<'py, MapperCore>,
        ident: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = mapper.py();
        let key = self.ident_from(mapper.get(), ident)?;
        Ok(match self.uow()?.live(py, &key) {
            Some((o, _)) => o.into_bound(py),
            None => py.None().into_bound(py),
        })
    }

    /// Mark a persistent object of this session deleted because its row is gone (a SELECT for
    /// its expired values found none), as a flushed DELETE does: it leaves the identity map,
    /// commit detaches it and rollback makes it persistent again. Anything else is left as it
    /// is; whether it was marked.
    fn mark_gone(&self, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Some(st) = state_in(&instance_dict(obj)?)? else {
            return Ok(false);
        };
        {
            let inner = st.get().lock()?;
            if inner.effective() != Lifecycle::Persistent || !inner.in_session(&self.shared) {
                return Ok(false);
            }
        }
        self.uow()?.record_deleted(obj.py(), obj, &st.unbind())?;
        Ok(true)
    }

    /// Before a flush deletes `objs` (the deleted objects): their unloaded many-to-ones that
    /// need no SQL are loaded (see `sync::read_many_to_ones`).
    fn read_many_to_ones(&self, objs: &Bound<'_, PyList>) -> PyResult<()> {
        let py = objs.py();
        sync::read_many_to_ones(objs, &|key| {
            Ok(self.uow()?.live(py, key).map(|(o, _)| o.into_bound(py)))
        })
    }

    /// The objects of the identity map whose identity a new object has: their rows may be
    /// gone (deleted by another transaction, inserted by a rolled-back one, or deleted by a
    /// flush of another instance of the row, whose copy a cascade attached since). A flush
    /// loads each first and marks the ones without a row deleted (mark_gone), so that the new
    /// object takes its place, as SQLAlchemy's does for an expired one (for another, its flush
    /// warns, and fails at the UPDATE, or at the INSERT where the row is there, as retort's
    /// does then). Objects marked for deletion are left out: the flush switches their rows to
    /// the new objects.
    fn key_holders<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let new: Vec<Held> = {
            let uow = self.uow()?;
            if uow.new.is_empty() || uow.identity.is_empty() {
                return Ok(out);
            }
            uow.new
                .values()
                .map(|(o, s)| (o.clone_ref(py), s.clone_ref(py)))
                .collect()
        };
        for (obj, st) in &new {
            let m = st.get().mapper.get();
            let dict = instance_dict(obj.bind(py))?;
            if pk_values(&dict, m)?.iter().any(|v| v.is_none()) {
                continue;
            }
            let key = key_from_dict(m, &dict)?;
            let holder = {
                let uow = self.uow()?;
                match uow.live(py, &key) {
                    Some((o, _)) if !uow.deleted.contains_key(&(o.as_ptr() as usize)) => o,
                    _ => continue,
                }
            };
            let holder = holder.into_bound(py);
            if !holder.is(obj.bind(py)) {
                out.append(holder)?;
            }
        }
        Ok(out)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let uow = self.uow()?;
        Ok(uow.new.len()
            + uow
                .identity
                .values()
                .filter(|e| e.object(py).is_some())
                .count())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.shared.owner)?;
        let Ok(uow) = self.shared.uow.try_lock() else {
            return Ok(());
        };
        for e in uow.identity.values() {
            e.obj.traverse(&visit)?;
            visit.call(&e.state)?;
        }
        for (o, s) in uow
            .new
            .values()
            .chain(uow.dirty.values())
            .chain(uow.deleted.values())
            .chain(uow.watched.values().map(|(h, _)| h))
            .chain(uow.tx_deleted.iter())
            .chain(uow.tx_rekeyed.iter().map(|(_, _, _, h)| h))
            .chain(uow.savepoints.iter().flat_map(|sp| sp.updated.iter()))
        {
            visit.call(o)?;
            visit.call(s)?;
        }
        for (_, st) in &uow.tx_inserted {
            visit.call(st)?;
        }
        for (_, values, _, _) in &uow.tx_rekeyed {
            for v in values {
                visit.call(v)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = match self.shared.uow.try_lock() {
            Ok(mut uow) => std::mem::take(&mut *uow),
            Err(_) => return,
        };
        drop(taken);
    }
}

impl SessionCore {
    /// Mark watched objects whose mutable values changed in place as dirty.
    fn scan_mutations(&self, py: Python<'_>) -> PyResult<()> {
        let watched: Vec<(Held, Fingerprints)> = {
            let uow = self.uow()?;
            if uow.watched.is_empty() {
                return Ok(());
            }
            uow.watched
                .values()
                .map(|((o, s), prints)| ((o.clone_ref(py), s.clone_ref(py)), prints.clone()))
                .collect()
        };
        let mut changed = Vec::new();
        for ((obj, st), prints) in watched {
            let state = st.get();
            let m = state.mapper.get();
            let dict = instance_dict(obj.bind(py))?;
            let mut inner = state.lock()?;
            if inner.is_stale() || inner.effective() != Lifecycle::Persistent {
                continue;
            }
            let mut any = false;
            for (c, print) in prints {
                if inner.committed.contains(c) {
                    continue;
                }
                let Some(v) = dict.get_item(m.keys[c as usize].bind(py))? else {
                    continue;
                };
                if fingerprint(&v)? != print {
                    // The value as loaded is gone (it was changed in place), so the committed
                    // value is unknown; the change is flushed all the same.
                    inner
                        .committed
                        .record_set(c, Committed::Unknown, &v.unbind(), |_, _| false);
                    any = true;
                }
            }
            drop(inner);
            if any {
                changed.push((obj, st));
            }
        }
        if !changed.is_empty() {
            let mut uow = self.uow()?;
            for (obj, st) in changed {
                let ptr = obj.as_ptr() as usize;
                if !uow.deleted.contains_key(&ptr) {
                    uow.dirty.insert_if_absent(ptr, || (obj, st));
                }
            }
        }
        Ok(())
    }

    fn persistent_state<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        dict: &Bound<'py, PyDict>,
        what: &str,
    ) -> PyResult<Bound<'py, InstanceState>> {
        if let Some(st) = state_in(dict)? {
            let inner = st.get().lock()?;
            let life = inner.effective();
            if inner.in_session(&self.shared) && life == Lifecycle::Persistent {
                drop(inner);
                return Ok(st);
            }
            if inner.in_session(&self.shared) && life == Lifecycle::Deleted {
                return Err(InvalidRequestError::new_err(format!(
                    "cannot {what} {}: its row was deleted by a flush in this transaction; \
                     call rollback() to undo the delete",
                    describe(obj)
                )));
            }
        } else {
            mapper_of(obj)?;
        }
        Err(InvalidRequestError::new_err(format!(
            "cannot {what} {}: it is not persistent within this Session (add it and flush, or \
             load it through this session, first)",
            describe(obj)
        )))
    }
}
