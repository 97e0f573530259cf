//! log_writer actor.
