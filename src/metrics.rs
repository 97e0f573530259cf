//! Prometheus collectors with the names of docs/OPERATIONS.md "Metrics"; one registry per running gateway.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `reason` label of a request sent again because its pooled connection was found
/// closed before the request was written (counted by the client itself).
pub const STALE_CONNECTION: &str = "stale_connection";

/// Every `reason` label of `corral_upstream_resends_total`.
pub const RESEND_REASONS: &[&str] = &[
    "connect",
    STALE_CONNECTION,
    "first_byte_timeout",
    "status_5xx",
    "overloaded",
    "out_of_memory",
    "model_not_found",
];

/// Every collector the gateway exports. Label values are bounded: never user ids,
/// tokens, key ids or unresolved client model strings.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub tokens: IntCounterVec,
    pub inflight: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub backend_memory: IntGaugeVec,
    pub key_state: IntGaugeVec,
    pub upstream_errors: IntCounterVec,
    pub failovers: IntCounterVec,
    pub upstream_resends: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub log_queue_depth: IntGauge,
    pub log_dropped: IntCounter,
    pub redis_up: IntGauge,
    pub dedup_shared: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, &["dialect", "model"]).expect("metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let requests = counter(
            "corral_requests_total",
            "Requests answered, by dialect, resolved model, backend and status.",
            &["dialect", "model", "backend", "status"],
        );
        let request_duration = histogram(
            "corral_request_duration_seconds",
            "Time from request to the last byte of the answer.",
        );
        let ttfb = histogram(
            "corral_time_to_first_byte_seconds",
            "Time from request to the first byte sent to the client.",
        );
        let tokens = counter(
            "corral_tokens_total",
            "Tokens in (prompt) and out (completion).",
            &["direction", "model", "backend"],
        );
        let inflight = gauge(
            "corral_inflight_requests",
            "Requests being served per backend.",
            &["backend"],
        );
        let backend_up = gauge(
            "corral_backend_up",
            "1 when a backend is healthy.",
            &["backend"],
        );
        let backend_memory = gauge(
            "corral_backend_memory_bytes",
            "Model memory used and allowed per backend.",
            &["backend", "kind"],
        );
        let key_state = gauge(
            "corral_key_state",
            "Upstream API keys per pool and state.",
            &["pool", "state"],
        );
        let upstream_errors = counter(
            "corral_upstream_errors_total",
            "Failed upstream attempts by reason.",
            &["backend", "reason"],
        );
        let failovers = counter(
            "corral_failovers_total",
            "Requests moved to another backend or model, by reason.",
            &["reason"],
        );
        let upstream_resends = counter(
            "corral_upstream_resends_total",
            "Requests sent upstream again after a failed attempt, by the backend that failed \
             and why the resend was safe.",
            &["backend", "reason"],
        );
        let rate_limited = counter(
            "corral_rate_limited_total",
            "Requests refused or retried because of a rate limit.",
            &["scope"],
        );
        let dedup_shared = counter(
            "corral_dedup_shared_total",
            "Requests answered with an identical request's answer, by how: `inflight` (waited \
             for it) or `recent` (kept from the last seconds).",
            &["how"],
        );
        let log_queue_depth = IntGauge::new(
            "corral_log_queue_depth",
            "Request-log rows waiting for the database.",
        )
        .expect("metric definition");
        registry
            .register(Box::new(log_queue_depth.clone()))
            .expect("unique metric");
        let log_dropped = IntCounter::new(
            "corral_log_dropped_total",
            "Request-log rows dropped because the queue was full or the database refused them.",
        )
        .expect("metric definition");
        registry
            .register(Box::new(log_dropped.clone()))
            .expect("unique metric");
        let redis_up =
            IntGauge::new("corral_redis_up", "1 when Redis answers.").expect("metric definition");
        registry
            .register(Box::new(redis_up.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            request_duration,
            ttfb,
            tokens,
            inflight,
            backend_up,
            backend_memory,
            key_state,
            upstream_errors,
            failovers,
            upstream_resends,
            rate_limited,
            log_queue_depth,
            log_dropped,
            redis_up,
            dedup_shared,
        }
    }

    /// Creates the error counters at 0, so the first failover or refusal after a start
    /// shows in `rate()` and `increase()` instead of appearing from nowhere.
    pub fn zero_series<'a>(&self, backends: impl Iterator<Item = &'a str>) {
        const REASONS: &[&str] = &[
            "connect",
            "timeout",
            "status_5xx",
            "out_of_memory",
            "model_not_found",
            "overloaded",
            "protocol",
            "client_4xx",
        ];
        for scope in ["user", "key"] {
            self.rate_limited.with_label_values(&[scope]);
        }
        for how in ["inflight", "recent"] {
            self.dedup_shared.with_label_values(&[how]);
        }
        for reason in REASONS.iter().chain(&["fallback"]) {
            self.failovers.with_label_values(&[reason]);
        }
        for backend in backends {
            for reason in REASONS {
                self.upstream_errors.with_label_values(&[backend, reason]);
            }
            for reason in RESEND_REASONS {
                self.upstream_resends.with_label_values(&[backend, reason]);
            }
        }
        self.log_dropped.inc_by(0);
    }

    /// The Prometheus text exposition of every collector.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_design_names() {
        let m = Metrics::new();
        m.requests
            .with_label_values(&["ollama", "qwen3:8b", "gpu", "200"])
            .inc();
        m.redis_up.set(1);
        let text = m.render();
        assert!(text.contains("corral_requests_total{backend=\"gpu\""));
        assert!(text.contains("corral_redis_up 1"));
    }
}
