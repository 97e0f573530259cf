//! Request log rows and per-minute usage aggregates: batched idempotent inserts, queries, pruning.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Datelike, DurationRound, NaiveDateTime, SubsecRound, Timelike, Utc};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Timestamp;
use diesel::sqlite::Sqlite;
use diesel::upsert::excluded;
use serde_json::{Value, json};

use super::schema::{request_logs, usage_minute};
use super::{DbConnection, StoreError, rfc3339};

/// What the gateway records about one request. Built by the request path and handed to
/// `LogSink::submit`; `body` is the raw request body (the writer compresses it).
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub request_id: String,
    pub time: DateTime<Utc>,
    pub user: String,
    /// An address and a label rather than strings: the writer thread formats them, off
    /// the request path.
    pub client_ip: Option<IpAddr>,
    pub dialect: &'static str,
    pub model_requested: String,
    pub model_served: Option<String>,
    pub backend: Option<String>,
    pub key_id: Option<String>,
    pub status: u16,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// True when token counts were estimated rather than reported by the upstream.
    pub tokens_estimated: bool,
    pub ttfb_ms: Option<u64>,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub category: Option<String>,
    pub body: Option<Bytes>,
    /// Answered from another request's upstream call (duplicate suppression).
    pub shared: bool,
    /// The client's own `x-request-id` (printable ASCII, capped); never the key.
    pub client_request_id: Option<String>,
}

impl RequestRecord {
    /// Counted as an error in the aggregates.
    pub fn is_error(&self) -> bool {
        self.status >= 400 || self.error.is_some()
    }

    /// The model aggregates are kept under: what served it, else what was asked for.
    /// Requests no backend served are kept under `-`: a client's unknown model name must
    /// not become a series of its own in the graphs.
    pub fn model(&self) -> &str {
        self.model_served.as_deref().unwrap_or("-")
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A request's time, stored as each database stores a `Timestamp`. SQLite keeps it as
/// text, which diesel writes through chrono's strftime parser: a tenth of the writer's
/// time under load. This writes the same text (`%F %T%.f`) directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression)]
#[diesel(sql_type = Timestamp)]
pub struct LogTime(pub NaiveDateTime);

impl ToSql<Timestamp, Sqlite> for LogTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_timestamp(self.0));
        Ok(IsNull::No)
    }
}

impl ToSql<Timestamp, Pg> for LogTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        ToSql::<Timestamp, Pg>::to_sql(&self.0, &mut out.reborrow())
    }
}

/// `t` as chrono's `%F %T%.f` writes it: the fraction has 0, 3, 6 or 9 digits, the fewest
/// that hold it exactly. Years outside 0..=9999 (never a request's) go through chrono.
fn sqlite_timestamp(t: NaiveDateTime) -> String {
    if !(0..=9999).contains(&t.year()) {
        return t.format("%F %T%.f").to_string();
    }
    let nanos = t.nanosecond() % 1_000_000_000;
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut s = String::with_capacity(30);
    let num = |s: &mut String, sep: Option<char>, v: u32, width: u32| {
        s.extend(sep);
        for p in (0..width).rev() {
            s.push(char::from(b'0' + (v / 10u32.pow(p) % 10) as u8));
        }
    };
    num(&mut s, None, t.year() as u32, 4);
    num(&mut s, Some('-'), t.month(), 2);
    num(&mut s, Some('-'), t.day(), 2);
    num(&mut s, Some(' '), t.hour(), 2);
    num(&mut s, Some(':'), t.minute(), 2);
    num(&mut s, Some(':'), t.second(), 2);
    if digits > 0 {
        num(&mut s, Some('.'), fraction, digits);
    }
    s
}

/// A record ready for the database: body compressed, times truncated to what both
/// databases keep.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = request_logs, treat_none_as_default_value = false)]
pub struct LogRow {
    pub request_id: String,
    pub time: LogTime,
    pub user_name: String,
    pub client_ip: Option<String>,
    pub dialect: String,
    pub model_requested: String,
    pub model_served: Option<String>,
    pub backend: Option<String>,
    pub key_id: Option<String>,
    pub status: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_estimated: bool,
    pub ttfb_ms: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub category: Option<String>,
    pub body: Option<Vec<u8>>,
    pub shared: bool,
    pub client_request_id: Option<String>,
}

impl LogRow {
    /// Compresses the body (when kept) with gzip; `store_body` is decided by the caller.
    pub fn from_record(r: RequestRecord, store_body: bool) -> LogRow {
        let body = if store_body {
            r.body.as_deref().and_then(gzip)
        } else {
            None
        };
        LogRow {
            time: LogTime(r.time.naive_utc().trunc_subsecs(6)),
            request_id: r.request_id,
            user_name: r.user,
            client_ip: r.client_ip.map(|ip| ip.to_string()),
            dialect: r.dialect.to_string(),
            model_requested: r.model_requested,
            model_served: r.model_served,
            backend: r.backend,
            key_id: r.key_id,
            status: i32::from(r.status),
            tokens_in: clamp(r.tokens_in),
            tokens_out: clamp(r.tokens_out),
            tokens_estimated: r.tokens_estimated,
            ttfb_ms: r.ttfb_ms.map(clamp),
            duration_ms: clamp(r.duration_ms),
            error: r.error,
            category: r.category,
            body,
            shared: r.shared,
            client_request_id: r.client_request_id,
        }
    }

    fn is_error(&self) -> bool {
        self.status >= 400 || self.error.is_some()
    }
}

pub fn gzip(raw: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(raw).ok()?;
    enc.finish().ok()
}

pub fn gunzip(packed: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(packed)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// One aggregate row; several batches add into the same key.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = usage_minute, treat_none_as_default_value = false)]
pub struct UsageRow {
    pub minute: NaiveDateTime,
    pub model: String,
    pub user_name: String,
    pub backend: String,
    pub key_id: String,
    pub requests: i64,
    pub errors: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
}

pub fn floor_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap_or(t)
}

/// Sums rows into per-minute aggregates keyed like `usage_minute`'s primary key. A shared
/// row counts as a request but not its tokens: they were spent once, by the row of the
/// request that made the upstream call (as in `corral_tokens_total`).
pub fn aggregate<'a>(rows: impl IntoIterator<Item = &'a LogRow>) -> Vec<UsageRow> {
    // Hashed once per row: foldhash rather than the default SipHash, which was most of
    // the cost of aggregating.
    let mut acc: hashbrown::HashMap<(NaiveDateTime, &str, &str, &str, &str), UsageRow> =
        hashbrown::HashMap::new();
    for r in rows {
        // Unrouted requests are kept under `-`: unknown client model names make no series.
        let model = r.model_served.as_deref().unwrap_or("-");
        let backend = r.backend.as_deref().unwrap_or("");
        let key_id = r.key_id.as_deref().unwrap_or("");
        let minute = floor_minute(r.time.0);
        let u = acc
            .entry((minute, model, &r.user_name, backend, key_id))
            .or_insert_with(|| UsageRow {
                minute,
                model: model.to_string(),
                user_name: r.user_name.clone(),
                backend: backend.to_string(),
                key_id: key_id.to_string(),
                requests: 0,
                errors: 0,
                tokens_in: 0,
                tokens_out: 0,
            });
        u.requests += 1;
        u.errors += i64::from(r.is_error());
        if !r.shared {
            u.tokens_in = u.tokens_in.saturating_add(r.tokens_in);
            u.tokens_out = u.tokens_out.saturating_add(r.tokens_out);
        }
    }
    acc.into_values().collect()
}

/// Rows per INSERT statement: 500 rows of 19 binds stay below both databases' limits
/// (Postgres 65535, SQLite 32766).
const ROWS_PER_STATEMENT: usize = 500;
/// Inserts the whole `$n`-row chunks of `$rest` with one fixed-size multi-row `INSERT`
/// each and leaves the remainder in `$rest`. A fixed size gives a statement diesel caches
/// by type: it is neither rebuilt as SQL text nor parsed again per batch (a statement of
/// any other length is both, and that was half the writer's time). `INSERT OR IGNORE`
/// rather than `ON CONFLICT DO NOTHING`: diesel gives the latter no static query id, so it
/// would rebuild the text every time. A ladder of sizes (32, 8, 1)
/// keeps the remainder short.
///
/// The writer yields the CPU after each statement. A request worker woken on the core the
/// writer holds otherwise waits for the writer's time slice to end: at c=1 that made the
/// gateway's p99 1.8-2.0 ms (0.45 ms with the writer out of the way). Short statements
/// keep each stretch short (p99 0.8-1.2 ms; the commit and WAL checkpoint remain one
/// stretch); they and the yields cost about 10 % of the writer's top rate (log_writer
/// bench: 121-127k -> 109k rows/s).
macro_rules! sqlite_chunks {
    ($c:expr, $rest:ident, $n:literal) => {{
        let mut inserted = 0;
        let mut chunks = $rest.chunks_exact($n);
        for chunk in &mut chunks {
            if let Ok(chunk) = <&[LogRow; $n]>::try_from(chunk) {
                inserted += diesel::insert_or_ignore_into(request_logs::table)
                    .values(chunk)
                    .execute($c)?;
                std::thread::yield_now();
            }
        }
        $rest = chunks.remainder();
        inserted
    }};
}

/// The rows of `rows` not yet stored and not repeated earlier in the batch.
macro_rules! fresh_rows {
    ($c:expr, $rows:expr) => {{
        let rows: &[LogRow] = $rows;
        let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        request_logs::table
            .select(request_logs::request_id)
            .filter(request_logs::request_id.eq_any(&ids))
            .load::<String>($c)
            .map(|stored| {
                let stored: hashbrown::HashSet<String> = stored.into_iter().collect();
                let mut seen = hashbrown::HashSet::new();
                let keep: Vec<bool> = rows
                    .iter()
                    .map(|r| !stored.contains(&r.request_id) && seen.insert(r.request_id.as_str()))
                    .collect();
                if keep.iter().all(|k| *k) {
                    Cow::Borrowed(rows)
                } else {
                    Cow::Owned(
                        rows.iter()
                            .zip(keep)
                            .filter(|(_, k)| *k)
                            .map(|(r, _)| r.clone())
                            .collect::<Vec<_>>(),
                    )
                }
            })
    }};
}

/// Multi-row `INSERT … ON CONFLICT (request_id) DO NOTHING`; returns rows inserted.
macro_rules! insert_values {
    ($c:expr, $rows:expr) => {{
        let mut inserted = 0;
        for chunk in $rows.chunks(ROWS_PER_STATEMENT) {
            inserted += diesel::insert_into(request_logs::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute($c)?;
        }
        Ok::<usize, DieselError>(inserted)
    }};
}

/// Adds the rows' aggregates into `usage_minute`, one statement, keys in a fixed order
/// so concurrent replicas lock the same rows in the same order (no deadlocks).
macro_rules! upsert_usage {
    ($c:expr, $rows:expr) => {{
        let mut agg = aggregate($rows);
        agg.sort_by(|a, b| {
            (a.minute, &a.model, &a.user_name, &a.backend, &a.key_id).cmp(&(
                b.minute,
                &b.model,
                &b.user_name,
                &b.backend,
                &b.key_id,
            ))
        });
        for chunk in agg.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(usage_minute::table)
                .values(chunk)
                .on_conflict((
                    usage_minute::minute,
                    usage_minute::model,
                    usage_minute::user_name,
                    usage_minute::backend,
                    usage_minute::key_id,
                ))
                .do_update()
                .set((
                    usage_minute::requests
                        .eq(usage_minute::requests + excluded(usage_minute::requests)),
                    usage_minute::errors.eq(usage_minute::errors + excluded(usage_minute::errors)),
                    usage_minute::tokens_in
                        .eq(usage_minute::tokens_in + excluded(usage_minute::tokens_in)),
                    usage_minute::tokens_out
                        .eq(usage_minute::tokens_out + excluded(usage_minute::tokens_out)),
                ))
                .execute($c)?;
        }
        Ok::<(), DieselError>(())
    }};
}

/// Inserts `rows` on SQLite with cached fixed-size statements, ignoring ids already
/// stored; returns the rows inserted.
fn sqlite_insert_all(c: &mut SqliteConnection, rows: &[LogRow]) -> Result<usize, DieselError> {
    let mut rest = rows;
    let mut n = sqlite_chunks!(c, rest, 32);
    n += sqlite_chunks!(c, rest, 8);
    for row in rest {
        n += diesel::insert_or_ignore_into(request_logs::table)
            .values(row)
            .execute(c)?;
    }
    Ok(n)
}

/// Writes a batch in one transaction: rows whose `request_id` is already stored (or
/// repeated within the batch) are skipped, and only new rows are added to
/// `usage_minute`, so a retried batch never counts twice. Postgres takes the rows with
/// binary `COPY` (several times faster than `INSERT`), falling back to
/// `INSERT … ON CONFLICT DO NOTHING` if another writer stored one of them meanwhile.
/// Returns the rows inserted.
pub fn insert_batch(conn: &mut DbConnection, rows: &[LogRow]) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let n = match conn {
        // Write-locked from the start, so no other connection can store one of the rows
        // between the inserts and the check that they were all new.
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| {
            // Nearly always every row is new: insert them all in a savepoint, ignoring ids
            // already stored. Only if one was ignored, undo that and take the exact path
            // (look the ids up, insert and count only the new rows), so a repeated id is
            // never counted twice. Looking the ids up first for every batch (an `IN` list of
            // thousands, parsed and prepared anew each time) was about a fifth of the
            // writer's instructions (callgrind, 1500 requests).
            let all_new = c.transaction(|c| {
                let n = sqlite_insert_all(c, rows)?;
                if n == rows.len() {
                    Ok(n)
                } else {
                    Err(DieselError::RollbackTransaction)
                }
            });
            let (n, fresh) = match all_new {
                Ok(n) => (n, Cow::Borrowed(rows)),
                Err(DieselError::RollbackTransaction) => {
                    let fresh = fresh_rows!(c, rows)?;
                    (sqlite_insert_all(c, &fresh)?, fresh)
                }
                Err(e) => return Err(e),
            };
            upsert_usage!(c, fresh.iter())?;
            Ok::<usize, DieselError>(n)
        })?,
        DbConnection::Pg(c) => c.transaction(|c| {
            let fresh = fresh_rows!(c, rows)?;
            // A savepoint, so a unique violation leaves the outer transaction usable.
            let copied = c.transaction(|c| {
                diesel::copy_from(request_logs::table)
                    .from_insertable(&*fresh)
                    .execute(c)
            });
            let n = match copied {
                Ok(n) => n,
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    insert_values!(c, &fresh)?
                }
                Err(e) => return Err(e),
            };
            upsert_usage!(c, fresh.iter())?;
            Ok(n)
        })?,
    };
    Ok(n)
}

/// Deletes request rows older than `retention` and aggregates older than 10× that.
/// Returns (request rows, aggregate rows) deleted.
pub fn prune(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    retention: Duration,
) -> Result<(usize, usize), StoreError> {
    let keep = chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
    let keep_usage = keep.checked_mul(10).unwrap_or(chrono::TimeDelta::MAX);
    let logs = match now.checked_sub_signed(keep) {
        Some(cutoff) => diesel::delete(request_logs::table.filter(request_logs::time.lt(cutoff)))
            .execute(conn)?,
        None => 0,
    };
    let usage = match now.checked_sub_signed(keep_usage) {
        Some(cutoff) => diesel::delete(usage_minute::table.filter(usage_minute::minute.lt(cutoff)))
            .execute(conn)?,
        None => 0,
    };
    Ok((logs, usage))
}

/// A stored request row as the admin API lists it (the body stays in the database).
#[derive(Debug, Clone, Queryable)]
pub struct LogEntry {
    pub request_id: String,
    pub time: NaiveDateTime,
    pub user_name: String,
    pub client_ip: Option<String>,
    pub dialect: String,
    pub model_requested: String,
    pub model_served: Option<String>,
    pub backend: Option<String>,
    pub key_id: Option<String>,
    pub status: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_estimated: bool,
    pub ttfb_ms: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub category: Option<String>,
    pub has_body: bool,
    pub shared: bool,
    pub client_request_id: Option<String>,
}

impl LogEntry {
    pub fn to_json(&self) -> Value {
        json!({
            "request_id": self.request_id,
            "time": rfc3339(self.time),
            "user": self.user_name,
            "client_ip": self.client_ip,
            "dialect": self.dialect,
            "model_requested": self.model_requested,
            "model_served": self.model_served,
            "backend": self.backend,
            "key_id": self.key_id,
            "status": self.status,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_estimated": self.tokens_estimated,
            "ttfb_ms": self.ttfb_ms,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "category": self.category,
            "has_body": self.has_body,
            "shared": self.shared,
            "client_request_id": self.client_request_id,
        })
    }
}

macro_rules! entry_columns {
    () => {
        (
            request_logs::request_id,
            request_logs::time,
            request_logs::user_name,
            request_logs::client_ip,
            request_logs::dialect,
            request_logs::model_requested,
            request_logs::model_served,
            request_logs::backend,
            request_logs::key_id,
            request_logs::status,
            request_logs::tokens_in,
            request_logs::tokens_out,
            request_logs::tokens_estimated,
            request_logs::ttfb_ms,
            request_logs::duration_ms,
            request_logs::error,
            request_logs::category,
            request_logs::body.is_not_null(),
            request_logs::shared,
            request_logs::client_request_id,
        )
    };
}

/// Newest first, optionally only one user's or one model's (requested or served).
pub fn recent(
    conn: &mut DbConnection,
    limit: i64,
    user: Option<&str>,
    model: Option<&str>,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut q = request_logs::table
        .select(entry_columns!())
        .order((request_logs::time.desc(), request_logs::request_id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(u) = user {
        q = q.filter(request_logs::user_name.eq(u.to_string()));
    }
    if let Some(m) = model {
        q = q.filter(
            request_logs::model_requested
                .eq(m.to_string())
                .or(request_logs::model_served.eq(m.to_string())),
        );
    }
    Ok(q.load::<LogEntry>(conn)?)
}

/// One row with its body decompressed (as text, lossily), or `None` when unknown.
pub fn one(
    conn: &mut DbConnection,
    request_id: &str,
) -> Result<Option<(LogEntry, Option<String>)>, StoreError> {
    let entry = request_logs::table
        .select(entry_columns!())
        .filter(request_logs::request_id.eq(request_id))
        .first::<LogEntry>(conn)
        .optional()?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    let body = if entry.has_body {
        request_logs::table
            .select(request_logs::body)
            .filter(request_logs::request_id.eq(request_id))
            .first::<Option<Vec<u8>>>(conn)?
            .and_then(|packed| gunzip(&packed))
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
    } else {
        None
    };
    Ok(Some((entry, body)))
}

/// Number of stored request rows (tests, `corral` diagnostics).
pub fn count(conn: &mut DbConnection) -> Result<i64, StoreError> {
    Ok(request_logs::table.count().get_result(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, model: &str, status: u16, secs: i64) -> LogRow {
        LogRow::from_record(
            RequestRecord {
                request_id: id.into(),
                time: DateTime::from_timestamp(1_700_000_000 + secs, 500_000_123).unwrap(),
                user: "alice".into(),
                dialect: "openai",
                model_requested: model.into(),
                model_served: Some(model.into()),
                status,
                tokens_in: 10,
                tokens_out: 5,
                duration_ms: 100,
                body: Some(Bytes::from_static(b"{\"model\":\"x\"}")),
                ..Default::default()
            },
            true,
        )
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let at = |secs: i64, nanos: u32| DateTime::from_timestamp(secs, nanos).unwrap().naive_utc();
        for t in [
            at(1_700_000_000, 0),
            at(1_700_000_000, 500_000_000),
            at(1_700_000_000, 123_456_000),
            at(1_700_000_000, 7_000),
            at(1_700_000_000, 123_456_789),
            at(0, 1),
            at(-62_135_596_800, 0),
            at(253_402_300_799, 999_999_000),
            at(253_402_300_800, 0),
            at(-62_135_596_801, 0),
        ] {
            assert_eq!(sqlite_timestamp(t), t.format("%F %T%.f").to_string());
        }
    }

    #[test]
    fn aggregates_by_minute_and_model() {
        // 1_700_000_000 is 22:13:20; +30 s stays in that minute, +50 s crosses into the next.
        let rows = [
            row("a", "m1", 200, 0),
            row("b", "m1", 500, 30),
            row("c", "m1", 200, 50),
            row("d", "m2", 200, 0),
        ];
        let mut agg = aggregate(rows.iter());
        agg.sort_by(|a, b| (a.minute, &a.model).cmp(&(b.minute, &b.model)));
        assert_eq!(agg.len(), 3);
        assert_eq!(
            (agg[0].requests, agg[0].errors, agg[0].tokens_in),
            (2, 1, 20)
        );
        assert_eq!(agg[1].model, "m2");
        assert_eq!(agg[2].requests, 1);
        assert_eq!(agg[0].minute.and_utc().timestamp() % 60, 0);
        // A request no backend served counts under `-`, whatever model it named.
        let mut unrouted = row("e", "no-such-model:1b", 404, 0);
        unrouted.model_served = None;
        assert_eq!(
            aggregate([&unrouted]).pop().map(|u| u.model),
            Some("-".to_string())
        );
        // A shared answer is a request of its own, but its tokens were spent once.
        let mut shared = row("f", "m1", 200, 0);
        shared.shared = true;
        let both = aggregate([&rows[0], &shared]).pop().unwrap();
        assert_eq!((both.requests, both.tokens_in), (2, 10));
    }

    #[test]
    fn bodies_round_trip_through_gzip_and_times_keep_micros() {
        let r = row("a", "m", 200, 0);
        assert_eq!(
            gunzip(r.body.as_deref().unwrap()).unwrap(),
            b"{\"model\":\"x\"}"
        );
        assert_eq!(r.time.0.and_utc().timestamp_subsec_nanos(), 500_000_000);
        let kept = LogRow::from_record(RequestRecord::default(), false);
        assert!(kept.body.is_none());
    }
}
