//! Request-log throughput: 100k rows through the LogWriter into SQLite and Postgres, rows/s printed.
//!
//! `cargo bench --bench log_writer` (plain main, no harness). Postgres is started from
//! the distro binaries like the integration tests do; without them that line is skipped.

#[path = "../tests/it/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::actors::log_writer::{LogWriter, RequestRecord};
use corral::config::{DatabaseConfig, LoggingConfig};
use corral::metrics::Metrics;
use corral::store::{Store, logs};

const ROWS: usize = 100_000;

fn record(i: usize) -> RequestRecord {
    RequestRecord {
        request_id: format!("bench-{i:08}"),
        time: chrono::Utc::now(),
        user: format!("user-{}", i % 20),
        client_ip: Some([10, 0, 0, 1].into()),
        dialect: "openai",
        model_requested: format!("model-{}", i % 5),
        model_served: Some(format!("model-{}", i % 5)),
        backend: Some(format!("gpu-{}", i % 3)),
        key_id: None,
        status: if i % 50 == 0 { 502 } else { 200 },
        tokens_in: 120,
        tokens_out: 350,
        ttfb_ms: Some(80),
        duration_ms: 1500,
        ..Default::default()
    }
}

/// Submits `ROWS` rows as fast as one thread can and waits until all are stored.
fn run(label: &str, url: &str) {
    let store = match Store::connect(&DatabaseConfig {
        url: url.into(),
        pool_size: 4,
    }) {
        Ok(s) => s,
        Err(e) => {
            println!("{label:<10} skipped: {e}");
            return;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let cfg = LoggingConfig {
        queue_capacity: ROWS,
        ..Default::default()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("{label:<10} skipped: no runtime: {e}");
            return;
        }
    };
    let sink = LogWriter::start(store.clone(), metrics.clone(), &cfg);
    let start = Instant::now();
    for i in 0..ROWS {
        sink.submit(record(i));
    }
    let submit = start.elapsed();
    let all = rt.block_on(sink.shutdown(Duration::from_secs(600)));
    let total = start.elapsed();
    let stored = store.blocking(logs::count).unwrap_or(-1);
    println!(
        "{label:<10} {:>9.0} rows/s  ({ROWS} rows in {:.2} s; submit {:.0} ns/row; stored {stored}; dropped {}; drained {all})",
        ROWS as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        submit.as_nanos() as f64 / ROWS as f64,
        metrics.log_dropped.get(),
    );
}

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no temp dir: {e}");
            return;
        }
    };
    println!(
        "log writer: {ROWS} rows, batches of {}",
        corral::actors::log_writer::BATCH_ROWS
    );
    run(
        "sqlite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
    );
    match postgres::PgServer::start() {
        Some(pg) => match pg.create_db("bench") {
            Ok(url) => run("postgres", &url),
            Err(e) => println!("postgres   skipped: {e}"),
        },
        None => println!("postgres   skipped: no Postgres binaries"),
    }
}
