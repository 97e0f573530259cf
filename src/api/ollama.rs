//! ollama handlers.
