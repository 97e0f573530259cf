//! Per-user request and token limits: one Lua script in Redis shared by every replica, or a
//! local window holding this replica's share of each limit while Redis is away.
//!
//! Requests use a sliding log (at most `rpm` in any window, exactly, with no double burst at
//! a window edge); tokens use a sliding window of sub-buckets. Tokens are reserved with the
//! request's estimate and corrected by `reconcile` once the real count is known.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actors::cluster_sync::ClusterSync;
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Metrics;

/// Token sub-buckets per window.
const BUCKETS: u32 = 12;
/// How long Redis is skipped after it failed to answer one check.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// Local windows are pruned of idle users past this many entries.
const LOCAL_PRUNE_AT: usize = 10_000;

const CHECK_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local est = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local bms = tonumber(ARGV[5])
local nb = math.floor(window / bms)
local bucket = math.floor(now / bms)
local wait = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    wait = math.max(wait, tonumber(e[2]) + window - now)
  end
end
if tpm > 0 then
  local all = redis.call('HGETALL', KEYS[2])
  local used = 0
  local live = {}
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    local v = tonumber(all[i + 1])
    if b <= bucket - nb then
      redis.call('HDEL', KEYS[2], all[i])
    else
      used = used + v
      live[#live + 1] = {b, v}
    end
  end
  if #live == 0 and est > tpm then
    wait = math.max(wait, window)
  elseif used + est > tpm then
    table.sort(live, function(x, y) return x[1] < y[1] end)
    local need = used + est - tpm
    local at = live[#live][1]
    local freed = 0
    for _, e in ipairs(live) do
      freed = freed + e[2]
      if freed >= need then
        at = e[1]
        break
      end
    end
    wait = math.max(wait, (at + nb) * bms - now)
  end
end
if wait > 0 then
  return {0, math.ceil(wait), 0}
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if tpm > 0 and est > 0 then
  redis.call('HINCRBY', KEYS[2], bucket, est)
  redis.call('PEXPIRE', KEYS[2], window + bms + 1000)
end
return {1, 0, bucket}
"#;

const RECONCILE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"#;

/// Where a granted request's tokens were reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// No limit applied.
    Nothing,
    Redis {
        bucket: i64,
    },
    Local {
        bucket: i64,
    },
}

/// A granted request. Hand it back to [`RateLimiter::reconcile`] with the real token count.
#[derive(Debug)]
#[must_use = "pass the reservation to RateLimiter::reconcile once the token count is known"]
pub struct Reservation {
    user: String,
    estimated: u64,
    made: Instant,
    slot: Slot,
    /// A token limit applied, so the reservation may need correcting.
    tokens_reserved: bool,
}

impl Reservation {
    /// The tokens reserved when the request was admitted.
    pub fn estimated(&self) -> u64 {
        self.estimated
    }

    /// True when the decision came from Redis (shared by all replicas).
    pub fn is_shared(&self) -> bool {
        matches!(self.slot, Slot::Redis { .. })
    }

    /// True when the decision came from this replica's share of the limit.
    pub fn is_local(&self) -> bool {
        matches!(self.slot, Slot::Local { .. })
    }
}

/// A token correction for a reservation made in Redis.
#[derive(Debug)]
pub struct SharedCorrection {
    user: String,
    bucket: i64,
    delta: i64,
}

pub struct RateLimiter {
    cluster: Option<ClusterSync>,
    metrics: Arc<Metrics>,
    window: Duration,
    redis_timeout: Duration,
    check_script: redis::Script,
    reconcile_script: redis::Script,
    local: Mutex<LocalLimiter>,
    skip_redis_until: Mutex<Option<Instant>>,
    seq: AtomicU64,
}

impl RateLimiter {
    /// `redis`: the cluster handle (its connection and live replica count); None = one replica.
    pub fn new(redis: Option<ClusterSync>, metrics: Arc<Metrics>) -> RateLimiter {
        let window = Duration::from_secs(60);
        RateLimiter {
            cluster: redis.filter(ClusterSync::is_clustered),
            metrics,
            window,
            redis_timeout: Duration::from_millis(50),
            check_script: redis::Script::new(CHECK_LUA),
            reconcile_script: redis::Script::new(RECONCILE_LUA),
            local: Mutex::new(LocalLimiter::new(window, Instant::now())),
            skip_redis_until: Mutex::new(None),
            seq: AtomicU64::new(0),
        }
    }

    /// The span `rpm` and `tpm` apply to (one minute; tests compress it).
    pub fn with_window(mut self, window: Duration) -> RateLimiter {
        let window = window.max(Duration::from_millis(BUCKETS as u64));
        self.window = window;
        self.local = Mutex::new(LocalLimiter::new(window, Instant::now()));
        self
    }

    /// Bound on one Redis check before falling back to the local share.
    pub fn with_redis_timeout(mut self, limit: Duration) -> RateLimiter {
        self.redis_timeout = limit;
        self
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Admits one request of `user` or answers 429 with `retry_after`. Never waits on Redis
    /// longer than the configured bound; without Redis each replica enforces
    /// `limit / live replicas`.
    pub async fn check(
        &self,
        user: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        estimated_tokens: u64,
    ) -> Result<Reservation, GatewayError> {
        let rpm = rpm.filter(|n| *n > 0);
        let tpm = tpm.filter(|n| *n > 0);
        let now = Instant::now();
        let mut grant = Reservation {
            user: user.to_string(),
            estimated: estimated_tokens,
            made: now,
            slot: Slot::Nothing,
            tokens_reserved: tpm.is_some(),
        };
        if rpm.is_none() && tpm.is_none() {
            return Ok(grant);
        }
        if let Some(limit) = tpm.filter(|&n| estimated_tokens > u64::from(n)) {
            self.metrics.rate_limited.with_label_values(&["user"]).inc();
            return Err(GatewayError::new(
                ErrorKind::RateLimited,
                format!(
                    "this request reserves {estimated_tokens} tokens (its input estimate plus \
                     its output allowance), more than the limit of {limit} tokens per {}: it \
                     can never be admitted; ask for fewer output tokens (max_tokens)",
                    humantime::format_duration(self.window)
                ),
            ));
        }
        if let Some(answer) = self
            .check_redis(user, rpm, tpm, estimated_tokens, now)
            .await
        {
            return match answer {
                Ok(bucket) => {
                    grant.slot = Slot::Redis { bucket };
                    Ok(grant)
                }
                Err(wait) => Err(self.refuse(rpm, tpm, wait)),
            };
        }
        let share = self.cluster.as_ref().map_or(1, ClusterSync::live_replicas);
        let (rpm_l, tpm_l) = (rpm.map(|n| split(n, share)), tpm.map(|n| split(n, share)));
        let answer = self
            .local
            .lock()
            .check(user, rpm_l, tpm_l, estimated_tokens, now);
        match answer {
            Ok(bucket) => {
                grant.slot = Slot::Local { bucket };
                Ok(grant)
            }
            Err(wait) => Err(self.refuse(rpm_l, tpm_l, wait)),
        }
    }

    /// Corrects the token reservation with the real count (a no-op without a token limit).
    pub async fn reconcile(&self, r: Reservation, actual_tokens: u64) {
        if let Some(correction) = self.reconcile_local(&r, actual_tokens) {
            self.reconcile_shared(correction).await;
        }
    }

    /// Sends a correction [`reconcile_local`](Self::reconcile_local) left for Redis.
    pub async fn reconcile_shared(&self, c: SharedCorrection) {
        let Some(mut conn) = self.cluster.as_ref().and_then(ClusterSync::connection) else {
            return;
        };
        let mut call = self.reconcile_script.key(tokens_key(&c.user));
        call.arg(c.bucket).arg(c.delta);
        let done =
            tokio::time::timeout(self.redis_timeout, call.invoke_async::<i64>(&mut conn)).await;
        if !matches!(done, Ok(Ok(_))) {
            tracing::debug!("token reconciliation skipped: redis did not answer");
        }
    }

    /// Settles a reservation held in this replica at once. Returns the correction still to
    /// send to Redis, for a reservation made there; only that needs `reconcile_shared`.
    pub fn reconcile_local(&self, r: &Reservation, actual_tokens: u64) -> Option<SharedCorrection> {
        let delta = actual_tokens as i64 - r.estimated as i64;
        if !r.tokens_reserved || delta == 0 || r.made.elapsed() >= self.window {
            return None;
        }
        match r.slot {
            Slot::Nothing => None,
            Slot::Local { bucket } => {
                self.local.lock().reconcile(&r.user, bucket, delta);
                None
            }
            Slot::Redis { bucket } => Some(SharedCorrection {
                user: r.user.clone(),
                bucket,
                delta,
            }),
        }
    }

    /// `Some(Ok(bucket))` granted, `Some(Err(wait))` refused, `None` Redis not usable now.
    async fn check_redis(
        &self,
        user: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        estimated: u64,
        now: Instant,
    ) -> Option<Result<i64, Duration>> {
        let cluster = self.cluster.as_ref()?;
        if cluster.is_down() || self.skip_redis_until.lock().is_some_and(|t| now < t) {
            return None;
        }
        let mut conn = cluster.connection()?;
        let window_ms = self.window.as_millis() as u64;
        let bucket_ms = (window_ms / BUCKETS as u64).max(1);
        let member = format!(
            "{}:{}",
            cluster.replica_id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut call = self.check_script.key(requests_key(user));
        call.key(tokens_key(user))
            .arg(rpm.unwrap_or(0))
            .arg(tpm.unwrap_or(0))
            .arg(estimated)
            .arg(window_ms)
            .arg(bucket_ms)
            .arg(member);
        let answer =
            tokio::time::timeout(self.redis_timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                .await;
        match answer {
            Ok(Ok(v)) if v.len() == 3 => {
                if v[0] == 1 {
                    Some(Ok(v[2]))
                } else {
                    Some(Err(Duration::from_millis(v[1].max(1) as u64)))
                }
            }
            other => {
                let why = match other {
                    Ok(Ok(_)) => "unexpected script answer".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {:?}", self.redis_timeout),
                };
                tracing::debug!(error = %why, "rate limit check falls back to the local share");
                *self.skip_redis_until.lock() = Some(now + REDIS_BACKOFF);
                None
            }
        }
    }

    fn refuse(&self, rpm: Option<u32>, tpm: Option<u32>, wait: Duration) -> GatewayError {
        self.metrics.rate_limited.with_label_values(&["user"]).inc();
        let per = humantime::format_duration(self.window);
        let limits: Vec<String> = rpm
            .map(|n| format!("{n} requests"))
            .into_iter()
            .chain(tpm.map(|n| format!("{n} tokens")))
            .collect();
        GatewayError::new(
            ErrorKind::RateLimited,
            format!(
                "rate limit reached ({} per {per}); retry later",
                limits.join(", ")
            ),
        )
        .with_retry_after(wait)
    }
}

/// This replica's part of a cluster-wide limit (rounded up: failing open, but only a little).
fn split(limit: u32, replicas: u32) -> u32 {
    limit.div_ceil(replicas.max(1)).max(1)
}

fn requests_key(user: &str) -> String {
    format!("corral:rl:{{{user}}}:r")
}

fn tokens_key(user: &str) -> String {
    format!("corral:rl:{{{user}}}:t")
}

/// The same limits as the script, in process, with an injectable clock.
pub struct LocalLimiter {
    window: Duration,
    bucket: Duration,
    base: Instant,
    users: HashMap<String, LocalUser>,
}

#[derive(Default)]
struct LocalUser {
    requests: VecDeque<Instant>,
    /// (bucket index, tokens), oldest first.
    tokens: VecDeque<(i64, i64)>,
}

impl LocalUser {
    fn expire(&mut self, now: Instant, window: Duration, bucket: i64, buckets: i64) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|b| b.0 <= bucket - buckets) {
            self.tokens.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.requests.is_empty() && self.tokens.is_empty()
    }
}

impl LocalLimiter {
    pub fn new(window: Duration, base: Instant) -> LocalLimiter {
        LocalLimiter {
            window,
            bucket: (window / BUCKETS).max(Duration::from_millis(1)),
            base,
            users: HashMap::new(),
        }
    }

    fn bucket_of(&self, now: Instant) -> i64 {
        (now.saturating_duration_since(self.base).as_millis() / self.bucket.as_millis()) as i64
    }

    /// `Ok(bucket)` admitted (and recorded) or `Err(wait)`.
    pub fn check(
        &mut self,
        user: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        estimated: u64,
        now: Instant,
    ) -> Result<i64, Duration> {
        if self.users.len() > LOCAL_PRUNE_AT {
            self.prune(now);
        }
        let bucket = self.bucket_of(now);
        let buckets = BUCKETS as i64;
        let (window, bucket_len) = (self.window, self.bucket);
        let u = self.users.entry(user.to_string()).or_default();
        u.expire(now, window, bucket, buckets);
        let mut wait = Duration::ZERO;
        if let Some(rpm) = rpm {
            let n = u.requests.len();
            if n >= rpm as usize {
                let oldest = u.requests[n - rpm as usize];
                wait = wait.max((oldest + window).saturating_duration_since(now));
            }
        }
        if let Some(tpm) = tpm {
            let used: i64 = u.tokens.iter().map(|b| b.1).sum();
            if used + estimated as i64 > tpm as i64 {
                let need = used + estimated as i64 - tpm as i64;
                let mut freed = 0;
                let mut at = u.tokens.back().map_or(bucket, |b| b.0);
                for b in &u.tokens {
                    freed += b.1;
                    if freed >= need {
                        at = b.0;
                        break;
                    }
                }
                let free_at = self.base + bucket_len * (at + buckets) as u32;
                wait = wait.max(free_at.saturating_duration_since(now));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if rpm.is_some() {
            u.requests.push_back(now);
        }
        if tpm.is_some() && estimated > 0 {
            match u.tokens.back_mut() {
                Some(b) if b.0 == bucket => b.1 += estimated as i64,
                _ => u.tokens.push_back((bucket, estimated as i64)),
            }
        }
        Ok(bucket)
    }

    pub fn reconcile(&mut self, user: &str, bucket: i64, delta: i64) {
        if let Some(b) = self
            .users
            .get_mut(user)
            .and_then(|u| u.tokens.iter_mut().find(|b| b.0 == bucket))
        {
            b.1 += delta;
        }
    }

    fn prune(&mut self, now: Instant) {
        let bucket = self.bucket_of(now);
        let window = self.window;
        self.users.retain(|_, u| {
            u.expire(now, window, bucket, BUCKETS as i64);
            !u.is_idle()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn requests_are_a_sliding_log() {
        let t0 = Instant::now();
        let mut l = LocalLimiter::new(W, t0);
        for i in 0..3 {
            assert!(
                l.check("u", Some(3), None, 0, t0 + Duration::from_secs(i * 10))
                    .is_ok()
            );
        }
        let t = t0 + Duration::from_secs(30);
        assert_eq!(
            l.check("u", Some(3), None, 0, t),
            Err(Duration::from_secs(30))
        );
        assert!(l.check("other", Some(3), None, 0, t).is_ok(), "per user");
        assert!(
            l.check("u", Some(3), None, 0, t0 + W).is_ok(),
            "the oldest left"
        );
        assert!(l.check("u", Some(3), None, 0, t0 + W).is_err());
    }

    #[test]
    fn tokens_reserve_and_reconcile() {
        let t0 = Instant::now();
        let mut l = LocalLimiter::new(W, t0);
        let b = l.check("u", None, Some(1000), 800, t0).unwrap();
        let wait = l.check("u", None, Some(1000), 300, t0).unwrap_err();
        assert!(wait <= W && wait > W - Duration::from_secs(5), "{wait:?}");
        l.reconcile("u", b, -600); // the answer used 200, not 800
        assert!(l.check("u", None, Some(1000), 300, t0).is_ok());
    }

    #[test]
    fn no_request_is_exempt_not_even_the_first() {
        let t0 = Instant::now();
        let mut l = LocalLimiter::new(W, t0);
        assert!(l.check("u", None, Some(100), 5000, t0).is_err());
        let admitted = (0..10)
            .filter(|_| l.check("u", None, Some(1000), 200, t0).is_ok())
            .count();
        assert_eq!(admitted, 5, "a parallel burst holds to the limit");
    }

    #[tokio::test]
    async fn a_request_that_can_never_fit_is_told_so() {
        let rl = RateLimiter::new(None, Arc::new(Metrics::new()));
        let err = rl.check("u", None, Some(1000), 2001).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.retry_after.is_none(), "waiting would not help");
        assert!(err.message.contains("never"), "{}", err.message);
        assert!(rl.check("u", None, Some(1000), 1000).await.is_ok());
    }

    #[test]
    fn shares_round_up() {
        assert_eq!(split(60, 3), 20);
        assert_eq!(split(10, 3), 4);
        assert_eq!(split(1, 5), 1);
        assert_eq!(split(60, 0), 60);
    }

    #[test]
    fn idle_users_are_pruned() {
        let t0 = Instant::now();
        let mut l = LocalLimiter::new(W, t0);
        for i in 0..=LOCAL_PRUNE_AT {
            l.check(&format!("u{i}"), Some(5), None, 0, t0).unwrap();
        }
        l.check("late", Some(5), None, 0, t0 + W * 2).unwrap();
        assert_eq!(l.users.len(), 1);
    }

    #[tokio::test]
    async fn without_redis_limits_are_local_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let rl = RateLimiter::new(None, metrics.clone());
        let r = rl.check("u", Some(2), None, 0).await.unwrap();
        assert!(r.is_local());
        rl.reconcile(r, 10).await;
        let _second = rl.check("u", Some(2), None, 0).await.unwrap();
        let err = rl.check("u", Some(2), None, 0).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.retry_after.is_some());
        assert!(
            metrics
                .render()
                .contains(r#"corral_rate_limited_total{scope="user"} 1"#)
        );
        let free = rl.check("u", None, None, 10).await.unwrap();
        assert!(!free.is_local() && !free.is_shared());
    }
}
