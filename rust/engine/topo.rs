//! Deterministic topological ordering.
