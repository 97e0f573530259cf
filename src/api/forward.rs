//! forward handlers.
