//! The anthropic dialect: decoding requests, encoding responses and stream translation.
