//! Hostile clients against a gateway serving on a real socket: bodies are not read before
//! the caller is known, a body that does not arrive in time gets 408, malformed or oversized
//! input gets a 400 in the dialect's shape, and every request gets its own log row.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{client, config_for, gateway, sim};

/// Routes that take a body, with the shape their errors come in.
const ROUTES: &[(&str, Shape)] = &[
    ("/api/chat", Shape::Ollama),
    ("/api/generate", Shape::Ollama),
    ("/api/embed", Shape::Ollama),
    ("/api/show", Shape::Ollama),
    ("/v1/chat/completions", Shape::OpenAi),
    ("/v1/completions", Shape::OpenAi),
    ("/v1/embeddings", Shape::OpenAi),
    ("/v1/responses", Shape::OpenAi),
    ("/v1/messages", Shape::Anthropic),
    ("/v1/messages/count_tokens", Shape::Anthropic),
    ("/admin/api/users", Shape::OpenAi),
    ("/admin/api/classify", Shape::OpenAi),
];

#[derive(Clone, Copy, Debug)]
enum Shape {
    Ollama,
    OpenAi,
    Anthropic,
}

/// The error text of `body` when it has `shape`'s error shape.
fn error_text(shape: Shape, body: &Value) -> Option<String> {
    let text = match shape {
        Shape::Ollama => body["error"].as_str(),
        Shape::OpenAi => body["error"]["message"].as_str(),
        Shape::Anthropic if body["type"] == "error" => body["error"]["message"].as_str(),
        Shape::Anthropic => None,
    };
    text.map(str::to_string)
}

/// Sends `head` and `partial` body bytes on a raw connection and reads what comes back
/// until the gateway closes it (bounded by `within`). `None` when it stayed open.
async fn raw(
    addr: std::net::SocketAddr,
    head: &str,
    partial: &[u8],
    within: Duration,
) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(partial).await.expect("partial body");
    let mut got = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut got))
        .await
        .ok()?
        .ok()?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = resp.parse(&got).expect("an HTTP answer") else {
        panic!("incomplete answer: {}", String::from_utf8_lossy(&got));
    };
    let body = serde_json::from_slice(&got[at..]).unwrap_or(Value::Null);
    Some((resp.code.expect("status"), body))
}

fn head(path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {length}\r\n\r\n"
    )
}

struct Secured {
    gw: corral::Running,
    user: String,
    admin: String,
    _sim: corral::sim::SimHandle,
}

async fn secured(extra: &str) -> Secured {
    let a = sim("a", "24GiB").await;
    let mut cfg = config_for(&[(&a, "a", 1, None)], extra);
    cfg.auth.allow_anonymous = false;
    cfg.server.body_timeout = Duration::from_secs(1);
    let user = corral::demo_token(&cfg, "user", false).expect("user");
    let admin = corral::demo_token(&cfg, "root", true).expect("admin");
    Secured {
        gw: gateway(cfg).await,
        user,
        admin,
        _sim: a,
    }
}

#[actix_web::test]
async fn bodies_without_a_valid_token_are_refused_unread_and_the_connection_closed() {
    let Secured { gw, .. } = secured("").await;
    for (path, shape) in ROUTES {
        for token in [
            None,
            Some("crl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ] {
            // 260,000 bytes declared, 10 sent: an answer can only come before the body.
            let got = raw(
                gw.addr,
                &head(path, token, 260_000),
                b"{\"model\":",
                Duration::from_secs(5),
            )
            .await;
            let (status, body) = got.unwrap_or_else(|| panic!("{path}: connection left open"));
            assert_eq!(status, 401, "{path} {token:?}");
            assert!(error_text(*shape, &body).is_some(), "{path}: {body}");
        }
    }
}

#[actix_web::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_in_the_dialects_shape() {
    let Secured {
        gw, user, admin, ..
    } = secured("").await;
    for (path, shape) in ROUTES {
        let token = if path.starts_with("/admin") {
            &admin
        } else {
            &user
        };
        let got = raw(
            gw.addr,
            &head(path, Some(token), 1000),
            b"{\"model\":",
            Duration::from_secs(10),
        )
        .await;
        let (status, body) = got.unwrap_or_else(|| panic!("{path}: stalled body held open"));
        assert_eq!(status, 408, "{path}: {body}");
        let text = error_text(*shape, &body).unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(text.contains("did not arrive"), "{text}");
    }
    assert_eq!(
        gw.gateway.bodies.held(),
        0,
        "every stalled body gave its memory back"
    );
}

#[actix_web::test]
async fn json_that_is_not_an_object_and_long_model_names_get_400() {
    let Secured {
        gw, user, admin, ..
    } = secured("").await;
    let url = gw.url();
    let long = "m".repeat(10_000);
    for (path, shape) in ROUTES {
        let token = if path.starts_with("/admin") {
            &admin
        } else {
            &user
        };
        let bodies = [
            json!(["claude-x"]),
            json!("claude-x"),
            json!(7),
            json!(null),
        ];
        for body in bodies.iter() {
            let mut resp = client()
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .send_json(body)
                .await
                .expect("sent");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.expect("a JSON error");
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert!(error_text(*shape, &answer).is_some(), "{path}: {answer}");
        }
        if path.starts_with("/admin") || path.ends_with("count_tokens") {
            continue;
        }
        let body = json!({"model": long, "prompt": "hi", "input": "hi", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "hi"}]});
        let mut resp = client()
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .send_json(&body)
            .await
            .expect("sent");
        let status = resp.status().as_u16();
        let answer = resp.body().await.expect("body");
        assert_eq!(status, 400, "{path}");
        assert!(
            answer.len() < 1024,
            "{path}: the name is not echoed ({} bytes)",
            answer.len()
        );
    }
}

#[actix_web::test]
async fn every_request_has_its_own_row_and_the_clients_id_beside_it() {
    let Secured { gw, user, .. } = secured("").await;
    let url = gw.url();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let resp = client()
            .post(format!("{url}/api/chat"))
            .bearer_auth(&user)
            .insert_header(("x-request-id", "same-id\t-again"))
            .send_json(&json!({"model": "qwen3:8b", "stream": false,
                               "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
        let header = |n| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(
            header("x-client-request-id").as_deref(),
            Some("same-id-again")
        );
        ids.push(header("x-request-id").expect("an id of corral's own"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "five requests, five ids");
    gw.shutdown().await;
    let rows = gw
        .gateway
        .store
        .run(|c| corral::store::logs::recent(c, 50, Some("user"), None))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 5, "one row each");
    assert!(
        rows.iter()
            .all(|r| r.client_request_id.as_deref() == Some("same-id-again"))
    );
}

#[actix_web::test]
async fn disables_of_keys_file_keys_survive_a_restart_without_redis() {
    use corral::keys::{KeyOutcome, KeyPools, derive_key_id};
    use corral::store::schema::key_states;
    use diesel::prelude::*;

    let (a, b, c) = (
        "sk-file-aaaaaaaaaaaaaaaaaaaa",
        "sk-file-bbbbbbbbbbbbbbbbbbbb",
        "sk-file-cccccccccccccccccccc",
    );
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, format!("{a}\n{b}\n{c}\n")).expect("keys file");
    let mut cfg = corral::config::Config::from_toml(&format!(
        "[[key_pools]]\nname = \"cloud\"\nkeys_file = \"{}\"\ndisable_after_failures = 1\nreprobe_after = \"1h\"\n",
        file.display()
    ))
    .expect("config");
    cfg.database.url = format!("sqlite://{}/keys.db", dir.path().display());
    let (id_a, id_b, id_c) = (derive_key_id(a), derive_key_id(b), derive_key_id(c));

    let gw = corral::Gateway::start(cfg.clone()).await.expect("gateway");
    // An operator disables A; the upstream refuses B's credentials; C is disabled and
    // enabled again.
    assert!(gw.keys.set_enabled(&id_a, false));
    assert!(gw.keys.set_enabled(&id_c, false));
    let lease = loop {
        let lease = gw.keys.pick("cloud", "m").expect("a key");
        if lease.id == id_b {
            break lease;
        }
        gw.keys.report(&lease, KeyOutcome::Ok { tokens: 1 });
    };
    gw.keys.report(&lease, KeyOutcome::AuthFailed);
    let rows = || {
        gw.store.run(|c| {
            Ok(key_states::table
                .select((key_states::id, key_states::disabled_reason))
                .order(key_states::id)
                .load::<(String, String)>(c)?)
        })
    };
    let mut want = vec![
        (id_a.clone(), "manual".to_string()),
        (id_b.clone(), "failures".to_string()),
    ];
    want.sort();
    assert!(gw.keys.set_enabled(&id_c, true));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rows().await.expect("rows") != want {
        assert!(
            std::time::Instant::now() < deadline,
            "written: {:?}",
            rows().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secrets: Vec<String> = gw
        .store
        .run(|c| {
            Ok(key_states::table
                .select(key_states::pool)
                .load::<String>(c)?)
        })
        .await
        .expect("pools");
    assert!(secrets.iter().all(|p| p == "cloud"), "no secret is stored");

    // A restart: the pools are built from the keys file again, then the database.
    let pools = KeyPools::new(&cfg, std::sync::Arc::new(corral::metrics::Metrics::new()));
    corral::store::keys::load_into(&gw.store, &pools)
        .await
        .expect("load");
    let state = |id: &str| pools.key(id).expect("key");
    assert_eq!(state(&id_a)["disabled_reason"], "manual");
    assert_eq!(state(&id_b)["disabled_reason"], "failures");
    assert_eq!(state(&id_c)["disabled_reason"], Value::Null);
    assert_eq!(state(&id_c)["state"], "active");
    assert_eq!(pools.failure_disabled().len(), 1, "B is re-probed");
}
