//! Identity keys: a mapper id plus the typed primary-key values, hashed natively.
//!
//! No application object is ever a hash key: the binding converts each primary-key value to a
//! `KeyValue` once, and from then on lookups hash and compare plain Rust data.

use smallvec::SmallVec;
use std::fmt;
use thin_vec::ThinVec;

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
///
/// Two words wide: the common key, one integer column, is held inline; any other key keeps its
/// values out of line behind one pointer. (It is held in every object's state and in every
/// identity-map entry.) A key of one integer value is always built as `Int`, so that equal
/// keys compare and hash equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    Int {
        mapper: u32,
        value: i64,
    },
    Values {
        mapper: u32,
        values: ThinVec<KeyValue>,
    },
}

impl IdentityKey {
    pub fn new(mapper: u32, values: impl IntoIterator<Item = KeyValue>) -> Self {
        // gathered inline first: the one-integer key allocates nothing
        let values: SmallVec<[KeyValue; 1]> = values.into_iter().collect();
        match values.as_slice() {
            [KeyValue::Int(value)] => IdentityKey::Int {
                mapper,
                value: *value,
            },
            _ => IdentityKey::Values {
                mapper,
                values: values.into_iter().collect(),
            },
        }
    }

    pub fn mapper(&self) -> u32 {
        match self {
            IdentityKey::Int { mapper, .. } | IdentityKey::Values { mapper, .. } => *mapper,
        }
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKey::Int { value, .. } => write!(f, "({value})"),
            IdentityKey::Values { values, .. } => {
                f.write_str("(")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
        }
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
    fn keys_are_two_words_and_one_integer_is_held_inline() {
        assert_eq!(std::mem::size_of::<IdentityKey>(), 16);
        assert_eq!(std::mem::size_of::<Option<IdentityKey>>(), 16);
        let k = IdentityKey::new(3, [KeyValue::Int(7)]);
        assert!(matches!(
            k,
            IdentityKey::Int {
                mapper: 3,
                value: 7
            }
        ));
        assert_eq!(k.mapper(), 3);
        assert_eq!(k.to_string(), "(7)");
        let s = IdentityKey::new(3, [KeyValue::Str("7".into())]);
        assert_ne!(k, s);
        assert_eq!(s.mapper(), 3);
    }

    #[test]
    fn composite_keys_compare_by_every_value() {
        let a = IdentityKey::new(1, [KeyValue::Int(1), KeyValue::Str("x".into())]);
        let b = IdentityKey::new(1, [KeyValue::Int(1), KeyValue::Str("y".into())]);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "(1, \"x\")");
    }
}
