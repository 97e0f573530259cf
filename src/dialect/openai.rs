//! The openai dialect: decoding requests, encoding responses and stream translation.
