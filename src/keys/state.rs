//! One upstream key's state: sliding usage windows, penalties, failures, denials (pure, fake-clock testable).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::KeyPoolConfig;

/// Usage is kept for this many one-minute buckets (2 h).
pub const WINDOW_MINUTES: i64 = 120;
/// How long a key stays denied for a model after a 403 "requires a subscription".
pub const DENIAL_TTL: Duration = Duration::from_secs(6 * 3600);

/// How an upstream answered a request made with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    Ok {
        tokens: u64,
    },
    /// 429; `body` is the upstream's error text (used to tell usage limits from rate limits).
    RateLimited {
        retry_after: Option<Duration>,
        body: String,
    },
    /// 401 (or 403 that is not a per-model subscription denial): the only answer that
    /// counts toward disabling a key. 5xx, 529 and timeouts say nothing about the key and
    /// are the backend's health.
    AuthFailed,
    /// 403 "this model requires a subscription": this key cannot serve `model`.
    ModelDenied {
        model: String,
    },
}

/// The parts of `[[key_pools]]` that drive state transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPolicy {
    pub penalty: Duration,
    pub penalty_max: Duration,
    pub usage_limit_penalty: Duration,
    pub disable_after_failures: u32,
}

impl From<&KeyPoolConfig> for PoolPolicy {
    fn from(c: &KeyPoolConfig) -> Self {
        PoolPolicy {
            penalty: c.penalty,
            penalty_max: c.penalty_max.max(c.penalty),
            usage_limit_penalty: c.usage_limit_penalty,
            disable_after_failures: c.disable_after_failures.max(1),
        }
    }
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy::from(&KeyPoolConfig::default())
    }
}

/// Why a key is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// An operator's choice: never undone automatically.
    Manual,
    /// The upstream refused the key's credentials repeatedly: re-probed and re-enabled
    /// once accepted.
    Failures,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::Manual => "manual",
            DisableReason::Failures => "failures",
        }
    }
}

/// Where a key stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Active,
    Penalized { until: Instant },
    Disabled,
}

impl Availability {
    pub fn label(&self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Penalized { .. } => "penalized",
            Availability::Disabled => "disabled",
        }
    }
}

/// What a transition did, so the pool can publish it to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Penalized { until: Instant, strikes: u32 },
    Disabled(DisableReason),
}

/// Requests and tokens per minute over the last two hours.
#[derive(Debug, Clone, Default)]
pub struct UsageWindow {
    /// Sorted by minute, oldest first; at most `WINDOW_MINUTES` entries.
    buckets: VecDeque<(i64, u64, u64)>,
    requests: u64,
    tokens: u64,
}

impl UsageWindow {
    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Adds to the bucket of `minute` (kept in order even when a remote delta arrives late).
    /// Returns true when a new bucket was created, so the pool can schedule its expiry.
    pub fn add(&mut self, minute: i64, current: i64, requests: u64, tokens: u64) -> bool {
        if minute <= current - WINDOW_MINUTES {
            return false;
        }
        self.requests += requests;
        self.tokens += tokens;
        let pos = self.buckets.iter().rposition(|b| b.0 <= minute);
        match pos {
            Some(p) if self.buckets[p].0 == minute => {
                self.buckets[p].1 += requests;
                self.buckets[p].2 += tokens;
                false
            }
            Some(p) => {
                self.buckets.insert(p + 1, (minute, requests, tokens));
                true
            }
            None => {
                self.buckets.push_front((minute, requests, tokens));
                true
            }
        }
    }

    /// Drops buckets that left the window ending at `current`. Returns true if anything changed.
    pub fn expire(&mut self, current: i64) -> bool {
        let mut changed = false;
        while let Some(&(m, r, t)) = self.buckets.front() {
            if m > current - WINDOW_MINUTES {
                break;
            }
            self.requests -= r;
            self.tokens -= t;
            self.buckets.pop_front();
            changed = true;
        }
        changed
    }
}

/// The live state of one key. Every method takes `now` so tests drive it with a fake clock.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    pub penalty_until: Option<Instant>,
    pub disabled: Option<DisableReason>,
    /// When the key was disabled, for the admin API.
    pub disabled_since: Option<Instant>,
    /// 429s in a row (without a success between); doubles the penalty each time.
    pub consecutive_429: u32,
    /// Refused credentials (401/403) in a row; reaching the pool's limit disables the key.
    pub consecutive_failures: u32,
    pub usage: UsageWindow,
    pub last_used: Option<Instant>,
    /// Models this key may not use, until the instant given.
    pub denied: Vec<(String, Instant)>,
}

impl KeyState {
    pub fn availability(&self, now: Instant) -> Availability {
        if self.disabled.is_some() {
            return Availability::Disabled;
        }
        match self.penalty_until {
            Some(until) if until > now => Availability::Penalized { until },
            _ => Availability::Active,
        }
    }

    pub fn is_denied(&self, model: &str, now: Instant) -> bool {
        !self.denied.is_empty()
            && self
                .denied
                .iter()
                .any(|(m, until)| m == model && *until > now)
    }

    /// Applies an upstream answer; returns what changed for the cluster to hear about.
    pub fn on_outcome(
        &mut self,
        outcome: &KeyOutcome,
        policy: &PoolPolicy,
        now: Instant,
    ) -> Change {
        match outcome {
            KeyOutcome::Ok { .. } => {
                self.consecutive_429 = 0;
                self.consecutive_failures = 0;
                Change::None
            }
            KeyOutcome::RateLimited { retry_after, body } => {
                // A 429 proves the key authenticates and the upstream is alive.
                self.consecutive_failures = 0;
                self.consecutive_429 = self.consecutive_429.saturating_add(1);
                let length = match (retry_after, classify_429(body)) {
                    (Some(after), _) => *after,
                    (None, LimitKind::Usage) => policy.usage_limit_penalty,
                    (None, LimitKind::Rate) => escalated(policy, self.consecutive_429),
                };
                self.penalize(now + length, now)
            }
            KeyOutcome::AuthFailed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= policy.disable_after_failures
                    && self.disabled.is_none()
                {
                    self.disabled = Some(DisableReason::Failures);
                    self.disabled_since = Some(now);
                    return Change::Disabled(DisableReason::Failures);
                }
                Change::None
            }
            KeyOutcome::ModelDenied { model } => {
                self.consecutive_failures = 0;
                self.denied.retain(|(m, until)| m != model && *until > now);
                self.denied.push((model.clone(), now + DENIAL_TTL));
                Change::None
            }
        }
    }

    /// Extends the penalty to `until` (never shortens it).
    fn penalize(&mut self, until: Instant, now: Instant) -> Change {
        let current = self.penalty_until.filter(|u| *u > now);
        let until = current.map_or(until, |c| c.max(until));
        self.penalty_until = Some(until);
        Change::Penalized {
            until,
            strikes: self.consecutive_429,
        }
    }

    /// A penalty decided on another replica.
    pub fn apply_remote_penalty(&mut self, until: Instant, strikes: u32, now: Instant) {
        self.consecutive_429 = self.consecutive_429.max(strikes);
        if until > now {
            self.penalize(until, now);
        }
    }

    /// Manual enable clears penalty and failure counts (the operator vouches for the key);
    /// disable is sticky until enabled again.
    pub fn set_enabled(&mut self, enabled: bool) {
        if enabled {
            self.disabled = None;
            self.disabled_since = None;
            self.penalty_until = None;
            self.consecutive_failures = 0;
            self.consecutive_429 = 0;
        } else {
            self.disabled = Some(DisableReason::Manual);
            self.disabled_since.get_or_insert_with(Instant::now);
        }
    }

    /// Records that the key was handed out at `now`.
    pub fn record_pick(&mut self, minute: i64, now: Instant) -> bool {
        self.last_used = Some(now);
        self.usage.add(minute, minute, 1, 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitKind {
    /// Weekly or session quota exhausted: a long wait.
    Usage,
    /// Short-term (hourly or unspecified) limit: the escalating penalty.
    Rate,
}

fn classify_429(body: &str) -> LimitKind {
    let body = body.to_ascii_lowercase();
    if body.contains("weekly usage limit") || body.contains("session usage limit") {
        LimitKind::Usage
    } else {
        LimitKind::Rate
    }
}

/// `penalty × 2^(strikes-1)`, capped at `penalty_max`.
fn escalated(policy: &PoolPolicy, strikes: u32) -> Duration {
    let factor = 1u32
        .checked_shl(strikes.saturating_sub(1))
        .unwrap_or(u32::MAX);
    policy
        .penalty
        .checked_mul(factor)
        .unwrap_or(policy.penalty_max)
        .min(policy.penalty_max)
}

/// Maps the monotonic clock to wall-clock milliseconds so instants can cross replicas.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_ms: i64,
}

impl Clock {
    pub fn now() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock::at(Instant::now(), unix)
    }

    /// A clock where `base` is `base_unix_ms` (tests).
    pub fn at(base: Instant, base_unix_ms: i64) -> Clock {
        Clock { base, base_unix_ms }
    }

    pub fn unix_ms(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_unix_ms + d.as_millis() as i64,
            None => self.base_unix_ms - self.base.duration_since(t).as_millis() as i64,
        }
    }

    pub fn minute(&self, t: Instant) -> i64 {
        self.unix_ms(t).div_euclid(60_000)
    }

    pub fn instant(&self, unix_ms: i64) -> Instant {
        let delta = Duration::from_millis(unix_ms.abs_diff(self.base_unix_ms));
        if unix_ms >= self.base_unix_ms {
            self.base + delta
        } else {
            self.base.checked_sub(delta).unwrap_or(self.base)
        }
    }

    pub fn rfc3339(&self, t: Instant) -> String {
        chrono::DateTime::from_timestamp_millis(self.unix_ms(t))
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PoolPolicy {
        PoolPolicy {
            penalty: Duration::from_secs(30),
            penalty_max: Duration::from_secs(200),
            usage_limit_penalty: Duration::from_secs(6 * 3600),
            disable_after_failures: 3,
        }
    }

    fn limited(body: &str) -> KeyOutcome {
        KeyOutcome::RateLimited {
            retry_after: None,
            body: body.into(),
        }
    }

    const HOURLY: &str =
        r#"{"error":"you've reached your hourly usage limit, please wait or upgrade to continue"}"#;
    const WEEKLY: &str = r#"{"error":"you (bob) have reached your weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade (ref: x)"}"#;
    const SESSION: &str =
        r#"{"error":"you (bob) have reached your session usage limit, please wait"}"#;

    fn penalty_after(k: &KeyState, now: Instant) -> Duration {
        match k.availability(now) {
            Availability::Penalized { until } => until - now,
            other => panic!("expected a penalty, got {other:?}"),
        }
    }

    #[test]
    fn penalty_doubles_on_repeats_and_caps() {
        let p = policy();
        let mut now = Instant::now();
        let mut k = KeyState::default();
        let mut seen = Vec::new();
        for _ in 0..5 {
            k.on_outcome(&limited(HOURLY), &p, now);
            let d = penalty_after(&k, now);
            seen.push(d.as_secs());
            now += d; // the penalty runs out, the key is tried again and refused again
            assert_eq!(k.availability(now), Availability::Active);
        }
        assert_eq!(seen, [30, 60, 120, 200, 200]);
        k.on_outcome(&KeyOutcome::Ok { tokens: 5 }, &p, now);
        k.on_outcome(&limited(HOURLY), &p, now);
        assert_eq!(
            penalty_after(&k, now).as_secs(),
            30,
            "a success resets the escalation"
        );
    }

    #[test]
    fn weekly_and_session_limits_use_the_usage_penalty() {
        let p = policy();
        let now = Instant::now();
        for body in [WEEKLY, SESSION, &WEEKLY.to_uppercase()] {
            let mut k = KeyState::default();
            k.on_outcome(&limited(body), &p, now);
            assert_eq!(penalty_after(&k, now), p.usage_limit_penalty, "{body}");
        }
        let mut k = KeyState::default();
        k.on_outcome(&limited(HOURLY), &p, now);
        assert_eq!(
            penalty_after(&k, now),
            p.penalty,
            "hourly is the normal penalty"
        );
        let mut k = KeyState::default();
        k.on_outcome(&limited(""), &p, now);
        assert_eq!(penalty_after(&k, now), p.penalty);
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = policy();
        let now = Instant::now();
        let mut k = KeyState::default();
        let out = KeyOutcome::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            body: WEEKLY.into(),
        };
        let change = k.on_outcome(&out, &p, now);
        assert_eq!(penalty_after(&k, now), Duration::from_secs(7));
        assert_eq!(
            change,
            Change::Penalized {
                until: now + Duration::from_secs(7),
                strikes: 1
            }
        );
        // A shorter penalty never shortens a longer one already running.
        k.on_outcome(&limited(WEEKLY), &p, now);
        k.on_outcome(
            &KeyOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
                body: String::new(),
            },
            &p,
            now,
        );
        assert_eq!(penalty_after(&k, now), p.usage_limit_penalty);
    }

    #[test]
    fn disabled_after_n_consecutive_failures() {
        let p = policy();
        let now = Instant::now();
        let mut k = KeyState::default();
        assert_eq!(k.on_outcome(&KeyOutcome::AuthFailed, &p, now), Change::None);
        k.on_outcome(&KeyOutcome::Ok { tokens: 1 }, &p, now);
        assert_eq!(k.consecutive_failures, 0, "a success breaks the run");
        k.on_outcome(&KeyOutcome::AuthFailed, &p, now);
        k.on_outcome(&KeyOutcome::AuthFailed, &p, now);
        assert_eq!(k.availability(now), Availability::Active);
        assert_eq!(
            k.on_outcome(&KeyOutcome::AuthFailed, &p, now),
            Change::Disabled(DisableReason::Failures)
        );
        assert_eq!(
            k.availability(now + Duration::from_secs(1_000_000)),
            Availability::Disabled
        );
        k.set_enabled(true);
        assert_eq!(k.availability(now), Availability::Active);
        assert_eq!(k.consecutive_failures, 0);
    }

    #[test]
    fn manual_disable_wins_over_penalty_and_enable_clears_both() {
        let p = policy();
        let now = Instant::now();
        let mut k = KeyState::default();
        k.on_outcome(&limited(HOURLY), &p, now);
        k.set_enabled(false);
        assert_eq!(k.availability(now), Availability::Disabled);
        assert_eq!(k.disabled, Some(DisableReason::Manual));
        k.set_enabled(true);
        assert_eq!(k.availability(now), Availability::Active);
    }

    #[test]
    fn subscription_denial_is_per_model_only() {
        let p = policy();
        let now = Instant::now();
        let mut k = KeyState::default();
        for _ in 0..10 {
            let out = KeyOutcome::ModelDenied {
                model: "gpt-oss:120b".into(),
            };
            assert_eq!(k.on_outcome(&out, &p, now), Change::None);
        }
        assert_eq!(k.availability(now), Availability::Active, "not a bad key");
        assert!(k.is_denied("gpt-oss:120b", now));
        assert!(!k.is_denied("glm-5.2", now));
        assert_eq!(k.denied.len(), 1, "repeats do not pile up");
        assert!(!k.is_denied("gpt-oss:120b", now + DENIAL_TTL));
    }

    #[test]
    fn remote_penalty_extends_and_syncs_strikes() {
        let p = policy();
        let now = Instant::now();
        let mut k = KeyState::default();
        k.apply_remote_penalty(now + Duration::from_secs(60), 3, now);
        assert_eq!(penalty_after(&k, now).as_secs(), 60);
        k.apply_remote_penalty(now + Duration::from_secs(10), 1, now);
        assert_eq!(penalty_after(&k, now).as_secs(), 60);
        let later = now + Duration::from_secs(61);
        k.on_outcome(&limited(HOURLY), &p, later);
        assert_eq!(
            penalty_after(&k, later).as_secs(),
            200,
            "4th strike: 30·8 capped"
        );
    }

    #[test]
    fn usage_window_slides_by_minute() {
        let mut w = UsageWindow::default();
        assert!(w.add(100, 100, 1, 10));
        assert!(!w.add(100, 100, 1, 5));
        assert!(w.add(98, 100, 1, 1), "a late remote delta keeps order");
        assert!(!w.add(100 - WINDOW_MINUTES, 100, 5, 5), "too old to count");
        assert_eq!((w.requests(), w.tokens()), (3, 16));
        assert!(!w.expire(100 + WINDOW_MINUTES - 3));
        assert!(w.expire(98 + WINDOW_MINUTES));
        assert_eq!((w.requests(), w.tokens()), (2, 15));
        assert!(w.expire(100 + WINDOW_MINUTES));
        assert_eq!((w.requests(), w.tokens()), (0, 0));
    }

    #[test]
    fn clock_round_trips() {
        let base = Instant::now();
        let c = Clock::at(base, 1_700_000_000_000);
        let t = base + Duration::from_millis(1500);
        assert_eq!(c.unix_ms(t), 1_700_000_001_500);
        assert_eq!(c.instant(1_700_000_001_500), t);
        assert_eq!(c.minute(base), 1_700_000_000_000 / 60_000);
        assert_eq!(c.rfc3339(base), "2023-11-14T22:13:20Z");
    }
}
