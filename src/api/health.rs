//! health handlers.
