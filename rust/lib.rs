//! retort's native core.
//!
//! `engine` is pure Rust (no PyO3): identity keys, the identity map, object lifecycle
//! states, dependency ordering and the flush planner. `py` is the only module that
//! touches PyO3; it adapts the engine to Python objects and is compiled with the
//! `python` feature.

pub mod engine;

#[cfg(feature = "python")]
pub mod py;
