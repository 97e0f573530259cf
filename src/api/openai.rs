//! openai handlers.
