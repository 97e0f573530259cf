//! Tests of the sim over real loopback HTTP, the way the gateway and the clients see it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

async fn sim(args: SimArgs) -> SimHandle {
    start(args).await.expect("sim starts")
}

/// POSTs JSON and returns status, content type, and the whole body.
async fn post(url: &str, body: &Value) -> (u16, String, Vec<u8>) {
    let mut res = client().post(url).send_json(body).await.expect("request");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = res.body().limit(64 << 20).await.expect("body");
    (res.status().as_u16(), ct, body.to_vec())
}

/// Sends one request over a fresh socket and reads until the server closes it.
async fn raw_post(addr: std::net::SocketAddr, path: &str, body: &Value) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("write");
    sock.write_all(body.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out).await;
    out
}

async fn get(url: &str) -> Value {
    let mut res = client().get(url).send().await.expect("request");
    assert_eq!(res.status().as_u16(), 200, "{url}");
    res.json().limit(16 << 20).await.expect("json")
}

/// Splits an NDJSON body, asserting the framing rules: no blank lines, every line JSON.
fn ndjson(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("utf-8");
    assert!(text.ends_with('\n'), "stream ends with a newline");
    text.trim_end_matches('\n')
        .split('\n')
        .map(|line| {
            assert!(!line.is_empty(), "blank line in NDJSON");
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
        })
        .collect()
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn stream_framing_is_ndjson_with_done_last() {
    let s = sim(SimArgs::default()).await;
    let (status, ct, body) = post(
        &format!("{}/api/chat", s.url()),
        &chat_body("llama3.1:8b", "hi"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-ndjson");
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 21);
    let (last, rest) = lines.split_last().unwrap();
    assert!(rest.iter().all(|l| l["done"] == false));
    assert!(rest.iter().all(|l| l["message"]["role"] == "assistant"));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["model"], "llama3.1:8b");
    assert!(last["eval_count"].as_u64().unwrap() > 0);
    assert!(last["total_duration"].as_u64().unwrap() > 0);
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 0);
    assert_eq!(s.state.completed_streams(), 1);
    assert_eq!(s.state.open_streams(), 0);

    // generate streams `response`, and the non-streamed form is one JSON object.
    let (_, _, body) = post(
        &format!("{}/api/generate", s.url()),
        &json!({"model": "llama3.1:8b", "prompt": "hi [[tokens=3]]"}),
    )
    .await;
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["response"].is_string());
    assert!(lines[3]["context"].is_array());
    let (status, ct, body) = post(
        &format!("{}/api/chat", s.url()),
        &json!({"model": "llama3.1:8b", "stream": false, "options": {"num_predict": 4},
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["eval_count"], 4);
    assert_eq!(
        v["message"]["content"].as_str().unwrap().split(' ').count(),
        4
    );
    s.stop().await;
}

#[actix_web::test]
async fn thinking_models_think_unless_told_not_to() {
    let s = sim(SimArgs::default()).await;
    let url = format!("{}/api/chat", s.url());
    let lines = ndjson(
        &post(&url, &chat_body("qwen3:8b", "hi [[tokens=2]]"))
            .await
            .2,
    );
    assert!(lines[0]["message"]["thinking"].is_string());
    let mut body = chat_body("qwen3:8b", "hi [[tokens=2]]");
    body["think"] = json!(false);
    let lines = ndjson(&post(&url, &body).await.2);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["message"].get("thinking").is_none()));
    let mut body = chat_body("llama3.1:8b", "hi");
    body["think"] = json!(true);
    let (status, _, body) = post(&url, &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "\"llama3.1:8b\" does not support thinking"})
    );
    s.stop().await;
}

#[actix_web::test]
async fn discovery_endpoints() {
    let s = sim(SimArgs {
        models: vec!["qwen3:8b".into(), "nomic-embed-text".into()],
        ..SimArgs::default()
    })
    .await;
    let mut res = client().get(s.url()).send().await.unwrap();
    assert_eq!(res.body().await.unwrap(), "Ollama is running");
    let v = get(&format!("{}/api/version", s.url())).await;
    assert!(v["version"].as_str().unwrap().starts_with("0.12."));
    let tags = get(&format!("{}/api/tags", s.url())).await;
    let models = tags["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["details"]["families"].is_array());
    }
    let ps = get(&format!("{}/api/ps", s.url())).await;
    assert_eq!(ps, json!({"models": []}));
    let (status, _, body) = post(
        &format!("{}/api/show", s.url()),
        &json!({"model": "qwen3:8b"}),
    )
    .await;
    assert_eq!(status, 200);
    let show: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(show["model_info"]["qwen3.context_length"], 40960);
    assert_eq!(show["model_info"]["general.architecture"], "qwen3");
    assert_eq!(
        show["capabilities"],
        json!(["completion", "tools", "thinking"])
    );
    let (status, _, _) = post(&format!("{}/api/show", s.url()), &json!({"model": "nope"})).await;
    assert_eq!(status, 404);
    let (status, _, body) = post(&format!("{}/api/chat", s.url()), &chat_body("nope", "hi")).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "model \"nope\" not found, try pulling it first"
    );
    let mut res = client()
        .post(format!("{}/api/chat", s.url()))
        .insert_header(("content-type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    s.stop().await;
}

#[actix_web::test]
async fn residency_load_eviction_and_keep_alive() {
    let s = sim(SimArgs {
        vram: bytesize::ByteSize::gib(12),
        load_ms: 100,
        ..SimArgs::default()
    })
    .await;
    let chat = format!("{}/api/chat", s.url());
    let started = Instant::now();
    let mut body = chat_body("qwen3:8b", "hi [[tokens=1]]");
    body["stream"] = json!(false);
    let (_, _, first) = post(&chat, &body).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert!(first["load_duration"].as_u64().unwrap() >= 100_000_000);
    let ps = get(&format!("{}/api/ps", s.url())).await;
    assert_eq!(ps["models"][0]["name"], "qwen3:8b");
    assert_eq!(ps["models"][0]["size_vram"], ps["models"][0]["size"]);
    assert_eq!(ps["models"][0]["context_length"], 4096);
    assert!(ps["models"][0]["expires_at"].is_string());

    // Resident: no second load.
    let (_, _, again) = post(&chat, &body).await;
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert!(again["load_duration"].as_u64().unwrap_or(0) < 100_000_000);
    assert_eq!(s.state.loads(), 1);

    // Two more models do not fit in 12 GiB next to qwen3: LRU goes first.
    body["model"] = json!("llama3.1:8b");
    post(&chat, &body).await;
    body["model"] = json!("qwen2.5-coder:7b");
    post(&chat, &body).await;
    let resident = s.state.resident_models();
    assert!(!resident.contains(&"qwen3:8b".to_string()), "{resident:?}");
    assert_eq!(resident.len(), 2);
    assert!(s.state.vram_used() <= 12 << 30);

    // keep_alive 0 unloads right after the answer.
    body["model"] = json!("llava:7b");
    body["keep_alive"] = json!(0);
    post(&chat, &body).await;
    assert!(!s.state.resident_models().contains(&"llava:7b".to_string()));
    // keep_alive "-1m" keeps forever; an empty prompt with keep_alive 0 unloads.
    let gen_url = format!("{}/api/generate", s.url());
    let (_, _, v) = post(
        &gen_url,
        &json!({"model": "llama3.1:8b", "keep_alive": "-1m", "prompt": ""}),
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&v).unwrap()["done_reason"],
        "load"
    );
    let (_, _, v) = post(
        &gen_url,
        &json!({"model": "llama3.1:8b", "keep_alive": 0, "prompt": ""}),
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&v).unwrap()["done_reason"],
        "unload"
    );
    assert!(
        !s.state
            .resident_models()
            .contains(&"llama3.1:8b".to_string())
    );
    s.stop().await;
}

#[actix_web::test]
async fn out_of_memory_and_forced_errors() {
    let s = sim(SimArgs::default()).await;
    let chat = format!("{}/api/chat", s.url());
    let (status, _, body) = post(&chat, &chat_body("llama3.1:70b", "hi")).await;
    assert_eq!(status, 500);
    let err = serde_json::from_slice::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "model requires more system memory (39.6 GiB) than is available (24.0 GiB)"
    );
    for (directive, code) in [("oom", 500), ("busy", 503), ("500", 500), ("429", 429)] {
        let (status, _, _) = post(
            &chat,
            &chat_body("llama3.1:8b", &format!("[[error={directive}]]")),
        )
        .await;
        assert_eq!(status, code, "{directive}");
    }
    let (_, _, body) = post(&chat, &chat_body("llama3.1:8b", "[[error=busy]]")).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    s.state.set_fail_rate(1.0);
    assert_eq!(post(&chat, &chat_body("llama3.1:8b", "x")).await.0, 500);
    s.state.set_fail_rate(0.0);
    s.state.set_busy_rate(1.0);
    assert_eq!(post(&chat, &chat_body("llama3.1:8b", "x")).await.0, 503);
    s.stop().await;
}

#[actix_web::test]
async fn keys_and_budget_429() {
    let s = sim(SimArgs {
        require_key: vec!["k1".into(), "k2".into()],
        key_budget: Some(2),
        ..SimArgs::default()
    })
    .await;
    let chat = format!("{}/api/chat", s.url());
    let send = |key: Option<&'static str>, body: Value| {
        let chat = chat.clone();
        async move {
            let mut req = client().post(&chat);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let mut res = req.send_json(&body).await.unwrap();
            let retry_after = res.headers().contains_key("retry-after");
            let body: Value = res.json().limit(1 << 20).await.unwrap_or(Value::Null);
            (res.status().as_u16(), retry_after, body)
        }
    };
    let mut body = chat_body("llama3.1:8b", "hi");
    body["stream"] = json!(false);
    let (status, _, err) = send(None, body.clone()).await;
    assert_eq!((status, err), (401, json!({"error": "unauthorized"})));
    assert_eq!(send(Some("bad"), body.clone()).await.0, 401);
    assert_eq!(send(Some("k1"), body.clone()).await.0, 200);
    assert_eq!(send(Some("k1"), body.clone()).await.0, 200);
    let (status, retry_after, err) = send(Some("k1"), body.clone()).await;
    assert_eq!(status, 429);
    assert!(!retry_after, "Ollama Cloud sends no Retry-After");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.starts_with("you (sim) have reached your session usage limit"),
        "{msg}"
    );
    s.state.set_limit_mode(LimitMode::Weekly);
    let (_, _, err) = send(Some("k1"), body.clone()).await;
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("weekly usage limit")
    );
    // Another key has its own budget; the tags list needs no key, like ollama.com.
    assert_eq!(send(Some("k2"), body.clone()).await.0, 200);
    assert_eq!(s.state.requests_for_key("k1"), 4);
    assert_eq!(s.state.requests_for_key("k2"), 1);
    get(&format!("{}/api/tags", s.url())).await;
    s.stop().await;
}

#[actix_web::test]
async fn tool_calls() {
    let s = sim(SimArgs::default()).await;
    let chat = format!("{}/api/chat", s.url());
    let tools = json!([
        {"type": "function", "function": {"name": "read_file", "description": "Read a file",
         "parameters": {"type": "object", "properties": {"path": {"type": "string"},
                        "limit": {"type": "integer"}}, "required": ["path"]}}},
        {"type": "function", "function": {"name": "list_dir",
         "parameters": {"type": "object", "properties": {"dir": {"type": "string"}},
                        "required": ["dir"]}}}
    ]);
    let mut body = chat_body("llama3.1:8b", "open main");
    body["tools"] = tools.clone();
    let lines = ndjson(&post(&chat, &body).await.2);
    assert_eq!(lines.len(), 2);
    let call = &lines[0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "read_file");
    assert_eq!(call["function"]["arguments"], json!({"path": "example"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(lines[1]["done_reason"], "stop");

    body["messages"][0]["content"] = json!("open [[tool_on_done]]");
    let lines = ndjson(&post(&chat, &body).await.2);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["done"], true);
    assert_eq!(
        lines[0]["message"]["tool_calls"][0]["function"]["name"],
        "read_file"
    );

    body["messages"][0]["content"] = json!("open [[two_tools]]");
    let lines = ndjson(&post(&chat, &body).await.2);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1]["message"]["tool_calls"][0]["function"]["name"],
        "list_dir"
    );
    assert_eq!(lines[1]["message"]["tool_calls"][0]["function"]["index"], 1);

    // After the tool result, text.
    body["messages"] = json!([
        {"role": "user", "content": "open main"},
        {"role": "assistant", "content": "", "tool_calls": [lines[0]["message"]["tool_calls"][0]]},
        {"role": "tool", "tool_name": "read_file", "content": "fn main() {}"}
    ]);
    body["stream"] = json!(false);
    let (_, _, v) = post(&chat, &body).await;
    let v: Value = serde_json::from_slice(&v).unwrap();
    assert!(v["message"]["tool_calls"].is_null());
    assert!(!v["message"]["content"].as_str().unwrap().is_empty());

    // A model without tools says so.
    body["model"] = json!("llava:7b");
    let (status, _, err) = post(&chat, &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&err).unwrap()["error"],
        "\"llava:7b\" does not support tools"
    );
    s.stop().await;
}

#[actix_web::test]
async fn stream_directives() {
    let s = sim(SimArgs::default()).await;
    let chat = format!("{}/api/chat", s.url());

    let lines = ndjson(
        &post(&chat, &chat_body("llama3.1:8b", "x [[fail_mid]]"))
            .await
            .2,
    );
    let last = lines.last().unwrap();
    assert!(last["error"].is_string());
    assert!(lines.iter().all(|l| l["done"] != true));
    assert_eq!(lines.len(), 4);

    let (_, _, body) = post(
        &chat,
        &chat_body("llama3.1:8b", "x [[unicode]] [[tokens=3]]"),
    )
    .await;
    assert!(!body.windows(3).any(|w| w == "\u{2028}".as_bytes()));
    let lines = ndjson(&body);
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert!(text.contains('\u{2028}') && text.contains('\u{2029}'));

    let (_, _, body) = post(
        &chat,
        &chat_body("llama3.1:8b", "x [[garbage]] [[tokens=3]]"),
    )
    .await;
    let text = String::from_utf8(body).unwrap();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .collect();
    assert_eq!(bad, vec!["this is not json"]);

    let (_, _, body) = post(
        &chat,
        &chat_body("llama3.1:8b", "x [[big_line]] [[tokens=2]]"),
    )
    .await;
    let lines = ndjson(&body);
    assert!(
        lines
            .iter()
            .any(|l| l["message"]["content"].as_str().unwrap_or("").len() == 5 << 20)
    );

    // Truncation: the connection closes without the chunked terminator. (awc reports such a
    // body as a clean end, so this reads the raw socket.)
    let raw = raw_post(
        s.addr,
        "/api/chat",
        &chat_body("llama3.1:8b", "x [[truncate]]"),
    )
    .await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"done\":false"));
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "truncated stream must not end cleanly"
    );

    // Pacing: token_ms spaces frames.
    let started = Instant::now();
    post(
        &chat,
        &chat_body("llama3.1:8b", "x [[tokens=5]] [[token_ms=40]]"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(160));
    s.stop().await;
}

#[actix_web::test]
async fn client_disconnect_cancels_streams() {
    let s = sim(SimArgs::default()).await;
    let chat = format!("{}/api/chat", s.url());

    // Mid-stream: read two frames, then drop the response.
    let mut res = client()
        .post(&chat)
        .send_json(&chat_body("llama3.1:8b", "x [[hang_mid]]"))
        .await
        .unwrap();
    let first = res.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"{"));
    assert_eq!(s.state.open_streams(), 1);
    drop(res);
    let state = s.state.clone();
    eventually("mid-stream cancel", || {
        state.open_streams() == 0 && state.cancelled_streams() == 1
    })
    .await;

    // Before the first byte: the client times out on a hung request.
    let res = awc::Client::builder()
        .timeout(Duration::from_millis(200))
        .finish()
        .post(&chat)
        .send_json(&chat_body("llama3.1:8b", "x [[hang]]"))
        .await;
    assert!(res.is_err());
    eventually("pre-header cancel", || {
        state.open_streams() == 0 && state.cancelled_streams() == 2
    })
    .await;

    // The global knob: slow tokens, client leaves early.
    s.state.set_token_ms(50);
    let mut res = client()
        .post(&chat)
        .send_json(&chat_body("llama3.1:8b", "x"))
        .await
        .unwrap();
    res.next().await.unwrap().unwrap();
    drop(res);
    eventually("slow-stream cancel", || {
        state.open_streams() == 0 && state.cancelled_streams() == 3
    })
    .await;
    assert_eq!(s.state.completed_streams(), 0);
    s.stop().await;
}

#[actix_web::test]
async fn stats_and_control_over_http() {
    let s = sim(SimArgs::default()).await;
    let (status, _, body) = post(
        &format!("{}/_sim/control", s.url()),
        &json!({"hang": true, "limit_mode": "weekly", "key_budget": 5}),
    )
    .await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["knobs"]["hang"], true);
    assert_eq!(stats["knobs"]["limit_mode"], "weekly");
    assert!(s.state.knobs().hang);
    assert_eq!(s.state.knobs().key_budget, Some(5));
    let (status, _, _) = post(&format!("{}/_sim/control", s.url()), &json!({"nope": 1})).await;
    assert_eq!(status, 400);
    post(
        &format!("{}/api/chat", s.url()),
        &json!({"model": "llama3.1:8b", "messages": []}),
    )
    .await;
    let stats = get(&format!("{}/_sim/stats", s.url())).await;
    assert_eq!(stats["requests_by_path"]["/api/chat"], 1);
    assert_eq!(stats["knobs"]["key_budget"], 5);
    assert_eq!(stats["open_streams"], 0);
    assert!(stats["resident"].is_array());
    s.stop().await;
}

#[actix_web::test]
async fn embeddings_native_and_openai() {
    let s = sim(SimArgs::default()).await;
    let (_, _, body) = post(
        &format!("{}/api/embed", s.url()),
        &json!({"model": "nomic-embed-text", "input": ["a", "b"]}),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 768);
    let (_, _, body) = post(
        &format!("{}/api/embeddings", s.url()),
        &json!({"model": "nomic-embed-text", "prompt": "a"}),
    )
    .await;
    let legacy: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(legacy["embedding"], v["embeddings"][0]);
    let (_, _, body) = post(
        &format!("{}/v1/embeddings", s.url()),
        &json!({"model": "nomic-embed-text", "input": "a", "encoding_format": "base64"}),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 768 * 4);
    let first = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    assert!((first as f64 - legacy["embedding"][0].as_f64().unwrap()).abs() < 1e-6);
    s.stop().await;
}

#[actix_web::test]
async fn openai_chat_json_and_sse() {
    let s = sim(SimArgs::default()).await;
    let url = format!("{}/v1/chat/completions", s.url());
    let (status, _, body) = post(
        &url,
        &json!({"model": "llama3.1:8b", "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);

    let (_, ct, body) = post(
        &url,
        &json!({"model": "llama3.1:8b", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi [[two_tools]]"}],
                "tools": [{"type": "function", "function": {"name": "a", "parameters": {}}},
                          {"type": "function", "function": {"name": "b", "parameters": {}}}]}),
    )
    .await;
    assert_eq!(ct, "text/event-stream");
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(!text.contains("event:"));
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1);
    let indexes: Vec<u64> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
        .collect();
    assert_eq!(indexes, vec![0, 1]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    let (status, _, body) = post(&url, &json!({"model": "nope", "messages": []})).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    s.stop().await;
}

#[actix_web::test]
async fn anthropic_messages_sse_order() {
    let s = sim(SimArgs::default()).await;
    let url = format!("{}/v1/messages", s.url());
    let (_, _, body) = post(
        &url,
        &json!({"model": "qwen3:8b", "max_tokens": 100, "stream": true,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "messages": [{"role": "user", "content": "hi [[tokens=3]]"}],
                "tools": [{"name": "t", "input_schema": {"type": "object"}}]}),
    )
    .await;
    let text = String::from_utf8(body).unwrap();
    let mut names = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
        let (event, data) = frame.split_once('\n').unwrap();
        let name = event.strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name);
        names.push(name.to_string());
    }
    assert_eq!(names.first().unwrap(), "message_start");
    assert_eq!(names.last().unwrap(), "message_stop");
    assert!(text.contains("\"stop_reason\":\"tool_use\""));
    let (status, _, body) = post(
        &url,
        &json!({"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    s.stop().await;
}

#[actix_web::test]
async fn pull_delete_copy() {
    let s = sim(SimArgs {
        models: vec!["llama3.1:8b".into()],
        ..SimArgs::default()
    })
    .await;
    let (_, ct, body) = post(
        &format!("{}/api/pull", s.url()),
        &json!({"model": "qwen3:8b"}),
    )
    .await;
    assert_eq!(ct, "application/x-ndjson");
    let lines = ndjson(&body);
    assert_eq!(lines.last().unwrap()["status"], "success");
    assert!(lines.iter().any(|l| l["total"].is_u64()));
    assert!(s.state.model("qwen3:8b").is_some());
    let (status, _, _) = post(
        &format!("{}/api/copy", s.url()),
        &json!({"source": "qwen3:8b", "destination": "mine"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(s.state.model("mine:latest").is_some());
    let res = client()
        .delete(format!("{}/api/delete", s.url()))
        .send_json(&json!({"model": "mine"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(s.state.model("mine").is_none());
    let res = client()
        .delete(format!("{}/api/delete", s.url()))
        .send_json(&json!({"model": "mine"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    s.stop().await;
}

/// Keeps a sim up for poking with the Python clients:
/// `SIM_PORT=11500 cargo test --lib sim::tests::serve_for_python -- --ignored --nocapture`.
#[actix_web::test]
#[ignore]
async fn serve_for_python() {
    let port = std::env::var("SIM_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(11500);
    let secs = std::env::var("SIM_SECS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(600);
    let s = sim(SimArgs {
        port,
        ..SimArgs::default()
    })
    .await;
    println!("sim at {}", s.url());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_inside_a_plain_tokio_runtime() {
    let s = sim(SimArgs::default()).await;
    let raw = raw_post(s.addr, "/api/show", &json!({"model": "qwen3:8b"})).await;
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    s.stop().await;
}

#[actix_web::test]
async fn structured_output_is_json() {
    let s = sim(SimArgs::default()).await;
    let (_, _, body) = post(
        &format!("{}/api/chat", s.url()),
        &json!({"model": "llama3.1:8b", "stream": false, "format": "json",
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let content: Value = serde_json::from_str(v["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content.is_object());
    s.stop().await;
}

#[actix_web::test]
async fn stop_is_prompt_with_hung_streams() {
    let s = sim(SimArgs::default()).await;
    let url = format!("{}/api/chat", s.url());
    let pending = actix_web::rt::spawn(async move {
        let _ = client()
            .post(&url)
            .send_json(&chat_body("llama3.1:8b", "[[hang]]"))
            .await;
    });
    let state = s.state.clone();
    eventually("hung request open", || state.open_streams() == 1).await;
    let started = Instant::now();
    s.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    pending.abort();
}

#[test]
fn cli_flags_parse() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let cli = Cli::parse_from([
        "sim",
        "--models",
        "qwen3:8b,big=40GiB",
        "--vram",
        "80GiB",
        "--budget-window",
        "5m",
        "--require-key",
        "a",
        "--require-key",
        "b",
        "--limit-mode",
        "weekly",
    ]);
    assert_eq!(cli.sim.models, vec!["qwen3:8b", "big=40GiB"]);
    assert_eq!(cli.sim.vram.as_u64(), 80 << 30);
    assert_eq!(*cli.sim.budget_window, Duration::from_secs(300));
    assert_eq!(cli.sim.require_key.len(), 2);
    let defaults = Cli::parse_from(["sim"]).sim;
    assert_eq!(defaults.port, 11434);
    assert_eq!(defaults.vram.as_u64(), 24 << 30);
    let state = cli.sim.build_state().unwrap();
    assert_eq!(state.knobs().limit_mode, LimitMode::Weekly);
    assert_eq!(state.catalogue().len(), 2);
}
