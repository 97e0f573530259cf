//! The model catalogue behind `auto`: what each model can do, from Ollama discovery, name hints and `[[routing.models]]`.
//!
//! A [`ModelCard`] starts from a raw `/api/tags` (or `/api/ps`) item and, when the backend
//! answered it, the model's `/api/show`. What discovery cannot tell (speed, the complexity a
//! model handles well) is derived from the parameter count; what `/api/show` did not say is
//! guessed from the name (`coder`, `llava`, `embed`, `r1`). Operators correct any of it with
//! `[[routing.models]]`, applied last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::config::ModelAttrs;
use crate::routing::classifier::Category;

/// How quickly a model answers, relative to the rest of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speed {
    Fast,
    Medium,
    Slow,
}

impl Speed {
    /// The spelling `[[routing.models]] speed = ".."` accepts (case-insensitive).
    pub fn parse(s: &str) -> Option<Speed> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" => Some(Speed::Fast),
            "medium" => Some(Speed::Medium),
            "slow" => Some(Speed::Slow),
            _ => None,
        }
    }

    /// Up to 9B answers fast on one GPU, up to 35B at a medium pace, beyond that slowly.
    /// Unknown size (0) is taken as medium.
    pub fn from_parameters(billions: f64) -> Speed {
        match billions {
            b if b <= 0.0 => Speed::Medium,
            b if b <= 9.5 => Speed::Fast,
            b if b <= 35.0 => Speed::Medium,
            _ => Speed::Slow,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Speed::Fast => "fast",
            Speed::Medium => "medium",
            Speed::Slow => "slow",
        }
    }
}

/// The complexity range (1..=10) a model of this size handles well. Unknown size covers all.
pub fn complexity_for_parameters(billions: f64) -> [u8; 2] {
    match billions {
        b if b <= 0.0 => [1, 10],
        b if b < 2.0 => [1, 3],
        b if b < 5.0 => [1, 5],
        b if b < 10.0 => [1, 6],
        b if b < 20.0 => [2, 7],
        b if b < 40.0 => [3, 9],
        b if b < 80.0 => [4, 10],
        _ => [5, 10],
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub completion: bool,
    pub tools: bool,
    pub vision: bool,
    pub embedding: bool,
    pub thinking: bool,
}

/// Where a card's capabilities came from: the backend's `/api/show`, or a guess from the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovered {
    Show,
    Name,
}

/// One model as the `auto` router sees it. Served as-is by `/admin/api/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    pub name: String,
    pub family: String,
    /// Billions of parameters; 0 when unknown.
    pub parameter_size_b: f64,
    /// `Q4_K_M` and the like; empty when unknown.
    pub quantization: String,
    /// Trained context window in tokens; `None` when unknown (then assumed to fit).
    pub context_length: Option<u32>,
    pub capabilities: Capabilities,
    pub capabilities_from: Discovered,
    pub speed: Speed,
    /// Inclusive complexity range the model handles well.
    pub complexity: [u8; 2],
    /// Categories (`code`, `reasoning`, configured names) this model is the first choice for.
    pub preferred_for: Vec<String>,
    pub enabled: bool,
    /// A `[[routing.models]]` entry was applied.
    pub configured: bool,
}

impl ModelCard {
    /// Build a card from one `/api/tags` (or `/api/ps`) item and, if available, `/api/show`.
    pub fn from_ollama(tag: &Value, show: Option<&Value>) -> ModelCard {
        let name = str_at(tag, &["name"])
            .or_else(|| str_at(tag, &["model"]))
            .unwrap_or_default()
            .to_owned();
        let detail = |key: &str| {
            show.and_then(|s| str_at(s, &["details", key]))
                .or_else(|| str_at(tag, &["details", key]))
                .filter(|v| !v.is_empty())
        };
        let info = show.and_then(|s| s.get("model_info"));
        let parameter_size_b = info
            .and_then(|i| i.get("general.parameter_count"))
            .and_then(Value::as_f64)
            .map(|n| n / 1e9)
            .or_else(|| detail("parameter_size").and_then(parse_parameter_size))
            .or_else(|| parameters_from_name(&name))
            .unwrap_or(0.0);
        let context_length = info.and_then(context_from_model_info).or_else(|| {
            tag.get("context_length")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        });
        let hints = NameHints::of(&name);
        let shown = show
            .and_then(|s| s.get("capabilities"))
            .and_then(Value::as_array);
        let (capabilities, capabilities_from) = match shown {
            Some(list) => (capabilities_from_show(list), Discovered::Show),
            None => (hints.capabilities(), Discovered::Name),
        };
        let mut preferred_for = Vec::new();
        if hints.code {
            preferred_for.push(Category::Code.as_str().to_owned());
        }
        if capabilities.thinking || hints.reasoning {
            preferred_for.push(Category::Reasoning.as_str().to_owned());
        }
        ModelCard {
            family: detail("family")
                .map(str::to_owned)
                .unwrap_or_else(|| family_from_name(&name)),
            quantization: detail("quantization_level").unwrap_or_default().to_owned(),
            parameter_size_b,
            context_length,
            capabilities,
            capabilities_from,
            speed: Speed::from_parameters(parameter_size_b),
            complexity: complexity_for_parameters(parameter_size_b),
            preferred_for,
            enabled: true,
            configured: false,
            name,
        }
    }

    /// Apply one `[[routing.models]]` entry. Set fields replace discovered ones; an unknown
    /// speed spelling is ignored here (config validation reports it, see [`Speed::parse`]).
    pub fn apply_overrides(&mut self, attrs: &ModelAttrs) {
        if let Some(speed) = attrs.speed.as_deref().and_then(Speed::parse) {
            self.speed = speed;
        }
        if let Some([a, b]) = attrs.complexity {
            let (lo, hi) = (a.min(b).clamp(1, 10), a.max(b).clamp(1, 10));
            self.complexity = [lo, hi];
        }
        if !attrs.preferred_for.is_empty() {
            self.preferred_for = attrs
                .preferred_for
                .iter()
                .map(|c| Category::parse(c).as_str().to_owned())
                .collect();
        }
        if let Some(enabled) = attrs.enabled {
            self.enabled = enabled;
        }
        self.configured = true;
    }

    pub fn is_preferred_for(&self, category: &Category) -> bool {
        self.preferred_for.iter().any(|c| c == category.as_str())
    }

    /// Whether a `[[routing.models]]` name refers to this model (`qwen3` means `qwen3:latest`).
    pub fn answers_to(&self, configured: &str) -> bool {
        self.name == configured
            || (!configured.contains(':') && self.name.strip_suffix(":latest") == Some(configured))
    }
}

/// Every model `auto` may route to, by name. Serializes as `{"models": [card, ..]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Catalogue {
    #[serde(serialize_with = "cards_as_list")]
    models: BTreeMap<String, ModelCard>,
}

fn cards_as_list<S: Serializer>(
    models: &BTreeMap<String, ModelCard>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(models.values())
}

impl Catalogue {
    pub fn new() -> Catalogue {
        Catalogue::default()
    }

    /// Build from discovery (`(tags item, show)` pairs, possibly the same model from several
    /// backends) and then apply the configured overrides. Returns the catalogue and the
    /// configured names that matched no discovered model, for the caller to warn about.
    pub fn build<'a>(
        discovered: impl IntoIterator<Item = (&'a Value, Option<&'a Value>)>,
        overrides: &[ModelAttrs],
    ) -> (Catalogue, Vec<String>) {
        let mut catalogue = Catalogue::new();
        for (tag, show) in discovered {
            catalogue.discover(ModelCard::from_ollama(tag, show));
        }
        let unmatched = catalogue.apply_overrides(overrides);
        (catalogue, unmatched)
    }

    /// Add a discovered card; a card backed by `/api/show` is never replaced by a name guess.
    pub fn discover(&mut self, card: ModelCard) {
        if card.name.is_empty() {
            return;
        }
        let keep_existing = self.models.get(&card.name).is_some_and(|old| {
            old.capabilities_from == Discovered::Show && card.capabilities_from == Discovered::Name
        });
        if !keep_existing {
            self.models.insert(card.name.clone(), card);
        }
    }

    /// Insert or replace a card as given.
    pub fn insert(&mut self, card: ModelCard) -> Option<ModelCard> {
        self.models.insert(card.name.clone(), card)
    }

    /// Apply `[[routing.models]]`; returns the names that matched no model.
    pub fn apply_overrides(&mut self, overrides: &[ModelAttrs]) -> Vec<String> {
        let mut unmatched = Vec::new();
        for attrs in overrides {
            let mut matched = false;
            for card in self.models.values_mut() {
                if card.answers_to(&attrs.name) {
                    card.apply_overrides(attrs);
                    matched = true;
                }
            }
            if !matched {
                unmatched.push(attrs.name.clone());
            }
        }
        unmatched
    }

    pub fn get(&self, name: &str) -> Option<&ModelCard> {
        self.models.get(name)
    }

    /// Cards in name order.
    pub fn iter(&self) -> impl Iterator<Item = &ModelCard> {
        self.models.values()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Models suited to a category: vision and embedding by capability, the others (and
    /// configured categories) by `preferred_for`. Disabled models are included: this is a view
    /// for operators, not the router.
    pub fn by_category(&self, category: &str) -> Vec<&ModelCard> {
        let category = Category::parse(category);
        self.iter()
            .filter(|card| match category {
                Category::Vision => card.capabilities.vision,
                Category::Embedding => card.capabilities.embedding,
                _ => card.is_preferred_for(&category),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading Ollama's JSON.

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

fn capabilities_from_show(list: &[Value]) -> Capabilities {
    let mut caps = Capabilities::default();
    for cap in list.iter().filter_map(Value::as_str) {
        match cap {
            "completion" => caps.completion = true,
            "tools" => caps.tools = true,
            "vision" | "image" => caps.vision = true,
            "embedding" => caps.embedding = true,
            "thinking" => caps.thinking = true,
            _ => {}
        }
    }
    caps
}

/// `<general.architecture>.context_length`, else any `*.context_length` key.
fn context_from_model_info(info: &Value) -> Option<u32> {
    let map = info.as_object()?;
    let arch_key = map
        .get("general.architecture")
        .and_then(Value::as_str)
        .map(|arch| format!("{arch}.context_length"));
    let value = arch_key.and_then(|k| map.get(&k)).or_else(|| {
        map.iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .map(|(_, v)| v)
    })?;
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// `8.2B`, `567M`, `1.5T`, `70b` → billions.
fn parse_parameter_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let unit = s.chars().last()?.to_ascii_lowercase();
    let number: f64 = s.get(..s.len() - 1)?.trim().parse().ok()?;
    let billions = match unit {
        'k' => number / 1e6,
        'm' => number / 1e3,
        'b' => number,
        't' => number * 1e3,
        _ => return None,
    };
    (billions > 0.0 && billions.is_finite()).then_some(billions)
}

/// `llama3.1:70b` → 70, `qwen2.5-coder:32b-instruct-q4` → 32, `mixtral:8x7b` → 56,
/// `gpt-oss:120b-cloud` → 120. Tag segments first, then the base name.
fn parameters_from_name(name: &str) -> Option<f64> {
    let (base, tag) = name.split_once(':').unwrap_or((name, ""));
    tag.split(['-', '_'])
        .chain(base.split(['-', '_']))
        .find_map(|seg| {
            if let Some((experts, each)) = seg.split_once('x') {
                let experts: f64 = experts.parse().ok()?;
                return parse_parameter_size(each).map(|b| b * experts);
            }
            if !seg.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            parse_parameter_size(seg)
        })
}

/// `qwen2.5-coder:32b` → `qwen2.5-coder`; the base name without the tag.
fn family_from_name(name: &str) -> String {
    let base = name.split_once(':').map_or(name, |(b, _)| b);
    base.rsplit('/').next().unwrap_or(base).to_owned()
}

/// What a model's name says about it, for when `/api/show` is missing.
#[derive(Debug, Default)]
struct NameHints {
    code: bool,
    reasoning: bool,
    vision: bool,
    embedding: bool,
    tools: bool,
}

impl NameHints {
    fn of(name: &str) -> NameHints {
        let n = name.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|x| n.contains(x));
        let base = n.split_once(':').map_or(n.as_str(), |(b, _)| b);
        let segment = |s: &str| base.split(['-', '_', '.', '/']).any(|seg| seg == s);
        NameHints {
            code: has(&[
                "coder",
                "codellama",
                "starcoder",
                "codestral",
                "devstral",
                "codegemma",
            ]),
            reasoning: has(&[
                "thinking",
                "gpt-oss",
                "qwq",
                "magistral",
                "deepseek-r1",
                "phi4-reasoning",
            ]) || segment("r1"),
            vision: has(&[
                "llava",
                "vision",
                "moondream",
                "minicpm-v",
                "qwen2.5vl",
                "qwen3-vl",
            ]) || segment("vl"),
            embedding: has(&["embed", "bge-", "bge:", "all-minilm", "e5-"]),
            tools: has(&[
                "llama3.1",
                "llama3.2",
                "llama3.3",
                "llama4",
                "qwen2.5",
                "qwen3",
                "mistral",
                "mixtral",
                "gpt-oss",
                "command-r",
                "hermes",
                "granite3",
                "firefunction",
                "devstral",
                "magistral",
                "kimi",
                "glm",
                "deepseek-v3",
                "nemotron",
            ]),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            completion: !self.embedding,
            tools: self.tools && !self.embedding,
            vision: self.vision,
            embedding: self.embedding,
            thinking: self.reasoning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(name: &str, size: &str) -> Value {
        json!({"name": name, "model": name, "size": 5_225_388_164u64,
               "details": {"family": "qwen3", "parameter_size": size, "quantization_level": "Q4_K_M"}})
    }

    #[test]
    fn show_is_trusted_over_the_name() {
        let show = json!({
            "details": {"family": "qwen3", "parameter_size": "8.2B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "qwen3", "general.parameter_count": 8_190_735_360u64,
                           "qwen3.context_length": 40960},
            "capabilities": ["completion", "tools", "thinking"]
        });
        let card = ModelCard::from_ollama(&tag("qwen3:8b", "8.2B"), Some(&show));
        assert_eq!(card.capabilities_from, Discovered::Show);
        assert!(
            card.capabilities.tools && card.capabilities.thinking && card.capabilities.completion
        );
        assert!(!card.capabilities.vision);
        assert_eq!(card.context_length, Some(40960));
        assert!((card.parameter_size_b - 8.19).abs() < 0.01);
        assert_eq!(card.speed, Speed::Fast);
        assert_eq!(card.complexity, [1, 6]);
        assert_eq!(card.quantization, "Q4_K_M");
        assert_eq!(card.preferred_for, vec!["reasoning"]);
    }

    #[test]
    fn names_fill_in_when_show_is_missing() {
        let bare = |name: &str| ModelCard::from_ollama(&json!({ "name": name }), None);
        let coder = bare("qwen2.5-coder:32b");
        assert_eq!(coder.preferred_for, vec!["code"]);
        assert_eq!(coder.parameter_size_b, 32.0);
        assert_eq!(coder.speed, Speed::Medium);
        assert!(coder.capabilities.tools);
        assert_eq!(coder.family, "qwen2.5-coder");
        let llava = bare("llava:13b");
        assert!(llava.capabilities.vision && llava.capabilities.completion);
        let embed = bare("nomic-embed-text:latest");
        assert!(embed.capabilities.embedding && !embed.capabilities.completion);
        let r1 = bare("deepseek-r1:70b");
        assert!(r1.capabilities.thinking);
        assert_eq!(r1.preferred_for, vec!["reasoning"]);
        assert_eq!(r1.speed, Speed::Slow);
        let oss = bare("gpt-oss:120b-cloud");
        assert!(oss.capabilities.thinking && oss.capabilities.tools);
        assert_eq!(oss.parameter_size_b, 120.0);
        assert_eq!(oss.complexity, [5, 10]);
        let moe = bare("mixtral:8x7b");
        assert_eq!(moe.parameter_size_b, 56.0);
        let unknown = bare("glm-5.2:cloud");
        assert_eq!(unknown.parameter_size_b, 0.0);
        assert_eq!(unknown.complexity, [1, 10]);
        assert_eq!(unknown.context_length, None);
    }

    #[test]
    fn parameter_sizes_parse() {
        assert_eq!(parse_parameter_size("8.2B"), Some(8.2));
        assert_eq!(parse_parameter_size("567M"), Some(0.567));
        assert_eq!(parse_parameter_size("1.5T"), Some(1500.0));
        assert_eq!(parse_parameter_size(""), None);
        assert_eq!(parse_parameter_size("latest"), None);
        assert_eq!(
            parameters_from_name("llama3.1:70b-instruct-q4_K_M"),
            Some(70.0)
        );
        assert_eq!(parameters_from_name("phi3:latest"), None);
    }

    #[test]
    fn overrides_replace_discovered_values() {
        let mut card = ModelCard::from_ollama(&tag("qwen3:8b", "8.2B"), None);
        card.apply_overrides(&ModelAttrs {
            name: "qwen3:8b".into(),
            speed: Some("Slow".into()),
            complexity: Some([9, 2]),
            preferred_for: vec!["SQL".into(), "code".into()],
            enabled: Some(false),
        });
        assert_eq!(card.speed, Speed::Slow);
        assert_eq!(card.complexity, [2, 9]);
        assert_eq!(card.preferred_for, vec!["sql", "code"]);
        assert!(!card.enabled && card.configured);
        card.apply_overrides(&ModelAttrs {
            name: "qwen3:8b".into(),
            speed: Some("warp".into()),
            ..Default::default()
        });
        assert_eq!(
            card.speed,
            Speed::Slow,
            "an unknown speed keeps the current one"
        );
    }

    #[test]
    fn catalogue_builds_filters_and_serializes() {
        let tags = [
            tag("qwen2.5-coder:32b", "32.8B"),
            tag("llava:latest", "7B"),
            tag("nomic-embed-text:latest", "137M"),
            tag("llama3.1:8b", "8.0B"),
        ];
        let overrides = [
            ModelAttrs {
                name: "llama3.1:8b".into(),
                preferred_for: vec!["general".into()],
                ..Default::default()
            },
            ModelAttrs {
                name: "llava".into(),
                speed: Some("fast".into()),
                ..Default::default()
            },
            ModelAttrs {
                name: "missing:1b".into(),
                ..Default::default()
            },
        ];
        let (cat, unmatched) = Catalogue::build(tags.iter().map(|t| (t, None)), &overrides);
        assert_eq!(cat.len(), 4);
        assert_eq!(unmatched, vec!["missing:1b"]);
        assert!(cat.get("llava:latest").is_some_and(|c| c.configured));
        let names = |v: Vec<&ModelCard>| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(cat.by_category("code")), vec!["qwen2.5-coder:32b"]);
        assert_eq!(names(cat.by_category("Vision")), vec!["llava:latest"]);
        assert_eq!(
            names(cat.by_category("embedding")),
            vec!["nomic-embed-text:latest"]
        );
        assert_eq!(names(cat.by_category("general")), vec!["llama3.1:8b"]);
        let json = serde_json::to_value(&cat).unwrap();
        assert_eq!(json["models"].as_array().map(Vec::len), Some(4));
        assert_eq!(json["models"][0]["name"], "llama3.1:8b");
        assert_eq!(json["models"][0]["speed"], "fast");
        assert_eq!(json["models"][0]["capabilities"]["tools"], true);
    }

    #[test]
    fn a_name_guess_never_replaces_a_shown_card() {
        let show = json!({"capabilities": ["completion", "vision"]});
        let mut cat = Catalogue::new();
        cat.discover(ModelCard::from_ollama(
            &tag("gemma3:4b", "4.3B"),
            Some(&show),
        ));
        cat.discover(ModelCard::from_ollama(&tag("gemma3:4b", "4.3B"), None));
        assert!(cat.get("gemma3:4b").is_some_and(|c| c.capabilities.vision));
    }
}
