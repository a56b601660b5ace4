//! COPY ... FROM STDIN (FORMAT BINARY) data, encoded from a batch's parameter values in one
//! call.
//!
//! Binary COPY is type-exact: every field is in the receive format of its column's type, so the
//! caller passes one kind per COPY column (`KIND_*`, from the mapper's column types, checked
//! against the table's types in the catalog). A value is encoded only when its binary form is
//! exactly what PostgreSQL would have stored from the text the text-format encoder (`copy`)
//! sends for it; anything else (a str into an integer column, an int out of the column's range,
//! a str holding NUL, a time zone whose offset has microseconds, numeric infinities...) makes
//! the encoder give up, and the caller uses the text path instead, so conversions and errors
//! stay as they were.

use pyo3::prelude::*;

use super::copy::{class, DECIMAL, UUID};

use crate::engine::pgbinary::{
    days_since_epoch, numeric, numeric_int, parse_uuid, time_usecs, TZ_LIMIT, USECS_PER_DAY,
};
pub use crate::engine::pgbinary::{HEADER, TRAILER};
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess,
    PyFloat, PyInt, PyString, PyTime, PyTimeAccess, PyType, PyTzInfo, PyTzInfoAccess,
};

pub const KIND_INT2: u8 = 1;
pub const KIND_INT4: u8 = 2;
pub const KIND_INT8: u8 = 3;
pub const KIND_FLOAT4: u8 = 4;
pub const KIND_FLOAT8: u8 = 5;
pub const KIND_NUMERIC: u8 = 6;
pub const KIND_BOOL: u8 = 7;
/// text, varchar, bpchar (and Enum columns, stored as varchar)
pub const KIND_TEXT: u8 = 8;
pub const KIND_BYTEA: u8 = 9;
pub const KIND_UUID: u8 = 10;
pub const KIND_DATE: u8 = 11;
pub const KIND_TIME: u8 = 12;
pub const KIND_TIMETZ: u8 = 13;
pub const KIND_TIMESTAMP: u8 = 14;
pub const KIND_TIMESTAMPTZ: u8 = 15;
pub const KIND_INTERVAL: u8 = 16;
pub const KIND_JSONB: u8 = 17;
pub const KIND_MAX: u8 = 17;

static JSONB: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Where the encoder gets what it cannot compute itself.
pub struct Context<'a, 'py> {
    /// psycopg's text dumper for Jsonb on the target connection (`dump(value) -> bytes`), so the
    /// document text is what psycopg would send (its configured `dumps`, the wrapper's own).
    pub json_dump: Option<&'a Bound<'py, PyAny>>,
}

/// Append one field (length word and value); Ok(false) when the value must go through the text
/// path instead.
pub fn encode(
    ctx: &Context<'_, '_>,
    kind: u8,
    value: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<bool> {
    if value.is_none() {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(true);
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    if !encode_value(ctx, kind, value, out)? {
        out.truncate(at);
        return Ok(false);
    }
    let Ok(len) = i32::try_from(out.len() - at - 4) else {
        out.truncate(at);
        return Ok(false); // beyond what one field can hold: the text path reports it
    };
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(true)
}

/// An int (not a bool), as i64; None when it is not one or does not fit.
fn int_value(value: &Bound<'_, PyAny>) -> Option<i64> {
    if value.cast::<PyBool>().is_ok() {
        return None;
    }
    value.cast::<PyInt>().ok()?.extract::<i64>().ok()
}

fn encode_value(
    ctx: &Context<'_, '_>,
    kind: u8,
    value: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<bool> {
    let py = value.py();
    match kind {
        KIND_INT2 => match int_value(value).and_then(|n| i16::try_from(n).ok()) {
            Some(n) => out.extend_from_slice(&n.to_be_bytes()),
            None => return Ok(false),
        },
        KIND_INT4 => match int_value(value).and_then(|n| i32::try_from(n).ok()) {
            Some(n) => out.extend_from_slice(&n.to_be_bytes()),
            None => return Ok(false),
        },
        KIND_INT8 => match int_value(value) {
            Some(n) => out.extend_from_slice(&n.to_be_bytes()),
            None => return Ok(false),
        },
        KIND_FLOAT8 => {
            let x = if let Ok(f) = value.cast::<PyFloat>() {
                f.value()
            } else if let Some(n) = int_value(value) {
                n as f64 // round to nearest, as float8in reads the digits
            } else {
                return Ok(false);
            };
            out.extend_from_slice(&x.to_be_bytes());
        }
        KIND_FLOAT4 => {
            // float4in reads the text the text path sends (the double's shortest repr, or the
            // int's digits) with strtof: parse that same text, correctly rounded
            let (text, nonzero) = if let Ok(f) = value.cast::<PyFloat>() {
                let x = f.value();
                if x.is_nan() {
                    out.extend_from_slice(&f32::NAN.to_be_bytes());
                    return Ok(true);
                }
                if x.is_infinite() {
                    let y = if x > 0.0 {
                        f32::INFINITY
                    } else {
                        f32::NEG_INFINITY
                    };
                    out.extend_from_slice(&y.to_be_bytes());
                    return Ok(true);
                }
                (format!("{x:?}"), x != 0.0)
            } else if let Some(n) = int_value(value) {
                (n.to_string(), n != 0)
            } else {
                return Ok(false);
            };
            let Ok(y) = text.parse::<f32>() else {
                return Ok(false);
            };
            // out of real's range (PostgreSQL raises), or subnormal (versions differ)
            if !y.is_finite() || (nonzero && !y.is_normal()) {
                return Ok(false);
            }
            out.extend_from_slice(&y.to_be_bytes());
        }
        KIND_NUMERIC => {
            if let Some(n) = int_value(value) {
                numeric_int(n, out);
            } else if (value.cast::<PyInt>().is_ok() && value.cast::<PyBool>().is_err())
                || value
                    .get_type()
                    .is(class(py, &DECIMAL, "decimal", "Decimal")?)
            {
                // an int beyond i64, or a Decimal: the text the text path sends
                let text = value.str()?;
                return Ok(numeric(text.to_str()?, out));
            } else {
                return Ok(false);
            }
        }
        KIND_BOOL => match value.cast::<PyBool>() {
            Ok(b) => out.push(u8::from(b.is_true())),
            Err(_) => return Ok(false),
        },
        KIND_TEXT => {
            let Ok(s) = value.cast::<PyString>() else {
                return Ok(false);
            };
            let Ok(s) = s.to_str() else {
                return Ok(false); // lone surrogates: the text path raises as it does today
            };
            if s.as_bytes().contains(&0) {
                return Ok(false); // PostgreSQL text cannot hold NUL: psycopg's error
            }
            out.extend_from_slice(s.as_bytes());
        }
        KIND_BYTEA => {
            if let Ok(b) = value.cast::<PyBytes>() {
                out.extend_from_slice(b.as_bytes());
            } else if let Ok(b) = value.cast::<PyByteArray>() {
                out.extend_from_slice(&b.to_vec());
            } else {
                return Ok(false);
            }
        }
        KIND_UUID => {
            if value.get_type().is(class(py, &UUID, "uuid", "UUID")?) {
                let n: u128 = value.getattr(pyo3::intern!(py, "int"))?.extract()?;
                out.extend_from_slice(&n.to_be_bytes());
            } else if let Ok(s) = value.cast::<PyString>() {
                match s.to_str().ok().and_then(parse_uuid) {
                    Some(n) => out.extend_from_slice(&n.to_be_bytes()),
                    None => return Ok(false),
                }
            } else {
                return Ok(false);
            }
        }
        KIND_DATE => {
            // a datetime into a date column: date_in drops its time; leave that to it
            if value.cast::<PyDateTime>().is_ok() {
                return Ok(false);
            }
            let Ok(d) = value.cast::<PyDate>() else {
                return Ok(false);
            };
            let days = days_since_epoch(d.get_year(), d.get_month(), d.get_day());
            out.extend_from_slice(&(days as i32).to_be_bytes());
        }
        KIND_TIME | KIND_TIMETZ => {
            let Ok(t) = value.cast::<PyTime>() else {
                return Ok(false);
            };
            let usecs = time_usecs(t.get_hour(), t.get_minute(), t.get_second())
                + i64::from(t.get_microsecond());
            let tz = t.get_tzinfo();
            if kind == KIND_TIME {
                if tz.is_some() {
                    return Ok(false);
                }
                out.extend_from_slice(&usecs.to_be_bytes());
            } else {
                if tz.is_none() {
                    return Ok(false); // read in the session's time zone
                }
                let Some(offset) = utc_offset(value)? else {
                    return Ok(false);
                };
                if offset % 1_000_000 != 0 || (offset / 1_000_000).abs() > TZ_LIMIT {
                    return Ok(false);
                }
                // the zone as seconds west of UTC
                let zone = -(offset / 1_000_000) as i32;
                out.extend_from_slice(&usecs.to_be_bytes());
                out.extend_from_slice(&zone.to_be_bytes());
            }
        }
        KIND_TIMESTAMP | KIND_TIMESTAMPTZ => {
            let Ok(dt) = value.cast::<PyDateTime>() else {
                return Ok(false);
            };
            let local = days_since_epoch(dt.get_year(), dt.get_month(), dt.get_day())
                * USECS_PER_DAY
                + time_usecs(dt.get_hour(), dt.get_minute(), dt.get_second())
                + i64::from(dt.get_microsecond());
            let tz = dt.get_tzinfo();
            let usecs = if kind == KIND_TIMESTAMP {
                if tz.is_some() {
                    return Ok(false);
                }
                local
            } else {
                let Some(tz) = tz else {
                    return Ok(false); // a naive value: the session's time zone decides
                };
                let offset = if tz.is(&*PyTzInfo::utc(py)?) {
                    0
                } else {
                    match utc_offset(value)? {
                        // str() shows an offset's microseconds, which PostgreSQL refuses
                        Some(o) if o % 1_000_000 == 0 => o,
                        _ => return Ok(false),
                    }
                };
                local - offset
            };
            out.extend_from_slice(&usecs.to_be_bytes());
        }
        KIND_INTERVAL => {
            let Ok(td) = value.cast::<PyDelta>() else {
                return Ok(false);
            };
            // as psycopg sends it: days, and the seconds and microseconds of the day
            let usecs = i64::from(td.get_seconds()) * 1_000_000 + i64::from(td.get_microseconds());
            out.extend_from_slice(&usecs.to_be_bytes());
            out.extend_from_slice(&td.get_days().to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes()); // months
        }
        KIND_JSONB => {
            let Some(dump) = ctx.json_dump else {
                return Ok(false);
            };
            if !value
                .get_type()
                .is(class(py, &JSONB, "psycopg.types.json", "Jsonb")?)
            {
                return Ok(false);
            }
            // a document json.dumps refuses: psycopg raises it on the text path
            let Ok(doc) = dump.call1((value,)) else {
                return Ok(false);
            };
            out.push(1); // jsonb's binary format version
            if let Ok(b) = doc.cast::<PyBytes>() {
                out.extend_from_slice(b.as_bytes());
            } else if let Ok(b) = doc.cast::<PyByteArray>() {
                out.extend_from_slice(&b.to_vec());
            } else {
                match doc.extract::<Vec<u8>>() {
                    Ok(v) => out.extend_from_slice(&v),
                    Err(_) => return Ok(false),
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `value.utcoffset()` in microseconds; None when the time zone gives none.
fn utc_offset(value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let offset = value.call_method0(pyo3::intern!(value.py(), "utcoffset"))?;
    let Ok(td) = offset.cast::<PyDelta>() else {
        return Ok(None);
    };
    Ok(Some(
        (i64::from(td.get_days()) * 86_400 + i64::from(td.get_seconds())) * 1_000_000
            + i64::from(td.get_microseconds()),
    ))
}
