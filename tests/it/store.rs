//! Store, auth, log writer and admin API against SQLite and a real Postgres, same suite for both.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{App, test as atest, web};
use chrono::Utc;
use corral::actors::log_writer::{LogSink, LogWriter, RequestRecord};
use corral::auth::{Authenticator, require_admin};
use corral::config::{AuthConfig, DatabaseConfig, LoggingConfig};
use corral::error::ErrorKind;
use corral::metrics::Metrics;
use corral::store::{Store, StoreError, logs, stats, users};
use serde_json::Value;

use crate::support::postgres::PgServer;

/// A database for one test; dropping it removes the file or stops the server.
enum Db {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(PgServer),
}

struct Env {
    url: String,
    db: Db,
}

impl Env {
    fn cfg(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.url.clone(),
            pool_size: 4,
        }
    }
    fn store(&self) -> Store {
        Store::connect(&self.cfg()).expect("connect")
    }
    fn pg(&self) -> Option<&PgServer> {
        match &self.db {
            Db::Pg(s) => Some(s),
            Db::Sqlite(_) => None,
        }
    }
}

fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("corral.db").display());
    Env {
        url,
        db: Db::Sqlite(dir),
    }
}

fn pg_env() -> Option<Env> {
    let server = PgServer::start()?;
    let url = server.create_db("corral").expect("create db");
    Some(Env {
        url,
        db: Db::Pg(server),
    })
}

/// Runs a test body once on SQLite and once on Postgres (skipped without Postgres).
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::sqlite_env());
            }
            #[test]
            fn postgres() {
                if let Some(env) = super::pg_env() {
                    super::$name(env);
                }
            }
        }
    };
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn record(id: &str, user: &str, model: &str, status: u16) -> RequestRecord {
    RequestRecord {
        request_id: id.into(),
        time: Utc::now(),
        user: user.into(),
        client_ip: Some([127, 0, 0, 1].into()),
        dialect: "openai",
        model_requested: model.into(),
        model_served: Some(model.into()),
        backend: Some("gpu".into()),
        key_id: None,
        status,
        tokens_in: 3,
        tokens_out: 7,
        duration_ms: 12,
        ttfb_ms: Some(4),
        body: Some(bytes::Bytes::from_static(b"{\"messages\":[]}")),
        ..Default::default()
    }
}

fn logging(queue: usize) -> LoggingConfig {
    LoggingConfig {
        queue_capacity: queue,
        store_bodies: true,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- users

fn users_lifecycle(env: Env) {
    let store = env.store();
    let (alice, token) = store
        .blocking(|c| users::create(c, "alice", false, Some(60), None))
        .unwrap();
    assert!(users::looks_like_token(&token));
    assert_eq!(alice.token_hash, users::hash_token(&token));
    assert!(alice.active && !alice.admin);
    assert_eq!(alice.rpm, Some(60));
    store
        .blocking(|c| users::create(c, "bob", true, None, Some(1000)))
        .unwrap();
    let dup = store.blocking(|c| users::create(c, "alice", false, None, None));
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let names: Vec<String> = store
        .blocking(users::list)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let off = store
        .blocking(|c| users::set_active(c, "alice", false))
        .unwrap();
    assert!(!off.active);
    let active: Vec<String> = store
        .blocking(users::active)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(active, ["bob"]);
    assert!(
        store
            .blocking(|c| users::set_active(c, "alice", true))
            .unwrap()
            .active
    );

    let (rotated, new_token) = store.blocking(|c| users::rotate(c, "alice")).unwrap();
    assert_ne!(new_token, token);
    assert_eq!(rotated.token_hash, users::hash_token(&new_token));
    let missing = store.blocking(|c| users::rotate(c, "nobody"));
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}
both!(users_lifecycle);

// ---------------------------------------------------------------- auth

fn auth_headers_cache_and_roles(env: Env) {
    let store = env.store();
    let (_, user_token) = store
        .blocking(|c| users::create(c, "alice", false, None, None))
        .unwrap();
    let (_, admin_token) = store
        .blocking(|c| users::create(c, "root", true, None, None))
        .unwrap();
    let cfg = AuthConfig {
        allow_anonymous: false,
        cache_ttl: Duration::from_millis(700),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(store.clone(), &cfg);
    rt().block_on(async {
        let bearer = format!("Bearer {user_token}");
        let p = auth
            .authenticate(&headers(&[("authorization", &bearer)]))
            .await
            .unwrap();
        assert_eq!(p.name, "alice");
        assert!(require_admin(&p).is_err_and(|e| e.kind == ErrorKind::Forbidden));
        let p = auth
            .authenticate(&headers(&[("x-api-key", &user_token)]))
            .await
            .unwrap();
        assert_eq!(p.name, "alice");
        // Claude Code may send both; either valid one is enough.
        let wrong = users::new_token();
        let p = auth
            .authenticate(&headers(&[
                ("authorization", &format!("Bearer {wrong}")),
                ("x-api-key", &admin_token),
            ]))
            .await
            .unwrap();
        assert_eq!(p.name, "root");
        assert!(require_admin(&p).is_ok());

        for bad in [
            vec![],
            vec![("authorization", format!("Bearer {wrong}"))],
            vec![("x-api-key", "crl_' OR '1'='1".to_string())],
            vec![(
                "authorization",
                "Bearer ' OR 1=1; DROP TABLE users; --".into(),
            )],
            vec![("x-api-key", format!("crl_{}", "'".repeat(43)))],
        ] {
            let pairs: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = auth.authenticate(&headers(&pairs)).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unauthorized, "{pairs:?}");
            for (_, v) in &pairs {
                assert!(!err.message.contains(v), "token echoed: {}", err.message);
            }
        }
        assert_eq!(store.blocking(users::list).unwrap().len(), 2);

        // Deactivated behind the cache's back: refused once the TTL has passed.
        store
            .blocking(|c| users::set_active(c, "alice", false))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        let err = auth
            .authenticate(&headers(&[("authorization", &bearer)]))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);

        // Rotation plus the invalidation hook: the old token dies at once.
        let (_, new_admin) = store.blocking(|c| users::rotate(c, "root")).unwrap();
        auth.invalidate_user("root");
        let old = auth
            .authenticate(&headers(&[("x-api-key", &admin_token)]))
            .await;
        assert!(old.is_err());
        let new = auth
            .authenticate(&headers(&[("x-api-key", &new_admin)]))
            .await
            .unwrap();
        assert_eq!(new.name, "root");

        let anon = Authenticator::new(
            store.clone(),
            &AuthConfig {
                allow_anonymous: true,
                ..cfg.clone()
            },
        );
        let p = anon.authenticate(&HeaderMap::new()).await.unwrap();
        assert_eq!(p.name, "anonymous");
        assert!(!p.admin);
    });
}
both!(auth_headers_cache_and_roles);

// ---------------------------------------------------------------- log writer

fn count(store: &Store) -> i64 {
    store.blocking(logs::count).unwrap()
}

fn writer_keeps_every_row_once(env: Env) {
    let store = env.store();
    let metrics = Arc::new(Metrics::new());
    let sink = LogWriter::start(store.clone(), metrics.clone(), &logging(50_000));
    for i in 0..10_000 {
        sink.submit(record(&format!("req-{i}"), "alice", "m1", 200));
    }
    // Duplicates, in the same batches and later ones, are written once and counted once.
    for i in 0..100 {
        sink.submit(record(&format!("req-{i}"), "alice", "m1", 200));
    }
    assert!(rt().block_on(sink.shutdown(Duration::from_secs(60))));
    assert_eq!(count(&store), 10_000);
    assert_eq!(metrics.log_dropped.get(), 0);
    assert_eq!(metrics.log_queue_depth.get(), 0);
    let day = store
        .blocking(|c| stats::last_24h(c, corral::store::now()))
        .unwrap();
    assert_eq!(day["requests"], 10_000);
    assert_eq!(day["tokens_out"], 70_000);

    // A row submitted again after it was stored is still ignored.
    let sink = LogWriter::start(store.clone(), metrics.clone(), &logging(100));
    sink.submit(record("req-5", "alice", "m1", 200));
    assert!(rt().block_on(sink.shutdown(Duration::from_secs(30))));
    assert_eq!(count(&store), 10_000);
    let day = store
        .blocking(|c| stats::last_24h(c, corral::store::now()))
        .unwrap();
    assert_eq!(day["requests"], 10_000);
}
both!(writer_keeps_every_row_once);

fn overflow_is_counted_never_silent(env: Env) {
    let store = env.store();
    let metrics = Arc::new(Metrics::new());
    let sink = LogWriter::start(store.clone(), metrics.clone(), &logging(10));
    let n = 5_000;
    for i in 0..n {
        sink.submit(record(&format!("o-{i}"), "bob", "m", 200));
    }
    assert!(rt().block_on(sink.shutdown(Duration::from_secs(30))));
    let dropped = metrics.log_dropped.get();
    assert!(dropped > 0, "a 10-row queue must overflow under 5000 rows");
    assert_eq!(count(&store) + i64::try_from(dropped).unwrap(), n);
    assert!(
        metrics
            .render()
            .contains(&format!("corral_log_dropped_total {dropped}"))
    );
    // After shutdown a submit is counted too, not lost silently.
    sink.submit(record("late", "bob", "m", 200));
    assert_eq!(metrics.log_dropped.get(), dropped + 1);
}
both!(overflow_is_counted_never_silent);

#[test]
fn postgres_outage_keeps_rows_until_it_returns() {
    let Some(env) = pg_env() else { return };
    let server = env.pg().expect("postgres env");
    let store = env.store();
    let metrics = Arc::new(Metrics::new());
    let sink = LogWriter::start(store.clone(), metrics.clone(), &logging(10_000));
    sink.submit(record("before", "alice", "m", 200));
    std::thread::sleep(Duration::from_millis(600));
    server.stop().expect("stop postgres");
    for i in 0..300 {
        sink.submit(record(&format!("down-{i}"), "alice", "m", 200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sink.queued() >= 300,
        "rows stay queued while the database is down"
    );
    server.start_again().expect("start postgres");
    assert!(rt().block_on(sink.shutdown(Duration::from_secs(60))));
    assert_eq!(count(&store), 301);
    assert_eq!(metrics.log_dropped.get(), 0);
}

// ---------------------------------------------------------------- migrations

fn concurrent_migrations_all_succeed(env: Env) {
    let cfg = env.cfg();
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let cfg = cfg.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                Store::connect(&cfg).map(|s| s.migrations_applied())
            })
        })
        .collect();
    for h in handles {
        let applied = h.join().expect("thread").expect("connect+migrate");
        assert!(applied.expect("check"));
    }
}
both!(concurrent_migrations_all_succeed);

// ---------------------------------------------------------------- admin API

fn admin_api_shapes_and_sums(env: Env) {
    let store = env.store();
    let (_, admin) = store
        .blocking(|c| users::create(c, "root", true, None, None))
        .unwrap();
    let (_, user) = store
        .blocking(|c| users::create(c, "alice", false, None, None))
        .unwrap();
    let rows: Vec<logs::LogRow> = [
        ("r1", "alice", "m1", 200),
        ("r2", "alice", "m1", 500),
        ("r3", "root", "m2", 200),
    ]
    .into_iter()
    .map(|(id, u, m, s)| logs::LogRow::from_record(record(id, u, m, s), true))
    .collect();
    store.blocking(|c| logs::insert_batch(c, &rows)).unwrap();
    let auth = Authenticator::new(store.clone(), &AuthConfig::default());

    actix_web::rt::System::new().block_on(async move {
        let app = atest::init_service(
            App::new()
                .app_data(web::Data::new(store.clone()))
                .app_data(web::Data::new(auth.clone()))
                .configure(corral::api::admin::configure),
        )
        .await;
        let bearer = format!("Bearer {admin}");
        let get = |path: &str, token: &str| {
            atest::TestRequest::get()
                .uri(path)
                .insert_header(("authorization", format!("Bearer {token}")))
                .to_request()
        };

        let resp = atest::call_service(&app, get("/admin/api/stats?window=60m", &admin)).await;
        assert_eq!(resp.status(), 200);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["window"], "60m");
        assert_eq!(v["step_seconds"], 60);
        assert_eq!(v["buckets"].as_array().unwrap().len(), 60);
        let sum = |a: &Value| {
            a.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .sum::<i64>()
        };
        assert_eq!(sum(&v["total"]["requests"]), 3);
        assert_eq!(sum(&v["total"]["tokens"]), 30);
        assert_eq!(sum(&v["models"]["m1"]["requests"]), 2);
        assert_eq!(v["models"]["m2"]["tokens"].as_array().unwrap().len(), 60);

        let resp = atest::call_service(&app, get("/admin/api/stats?window=7d", &admin)).await;
        assert_eq!(resp.status(), 400);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["error"]["param"], "window");

        let resp = atest::call_service(&app, get("/admin/api/stats/24h", &admin)).await;
        assert_eq!(resp.status(), 200);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(
            (v["requests"].as_i64(), v["errors"].as_i64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            (v["tokens_in"].as_i64(), v["tokens_out"].as_i64()),
            (Some(9), Some(21))
        );
        let hourly = v["hourly"].as_array().unwrap();
        assert_eq!(hourly.len(), 24);
        assert_eq!(hourly[23]["requests"], 3);
        assert_eq!(v["by_model"][0]["model"], "m1");
        assert_eq!(v["by_model"][0]["errors"], 1);
        assert_eq!(v["by_user"][0]["user"], "alice");
        assert_eq!(v["by_backend"][0]["backend"], "gpu");
        assert_eq!(v["by_client_ip"][0]["client_ip"], "127.0.0.1");
        assert_eq!(v["by_client_ip"][0]["requests"], 3);
        assert!(v["by_key"].as_array().unwrap().is_empty());

        let resp =
            atest::call_service(&app, get("/admin/api/requests?limit=2&user=alice", &admin)).await;
        let v: Value = atest::read_body_json(resp).await;
        let reqs = v["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 2);
        assert!(
            reqs.iter()
                .all(|r| r["user"] == "alice" && r["has_body"] == true)
        );
        assert!(reqs[0]["time"].as_str().unwrap() >= reqs[1]["time"].as_str().unwrap());
        assert!(reqs[0]["time"].as_str().unwrap().ends_with('Z'));

        let resp = atest::call_service(&app, get("/admin/api/requests/r3", &admin)).await;
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["model_served"], "m2");
        assert_eq!(v["body"], "{\"messages\":[]}");
        let resp = atest::call_service(&app, get("/admin/api/requests/nope", &admin)).await;
        assert_eq!(resp.status(), 404);

        // Users through the API.
        let post = |path: &str, body: &str| {
            atest::TestRequest::post()
                .uri(path)
                .insert_header(("authorization", bearer.clone()))
                .insert_header(("content-type", "application/json"))
                .set_payload(body.to_string())
                .to_request()
        };
        let resp = atest::call_service(
            &app,
            post("/admin/api/users", r#"{"name":"carol","rpm":30}"#),
        )
        .await;
        assert_eq!(resp.status(), 201);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["user"]["name"], "carol");
        assert_eq!(v["user"]["rpm"], 30);
        assert!(v["user"].get("token_hash").is_none());
        let carol = v["token"].as_str().unwrap().to_string();
        let resp = atest::call_service(&app, post("/admin/api/users", r#"{"name":"carol"}"#)).await;
        assert_eq!(resp.status(), 400);
        let resp = atest::call_service(&app, post("/admin/api/users/carol/rotate", "")).await;
        let v: Value = atest::read_body_json(resp).await;
        assert_ne!(v["token"].as_str().unwrap(), carol);
        let resp = atest::call_service(&app, post("/admin/api/users/carol/deactivate", "")).await;
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["user"]["active"], false);
        let resp = atest::call_service(&app, post("/admin/api/users/nobody/activate", "")).await;
        assert_eq!(resp.status(), 404);
        let resp = atest::call_service(&app, get("/admin/api/users", &admin)).await;
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["users"].as_array().unwrap().len(), 3);

        // A user is refused (403), no token is 401, both in the OpenAI shape.
        let resp = atest::call_service(&app, get("/admin/api/users", &user)).await;
        assert_eq!(resp.status(), 403);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["error"]["type"], "permission_error");
        let resp = atest::call_service(
            &app,
            atest::TestRequest::get()
                .uri("/admin/api/stats/24h")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 401);
        let v: Value = atest::read_body_json(resp).await;
        assert_eq!(v["error"]["type"], "authentication_error");
    });
}
both!(admin_api_shapes_and_sums);

// ---------------------------------------------------------------- schema

/// Every column of `api_keys` (not used by code yet) reads back with schema.rs's types,
/// so schema.rs and both migrations agree on it.
fn api_keys_table_matches_schema(env: Env) {
    use corral::store::schema::api_keys;
    use diesel::prelude::*;
    let store = env.store();
    let t = corral::store::now();
    let row = store
        .blocking(|c| {
            diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq("k1"),
                    api_keys::pool.eq("cloud"),
                    api_keys::secret.eq("sk-test"),
                    api_keys::prefix.eq("sk-t"),
                    api_keys::label.eq(Some("a@b")),
                    api_keys::category.eq(None::<String>),
                    api_keys::state.eq("active"),
                    api_keys::failures.eq(2),
                    api_keys::created_at.eq(t),
                    api_keys::updated_at.eq(t),
                ))
                .execute(c)?;
            Ok(api_keys::table.select(api_keys::all_columns).first::<(
                String,
                String,
                String,
                String,
                Option<String>,
                Option<String>,
                String,
                i32,
                chrono::NaiveDateTime,
                chrono::NaiveDateTime,
                Option<String>,
                Option<chrono::NaiveDateTime>,
            )>(c)?)
        })
        .unwrap();
    assert_eq!(row.0, "k1");
    assert_eq!(row.7, 2);
    assert_eq!(row.8, t);
}
both!(api_keys_table_matches_schema);

// ---------------------------------------------------------------- retention and loss

fn retention_prunes_old_rows_keeps_aggregates_longer(env: Env) {
    let store = env.store();
    let day = chrono::TimeDelta::days(1);
    let at = |days_ago: i64, id: &str| {
        let mut r = record(id, "alice", "m", 200);
        r.time = Utc::now() - day * i32::try_from(days_ago).unwrap();
        logs::LogRow::from_record(r, false)
    };
    let rows = vec![at(0, "new"), at(40, "old"), at(400, "ancient")];
    store.blocking(|c| logs::insert_batch(c, &rows)).unwrap();
    let (requests, usage) = store
        .blocking(|c| logs::prune(c, corral::store::now(), Duration::from_secs(30 * 86_400)))
        .unwrap();
    // Rows older than 30 days go; aggregates only past 300 days.
    assert_eq!((requests, usage), (2, 1));
    assert_eq!(count(&store), 1);
}
both!(retention_prunes_old_rows_keeps_aggregates_longer);

/// A log writer on a Postgres that has just been stopped, and its metrics.
fn writer_on_stopped_postgres(env: &Env) -> (LogSink, Arc<Metrics>) {
    let server = env.pg().expect("postgres env");
    let metrics = Arc::new(Metrics::new());
    let sink = LogWriter::start(env.store(), metrics.clone(), &logging(1_000));
    server.stop().expect("stop postgres");
    (sink, metrics)
}

#[test]
fn postgres_down_at_shutdown_counts_rows_as_dropped() {
    let Some(env) = pg_env() else { return };
    let (sink, metrics) = writer_on_stopped_postgres(&env);
    for i in 0..50 {
        sink.submit(record(&format!("lost-{i}"), "alice", "m", 200));
    }
    let drained = rt().block_on(sink.shutdown(Duration::from_secs(2)));
    assert!(!drained);
    assert_eq!(
        metrics.log_dropped.get(),
        50,
        "every unwritten row is counted"
    );
    assert_eq!(metrics.log_queue_depth.get(), 0);
}

/// The writer may already be inside a database call with its full budget when shutdown
/// begins (the first row arrived before); the grace still bounds the shutdown and every
/// unwritten row is counted once.
#[test]
fn postgres_down_before_shutdown_counts_rows_in_flight_as_dropped() {
    let Some(env) = pg_env() else { return };
    let (sink, metrics) = writer_on_stopped_postgres(&env);
    sink.submit(record("first", "alice", "m", 200));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..49 {
        sink.submit(record(&format!("lost-{i}"), "alice", "m", 200));
    }
    let drained = rt().block_on(sink.shutdown(Duration::from_millis(500)));
    assert!(!drained);
    assert_eq!(
        metrics.log_dropped.get(),
        50,
        "every unwritten row is counted"
    );
    assert_eq!(metrics.log_queue_depth.get(), 0);
    // The writer's own call ends later; it must not count those rows again.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(metrics.log_dropped.get(), 50, "no row counted twice");
    assert_eq!(metrics.log_queue_depth.get(), 0);
}

#[test]
fn postgres_down_auth_serves_cached_users_and_fails_closed() {
    let Some(env) = pg_env() else { return };
    let server = env.pg().expect("postgres env");
    let store = env.store();
    let (_, token) = store
        .blocking(|c| users::create(c, "alice", false, None, None))
        .unwrap();
    let cfg = AuthConfig {
        allow_anonymous: false,
        cache_ttl: Duration::from_millis(200),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(store.clone(), &cfg);
    rt().block_on(async {
        let h = headers(&[("x-api-key", &token)]);
        assert_eq!(auth.authenticate(&h).await.unwrap().name, "alice");
        server.stop().expect("stop postgres");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Stale but recent: the known user keeps working through the outage.
        assert_eq!(auth.authenticate(&h).await.unwrap().name, "alice");
        // An unknown token cannot be verified: refused, never let through.
        let other = users::new_token();
        let started = std::time::Instant::now();
        let err = auth
            .authenticate(&headers(&[("x-api-key", &other)]))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no queueing on a dead database"
        );
    });
}
