//! Arbitrary input into every POST route of the in-process app (the real app factory, a
//! real `corral sim` upstream): arbitrary bytes under any `Content-Encoding`, arbitrary JSON
//! values, and request-shaped objects whose fields hold arbitrary values. Whatever comes in,
//! the gateway does not panic, answers, and every error it gives is well formed in the
//! route's dialect; input that is not a JSON object is refused with a 4xx.

use std::io::Write;

use actix_web::{test as atest, web};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::proxy::{config_for, sim};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Ollama,
    OpenAi,
    Anthropic,
}

/// Every route that takes POST, with the dialect of its errors and whether it needs an
/// admin token.
const ROUTES: &[(&str, Shape, bool)] = &[
    ("/api/chat", Shape::Ollama, false),
    ("/api/generate", Shape::Ollama, false),
    ("/api/embed", Shape::Ollama, false),
    ("/api/embeddings", Shape::Ollama, false),
    ("/api/show", Shape::Ollama, false),
    ("/v1/chat/completions", Shape::OpenAi, false),
    ("/v1/completions", Shape::OpenAi, false),
    ("/v1/responses", Shape::OpenAi, false),
    ("/v1/embeddings", Shape::OpenAi, false),
    ("/v1/messages", Shape::Anthropic, false),
    ("/v1/messages/count_tokens", Shape::Anthropic, false),
    ("/api/pull", Shape::Ollama, true),
    ("/api/push", Shape::Ollama, true),
    ("/api/create", Shape::Ollama, true),
    ("/api/copy", Shape::Ollama, true),
    ("/api/delete", Shape::Ollama, true),
    ("/api/blobs/sha256:00", Shape::Ollama, true),
    ("/api/me", Shape::Ollama, false),
    ("/api/signout", Shape::Ollama, false),
    ("/api/user/keys/k", Shape::Ollama, false),
    ("/api/experimental/x", Shape::Ollama, false),
    ("/admin/api/users", Shape::OpenAi, true),
    ("/admin/api/users/nobody/rotate", Shape::OpenAi, true),
    ("/admin/api/users/nobody/limits", Shape::OpenAi, true),
    ("/admin/api/classify", Shape::OpenAi, true),
    ("/admin/api/keys/health-check", Shape::OpenAi, true),
    ("/admin/api/keys/999/disable", Shape::OpenAi, true),
];

/// Field names of every dialect's requests (and of the admin bodies), so generated objects
/// reach the code that reads them.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "input",
    "system",
    "instructions",
    "stream",
    "options",
    "num_predict",
    "format",
    "keep_alive",
    "think",
    "thinking",
    "tools",
    "tool_choice",
    "tool_calls",
    "role",
    "content",
    "images",
    "suffix",
    "raw",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "temperature",
    "stop",
    "n",
    "response_format",
    "stream_options",
    "reasoning",
    "previous_response_id",
    "metadata",
    "mcp_servers",
    "encoding_format",
    "dimensions",
    "name",
    "admin",
    "rpm",
    "tpm",
    "text",
    "type",
    "source",
    "tool_use_id",
];

const MODELS: &[&str] = &[
    "qwen3:8b",
    "llama3.1:8b",
    "nomic-embed-text",
    "auto",
    "no-such-model",
    "",
];

const ROLES: &[&str] = &["user", "assistant", "system", "tool", "developer", "x"];

const ENCODINGS: &[Option<&str>] = &[
    None,
    Some("gzip"),
    Some("br"),
    Some("zstd"),
    Some("deflate"),
    Some("x-bogus"),
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,16}".prop_map(Value::String),
        prop::sample::select(MODELS).prop_map(|m| Value::String(m.into())),
        prop::sample::select(FIELDS).prop_map(|m| Value::String(m.into())),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A message of any dialect: a role, and content that may be anything.
fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(ROLES),
        json_value(),
        prop::collection::btree_map(key(), json_value(), 0..3),
    )
        .prop_map(|(role, content, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("role".into(), json!(role));
            m.insert("content".into(), content);
            Value::Object(m)
        })
}

/// An object shaped like a request: a known model (mostly), messages, and fields with
/// arbitrary values.
fn request_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(MODELS),
        prop::option::of(prop::collection::vec(message(), 0..4)),
        prop::collection::btree_map(key(), json_value(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(model, messages, fields, stream)| {
            let mut m: Map<String, Value> = fields.into_iter().collect();
            m.entry("model").or_insert_with(|| json!(model));
            m.entry("stream").or_insert_with(|| json!(stream));
            if let Some(messages) = messages {
                m.insert("messages".into(), Value::Array(messages));
            }
            Value::Object(m)
        })
}

/// One request: a route, a body, and the `Content-Encoding` the body claims.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    body: Vec<u8>,
    encoding: Option<&'static str>,
    /// Whether the body, decoded, is a JSON object.
    object: bool,
}

fn compress(encoding: &str, plain: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).expect("gzip");
            e.finish().expect("gzip")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).expect("deflate");
            e.finish().expect("deflate")
        }
        "zstd" => zstd::encode_all(plain, 1).expect("zstd"),
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(plain).expect("br");
            drop(w);
            out
        }
        _ => plain.to_vec(),
    }
}

fn routes() -> impl Strategy<Value = usize> {
    0..ROUTES.len()
}

/// Arbitrary bytes, sent as they are under any encoding (mostly not a valid stream of it).
fn bytes_case() -> impl Strategy<Value = Case> {
    (
        routes(),
        prop::collection::vec(any::<u8>(), 0..400),
        prop::sample::select(ENCODINGS),
    )
        .prop_map(|(route, body, encoding)| {
            let object = encoding.is_none()
                && matches!(serde_json::from_slice::<Value>(&body), Ok(Value::Object(_)));
            Case {
                route,
                body,
                encoding,
                object,
            }
        })
}

/// A JSON value (of any type, or request-shaped), correctly encoded.
fn json_case(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Case> {
    (routes(), value, prop::sample::select(ENCODINGS)).prop_map(|(route, value, encoding)| {
        let plain = value.to_string().into_bytes();
        let encoding = encoding.filter(|e| *e != "x-bogus");
        Case {
            route,
            body: encoding.map_or_else(|| plain.clone(), |e| compress(e, &plain)),
            encoding,
            object: value.is_object(),
        }
    })
}

/// Why an answer is not acceptable, if it is not.
fn judge(case: &Case, status: u16, body: &[u8]) -> Result<(), String> {
    let (path, shape, _) = ROUTES[case.route];
    if (200..300).contains(&status) {
        return if case.object || path.starts_with("/admin/api/keys/") {
            Ok(())
        } else {
            Err(format!(
                "{path}: {status} for a body that is not a JSON object"
            ))
        };
    }
    if status == 500 {
        return Err(format!("{path}: 500 {}", String::from_utf8_lossy(body)));
    }
    if !case.object && !(400..500).contains(&status) {
        return Err(format!(
            "{path}: {status} for a body that is not a JSON object: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{path}: {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })?;
    let text = match shape {
        Shape::Ollama => v["error"].as_str(),
        Shape::OpenAi if v["error"]["type"].is_string() => v["error"]["message"].as_str(),
        Shape::Anthropic if v["type"] == "error" && v["error"]["type"].is_string() => {
            v["error"]["message"].as_str()
        }
        _ => None,
    };
    match text {
        Some(t) if !t.is_empty() && t.len() <= 4096 => Ok(()),
        _ => Err(format!("{path}: {status} is not a {shape:?} error: {v}")),
    }
}

#[test]
fn arbitrary_input_on_every_post_route_gets_an_answer_or_a_well_formed_error() {
    let system = actix_web::rt::System::new();
    let (app, user, admin, _sim) = system.block_on(async {
        let a = sim("a", "24GiB").await;
        let mut cfg = config_for(&[(&a, "a", 1, None)], "");
        cfg.auth.allow_anonymous = false;
        let user = corral::demo_token(&cfg, "user", false).expect("user");
        let admin = corral::demo_token(&cfg, "root", true).expect("admin");
        let gw = corral::Gateway::start(cfg).await.expect("gateway");
        assert!(
            gw.fleet
                .wait_ready(std::time::Duration::from_secs(10))
                .await,
            "backend polled"
        );
        let app = atest::init_service(corral::app(web::Data::new(gw))).await;
        (app, user, admin, a)
    });
    // Statuses seen, to show the cases reach the handlers and the upstream, not only the
    // first check that refuses them.
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let check = |case: Case| -> Result<(), TestCaseError> {
        let (path, _, needs_admin) = ROUTES[case.route];
        let token = if needs_admin { &admin } else { &user };
        let mut req = atest::TestRequest::post()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {token}")))
            .insert_header(("content-type", "application/json"));
        if let Some(e) = case.encoding {
            req = req.insert_header(("content-encoding", e));
        }
        let req = req.set_payload(case.body.clone()).to_request();
        let (status, body) = system.block_on(async {
            let resp = atest::call_service(&app, req).await;
            let status = resp.status().as_u16();
            (status, atest::read_body(resp).await)
        });
        *seen.borrow_mut().entry(status).or_default() += 1;
        judge(&case, status, &body).map_err(TestCaseError::fail)
    };
    let config = RunnerConfig {
        cases: 384,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let strategies: [(&str, BoxedStrategy<Case>); 3] = [
        ("bytes", bytes_case().boxed()),
        ("json", json_case(json_value()).boxed()),
        ("requests", json_case(request_like()).boxed()),
    ];
    for (name, strategy) in strategies {
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&strategy, check) {
            panic!("{name}: {e}");
        }
        let seen = std::mem::take(&mut *seen.borrow_mut());
        eprintln!("{name}: statuses {seen:?}");
        if name == "requests" {
            let served = seen
                .iter()
                .filter(|(s, _)| (200..300).contains(*s))
                .map(|(_, n)| n);
            assert!(
                served.sum::<usize>() > 0,
                "no generated request was served: {seen:?}"
            );
        }
    }
}
