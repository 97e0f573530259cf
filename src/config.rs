//! Layered configuration (defaults → TOML file → `CORRAL__…` env), validation and redaction.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

pub mod proxy;

/// The whole configuration tree. Every section has documented defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub logging: LoggingConfig,
    pub backends: Vec<BackendConfig>,
    pub key_pools: Vec<KeyPoolConfig>,
    pub routing: RoutingConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: String,
    /// Largest request body accepted; larger bodies get 413.
    pub body_limit: ByteSize,
    /// How long in-flight requests may run after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Browser origins allowed to call corral (CORS), like `https://chat.example.com`;
    /// `["*"]` allows any origin (then never with credentials). Empty: no CORS answers.
    pub cors_origins: Vec<String>,
    /// Longest a client may take to send a request head; then the connection is closed.
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Longest a client may take to send a whole request body; then it gets 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Most memory all request bodies still arriving may hold together; past it a new
    /// body gets 503 with Retry-After.
    pub body_memory: ByteSize,
    /// Bytes of non-streamed upstream answers held in memory at once, all requests
    /// together; a request whose answer would pass this fails at once with 503.
    pub max_buffered_answers: ByteSize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            body_limit: ByteSize::mib(32),
            shutdown_grace: Duration::from_secs(30),
            workers: 0,
            cors_origins: Vec::new(),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            body_memory: ByteSize::mib(512),
            max_buffered_answers: ByteSize::mib(256),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://corral.db`, `sqlite:///abs/path.db`, or `postgres://user:pass@host/db`.
    pub url: String,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://corral.db".into(),
            pool_size: 8,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Empty: a single replica keeps all shared state in process.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let requests without a token through as user `anonymous`.
    pub allow_anonymous: bool,
    /// How long a token → user answer is cached in process.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Output tokens a generating request reserves against its user's `tpm` when it names
    /// no `max_tokens` / `max_completion_tokens` / `num_predict` of its own.
    pub tpm_output_allowance: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            cache_ttl: Duration::from_secs(30),
            tpm_output_allowance: 4096,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Store the gzip-compressed request body with each request row.
    pub store_bodies: bool,
    /// Bodies larger than this are not stored.
    pub body_cap: ByteSize,
    /// Request rows older than this are pruned; aggregates are kept 10× longer.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Rows waiting for the database; beyond this they are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            store_bodies: false,
            body_cap: ByteSize::kib(256),
            retention: Duration::from_secs(30 * 24 * 3600),
            queue_capacity: 50_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Ollama,
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub name: String,
    pub url: String,
    pub kind: BackendKind,
    /// 1 = first choice; larger numbers are fallback tiers.
    pub priority: u32,
    /// Largest total model memory this backend may hold; absent = unlimited.
    pub max_memory: Option<ByteSize>,
    /// Each request carries one key from this pool.
    pub key_pool: Option<String>,
    /// Name of an environment variable holding a single API key.
    pub api_key_env: Option<String>,
    /// Models served, for upstreams that cannot list them (openai/anthropic kinds).
    pub models: Vec<String>,
    /// May models be pulled onto this backend on demand.
    pub allow_pull: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed until the first response byte (covers model loading).
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest silence allowed between two chunks of a streamed answer.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a non-streamed answer may take from its first byte to its last.
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// How often `/api/tags`, `/api/ps` and `/api/version` are polled.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// PEM file of CA certificates trusted for this backend's `https` URL besides the
    /// system's: a self-hosted Ollama behind a TLS proxy with a private CA.
    pub tls_ca: Option<PathBuf>,
    /// Outbound HTTP proxy for this backend: absent = the environment's (`HTTPS_PROXY`…,
    /// never for loopback hosts); `""` = none; `http://[user:password@]host:port` = this one.
    pub proxy: Option<String>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            kind: BackendKind::Ollama,
            priority: 1,
            max_memory: None,
            key_pool: None,
            api_key_env: None,
            models: Vec::new(),
            allow_pull: false,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(180),
            answer_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(10),
            tls_ca: None,
            proxy: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyPoolConfig {
    pub name: String,
    /// One key a line, `#` comments; keys in the database are added.
    pub keys_file: Option<PathBuf>,
    /// Cooldown after a 429 without Retry-After; doubles on repeats up to `penalty_max`.
    #[serde(with = "humantime_serde")]
    pub penalty: Duration,
    #[serde(with = "humantime_serde")]
    pub penalty_max: Duration,
    /// Penalty when the upstream says a weekly/session usage limit is reached.
    #[serde(with = "humantime_serde")]
    pub usage_limit_penalty: Duration,
    /// Consecutive refused credentials (upstream 401/403) before a key is disabled; 5xx,
    /// 529 and timeouts are the backend's health and never count.
    pub disable_after_failures: u32,
    /// First re-probe of a key disabled by failures (a cheap authenticated listing);
    /// doubles after each refusal up to 32 times this. Accepted: the key is enabled again.
    #[serde(with = "humantime_serde")]
    pub reprobe_after: Duration,
}

impl Default for KeyPoolConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            keys_file: None,
            penalty: Duration::from_secs(30),
            penalty_max: Duration::from_secs(3600),
            usage_limit_penalty: Duration::from_secs(6 * 3600),
            disable_after_failures: 5,
            reprobe_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPattern {
    pub pattern: String,
    pub memory: ByteSize,
}

/// Per-model attributes for the virtual `auto` model; discovered values fill the rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelAttrs {
    pub name: String,
    pub speed: Option<String>,
    pub complexity: Option<[u8; 2]>,
    pub preferred_for: Vec<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default_model: String,
    /// Glob → model, applied before placement (`claude-*` → default model).
    pub aliases: BTreeMap<String, String>,
    /// Model pinned to a backend by name.
    pub assignments: BTreeMap<String, String>,
    pub memory_overrides: BTreeMap<String, ByteSize>,
    pub memory_patterns: Vec<MemoryPattern>,
    /// Memory assumed for a model of unknown size.
    pub default_memory: ByteSize,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Placements tried for one model before its fallbacks.
    pub max_attempts: u32,
    /// Names of the virtual model that classifies the task and picks a model.
    pub auto_models: Vec<String>,
    pub models: Vec<ModelAttrs>,
    /// Identical non-streaming requests of one user share one upstream call while it runs
    /// and for this long after its answer; `0s` turns sharing off.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// What a non-admin's Ollama `keep_alive` does: `pass`, `drop`, or `MIN..MAX` (humantime)
    /// to clamp it, so `0` (unload now) becomes MIN and `-1` (forever) becomes MAX.
    /// Admins' values always pass.
    pub client_keep_alive: String,
    /// `anthropic-beta` values forwarded upstream (the operator's key pays for them); the
    /// others are removed from the header.
    pub anthropic_betas: Vec<String>,
    /// Top-level fields of a `/v1/messages` body that may reach an upstream (Anthropic-kind
    /// upstreams get the client's body as sent); the others are removed before anything
    /// reads it. Not listed by default: `mcp_servers` and `container` (an upstream would
    /// call out to servers a client names, or run code, on the operator's key) and
    /// `service_tier` (the operator's billing choice).
    pub anthropic_fields: Vec<String>,
    /// The same for `/v1/chat/completions` bodies (OpenAI-kind upstreams get them as sent).
    pub openai_fields: Vec<String>,
}

/// The Messages API request fields Claude Code and the Anthropic SDKs send, but for the
/// ones that make the upstream act on the operator's key beyond answering.
const ANTHROPIC_FIELDS: [&str; 17] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "thinking",
    "tools",
    "tool_choice",
    "output_config",
    "output_format",
    "context_management",
    "cache_control",
];

/// The Chat Completions request fields the OpenAI SDK documents (and `top_k`, which
/// OpenAI-compatible servers take), but for `service_tier`, `store` and
/// `web_search_options`.
const OPENAI_FIELDS: [&str; 32] = [
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "top_k",
    "user",
    "verbosity",
];

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_model: String::new(),
            aliases: BTreeMap::new(),
            assignments: BTreeMap::new(),
            memory_overrides: BTreeMap::new(),
            memory_patterns: Vec::new(),
            default_memory: ByteSize::gib(8),
            fallbacks: BTreeMap::new(),
            max_attempts: 3,
            auto_models: vec!["auto".into()],
            models: Vec::new(),
            dedup_window: Duration::from_secs(2),
            client_keep_alive: "1m..1h".into(),
            anthropic_betas: [
                "claude-code-20250219",
                "interleaved-thinking-2025-05-14",
                "fine-grained-tool-streaming-2025-05-14",
                "token-efficient-tools-2025-02-19",
                "prompt-caching-2024-07-31",
                "context-1m-2025-08-07",
                "context-management-2025-06-27",
                "output-128k-2025-02-19",
            ]
            .map(String::from)
            .to_vec(),
            anthropic_fields: ANTHROPIC_FIELDS.map(String::from).to_vec(),
            openai_fields: OPENAI_FIELDS.map(String::from).to_vec(),
        }
    }
}

/// One thing wrong with a configuration, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Loads defaults, then `path` if it exists (it must exist when `required`), then env vars.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        let file = config::File::from(path.to_path_buf())
            .format(config::FileFormat::Toml)
            .required(false);
        let env = config::Environment::with_prefix("CORRAL")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        let raw = config::Config::builder()
            .add_source(file)
            .add_source(env)
            .build()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        cfg.validate().map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// Parses a TOML string on top of the defaults (no env); used by tests and `demo`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate().map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// Every problem at once, each with its path.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut out = Vec::new();
        let mut bad = |path: String, message: String| out.push(Problem { path, message });
        if self.server.listen.parse::<SocketAddr>().is_err() {
            bad(
                "server.listen".into(),
                format!(
                    "`{}` is not an address like 0.0.0.0:8080",
                    self.server.listen
                ),
            );
        }
        if self.server.body_limit.as_u64() < 1024 {
            bad("server.body_limit".into(), "must be at least 1KiB".into());
        }
        if let Err(e) = KeepAlive::parse(&self.routing.client_keep_alive) {
            bad("routing.client_keep_alive".into(), e);
        }
        for (name, fields) in [
            ("anthropic_fields", &self.routing.anthropic_fields),
            ("openai_fields", &self.routing.openai_fields),
        ] {
            for needed in ["model", "messages"] {
                if !fields.iter().any(|f| f == needed) {
                    bad(
                        format!("routing.{name}"),
                        format!("must list `{needed}`, or no request could be served"),
                    );
                }
            }
        }
        for (i, origin) in self.server.cors_origins.iter().enumerate() {
            if let Err(why) = check_origin(origin, self.server.cors_origins.len()) {
                bad(format!("server.cors_origins[{i}]"), why);
            }
        }
        if self.server.body_memory < self.server.body_limit {
            bad(
                "server.body_memory".into(),
                "must be at least server.body_limit, or no body of the largest size fits".into(),
            );
        }
        if self.server.head_timeout.is_zero() || self.server.body_timeout.is_zero() {
            bad(
                "server.head_timeout / server.body_timeout".into(),
                "must be above zero".into(),
            );
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite://")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            bad(
                "database.url".into(),
                "must start with sqlite://, postgres:// or postgresql://".into(),
            );
        }
        if self.database.pool_size == 0 {
            bad("database.pool_size".into(), "must be at least 1".into());
        }
        let r = &self.redis.url;
        if !(r.is_empty() || r.starts_with("redis://") || r.starts_with("rediss://")) {
            bad(
                "redis.url".into(),
                "must be empty or start with redis:// or rediss://".into(),
            );
        }
        let pools: Vec<&str> = self.key_pools.iter().map(|p| p.name.as_str()).collect();
        for (i, p) in self.key_pools.iter().enumerate() {
            if p.name.is_empty() {
                bad(format!("key_pools[{i}].name"), "must not be empty".into());
            }
            if pools.iter().filter(|n| **n == p.name).count() > 1 {
                bad(
                    format!("key_pools[{i}].name"),
                    format!("`{}` is used twice", p.name),
                );
            }
            if p.disable_after_failures == 0 {
                bad(
                    format!("key_pools[{i}].disable_after_failures"),
                    "must be at least 1".into(),
                );
            }
        }
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        for (i, b) in self.backends.iter().enumerate() {
            let at = |f: &str| format!("backends[{i}].{f}");
            if b.name.is_empty() {
                bad(at("name"), "must not be empty".into());
            } else if names.iter().filter(|n| **n == b.name).count() > 1 {
                bad(at("name"), format!("`{}` is used twice", b.name));
            }
            if !(b.url.starts_with("http://") || b.url.starts_with("https://")) || b.url.len() < 10
            {
                bad(
                    at("url"),
                    format!("`{}` is not an http:// or https:// URL", b.url),
                );
            } else if let Err(e) = proxy::for_url(&b.url, b.proxy.as_deref()) {
                let field = if b.proxy.is_some() { "proxy" } else { "url" };
                bad(at(field), e);
            }
            if let Some(pool) = &b.key_pool {
                if !pools.contains(&pool.as_str()) {
                    bad(at("key_pool"), format!("no key pool named `{pool}`"));
                }
            }
            if b.kind != BackendKind::Ollama && b.models.is_empty() {
                bad(
                    at("models"),
                    "list the models an openai/anthropic upstream serves".into(),
                );
            }
            if b.first_byte_timeout.is_zero()
                || b.idle_timeout.is_zero()
                || b.answer_timeout.is_zero()
            {
                bad(at("first_byte_timeout"), "timeouts must be positive".into());
            }
            if let Some(ca) = &b.tls_ca {
                if !b.url.starts_with("https://") {
                    bad(at("tls_ca"), "is only used with an https:// URL".into());
                } else if let Err(e) = read_ca_file(ca) {
                    bad(at("tls_ca"), e);
                }
            }
        }
        let rt = &self.routing;
        for (model, backend) in &rt.assignments {
            if !names.contains(&backend.as_str()) {
                bad(
                    format!("routing.assignments.{model}"),
                    format!("no backend named `{backend}`"),
                );
            }
        }
        for glob in rt.aliases.keys() {
            if let Err(e) = globset::Glob::new(glob) {
                bad(format!("routing.aliases.{glob}"), format!("bad glob: {e}"));
            }
        }
        for (i, p) in rt.memory_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&p.pattern) {
                bad(
                    format!("routing.memory_patterns[{i}].pattern"),
                    format!("bad regex: {e}"),
                );
            }
        }
        if rt.max_attempts == 0 {
            bad("routing.max_attempts".into(), "must be at least 1".into());
        }
        for (i, m) in rt.models.iter().enumerate() {
            if let Some([lo, hi]) = m.complexity {
                if lo > hi || hi > 10 || lo < 1 {
                    bad(
                        format!("routing.models[{i}].complexity"),
                        "must be [min, max] within 1..=10".into(),
                    );
                }
            }
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    /// A copy safe to print: passwords in URLs are masked.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.database.url = redact_url(&c.database.url);
        c.redis.url = redact_url(&c.redis.url);
        for b in &mut c.backends {
            b.url = redact_url(&b.url);
            b.proxy = b.proxy.as_deref().map(redact_url);
        }
        c
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Replaces the password of `[scheme://]user:pass@host` with `***` (proxies, as in
/// `http_proxy`, may be written without their scheme).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***@{host}"),
        None => format!("{scheme}***@{host}"),
    }
}

/// A CORS origin as browsers send it: `scheme://host[:port]`, nothing after; or `*` alone.
fn check_origin(origin: &str, count: usize) -> Result<(), String> {
    if origin == "*" {
        return match count {
            1 => Ok(()),
            _ => Err("`*` allows every origin; list it alone".into()),
        };
    }
    let bad = || format!("`{origin}` is not an origin like https://chat.example.com");
    let uri: http::Uri = origin.parse().map_err(|_| bad())?;
    let plain = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        && !origin.ends_with('/');
    if plain { Ok(()) } else { Err(bad()) }
}

/// `[routing] client_keep_alive`: what happens to a non-admin's Ollama `keep_alive`
/// (applied by `api::policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Pass,
    Drop,
    Clamp(Duration, Duration),
}

impl KeepAlive {
    pub fn parse(s: &str) -> Result<KeepAlive, String> {
        match s.trim() {
            "pass" => Ok(KeepAlive::Pass),
            "drop" => Ok(KeepAlive::Drop),
            range => {
                let bad = || format!("`{s}` is not pass, drop or a range like 1m..1h");
                let (lo, hi) = range.split_once("..").ok_or_else(bad)?;
                let lo = humantime::parse_duration(lo.trim()).map_err(|_| bad())?;
                let hi = humantime::parse_duration(hi.trim()).map_err(|_| bad())?;
                if lo > hi {
                    return Err(format!("`{s}`: the lower bound is above the upper one"));
                }
                Ok(KeepAlive::Clamp(lo, hi))
            }
        }
    }
}

/// The certificates of a PEM file of trusted CAs (`backends[].tls_ca`).
pub fn read_ca_file(path: &Path) -> Result<Vec<openssl::x509::X509>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Err(format!(
            "{} is not a PEM certificate file: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn parses_design_example() {
        let cfg = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            body_limit = "16MiB"
            shutdown_grace = "10s"
            [[backends]]
            name = "gpu-big"
            url = "http://10.0.0.11:11434"
            priority = 1
            max_memory = "80GiB"
            [[key_pools]]
            name = "cloud"
            penalty = "30s"
            [[backends]]
            name = "cloud"
            url = "https://ollama.com"
            key_pool = "cloud"
            [routing]
            default_model = "gpt-oss:120b-cloud"
            aliases = { "claude-*" = "gpt-oss:120b-cloud" }
            assignments = { "gpt-oss:120b" = "gpu-big" }
            memory_patterns = [ { pattern = ".*-70b.*", memory = "40GiB" } ]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.server.body_limit, ByteSize::mib(16));
        assert_eq!(cfg.backends[0].max_memory, Some(ByteSize::gib(80)));
        assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(cfg.key_pools[0].penalty, Duration::from_secs(30));
    }

    #[test]
    fn dedup_window_defaults_to_two_seconds_and_zero_turns_it_off() {
        assert_eq!(
            Config::default().routing.dedup_window,
            Duration::from_secs(2)
        );
        let cfg = Config::from_toml("[routing]\ndedup_window = \"0s\"\n").unwrap();
        assert!(cfg.routing.dedup_window.is_zero());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let cfg = Config::from_toml(
            r#"
            [server]
            listen = "nowhere"
            [[backends]]
            name = "a"
            url = "ftp://x"
            key_pool = "missing"
            [routing]
            max_attempts = 0
            "#,
        );
        let ConfigError::Invalid(problems) = cfg.unwrap_err() else {
            panic!("expected validation errors")
        };
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"server.listen"));
        assert!(paths.contains(&"backends[0].url"));
        assert!(paths.contains(&"backends[0].key_pool"));
        assert!(paths.contains(&"routing.max_attempts"));
    }

    #[test]
    fn tls_ca_must_be_a_readable_pem_file_for_an_https_backend() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let problems = |url: &str, ca: &Path| {
            let text = format!(
                "[[backends]]\nname = \"a\"\nurl = \"{url}\"\ntls_ca = \"{}\"\n",
                ca.display()
            );
            match Config::from_toml(&text) {
                Err(ConfigError::Invalid(p)) => p
                    .into_iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>(),
                other => panic!("expected validation errors, got {other:?}"),
            }
        };
        let missing = problems("https://gpu:443", &dir.path().join("none.pem"));
        assert!(
            missing[0].starts_with("backends[0].tls_ca: cannot read"),
            "{missing:?}"
        );
        let not_pem = problems("https://gpu:443", &junk);
        assert!(
            not_pem[0].ends_with("holds no PEM certificate"),
            "{not_pem:?}"
        );
        let plain = problems("http://gpu:11434", &junk);
        assert_eq!(
            plain,
            ["backends[0].tls_ca: is only used with an https:// URL"]
        );
    }

    #[test]
    fn a_backend_proxy_is_checked_and_its_password_redacted() {
        let text = "[[backends]]\nname = \"a\"\nurl = \"https://ollama.com\"\nproxy = \"socks5://p:1080\"\n";
        let Err(ConfigError::Invalid(problems)) = Config::from_toml(text) else {
            panic!("a socks5 proxy must be refused")
        };
        assert_eq!(problems[0].path, "backends[0].proxy");
        assert!(
            problems[0].message.contains("only http://"),
            "{}",
            problems[0].message
        );
        for (proxy, redacted) in [
            ("http://bob:hunter2@p:3128", "http://bob:***@p:3128"),
            ("bob:hunter2@p:3128", "\"bob:***@p:3128\""),
        ] {
            let ok = text.replace("socks5://p:1080", proxy);
            let shown = Config::from_toml(&ok).unwrap().redacted().to_toml();
            assert!(
                shown.contains(redacted) && !shown.contains("hunter2"),
                "{shown}"
            );
        }
    }

    #[test]
    fn cors_origins_are_origins_or_a_lone_star() {
        let problems = |origins: &str| match Config::from_toml(&format!(
            "[server]\ncors_origins = {origins}\n"
        )) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| p.path).collect(),
            Err(e) => panic!("{e:?}"),
        };
        assert!(problems(r#"["https://chat.example.com", "http://localhost:5173"]"#).is_empty());
        assert!(problems(r#"["*"]"#).is_empty());
        assert_eq!(
            problems(r#"["https://ok.example", "chat.example.com", "https://x.example/app"]"#),
            ["server.cors_origins[1]", "server.cors_origins[2]"]
        );
        assert_eq!(
            problems(r#"["*", "https://ok.example"]"#),
            ["server.cors_origins[0]"]
        );
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("postgres://corral:s3cret@db:5432/corral"),
            "postgres://corral:***@db:5432/corral"
        );
        assert_eq!(redact_url("sqlite://corral.db"), "sqlite://corral.db");
        let mut cfg = Config::default();
        cfg.database.url = "postgres://u:hunter2@h/db".into();
        assert!(!cfg.redacted().to_toml().contains("hunter2"));
    }
}
