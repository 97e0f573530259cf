//! messages actor.
