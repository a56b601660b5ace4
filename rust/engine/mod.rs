//! The pure-Rust engine: everything done once per object, independent of Python.
//!
//! Nothing here imports PyO3. Types that hold application values are generic over the value
//! type, so the same code serves Python objects in the binding and plain values in tests.

pub mod error;
pub mod identity;
pub mod key;
pub mod ordered;
pub mod pgbinary;
pub mod plan;
#[cfg(any(test, fuzzing))]
pub mod plan_check;
pub mod snapshot;
pub mod state;
pub mod topo;
