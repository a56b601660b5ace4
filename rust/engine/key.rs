//! Identity keys: a mapper id plus the typed primary-key values, hashed natively.
//!
//! No application object is ever a hash key: the binding converts each primary-key value to a
//! `KeyValue` once, and from then on lookups hash and compare plain Rust data.

use smallvec::SmallVec;
use std::fmt;

/// One primary-key column value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    /// Big-endian bytes (not u128: that would align every key to 16 bytes).
    Uuid([u8; 16]),
    /// A value of another type, by type name and a canonical text form (boxed together to
    /// keep every key value two words wide).
    Other(Box<(Box<str>, Box<str>)>),
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Str(v) => write!(f, "{v:?}"),
            KeyValue::Bytes(v) => write!(f, "<{} bytes>", v.len()),
            KeyValue::Uuid(v) => write!(f, "UUID({:032x})", u128::from_be_bytes(*v)),
            KeyValue::Other(b) => write!(f, "{}({})", b.0, b.1),
        }
    }
}

/// The identity of a persistent row in a session: which mapper, and its primary key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub mapper: u32,
    pub values: SmallVec<[KeyValue; 1]>,
}

impl IdentityKey {
    pub fn new(mapper: u32, values: impl IntoIterator<Item = KeyValue>) -> Self {
        IdentityKey {
            mapper,
            values: values.into_iter().collect(),
        }
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_of_different_mappers_differ() {
        let a = IdentityKey::new(1, [KeyValue::Int(5)]);
        let b = IdentityKey::new(2, [KeyValue::Int(5)]);
        assert_ne!(a, b);
        let mut m = HashMap::new();
        m.insert(a.clone(), "a");
        m.insert(b.clone(), "b");
        assert_eq!(m[&a], "a");
        assert_eq!(m[&b], "b");
    }

    #[test]
    fn composite_keys_compare_by_every_value() {
        let a = IdentityKey::new(1, [KeyValue::Int(1), KeyValue::Str("x".into())]);
        let b = IdentityKey::new(1, [KeyValue::Int(1), KeyValue::Str("y".into())]);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "(1, \"x\")");
    }
}
