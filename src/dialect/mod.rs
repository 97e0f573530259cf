//! The three client dialects: which one a path speaks, and the pure translators per dialect.

pub mod anthropic;
pub mod detect;
pub mod lines;
pub mod ollama;
pub mod openai;
pub mod relay;
pub mod responses;
pub mod sse;
#[cfg(test)]
mod stream_props;
mod wire;

/// The wire dialect of the endpoint a client called; errors are answered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Ollama,
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The bounded label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}
