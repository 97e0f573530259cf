//! Times the `auto` classifier (and model selection) per request, beside a one-pass byte scan of the same text as a floor.
//!
//! Plain `main` (harness = false): each sample times a batch of calls with `Instant` and
//! records the mean per call; the report gives p50 and p99 over the samples.

use std::hint::black_box;
use std::time::Instant;

use corral::routing::catalog::Catalogue;
use corral::routing::classifier::{ClassifyInput, MessageView, classify};
use corral::routing::select::{Load, Needs, select};
use serde_json::json;

const SAMPLES: usize = 2_000;

/// Per-call nanoseconds at p50 and p99 over `SAMPLES` batches of `batch` calls.
fn measure(batch: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..batch * 50 {
        f();
    }
    let mut per_call: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    let at = |q: f64| per_call[((per_call.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99))
}

fn report(name: &str, (p50, p99): (f64, f64)) {
    println!(
        "{name:<44} p50 {:>9.2} µs   p99 {:>9.2} µs",
        p50 / 1e3,
        p99 / 1e3
    );
}

/// A realistic coding conversation of about 4k tokens (≈ 16 KB): prose, code, a trace.
fn long_conversation() -> (String, Vec<(&'static str, String)>) {
    let system = "You are a senior engineer helping with a Rust web service. Be precise, show \
                  code, and explain trade-offs when there are several options."
        .to_owned();
    let code = "```rust\nasync fn handle(req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, Error> {\n    let parsed: ChatRequest = serde_json::from_slice(&body)?;\n    let lease = supervisor.send(Place { model: parsed.model.clone() }).await??;\n    let upstream = client.post(lease.url()).send_body(body).await?;\n    Ok(HttpResponse::Ok().streaming(upstream))\n}\n```\n";
    let prose = "The gateway forwards each request to the backend that already has the model loaded, and when that backend is busy it falls back to the next one in the same priority tier. We see latency spikes when two replicas place the same large model on different GPUs at once. ";
    let trace = "thread 'actix-rt|system:0|arbiter:1' panicked at src/api/forward.rs:88:41:\ncalled `Result::unwrap()` on an `Err` value: Timeout\nstack backtrace:\n   0: rust_begin_unwind\n   1: core::panicking::panic_fmt\n";
    let mut turns = Vec::new();
    for i in 0..7 {
        turns.push(("user", format!("{}{}{}", prose.repeat(3), code, trace)));
        turns.push((
            "assistant",
            format!(
                "{}{}",
                prose.repeat(2),
                code.replace("handle", &format!("handle_{i}"))
            ),
        ));
    }
    turns.push((
        "user",
        "Given all that, how do I stop both replicas from loading the 70b model at the same time? \
         Show the change to the placer and a test for it."
            .to_owned(),
    ));
    (system, turns)
}

fn fleet() -> Catalogue {
    let names = [
        ("qwen2.5-coder:32b", "32.8B"),
        ("qwen3:8b", "8.2B"),
        ("qwen3:32b", "32.8B"),
        ("llama3.1:8b", "8.0B"),
        ("llama3.1:70b", "70.6B"),
        ("llava:13b", "13B"),
        ("gemma3:27b", "27B"),
        ("gpt-oss:20b", "20.9B"),
        ("gpt-oss:120b-cloud", "116.8B"),
        ("deepseek-r1:70b", "70.6B"),
        ("mistral:7b", "7.2B"),
        ("nomic-embed-text:latest", "137M"),
    ];
    let tags: Vec<_> = names
        .iter()
        .map(|(n, size)| json!({"name": n, "details": {"parameter_size": size}}))
        .collect();
    Catalogue::build(tags.iter().map(|t| (t, None)), &[]).0
}

fn main() {
    let (system, turns) = long_conversation();
    let long = ClassifyInput {
        system: &system,
        messages: turns
            .iter()
            .map(|(role, text)| MessageView {
                role,
                text,
                images: 0,
            })
            .collect(),
        has_tools: true,
        embedding: false,
    };
    let bytes: usize = system.len() + turns.iter().map(|(_, t)| t.len()).sum::<usize>();
    let short_text = "Write a haiku about debugging at 3am.";
    let short = ClassifyInput {
        system: "",
        messages: vec![MessageView {
            role: "user",
            text: short_text,
            images: 0,
        }],
        has_tools: false,
        embedding: false,
    };

    let c = classify(&long);
    println!(
        "4k conversation: {bytes} bytes, ~{} tokens → {} complexity {} {:?}",
        c.context_tokens, c.category, c.complexity, c.signals
    );
    let s = classify(&short);
    println!(
        "short prompt: {} → {} complexity {}\n",
        short_text, s.category, s.complexity
    );

    // Floor: touch every byte once (what any single-pass classifier must at least pay).
    let floor = |input: &ClassifyInput| {
        let mut sum = 0u64;
        for b in input.system.bytes() {
            sum = sum.wrapping_add(u64::from(b));
        }
        for m in &input.messages {
            for b in m.text.bytes() {
                sum = sum.wrapping_add(u64::from(b));
            }
        }
        sum
    };
    report(
        "classify, 4k-token conversation",
        measure(1, || {
            black_box(classify(black_box(&long)));
        }),
    );
    report(
        "  baseline: byte-sum pass over the same text",
        measure(1, || {
            black_box(floor(black_box(&long)));
        }),
    );
    report(
        "classify, short prompt",
        measure(100, || {
            black_box(classify(black_box(&short)));
        }),
    );
    report(
        "  baseline: byte-sum pass over the same text",
        measure(100, || {
            black_box(floor(black_box(&short)));
        }),
    );

    let catalogue = fleet();
    let load = |m: &str| {
        Some(Load {
            inflight: (m.len() % 4) as u32,
            resident: m.contains("qwen"),
            capacity_ok: true,
        })
    };
    let needs = Needs::of(&c, true, 1024);
    report(
        &format!("select over {} models", catalogue.len()),
        measure(100, || {
            black_box(select(black_box(&c), needs, &catalogue, &load).ok());
        }),
    );
}
