//! The core's view of a mapped class: its columns, keys, defaults and processors.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::PyTraverseError;

use crate::engine::plan::MapperGraph;

use super::state::{instance_dict, STATE_KEY};

static NEXT_MAPPER_ID: AtomicU32 = AtomicU32::new(1);

/// Every mapper ever registered, with the foreign-key dependencies between them. Shared as
/// an immutable snapshot: a flush takes a reference, a registration replaces it (copy on
/// write), so a flush costs the same however many classes the application maps.
static GRAPH: Mutex<Option<Arc<MapperGraph>>> = Mutex::new(None);

fn registry() -> PyResult<std::sync::MutexGuard<'static, Option<Arc<MapperGraph>>>> {
    GRAPH
        .lock()
        .map_err(|_| PyTypeError::new_err("mapper registry poisoned"))
}

/// The mapper graph as it stands.
pub fn graph() -> PyResult<Arc<MapperGraph>> {
    Ok(registry()?.get_or_insert_with(Default::default).clone())
}

/// Change the mapper graph (the flushes under way keep the snapshot they took).
fn update_graph<R>(f: impl FnOnce(&mut MapperGraph) -> R) -> PyResult<R> {
    let mut guard = registry()?;
    Ok(f(Arc::make_mut(guard.get_or_insert_with(Default::default))))
}

/// A Python-side default (`default=` / `onupdate=`): a value, or a callable to call per row.
pub enum ColumnDefault {
    Scalar(Py<PyAny>),
    Callable(Py<PyAny>),
}

impl ColumnDefault {
    pub fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            ColumnDefault::Scalar(v) => Ok(v.clone_ref(py)),
            ColumnDefault::Callable(f) => f.call0(py),
        }
    }

    fn from_py(v: Option<Bound<'_, PyAny>>) -> Option<ColumnDefault> {
        let v = v?;
        if v.is_none() {
            return None;
        }
        Some(if v.is_callable() {
            ColumnDefault::Callable(v.unbind())
        } else {
            ColumnDefault::Scalar(v.unbind())
        })
    }

    fn obj(&self) -> &Py<PyAny> {
        match self {
            ColumnDefault::Scalar(v) | ColumnDefault::Callable(v) => v,
        }
    }
}

#[pyclass(frozen, module = "retort._core")]
pub struct MapperCore {
    #[pyo3(get)]
    pub id: u32,
    #[pyo3(get)]
    pub class_: Py<PyType>,
    pub name: String,
    /// Table and column names, for messages.
    pub table: String,
    pub col_names: Vec<String>,
    /// Column attribute names, in load order (the order of `mapper.columns`).
    pub keys: Vec<Py<PyString>>,
    /// Attribute name → column index.
    pub key_index: Py<PyDict>,
    /// Primary-key column indexes.
    pub pk: Vec<u16>,
    /// The single primary-key column the database generates, if any.
    pub autoinc: Option<u16>,
    pub defaults: Vec<Option<ColumnDefault>>,
    pub onupdate: Vec<Option<ColumnDefault>>,
    pub server_default: Vec<bool>,
    pub bind: Vec<Option<Py<PyAny>>>,
    pub result: Vec<Option<Py<PyAny>>>,
    /// Columns of mutable types (JSON), whose values can change in place.
    pub mutable: Vec<u16>,
    /// The version counter column (`version_id_col`): checked and incremented by every UPDATE,
    /// checked by every DELETE.
    pub version: Option<u16>,
    /// Unique column groups (besides the primary key), and which columns accept NULL.
    pub unique: Vec<Vec<u16>>,
    pub nullable: Vec<bool>,
    /// Names `__init__` accepts besides columns (relationships).
    pub extra_init: Py<PyAny>,
    /// The Python `Mapper` this core belongs to.
    #[pyo3(get)]
    pub owner: Py<PyAny>,
    pub object_new: Py<PyAny>,
    /// Set when the mapper is configured: the relationships `add()` cascades along.
    pub cascade: std::sync::Mutex<Option<Cascade>>,
    /// Per column, a check of bound values that psycopg and PostgreSQL would let through
    /// silently (see `CHECK_*`); empty when no column needs one.
    pub checks: Vec<u8>,
}

/// Text columns: bytes would be stored as their bytea text (`\x...`).
pub const CHECK_TEXT: u8 = 1;
/// `DateTime()`: an aware datetime would be converted with the server's time zone.
pub const CHECK_NAIVE: u8 = 2;
/// `DateTime(timezone=True)`: a naive datetime would be read in the server's time zone.
pub const CHECK_AWARE: u8 = 3;

/// What `SessionCore.cascade_add` and the flush's key sync need of a mapper's relationships.
pub struct Cascade {
    /// (attribute name, is a collection) of each relationship with the save-update cascade.
    pub save_update: Vec<(Py<PyString>, bool)>,
    /// Whether the class has relationships at all (objects to sync at flush).
    pub related: bool,
    /// The relationships whose keys a flush copies (all but view-only ones).
    pub sync: Vec<SyncProp>,
}

/// How the flush copies keys along a relationship (see `sync.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The referred-to object's key goes into this object's foreign key.
    ManyToOne,
    /// A one-to-many collection: this object's key goes into its members' foreign keys.
    OneToMany,
    /// A scalar one-to-many (one-to-one): this object's key goes into its value's foreign key;
    /// Python settles the value it replaced.
    ScalarOneToMany,
    /// Anything else (a many-to-many): done in Python.
    Other,
}

pub struct SyncProp {
    /// The attribute name.
    pub key: Py<PyString>,
    pub kind: SyncKind,
    /// The RelationshipProperty, handed back to Python for what it settles.
    pub prop: Py<PyAny>,
    /// Attribute names of the referred-to columns (on the "one" side) ...
    pub src: Vec<Py<PyString>>,
    /// ... and of the foreign-key columns they are copied into, pairwise.
    pub dst: Vec<Py<PyString>>,
    /// For a many-to-one referring to its target's primary key (in order): the target's
    /// mapper, whose identity map key the foreign key values make.
    pub target: Option<Py<MapperCore>>,
}

impl SyncProp {
    fn clone_ref(&self, py: Python<'_>) -> SyncProp {
        SyncProp {
            key: self.key.clone_ref(py),
            kind: self.kind,
            prop: self.prop.clone_ref(py),
            src: self.src.iter().map(|k| k.clone_ref(py)).collect(),
            dst: self.dst.iter().map(|k| k.clone_ref(py)).collect(),
            target: self.target.as_ref().map(|t| t.clone_ref(py)),
        }
    }
}

impl MapperCore {
    pub fn ncols(&self) -> usize {
        self.keys.len()
    }

    /// The relationships a flush syncs, copied out of the lock (empty before configuration).
    pub fn sync_props(&self, py: Python<'_>) -> PyResult<Vec<SyncProp>> {
        let guard = self
            .cascade
            .lock()
            .map_err(|_| PyTypeError::new_err("mapper cascade poisoned"))?;
        Ok(guard
            .as_ref()
            .map(|c| c.sync.iter().map(|p| p.clone_ref(py)).collect())
            .unwrap_or_default())
    }

    /// The columns that identify a row in UPDATE and DELETE: the primary key, then the version
    /// counter when the mapper has one.
    pub fn match_cols(&self) -> Vec<u16> {
        let mut cols = self.pk.clone();
        cols.extend(self.version);
        cols
    }
}

#[pymethods]
impl MapperCore {
    #[new]
    #[pyo3(signature = (class_, owner, keys, pk, autoinc, defaults, onupdate, server_default, bind, result, mutable, extra_init, table, col_names, unique=Vec::new(), nullable=Vec::new(), version=None, checks=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        class_: Py<PyType>,
        owner: Py<PyAny>,
        keys: Vec<Bound<'_, PyString>>,
        pk: Vec<u16>,
        autoinc: Option<u16>,
        defaults: Vec<Option<Bound<'_, PyAny>>>,
        onupdate: Vec<Option<Bound<'_, PyAny>>>,
        server_default: Vec<bool>,
        bind: Vec<Option<Py<PyAny>>>,
        result: Vec<Option<Py<PyAny>>>,
        mutable: Vec<u16>,
        extra_init: Py<PyAny>,
        table: String,
        col_names: Vec<String>,
        unique: Vec<Vec<u16>>,
        nullable: Vec<bool>,
        version: Option<u16>,
        checks: Vec<u8>,
    ) -> PyResult<Self> {
        let n = keys.len();
        if [
            defaults.len(),
            onupdate.len(),
            server_default.len(),
            bind.len(),
            result.len(),
        ]
        .iter()
        .any(|l| *l != n)
            || pk.iter().chain(mutable.iter()).any(|i| *i as usize >= n)
            || pk.is_empty()
        {
            return Err(PyTypeError::new_err(
                "MapperCore: per-column lists must all have one entry per column and the \
                 primary key must name at least one column",
            ));
        }
        let key_index = PyDict::new(py);
        for (i, k) in keys.iter().enumerate() {
            key_index.set_item(k, i)?;
        }
        let id = NEXT_MAPPER_ID.fetch_add(1, Ordering::Relaxed);
        update_graph(|g| g.mappers.push(id))?;
        let name = class_.bind(py).qualname()?.to_string();
        let object_new = py
            .import("builtins")?
            .getattr("object")?
            .getattr("__new__")?
            .unbind();
        Ok(MapperCore {
            id,
            class_,
            name,
            table,
            col_names,
            keys: keys.into_iter().map(|k| k.unbind()).collect(),
            key_index: key_index.unbind(),
            pk,
            autoinc,
            defaults: defaults.into_iter().map(ColumnDefault::from_py).collect(),
            onupdate: onupdate.into_iter().map(ColumnDefault::from_py).collect(),
            server_default,
            bind,
            result,
            mutable,
            unique,
            nullable,
            version,
            extra_init,
            owner,
            object_new,
            cascade: std::sync::Mutex::new(None),
            checks,
        })
    }

    /// Record, once the relationships are configured, which ones `add()` cascades along:
    /// `save_update` holds (attribute name, is a collection) per save-update relationship;
    /// `sync` holds (attribute name, kind, RelationshipProperty, referred-to attribute names,
    /// foreign-key attribute names) per relationship a flush syncs, kind being 0 for
    /// many-to-one, 1 for a one-to-many collection and 2 for anything else.
    #[pyo3(signature = (save_update, related, sync=Vec::new()))]
    #[allow(clippy::type_complexity)]
    fn set_cascade(
        &self,
        save_update: Vec<(Py<PyString>, bool)>,
        related: bool,
        sync: Vec<(
            Py<PyString>,
            u8,
            Py<PyAny>,
            Vec<Py<PyString>>,
            Vec<Py<PyString>>,
            Option<Py<MapperCore>>,
        )>,
    ) -> PyResult<()> {
        let sync = sync
            .into_iter()
            .map(|(key, kind, prop, src, dst, target)| {
                let kind = match kind {
                    0 => SyncKind::ManyToOne,
                    1 => SyncKind::OneToMany,
                    3 => SyncKind::ScalarOneToMany,
                    _ => SyncKind::Other,
                };
                if kind != SyncKind::Other && (src.len() != dst.len() || src.is_empty()) {
                    return Err(PyTypeError::new_err(
                        "set_cascade: a relationship to sync needs as many referred-to as \
                         foreign-key attributes",
                    ));
                }
                Ok(SyncProp {
                    key,
                    kind,
                    prop,
                    src,
                    dst,
                    target,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        *self
            .cascade
            .lock()
            .map_err(|_| PyTypeError::new_err("mapper cascade poisoned"))? = Some(Cascade {
            save_update,
            related,
            sync,
        });
        Ok(())
    }

    /// Record a foreign key from `self`'s table (columns `cols`) to `parent`'s (columns
    /// `refs`, in the same order; empty where not all are mapped): its rows must be inserted
    /// after the rows of `parent` they reference.
    #[pyo3(signature = (parent, reason, cols, refs, nullable, post_update))]
    fn add_dependency(
        &self,
        parent: &MapperCore,
        reason: String,
        cols: Vec<u16>,
        refs: Vec<u16>,
        nullable: bool,
        post_update: bool,
    ) -> PyResult<()> {
        let cols: crate::engine::plan::ColSet = cols.into_iter().collect();
        let refs: crate::engine::plan::ColSet = refs.into_iter().collect();
        let known = graph()?
            .edges
            .iter()
            .any(|e| e.parent == parent.id && e.child == self.id && e.cols == cols);
        if !known {
            update_graph(|g| {
                g.edges.push(crate::engine::plan::Edge {
                    parent: parent.id,
                    child: self.id,
                    cols,
                    refs,
                    nullable,
                    post_update,
                    reason,
                })
            })?;
        }
        Ok(())
    }

    /// The generated `__init__`: set each keyword argument, rejecting unknown names.
    #[pyo3(signature = (instance, kwargs=None))]
    pub fn init_instance(
        &self,
        instance: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let Some(kwargs) = kwargs else { return Ok(()) };
        let py = instance.py();
        let dict = instance_dict(instance)?;
        let tracked = dict.contains(STATE_KEY.get(py))?;
        let key_index = self.key_index.bind(py);
        for (k, v) in kwargs.iter() {
            if key_index.contains(&k)? {
                if tracked {
                    instance.setattr(k.cast::<PyString>()?, v)?;
                } else {
                    dict.set_item(k, v)?;
                }
            } else if self.extra_init.bind(py).contains(&k)? {
                instance.setattr(k.cast::<PyString>()?, v)?;
            } else {
                return Err(PyTypeError::new_err(format!(
                    "{k} is an invalid keyword argument for {}: it is not a mapped attribute \
                     (mapped attributes: {})",
                    self.name,
                    self.keys
                        .iter()
                        .map(|k| k.bind(py).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Primary-key values of `instance` as a tuple, read from its attributes as set.
    fn primary_key_of<'py>(&self, instance: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let py = instance.py();
        let dict = instance_dict(instance)?;
        let mut out = Vec::with_capacity(self.pk.len());
        for &i in &self.pk {
            out.push(
                dict.get_item(self.keys[i as usize].bind(py))?
                    .unwrap_or_else(|| py.None().into_bound(py)),
            );
        }
        PyTuple::new(py, out)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.class_)?;
        visit.call(&self.owner)?;
        visit.call(&self.extra_init)?;
        for d in self.defaults.iter().chain(self.onupdate.iter()).flatten() {
            visit.call(d.obj())?;
        }
        for p in self.bind.iter().chain(self.result.iter()).flatten() {
            visit.call(p)?;
        }
        // The lock is free during a collection (no Python code runs while it is held).
        if let Ok(guard) = self.cascade.try_lock() {
            for p in guard.iter().flat_map(|c| c.sync.iter()) {
                visit.call(&p.prop)?;
                if let Some(t) = &p.target {
                    visit.call(t)?;
                }
            }
        }
        Ok(())
    }
}
