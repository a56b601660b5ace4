//! Conversions between Python values and engine values.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};

use crate::engine::key::{IdentityKey, KeyValue};

use super::errors::InvalidRequestError;

/// Convert one primary-key value to its native form.
pub fn key_value(v: &Bound<'_, PyAny>) -> PyResult<KeyValue> {
    let py = v.py();
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(KeyValue::Str(s.to_str()?.into()));
    }
    if let Ok(b) = v.cast::<PyBool>() {
        // True == 1 and False == 0 in Python, so SQLAlchemy's identity map (tuples of values)
        // finds the object of key 1 under True: key them alike
        return Ok(KeyValue::Int(i64::from(b.is_true())));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(KeyValue::Int(i));
        }
        return Ok(KeyValue::Other(Box::new((
            "int".into(),
            v.str()?.to_str()?.into(),
        ))));
    }
    if v.is_none() {
        return Err(InvalidRequestError::new_err(
            "a primary key value is None; every primary key column needs a value to form an \
             identity",
        ));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(KeyValue::Bytes(b.as_bytes().into()));
    }
    let ty = v.get_type();
    let name = ty.qualname()?;
    let name = name.to_str()?;
    if name == "UUID" {
        let n: u128 = v.getattr(pyo3::intern!(py, "int"))?.extract()?;
        return Ok(KeyValue::Uuid(n.to_be_bytes()));
    }
    Ok(KeyValue::Other(Box::new((
        name.into(),
        v.str()?.to_str()?.into(),
    ))))
}

/// Build an identity key from primary-key values in primary-key column order.
pub fn identity_key<'py>(
    mapper: u32,
    values: impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<IdentityKey> {
    let values = values
        .map(|v| key_value(&v))
        .collect::<PyResult<smallvec::SmallVec<[KeyValue; 1]>>>()?;
    Ok(IdentityKey::new(mapper, values))
}
