//! Memory a model needs on a backend: its `/api/tags` size, else configured overrides, patterns, default.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;

use crate::config::RoutingConfig;

/// Configured memory estimates, with the `memory_patterns` regexes compiled once.
///
/// A pattern must match the whole model name (`.*-70b.*` matches `llama3.1-70b:q4`, `70b` alone
/// matches nothing), which is how the examples in the design are written.
#[derive(Debug, Clone)]
pub struct MemoryEstimator {
    overrides: BTreeMap<String, u64>,
    patterns: Vec<(Regex, u64)>,
    default: u64,
}

impl MemoryEstimator {
    /// Compiles the patterns; `Config::validate` has already rejected bad ones, so an error here
    /// is a start-up error.
    pub fn new(cfg: &RoutingConfig) -> Result<Self, regex::Error> {
        let patterns = cfg
            .memory_patterns
            .iter()
            .map(|p| {
                Ok((
                    Regex::new(&format!("^(?:{})$", p.pattern))?,
                    p.memory.as_u64(),
                ))
            })
            .collect::<Result<Vec<_>, regex::Error>>()?;
        let overrides = cfg
            .memory_overrides
            .iter()
            .map(|(name, size)| (normalize_model(name).into_owned(), size.as_u64()))
            .collect();
        Ok(Self {
            overrides,
            patterns,
            default: cfg.default_memory.as_u64(),
        })
    }

    /// What the configuration says `model` needs: override, else first matching pattern,
    /// else the default.
    pub fn configured(&self, model: &str) -> u64 {
        let key = normalize_model(model);
        if let Some(size) = self.overrides.get(key.as_ref()) {
            return *size;
        }
        self.patterns
            .iter()
            .find(|(re, _)| re.is_match(model) || re.is_match(&key))
            .map_or(self.default, |(_, size)| *size)
    }

    /// Memory `model` needs: the size the backend reported in `/api/tags` wins.
    pub fn need(&self, model: &str, tag_size: Option<u64>) -> u64 {
        match tag_size {
            Some(size) if size > 0 => size,
            _ => self.configured(model),
        }
    }
}

/// Ollama's reading of a model name: no tag means `:latest`.
pub fn normalize_model(name: &str) -> Cow<'_, str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}:latest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytesize::ByteSize;

    fn estimator() -> MemoryEstimator {
        let cfg: RoutingConfig = toml::from_str(
            r#"
            memory_overrides = { "custom-70b" = "40GiB", "tiny:1b" = "1GiB" }
            memory_patterns = [
                { pattern = ".*-70b.*", memory = "42GiB" },
                { pattern = ".*:70b", memory = "43GiB" },
            ]
            default_memory = "6GiB"
            "#,
        )
        .unwrap();
        MemoryEstimator::new(&cfg).unwrap()
    }

    #[test]
    fn tag_size_wins_over_configuration() {
        assert_eq!(estimator().need("custom-70b", Some(123)), 123);
    }

    #[test]
    fn overrides_then_patterns_then_default() {
        let e = estimator();
        assert_eq!(e.need("custom-70b", None), ByteSize::gib(40).as_u64());
        assert_eq!(
            e.need("custom-70b:latest", None),
            ByteSize::gib(40).as_u64()
        );
        assert_eq!(e.need("tiny:1b", Some(0)), ByteSize::gib(1).as_u64());
        assert_eq!(e.need("other-70b-q4", None), ByteSize::gib(42).as_u64());
        assert_eq!(e.need("llama3.1:70b", None), ByteSize::gib(43).as_u64());
        assert_eq!(e.need("qwen3:8b", None), ByteSize::gib(6).as_u64());
    }

    #[test]
    fn patterns_match_whole_names() {
        let cfg: RoutingConfig =
            toml::from_str(r#"memory_patterns = [ { pattern = "70b", memory = "1GiB" } ]"#)
                .unwrap();
        let e = MemoryEstimator::new(&cfg).unwrap();
        assert_eq!(e.configured("llama3.1:70b"), cfg.default_memory.as_u64());
    }

    #[test]
    fn names_without_a_tag_are_latest() {
        assert_eq!(normalize_model("llama3"), "llama3:latest");
        assert_eq!(normalize_model("qwen3:8b"), "qwen3:8b");
        assert_eq!(normalize_model("host:5000/lib/m"), "host:5000/lib/m:latest");
    }
}
