//! Model aliases (exact names and globs such as `claude-*`) resolved before placement.

use globset::{Glob, GlobMatcher};

use crate::config::RoutingConfig;

/// Compiled alias table: exact names win over globs; globs are tried longest pattern first.
pub struct Aliases {
    exact: std::collections::HashMap<String, String>,
    globs: Vec<(GlobMatcher, String)>,
    default_model: String,
}

impl Aliases {
    pub fn new(cfg: &RoutingConfig) -> Aliases {
        let mut exact = std::collections::HashMap::new();
        let mut globs = Vec::new();
        for (pattern, target) in &cfg.aliases {
            let target = if target.is_empty() {
                cfg.default_model.clone()
            } else {
                target.clone()
            };
            if pattern.contains(['*', '?', '[']) {
                // Validated in Config::validate, so a bad glob cannot reach here.
                if let Ok(g) = Glob::new(pattern) {
                    globs.push((pattern.len(), g.compile_matcher(), target));
                }
            } else {
                exact.insert(pattern.clone(), target);
            }
        }
        globs.sort_by_key(|g| std::cmp::Reverse(g.0));
        Aliases {
            exact,
            globs: globs.into_iter().map(|(_, g, t)| (g, t)).collect(),
            default_model: cfg.default_model.clone(),
        }
    }

    /// The model to place for `requested`; an empty request means the default model.
    pub fn resolve<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() && !self.default_model.is_empty() {
            return &self.default_model;
        }
        if let Some(t) = self.exact.get(requested) {
            return t;
        }
        self.globs
            .iter()
            .find(|(g, _)| g.is_match(requested))
            .map_or(requested, |(_, t)| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_longest_glob() {
        let mut cfg = RoutingConfig {
            default_model: "big".into(),
            ..Default::default()
        };
        cfg.aliases.insert("claude-*".into(), "big".into());
        cfg.aliases.insert("claude-haiku-*".into(), "small".into());
        cfg.aliases.insert("gpt-4o".into(), "llama3.1:70b".into());
        let a = Aliases::new(&cfg);
        assert_eq!(a.resolve("claude-sonnet-4-6"), "big");
        assert_eq!(a.resolve("claude-haiku-4-5-20251001"), "small");
        assert_eq!(a.resolve("gpt-4o"), "llama3.1:70b");
        assert_eq!(a.resolve("qwen3:8b"), "qwen3:8b");
        assert_eq!(a.resolve(""), "big");
    }
}
