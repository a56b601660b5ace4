//! The pure-Rust engine: everything done once per object, independent of Python.

pub mod key;
pub mod topo;
