//! backend actor.
