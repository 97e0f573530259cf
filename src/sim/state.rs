//! Shared state of one sim: catalogue, residency in simulated VRAM, runtime knobs, counters.
//!
//! Everything here is plain data behind `parking_lot` locks so tests can read and steer a
//! running sim directly (`state.set_hang(true)`, `state.open_streams()`), and so the
//! `/_sim/stats` and `/_sim/control` endpoints are thin views over the same methods.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::catalogue::{ModelSpec, canonical};

/// Ollama's default `keep_alive`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

/// Which Ollama Cloud wording a usage-limit 429 carries; clients pick penalty lengths from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    #[default]
    Session,
    Weekly,
    Hourly,
}

/// Behaviour that tests change while the sim runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knobs {
    /// Share of inference requests answered 500 before the first byte.
    pub fail_rate: f64,
    /// Share of inference requests answered 503 (queue full) before the first byte.
    pub busy_rate: f64,
    /// Never answer inference requests (no headers at all).
    pub hang: bool,
    /// Stall inference streams forever after a few frames.
    pub hang_mid: bool,
    /// Every model load fails with Ollama's out-of-memory error.
    pub oom: bool,
    pub limit_mode: LimitMode,
    pub latency_ms: u64,
    pub token_ms: u64,
    pub load_ms: u64,
    /// Tokens in an answer when neither a directive nor `num_predict` says otherwise.
    pub default_tokens: u64,
    pub key_budget: Option<u64>,
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            fail_rate: 0.0,
            busy_rate: 0.0,
            hang: false,
            hang_mid: false,
            oom: false,
            limit_mode: LimitMode::Session,
            latency_ms: 0,
            token_ms: 0,
            load_ms: 0,
            default_tokens: 20,
            key_budget: None,
            budget_window: Duration::from_secs(60),
        }
    }
}

/// How long a model stays resident after its last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Parses Ollama's `keep_alive`: a number is seconds, a string a Go duration, negative is
    /// forever, absent is 5 minutes.
    pub fn parse(value: Option<&Value>) -> Result<Self, String> {
        match value {
            None | Some(Value::Null) => Ok(Self::For(DEFAULT_KEEP_ALIVE)),
            Some(Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(0.0);
                Ok(Self::from_secs(secs))
            }
            Some(Value::String(s)) => parse_go_duration(s)
                .map(Self::from_secs)
                .ok_or_else(|| format!("time: invalid duration \"{s}\"")),
            Some(other) => Err(format!("invalid keep_alive: {other}")),
        }
    }

    fn from_secs(secs: f64) -> Self {
        if secs < 0.0 {
            Self::Forever
        } else {
            Self::For(Duration::from_secs_f64(secs))
        }
    }
}

/// Go's `time.ParseDuration` (`1h30m`, `-1m`, `300ms`, `0`), in seconds.
fn parse_go_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * factor;
    }
    Some(if neg { -total } else { total })
}

/// Why a model could not be made resident.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    NotFound,
    OutOfMemory { need: u64, available: u64 },
}

#[derive(Debug, Clone)]
struct Resident {
    spec: ModelSpec,
    context_length: u64,
    generation: u64,
    ready_at: Instant,
    last_used: Instant,
    in_use: u32,
    keep_alive: KeepAlive,
    /// Set when idle; `None` while in use or kept forever.
    expires_at: Option<Instant>,
}

#[derive(Default)]
struct Models {
    catalogue: BTreeMap<String, ModelSpec>,
    resident: HashMap<String, Resident>,
    next_generation: u64,
}

impl Models {
    fn purge_expired(&mut self, now: Instant) {
        self.resident
            .retain(|_, r| r.in_use > 0 || r.expires_at.is_none_or(|e| e > now));
    }

    fn used(&self) -> u64 {
        self.resident.values().map(|r| r.spec.size).sum()
    }
}

#[derive(Default)]
struct Counters {
    by_path: Mutex<BTreeMap<String, u64>>,
    by_key: Mutex<BTreeMap<String, u64>>,
    by_model: Mutex<BTreeMap<String, u64>>,
    open_streams: AtomicI64,
    cancelled_streams: AtomicU64,
    completed_streams: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
    /// TCP connections accepted: shows whether a client reuses its connections.
    connections: AtomicU64,
    /// Per path, the headers and body of the last request: what the gateway really sent.
    last: Mutex<BTreeMap<String, serde_json::Value>>,
}

/// Everything one running sim knows; shared by its workers and by the test that started it.
pub struct SimState {
    name: String,
    vram: u64,
    models: Mutex<Models>,
    knobs: RwLock<Knobs>,
    counters: Counters,
    key_windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    keys: Vec<String>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of Debug output: tests print states on failure.
        f.debug_struct("SimState")
            .field("name", &self.name)
            .field("vram", &self.vram)
            .field("knobs", &*self.knobs.read())
            .finish_non_exhaustive()
    }
}

impl SimState {
    pub fn new(
        name: String,
        vram: u64,
        catalogue: Vec<ModelSpec>,
        knobs: Knobs,
        keys: Vec<String>,
    ) -> Self {
        let models = Models {
            catalogue: catalogue.into_iter().map(|m| (m.name.clone(), m)).collect(),
            ..Models::default()
        };
        Self {
            name,
            vram,
            models: Mutex::new(models),
            knobs: RwLock::new(knobs),
            counters: Counters::default(),
            key_windows: Mutex::new(HashMap::new()),
            keys,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn vram(&self) -> u64 {
        self.vram
    }

    // ---- knobs ----

    pub fn knobs(&self) -> Knobs {
        self.knobs.read().clone()
    }

    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.knobs.write());
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.update_knobs(|k| k.fail_rate = rate.clamp(0.0, 1.0));
    }

    pub fn set_busy_rate(&self, rate: f64) {
        self.update_knobs(|k| k.busy_rate = rate.clamp(0.0, 1.0));
    }

    pub fn set_hang(&self, hang: bool) {
        self.update_knobs(|k| k.hang = hang);
    }

    pub fn set_hang_mid(&self, hang: bool) {
        self.update_knobs(|k| k.hang_mid = hang);
    }

    pub fn set_oom(&self, oom: bool) {
        self.update_knobs(|k| k.oom = oom);
    }

    pub fn set_limit_mode(&self, mode: LimitMode) {
        self.update_knobs(|k| k.limit_mode = mode);
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.update_knobs(|k| k.latency_ms = ms);
    }

    pub fn set_token_ms(&self, ms: u64) {
        self.update_knobs(|k| k.token_ms = ms);
    }

    pub fn set_load_ms(&self, ms: u64) {
        self.update_knobs(|k| k.load_ms = ms);
    }

    pub fn set_key_budget(&self, budget: Option<u64>) {
        self.update_knobs(|k| k.key_budget = budget);
    }

    /// Applies a `/_sim/control` body. Unknown fields are an error so a typo in a test fails
    /// loudly instead of silently changing nothing.
    pub fn apply_control(&self, body: &Value) -> Result<(), String> {
        let obj = body
            .as_object()
            .ok_or("control body must be a JSON object")?;
        let mut knobs = self.knobs();
        for (key, value) in obj {
            let bad = || format!("bad value for {key}: {value}");
            match key.as_str() {
                "fail_rate" => knobs.fail_rate = value.as_f64().ok_or_else(bad)?.clamp(0.0, 1.0),
                "busy_rate" => knobs.busy_rate = value.as_f64().ok_or_else(bad)?.clamp(0.0, 1.0),
                "hang" => knobs.hang = value.as_bool().ok_or_else(bad)?,
                "hang_mid" => knobs.hang_mid = value.as_bool().ok_or_else(bad)?,
                "oom" => knobs.oom = value.as_bool().ok_or_else(bad)?,
                "limit_mode" => {
                    knobs.limit_mode = serde_json::from_value(value.clone()).map_err(|_| bad())?
                }
                "latency_ms" => knobs.latency_ms = value.as_u64().ok_or_else(bad)?,
                "token_ms" => knobs.token_ms = value.as_u64().ok_or_else(bad)?,
                "load_ms" => knobs.load_ms = value.as_u64().ok_or_else(bad)?,
                "default_tokens" => knobs.default_tokens = value.as_u64().ok_or_else(bad)?,
                "key_budget" => {
                    knobs.key_budget = match value {
                        Value::Null => None,
                        v => Some(v.as_u64().ok_or_else(bad)?),
                    }
                }
                "budget_window" => {
                    let text = value.as_str().ok_or_else(bad)?;
                    knobs.budget_window = humantime::parse_duration(text).map_err(|_| bad())?;
                }
                "unload_all" | "reset_counters" | "reset_budgets" => {
                    value.as_bool().ok_or_else(bad)?;
                }
                _ => return Err(format!("unknown control field {key}")),
            }
        }
        *self.knobs.write() = knobs;
        if obj.get("unload_all") == Some(&Value::Bool(true)) {
            self.unload_all();
        }
        if obj.get("reset_counters") == Some(&Value::Bool(true)) {
            self.reset_counters();
        }
        if obj.get("reset_budgets") == Some(&Value::Bool(true)) {
            self.key_windows.lock().clear();
        }
        Ok(())
    }

    // ---- catalogue ----

    pub fn model(&self, name: &str) -> Option<ModelSpec> {
        self.models.lock().catalogue.get(&canonical(name)).cloned()
    }

    pub fn catalogue(&self) -> Vec<ModelSpec> {
        self.models.lock().catalogue.values().cloned().collect()
    }

    pub fn add_model(&self, spec: ModelSpec) {
        self.models.lock().catalogue.insert(spec.name.clone(), spec);
    }

    /// Removes a model (and unloads it); false when it did not exist.
    pub fn remove_model(&self, name: &str) -> bool {
        let name = canonical(name);
        let mut models = self.models.lock();
        models.resident.remove(&name);
        models.catalogue.remove(&name).is_some()
    }

    // ---- residency ----

    /// Makes `name` resident (evicting least recently used models when VRAM would overflow)
    /// and marks it in use until the returned guard drops. The caller waits until the
    /// returned instant, which is later than now when the model has to be loaded.
    pub fn acquire(
        self: &Arc<Self>,
        name: &str,
        keep_alive: KeepAlive,
        num_ctx: Option<u64>,
    ) -> Result<(ModelUse, Instant), LoadError> {
        let name = canonical(name);
        let knobs = self.knobs();
        let now = Instant::now();
        let mut models = self.models.lock();
        models.purge_expired(now);
        let spec = models
            .catalogue
            .get(&name)
            .cloned()
            .ok_or(LoadError::NotFound)?;
        if knobs.oom || spec.size > self.vram {
            return Err(LoadError::OutOfMemory {
                need: spec.size,
                available: if knobs.oom { 0 } else { self.vram },
            });
        }
        let context_length = num_ctx.unwrap_or_else(|| self.default_context(&spec));
        if let Some(r) = models.resident.get_mut(&name) {
            if r.context_length == context_length {
                r.in_use += 1;
                r.last_used = now;
                r.expires_at = None;
                r.keep_alive = keep_alive;
                let guard = ModelUse {
                    state: Arc::clone(self),
                    name,
                    generation: r.generation,
                    keep_alive,
                };
                return Ok((guard, r.ready_at));
            }
            // Ollama treats (model, num_ctx) as the resident unit: another size reloads.
            models.resident.remove(&name);
        }
        while models.used() + spec.size > self.vram {
            let victim = models
                .resident
                .iter()
                .min_by_key(|(_, r)| (r.in_use > 0, r.last_used))
                .map(|(n, _)| n.clone());
            let Some(victim) = victim else { break };
            models.resident.remove(&victim);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        models.next_generation += 1;
        let generation = models.next_generation;
        let ready_at = now + Duration::from_millis(knobs.load_ms);
        models.resident.insert(
            name.clone(),
            Resident {
                spec,
                context_length,
                generation,
                ready_at,
                last_used: now,
                in_use: 1,
                keep_alive,
                expires_at: None,
            },
        );
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        let guard = ModelUse {
            state: Arc::clone(self),
            name,
            generation,
            keep_alive,
        };
        Ok((guard, ready_at))
    }

    /// Ollama's default context depends on VRAM, capped by what the model was trained for.
    fn default_context(&self, spec: &ModelSpec) -> u64 {
        let gib = self.vram >> 30;
        let ctx = if gib < 24 {
            4096
        } else if gib < 48 {
            32_768
        } else {
            262_144
        };
        ctx.min(spec.context_length)
    }

    fn release(&self, name: &str, generation: u64, keep_alive: KeepAlive) {
        let now = Instant::now();
        let mut models = self.models.lock();
        let Some(r) = models.resident.get_mut(name) else {
            return;
        };
        if r.generation != generation {
            return;
        }
        r.in_use = r.in_use.saturating_sub(1);
        r.last_used = now;
        if r.in_use == 0 {
            r.expires_at = match keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(now + d),
            };
        }
        models.purge_expired(now);
    }

    /// Unloads one model now (an empty prompt with `keep_alive: 0`); false when not loaded.
    pub fn unload(&self, name: &str) -> bool {
        self.models
            .lock()
            .resident
            .remove(&canonical(name))
            .is_some()
    }

    pub fn unload_all(&self) {
        self.models.lock().resident.clear();
    }

    /// Names of the models loaded now (finished loading, not expired), longest-lived first.
    pub fn resident_models(&self) -> Vec<String> {
        self.ps_entries()
            .into_iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Bytes of VRAM that resident or loading models hold.
    pub fn vram_used(&self) -> u64 {
        let mut models = self.models.lock();
        models.purge_expired(Instant::now());
        models.used()
    }

    /// `/api/ps` items, sorted by remaining lifetime like Ollama.
    pub fn ps_entries(&self) -> Vec<Value> {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let mut models = self.models.lock();
        models.purge_expired(now);
        let mut items: Vec<(Duration, Value)> = models
            .resident
            .values()
            .filter(|r| r.ready_at <= now)
            .map(|r| {
                let remaining = match (r.expires_at, r.keep_alive) {
                    (Some(e), _) => e.saturating_duration_since(now),
                    (None, KeepAlive::For(d)) => d,
                    // Go's time.Now().Add(math.MaxInt64): about 292 years.
                    (None, KeepAlive::Forever) => Duration::from_secs(292 * 365 * 86_400),
                };
                let expires = chrono::Duration::from_std(remaining)
                    .ok()
                    .and_then(|d| wall.checked_add_signed(d))
                    .unwrap_or(wall);
                let value = json!({
                    "name": r.spec.name,
                    "model": r.spec.name,
                    "size": r.spec.size,
                    "digest": r.spec.digest(),
                    "details": r.spec.details(),
                    "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                    "size_vram": r.spec.size,
                    "context_length": r.context_length,
                });
                (remaining, value)
            })
            .collect();
        items.sort_by_key(|item| std::cmp::Reverse(item.0));
        items.into_iter().map(|(_, v)| v).collect()
    }

    // ---- auth and budgets ----

    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty()
    }

    /// True when `key` is one of `--require-key`; constant time per candidate.
    pub fn key_accepted(&self, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.keys
            .iter()
            .any(|k| bool::from(k.as_bytes().ct_eq(key.as_bytes())))
    }

    /// Spends one request of `key`'s budget; false when the window is already full.
    pub fn spend_budget(&self, key: &str) -> bool {
        let knobs = self.knobs();
        let Some(budget) = knobs.key_budget else {
            return true;
        };
        let now = Instant::now();
        let mut windows = self.key_windows.lock();
        let window = windows.entry(key.to_string()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= knobs.budget_window)
        {
            window.pop_front();
        }
        if window.len() as u64 >= budget {
            return false;
        }
        window.push_back(now);
        true
    }

    // ---- counters ----

    /// Remembers the headers of the last request to `path` (values of credentials included:
    /// tests check which credential the gateway forwarded).
    pub fn record_headers(&self, path: &str, headers: &actix_web::http::header::HeaderMap) {
        let map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect();
        let mut last = self.counters.last.lock();
        let entry = last
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        entry["headers"] = serde_json::Value::Object(map);
    }

    /// Remembers the body of the last request to `path`.
    pub fn record_body(&self, path: &str, body: &[u8]) {
        let value = serde_json::from_slice(body)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned().into());
        let mut last = self.counters.last.lock();
        let entry = last
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        entry["body"] = value;
    }

    pub fn count_path(&self, path: &str) {
        *self
            .counters
            .by_path
            .lock()
            .entry(path.to_string())
            .or_default() += 1;
    }

    pub fn count_key(&self, key: &str) {
        *self
            .counters
            .by_key
            .lock()
            .entry(key.to_string())
            .or_default() += 1;
    }

    pub fn count_model(&self, model: &str) {
        *self
            .counters
            .by_model
            .lock()
            .entry(model.to_string())
            .or_default() += 1;
    }

    /// Requests seen on `path` (every method, every outcome).
    pub fn requests(&self, path: &str) -> u64 {
        self.counters.by_path.lock().get(path).copied().unwrap_or(0)
    }

    pub fn requests_by_path(&self) -> BTreeMap<String, u64> {
        self.counters.by_path.lock().clone()
    }

    /// Inference requests that presented `key` and passed auth.
    pub fn requests_for_key(&self, key: &str) -> u64 {
        self.counters.by_key.lock().get(key).copied().unwrap_or(0)
    }

    /// Inference requests for `model` as the client spelled it.
    pub fn requests_for_model(&self, model: &str) -> u64 {
        self.counters
            .by_model
            .lock()
            .get(model)
            .copied()
            .unwrap_or(0)
    }

    /// Generation requests in progress (streaming or not), from acceptance to the last byte.
    pub fn open_streams(&self) -> i64 {
        self.counters.open_streams.load(Ordering::SeqCst)
    }

    /// Generation requests the client abandoned before the sim finished them.
    pub fn cancelled_streams(&self) -> u64 {
        self.counters.cancelled_streams.load(Ordering::SeqCst)
    }

    pub fn completed_streams(&self) -> u64 {
        self.counters.completed_streams.load(Ordering::SeqCst)
    }

    pub fn connection_opened(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Model loads so far (first use, reload after eviction or expiry).
    pub fn loads(&self) -> u64 {
        self.counters.loads.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.counters.evictions.load(Ordering::Relaxed)
    }

    pub fn reset_counters(&self) {
        let c = &self.counters;
        c.by_path.lock().clear();
        c.by_key.lock().clear();
        c.by_model.lock().clear();
        c.cancelled_streams.store(0, Ordering::SeqCst);
        c.completed_streams.store(0, Ordering::SeqCst);
        c.loads.store(0, Ordering::Relaxed);
        c.evictions.store(0, Ordering::Relaxed);
    }

    /// Opens a stream; the guard's drop closes it and counts a cancellation unless
    /// [`StreamGuard::finish`] was called first.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.counters.open_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            state: Arc::clone(self),
            finished: false,
        }
    }

    /// The `/_sim/stats` body.
    pub fn stats(&self) -> Value {
        json!({
            "name": self.name,
            "vram": self.vram,
            "vram_used": self.vram_used(),
            "knobs": self.knobs(),
            "requests_by_path": self.requests_by_path(),
            "requests_by_key": self.counters.by_key.lock().clone(),
            "requests_by_model": self.counters.by_model.lock().clone(),
            "open_streams": self.open_streams(),
            "cancelled_streams": self.cancelled_streams(),
            "completed_streams": self.completed_streams(),
            "loads": self.loads(),
            "connections": self.connections(),
            "evictions": self.evictions(),
            "last_requests": self.counters.last.lock().clone(),
            "resident": self.ps_entries(),
            "models": self.catalogue().iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        })
    }
}

/// Marks a model in use; dropping it starts the model's keep-alive countdown.
#[derive(Debug)]
pub struct ModelUse {
    state: Arc<SimState>,
    name: String,
    generation: u64,
    keep_alive: KeepAlive,
}

impl Drop for ModelUse {
    fn drop(&mut self) {
        self.state
            .release(&self.name, self.generation, self.keep_alive);
    }
}

/// One generation in progress. Lives inside the response body, so a client disconnect
/// (which drops the body) is counted as a cancellation.
#[derive(Debug)]
pub struct StreamGuard {
    state: Arc<SimState>,
    finished: bool,
}

impl StreamGuard {
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.state
                .counters
                .completed_streams
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let c = &self.state.counters;
        c.open_streams.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            c.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::catalogue::default_catalogue;

    fn state(vram_gib: u64) -> Arc<SimState> {
        Arc::new(SimState::new(
            "t".into(),
            vram_gib << 30,
            default_catalogue(),
            Knobs::default(),
            vec![],
        ))
    }

    #[test]
    fn keep_alive_parsing() {
        let p = |v: Value| KeepAlive::parse(Some(&v)).unwrap();
        assert_eq!(
            KeepAlive::parse(None).unwrap(),
            KeepAlive::For(DEFAULT_KEEP_ALIVE)
        );
        assert_eq!(p(json!(10)), KeepAlive::For(Duration::from_secs(10)));
        assert_eq!(p(json!("1h30m")), KeepAlive::For(Duration::from_secs(5400)));
        assert_eq!(p(json!("-1m")), KeepAlive::Forever);
        assert_eq!(p(json!(-1)), KeepAlive::Forever);
        assert_eq!(p(json!("0")), KeepAlive::For(Duration::ZERO));
        assert!(KeepAlive::parse(Some(&json!("-1"))).is_err());
        assert!(KeepAlive::parse(Some(&json!("5x"))).is_err());
    }

    #[test]
    fn lru_eviction_when_vram_overflows() {
        let s = state(12);
        let ka = KeepAlive::For(DEFAULT_KEEP_ALIVE);
        drop(s.acquire("qwen3:8b", ka, None).unwrap());
        drop(s.acquire("llama3.1:8b", ka, None).unwrap());
        assert_eq!(s.resident_models().len(), 2);
        // qwen3 was used first, so it goes when the coder model needs room.
        drop(s.acquire("qwen2.5-coder:7b", ka, None).unwrap());
        let resident = s.resident_models();
        assert!(resident.contains(&"llama3.1:8b".to_string()));
        assert!(resident.contains(&"qwen2.5-coder:7b".to_string()));
        assert!(!resident.contains(&"qwen3:8b".to_string()));
        assert_eq!(s.evictions(), 1);
        assert!(s.vram_used() <= 12 << 30);
    }

    #[test]
    fn keep_alive_zero_unloads_after_use() {
        let s = state(24);
        let (guard, _) = s
            .acquire("qwen3:8b", KeepAlive::For(Duration::ZERO), None)
            .unwrap();
        assert_eq!(s.resident_models(), vec!["qwen3:8b".to_string()]);
        drop(guard);
        assert!(s.resident_models().is_empty());
    }

    #[test]
    fn oversized_model_is_out_of_memory() {
        let s = state(24);
        let err = s
            .acquire("llama3.1:70b", KeepAlive::Forever, None)
            .unwrap_err();
        assert!(matches!(err, LoadError::OutOfMemory { .. }));
        assert_eq!(
            s.acquire("nope", KeepAlive::Forever, None).unwrap_err(),
            LoadError::NotFound
        );
    }

    #[test]
    fn budget_window() {
        let s = state(24);
        s.set_key_budget(Some(2));
        assert!(s.spend_budget("k"));
        assert!(s.spend_budget("k"));
        assert!(!s.spend_budget("k"));
        assert!(s.spend_budget("other"));
    }

    #[test]
    fn control_rejects_typos() {
        let s = state(24);
        s.apply_control(&json!({"hang": true, "limit_mode": "weekly"}))
            .unwrap();
        assert!(s.knobs().hang);
        assert_eq!(s.knobs().limit_mode, LimitMode::Weekly);
        assert!(s.apply_control(&json!({"hnag": true})).is_err());
    }
}
