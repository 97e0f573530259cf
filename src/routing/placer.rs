//! placer.
