//! Identity keys: a mapper id plus the typed primary-key values, hashed natively.
