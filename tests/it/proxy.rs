//! The gateway in process in front of in-process `corral sim` backends: placement,
//! failover, streaming, cancellation and lease accounting, seen from a client.

use std::time::{Duration, Instant};

use corral::config::Config;
use corral::sim::{SimArgs, SimHandle};
use serde_json::{Value, json};

pub fn sim_args(name: &str, vram: &str) -> SimArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }
    Wrap::parse_from(["sim", "--port", "0", "--name", name, "--vram", vram]).args
}

pub async fn sim(name: &str, vram: &str) -> SimHandle {
    corral::sim::start(sim_args(name, vram))
        .await
        .expect("sim starts")
}

/// A config with one backend per sim, in the given priority tiers.
pub fn config_for(backends: &[(&SimHandle, &str, u32, Option<&str>)], extra: &str) -> Config {
    let mut text = String::from(
        "[server]\nworkers = 1\nshutdown_grace = \"2s\"\n[auth]\nallow_anonymous = true\n",
    );
    for (sim, name, priority, max_memory) in backends {
        text.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"{}\"\npriority = {priority}\npoll_interval = \"200ms\"\nfirst_byte_timeout = \"3s\"\nidle_timeout = \"2s\"\n",
            sim.url()
        ));
        if let Some(m) = max_memory {
            text.push_str(&format!("max_memory = \"{m}\"\n"));
        }
    }
    text.push_str(extra);
    let mut cfg = Config::from_toml(&text).expect("test config");
    let dir = std::env::temp_dir().join(format!("corral-it-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    cfg.database.url = format!("sqlite://{}/it.db", dir.display());
    cfg
}

pub async fn gateway(cfg: Config) -> corral::Running {
    let running = corral::serve(cfg, "127.0.0.1:0")
        .await
        .expect("gateway starts");
    let fleet = running.gateway.fleet.clone();
    assert!(
        fleet.wait_ready(Duration::from_secs(10)).await,
        "backends polled"
    );
    running
}

pub fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

async fn chat(url: &str, model: &str, text: &str, stream: bool) -> (u16, String, Value, String) {
    let mut resp = client()
        .post(format!("{url}/api/chat"))
        .send_json(&json!({"model": model, "stream": stream,
                           "messages": [{"role": "user", "content": text}]}))
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let backend = resp
        .headers()
        .get("x-corral-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.body().limit(64 << 20).await.expect("body");
    let text = String::from_utf8_lossy(&body).to_string();
    let last = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (status, backend, last, text)
}

async fn assert_released(running: &corral::Running) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (inflight, reserved) = running.gateway.fleet.totals();
        if inflight == 0 && reserved == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leases not released: inflight={inflight} reserved={reserved}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn streams_and_answers_whole() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let (status, backend, last, text) = chat(&gw.url(), "qwen3:8b", "hello", true).await;
    assert_eq!(status, 200);
    assert_eq!(backend, "a");
    assert_eq!(last["done"], true);
    assert!(text.lines().count() > 2);
    let (status, _, body, _) = chat(&gw.url(), "qwen3:8b", "hello", false).await;
    assert_eq!(status, 200);
    assert_eq!(body["message"]["role"], "assistant");
    assert_released(&gw).await;
}

#[actix_web::test]
async fn too_big_models_never_go_to_small_backends() {
    let small = sim("small", "8GiB").await;
    let big = sim("big", "64GiB").await;
    let gw = gateway(config_for(
        &[
            (&small, "small", 1, Some("8GiB")),
            (&big, "big", 2, Some("64GiB")),
        ],
        "",
    ))
    .await;
    // Distinct prompts: identical ones would share one placement (duplicate suppression).
    for i in 0..5 {
        let (status, backend, _, _) =
            chat(&gw.url(), "llama3.1:70b", &format!("hi {i}"), false).await;
        assert_eq!(status, 200);
        assert_eq!(backend, "big");
    }
    // A small model stays on the preferred tier while it is healthy.
    for i in 0..5 {
        let (_, backend, _, _) = chat(&gw.url(), "qwen3:8b", &format!("hi {i}"), false).await;
        assert_eq!(backend, "small");
    }
    assert_released(&gw).await;
}

#[actix_web::test]
async fn next_tier_takes_over_and_fallback_chain_serves() {
    let first = sim("first", "24GiB").await;
    let second = sim("second", "24GiB").await;
    let gw = gateway(config_for(
        &[(&first, "first", 1, None), (&second, "second", 2, None)],
        "[routing]\nfallbacks = { \"llama3.1:70b\" = [\"llama3.1:8b\"] }\n",
    ))
    .await;
    first.state.set_fail_rate(1.0);
    for i in 0..4 {
        let (status, backend, _, _) = chat(&gw.url(), "qwen3:8b", &format!("hi {i}"), false).await;
        assert_eq!(status, 200);
        assert_eq!(backend, "second");
    }
    first.state.set_fail_rate(0.0);
    // 70b does not fit 24GiB anywhere: the fallback serves and says so.
    let resp = client()
        .post(format!("{}/api/chat", gw.url()))
        .send_json(&json!({"model": "llama3.1:70b", "stream": false,
                           "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-corral-model").unwrap(), "llama3.1:8b");
    assert_released(&gw).await;
}

#[actix_web::test]
async fn out_of_memory_moves_the_request() {
    let a = sim("a", "24GiB").await;
    let b = sim("b", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None), (&b, "b", 1, None)], "")).await;
    for _ in 0..6 {
        let (status, _, last, _) = chat(&gw.url(), "qwen3:8b", "hi [[error=oom]]", false).await;
        // Both sims answer OOM for this directive: the client sees one clean error.
        assert!(status >= 500, "{last}");
    }
    let (status, _, _, _) = chat(&gw.url(), "qwen3:8b", "hi", false).await;
    assert_eq!(status, 200);
    assert_released(&gw).await;
}

#[actix_web::test]
async fn mid_stream_failure_ends_with_error_line() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    for (i, directive) in [
        "[[fail_mid]]",
        "[[truncate]]",
        "[[garbage]]",
        "[[hang_mid]]",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _, last, text) = chat(&gw.url(), "qwen3:8b", directive, true).await;
        assert_eq!(status, 200, "{directive}");
        assert!(last.get("error").is_some(), "{directive}: {text}");
        assert!(!text.contains("\"done\":true"), "{directive}");
        // A clean answer in between keeps the circuit closed (three failures in a row open it).
        // Distinct each time, or it would be served from the previous answer.
        let clean = format!("hi {i}");
        let (status, _, _, _) = chat(&gw.url(), "qwen3:8b", &clean, false).await;
        assert_eq!(status, 200, "after {directive}");
    }
    assert_released(&gw).await;
}

#[actix_web::test]
async fn hang_before_first_byte_fails_over() {
    let a = sim("a", "24GiB").await;
    let b = sim("b", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None), (&b, "b", 2, None)], "")).await;
    a.state.set_hang(true);
    let started = Instant::now();
    let (status, backend, _, _) = chat(&gw.url(), "qwen3:8b", "hi", false).await;
    assert_eq!(status, 200);
    assert_eq!(backend, "b");
    assert!(started.elapsed() < Duration::from_secs(10));
    a.state.set_hang(false);
    assert_released(&gw).await;
}

#[actix_web::test]
async fn client_disconnect_cancels_upstream_and_releases() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let resp = client()
        .post(format!("{}/api/chat", gw.url()))
        .send_json(&json!({"model": "qwen3:8b",
                           "messages": [{"role": "user", "content": "[[tokens=500]] [[token_ms=20]]"}]}))
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(a.state.open_streams(), 1);
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(1);
    while a.state.open_streams() > 0 && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        a.state.open_streams(),
        0,
        "upstream not cancelled within 1 s"
    );
    assert_released(&gw).await;
}

#[actix_web::test]
async fn dead_backend_gives_clear_errors() {
    let a = sim("a", "24GiB").await;
    let url = a.url();
    a.stop().await;
    let mut cfg = Config::from_toml(&format!(
        "[auth]\nallow_anonymous = true\n[[backends]]\nname = \"dead\"\nurl = \"{url}\"\npoll_interval = \"200ms\"\n"
    ))
    .expect("config");
    cfg.server.workers = 1;
    let gw = corral::serve(cfg, "127.0.0.1:0").await.expect("serve");
    let (status, _, body, _) = chat(&gw.url(), "qwen3:8b", "hi", false).await;
    assert!(matches!(status, 404 | 502 | 503), "{status} {body}");
    assert!(body.get("error").is_some());
    let mut ready = client()
        .get(format!("{}/ready", gw.url()))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status().as_u16(), 503);
    let _ = ready.body().await;
}

/// Sequential calls ride one kept-alive upstream connection, streams included.
#[actix_web::test]
async fn upstream_connections_are_reused() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let before = a.state.connections();
    for i in 0..20 {
        let (status, _, _, _) =
            chat(&gw.url(), "qwen3:8b", &format!("reuse {i}"), i % 4 == 0).await;
        assert_eq!(status, 200);
    }
    let opened = a.state.connections() - before;
    assert!(opened <= 2, "20 calls opened {opened} upstream connections");
    assert_released(&gw).await;
}

/// A body larger than one write (the head goes first, then the body) arrives intact, and
/// the connection serves the next call.
#[actix_web::test]
async fn large_bodies_reach_the_upstream_intact() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let text: String = (0..40_000).map(|i| format!("{i} ")).collect();
    assert!(text.len() > 200_000);
    let (status, _, body, _) = chat(&gw.url(), "qwen3:8b", &text, false).await;
    assert_eq!(status, 200, "{body}");
    let seen = a.state.stats()["last_requests"]["/api/chat"]["body"]["messages"][0]["content"]
        .as_str()
        .map(str::len);
    assert_eq!(seen, Some(text.len()));
    let (status, _, _, _) = chat(&gw.url(), "qwen3:8b", "small after large", false).await;
    assert_eq!(status, 200);
}

/// Connections the upstream closed while idle (here: it restarted) are not reused.
#[actix_web::test]
async fn a_restarted_upstream_gets_fresh_connections() {
    let a = sim("a", "24GiB").await;
    let port = a.addr.port();
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let (status, _, _, _) = chat(&gw.url(), "qwen3:8b", "before", false).await;
    assert_eq!(status, 200);
    a.stop().await;
    let mut args = sim_args("a", "24GiB");
    args.port = port;
    let again = corral::sim::start(args)
        .await
        .expect("sim restarts on its port");
    // Three poll rounds: the backend is seen up again.
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    let (status, backend, body, _) = chat(&gw.url(), "qwen3:8b", "after", false).await;
    assert_eq!((status, backend.as_str()), (200, "a"), "{body}");
    assert!(again.state.connections() >= 1);
    assert_released(&gw).await;
}

/// A request the rate limiter refuses is answered 429 and still gets its request-log row.
#[actix_web::test]
async fn rate_limited_requests_are_logged() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], "")).await;
    let (_, token) = gw
        .gateway
        .store
        .run(|c| corral::store::users::create(c, "limited", false, Some(2), None))
        .await
        .expect("user created");
    gw.gateway.auth.invalidate_user("limited");
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = client()
            .post(format!("{}/api/chat", gw.url()))
            .bearer_auth(&token)
            .send_json(&json!({"model": "qwen3:8b", "stream": false,
                "messages": [{"role": "user", "content": format!("hi {i}")}]}))
            .await
            .expect("request sent");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    gw.shutdown().await;
    let rows = gw
        .gateway
        .store
        .run(|c| corral::store::logs::recent(c, 10, Some("limited"), None))
        .await
        .expect("request log");
    let mut logged: Vec<u16> = rows.iter().map(|r| r.status as u16).collect();
    logged.sort();
    assert_eq!(logged, [200, 200, 429]);
    let refused = rows.iter().find(|r| r.status == 429).expect("the 429 row");
    assert_eq!(refused.backend, None, "never reached a backend");
    assert_eq!((refused.tokens_in, refused.tokens_out), (0, 0));
    assert!(refused.error.is_some());
}
