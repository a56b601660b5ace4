//! COPY ... FROM STDIN rows in PostgreSQL's text format, encoded from a batch's parameter
//! values in one call (the per-row loop of psycopg's `write_row` was most of an insert flush).
//!
//! The values are those the bind processors produced: what psycopg would otherwise dump.
//! Types encoded here: None, bool, int, float, str, bytes, and (through `str()`, whose output
//! PostgreSQL parses as psycopg's would) Decimal, UUID, date, time and datetime. Anything else
//! (JSON wrappers, lists, timedeltas, a str holding NUL...) makes the encoder give up, and the
//! caller writes the rows through psycopg instead, so its errors and conversions stay the same.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateTime, PyFloat, PyInt, PyList, PyString, PyTime,
    PyType,
};

pub(super) static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
pub(super) static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A Python class looked up once by module and name (shared with the binary encoder).
pub(super) fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import(module)?
                .getattr(name)?
                .cast_into::<PyType>()?
                .unbind(),
        )
    })
    .map(|t| t.bind(py))
}

/// Append one value; Ok(false) when it is of a type this encoder leaves to psycopg.
pub fn encode(py: Python<'_>, value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<bool> {
    if value.is_none() {
        out.extend_from_slice(b"\\N");
        return Ok(true);
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(escape_text(s.to_str()?, out));
    }
    if let Ok(b) = value.cast::<PyBool>() {
        out.push(if b.is_true() { b't' } else { b'f' });
        return Ok(true);
    }
    if let Ok(i) = value.cast::<PyInt>() {
        match i.extract::<i64>() {
            Ok(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Err(_) => out.extend_from_slice(i.str()?.to_str()?.as_bytes()), // beyond bigint
        }
        return Ok(true);
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let x = f.value();
        if x.is_nan() {
            out.extend_from_slice(b"NaN");
        } else if x.is_infinite() {
            out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
        } else {
            // shortest text that reads back as the same double
            out.extend_from_slice(format!("{x:?}").as_bytes());
        }
        return Ok(true);
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        hex_bytea(b.as_bytes(), out);
        return Ok(true);
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        hex_bytea(&b.to_vec(), out);
        return Ok(true);
    }
    let exact = value.get_type();
    if value.cast::<PyDateTime>().is_ok()
        || value.cast::<PyDate>().is_ok()
        || value.cast::<PyTime>().is_ok()
        || exact.is(class(py, &DECIMAL, "decimal", "Decimal")?)
        || exact.is(class(py, &UUID, "uuid", "UUID")?)
    {
        return Ok(escape_text(value.str()?.to_str()?, out));
    }
    Ok(false)
}

/// Columns of values as PostgreSQL array literals (`{1,2,"x"}`), one string per column:
/// `rows` yields each row's values in column order (`width` of them). None when a value is of
/// a type left to psycopg.
pub fn column_literals<'py, 'a>(
    py: Python<'py>,
    width: usize,
    rows: impl Iterator<Item = Vec<&'a Bound<'py, PyAny>>>,
) -> PyResult<Option<Vec<Bound<'py, PyString>>>>
where
    'py: 'a,
{
    let mut cols: Vec<Vec<u8>> = (0..width).map(|_| vec![b'{']).collect();
    for (j, row) in rows.enumerate() {
        if row.len() != width {
            return Err(PyValueError::new_err(
                "array literals: rows of different widths",
            ));
        }
        for (c, v) in row.into_iter().enumerate() {
            let out = &mut cols[c];
            if j > 0 {
                out.push(b',');
            }
            if !encode_element(py, v, out)? {
                return Ok(None);
            }
        }
    }
    cols.into_iter()
        .map(|mut col| {
            col.push(b'}');
            let text = String::from_utf8(col)
                .map_err(|e| PyValueError::new_err(format!("array literal: {e}")))?;
            Ok(PyString::new(py, &text))
        })
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

/// Rows (sequences of `width` values) as PostgreSQL array literals, one per column, for
/// `unnest(%s::type[], ...)`: psycopg's list dumper costs about a microsecond per element.
/// None when a value is of a type left to psycopg (then pass lists).
#[pyfunction]
pub fn array_literals<'py>(
    rows: &Bound<'py, PyList>,
    width: usize,
) -> PyResult<Option<Vec<Bound<'py, PyString>>>> {
    let py = rows.py();
    let rows: Vec<Vec<Bound<'py, PyAny>>> = rows
        .iter()
        .map(|r| r.try_iter()?.collect::<PyResult<Vec<_>>>())
        .collect::<PyResult<_>>()?;
    column_literals(py, width, rows.iter().map(|r| r.iter().collect()))
}

/// Append one element of a PostgreSQL array literal (`{a,b}`); Ok(false) as `encode`.
pub fn encode_element(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<bool> {
    if value.is_none() {
        out.extend_from_slice(b"NULL");
        return Ok(true);
    }
    if value.cast::<PyInt>().is_ok() && value.cast::<PyBool>().is_err() {
        return encode(py, value, out); // digits need no quotes
    }
    // everything else double-quoted, with `"` and `\` escaped; the scalar text comes from
    // the COPY encoder (whose own escapes are undone first: only backslashes can appear)
    let mut scalar = Vec::new();
    if !encode(py, value, &mut scalar)? {
        return Ok(false);
    }
    let text = unescape_copy(&scalar);
    out.push(b'"');
    for &c in &text {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
    Ok(true)
}

/// Undo COPY's text escapes (`\\`, `\n`, `\r`, `\t`).
fn unescape_copy(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\\' && i + 1 < data.len() {
            out.push(match data[i + 1] {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                other => other,
            });
            i += 2;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Text with COPY's escapes; false for a NUL, which PostgreSQL text cannot hold (psycopg then
/// raises its own error).
fn escape_text(s: &str, out: &mut Vec<u8>) -> bool {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0 => return false,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    true
}

/// bytea in hex format, its backslash escaped for COPY.
fn hex_bytea(data: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(3 + 2 * data.len());
    out.extend_from_slice(b"\\\\x");
    for &b in data {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}
