//! admin handlers.
