//! Fingerprints of mutable (JSON) values, to detect changes made in place.
//!
//! `user.prefs["theme"] = "dark"` changes a dict the object already holds: no attribute is set,
//! so nothing marks the object dirty. For columns of mutable types the core keeps a 64-bit hash
//! of each loaded value and compares it with a hash of the current value before a flush. The
//! walk hashes the structure directly (no JSON encoding, no copies), and dict hashes do not
//! depend on key order, matching dict equality.

use std::hash::{Hash, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

const SEEDS: (u64, u64, u64, u64) = (
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

fn hasher() -> ahash::AHasher {
    use std::hash::BuildHasher;
    ahash::RandomState::with_seeds(SEEDS.0, SEEDS.1, SEEDS.2, SEEDS.3).build_hasher()
}

/// Depth beyond which a value is hashed by its repr (guards against runaway recursion).
const MAX_DEPTH: usize = 64;

fn walk(v: &Bound<'_, PyAny>, h: &mut ahash::AHasher, depth: usize) -> PyResult<()> {
    if v.is_none() {
        0u8.hash(h);
    } else if let Ok(b) = v.cast::<PyBool>() {
        1u8.hash(h);
        b.is_true().hash(h);
    } else if v.is_instance_of::<PyInt>() {
        2u8.hash(h);
        match v.extract::<i64>() {
            Ok(i) => i.hash(h),
            Err(_) => v.str()?.to_str()?.hash(h),
        }
    } else if let Ok(f) = v.cast::<PyFloat>() {
        3u8.hash(h);
        f.value().to_bits().hash(h);
    } else if let Ok(s) = v.cast::<PyString>() {
        4u8.hash(h);
        s.to_str()?.hash(h);
    } else if depth >= MAX_DEPTH {
        9u8.hash(h);
        v.repr()?.to_str()?.hash(h);
    } else if let Ok(l) = v.cast::<PyList>() {
        5u8.hash(h);
        l.len().hash(h);
        for item in l.iter() {
            walk(&item, h, depth + 1)?;
        }
    } else if let Ok(t) = v.cast::<PyTuple>() {
        6u8.hash(h);
        t.len().hash(h);
        for item in t.iter() {
            walk(&item, h, depth + 1)?;
        }
    } else if let Ok(d) = v.cast::<PyDict>() {
        7u8.hash(h);
        d.len().hash(h);
        // Order-independent: combine per-item hashes commutatively.
        let mut acc: u64 = 0;
        for (k, val) in d.iter() {
            let mut ih = hasher();
            walk(&k, &mut ih, depth + 1)?;
            walk(&val, &mut ih, depth + 1)?;
            acc = acc.wrapping_add(ih.finish());
        }
        acc.hash(h);
    } else {
        8u8.hash(h);
        v.get_type().qualname()?.to_str()?.hash(h);
        v.repr()?.to_str()?.hash(h);
    }
    Ok(())
}

pub fn fingerprint(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    let mut h = hasher();
    walk(v, &mut h, 0)?;
    Ok(h.finish())
}
