//! Usage statistics for the admin API, computed the same way on SQLite and Postgres.
//!
//! SQL only filters and sums (`CAST(SUM(..) AS BIGINT)` reads as BIGINT on both); time
//! buckets are laid out in Rust so no date function differs between the databases.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::{Value, json};

use super::logs::floor_minute;
use super::schema::{request_logs, usage_minute};
use super::{DbConnection, StoreError, rfc3339};

/// The windows `/admin/api/stats` accepts, in minutes.
pub fn window_minutes(window: &str) -> Option<i64> {
    match window {
        "60m" | "1h" => Some(60),
        "2h" => Some(120),
        "4h" => Some(240),
        "6h" => Some(360),
        "12h" => Some(720),
        "24h" => Some(1440),
        _ => None,
    }
}

fn sum(col: &str) -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>(&format!("CAST(COALESCE(SUM({col}), 0) AS BIGINT)"))
}

/// Per-minute requests and tokens per model for the last `minutes` minutes (this
/// minute included), zero-filled: `{"window","step_seconds","buckets","models","total"}`.
pub fn window(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    label: &str,
    minutes: i64,
) -> Result<Value, StoreError> {
    let last = floor_minute(now);
    let first = last - TimeDelta::minutes(minutes - 1);
    let rows: Vec<(NaiveDateTime, String, i64, i64)> = usage_minute::table
        .filter(usage_minute::minute.ge(first))
        .group_by((usage_minute::minute, usage_minute::model))
        .select((
            usage_minute::minute,
            usage_minute::model,
            sum("requests"),
            sum("tokens_in + tokens_out"),
        ))
        .load(conn)?;
    let n = usize::try_from(minutes).unwrap_or(0);
    let slot = |t: NaiveDateTime| {
        usize::try_from((t - first).num_minutes())
            .ok()
            .filter(|i| *i < n)
    };
    let mut models: BTreeMap<String, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    let (mut total_tokens, mut total_requests) = (vec![0i64; n], vec![0i64; n]);
    for (minute, model, requests, tokens) in rows {
        let Some(i) = slot(minute) else { continue };
        let m = models
            .entry(model)
            .or_insert_with(|| (vec![0; n], vec![0; n]));
        m.0[i] += tokens;
        m.1[i] += requests;
        total_tokens[i] += tokens;
        total_requests[i] += requests;
    }
    let buckets: Vec<String> = (0..minutes)
        .map(|i| rfc3339(first + TimeDelta::minutes(i)))
        .collect();
    let models: serde_json::Map<String, Value> = models
        .into_iter()
        .map(|(name, (tokens, requests))| (name, json!({"tokens": tokens, "requests": requests})))
        .collect();
    Ok(json!({
        "window": label,
        "step_seconds": 60,
        "buckets": buckets,
        "models": models,
        "total": {"tokens": total_tokens, "requests": total_requests},
    }))
}

type Sums = (String, i64, i64, i64, i64);

fn sums_json(key: &str, rows: Vec<Sums>) -> Value {
    let mut rows = rows;
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Value::Array(
        rows.into_iter()
            .map(|(k, requests, errors, tokens_in, tokens_out)| {
                json!({
                    key: k, "requests": requests, "errors": errors,
                    "tokens_in": tokens_in, "tokens_out": tokens_out,
                })
            })
            .collect(),
    )
}

macro_rules! usage_by {
    ($conn:expr, $since:expr, $col:expr) => {
        usage_minute::table
            .filter(usage_minute::minute.ge($since))
            .group_by($col)
            .select((
                $col,
                sum("requests"),
                sum("errors"),
                sum("tokens_in"),
                sum("tokens_out"),
            ))
            .load::<Sums>($conn)
    };
}

/// The last 24 hours (1440 whole minutes ending with this one): totals, 24 hourly
/// buckets oldest first, and breakdowns by model, user, backend, key and client IP.
pub fn last_24h(conn: &mut DbConnection, now: NaiveDateTime) -> Result<Value, StoreError> {
    let first = floor_minute(now) - TimeDelta::minutes(1439);
    let per_minute: Vec<(NaiveDateTime, i64, i64)> = usage_minute::table
        .filter(usage_minute::minute.ge(first))
        .group_by(usage_minute::minute)
        .select((
            usage_minute::minute,
            sum("requests"),
            sum("tokens_in + tokens_out"),
        ))
        .load(conn)?;
    let mut hourly = vec![(0i64, 0i64); 24];
    for (minute, requests, tokens) in per_minute {
        if let Ok(h) = usize::try_from((minute - first).num_hours()) {
            if let Some(b) = hourly.get_mut(h) {
                b.0 += requests;
                b.1 += tokens;
            }
        }
    }
    let hourly: Vec<Value> = hourly
        .iter()
        .enumerate()
        .map(|(h, (requests, tokens))| {
            let t = first + TimeDelta::hours(i64::try_from(h).unwrap_or(0));
            json!({"t": rfc3339(t), "requests": requests, "tokens": tokens})
        })
        .collect();
    let by_model = usage_by!(conn, first, usage_minute::model)?;
    let by_user = usage_by!(conn, first, usage_minute::user_name)?;
    let by_backend: Vec<Sums> = usage_by!(conn, first, usage_minute::backend)?;
    let by_key: Vec<Sums> = usage_by!(conn, first, usage_minute::key_id)?
        .into_iter()
        .filter(|r| !r.0.is_empty())
        .collect();
    let by_ip: Vec<(Option<String>, i64, i64, i64, i64)> = request_logs::table
        .filter(request_logs::time.ge(first))
        .group_by(request_logs::client_ip)
        .select((
            request_logs::client_ip,
            sql::<BigInt>("CAST(COUNT(*) AS BIGINT)"),
            sum("CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END"),
            sum("CASE WHEN shared THEN 0 ELSE tokens_in END"),
            sum("CASE WHEN shared THEN 0 ELSE tokens_out END"),
        ))
        .load(conn)?;
    let by_ip: Vec<Sums> = by_ip
        .into_iter()
        .map(|(ip, a, b, c, d)| (ip.unwrap_or_default(), a, b, c, d))
        .collect();
    let total = by_model.iter().fold((0, 0, 0, 0), |t, r| {
        (t.0 + r.1, t.1 + r.2, t.2 + r.3, t.3 + r.4)
    });
    Ok(json!({
        "requests": total.0,
        "errors": total.1,
        "tokens_in": total.2,
        "tokens_out": total.3,
        "hourly": hourly,
        "by_model": sums_json("model", by_model),
        "by_user": sums_json("user", by_user),
        "by_backend": sums_json("backend", by_backend),
        "by_key": sums_json("key_id", by_key),
        "by_client_ip": sums_json("client_ip", by_ip),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_the_documented_ones() {
        assert_eq!(window_minutes("60m"), Some(60));
        assert_eq!(window_minutes("24h"), Some(1440));
        assert_eq!(window_minutes("7d"), None);
    }
}

/// Most request rows read for per-model percentiles; the newest are kept.
const MODEL_STATS_ROWS: i64 = 200_000;

/// Per served model and per `auto` category over the last `minutes`: requests, errors,
/// p50/p95 of duration and time to first byte, tokens; shared answers count as requests
/// only. Percentiles come from the newest
/// [`MODEL_STATS_ROWS`] rows of the window (`sampled` says when the window held more).
pub fn models(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    minutes: i64,
) -> Result<Value, StoreError> {
    let since = now - TimeDelta::minutes(minutes);
    type Row = (
        Option<String>,
        Option<String>,
        i32,
        i64,
        Option<i64>,
        i64,
        i64,
        bool,
    );
    let rows: Vec<Row> = request_logs::table
        .filter(request_logs::time.ge(since))
        .order(request_logs::time.desc())
        .limit(MODEL_STATS_ROWS)
        .select((
            request_logs::model_served,
            request_logs::category,
            request_logs::status,
            request_logs::duration_ms,
            request_logs::ttfb_ms,
            request_logs::tokens_in,
            request_logs::tokens_out,
            request_logs::shared,
        ))
        .load(conn)?;
    let sampled = rows.len() as i64 == MODEL_STATS_ROWS;
    let mut by_model: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_category: BTreeMap<String, Acc> = BTreeMap::new();
    for (model, category, status, duration, ttfb, tin, tout, shared) in rows {
        let model = model.unwrap_or_else(|| "-".into());
        for acc in [
            Some(by_model.entry(model).or_default()),
            category.map(|c| by_category.entry(c).or_default()),
        ]
        .into_iter()
        .flatten()
        {
            if shared {
                // Answered from another request's call: says nothing of the model's speed,
                // and its tokens are on that request's row.
                acc.requests += 1;
            } else {
                acc.add(status, duration, ttfb, tin, tout);
            }
        }
    }
    let list = |m: BTreeMap<String, Acc>, key: &str| -> Vec<Value> {
        m.into_iter()
            .map(|(name, mut acc)| {
                let mut v = acc.json();
                v[key] = json!(name);
                v
            })
            .collect()
    };
    Ok(json!({
        "window_minutes": minutes,
        "sampled": sampled,
        "by_model": list(by_model, "model"),
        "by_category": list(by_category, "category"),
    }))
}

/// Running totals and samples for one model or category.
#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    tokens_in: i64,
    tokens_out: i64,
    durations: Vec<i64>,
    ttfbs: Vec<i64>,
}

impl Acc {
    fn add(&mut self, status: i32, duration: i64, ttfb: Option<i64>, tin: i64, tout: i64) {
        self.requests += 1;
        self.errors += u64::from(status >= 400);
        self.tokens_in += tin;
        self.tokens_out += tout;
        self.durations.push(duration);
        self.ttfbs.extend(ttfb);
    }

    fn json(&mut self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "duration_ms": {"p50": percentile(&mut self.durations, 50), "p95": percentile(&mut self.durations, 95)},
            "ttfb_ms": {"p50": percentile(&mut self.ttfbs, 50), "p95": percentile(&mut self.ttfbs, 95)},
        })
    }
}

/// Nearest-rank percentile; `None` without samples.
fn percentile(samples: &mut [i64], p: usize) -> Option<i64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = (p * samples.len()).div_ceil(100).clamp(1, samples.len());
    Some(samples[rank - 1])
}

#[cfg(test)]
mod model_stats_tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 95), Some(95));
        assert_eq!(percentile(&mut [7], 95), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }
}
