//! Duplicate suppression seen from clients: identical non-streaming requests of one user
//! share one upstream call while it runs and for `routing.dedup_window` after; streams,
//! other users, failures and expired answers never do.

use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use corral::sim::SimHandle;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::proxy::{client, config_for, gateway, sim};

/// A window no test outlives: sharing within it does not depend on timing.
const LONG_WINDOW: &str = "[routing]\ndedup_window = \"60s\"\n";

struct Reply {
    status: u16,
    shared: bool,
    backend: String,
    body: Bytes,
}

async fn post(url: &str, path: &str, token: Option<&str>, body: &Value) -> Reply {
    let mut req = client().post(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut resp = req.send_json(body).await.expect("request sent");
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (shared, backend) = (header("x-corral-shared") == "1", header("x-corral-backend"));
    let body = resp.body().limit(64 << 20).await.expect("body");
    Reply {
        status: resp.status().as_u16(),
        shared,
        backend,
        body,
    }
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "qwen3:8b", "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

/// Inference calls the sim received (the backend polls excluded).
fn inference_calls(sim: &SimHandle) -> u64 {
    sim.state
        .requests_by_path()
        .iter()
        .filter(|(path, _)| !matches!(path.as_str(), "/api/tags" | "/api/ps" | "/api/version"))
        .map(|(_, n)| n)
        .sum()
}

fn shared_total(running: &corral::Running) -> u64 {
    let m = &running.gateway.metrics.dedup_shared;
    m.with_label_values(&["inflight"]).get() + m.with_label_values(&["recent"]).get()
}

#[actix_web::test]
async fn concurrent_identical_requests_share_one_upstream_call() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], LONG_WINDOW)).await;
    let url = gw.url();
    let body = chat("[[latency_ms=1000]] the same question", false);
    let replies = join_all((0..8).map(|_| post(&url, "/api/chat", None, &body))).await;
    assert_eq!(
        a.state.requests("/api/chat"),
        1,
        "one upstream call for 8 requests"
    );
    assert!(replies.iter().all(|r| r.status == 200 && r.backend == "a"));
    assert!(replies.iter().all(|r| r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| r.shared).count(), 7);
    assert_eq!(shared_total(&gw), 7);

    // Within the window a later identical request gets the kept answer.
    let again = post(&url, "/api/chat", None, &body).await;
    assert!(again.shared && again.status == 200);
    assert_eq!(again.body, replies[0].body);
    assert_eq!(a.state.requests("/api/chat"), 1);
    let recent = gw
        .gateway
        .metrics
        .dedup_shared
        .with_label_values(&["recent"]);
    assert!(recent.get() >= 1);

    // Upstream tokens were spent once and are counted once; every request has its row.
    let answer: Value = serde_json::from_slice(&replies[0].body).expect("json answer");
    let eval = answer["eval_count"].as_u64().expect("eval_count");
    let out = gw
        .gateway
        .metrics
        .tokens
        .with_label_values(&["out", "qwen3:8b", "a"])
        .get();
    assert_eq!(out, eval);
    gw.shutdown().await;
    let rows = gw
        .gateway
        .store
        .run(|c| corral::store::logs::recent(c, 50, None, None))
        .await
        .expect("request log");
    assert_eq!(rows.len(), 9);
    for row in &rows {
        assert_eq!(row.status, 200);
        assert_eq!(row.backend.as_deref(), Some("a"));
        assert_eq!(row.model_served.as_deref(), Some("qwen3:8b"));
        assert_eq!(row.tokens_out as u64, eval);
    }
    // The rows say which answers were shared; the aggregates count their tokens once.
    assert_eq!(rows.iter().filter(|r| r.shared).count(), 8);
    let now = chrono::Utc::now().naive_utc();
    let day = gw
        .gateway
        .store
        .run(move |c| corral::store::stats::last_24h(c, now))
        .await
        .expect("usage");
    assert_eq!(
        (day["requests"].as_u64(), day["tokens_out"].as_u64()),
        (Some(9), Some(eval))
    );
    let models = gw
        .gateway
        .store
        .run(move |c| corral::store::stats::models(c, now, 60))
        .await
        .expect("model stats");
    let m = &models["by_model"][0];
    assert_eq!(
        (m["requests"].as_u64(), m["tokens_out"].as_u64()),
        (Some(9), Some(eval))
    );
}

#[actix_web::test]
async fn answers_are_not_kept_past_the_window() {
    let a = sim("a", "24GiB").await;
    let window = Duration::from_millis(200);
    let gw = gateway(config_for(
        &[(&a, "a", 1, None)],
        "[routing]\ndedup_window = \"200ms\"\n",
    ))
    .await;
    let url = gw.url();
    let body = chat("asked twice, a while apart", false);
    let first = post(&url, "/api/chat", None, &body).await;
    let answered = Instant::now();
    assert!(first.status == 200 && !first.shared);
    actix_web::rt::time::sleep(window * 3).await;
    assert!(answered.elapsed() > window);
    let second = post(&url, "/api/chat", None, &body).await;
    assert!(second.status == 200 && !second.shared);
    assert_eq!(a.state.requests("/api/chat"), 2);
}

#[actix_web::test]
async fn different_users_never_share() {
    let a = sim("a", "24GiB").await;
    let cfg = config_for(&[(&a, "a", 1, None)], LONG_WINDOW);
    let ann = corral::demo_token(&cfg, "ann", false).expect("user ann");
    let bob = corral::demo_token(&cfg, "bob", false).expect("user bob");
    let gw = gateway(cfg).await;
    let url = gw.url();
    let body = chat("[[latency_ms=300]] what both of them ask", false);
    let (r_ann, r_bob) = futures_util::join!(
        post(&url, "/api/chat", Some(&ann), &body),
        post(&url, "/api/chat", Some(&bob), &body),
    );
    assert!(r_ann.status == 200 && r_bob.status == 200);
    assert!(!r_ann.shared && !r_bob.shared);
    assert_eq!(a.state.requests("/api/chat"), 2);
    let again = post(&url, "/api/chat", Some(&ann), &body).await;
    assert!(again.shared, "the same user does share");
    assert_eq!(a.state.requests("/api/chat"), 2);
}

#[actix_web::test]
async fn failed_answers_are_not_kept() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], LONG_WINDOW)).await;
    let url = gw.url();
    let body = chat("asked again after a failure", false);
    a.state.set_fail_rate(1.0);
    let failed = post(&url, "/api/chat", None, &body).await;
    assert!(failed.status >= 500, "{}", failed.status);
    a.state.set_fail_rate(0.0);
    let retried = post(&url, "/api/chat", None, &body).await;
    assert_eq!(retried.status, 200);
    assert!(!retried.shared);
    assert_eq!(a.state.requests("/api/chat"), 2);
}

#[actix_web::test]
async fn streaming_requests_are_never_shared() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], LONG_WINDOW)).await;
    let url = gw.url();
    let body = chat("[[latency_ms=300]] streamed to everyone", true);
    let replies = join_all((0..4).map(|_| post(&url, "/api/chat", None, &body))).await;
    assert!(replies.iter().all(|r| r.status == 200 && !r.shared));
    let openai = json!({"model": "qwen3:8b", "stream": true,
                        "messages": [{"role": "user", "content": "streamed"}]});
    for _ in 0..2 {
        let r = post(&url, "/v1/chat/completions", None, &openai).await;
        assert!(r.status == 200 && !r.shared);
    }
    assert_eq!(a.state.requests("/api/chat"), 6);
    assert_eq!(shared_total(&gw), 0);
}

#[actix_web::test]
async fn every_dialect_shares_whole_answers() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], LONG_WINDOW)).await;
    let url = gw.url();
    let calls = [
        (
            "/api/generate",
            json!({"model": "qwen3:8b", "prompt": "generate once", "stream": false}),
        ),
        (
            "/api/embed",
            json!({"model": "nomic-embed-text", "input": ["embed once"]}),
        ),
        (
            "/api/embeddings",
            json!({"model": "nomic-embed-text", "prompt": "embed once, legacy"}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen3:8b", "messages": [{"role": "user", "content": "openai once"}]}),
        ),
        (
            "/v1/completions",
            json!({"model": "qwen3:8b", "prompt": "legacy completion once"}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "nomic-embed-text", "input": "openai embed once"}),
        ),
        (
            "/v1/messages",
            json!({"model": "qwen3:8b", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "anthropic once"}]}),
        ),
    ];
    for (path, body) in &calls {
        let before = inference_calls(&a);
        let first = post(&url, path, None, body).await;
        let second = post(&url, path, None, body).await;
        assert_eq!(first.status, 200, "{path}: {:?}", first.body);
        assert!(!first.shared && second.shared, "{path}");
        assert_eq!(first.body, second.body, "{path}");
        assert_eq!(inference_calls(&a), before + 1, "{path}");
    }
    // `/api/show` is answered from the model card each time, never shared.
    let show = json!({"model": "qwen3:8b"});
    for _ in 0..2 {
        let r = post(&url, "/api/show", None, &show).await;
        assert!(r.status == 200 && !r.shared);
    }
}

#[actix_web::test]
async fn followers_of_a_leader_whose_client_left_run_themselves() {
    let a = sim("a", "24GiB").await;
    let gw = gateway(config_for(&[(&a, "a", 1, None)], LONG_WINDOW)).await;
    let url = gw.url();
    let body = chat("[[latency_ms=1500]] abandoned by the first asker", false);
    let (u, b) = (url.clone(), body.clone());
    let leader = actix_web::rt::spawn(async move { post(&u, "/api/chat", None, &b).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.state.requests("/api/chat") == 0 {
        assert!(
            Instant::now() < deadline,
            "the first request never reached the sim"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let (u, b) = (url.clone(), body.clone());
    let follower = actix_web::rt::spawn(async move { post(&u, "/api/chat", None, &b).await });
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    leader.abort();
    let reply = follower.await.expect("the follower finishes");
    assert_eq!(reply.status, 200);
    assert!(!reply.shared, "the leader left without an answer to share");
    assert_eq!(a.state.requests("/api/chat"), 2);
}
