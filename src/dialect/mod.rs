//! The three client dialects: which one a path speaks, and the pure translators per dialect.

pub mod anthropic;
pub mod detect;
pub mod lines;
pub mod native;
pub mod ollama;
pub mod openai;
pub mod relay;
pub mod responses;
pub mod sse;
#[cfg(test)]
mod stream_props;
mod wire;

pub use crate::ir::Dialect;
