//! A planned flush, handed to Python: ordered batches with their parameter rows.
//!
//! Planning only reads the session; nothing changes until `SessionCore.finish_flush` is given
//! the plan back with the statement results, so a flush that fails in the database leaves the
//! core exactly as it was.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;

use crate::engine::plan::Op;

use super::mapper::MapperCore;
use super::state::InstanceState;

pub type Held = (Py<PyAny>, Py<InstanceState>);

/// One row of a batch.
pub struct Row {
    pub held: Held,
    /// Parameter values: inserted columns (insert) or changed columns (update); empty for delete.
    pub values: Vec<Py<PyAny>>,
    /// Values the flush computed (defaults, NULLs) to store on the object once it succeeds.
    pub writeback: Vec<(u16, Py<PyAny>)>,
    /// Primary-key values that identify the row in the database (update, delete).
    pub old_pk: Vec<Py<PyAny>>,
    /// Row switch: the deleted object whose row this new object's UPDATE takes over.
    pub switched: Option<Held>,
}

#[pyclass(frozen, module = "retort._core")]
pub struct Batch {
    pub op: Op,
    pub phase: crate::engine::plan::Phase,
    pub mapper: Py<MapperCore>,
    pub cols: Vec<u16>,
    pub gen_key: Option<u16>,
    pub fetch: Vec<u16>,
    pub reason: Option<String>,
    pub rows: Vec<Row>,
    pub keys: Mutex<Option<Vec<Py<PyAny>>>>,
}

#[pymethods]
impl Batch {
    /// "insert", "update" or "delete".
    #[getter]
    fn op(&self) -> &'static str {
        self.op.name()
    }
    /// "main", "post_update" (set foreign keys of broken cycles) or "pre_delete" (clear them).
    #[getter]
    fn phase(&self) -> &'static str {
        match self.phase {
            crate::engine::plan::Phase::Main => "main",
            crate::engine::plan::Phase::PostUpdate => "post_update",
            crate::engine::plan::Phase::PreDelete => "pre_delete",
        }
    }
    #[getter]
    fn mapper(&self, py: Python<'_>) -> Py<MapperCore> {
        self.mapper.clone_ref(py)
    }
    /// Column indexes written: inserted (insert) or set (update).
    #[getter]
    fn cols(&self) -> Vec<u16> {
        self.cols.clone()
    }
    /// The primary-key column the database must generate for these rows, if any.
    #[getter]
    fn gen_key(&self) -> Option<u16> {
        self.gen_key
    }
    /// Columns left out of the INSERT whose server-side values must be fetched back.
    #[getter]
    fn fetch(&self) -> Vec<u16> {
        self.fetch.clone()
    }
    #[getter]
    fn pk(&self) -> Vec<u16> {
        self.mapper.get().pk.clone()
    }
    /// The columns an UPDATE or DELETE of this batch matches rows on: the primary key, plus
    /// the version counter for versioned mappers (not in the post-update/pre-delete phases).
    #[getter]
    fn key_cols(&self) -> Vec<u16> {
        let m = self.mapper.get();
        if self.phase == crate::engine::plan::Phase::Main && self.op != Op::Insert {
            m.match_cols()
        } else {
            m.pk.clone()
        }
    }
    #[getter]
    fn n(&self) -> usize {
        self.rows.len()
    }
    #[getter]
    fn reason(&self) -> Option<String> {
        self.reason.clone()
    }
    #[getter]
    fn has_keys(&self) -> bool {
        self.keys.lock().map(|k| k.is_some()).unwrap_or(false)
    }

    /// Provide pre-allocated primary keys for a batch with a generated key, one per row.
    fn set_keys(&self, keys: Vec<Py<PyAny>>) -> PyResult<()> {
        if self.gen_key.is_none() || keys.len() != self.rows.len() {
            return Err(PyValueError::new_err(format!(
                "set_keys: expected {} keys for a batch with a generated key",
                self.rows.len()
            )));
        }
        *self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))? = Some(keys);
        Ok(())
    }

    /// Parameters in chunks of at most `max_rows` rows: a list of (row count, flat list).
    ///
    /// Row layout: insert = [pre-allocated key] + inserted values; update = set values +
    /// old primary key; delete = old primary key.
    fn chunks<'py>(
        &self,
        py: Python<'py>,
        max_rows: usize,
    ) -> PyResult<Vec<(usize, Bound<'py, PyList>)>> {
        let max_rows = max_rows.max(1);
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let mut out = Vec::with_capacity(self.rows.len().div_ceil(max_rows));
        for (c, chunk) in self.rows.chunks(max_rows).enumerate() {
            let list = PyList::empty(py);
            for (j, row) in chunk.iter().enumerate() {
                if let Some(keys) = keys.as_ref() {
                    list.append(keys[c * max_rows + j].bind(py))?;
                }
                for v in &row.values {
                    list.append(v.bind(py))?;
                }
                for v in &row.old_pk {
                    list.append(v.bind(py))?;
                }
            }
            out.push((chunk.len(), list));
        }
        Ok(out)
    }

    /// Every row as a tuple, in the layout of `chunks` (for COPY).
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let out = PyList::empty(py);
        for (j, row) in self.rows.iter().enumerate() {
            let mut items: Vec<&Py<PyAny>> =
                Vec::with_capacity(1 + row.values.len() + row.old_pk.len());
            if let Some(keys) = keys.as_ref() {
                items.push(&keys[j]);
            }
            items.extend(row.values.iter());
            items.extend(row.old_pk.iter());
            out.append(PyTuple::new(py, items.into_iter().map(|v| v.bind(py)))?)?;
        }
        Ok(out)
    }

    /// The rows as COPY text-format data (key first when keys were set, then the columns),
    /// or None when a value is of a type the encoder leaves to psycopg (see `copy`).
    fn copy_text<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let width = self.rows.first().map_or(0, |r| r.values.len() + 1);
        let mut out: Vec<u8> = Vec::with_capacity(self.rows.len() * (8 + 12 * width));
        for (j, row) in self.rows.iter().enumerate() {
            let mut first = true;
            let key = keys.as_ref().map(|k| &k[j]);
            for v in key.into_iter().chain(row.values.iter()) {
                if !first {
                    out.push(b'\t');
                }
                first = false;
                if !super::copy::encode(py, v.bind(py), &mut out)? {
                    return Ok(None);
                }
            }
            out.push(b'\n');
        }
        Ok(Some(PyBytes::new(py, &out)))
    }

    /// The rows as COPY binary-format data (`FORMAT BINARY`: header, rows, trailer), in the
    /// layout of `copy_text`; `kinds` gives each COPY column's type (`copybin::KIND_*`) and
    /// `json_dump` psycopg's text dumper for Jsonb values. None when a value must go through
    /// the text path instead (see `copybin`).
    #[pyo3(signature = (kinds, json_dump=None))]
    fn copy_binary<'py>(
        &self,
        py: Python<'py>,
        kinds: Vec<u8>,
        json_dump: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        use super::copybin;
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let width = usize::from(keys.is_some()) + self.rows.first().map_or(0, |r| r.values.len());
        if kinds.len() != width || kinds.iter().any(|&k| k == 0 || k > copybin::KIND_MAX) {
            return Err(PyValueError::new_err(format!(
                "copy_binary: expected {width} column kinds from 1 to {}, got {kinds:?}",
                copybin::KIND_MAX
            )));
        }
        let Ok(count) = i16::try_from(width) else {
            return Ok(None);
        };
        let ctx = copybin::Context {
            json_dump: json_dump.as_ref(),
        };
        let mut out: Vec<u8> = Vec::with_capacity(
            copybin::HEADER.len() + self.rows.len() * (2 + 12 * width) + copybin::TRAILER.len(),
        );
        out.extend_from_slice(copybin::HEADER);
        for (j, row) in self.rows.iter().enumerate() {
            out.extend_from_slice(&count.to_be_bytes());
            let key = keys.as_ref().map(|k| &k[j]);
            for (v, &kind) in key.into_iter().chain(row.values.iter()).zip(kinds.iter()) {
                if !copybin::encode(&ctx, kind, v.bind(py), &mut out)? {
                    return Ok(None);
                }
            }
        }
        out.extend_from_slice(copybin::TRAILER);
        Ok(Some(PyBytes::new(py, &out)))
    }

    /// The rows column by column, in the layout of `chunks` (for `unnest` arrays).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyList>>> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let Some(first) = self.rows.first() else {
            return Ok(Vec::new());
        };
        let width = usize::from(keys.is_some()) + first.values.len() + first.old_pk.len();
        let mut cols: Vec<Vec<&Py<PyAny>>> = (0..width)
            .map(|_| Vec::with_capacity(self.rows.len()))
            .collect();
        for (j, row) in self.rows.iter().enumerate() {
            let mut c = 0;
            if let Some(keys) = keys.as_ref() {
                cols[0].push(&keys[j]);
                c = 1;
            }
            for v in row.values.iter().chain(row.old_pk.iter()) {
                cols[c].push(v);
                c += 1;
            }
        }
        cols.into_iter()
            .map(|col| PyList::new(py, col.into_iter().map(|v| v.bind(py))))
            .collect()
    }

    /// `columns()` as PostgreSQL array literals (`{1,2,"x"}`), one string per column, encoded
    /// by the core (psycopg's list dumper costs about a microsecond per element); None when a
    /// value is of a type left to psycopg.
    fn array_literals<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Bound<'py, PyString>>>> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| super::errors::busy("flush plan"))?;
        let Some(first) = self.rows.first() else {
            return Ok(Some(Vec::new()));
        };
        let width = usize::from(keys.is_some()) + first.values.len() + first.old_pk.len();
        super::copy::column_literals(
            py,
            width,
            self.rows.iter().enumerate().map(|(j, row)| {
                keys.as_ref()
                    .map(|k| k[j].bind(py))
                    .into_iter()
                    .chain(row.values.iter().map(|v| v.bind(py)))
                    .chain(row.old_pk.iter().map(|v| v.bind(py)))
                    .collect()
            }),
        )
    }

    /// The first primary-key value of every row (for `DELETE ... WHERE pk = ANY(%s)`).
    fn key_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.rows.iter().map(|r| r.old_pk[0].bind(py)))
    }

    /// The objects of the batch, in row order.
    fn objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.rows.iter().map(|r| r.held.0.bind(py)))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.mapper)?;
        for r in &self.rows {
            visit.call(&r.held.0)?;
            visit.call(&r.held.1)?;
            for v in r.values.iter().chain(r.old_pk.iter()) {
                visit.call(v)?;
            }
            for (_, v) in &r.writeback {
                visit.call(v)?;
            }
            if let Some((o, st)) = &r.switched {
                visit.call(o)?;
                visit.call(st)?;
            }
        }
        if let Ok(k) = self.keys.try_lock() {
            for v in k.iter().flatten() {
                visit.call(v)?;
            }
        }
        Ok(())
    }
}

#[pyclass(frozen, module = "retort._core")]
pub struct FlushPlan {
    pub batches: Vec<Py<Batch>>,
    /// Identity of the session core that made the plan.
    pub core_id: usize,
}

#[pymethods]
impl FlushPlan {
    #[getter]
    fn batches(&self, py: Python<'_>) -> Vec<Py<Batch>> {
        self.batches.iter().map(|b| b.clone_ref(py)).collect()
    }

    fn __len__(&self) -> usize {
        self.batches.len()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for b in &self.batches {
            visit.call(b)?;
        }
        Ok(())
    }
}
