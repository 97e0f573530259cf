//! anthropic handlers.
